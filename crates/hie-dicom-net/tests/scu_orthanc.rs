//! Our SCU against a real Orthanc (hie-testkit): C-ECHO, C-FIND at study, series and image level,
//! C-GET into a sink that writes files (each data set byte-identical to what Orthanc gives
//! dcmtk's `getscu`), C-MOVE to our own SCP through the MoveRouter, C-STORE then C-FIND back,
//! C-MOVE to an unknown destination, sub-operation verdicts with a refusing sink, and a small
//! maximum PDU length on our side.

mod common;

use common::*;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use hie_dicom_net::scu::{self, RetrieveFailure};
use hie_dicom_net::{FindLimits, FindStop, MoveRouter, NetError, ProposedContext, RetrieveOptions, ServerPolicy};
use hie_dimse::status::{Outcome, SubOperationFailure};
use hie_dimse::{Status, uids};
use hie_testkit::fixtures::{DCM4CHE_MR_SERIES, IDS_DEPT002_A, IDS_DEPT024_A};
use hie_testkit::{Modality, Orthanc, OrthancOptions, dcmtk};

#[tokio::test]
async fn echo_and_find_at_study_series_and_image_level() {
    let orthanc = Orthanc::start();
    orthanc.upload_all(&IDS_DEPT002_A.images());
    orthanc.upload_all(&IDS_DEPT024_A.images());
    let mut association =
        hie_dicom_net::connect(orthanc.dicom_addr(), &options(orthanc.ae_title()), &query_contexts()).await.unwrap();
    assert_eq!(scu::echo(&mut association).await.unwrap(), Status::SUCCESS);

    let image = assert_finds_ids_dept002_a(&mut association, &FindLimits::default(), false).await;

    // A cap below the number of matches: C-CANCEL, and the matches kept are reported truncated.
    let capped = FindLimits { max_matches: 5, ..FindLimits::default() };
    let found = scu::find(&mut association, uids::STUDY_ROOT_FIND, &image, &capped).await.unwrap();
    assert_eq!(found.matches.len(), 5);
    assert_eq!(found.stopped, Some(FindStop::TooManyMatches { max: 5 }));
    // The association is still usable after the cancelled query.
    assert_eq!(scu::echo(&mut association).await.unwrap(), Status::SUCCESS);
    association.release().await.unwrap();
}

#[tokio::test]
async fn get_of_a_study_is_byte_identical_to_what_getscu_receives() {
    let orthanc = Orthanc::start();
    orthanc.upload_all(&IDS_DEPT024_A.images());
    orthanc.upload_all(&DCM4CHE_MR_SERIES.images());
    let dir = temp_dir("get");
    for study in [IDS_DEPT024_A, DCM4CHE_MR_SERIES] {
        let ours = dir.path().join(format!("ours-{}", study.name));
        let mut sink = FileSink::new(&ours);
        let mut association =
            hie_dicom_net::connect(orthanc.dicom_addr(), &options(orthanc.ae_title()), &get_contexts()).await.unwrap();
        let keys = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, study.study_instance_uid)]);
        let outcome = scu::get(&mut association, uids::STUDY_ROOT_GET, &keys, &mut sink, &RetrieveOptions::default())
            .await
            .unwrap();
        association.release().await.unwrap();
        assert_eq!(outcome.verdict, Ok(Outcome::Success { completed: study.n_images as u32 }), "{outcome:?}");
        assert_eq!(outcome.stored, study.n_images as u32);

        let theirs = dir.path().join(format!("getscu-{}", study.name));
        let reference = getscu_data_sets(&orthanc, study.study_instance_uid, &theirs);
        let received = sink.completed();
        assert_eq!(received.len(), study.n_images);
        assert_eq!(reference.len(), study.n_images);
        for instance in &received {
            let (transfer_syntax, data_set) = &reference[&instance.info.sop_instance_uid];
            assert_eq!(&instance.info.transfer_syntax_uid, transfer_syntax);
            let ours = std::fs::read(&instance.path).unwrap();
            assert!(ours == *data_set, "{} differs from getscu's copy", instance.info.sop_instance_uid);
        }
    }
}

