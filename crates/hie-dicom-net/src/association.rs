//! An established association, the same type for both sides once negotiation is over (the
//! requestor's [`crate::client::connect`], the acceptor's [`crate::server`]): the accepted
//! presentation contexts, the maximum PDU lengths, sending commands and data sets (whole or
//! streamed), receiving [`Incoming`] messages through `hie_dimse::MessageAssembler`, release and
//! abort (DICOM PS3.8 7.2, 7.3, 9.3).
//!
//! Every wait on the peer is bounded: the DIMSE timeout (SCU) or idle timeout (SCP) between PDUs,
//! ARTIM for the release, the same bound for writes. A timeout aborts the association; so does a
//! protocol violation, with the A-ABORT provider reason of PS3.8 Table 9-26. After an abort or a
//! release every call returns [`NetError::AssociationClosed`].

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use dicom_ul::pdu::{AbortRQServiceProviderReason, AbortRQSource, PDataValue, PDataValueType, Pdu};
use hie_dimse::pdata::{self, MaxPduLength, UNLIMITED_PDU_LENGTH};
use hie_dimse::{Command, Event, Limits, MessageAssembler};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::error::{NetError, TimeoutKind, Violation};
use crate::pdu_io::{PduError, PduLimits, PduReader, PduWriter, pdu_name};

/// A presentation context accepted on this association (PS3.8 7.1.1.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentationContext {
    /// Presentation Context ID: odd, 1 to 255.
    pub id: u8,
    /// Abstract syntax (SOP class) UID.
    pub abstract_syntax: String,
    /// The one transfer syntax accepted for it.
    pub transfer_syntax: String,
    /// Whether we may send requests on it (we are its SCU).
    pub scu: bool,
    /// Whether we may serve requests on it (we are its SCP): always on the acceptor's side, and
    /// on the requestor's side when SCP/SCU role selection granted it (PS3.7 D.3.3.4).
    pub scp: bool,
}

/// Who aborted an association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortedBy {
    Peer,
    Us,
}

impl fmt::Display for AbortedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AbortedBy::Peer => "the peer",
            AbortedBy::Us => "us",
        })
    }
}

/// What the peer sent, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete command; if it has a data set, [`Incoming::DataFragment`]s on the same
    /// presentation context follow, the last flagged.
    Command { pc_id: u8, command: Command },
    /// One fragment of the data set that belongs to the last command, as it arrived.
    DataFragment { pc_id: u8, bytes: Bytes, last: bool },
    /// The peer asked to release the association (A-RELEASE-RQ between messages).
    ReleaseRequested,
    /// The peer aborted the association (A-ABORT); it is closed.
    Aborted { source: AbortRQSource },
}

/// Everything negotiation produced, handed to [`Association::new`].
pub(crate) struct AssociationParts {
    pub stream: TcpStream,
    pub reader: PduReader,
    pub contexts: Vec<PresentationContext>,
    /// The Maximum Length the peer declared (0: none).
    pub peer_max_pdu: u32,
    pub our_max_pdu: u32,
    pub calling_ae_title: String,
    pub called_ae_title: String,
    pub peer_addr: SocketAddr,
    /// Between PDUs: the DIMSE timeout (SCU) or the idle timeout (SCP).
    pub read_timeout: Duration,
    pub read_timeout_kind: TimeoutKind,
    /// ARTIM, for the release handshake and for closing.
    pub artim: Duration,
}

/// An established association.
pub struct Association {
    stream: TcpStream,
    reader: PduReader,
    writer: PduWriter,
    limits: PduLimits,
    contexts: Vec<PresentationContext>,
    peer_max_pdu: MaxPduLength,
    send_max_pdu: MaxPduLength,
    /// `None` once a violation consumed it; the association is aborted then.
    assembler: Option<MessageAssembler>,
    /// PDVs of the last P-DATA-TF not yet handed to the assembler.
    pending: VecDeque<PDataValue>,
    read_timeout: Duration,
    read_timeout_kind: TimeoutKind,
    artim: Duration,
    calling_ae_title: String,
    called_ae_title: String,
    peer_addr: SocketAddr,
    local_addr: Option<SocketAddr>,
    next_message_id: u16,
    open: bool,
    pdus_received: u64,
}

