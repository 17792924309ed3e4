//! The SCP side: a verification and storage SCP ([`serve`]) with the acceptor side of
//! association negotiation (DICOM PS3.8 7.1.1, 9.3.3, 9.3.4; PS3.7 D.3.3) and its rejections.
//!
//! Each association runs in its own task; a panic in one ends that association only (tokio
//! isolates it, its permit is released while unwinding) and the listener goes on. C-ECHO is
//! answered here; each C-STORE-RQ's data set streams to a sink, either the one of a C-MOVE in
//! flight (Move Originator fields that a [`MoveRouter`] knows) or the handler's
//! [`ScpHandler::store_sink`]; the C-STORE-RSP carries the status the sink's `end` returns, so
//! the handler can commit durably before we answer. Other DIMSE requests (C-FIND, C-GET,
//! C-MOVE) get a response with 0x0122 "SOP class not supported" (PS3.7 C.5.20): we never accept
//! a Query/Retrieve context, so such a request names a class the context was not negotiated for.
//!
//! Rejections (PS3.8 Table 9-21), checked in this order:
//! - protocol version without bit 0: permanent, service-provider (ACSE), reason 2;
//! - application context name not DICOM's: permanent, service-user, reason 2;
//! - called AE title not ours: permanent, service-user, reason 7;
//! - calling AE title not in the allow-list: permanent, service-user, reason 3;
//! - `max_associations` reached: transient, service-provider (presentation), reason 2
//!   (local-limit-exceeded), as pynetdicom does.
//!
//! No acceptable presentation context: we send an A-ASSOCIATE-AC with every context rejected
//! (abstract syntax or transfer syntaxes not supported), which is what PS3.8 specifies: the
//! acceptor answers each proposed context (9.3.3.2) and nothing makes an association with none
//! accepted a rejection. The requestor learns per context why, and releases. dcmtk's storescp
//! 3.6.7 does the same (checked by `tests/scp_dcmtk.rs`), rather than the A-ASSOCIATE-RJ
//! "no reason given" that would tell the peer less.
//!
//! Abuse: the first PDU must arrive within ARTIM (`timeouts.association`); an oversized or
//! lying PDU length, an unknown PDU type or garbage get an A-ABORT with the provider reason,
//! without the declared size being allocated; an established association with no PDU for
//! `timeouts.idle` is aborted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderASCEReason, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, Pdu, PresentationContextResult,
    PresentationContextResultReason, RequestorRoles, UserVariableItem,
};
use hie_dimse::command::{CEchoRsp, CFindRsp, CGetRsp, CMoveRsp, CStoreRq, CStoreRsp, StatusDetail};
use hie_dimse::{Command, DataSetType, Status, StatusClass, SubOperations, uids};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::association::{AbortedBy, Association, AssociationParts, Incoming, PresentationContext};
use crate::client::{PROTOCOL_VERSION, trim_uid};
use crate::dataset::is_known_transfer_syntax;
use crate::error::{NetError, TimeoutKind, abort_words};
use crate::moves::{MoveRouter, MoveSink};
use crate::pdu_io::{self, PduLimits, PduReader, PduWriter, pdu_name};
use crate::sink::{InstanceInfo, StoreSink};
use crate::{APPLICATION_CONTEXT_NAME, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// Timers of the SCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// ARTIM (PS3.8 9.1.5): from accepting the connection to receiving the A-ASSOCIATE-RQ; also
    /// how long we wait for the peer to close after our last PDU (capped at 1 s).
    pub association: Duration,
    /// An established association with no PDU for this long is aborted.
    pub idle: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> ServerTimeouts {
        ServerTimeouts { association: DEFAULT_ARTIM, idle: DEFAULT_IDLE }
    }
}

/// Which SOP classes we accept for C-STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageClasses {
    /// Accepted by UID.
    pub listed: Vec<String>,
    /// Also accept any class under the standard storage root `1.2.840.10008.5.1.4.1.1.`
    /// (PS3.4 B.5: the storage SOP classes), including ones newer than our list.
    pub any_standard: bool,
}

impl Default for StorageClasses {
    /// Every class of `hie_dimse::uids::STORAGE_SOP_CLASSES`, plus any standard storage class.
    fn default() -> StorageClasses {
        StorageClasses {
            listed: uids::STORAGE_SOP_CLASSES.iter().map(|uid| (*uid).to_owned()).collect(),
            any_standard: true,
        }
    }
}