#[tokio::test]
async fn move_to_our_scp_is_correlated_and_byte_identical_to_getscu() {
    let dir = temp_dir("move");
    let router = MoveRouter::new();
    let mut handler = FileHandler::new(&dir.path().join("unrouted"));
    handler.router = Some(router.clone());
    let scp = start_scp(ServerPolicy::new(OUR_AE), handler.clone()).await;
    let orthanc = Orthanc::start_with(OrthancOptions {
        modalities: vec![Modality::local(OUR_AE, scp.port())],
        ..Default::default()
    });
    orthanc.upload_all(&IDS_DEPT024_A.images());

    let (_, mut registration) = router.register(OUR_AE).unwrap();
    let mut sink = FileSink::new(&dir.path().join("moved"));
    let mut association =
        hie_dicom_net::connect(orthanc.dicom_addr(), &options(orthanc.ae_title()), &query_contexts()).await.unwrap();
    let keys = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT024_A.study_instance_uid)]);
    let outcome = scu::move_into(
        &mut association,
        uids::STUDY_ROOT_MOVE,
        &keys,
        OUR_AE,
        &mut registration,
        &mut sink,
        &RetrieveOptions::default(),
    )
    .await
    .unwrap();
    association.release().await.unwrap();
    assert_eq!(outcome.verdict, Ok(Outcome::Success { completed: 10 }), "{outcome:?}");
    assert_eq!(outcome.stored, 10);
    assert!(handler.received().is_empty(), "every instance was routed to the move");

    let reference = getscu_data_sets(&orthanc, IDS_DEPT024_A.study_instance_uid, &dir.path().join("getscu"));
    for instance in sink.completed() {
        let (_, data_set) = &reference[&instance.info.sop_instance_uid];
        assert!(std::fs::read(&instance.path).unwrap() == *data_set, "{} differs", instance.info.sop_instance_uid);
    }
    drop(registration);
    assert_eq!(router.in_flight(), 0);
    scp.shut_down().await;
}

#[tokio::test]
async fn store_to_orthanc_then_find_it_back() {
    let orthanc = Orthanc::start();
    let file = &IDS_DEPT024_A.images()[3];
    let part = hie_testkit::part10::read(file);
    let contexts = vec![
        ProposedContext::new(&part.sop_class_uid, &[&part.transfer_syntax_uid]),
        ProposedContext::new(uids::STUDY_ROOT_FIND, hie_dicom_net::client::UNCOMPRESSED),
    ];
    let mut association =
        hie_dicom_net::connect(orthanc.dicom_addr(), &options(orthanc.ae_title()), &contexts).await.unwrap();
    let status =
        scu::store(&mut association, &part.sop_class_uid, &part.sop_instance_uid, &part.data_set[..]).await.unwrap();
    assert_eq!(status, Status::SUCCESS);
    let keys = identifier(
        "IMAGE",
        &[
            (tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT024_A.study_instance_uid),
            (tags::SOP_INSTANCE_UID, VR::UI, &part.sop_instance_uid),
        ],
    );
    let found = scu::find(&mut association, uids::STUDY_ROOT_FIND, &keys, &FindLimits::default()).await.unwrap();
    assert_eq!(found.matches.len(), 1);
    assert_eq!(text(&found.matches[0], tags::SOP_INSTANCE_UID), part.sop_instance_uid);
    association.release().await.unwrap();
}

#[tokio::test]
async fn move_to_an_unknown_destination_is_a_clear_failure() {
    let orthanc = Orthanc::start();
    orthanc.upload_all(&IDS_DEPT024_A.images());
    let mut association =
        hie_dicom_net::connect(orthanc.dicom_addr(), &options(orthanc.ae_title()), &query_contexts()).await.unwrap();
    let keys = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT024_A.study_instance_uid)]);
    let outcome =
        scu::move_(&mut association, uids::STUDY_ROOT_MOVE, &keys, "NOWHERE", None, &RetrieveOptions::default())
            .await
            .unwrap();
    association.release().await.unwrap();
    let error = outcome.clone().into_result().unwrap_err();
    eprintln!("Orthanc answered a C-MOVE to an unknown AE with: {error}");
    let Err(RetrieveFailure::SubOperations { failure: SubOperationFailure::Failed { status, .. }, .. }) =
        outcome.verdict
    else {
        panic!("expected a failed retrieve, got {outcome:?}")
    };
    assert_eq!(status, outcome.final_status);
    assert!(matches!(error, NetError::Retrieve(_)));
    assert!(error.to_string().contains(&status.to_string()), "{error}");
}