impl fmt::Debug for Association {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Association")
            .field("calling_ae_title", &self.calling_ae_title)
            .field("called_ae_title", &self.called_ae_title)
            .field("peer_addr", &self.peer_addr)
            .field("contexts", &self.contexts.len())
            .field("open", &self.open)
            .finish()
    }
}

impl Association {
    /// An association from negotiated parts; refuses a peer maximum PDU length that cannot
    /// carry a fragment (PS3.8 D.1.1), after aborting.
    pub(crate) async fn new(parts: AssociationParts) -> Result<Association, NetError> {
        let peer_max_pdu = match MaxPduLength::from_peer(parts.peer_max_pdu) {
            Ok(peer_max_pdu) => peer_max_pdu,
            Err(error) => {
                let mut stream = parts.stream;
                let _ = timeout(ABORT_WRITE_TIMEOUT, stream.write_all(&INVALID_PARAMETER_ABORT)).await;
                return Err(NetError::PeerViolation(Violation::MaxPduLength(error)));
            }
        };
        // We send no more than the cap even to a peer that takes more: memory per association
        // stays bounded, and larger PDUs gain nothing measurable.
        let send_max_pdu = MaxPduLength::from_peer(peer_max_pdu.get().min(SEND_PDU_CAP)).unwrap_or(peer_max_pdu);
        let local_addr = parts.stream.local_addr().ok();
        Ok(Association {
            stream: parts.stream,
            reader: parts.reader,
            writer: PduWriter::new(),
            limits: PduLimits::new(parts.our_max_pdu),
            contexts: parts.contexts,
            peer_max_pdu,
            send_max_pdu,
            assembler: Some(MessageAssembler::new(Limits::default())),
            pending: VecDeque::new(),
            read_timeout: parts.read_timeout,
            read_timeout_kind: parts.read_timeout_kind,
            artim: parts.artim,
            calling_ae_title: parts.calling_ae_title,
            called_ae_title: parts.called_ae_title,
            peer_addr: parts.peer_addr,
            local_addr,
            next_message_id: 1,
            open: true,
            pdus_received: 0,
        })
    }

    /// The accepted presentation contexts.
    pub fn contexts(&self) -> &[PresentationContext] {
        &self.contexts
    }

    /// The accepted presentation context with this ID.
    pub fn context(&self, pc_id: u8) -> Option<&PresentationContext> {
        self.contexts.iter().find(|context| context.id == pc_id)
    }

    /// The first accepted context for `abstract_syntax` on which we may send requests.
    pub fn context_for(&self, abstract_syntax: &str) -> Option<&PresentationContext> {
        self.contexts.iter().find(|context| context.scu && context.abstract_syntax == abstract_syntax)
    }

    /// The maximum P-DATA-TF length the peer receives (PS3.8 D.1.1).
    pub fn peer_max_pdu(&self) -> MaxPduLength {
        self.peer_max_pdu
    }

    /// The maximum we send, the peer's capped at [`SEND_PDU_CAP`].
    pub fn send_max_pdu(&self) -> MaxPduLength {
        self.send_max_pdu
    }

    /// The maximum P-DATA-TF length we declared and enforce on receive.
    pub fn our_max_pdu(&self) -> u32 {
        self.limits.max_pdata_length
    }

    pub fn calling_ae_title(&self) -> &str {
        &self.calling_ae_title
    }

    pub fn called_ae_title(&self) -> &str {
        &self.called_ae_title
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Our end of the TCP connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Whether the association is still established.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The longest wait for the next PDU: the DIMSE timeout (SCU) or the idle timeout (SCP).
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// How many PDUs the peer has sent on this association.
    pub fn pdus_received(&self) -> u64 {
        self.pdus_received
    }

    /// A Message ID (0000,0110) not used on this association by the last 65 535 requests; 0 is
    /// skipped since some peers treat it as "none".
    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = id.checked_add(1).unwrap_or(1);
        id
    }

    /// Sends a command set on `pc_id` (PS3.7 6.3.1: always Implicit VR Little Endian), in as many
    /// fragments as the peer's maximum requires.
    pub async fn send_command(&mut self, pc_id: u8, command: &Command) -> Result<(), NetError> {
        self.check_context(pc_id)?;
        let mut bytes = Vec::with_capacity(COMMAND_SET_CAPACITY);
        hie_dimse::encode(command, &mut bytes);
        for pdu in pdata::fragment(pc_id, PDataValueType::Command, &bytes, self.send_max_pdu) {
            self.write_pdu(&pdu).await?;
        }
        Ok(())
    }

