//! `DimsePacs` against real peers (hie-testkit): a study's evidence from Orthanc and from dcmtk's
//! dcmqrscp (which leaves SOP Class UID out of its answers, so headers are fetched); which
//! instances exist (UID lists, and the series fallback for those a list did not return);
//! retrieval by C-GET and by C-MOVE through our own SCP and the shared `MoveRouter`, every data
//! set byte-identical to what dcmtk's `getscu +B` receives; a receiver dropped mid-study cancels
//! the retrieval, Orthanc sees the association released, and the pool serves the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hie_broker::ports::{InstanceKey, Pacs, PacsError, RetrieveEvent};
use hie_dicom_net::{AssociationInfo, InstanceInfo, MoveRouter, NetError, ScpHandler, ServerPolicy, StoreSink};
use hie_dimse::Status;
use hie_dimse::command::CStoreRq;
use hie_outbound::pacs::{DimsePacs, DimseSettings, Retrieve};
use hie_testkit::fixtures::{DCM4CHE_MR_SERIES, FixtureStudy, IDS_DEPT002_A, IDS_DEPT024_A};
use hie_testkit::{Dcmqrscp, DcmqrscpOptions, Modality, Orthanc, OrthancOptions, dcmtk};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

const OUR_AE: &str = "HIE_EDGE";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

fn settings(ae_title: &str, port: u16, retrieve: Retrieve) -> DimseSettings {
    DimseSettings {
        ae_title: ae_title.to_owned(),
        // A name, not an address: resolved at each connection.
        host: "localhost".to_owned(),
        port,
        our_ae_title: OUR_AE.to_owned(),
        retrieve,
        max_associations: 2,
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(20),
    }
}

/// (series, SOP Instance UID) of each image of a fixture study.
fn keys_of(study: FixtureStudy) -> Vec<InstanceKey> {
    study
        .images()
        .iter()
        .map(|path| {
            let object = dicom_object::open_file(path).unwrap();
            let text = |tag| object.element(tag).unwrap().to_str().unwrap().trim_end_matches('\0').to_owned();
            InstanceKey {
                study_instance_uid: study.study_instance_uid.to_owned(),
                series_instance_uid: text(dicom_dictionary_std::tags::SERIES_INSTANCE_UID),
                sop_instance_uid: text(dicom_dictionary_std::tags::SOP_INSTANCE_UID),
            }
        })
        .collect()
}

/// What a retrieval streamed: SOP Instance UID -> (transfer syntax, data set), checking that
/// the events come in Begin, Data..., End order.
async fn drain(mut events: mpsc::Receiver<RetrieveEvent>) -> BTreeMap<String, (String, Vec<u8>)> {
    let mut received = BTreeMap::new();
    let mut current: Option<(String, String, Vec<u8>)> = None;
    while let Some(event) = events.recv().await {
        match event {
            RetrieveEvent::Begin { sop_instance_uid, transfer_syntax_uid, part10, .. } => {
                assert!(current.is_none(), "Begin inside an instance");
                assert!(!part10, "DIMSE gives data sets");
                current = Some((sop_instance_uid, transfer_syntax_uid, Vec::new()));
            }
            RetrieveEvent::Data(bytes) => {
                current.as_mut().expect("Data outside an instance").2.extend_from_slice(&bytes)
            }
            RetrieveEvent::End => {
                let (sop, ts, bytes) = current.take().expect("End outside an instance");
                received.insert(sop, (ts, bytes));
            }
            RetrieveEvent::Lost(reason) => panic!("an instance broke off: {reason}"),
        }
    }
    assert!(current.is_none(), "the last instance did not end");
    received
}