impl StorageClasses {
    pub fn accepts(&self, abstract_syntax: &str) -> bool {
        (self.any_standard && abstract_syntax.starts_with(STANDARD_STORAGE_ROOT))
            || self.listed.iter().any(|uid| uid == abstract_syntax)
    }
}

/// What the SCP accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Our AE title: the Called-AE-title must equal it.
    pub ae_title: String,
    /// Calling AE titles allowed in (`None`: any).
    pub allowed_calling_ae_titles: Option<Vec<String>>,
    pub storage: StorageClasses,
    /// Transfer syntaxes accepted for storage. `None`: any transfer syntax we know (we do not
    /// decode pixel data); `Some`: only these. Either way the first acceptable one in the
    /// peer's order of preference is chosen. Verification always takes Implicit or Explicit VR
    /// Little Endian.
    pub storage_transfer_syntaxes: Option<Vec<String>>,
    /// Transfer syntaxes never accepted for storage, whatever the two fields above say (for
    /// example Deflated Explicit VR Little Endian, for a handler that reads the data set as it
    /// streams).
    pub refused_transfer_syntaxes: Vec<String>,
    /// Associations served at once; one more is rejected (transient, local-limit-exceeded).
    pub max_associations: usize,
    /// The Maximum Length we declare and enforce (PS3.8 D.1.1).
    pub max_pdu_length: u32,
    pub timeouts: ServerTimeouts,
}

impl ServerPolicy {
    /// A policy for `ae_title` with the defaults: any calling AE, every storage class, every
    /// known transfer syntax, [`DEFAULT_MAX_ASSOCIATIONS`], a 256 KiB maximum PDU.
    pub fn new(ae_title: impl Into<String>) -> ServerPolicy {
        ServerPolicy {
            ae_title: ae_title.into(),
            allowed_calling_ae_titles: None,
            storage: StorageClasses::default(),
            storage_transfer_syntaxes: None,
            refused_transfer_syntaxes: Vec::new(),
            max_associations: DEFAULT_MAX_ASSOCIATIONS,
            max_pdu_length: crate::client::DEFAULT_MAX_PDU_LENGTH,
            timeouts: ServerTimeouts::default(),
        }
    }
}

/// Who is on the other end of an association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationInfo {
    pub calling_ae: String,
    pub called_ae: String,
    pub peer_addr: SocketAddr,
}

/// The application behind the SCP.
pub trait ScpHandler: Send + Sync + 'static {
    /// One sink per received instance.
    type Sink: StoreSink + 'static;

    /// A sink for the instance `request` announces, its data set in `transfer_syntax_uid`;
    /// `Err(status)` refuses it with that status (for example 0xA700, out of resources).
    fn store_sink(
        &self,
        association: &AssociationInfo,
        request: &CStoreRq,
        transfer_syntax_uid: &str,
    ) -> impl Future<Output = Result<Self::Sink, Status>> + Send;

    /// The router whose C-MOVEs in flight take the instances that carry their Move Originator
    /// fields; `None` (the default) sends every instance to [`ScpHandler::store_sink`].
    fn move_router(&self) -> Option<&MoveRouter> {
        None
    }

    /// Told of every connection's fate at association level, for counters; the default does
    /// nothing. Called on the connection's task, so it must not block.
    fn observe(&self, event: ServerEvent<'_>) {
        let _ = event;
    }
}

/// What became of a connection, for [`ScpHandler::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent<'a> {
    /// An association was accepted (A-ASSOCIATE-AC sent).
    Accepted(&'a AssociationInfo),
    /// An A-ASSOCIATE-RQ was rejected (A-ASSOCIATE-RJ sent, PS3.8 9.3.4).
    Rejected { result: &'a AssociationRJResult, source: &'a AssociationRJSource },
    /// A connection ended before any association: no A-ASSOCIATE-RQ within ARTIM, a first PDU
    /// that is not a valid A-ASSOCIATE-RQ (aborted), or both the association and the rejection
    /// limits were reached (closed at once).
    Dropped,
}

