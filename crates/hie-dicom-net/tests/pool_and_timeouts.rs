//! The association pool against our own SCP (an idle association reused, a dead one replaced,
//! the cap on open associations), and the total timeout of an operation against a fake PACS
//! that sends pending C-FIND responses forever (dcm4che#199): C-CANCEL, then the final response
//! or, if the PACS ignores the cancel, an abort.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{
    AssociationAC, PDataValueType, Pdu, PresentationContextResult, PresentationContextResultReason, UserVariableItem,
};
use hie_dicom_net::pdu_io::{PduLimits, PduReader, PduWriter};
use hie_dicom_net::{
    AssociationPool, FindLimits, FindStop, NetError, PoolOptions, ProposedContext, ServerPolicy, TimeoutKind, scu,
};
use hie_dimse::command::{CFindRsp, StatusDetail};
use hie_dimse::pdata::{self, MaxPduLength};
use hie_dimse::{Command, DataSetType, Event, Limits, MessageAssembler, Status, uids};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

#[tokio::test]
async fn an_idle_association_is_reused_and_a_dead_one_replaced() {
    let dir = temp_dir("pool");
    let handler = FileHandler::new(dir.path());
    let (addr, stop, task) = scp_on(None, handler.clone()).await;
    let pool = AssociationPool::new(
        addr,
        options(OUR_AE),
        vec![ProposedContext::verification()],
        PoolOptions { max_open: 2, ..PoolOptions::default() },
    );
    let mut first = pool.acquire().await.unwrap();
    assert!(!first.was_reused());
    assert_eq!(scu::echo(&mut first).await.unwrap(), Status::SUCCESS);
    let first_port = first.local_addr().unwrap().port();
    first.give_back();
    assert_eq!(pool.idle_count(), 1);

    let mut again = pool.acquire().await.unwrap();
    assert!(again.was_reused());
    assert_eq!(again.local_addr().unwrap().port(), first_port, "the same association");
    assert_eq!(scu::echo(&mut again).await.unwrap(), Status::SUCCESS);
    again.give_back();

    // The SCP goes away (aborting the idle association) and comes back on the same address:
    // the dead association is found out and replaced by a new one, transparently.
    stop.send(true).unwrap();
    task.await.unwrap();
    let (_, _stop, _task) = scp_on(Some(addr), handler).await;
    let mut replaced = pool.acquire().await.unwrap();
    assert!(!replaced.was_reused());
    assert_ne!(replaced.local_addr().unwrap().port(), first_port);
    assert_eq!(scu::echo(&mut replaced).await.unwrap(), Status::SUCCESS);
    replaced.give_back();
}

#[tokio::test]
async fn the_pool_opens_at_most_max_open_associations() {
    let dir = temp_dir("pool-cap");
    let (addr, _stop, _task) = scp_on(None, FileHandler::new(dir.path())).await;
    let pool = AssociationPool::new(
        addr,
        options(OUR_AE),
        vec![ProposedContext::verification()],
        PoolOptions { max_open: 1, acquire_timeout: Duration::from_millis(200), ..PoolOptions::default() },
    );
    let held = pool.acquire().await.unwrap();
    let error = pool.acquire().await.unwrap_err();
    assert!(matches!(error, NetError::Timeout { which: TimeoutKind::PoolAcquire, .. }), "{error}");
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(|association| association.was_reused()) }
    });
    held.give_back();
    assert!(waiting.await.unwrap().unwrap(), "the waiter got the association given back");
}

