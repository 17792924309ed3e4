//! Our SCU against dcmtk's dcmqrscp (a second, independent Q/R SCP; hie-testkit), Study Root:
//! C-ECHO, C-FIND at three levels, C-GET byte-identical to what dcmtk's `getscu` receives,
//! C-MOVE to our own SCP through the MoveRouter, and C-MOVE to an AE missing from its HostTable
//! (0xA801, "move destination unknown").

mod common;

use common::*;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use hie_dicom_net::scu::{self, RetrieveFailure};
use hie_dicom_net::{FindLimits, MoveRouter, NetError, RetrieveOptions, ServerPolicy};
use hie_dimse::status::{Outcome, SubOperationFailure};
use hie_dimse::{Status, uids};
use hie_testkit::dcmqrscp::HostEntry;
use hie_testkit::fixtures::{IDS_DEPT002_A, IDS_DEPT024_A};
use hie_testkit::{Dcmqrscp, DcmqrscpOptions, dcmtk};

#[tokio::test]
async fn echo_and_find_at_study_series_and_image_level() {
    let pacs = Dcmqrscp::start();
    pacs.load(&IDS_DEPT002_A.images());
    let mut association =
        hie_dicom_net::connect(pacs.addr(), &options(pacs.ae_title()), &query_contexts()).await.unwrap();
    assert_eq!(scu::echo(&mut association).await.unwrap(), Status::SUCCESS);
    assert_finds_ids_dept002_a(&mut association, &FindLimits::default(), true).await;
    association.release().await.unwrap();
}

#[tokio::test]
async fn get_is_byte_identical_to_getscu_and_move_reaches_our_scp() {
    let dir = temp_dir("qr-get-move");
    let router = MoveRouter::new();
    let mut handler = FileHandler::new(&dir.path().join("unrouted"));
    handler.router = Some(router.clone());
    let scp = start_scp(ServerPolicy::new(OUR_AE), handler.clone()).await;
    let pacs = Dcmqrscp::start_with(DcmqrscpOptions {
        hosts: vec![HostEntry::local(OUR_AE, scp.port())],
        ..DcmqrscpOptions::default()
    });
    pacs.load(&IDS_DEPT024_A.images());
    let keys = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT024_A.study_instance_uid)]);

    let mut got = FileSink::new(&dir.path().join("got"));
    let mut association =
        hie_dicom_net::connect(pacs.addr(), &options(pacs.ae_title()), &get_contexts()).await.unwrap();
    let outcome =
        scu::get(&mut association, uids::STUDY_ROOT_GET, &keys, &mut got, &RetrieveOptions::default()).await.unwrap();
    association.release().await.unwrap();
    assert_eq!(outcome.verdict, Ok(Outcome::Success { completed: 10 }), "{outcome:?}");

    let reference_dir = dir.path().join("getscu");
    std::fs::create_dir_all(&reference_dir).unwrap();
    let port = pacs.port().to_string();
    let query = format!("StudyInstanceUID={}", IDS_DEPT024_A.study_instance_uid);
    let output = dcmtk(
        "getscu",
        &[
            "-S",
            "+B",
            "-aet",
            OUR_AE,
            "-aec",
            pacs.ae_title(),
            "-od",
            reference_dir.to_str().unwrap(),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &query,
            "127.0.0.1",
            &port,
        ],
    );
    assert!(output.success(), "getscu: {}", output.combined());
    let reference = data_sets_in(&reference_dir);
    assert_eq!(reference.len(), 10);
    for instance in got.completed() {
        let (transfer_syntax, data_set) = &reference[&instance.info.sop_instance_uid];
        assert_eq!(&instance.info.transfer_syntax_uid, transfer_syntax);
        assert!(std::fs::read(&instance.path).unwrap() == *data_set, "{} differs", instance.info.sop_instance_uid);
    }

    let (_, mut registration) = router.register(OUR_AE).unwrap();
    let mut moved = FileSink::new(&dir.path().join("moved"));
    let mut association =
        hie_dicom_net::connect(pacs.addr(), &options(pacs.ae_title()), &query_contexts()).await.unwrap();
    let outcome = scu::move_into(
        &mut association,
        uids::STUDY_ROOT_MOVE,
        &keys,
        OUR_AE,
        &mut registration,
        &mut moved,
        &RetrieveOptions::default(),
    )
    .await
    .unwrap();
    association.release().await.unwrap();
    assert_eq!(outcome.verdict, Ok(Outcome::Success { completed: 10 }), "{outcome:?}");
    assert!(handler.received().is_empty(), "dcmqrscp sent the Move Originator fields; nothing went unrouted");
    for instance in moved.completed() {
        let (_, data_set) = &reference[&instance.info.sop_instance_uid];
        assert!(std::fs::read(&instance.path).unwrap() == *data_set, "{} differs", instance.info.sop_instance_uid);
    }
    assert_eq!(moved.completed().len(), 10);
    scp.shut_down().await;
}

#[tokio::test]
async fn move_to_an_unknown_destination_is_move_destination_unknown() {
    let pacs = Dcmqrscp::start();
    pacs.load(&IDS_DEPT024_A.images());
    let mut association =
        hie_dicom_net::connect(pacs.addr(), &options(pacs.ae_title()), &query_contexts()).await.unwrap();
    let keys = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT024_A.study_instance_uid)]);
    let outcome =
        scu::move_(&mut association, uids::STUDY_ROOT_MOVE, &keys, "NOWHERE", None, &RetrieveOptions::default())
            .await
            .unwrap();
    association.release().await.unwrap();
    assert_eq!(outcome.final_status, Status::MOVE_DESTINATION_UNKNOWN);
    assert!(matches!(
        outcome.verdict,
        Err(RetrieveFailure::SubOperations { failure: SubOperationFailure::Failed { .. }, .. })
    ));
    let error = outcome.into_result().unwrap_err();
    assert!(matches!(error, NetError::Retrieve(_)));
    assert!(error.to_string().contains("0xA801 (move destination unknown)"), "{error}");
    assert_eq!(error.to_status(), Status::MOVE_DESTINATION_UNKNOWN);
}