/// Serves associations on `listener` until `shutdown` turns true (or its sender is dropped),
/// then aborts the associations still open and returns once their tasks have ended.
pub async fn serve<H: ScpHandler>(
    listener: TcpListener,
    policy: Arc<ServerPolicy>,
    handler: H,
    shutdown: watch::Receiver<bool>,
) {
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(policy.max_associations));
    // Connections over the limit still get their A-ASSOCIATE-RJ, from a bounded set of tasks;
    // beyond it they are closed at once.
    let rejecters = Arc::new(Semaphore::new(policy.max_associations.clamp(MIN_REJECTERS, MAX_REJECTERS)));
    let mut tasks = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(error) = joined
                    && error.is_panic()
                {
                    tracing::error!("association task panicked; the listener goes on");
                }
            }
            accepted = listener.accept() => {
                let (stream, peer_addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and the like: back off rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let slot = match slots.clone().try_acquire_owned() {
                    Ok(permit) => Slot::Serve { _permit: permit },
                    Err(_) => match rejecters.clone().try_acquire_owned() {
                        Ok(permit) => Slot::Reject { _permit: permit },
                        Err(_) => {
                            tracing::warn!(peer = %peer_addr, "connection closed: association and rejection limits reached");
                            handler.observe(ServerEvent::Dropped);
                            continue;
                        }
                    },
                };
                let policy = policy.clone();
                let handler = handler.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    run_connection(stream, peer_addr, &policy, &*handler, slot, shutdown).await;
                });
            }
        }
    }
    // Associations see the same shutdown and abort; a sink that never returns is not waited for.
    if timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tasks.abort_all();
    }
}

/// Resolves once `shutdown` is true or its sender is gone (the guard `wait_for` returns is not
/// `Send`, so it is dropped here rather than held in a `select!`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The permit a connection holds.
/// Held (not read) for its release on drop, which frees the slot when the task ends or panics.
enum Slot {
    Serve { _permit: OwnedSemaphorePermit },
    Reject { _permit: OwnedSemaphorePermit },
}

async fn run_connection<H: ScpHandler>(
    mut stream: TcpStream,
    peer_addr: SocketAddr,
    policy: &ServerPolicy,
    handler: &H,
    slot: Slot,
    shutdown: watch::Receiver<bool>,
) {
    let _ = pdu_io::configure_socket(&stream);
    let artim = policy.timeouts.association;
    let linger = artim.min(CLOSE_LINGER);
    let limits = PduLimits::new(policy.max_pdu_length);
    let mut reader = PduReader::new();
    let mut writer = PduWriter::new();
    let first = match timeout(artim, reader.read(&mut stream, &limits)).await {
        Err(_) => {
            // PS3.8 9.2 AA-2: ARTIM expired before an A-ASSOCIATE-RQ; close the transport.
            tracing::info!(peer = %peer_addr, "no A-ASSOCIATE-RQ within ARTIM; closing");
            handler.observe(ServerEvent::Dropped);
            return;
        }
        Ok(Err(error)) => {
            tracing::info!(peer = %peer_addr, %error, "bad first PDU; aborting");
            handler.observe(ServerEvent::Dropped);
            if let Some(reason) = error.abort_reason() {
                let abort = Pdu::AbortRQ { source: AbortRQSource::ServiceProvider(reason) };
                let _ = timeout(linger, writer.write(&mut stream, &abort)).await;
                pdu_io::linger_close(&mut stream, linger).await;
            }
            return;
        }
        Ok(Ok(pdu)) => pdu,
    };
    let Pdu::AssociationRQ(request) = first else {
        tracing::info!(peer = %peer_addr, pdu = pdu_name(&first), "first PDU is not an A-ASSOCIATE-RQ; aborting");
        handler.observe(ServerEvent::Dropped);
        let abort =
            Pdu::AbortRQ { source: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu) };
        let _ = timeout(linger, writer.write(&mut stream, &abort)).await;
        pdu_io::linger_close(&mut stream, linger).await;
        return;
    };
    let over_limit = matches!(slot, Slot::Reject { .. });
    let (accept, contexts) = match negotiate(policy, &request, over_limit) {
        Decision::Reject(reject) => {
            tracing::info!(
                peer = %peer_addr,
                calling = %request.calling_ae_title,
                called = %request.called_ae_title,
                error = %NetError::Rejected { result: reject.result.clone(), reason: reject.source.clone() },
                "association rejected"
            );
            handler.observe(ServerEvent::Rejected { result: &reject.result, source: &reject.source });
            let _ = timeout(linger, writer.write(&mut stream, &Pdu::AssociationRJ(reject))).await;
            pdu_io::linger_close(&mut stream, linger).await;
            return;
        }
        Decision::Accept(accept, contexts) => (accept, contexts),
    };
    if timeout(artim, writer.write(&mut stream, &Pdu::AssociationAC(accept))).await.is_err() {
        return;
    }
    let peer_max_pdu = request
        .user_variables
        .iter()
        .find_map(|item| match item {
            UserVariableItem::MaxLength(max) => Some(*max),
            _ => None,
        })
        .unwrap_or(0);
    let info = AssociationInfo {
        calling_ae: request.calling_ae_title.trim().to_owned(),
        called_ae: request.called_ae_title.trim().to_owned(),
        peer_addr,
    };
    tracing::info!(peer = %peer_addr, calling = %info.calling_ae, accepted = contexts.len(), "association accepted");
    handler.observe(ServerEvent::Accepted(&info));
    let association = Association::new(AssociationParts {
        stream,
        reader,
        contexts,
        peer_max_pdu,
        our_max_pdu: policy.max_pdu_length,
        calling_ae_title: info.calling_ae.clone(),
        called_ae_title: info.called_ae.clone(),
        peer_addr,
        read_timeout: policy.timeouts.idle,
        read_timeout_kind: TimeoutKind::Idle,
        artim,
    })
    .await;
    match association {
        Ok(association) => serve_association(association, &info, handler, shutdown).await,
        Err(error) => tracing::info!(peer = %peer_addr, %error, "association aborted"),
    }
}