    /// Sends a whole data set on `pc_id`, already encoded in the context's transfer syntax.
    pub async fn send_data_set(&mut self, pc_id: u8, bytes: &[u8]) -> Result<(), NetError> {
        self.send_data_fragment(pc_id, bytes, true).await
    }

    /// Sends one chunk of a data set streamed from elsewhere; `last` on the final chunk. Chunks
    /// larger than the peer's maximum are split; an empty chunk that is not last sends nothing.
    pub async fn send_data_fragment(&mut self, pc_id: u8, bytes: &[u8], last: bool) -> Result<(), NetError> {
        self.check_context(pc_id)?;
        let fragments = if last {
            pdata::fragment(pc_id, PDataValueType::Data, bytes, self.send_max_pdu)
        } else {
            pdata::fragment_partial(pc_id, PDataValueType::Data, bytes, self.send_max_pdu)
        };
        for pdu in fragments {
            self.write_pdu(&pdu).await?;
        }
        Ok(())
    }

    /// The next message part from the peer, waiting at most the read timeout between PDUs.
    pub async fn receive(&mut self) -> Result<Incoming, NetError> {
        match self.receive_until(None).await? {
            Some(incoming) => Ok(incoming),
            // Without a deadline only the read timeout ends a wait, and it returns an error.
            None => Err(NetError::Timeout { which: self.read_timeout_kind, after: self.read_timeout }),
        }
    }