#[tokio::test]
async fn associations_beyond_max_idle_are_released_not_kept() {
    let dir = temp_dir("pool-idle");
    let (addr, _stop, _task) = scp_on(None, FileHandler::new(dir.path())).await;
    let pool = AssociationPool::new(
        addr,
        options(OUR_AE),
        vec![ProposedContext::verification()],
        PoolOptions { max_open: 3, max_idle: 1, ..PoolOptions::default() },
    );
    let mut first = pool.acquire().await.unwrap();
    let mut second = pool.acquire().await.unwrap();
    assert_eq!(scu::echo(&mut first).await.unwrap(), Status::SUCCESS);
    assert_eq!(scu::echo(&mut second).await.unwrap(), Status::SUCCESS);
    let first_port = first.local_addr().unwrap().port();
    first.give_back();
    second.give_back();
    // The second one was released (its slot freed), the first kept for reuse.
    assert_eq!(pool.idle_count(), 1);
    let mut again = pool.acquire().await.unwrap();
    assert!(again.was_reused());
    assert_eq!(again.local_addr().unwrap().port(), first_port);
    let mut fresh = pool.acquire().await.unwrap();
    let mut third = pool.acquire().await.unwrap();
    assert!(!fresh.was_reused() && !third.was_reused(), "the released slot opens a new association");
    for association in [&mut again, &mut fresh, &mut third] {
        assert_eq!(scu::echo(association).await.unwrap(), Status::SUCCESS);
    }
}

#[tokio::test]
async fn a_pacs_that_sends_pending_forever_is_cancelled_then_cut_off() {
    for honours_cancel in [true, false] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pacs = tokio::spawn(endless_pending_pacs(listener, honours_cancel));
        let mut client = options("ENDLESS");
        client.timeouts.dimse = Duration::from_secs(1);
        let contexts = [ProposedContext::new(uids::STUDY_ROOT_FIND, &[uids::IMPLICIT_VR_LITTLE_ENDIAN])];
        let mut association = hie_dicom_net::connect(addr, &client, &contexts).await.unwrap();
        let keys = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "")]);
        let limits = FindLimits { timeout: Some(Duration::from_millis(300)), ..FindLimits::default() };
        let result = scu::find(&mut association, uids::STUDY_ROOT_FIND, &keys, &limits).await;
        if honours_cancel {
            let outcome = result.unwrap();
            assert_eq!(outcome.status, Status::CANCEL);
            assert_eq!(outcome.stopped, Some(FindStop::TimedOut { after: Duration::from_millis(300) }));
            assert!(!outcome.matches.is_empty());
            association.release().await.unwrap();
        } else {
            let error = result.unwrap_err();
            assert!(matches!(error, NetError::Timeout { which: TimeoutKind::Operation, .. }), "{error}");
            assert!(!association.is_open(), "aborted");
        }
        let cancels = pacs.await.unwrap();
        assert_eq!(cancels, 1, "exactly one C-CANCEL-RQ");
    }
}

// ---- helpers ----

/// Our SCP on `addr` (or a free port), with address reuse so that a test can restart it there.
async fn scp_on(
    addr: Option<SocketAddr>,
    handler: FileHandler,
) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(hie_dicom_net::serve(listener, Arc::new(ServerPolicy::new(OUR_AE)), handler, shutdown));
    (addr, stop, task)
}