/// Serves DIMSE requests until the association ends.
async fn serve_association<H: ScpHandler>(
    mut association: Association,
    info: &AssociationInfo,
    handler: &H,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            incoming = association.receive() => incoming,
            () = stopped(&mut shutdown) => {
                association.abort_with(AbortRQSource::ServiceUser).await;
                return;
            }
        };
        let result = match incoming {
            Err(error) => {
                tracing::info!(peer = %info.peer_addr, %error, "association ended");
                return;
            }
            Ok(Incoming::ReleaseRequested) => {
                let _ = association.answer_release().await;
                tracing::debug!(peer = %info.peer_addr, "association released");
                return;
            }
            Ok(Incoming::Aborted { source }) => {
                tracing::info!(peer = %info.peer_addr, source = %abort_words(&source), "association aborted by the peer");
                return;
            }
            Ok(Incoming::DataFragment { .. }) => Ok(()),
            Ok(Incoming::Command { pc_id, command }) => {
                answer(&mut association, pc_id, command, info, handler, &mut shutdown).await
            }
        };
        if let Err(error) = result {
            tracing::info!(peer = %info.peer_addr, %error, "association ended");
            return;
        }
    }
}

/// Answers one request.
async fn answer<H: ScpHandler>(
    association: &mut Association,
    pc_id: u8,
    command: Command,
    info: &AssociationInfo,
    handler: &H,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), NetError> {
    let context_class = association.context(pc_id).map(|context| context.abstract_syntax.clone()).unwrap_or_default();
    match command {
        Command::CEchoRq(request) => {
            let status =
                if context_class == uids::VERIFICATION { Status::SUCCESS } else { Status::SOP_CLASS_NOT_SUPPORTED };
            let response = CEchoRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid),
                status,
                detail: StatusDetail::default(),
            };
            association.send_command(pc_id, &Command::CEchoRsp(response)).await
        }
        Command::CStoreRq(request) => store(association, pc_id, request, info, handler, shutdown).await,
        Command::CFindRq(request) => {
            drain_request_data(association).await?;
            let response = CFindRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid),
                status: Status::SOP_CLASS_NOT_SUPPORTED,
                data_set_type: DataSetType::NONE,
                detail: not_supported("C-FIND"),
            };
            association.send_command(pc_id, &Command::CFindRsp(response)).await
        }
        Command::CGetRq(request) => {
            drain_request_data(association).await?;
            let response = CGetRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid),
                status: Status::SOP_CLASS_NOT_SUPPORTED,
                data_set_type: DataSetType::NONE,
                sub_operations: SubOperations::default(),
                detail: not_supported("C-GET"),
            };
            association.send_command(pc_id, &Command::CGetRsp(response)).await
        }
        Command::CMoveRq(request) => {
            drain_request_data(association).await?;
            let response = CMoveRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid),
                status: Status::SOP_CLASS_NOT_SUPPORTED,
                data_set_type: DataSetType::NONE,
                sub_operations: SubOperations::default(),
                detail: not_supported("C-MOVE"),
            };
            association.send_command(pc_id, &Command::CMoveRsp(response)).await
        }
        // Nothing of ours is in progress to cancel (PS3.7 9.3.2.3).
        Command::CCancelRq(_) => Ok(()),
        // A response to a request we never sent: ignored, as nothing waits for it.
        other => {
            tracing::debug!(peer = %info.peer_addr, command = ?other.command_field(), "unsolicited response ignored");
            Ok(())
        }
    }
}