/// What `getscu +B` receives for a study: SOP Instance UID -> (transfer syntax, data set).
/// dcmtk 3.6.7's getscu proposes only Explicit VR Little Endian for storage (its `+xi` does not
/// change that), so Orthanc transcodes what it stores in Implicit VR for it.
fn getscu(orthanc: &Orthanc, study: &str, dir: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let port = orthanc.dicom_port().to_string();
    let query = format!("StudyInstanceUID={study}");
    let dir_text = dir.to_str().unwrap();
    let args = ["-S", "+B", "-aet", OUR_AE, "-aec", orthanc.ae_title(), "-od", dir_text, "-k"];
    let mut args = args.to_vec();
    args.extend(["QueryRetrieveLevel=STUDY", "-k", &query, "127.0.0.1", &port]);
    let output = dcmtk("getscu", &args);
    assert!(output.success(), "getscu: {}", output.combined());
    let mut sets = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let part = hie_testkit::part10::read(&entry.unwrap().path());
        sets.insert(part.sop_instance_uid, (part.transfer_syntax_uid, part.data_set));
    }
    sets
}

/// What dcmtk's `storescp +B` receives when Orthanc C-MOVEs the study to it (`movescu`): the
/// reference for the instances Orthanc sends in their stored transfer syntax, which it
/// re-encodes (padding normalised), so the uploaded file is no reference.
fn movescu(orthanc: &Orthanc, study: &str, storescp_port: u16, dir: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut storescp = std::process::Command::new("storescp")
        .args(["-aet", "STORESCP", "+B", "-od", dir.to_str().unwrap(), &storescp_port.to_string()])
        .env("TCP_NODELAY", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("storescp (dcmtk)");
    let port = orthanc.dicom_port().to_string();
    let query = format!("StudyInstanceUID={study}");
    // storescp needs a moment to listen; movescu fails fast (exit 69) until it does.
    let mut output = None;
    for _ in 0..50 {
        let attempt = dcmtk(
            "movescu",
            &[
                "-S",
                "-aet",
                OUR_AE,
                "-aec",
                orthanc.ae_title(),
                "-aem",
                "STORESCP",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &query,
                "127.0.0.1",
                &port,
            ],
        );
        if attempt.success() {
            output = Some(attempt);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = storescp.kill();
    let _ = storescp.wait();
    assert!(output.is_some(), "movescu to storescp never succeeded");
    let mut sets = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let part = hie_testkit::part10::read(&entry.unwrap().path());
        sets.insert(part.sop_instance_uid, (part.transfer_syntax_uid, part.data_set));
    }
    sets
}

/// An SCP that takes only what the router routes (C-MOVE sub-operations of our moves).
struct RoutedOnly {
    router: MoveRouter,
}

struct Refuse;

impl StoreSink for Refuse {
    async fn begin(&mut self, _instance: &InstanceInfo) -> Result<(), Status> {
        Err(Status::OUT_OF_RESOURCES)
    }
    async fn data(&mut self, _fragment: bytes::Bytes) -> Result<(), Status> {
        Err(Status::OUT_OF_RESOURCES)
    }
    async fn end(&mut self) -> Status {
        Status::OUT_OF_RESOURCES
    }
    async fn abort(&mut self, _reason: &NetError) {}
}

impl ScpHandler for RoutedOnly {
    type Sink = Refuse;

    async fn store_sink(&self, _: &AssociationInfo, _: &CStoreRq, _: &str) -> Result<Refuse, Status> {
        Err(Status::OUT_OF_RESOURCES)
    }

    fn move_router(&self) -> Option<&MoveRouter> {
        Some(&self.router)
    }
}

async fn start_routed_scp(router: MoveRouter) -> (u16, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(hie_dicom_net::serve(listener, Arc::new(ServerPolicy::new(OUR_AE)), RoutedOnly { router }, shutdown));
    (port, stop)
}

#[tokio::test]
async fn evidence_from_orthanc_and_dcmqrscp_names_every_instance_with_its_class() {
    let orthanc = Orthanc::start();
    let dcmqrscp = Dcmqrscp::start_with(DcmqrscpOptions { ae_title: "DCMQRSCP".to_owned(), ..Default::default() });
    for study in [IDS_DEPT002_A, DCM4CHE_MR_SERIES] {
        orthanc.upload_all(&study.images());
        dcmqrscp.load(&study.images());
    }
    let router = MoveRouter::new();
    let from_orthanc =
        DimsePacs::new(settings(orthanc.ae_title(), orthanc.dicom_port(), Retrieve::CGet), router.clone());
    let from_dcmqrscp = DimsePacs::new(settings("DCMQRSCP", dcmqrscp.port(), Retrieve::CGet), router);
    for study in [IDS_DEPT002_A, DCM4CHE_MR_SERIES] {
        let expected: BTreeSet<(String, String)> =
            keys_of(study).into_iter().map(|key| (key.series_instance_uid, key.sop_instance_uid)).collect();
        for pacs in [&from_orthanc, &from_dcmqrscp] {
            let evidence = pacs.study_evidence(study.study_instance_uid).await.unwrap();
            let got: BTreeSet<(String, String)> = evidence
                .series
                .iter()
                .flat_map(|series| {
                    series.instances.iter().map(|instance| {
                        assert!(instance.sop_class_uid.starts_with("1.2.840.10008.5.1.4.1.1."), "{instance:?}");
                        (series.series_instance_uid.clone(), instance.sop_instance_uid.clone())
                    })
                })
                .collect();
            assert_eq!(got, expected, "{} {}", pacs.describe(), study.name);
            let patient_id = evidence.patient_and_study.get(dicom_dictionary_std::tags::PATIENT_ID).unwrap();
            assert_eq!(patient_id.to_str().unwrap().trim(), study.patient_id);
        }
    }
    assert!(matches!(from_orthanc.study_evidence("1.2.3.4.404").await, Err(PacsError::UnknownStudy(_))));
    assert!(matches!(from_dcmqrscp.study_evidence("1.2.3.4.404").await, Err(PacsError::UnknownStudy(_))));
    let listing = from_orthanc.list_studies("19000101").await.unwrap();
    let counts: BTreeMap<String, Option<u64>> =
        listing.into_iter().map(|study| (study.study_instance_uid, study.n_instances)).collect();
    assert_eq!(counts[IDS_DEPT002_A.study_instance_uid], Some(IDS_DEPT002_A.n_images as u64));
    assert_eq!(counts[DCM4CHE_MR_SERIES.study_instance_uid], Some(DCM4CHE_MR_SERIES.n_images as u64));
}

#[tokio::test]
async fn find_instances_takes_uid_lists_and_looks_again_series_by_series() {
    let orthanc = Orthanc::start();
    orthanc.upload_all(&IDS_DEPT002_A.images());
    let pacs = DimsePacs::new(settings(orthanc.ae_title(), orthanc.dicom_port(), Retrieve::CGet), MoveRouter::new());
    let keys = keys_of(IDS_DEPT002_A);
    let mut asked: Vec<InstanceKey> = keys.iter().step_by(5).cloned().collect();
    let mut absent = asked[0].clone();
    absent.sop_instance_uid = "1.2.840.99999.404.1".to_owned();
    // An instance the PACS holds, asked for in another series: not found.
    let mut wrong_series = asked.remove(1);
    wrong_series.series_instance_uid = "1.2.840.99999.404.2".to_owned();
    let expected: BTreeSet<String> = asked.iter().map(|key| key.sop_instance_uid.clone()).collect();
    asked.push(absent);
    asked.push(wrong_series);
    let found = pacs.find_instances(&asked).await.unwrap();
    let found_uids: BTreeSet<String> = found.iter().map(|found| found.key.sop_instance_uid.clone()).collect();
    assert_eq!(found_uids, expected);
    assert!(found.iter().all(|found| found.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4"), "{found:?}");
    // One instance alone (a single value, not a list).
    let one = pacs.find_instances(&keys[..1]).await.unwrap();
    assert_eq!(one.len(), 1);
}

#[tokio::test]
async fn retrieve_by_c_get_and_c_move_is_byte_identical_to_getscu() {
    let router = MoveRouter::new();
    let (scp_port, stop) = start_routed_scp(router.clone()).await;
    let storescp_port = hie_testkit::free_port();
    let orthanc = Orthanc::start_with(OrthancOptions {
        modalities: vec![Modality::local(OUR_AE, scp_port), Modality::local("STORESCP", storescp_port)],
        ..OrthancOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    for study in [IDS_DEPT002_A, DCM4CHE_MR_SERIES] {
        orthanc.upload_all(&study.images());
        let from_getscu = getscu(&orthanc, study.study_instance_uid, &dir.path().join(study.name));
        assert_eq!(from_getscu.len(), study.n_images);
        let from_movescu = movescu(
            &orthanc,
            study.study_instance_uid,
            storescp_port,
            &dir.path().join(format!("{}-move", study.name)),
        );
        assert_eq!(from_movescu.len(), study.n_images);
        for retrieve in [Retrieve::CGet, Retrieve::CMove] {
            let pacs = DimsePacs::new(settings(orthanc.ae_title(), orthanc.dicom_port(), retrieve), router.clone());
            let keys = keys_of(study);
            // C-GET: we propose these and Orthanc picks; C-MOVE: our SCP picks among Orthanc's.
            let syntaxes = [EXPLICIT_LE.to_owned(), IMPLICIT_LE.to_owned()];
            let (sender, receiver) = mpsc::channel(4);
            let draining = tokio::spawn(drain(receiver));
            let report = pacs.retrieve(&keys, &syntaxes, sender).await.unwrap();
            let received = draining.await.unwrap();
            assert!(report.failed.is_empty(), "{retrieve:?}: {:?}", report.failed);
            assert_eq!(report.sent.len(), study.n_images, "{retrieve:?}");
            assert_eq!(received.len(), study.n_images, "{retrieve:?}");
            for (sop, (ts, data_set)) in &received {
                // getscu's copy when it got this transfer syntax, else storescp's (C-MOVE).
                let reference = if from_getscu[sop].0 == *ts { &from_getscu } else { &from_movescu };
                let (reference_ts, reference_set) = &reference[sop];
                assert_eq!(ts, reference_ts, "{retrieve:?} {sop}");
                assert!(data_set == reference_set, "{retrieve:?} {sop}: differs from getscu +B ({ts})");
            }
            eprintln!(
                "{retrieve:?} {}: {:?}",
                study.name,
                received.values().map(|(ts, _)| ts).collect::<BTreeSet<_>>()
            );
        }
    }
    assert_eq!(router.in_flight(), 0, "every move registration ended");
    let _ = stop.send(true);
}

#[tokio::test]
async fn instances_the_pacs_does_not_hold_are_reported_failed() {
    let orthanc = Orthanc::start();
    orthanc.upload_all(&IDS_DEPT024_A.images());
    let pacs = DimsePacs::new(settings(orthanc.ae_title(), orthanc.dicom_port(), Retrieve::CGet), MoveRouter::new());
    let mut keys = keys_of(IDS_DEPT024_A);
    let mut absent = keys[0].clone();
    absent.sop_instance_uid = "1.2.840.99999.404.3".to_owned();
    keys.push(absent.clone());
    let (sender, receiver) = mpsc::channel(4);
    let draining = tokio::spawn(drain(receiver));
    let report = pacs.retrieve(&keys, &[EXPLICIT_LE.to_owned()], sender).await.unwrap();
    assert_eq!(draining.await.unwrap().len(), IDS_DEPT024_A.n_images);
    assert_eq!(report.sent.len(), IDS_DEPT024_A.n_images);
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].0, absent.sop_instance_uid);
    eprintln!("reported for the absent instance: {}", report.failed[0].1);
}

#[tokio::test]
async fn a_dropped_receiver_cancels_a_c_get_and_the_pool_serves_the_next_retrieval() {
    dropped_receiver(Retrieve::CGet).await;
}

#[tokio::test]
async fn a_dropped_receiver_cancels_a_c_move_and_the_pool_serves_the_next_retrieval() {
    dropped_receiver(Retrieve::CMove).await;
}

/// A consumer that takes two instances and goes away: the retrieval ends soon (the rest reported
/// cancelled), no association is left half-used or aborted, and the pool (one association at
/// most) serves the next retrieval in full.
async fn dropped_receiver(retrieve: Retrieve) {
    let router = MoveRouter::new();
    let (scp_port, stop) = start_routed_scp(router.clone()).await;
    let orthanc = Orthanc::start_with(OrthancOptions {
        verbose: true,
        modalities: vec![Modality::local(OUR_AE, scp_port)],
        ..OrthancOptions::default()
    });
    orthanc.upload_all(&IDS_DEPT002_A.images());
    let mut one = settings(orthanc.ae_title(), orthanc.dicom_port(), retrieve);
    one.max_associations = 1;
    let pacs = DimsePacs::new(one, router.clone());
    let keys = keys_of(IDS_DEPT002_A);
    let syntaxes = [EXPLICIT_LE.to_owned(), IMPLICIT_LE.to_owned()];

    let (sender, mut receiver) = mpsc::channel(1);
    let consumer = tokio::spawn(async move {
        let mut ended = 0;
        while let Some(event) = receiver.recv().await {
            if event == RetrieveEvent::End {
                ended += 1;
                if ended == 2 {
                    break;
                }
            }
        }
    });
    let report = tokio::time::timeout(Duration::from_secs(30), pacs.retrieve(&keys, &syntaxes, sender))
        .await
        .expect("a cancelled retrieval ends")
        .unwrap();
    consumer.await.unwrap();
    assert!(report.sent.len() < keys.len(), "{retrieve:?}: {} sent", report.sent.len());
    assert_eq!(report.sent.len() + report.failed.len(), keys.len());
    assert!(report.failed.iter().any(|(_, reason)| reason.contains("cancelled")), "{:?}", report.failed);
    assert_eq!(router.in_flight(), 0, "no move left registered");
    eprintln!("{retrieve:?}: {} sent before the consumer left", report.sent.len());

    let (sender, receiver) = mpsc::channel(4);
    let draining = tokio::spawn(drain(receiver));
    let report = pacs.retrieve(&keys, &syntaxes, sender).await.unwrap();
    assert_eq!(draining.await.unwrap().len(), keys.len(), "{retrieve:?}");
    assert!(report.failed.is_empty(), "{retrieve:?}: {:?}", report.failed);

    // What Orthanc saw of our associations (its log line comes once its handler is done): each
    // one released, but the one the pool keeps for the next retrieval; none aborted. C-GET: our
    // C-CANCEL, the final response, A-RELEASE; the next retrieval on a new association. C-MOVE:
    // Orthanc ends the move itself at the first refused sub-operation (its final response comes
    // before our C-CANCEL), so the association is clean and the pool reuses it. Both: one more,
    // the query association of the series counts (a SERIES-level C-FIND before each
    // retrieval), kept idle in its own pool.
    let counts = |log: &str| {
        (
            log.matches("Association Received from AET HIE_EDGE").count(),
            log.matches("Association Release with AET HIE_EDGE").count(),
        )
    };
    let expected = match retrieve {
        Retrieve::CGet => (3, 1),
        Retrieve::CMove => (2, 0),
    };
    let mut log = orthanc.log();
    for _ in 0..50 {
        if counts(&log) == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        log = orthanc.log();
    }
    assert_eq!(counts(&log), expected, "{retrieve:?}: associations received and released:\n{log}");
    assert!(!log.contains("Abort"), "{retrieve:?}: released, not aborted:\n{log}");
    let _ = stop.send(true);
}

#[tokio::test]
async fn an_unreachable_pacs_is_unreachable() {
    // A port nobody listens on: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pacs = DimsePacs::new(settings("NOBODY", port, Retrieve::CGet), MoveRouter::new());
    let error = pacs.study_evidence(IDS_DEPT024_A.study_instance_uid).await.unwrap_err();
    assert!(matches!(error, PacsError::Unreachable(_)), "{error}");
    let mut wrong_host = settings("NOBODY", port, Retrieve::CGet);
    wrong_host.host = "no-such-host.invalid".to_owned();
    let error = DimsePacs::new(wrong_host, MoveRouter::new()).list_studies("20200101").await.unwrap_err();
    assert!(matches!(&error, PacsError::Unreachable(text) if text.contains("resolve")), "{error}");
}