#[tokio::test]
async fn get_with_a_sink_that_refuses_one_instance_is_not_a_success() {
    let orthanc = Orthanc::start();
    orthanc.upload_all(&IDS_DEPT024_A.images());
    let refused = instance_uids(&IDS_DEPT024_A.images()[..1])[0].1.clone();
    let dir = temp_dir("refuse");
    let mut sink = FileSink::new(dir.path());
    sink.refuse = vec![refused];
    let mut association =
        hie_dicom_net::connect(orthanc.dicom_addr(), &options(orthanc.ae_title()), &get_contexts()).await.unwrap();
    let keys = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT024_A.study_instance_uid)]);
    let outcome =
        scu::get(&mut association, uids::STUDY_ROOT_GET, &keys, &mut sink, &RetrieveOptions::default()).await.unwrap();
    association.release().await.unwrap();
    assert_eq!((outcome.stored, outcome.refused), (9, 1));
    assert!(
        matches!(
            outcome.verdict,
            Err(RetrieveFailure::SubOperations {
                failure: SubOperationFailure::SubOperationsFailed { failed: 1, .. },
                ..
            })
        ),
        "{outcome:?}"
    );
    eprintln!("final status {} counts {:?}", outcome.final_status, outcome.counts);
}

#[tokio::test]
async fn get_with_a_small_maximum_pdu_on_our_side() {
    let orthanc = Orthanc::start();
    orthanc.upload_all(&IDS_DEPT024_A.images());
    let dir = temp_dir("small-pdu");
    let mut sink = FileSink::new(dir.path());
    let mut client = options(orthanc.ae_title());
    client.max_pdu_length = 4096;
    let mut association = hie_dicom_net::connect(orthanc.dicom_addr(), &client, &get_contexts()).await.unwrap();
    let keys = identifier("STUDY", &[(tags::STUDY_INSTANCE_UID, VR::UI, IDS_DEPT024_A.study_instance_uid)]);
    let outcome =
        scu::get(&mut association, uids::STUDY_ROOT_GET, &keys, &mut sink, &RetrieveOptions::default()).await.unwrap();
    association.release().await.unwrap();
    assert_eq!(outcome.verdict, Ok(Outcome::Success { completed: 10 }));
    let reference = getscu_data_sets(&orthanc, IDS_DEPT024_A.study_instance_uid, &dir.path().join("getscu"));
    for instance in sink.completed() {
        // A 40 KB image in fragments of at most 4096 - 6 bytes.
        assert!(instance.fragments >= instance.bytes / 4090, "{instance:?}");
        let (_, data_set) = &reference[&instance.info.sop_instance_uid];
        assert!(std::fs::read(&instance.path).unwrap() == *data_set, "{} differs", instance.info.sop_instance_uid);
    }
}

/// What dcmtk's `getscu` receives for a study, bit-preserving (`+B`): SOP Instance UID ->
/// (transfer syntax, data set).
fn getscu_data_sets(
    orthanc: &Orthanc,
    study_instance_uid: &str,
    dir: &std::path::Path,
) -> std::collections::BTreeMap<String, (String, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let port = orthanc.dicom_port().to_string();
    let query = format!("StudyInstanceUID={study_instance_uid}");
    let output = dcmtk(
        "getscu",
        &[
            "-S",
            "+B",
            "-aet",
            OUR_AE,
            "-aec",
            orthanc.ae_title(),
            "-od",
            dir.to_str().unwrap(),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &query,
            "127.0.0.1",
            &port,
        ],
    );
    assert!(output.success(), "getscu: {}", output.combined());
    data_sets_in(dir)
}