fn not_supported(service: &str) -> StatusDetail {
    StatusDetail { error_comment: Some(format!("{service} is not supported by this SCP")), ..StatusDetail::default() }
}

/// Receives one C-STORE-RQ's data set into its sink and answers it.
async fn store<H: ScpHandler>(
    association: &mut Association,
    pc_id: u8,
    request: CStoreRq,
    info: &AssociationInfo,
    handler: &H,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), NetError> {
    let (context_class, transfer_syntax) = association
        .context(pc_id)
        .map(|context| (context.abstract_syntax.clone(), context.transfer_syntax.clone()))
        .unwrap_or_default();
    let instance = InstanceInfo {
        sop_class_uid: request.affected_sop_class_uid.clone(),
        sop_instance_uid: request.affected_sop_instance_uid.clone(),
        transfer_syntax_uid: transfer_syntax.clone(),
    };
    let mut refusal = None;
    let mut comment: Option<String> = None;
    let mut sink: Option<AnySink<H::Sink>> = None;
    if context_class != request.affected_sop_class_uid {
        // PS3.7 C.5.20: the command names a class this context was not negotiated for.
        refusal = Some(Status::SOP_CLASS_NOT_SUPPORTED);
    } else {
        let routed =
            match (&request.move_originator_ae_title, request.move_originator_message_id, handler.move_router()) {
                (Some(ae_title), Some(message_id), Some(router)) => router.route(ae_title, message_id),
                _ => None,
            };
        sink = match routed {
            Some(move_sink) => Some(AnySink::Move(move_sink)),
            None => match handler.store_sink(info, &request, &transfer_syntax).await {
                Ok(handler_sink) => Some(AnySink::Handler(handler_sink)),
                Err(status) => {
                    refusal = Some(status);
                    None
                }
            },
        };
        if let Some(open) = sink.as_mut()
            && let Err(status) = open.begin(&instance).await
        {
            refusal = Some(status);
            comment = open.error_comment();
            sink = None;
        }
    }
    loop {
        let incoming = tokio::select! {
            incoming = association.receive() => incoming,
            () = stopped(shutdown) => {
                association.abort_with(AbortRQSource::ServiceUser).await;
                Err(NetError::Aborted { by: AbortedBy::Us, reason: AbortRQSource::ServiceUser, context: "at shutdown" })
            }
        };
        let (bytes, last) = match incoming {
            Ok(Incoming::DataFragment { bytes, last, .. }) => (bytes, last),
            Ok(Incoming::Aborted { source }) => {
                let error =
                    NetError::Aborted { by: AbortedBy::Peer, reason: source, context: "inside a C-STORE data set" };
                if let Some(open) = sink.as_mut() {
                    open.abort(&error).await;
                }
                return Err(error);
            }
            // The assembler lets only data fragments through inside a data set; anything else
            // (release, errors) ends the association here.
            Ok(other) => {
                let error = NetError::Closed { context: "inside a C-STORE data set" };
                // The kind only: a message body may carry patient data.
                let kind = match other {
                    Incoming::Command { .. } => "command",
                    Incoming::ReleaseRequested => "A-RELEASE-RQ",
                    _ => "other",
                };
                tracing::debug!(kind, "unexpected message inside a data set");
                if let Some(open) = sink.as_mut() {
                    open.abort(&error).await;
                }
                association.abort_with(AbortRQSource::ServiceUser).await;
                return Err(error);
            }
            Err(error) => {
                if let Some(open) = sink.as_mut() {
                    open.abort(&error).await;
                }
                return Err(error);
            }
        };
        if let Some(open) = sink.as_mut()
            && let Err(status) = open.data(bytes).await
        {
            refusal = Some(status);
            comment = open.error_comment();
            sink = None;
        }
        if last {
            let status = match sink.as_mut() {
                Some(open) => {
                    let status = open.end().await;
                    if status.class() == StatusClass::Failure {
                        comment = open.error_comment();
                    }
                    status
                }
                None => refusal.unwrap_or(Status::UNABLE_TO_PROCESS),
            };
            let response = CStoreRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid.clone()),
                affected_sop_instance_uid: Some(request.affected_sop_instance_uid.clone()),
                status,
                detail: StatusDetail {
                    error_comment: comment.map(crate::sink::clip_error_comment),
                    ..StatusDetail::default()
                },
            };
            return association.send_command(pc_id, &Command::CStoreRsp(response)).await;
        }
    }
}