    /// Like [`Association::receive`], but gives up at `deadline` with `Ok(None)`, leaving the
    /// association open (the caller cancels first). Cancel-safe between PDUs.
    pub(crate) async fn receive_until(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming>, NetError> {
        loop {
            if let Some(pdv) = self.pending.pop_front() {
                if let Some(incoming) = self.assemble(pdv).await? {
                    return Ok(Some(incoming));
                }
                continue;
            }
            let Some(pdu) = self.read_pdu(deadline).await? else { return Ok(None) };
            match pdu {
                Pdu::PData { data } if data.is_empty() => {
                    return Err(self.violation(Violation::EmptyPData).await);
                }
                Pdu::PData { data } => self.pending.extend(data),
                Pdu::ReleaseRQ => {
                    if self.assembler.as_ref().is_some_and(MessageAssembler::is_between_messages) {
                        return Ok(Some(Incoming::ReleaseRequested));
                    }
                    let violation = Violation::UnexpectedPdu { pdu: "A-RELEASE-RQ", state: "inside a DIMSE message" };
                    return Err(self.violation(violation).await);
                }
                Pdu::AbortRQ { source } => {
                    self.open = false;
                    self.close_gracefully().await;
                    return Ok(Some(Incoming::Aborted { source }));
                }
                other => {
                    let violation =
                        Violation::UnexpectedPdu { pdu: pdu_name(&other), state: "on an established association" };
                    return Err(self.violation(violation).await);
                }
            }
        }
    }

    /// Releases the association (A-RELEASE-RQ, then the RP within ARTIM, PS3.8 7.2) and closes
    /// the connection; aborts if the peer does not answer in time.
    pub async fn release(mut self) -> Result<(), NetError> {
        self.write_pdu(&Pdu::ReleaseRQ).await?;
        let deadline = Instant::now() + self.artim;
        loop {
            let read = timeout_at(deadline, self.reader.read(&mut self.stream, &self.limits)).await;
            match read {
                Err(_) => {
                    self.abort_with(AbortRQSource::ServiceUser).await;
                    return Err(NetError::Timeout { which: TimeoutKind::Release, after: self.artim });
                }
                Ok(Ok(Pdu::ReleaseRP)) => {
                    self.open = false;
                    self.close_gracefully().await;
                    return Ok(());
                }
                // PS3.8 9.2 state Sta7: P-DATA may still arrive after our A-RELEASE-RQ; nothing
                // waits for it any more.
                Ok(Ok(Pdu::PData { .. })) => {}
                // Release collision (PS3.8 9.2, AR-8 and AR-9): as requestor we answer first,
                // then still wait for the peer's RP.
                Ok(Ok(Pdu::ReleaseRQ)) => self.write_pdu(&Pdu::ReleaseRP).await?,
                Ok(Ok(Pdu::AbortRQ { source })) => {
                    self.open = false;
                    return Err(NetError::Aborted { by: AbortedBy::Peer, reason: source, context: "during release" });
                }
                Ok(Ok(other)) => {
                    let violation = Violation::UnexpectedPdu { pdu: pdu_name(&other), state: "during release" };
                    return Err(self.violation(violation).await);
                }
                Ok(Err(error)) => return Err(self.read_failed(error, "during release").await),
            }
        }
    }

    /// Aborts the association as its service-user (PS3.8 7.3) and closes the connection.
    pub async fn abort(mut self) {
        self.abort_with(AbortRQSource::ServiceUser).await;
    }

    /// Answers the peer's A-RELEASE-RQ with A-RELEASE-RP and closes (PS3.8 7.2, acceptor side).
    pub async fn answer_release(mut self) -> Result<(), NetError> {
        self.write_pdu(&Pdu::ReleaseRP).await?;
        self.open = false;
        self.close_gracefully().await;
        Ok(())
    }

    /// Sends A-ABORT with `source` unless already closed, then closes the connection.
    pub(crate) async fn abort_with(&mut self, source: AbortRQSource) {
        if !self.open {
            return;
        }
        self.open = false;
        let pdu = Pdu::AbortRQ { source };
        let _ = timeout(ABORT_WRITE_TIMEOUT, self.writer.write(&mut self.stream, &pdu)).await;
        self.close_gracefully().await;
    }

    /// Aborts for a protocol violation by the peer, with the provider reason that names it, and
    /// returns the error to report.
    pub(crate) async fn violation(&mut self, violation: Violation) -> NetError {
        let source = match &violation {
            Violation::Pdu(error) => AbortRQSource::ServiceProvider(
                error.abort_reason().unwrap_or(AbortRQServiceProviderReason::InvalidPduParameter),
            ),
            Violation::Assembly(_) | Violation::UnexpectedCommand { .. } => {
                AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPduParameter)
            }
            Violation::UnexpectedPdu { .. } => {
                AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu)
            }
            Violation::UnknownPresentationContext(_)
            | Violation::EmptyPData
            | Violation::BadAssociateAc(_)
            | Violation::MaxPduLength(_) => {
                AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::InvalidPduParameter)
            }
            // A data set is the application's business, not the upper layer's.
            Violation::MalformedDataSet(_) => AbortRQSource::ServiceUser,
        };
        tracing::warn!(peer = %self.peer_addr, %violation, "aborting the association: protocol violation by the peer");
        self.abort_with(source).await;
        NetError::PeerViolation(violation)
    }

    /// Whether an idle association still looks usable: open, nothing unread, and the socket
    /// neither closed by the peer nor holding bytes (an idle peer sends nothing but A-ABORT or
    /// A-RELEASE-RQ). A peer that vanished without a FIN cannot be seen here.
    pub(crate) fn probe_idle(&mut self) -> bool {
        if !self.open || self.reader.has_buffered() || !self.pending.is_empty() {
            return false;
        }
        let mut probe = [0u8; 64];
        match self.stream.try_read(&mut probe) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => true,
            _ => {
                self.open = false;
                false
            }
        }
    }

    fn check_context(&self, pc_id: u8) -> Result<(), NetError> {
        if !self.open {
            return Err(NetError::AssociationClosed);
        }
        if self.context(pc_id).is_none() {
            return Err(NetError::InvalidRequest(format!("presentation context {pc_id} was not accepted")));
        }
        Ok(())
    }

    async fn assemble(&mut self, pdv: PDataValue) -> Result<Option<Incoming>, NetError> {
        if self.context(pdv.presentation_context_id).is_none() {
            return Err(self.violation(Violation::UnknownPresentationContext(pdv.presentation_context_id)).await);
        }
        let Some(assembler) = self.assembler.take() else { return Err(NetError::AssociationClosed) };
        match assembler.handle(pdv) {
            Ok((next, event)) => {
                self.assembler = Some(next);
                Ok(event.map(|event| match event {
                    Event::Command { presentation_context_id, command } => {
                        Incoming::Command { pc_id: presentation_context_id, command }
                    }
                    Event::DataFragment { presentation_context_id, bytes, last } => {
                        Incoming::DataFragment { pc_id: presentation_context_id, bytes: Bytes::from(bytes), last }
                    }
                }))
            }
            Err(error) => Err(self.violation(Violation::Assembly(error)).await),
        }
    }

    /// Reads one PDU within the read timeout (an error, after aborting) or `deadline` (`None`).
    async fn read_pdu(&mut self, deadline: Option<Instant>) -> Result<Option<Pdu>, NetError> {
        if !self.open {
            return Err(NetError::AssociationClosed);
        }
        let read_deadline = Instant::now() + self.read_timeout;
        let (until, is_caller_deadline) = match deadline {
            Some(deadline) if deadline < read_deadline => (deadline, true),
            _ => (read_deadline, false),
        };
        match timeout_at(until, self.reader.read(&mut self.stream, &self.limits)).await {
            Err(_) if is_caller_deadline => Ok(None),
            Err(_) => {
                tracing::info!(peer = %self.peer_addr, timeout = ?self.read_timeout, "aborting the association: {} timeout", self.read_timeout_kind);
                self.abort_with(AbortRQSource::ServiceUser).await;
                Err(NetError::Timeout { which: self.read_timeout_kind, after: self.read_timeout })
            }
            Ok(Ok(pdu)) => {
                self.pdus_received += 1;
                Ok(Some(pdu))
            }
            Ok(Err(error)) => Err(self.read_failed(error, "while waiting for the peer").await),
        }
    }

    async fn read_failed(&mut self, error: PduError, context: &'static str) -> NetError {
        match error {
            PduError::Closed | PduError::Truncated { .. } => {
                self.open = false;
                NetError::Closed { context }
            }
            PduError::Io(error) => {
                self.open = false;
                NetError::Io(error)
            }
            error => self.violation(Violation::Pdu(error)).await,
        }
    }

    async fn write_pdu(&mut self, pdu: &Pdu) -> Result<(), NetError> {
        if !self.open {
            return Err(NetError::AssociationClosed);
        }
        match timeout(self.read_timeout, self.writer.write(&mut self.stream, pdu)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(PduError::Encode { pdu, detail })) => Err(NetError::InvalidRequest(format!("{pdu}: {detail}"))),
            Ok(Err(PduError::Io(error))) => {
                self.open = false;
                Err(NetError::Io(error))
            }
            Ok(Err(error)) => {
                self.open = false;
                Err(NetError::Io(std::io::Error::other(error.to_string())))
            }
            Err(_) => {
                self.open = false;
                self.close_gracefully().await;
                Err(NetError::Timeout { which: TimeoutKind::Write, after: self.read_timeout })
            }
        }
    }

    /// Closes the connection after our last PDU (see `pdu_io::linger_close`).
    async fn close_gracefully(&mut self) {
        crate::pdu_io::linger_close(&mut self.stream, self.artim.min(CLOSE_LINGER)).await;
    }
}

impl Drop for Association {
    /// An association dropped while established is aborted, best effort: the 10-byte A-ABORT
    /// fits in any socket buffer, so a non-blocking write nearly always gets it out.
    fn drop(&mut self) {
        if self.open {
            let _ = self.stream.try_write(&SERVICE_USER_ABORT);
        }
    }
}

/// The largest P-DATA-TF variable field we send, whatever the peer accepts: dicom-ul's
/// `LARGE_PDU_SIZE` (256 KiB minus the PDU header).
pub const SEND_PDU_CAP: u32 = UNLIMITED_PDU_LENGTH;
/// A-ABORT, source DICOM UL service-user (PS3.8 9.3.8: type 07H, reserved, length 4, reserved,
/// reserved, source 0, reason 0).
const SERVICE_USER_ABORT: [u8; 10] = [0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00];
/// A-ABORT, source service-provider (02H), reason invalid-PDU-parameter value (06H).
const INVALID_PARAMETER_ABORT: [u8; 10] = [0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x06];
/// How long writing the A-ABORT may take before we just close.
const ABORT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The most we wait for the peer to close after our last PDU.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// A command set is a few hundred bytes.
const COMMAND_SET_CAPACITY: usize = 256;
