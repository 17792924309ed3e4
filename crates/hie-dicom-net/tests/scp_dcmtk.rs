//! Our SCP against dcmtk's tools and a raw client: C-ECHO, the A-ASSOCIATE-RJ reasons of PS3.8
//! Table 9-21 (wrong called AE 7, unknown calling AE 3, association cap: transient 2), a whole
//! study from `storescu` byte-identical to what dcmtk's `storescp +B` receives, A-ABORT for a
//! fixed-length PDU with a wrong length, for garbage and for a PDU in the wrong state, the idle
//! timer, a peer that stops mid-data-set, unsupported DIMSE requests, a panicking handler, and
//! mismatched maximum PDU lengths in both directions.
//!
//! The dcmtk tools run blocking on the test thread, so the tests use the multi-thread runtime:
//! our SCP runs on its workers meanwhile.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, AssociationRQ, Pdu, PresentationContextProposed,
    UserVariableItem,
};
use hie_dicom_net::client::UNCOMPRESSED;
use hie_dicom_net::pdu_io::{PduLimits, PduReader, PduWriter};
use hie_dicom_net::scu;
use hie_dicom_net::{AssociationInfo, Incoming, NetError, ProposedContext, ScpHandler, ServerPolicy};
use hie_dimse::command::{CFindRq, CStoreRq};
use hie_dimse::{Command, DataSetType, Priority, Status, uids};
use hie_testkit::fixtures::{DCM4CHE_MR_SERIES, IDS_DEPT002_A, IDS_DEPT024_A};
use hie_testkit::{dcmtk, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_is_answered() {
    let dir = temp_dir("echo");
    let scp = start_scp(ServerPolicy::new(OUR_AE), FileHandler::new(dir.path())).await;
    let output = dcmtk("echoscu", &["-aet", "ECHOSCU", "-aec", OUR_AE, "127.0.0.1", &scp.port().to_string()]);
    assert!(output.success(), "{}", output.combined());
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_called_ae_title_is_rejected_with_reason_7() {
    let dir = temp_dir("called");
    let scp = start_scp(ServerPolicy::new(OUR_AE), FileHandler::new(dir.path())).await;
    let output = dcmtk("echoscu", &["-aet", "ECHOSCU", "-aec", "WRONG", "127.0.0.1", &scp.port().to_string()]);
    assert!(!output.success());
    assert!(output.combined().contains("Called AE Title Not Recognized"), "{}", output.combined());
    // The RJ bytes (PS3.8 9.3.4): type 03H, length 4, reserved, result 1, source 1, reason 7.
    assert_eq!(raw_answer(scp.addr, &associate_rq("WRONG", "RAW")).await, [3, 0, 0, 0, 0, 4, 0, 1, 1, 7]);
    let error =
        hie_dicom_net::connect(scp.addr, &options("WRONG"), &[ProposedContext::verification()]).await.unwrap_err();
    assert!(matches!(
        error,
        NetError::Rejected {
            result: AssociationRJResult::Permanent,
            reason: AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        }
    ));
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_calling_ae_title_is_rejected_with_reason_3() {
    let dir = temp_dir("calling");
    let mut policy = ServerPolicy::new(OUR_AE);
    policy.allowed_calling_ae_titles = Some(vec!["FRIEND".to_owned()]);
    let scp = start_scp(policy, FileHandler::new(dir.path())).await;
    let port = scp.port().to_string();
    let stranger = dcmtk("echoscu", &["-aet", "STRANGER", "-aec", OUR_AE, "127.0.0.1", &port]);
    assert!(!stranger.success());
    assert!(stranger.combined().contains("Calling AE Title Not Recognized"), "{}", stranger.combined());
    assert_eq!(raw_answer(scp.addr, &associate_rq(OUR_AE, "STRANGER")).await, [3, 0, 0, 0, 0, 4, 0, 1, 1, 3]);
    let friend = dcmtk("echoscu", &["-aet", "FRIEND", "-aec", OUR_AE, "127.0.0.1", &port]);
    assert!(friend.success(), "{}", friend.combined());
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_association_cap_is_a_transient_rejection_with_reason_2() {
    let dir = temp_dir("cap");
    let mut policy = ServerPolicy::new(OUR_AE);
    policy.max_associations = 2;
    let scp = start_scp(policy, FileHandler::new(dir.path())).await;
    let verification = [ProposedContext::verification()];
    let first = hie_dicom_net::connect(scp.addr, &options(OUR_AE), &verification).await.unwrap();
    let mut second = hie_dicom_net::connect(scp.addr, &options(OUR_AE), &verification).await.unwrap();
    let error = hie_dicom_net::connect(scp.addr, &options(OUR_AE), &verification).await.unwrap_err();
    assert!(
        matches!(
            error,
            NetError::Rejected {
                result: AssociationRJResult::Transient,
                reason: AssociationRJSource::ServiceProviderPresentation(
                    AssociationRJServiceProviderPresentationReason::LocalLimitExceeded
                )
            }
        ),
        "{error}"
    );
    assert_eq!(raw_answer(scp.addr, &associate_rq(OUR_AE, "RAW")).await, [3, 0, 0, 0, 0, 4, 0, 2, 3, 2]);
    let output = dcmtk("echoscu", &["-aet", "ECHOSCU", "-aec", OUR_AE, "127.0.0.1", &scp.port().to_string()]);
    assert!(output.combined().contains("Local Limit Exceeded"), "{}", output.combined());
    // The held associations still work; once one is released a new one gets in.
    assert_eq!(scu::echo(&mut second).await.unwrap(), Status::SUCCESS);
    first.release().await.unwrap();
    let mut admitted = None;
    for _ in 0..100 {
        match hie_dicom_net::connect(scp.addr, &options(OUR_AE), &verification).await {
            Ok(association) => {
                admitted = Some(association);
                break;
            }
            Err(NetError::Rejected { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => panic!("{error}"),
        }
    }
    let mut third = admitted.expect("a slot frees up after a release");
    assert_eq!(scu::echo(&mut third).await.unwrap(), Status::SUCCESS);
    third.release().await.unwrap();
    second.release().await.unwrap();
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_of_whole_studies_reaches_the_sinks_byte_identical_to_storescp() {
    let dir = temp_dir("storescu");
    let handler = FileHandler::new(&dir.path().join("ours"));
    let scp = start_scp(ServerPolicy::new(OUR_AE), handler.clone()).await;
    let reference_dir = dir.path().join("storescp");
    std::fs::create_dir_all(&reference_dir).unwrap();
    let reference = StoreScp::start(&reference_dir, &[]);
    for study in [IDS_DEPT002_A, DCM4CHE_MR_SERIES] {
        let files: Vec<String> = study.images().iter().map(|path| path.display().to_string()).collect();
        for (port, called) in [(scp.port(), OUR_AE), (reference.port, "STORESCP")] {
            let port = port.to_string();
            let mut args = vec!["-aet", "STORESCU", "-aec", called, "127.0.0.1", &port];
            args.extend(files.iter().map(String::as_str));
            let output = dcmtk("storescu", &args);
            assert!(output.success(), "storescu to {called}: {}", output.combined());
        }
    }
    let expected = IDS_DEPT002_A.n_images + DCM4CHE_MR_SERIES.n_images;
    let received = handler.received();
    assert_eq!(received.len(), expected);
    let reference_sets = data_sets_in(&reference_dir);
    assert_eq!(reference_sets.len(), expected);
    for instance in &received {
        assert_eq!(instance.completed, Some(true));
        let (transfer_syntax, data_set) = &reference_sets[&instance.info.sop_instance_uid];
        assert_eq!(&instance.info.transfer_syntax_uid, transfer_syntax);
        assert!(std::fs::read(&instance.path).unwrap() == *data_set, "{} differs", instance.info.sop_instance_uid);
    }
    // (Not compared with the files themselves: storescu parses each file and re-encodes its data
    // set, so even an unconverted instance differs from the file byte for byte.)
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pdus_are_aborted_with_the_provider_reason() {
    let dir = temp_dir("bad-pdus");
    let scp = start_scp(ServerPolicy::new(OUR_AE), FileHandler::new(dir.path())).await;
    // Garbage: PS3.8 Table 9-26 reason 1, unrecognized PDU.
    assert_eq!(raw_answer(scp.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await, abort_bytes(2, 1));
    // A-RELEASE-RQ as the first PDU: reason 2, unexpected PDU.
    assert_eq!(raw_answer(scp.addr, &[5, 0, 0, 0, 0, 4, 0, 0, 0, 0]).await, abort_bytes(2, 2));
    // A fixed-length PDU with the wrong length, first and inside an association: reason 6.
    assert_eq!(raw_answer(scp.addr, &[5, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0]).await, abort_bytes(2, 6));
    let (mut stream, _) = raw_associate(scp.addr, &[uids::VERIFICATION]).await;
    stream.write_all(&[7, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0]).await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, abort_bytes(2, 6));
    // P-DATA larger than our maximum, inside an association: reason 6, before the body is read.
    let (mut stream, _) = raw_associate(scp.addr, &[uids::VERIFICATION]).await;
    stream.write_all(&[4, 0, 0x00, 0x10, 0x00, 0x00]).await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, abort_bytes(2, 6));
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_association_is_aborted_by_the_timer() {
    let dir = temp_dir("idle");
    let mut policy = ServerPolicy::new(OUR_AE);
    policy.timeouts.idle = Duration::from_millis(200);
    let scp = start_scp(policy, FileHandler::new(dir.path())).await;
    let (mut stream, _) = raw_associate(scp.addr, &[uids::VERIFICATION]).await;
    // Nothing sent: the SCP's idle timer aborts (service-user, PS3.8 9.3.8) and closes.
    assert_eq!(read_to_end(&mut stream).await, abort_bytes(0, 0));
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_mid_data_set_aborts_the_sink() {
    let dir = temp_dir("mid-data-set");
    let mut policy = ServerPolicy::new(OUR_AE);
    policy.timeouts.idle = Duration::from_millis(300);
    let handler = FileHandler::new(dir.path());
    let scp = start_scp(policy, handler.clone()).await;
    let class = dicom_dictionary_std::uids::SECONDARY_CAPTURE_IMAGE_STORAGE;
    // Once by closing the connection, once by going silent (the idle timer ends it).
    for (instance, close) in [("1.2.3.1", true), ("1.2.3.2", false)] {
        let contexts = [ProposedContext::new(class, &[uids::IMPLICIT_VR_LITTLE_ENDIAN])];
        let mut association = hie_dicom_net::connect(scp.addr, &options(OUR_AE), &contexts).await.unwrap();
        let pc_id = association.context_for(class).unwrap().id;
        let request = Command::CStoreRq(CStoreRq {
            message_id: 1,
            affected_sop_class_uid: class.to_owned(),
            affected_sop_instance_uid: instance.to_owned(),
            priority: Priority::Medium,
            move_originator_ae_title: None,
            move_originator_message_id: None,
            data_set_type: DataSetType::PRESENT,
        });
        association.send_command(pc_id, &request).await.unwrap();
        association.send_data_fragment(pc_id, &[0x08, 0x00, 0x16, 0x00], false).await.unwrap();
        if close {
            drop(association);
        } else {
            let outcome = association.receive().await;
            assert!(matches!(outcome, Ok(Incoming::Aborted { source: AbortRQSource::ServiceUser })), "{outcome:?}");
        }
        eventually("the sink is aborted", || {
            handler.received().iter().any(|r| r.info.sop_instance_uid == instance && r.completed == Some(false))
        })
        .await;
    }
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_requests_get_a_failure_status_and_no_context_means_all_rejected() {
    let dir = temp_dir("unsupported");
    let scp = start_scp(ServerPolicy::new(OUR_AE), FileHandler::new(dir.path())).await;
    // A C-FIND-RQ on a storage context: answered with 0x0122, the association goes on.
    let class = dicom_dictionary_std::uids::CT_IMAGE_STORAGE;
    let contexts = [ProposedContext::new(class, UNCOMPRESSED), ProposedContext::verification()];
    let mut association = hie_dicom_net::connect(scp.addr, &options(OUR_AE), &contexts).await.unwrap();
    let pc_id = association.context_for(class).unwrap().id;
    let request = Command::CFindRq(CFindRq {
        message_id: 9,
        affected_sop_class_uid: uids::STUDY_ROOT_FIND.to_owned(),
        priority: Priority::Medium,
        data_set_type: DataSetType::PRESENT,
    });
    association.send_command(pc_id, &request).await.unwrap();
    association.send_data_set(pc_id, &[]).await.unwrap();
    let Incoming::Command { command: Command::CFindRsp(response), .. } = association.receive().await.unwrap() else {
        panic!("expected a C-FIND-RSP")
    };
    assert_eq!((response.message_id_being_responded_to, response.status), (9, Status::SOP_CLASS_NOT_SUPPORTED));
    assert_eq!(scu::echo(&mut association).await.unwrap(), Status::SUCCESS);
    association.release().await.unwrap();

    // Only a Query/Retrieve context proposed: an A-ASSOCIATE-AC with it rejected (PS3.8), which
    // findscu reports as no acceptable presentation context.
    let error = hie_dicom_net::connect(scp.addr, &options(OUR_AE), &query_contexts()[1..]).await.unwrap_err();
    assert!(matches!(error, NetError::NoAcceptedContext { .. }), "{error}");
    let output = dcmtk(
        "findscu",
        &["-S", "-aec", OUR_AE, "-k", "QueryRetrieveLevel=STUDY", "127.0.0.1", &scp.port().to_string()],
    );
    assert!(!output.success());
    assert!(output.combined().contains("No Acceptable Presentation Contexts"), "{}", output.combined());
    scp.shut_down().await;
}

/// dcmtk's storescp 3.6.7 also answers an association without acceptable context with an
/// A-ASSOCIATE-AC rejecting every context (not an A-ASSOCIATE-RJ), as our SCP does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_storescp_also_accepts_with_every_context_rejected() {
    let dir = temp_dir("storescp-no-context");
    let storescp = StoreScp::start(dir.path(), &[]);
    let addr = SocketAddr::from(([127, 0, 0, 1], storescp.port));
    let error = hie_dicom_net::connect(addr, &options("STORESCP"), &query_contexts()[1..]).await.unwrap_err();
    assert!(matches!(error, NetError::NoAcceptedContext { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_does_not_stop_the_listener() {
    let scp = start_scp(ServerPolicy::new(OUR_AE), PanickingHandler).await;
    let port = scp.port().to_string();
    let file = IDS_DEPT024_A.images()[0].display().to_string();
    let output = dcmtk("storescu", &["-aec", OUR_AE, "127.0.0.1", &port, &file]);
    assert!(!output.success(), "the association died with its task");
    let output = dcmtk("echoscu", &["-aec", OUR_AE, "127.0.0.1", &port]);
    assert!(output.success(), "the listener survived: {}", output.combined());
    scp.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_maximum_pdu_lengths_with_dcmtk() {
    let dir = temp_dir("max-pdu");
    let files: Vec<String> = IDS_DEPT024_A.images().iter().map(|path| path.display().to_string()).collect();
    // Ours small (4096), storescu's default: storescu must fragment to our maximum.
    // Ours large (256 KiB), storescu receiving 4096: it still sends us what we take.
    for (ours, theirs) in [(4096u32, None), (262_138, Some("4096"))] {
        let mut policy = ServerPolicy::new(OUR_AE);
        policy.max_pdu_length = ours;
        let handler = FileHandler::new(&dir.path().join(format!("ours-{ours}")));
        let scp = start_scp(policy, handler.clone()).await;
        let port = scp.port().to_string();
        let mut args = vec!["-aec", OUR_AE];
        if let Some(max) = theirs {
            args.extend(["--max-pdu", max]);
        }
        args.extend(["127.0.0.1", &port]);
        args.extend(files.iter().map(String::as_str));
        let output = dcmtk("storescu", &args);
        assert!(output.success(), "{}", output.combined());
        let received = handler.received();
        assert_eq!(received.len(), IDS_DEPT024_A.n_images);
        for instance in &received {
            assert!(instance.max_fragment <= ours as usize - 6, "{instance:?}");
            if ours == 4096 {
                assert!(instance.fragments > 1, "{instance:?}");
            }
        }
        scp.shut_down().await;
    }

    // Our SCU storing to storescp receiving at most 4096: we fragment to its maximum, and what
    // it wrote (bit-preserving) is the data set we sent.
    let reference_dir = dir.path().join("storescp-4096");
    std::fs::create_dir_all(&reference_dir).unwrap();
    let storescp = StoreScp::start(&reference_dir, &["--max-pdu", "4096"]);
    let part = hie_testkit::part10::read(&IDS_DEPT024_A.images()[0]);
    let contexts = [ProposedContext::new(&part.sop_class_uid, &[&part.transfer_syntax_uid])];
    let addr = SocketAddr::from(([127, 0, 0, 1], storescp.port));
    let mut association = hie_dicom_net::connect(addr, &options("STORESCP"), &contexts).await.unwrap();
    assert_eq!(association.peer_max_pdu().get(), 4096);
    let status =
        scu::store(&mut association, &part.sop_class_uid, &part.sop_instance_uid, &part.data_set[..]).await.unwrap();
    assert_eq!(status, Status::SUCCESS);
    association.release().await.unwrap();
    let stored = data_sets_in(&reference_dir);
    assert!(stored[&part.sop_instance_uid].1 == part.data_set, "storescp's copy differs from what we sent");
}

// ---- helpers ----

/// A handler that panics when asked for a sink.
struct PanickingHandler;

impl ScpHandler for PanickingHandler {
    type Sink = FileSink;

    async fn store_sink(&self, _: &AssociationInfo, _: &CStoreRq, _: &str) -> Result<FileSink, Status> {
        panic!("handler bug (on purpose)");
    }
}

/// dcmtk's storescp, bit-preserving, as the reference receiver; killed and reaped on drop.
struct StoreScp {
    child: std::process::Child,
    port: u16,
}

impl StoreScp {
    fn start(dir: &std::path::Path, extra: &[&str]) -> StoreScp {
        for _ in 0..5 {
            let port = free_port();
            let child = std::process::Command::new("storescp")
                .args(["+B", "-aet", "STORESCP", "-od", dir.to_str().unwrap()])
                .args(extra)
                .arg(port.to_string())
                .env("TCP_NODELAY", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("storescp (dcmtk) is installed");
            let mut scp = StoreScp { child, port };
            for _ in 0..200 {
                if let Ok(Some(_)) = scp.child.try_wait() {
                    break;
                }
                if dcmtk("echoscu", &["-aec", "STORESCP", "127.0.0.1", &port.to_string()]).success() {
                    return scp;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = scp.child.kill();
        }
        panic!("storescp did not start");
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn abort_bytes(source: u8, reason: u8) -> Vec<u8> {
    vec![7, 0, 0, 0, 0, 4, 0, 0, source, reason]
}

fn associate_rq(called: &str, calling: &str) -> Vec<u8> {
    let pdu = Pdu::AssociationRQ(request(called, calling, &[uids::VERIFICATION]));
    let mut bytes = Vec::new();
    dicom_ul::pdu::write_pdu(&mut bytes, &pdu).unwrap();
    bytes
}

fn request(called: &str, calling: &str, classes: &[&str]) -> AssociationRQ {
    AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.to_owned(),
        called_ae_title: called.to_owned(),
        application_context_name: hie_dicom_net::APPLICATION_CONTEXT_NAME.to_owned(),
        presentation_contexts: classes
            .iter()
            .zip((1u8..).step_by(2))
            .map(|(class, id)| PresentationContextProposed {
                id,
                abstract_syntax: (*class).to_owned(),
                transfer_syntaxes: vec![uids::IMPLICIT_VR_LITTLE_ENDIAN.to_owned()],
            })
            .collect(),
        user_variables: vec![UserVariableItem::MaxLength(16_384)],
    }
}

/// Sends `bytes` on a new connection and returns everything the SCP sends until it closes.
async fn raw_answer(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_to_end(&mut stream).await
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the SCP closes the connection")
        .expect("read");
    answer
}

/// An association opened by hand: the stream just after the A-ASSOCIATE-AC.
async fn raw_associate(addr: SocketAddr, classes: &[&str]) -> (TcpStream, Pdu) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    PduWriter::new().write(&mut stream, &Pdu::AssociationRQ(request(OUR_AE, "RAW", classes))).await.unwrap();
    let answer = PduReader::new().read(&mut stream, &PduLimits::new(16_384)).await.unwrap();
    assert!(matches!(answer, Pdu::AssociationAC(_)), "{answer:?}");
    let _ = AbortRQServiceProviderReason::UnexpectedPdu;
    (stream, answer)
}