/// Receives and drops the data set of a request we refuse.
async fn drain_request_data(association: &mut Association) -> Result<(), NetError> {
    loop {
        match association.receive().await? {
            Incoming::DataFragment { last: true, .. } => return Ok(()),
            Incoming::DataFragment { .. } => {}
            Incoming::Aborted { source } => {
                return Err(NetError::Aborted {
                    by: AbortedBy::Peer,
                    reason: source,
                    context: "inside a request data set",
                });
            }
            _ => return Err(NetError::Closed { context: "inside a request data set" }),
        }
    }
}

/// The handler's sink or a move's.
enum AnySink<S> {
    Handler(S),
    Move(MoveSink),
}

impl<S: StoreSink> AnySink<S> {
    async fn begin(&mut self, instance: &InstanceInfo) -> Result<(), Status> {
        match self {
            AnySink::Handler(sink) => sink.begin(instance).await,
            AnySink::Move(sink) => sink.begin(instance).await,
        }
    }

    async fn data(&mut self, fragment: Bytes) -> Result<(), Status> {
        match self {
            AnySink::Handler(sink) => sink.data(fragment).await,
            AnySink::Move(sink) => sink.data(fragment).await,
        }
    }

    async fn end(&mut self) -> Status {
        match self {
            AnySink::Handler(sink) => sink.end().await,
            AnySink::Move(sink) => sink.end().await,
        }
    }

    async fn abort(&mut self, reason: &NetError) {
        match self {
            AnySink::Handler(sink) => sink.abort(reason).await,
            AnySink::Move(sink) => sink.abort(reason).await,
        }
    }

    fn error_comment(&mut self) -> Option<String> {
        match self {
            AnySink::Handler(sink) => sink.error_comment(),
            AnySink::Move(sink) => sink.error_comment(),
        }
    }
}

/// The acceptor's decision on an A-ASSOCIATE-RQ.
#[derive(Debug)]
pub(crate) enum Decision {
    Accept(AssociationAC, Vec<PresentationContext>),
    Reject(AssociationRJ),
}

/// Decides on `request` under `policy`; `over_limit` when every association slot is taken.
pub(crate) fn negotiate(policy: &ServerPolicy, request: &AssociationRQ, over_limit: bool) -> Decision {
    let reject = |result, source| Decision::Reject(AssociationRJ { result, source });
    if request.protocol_version & PROTOCOL_VERSION == 0 {
        return reject(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported,
            ),
        );
    }
    if trim_uid(&request.application_context_name) != APPLICATION_CONTEXT_NAME {
        return reject(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::ApplicationContextNameNotSupported),
        );
    }
    if request.called_ae_title.trim() != policy.ae_title {
        return reject(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
        );
    }
    if let Some(allowed) = &policy.allowed_calling_ae_titles
        && !allowed.iter().any(|ae_title| ae_title == request.calling_ae_title.trim())
    {
        return reject(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
        );
    }
    if over_limit {
        return reject(
            AssociationRJResult::Transient,
            AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        );
    }
    let mut results = Vec::with_capacity(request.presentation_contexts.len());
    let mut accepted: Vec<PresentationContext> = Vec::new();
    for proposed in &request.presentation_contexts {
        let abstract_syntax = trim_uid(&proposed.abstract_syntax);
        let offered = proposed.transfer_syntaxes.iter().map(|ts| trim_uid(ts));
        let duplicate = results.iter().any(|result: &PresentationContextResult| result.id == proposed.id);
        let choice = if proposed.id % 2 == 0 || duplicate {
            // PS3.8 9.3.2.2: IDs are odd and unique; a context we cannot address is refused.
            Err(PresentationContextResultReason::NoReason)
        } else if abstract_syntax == uids::VERIFICATION {
            let mut offered = offered;
            offered
                .find(|ts| *ts == uids::IMPLICIT_VR_LITTLE_ENDIAN || *ts == uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .ok_or(PresentationContextResultReason::TransferSyntaxesNotSupported)
        } else if policy.storage.accepts(abstract_syntax) {
            offered
                .filter(|ts| !policy.refused_transfer_syntaxes.iter().any(|uid| uid == ts))
                .find(|ts| match &policy.storage_transfer_syntaxes {
                    Some(allowed) => allowed.iter().any(|uid| uid == ts),
                    None => is_known_transfer_syntax(ts),
                })
                .ok_or(PresentationContextResultReason::TransferSyntaxesNotSupported)
        } else {
            Err(PresentationContextResultReason::AbstractSyntaxNotSupported)
        };
        match choice {
            Ok(ts) => {
                results.push(PresentationContextResult {
                    id: proposed.id,
                    reason: PresentationContextResultReason::Acceptance,
                    transfer_syntax: ts.to_owned(),
                });
                accepted.push(PresentationContext {
                    id: proposed.id,
                    abstract_syntax: abstract_syntax.to_owned(),
                    transfer_syntax: ts.to_owned(),
                    scu: false,
                    scp: true,
                });
            }
            // PS3.8 9.3.3.2: the transfer syntax of a rejected context is not significant.
            Err(reason) => results.push(PresentationContextResult {
                id: proposed.id,
                reason,
                transfer_syntax: uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            }),
        }
    }
    let mut user_variables = vec![
        UserVariableItem::MaxLength(policy.max_pdu_length),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_owned()),
    ];
    // PS3.7 D.3.3.4: answer each role proposal for a class we accepted. The requestor keeps
    // the SCU role it asks for; we never take the SCU role (we send no requests on an
    // association we accepted), so its SCP role is refused.
    for item in &request.user_variables {
        if let UserVariableItem::ScuScpRoleSelectionSubItem(class, roles) = item
            && accepted.iter().any(|context| context.abstract_syntax == trim_uid(class))
        {
            user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                class.clone(),
                RequestorRoles { scu: roles.scu, scp: false },
            ));
        }
    }
    user_variables.push(UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_owned()));
    let accept = AssociationAC {
        protocol_version: PROTOCOL_VERSION,
        calling_ae_title: request.calling_ae_title.clone(),
        called_ae_title: request.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT_NAME.to_owned(),
        presentation_contexts: results,
        user_variables,
    };
    Decision::Accept(accept, accepted)
}