/// A fake PACS: accepts one association, answers the first C-FIND-RQ with a pending match every
/// 20 ms, forever; on C-CANCEL-RQ it sends the final 0xFE00 if `honours_cancel`, else goes on.
/// Returns how many C-CANCEL-RQs it received.
async fn endless_pending_pacs(listener: TcpListener, honours_cancel: bool) -> usize {
    let (mut stream, _) = listener.accept().await.unwrap();
    let limits = PduLimits::new(16_384);
    let mut reader = PduReader::new();
    let mut writer = PduWriter::new();
    let Pdu::AssociationRQ(request) = reader.read(&mut stream, &limits).await.unwrap() else { panic!("no RQ") };
    let accept = AssociationAC {
        protocol_version: 1,
        calling_ae_title: request.calling_ae_title.clone(),
        called_ae_title: request.called_ae_title.clone(),
        application_context_name: request.application_context_name.clone(),
        presentation_contexts: request
            .presentation_contexts
            .iter()
            .map(|pc| PresentationContextResult {
                id: pc.id,
                reason: PresentationContextResultReason::Acceptance,
                transfer_syntax: uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
            })
            .collect(),
        user_variables: vec![UserVariableItem::MaxLength(16_384)],
    };
    writer.write(&mut stream, &Pdu::AssociationAC(accept)).await.unwrap();
    let peer_max = MaxPduLength::from_peer(16_384).unwrap();
    let mut assembler = MessageAssembler::new(Limits::default());
    let mut find: Option<(u8, u16)> = None;
    let mut streaming = false;
    let mut cancels = 0;
    let mut pending_pdvs = std::collections::VecDeque::new();
    let ts = TransferSyntaxRegistry.get(uids::IMPLICIT_VR_LITTLE_ENDIAN).unwrap();
    let mut match_bytes = Vec::new();
    identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.4")])
        .write_dataset_with_ts(&mut match_bytes, ts)
        .unwrap();
    loop {
        let pdu = if streaming {
            tokio::select! {
                pdu = reader.read(&mut stream, &limits) => Some(pdu),
                () = tokio::time::sleep(Duration::from_millis(20)) => None,
            }
        } else {
            Some(reader.read(&mut stream, &limits).await)
        };
        match pdu {
            None => {
                let Some((pc_id, message_id)) = find else { continue };
                let response = pending_response(message_id, Status::PENDING, DataSetType::PRESENT);
                if send(&mut stream, &mut writer, pc_id, &response, Some(&match_bytes), peer_max).await.is_err() {
                    return cancels;
                }
            }
            Some(Err(_)) => return cancels,
            Some(Ok(Pdu::PData { data })) => pending_pdvs.extend(data),
            Some(Ok(Pdu::ReleaseRQ)) => {
                let _ = writer.write(&mut stream, &Pdu::ReleaseRP).await;
                return cancels;
            }
            Some(Ok(_)) => return cancels,
        }
        while let Some(pdv) = pending_pdvs.pop_front() {
            let (next, event) = assembler.handle(pdv).unwrap();
            assembler = next;
            match event {
                Some(Event::Command { presentation_context_id, command: Command::CFindRq(request) }) => {
                    find = Some((presentation_context_id, request.message_id));
                }
                Some(Event::DataFragment { last: true, .. }) => streaming = true,
                Some(Event::Command { command: Command::CCancelRq(_), .. }) => {
                    cancels += 1;
                    if honours_cancel && let Some((pc_id, message_id)) = find.take() {
                        streaming = false;
                        let response = pending_response(message_id, Status::CANCEL, DataSetType::NONE);
                        let _ = send(&mut stream, &mut writer, pc_id, &response, None, peer_max).await;
                    }
                }
                _ => {}
            }
        }
    }
}

fn pending_response(message_id: u16, status: Status, data_set_type: DataSetType) -> Command {
    Command::CFindRsp(CFindRsp {
        message_id_being_responded_to: message_id,
        affected_sop_class_uid: Some(uids::STUDY_ROOT_FIND.to_owned()),
        status,
        data_set_type,
        detail: StatusDetail::default(),
    })
}

async fn send(
    stream: &mut tokio::net::TcpStream,
    writer: &mut PduWriter,
    pc_id: u8,
    command: &Command,
    data: Option<&[u8]>,
    peer_max: MaxPduLength,
) -> Result<(), hie_dicom_net::pdu_io::PduError> {
    let mut bytes = Vec::new();
    hie_dimse::encode(command, &mut bytes);
    for pdu in pdata::fragment(pc_id, PDataValueType::Command, &bytes, peer_max) {
        writer.write(stream, &pdu).await?;
    }
    if let Some(data) = data {
        for pdu in pdata::fragment(pc_id, PDataValueType::Data, data, peer_max) {
            writer.write(stream, &pdu).await?;
        }
    }
    Ok(())
}