/// PS3.4 B.5: the standard storage SOP classes are all under this root.
const STANDARD_STORAGE_ROOT: &str = "1.2.840.10008.5.1.4.1.1.";
pub const DEFAULT_MAX_ASSOCIATIONS: usize = 32;
const DEFAULT_ARTIM: Duration = Duration::from_secs(30);
const DEFAULT_IDLE: Duration = Duration::from_secs(60);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const CLOSE_LINGER: Duration = Duration::from_secs(1);
const MIN_REJECTERS: usize = 4;
const MAX_REJECTERS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::uids as std_uids;
    use dicom_ul::pdu::PresentationContextProposed;

    fn request(called: &str, calling: &str, contexts: Vec<(u8, &str, Vec<&str>)>) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.to_owned(),
            called_ae_title: called.to_owned(),
            application_context_name: APPLICATION_CONTEXT_NAME.to_owned(),
            presentation_contexts: contexts
                .into_iter()
                .map(|(id, abstract_syntax, ts)| PresentationContextProposed {
                    id,
                    abstract_syntax: abstract_syntax.to_owned(),
                    transfer_syntaxes: ts.into_iter().map(str::to_owned).collect(),
                })
                .collect(),
            user_variables: vec![UserVariableItem::MaxLength(16_384)],
        }
    }

    fn rejection(decision: Decision) -> AssociationRJ {
        match decision {
            Decision::Reject(reject) => reject,
            Decision::Accept(..) => panic!("expected a rejection"),
        }
    }

    #[test]
    fn rejections_follow_ps3_8_table_9_21() {
        let mut policy = ServerPolicy::new("HIE");
        let verification = vec![(1, uids::VERIFICATION, vec![uids::IMPLICIT_VR_LITTLE_ENDIAN])];
        let wrong_called = rejection(negotiate(&policy, &request("WRONG", "PEER", verification.clone()), false));
        assert_eq!(wrong_called.result, AssociationRJResult::Permanent);
        assert_eq!(
            wrong_called.source,
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        policy.allowed_calling_ae_titles = Some(vec!["FRIEND".to_owned()]);
        let stranger = rejection(negotiate(&policy, &request("HIE", "STRANGER", verification.clone()), false));
        assert_eq!(
            stranger.source,
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        let busy = rejection(negotiate(&policy, &request("HIE", "FRIEND", verification.clone()), true));
        assert_eq!(busy.result, AssociationRJResult::Transient);
        assert_eq!(
            busy.source,
            AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
            )
        );
        let mut old = request("HIE", "FRIEND", verification.clone());
        old.protocol_version = 2;
        assert!(matches!(
            rejection(negotiate(&policy, &old, false)).source,
            AssociationRJSource::ServiceProviderASCE(
                AssociationRJServiceProviderASCEReason::ProtocolVersionNotSupported
            )
        ));
        let mut foreign = request("HIE", "FRIEND", verification);
        foreign.application_context_name = "1.2.3".to_owned();
        assert!(matches!(
            rejection(negotiate(&policy, &foreign, false)).source,
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::ApplicationContextNameNotSupported)
        ));
    }

    #[test]
    fn contexts_are_chosen_in_the_peers_order_and_unknown_ones_refused() {
        let policy = ServerPolicy::new("HIE");
        let jpeg = "1.2.840.10008.1.2.4.50";
        let rq = request(
            "HIE",
            "PEER",
            vec![
                (1, uids::VERIFICATION, vec!["1.2.840.10008.1.2.4.50", uids::EXPLICIT_VR_LITTLE_ENDIAN]),
                (3, std_uids::CT_IMAGE_STORAGE, vec!["1.2.3.4.5.6", jpeg, uids::IMPLICIT_VR_LITTLE_ENDIAN]),
                (5, "1.2.840.10008.5.1.4.1.1.999", vec![uids::IMPLICIT_VR_LITTLE_ENDIAN]),
                (7, uids::STUDY_ROOT_FIND, vec![uids::IMPLICIT_VR_LITTLE_ENDIAN]),
                (9, std_uids::MR_IMAGE_STORAGE, vec!["1.2.3.4.5.6"]),
                (10, std_uids::MR_IMAGE_STORAGE, vec![uids::IMPLICIT_VR_LITTLE_ENDIAN]),
            ],
        );
        let Decision::Accept(accept, accepted) = negotiate(&policy, &rq, false) else { panic!("rejected") };
        let reasons: Vec<_> = accept.presentation_contexts.iter().map(|r| (r.id, r.reason.clone())).collect();
        assert_eq!(
            reasons,
            vec![
                (1, PresentationContextResultReason::Acceptance),
                (3, PresentationContextResultReason::Acceptance),
                (5, PresentationContextResultReason::Acceptance),
                (7, PresentationContextResultReason::AbstractSyntaxNotSupported),
                (9, PresentationContextResultReason::TransferSyntaxesNotSupported),
                (10, PresentationContextResultReason::NoReason),
            ]
        );
        assert_eq!(accepted[0].transfer_syntax, uids::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!(accepted[1].transfer_syntax, jpeg, "first known one in the peer's order");
        assert_eq!(accepted[2].abstract_syntax, "1.2.840.10008.5.1.4.1.1.999", "any standard storage class");
    }

    #[test]
    fn refused_transfer_syntaxes_are_never_chosen() {
        let deflated = "1.2.840.10008.1.2.1.99";
        let mut policy = ServerPolicy::new("HIE");
        policy.refused_transfer_syntaxes = vec![deflated.to_owned()];
        let rq = request(
            "HIE",
            "PEER",
            vec![
                (1, std_uids::CT_IMAGE_STORAGE, vec![deflated, uids::EXPLICIT_VR_LITTLE_ENDIAN]),
                (3, std_uids::MR_IMAGE_STORAGE, vec![deflated]),
            ],
        );
        let Decision::Accept(accept, accepted) = negotiate(&policy, &rq, false) else { panic!("rejected") };
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].transfer_syntax, uids::EXPLICIT_VR_LITTLE_ENDIAN, "the next one in the peer's order");
        assert_eq!(
            accept.presentation_contexts[1].reason,
            PresentationContextResultReason::TransferSyntaxesNotSupported
        );
    }

    #[test]
    fn no_acceptable_context_is_an_accept_with_every_context_rejected() {
        let policy = ServerPolicy::new("HIE");
        let rq = request("HIE", "PEER", vec![(1, uids::STUDY_ROOT_FIND, vec![uids::IMPLICIT_VR_LITTLE_ENDIAN])]);
        let Decision::Accept(accept, accepted) = negotiate(&policy, &rq, false) else { panic!("rejected") };
        assert!(accepted.is_empty());
        assert_eq!(accept.presentation_contexts[0].reason, PresentationContextResultReason::AbstractSyntaxNotSupported);
    }
}
