//! Benchmark B-RAD69 (DIMSE part): C-GET of a generated study from a real Orthanc through our SCU
//! into a counting sink, against dcmtk's `getscu` (with `TCP_NODELAY=1`, writing to a temporary
//! directory) in the same run; and C-FIND at IMAGE level, ours against `findscu`. Studies of 200
//! and 1,000 small instances (a 40 KB PET image of IDS-DEPT024-a, cloned with new UIDs).
//!
//! Prints `figure` and `ratio` lines; asserts nothing about time. Each measurement is the best of
//! [`RUNS`] after one warm-up (Orthanc serves from its cache after the first read). About 30 s.
//!
//! `cargo bench -p hie-dicom-net --bench retrieve`

use std::time::{Duration, Instant};

use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use hie_dicom_net::client::UNCOMPRESSED;
use hie_dicom_net::{
    ClientOptions, FindLimits, InstanceInfo, NetError, ProposedContext, RetrieveOptions, StoreSink, scu,
};
use hie_dimse::{Status, uids};
use hie_testkit::fixtures::IDS_DEPT024_A;
use hie_testkit::{Orthanc, dcmtk, generate_study};

const SIZES: [usize; 2] = [200, 1000];
const RUNS: usize = 3;
const OUR_AE: &str = "HIE_BENCH";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let work = tempfile::Builder::new().prefix("hie-bench-retrieve-").tempdir().unwrap();
    let template = &IDS_DEPT024_A.images()[0];
    let orthanc = Orthanc::start();
    let port = orthanc.dicom_port().to_string();

    let mut studies = Vec::new();
    for size in SIZES {
        let started = Instant::now();
        let study = generate_study(template, size, 100, &work.path().join(format!("study-{size}")));
        let generated = started.elapsed();
        let started = Instant::now();
        let dir = work.path().join(format!("study-{size}"));
        let output = dcmtk::dcmtk_with_timeout(
            "storescu",
            &["-aet", OUR_AE, "-aec", orthanc.ae_title(), "+sd", "127.0.0.1", &port, dir.to_str().unwrap()],
            Duration::from_secs(300),
        );
        assert!(output.success(), "loading Orthanc: {}", output.combined());
        println!(
            "setup study={size} generate_s={:.2} load_s={:.2} bytes={}",
            generated.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            study_bytes(&dir)
        );
        studies.push((size, study));
    }

    for (size, study) in &studies {
        let keys = study_keys(&study.study_instance_uid);
        // C-GET: ours.
        let mut ours = Vec::new();
        for run in 0..=RUNS {
            let (elapsed, instances, bytes) = runtime.block_on(our_get(&orthanc, &keys));
            assert_eq!(instances, *size, "our C-GET received every instance");
            if run > 0 {
                ours.push((elapsed, bytes));
            }
        }
        // C-GET: getscu.
        let mut theirs = Vec::new();
        for run in 0..=RUNS {
            let out = work.path().join(format!("getscu-{size}-{run}"));
            std::fs::create_dir_all(&out).unwrap();
            let query = format!("StudyInstanceUID={}", study.study_instance_uid);
            let started = Instant::now();
            let output = dcmtk::dcmtk_with_timeout(
                "getscu",
                &[
                    "-S",
                    "-aet",
                    OUR_AE,
                    "-aec",
                    orthanc.ae_title(),
                    "-od",
                    out.to_str().unwrap(),
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    &query,
                    "127.0.0.1",
                    &port,
                ],
                Duration::from_secs(300),
            );
            let elapsed = started.elapsed();
            assert!(output.success(), "getscu: {}", output.combined());
            assert_eq!(std::fs::read_dir(&out).unwrap().count(), *size, "getscu received every instance");
            if run > 0 {
                theirs.push(elapsed);
            }
            let _ = std::fs::remove_dir_all(&out);
        }
        let (our_best, bytes) = ours.iter().min_by_key(|(elapsed, _)| *elapsed).copied().unwrap();
        let their_best = theirs.iter().min().copied().unwrap();
        let megabytes = bytes as f64 / 1e6;
        println!(
            "figure c_get study={size} impl=hie-dicom-net seconds={:.3} instances_per_s={:.0} mb_per_s={:.1}",
            our_best.as_secs_f64(),
            *size as f64 / our_best.as_secs_f64(),
            megabytes / our_best.as_secs_f64()
        );
        println!(
            "figure c_get study={size} impl=dcmtk-getscu seconds={:.3} instances_per_s={:.0} mb_per_s={:.1}",
            their_best.as_secs_f64(),
            *size as f64 / their_best.as_secs_f64(),
            megabytes / their_best.as_secs_f64()
        );
        println!(
            "ratio c_get study={size} ours_over_getscu_throughput={:.2}",
            their_best.as_secs_f64() / our_best.as_secs_f64()
        );

        // C-FIND at IMAGE level: ours, then findscu.
        let image_keys = image_keys(&study.study_instance_uid);
        let mut ours = Vec::new();
        for run in 0..=RUNS {
            let (elapsed, matches) = runtime.block_on(our_find(&orthanc, &image_keys));
            assert_eq!(matches, *size, "our C-FIND returned every instance");
            if run > 0 {
                ours.push(elapsed);
            }
        }
        let mut theirs = Vec::new();
        for run in 0..=RUNS {
            let study_key = format!("StudyInstanceUID={}", study.study_instance_uid);
            let started = Instant::now();
            let output = dcmtk::dcmtk_with_timeout(
                "findscu",
                &[
                    "-S",
                    "-aet",
                    OUR_AE,
                    "-aec",
                    orthanc.ae_title(),
                    "-k",
                    "QueryRetrieveLevel=IMAGE",
                    "-k",
                    &study_key,
                    "-k",
                    "SOPInstanceUID",
                    "127.0.0.1",
                    &port,
                ],
                Duration::from_secs(300),
            );
            let elapsed = started.elapsed();
            assert!(output.success(), "findscu: {}", output.combined());
            if run > 0 {
                theirs.push(elapsed);
            }
        }
        let our_best = ours.iter().min().copied().unwrap();
        let their_best = theirs.iter().min().copied().unwrap();
        println!(
            "figure c_find_image study={size} impl=hie-dicom-net seconds={:.3} matches_per_s={:.0}",
            our_best.as_secs_f64(),
            *size as f64 / our_best.as_secs_f64()
        );
        println!(
            "figure c_find_image study={size} impl=dcmtk-findscu seconds={:.3} matches_per_s={:.0}",
            their_best.as_secs_f64(),
            *size as f64 / their_best.as_secs_f64()
        );
        println!(
            "ratio c_find_image study={size} ours_over_findscu_throughput={:.2}",
            their_best.as_secs_f64() / our_best.as_secs_f64()
        );
    }
}

/// Connect, C-GET the study into a counting sink, release: time, instances, bytes.
async fn our_get(orthanc: &Orthanc, keys: &InMemDicomObject) -> (Duration, usize, u64) {
    let started = Instant::now();
    let mut contexts = vec![ProposedContext::new(uids::STUDY_ROOT_GET, UNCOMPRESSED)];
    contexts.extend(ProposedContext::storage_scp(UNCOMPRESSED));
    let options = ClientOptions::new(OUR_AE, orthanc.ae_title());
    let mut association = hie_dicom_net::connect(orthanc.dicom_addr(), &options, &contexts).await.unwrap();
    let mut sink = CountingSink::default();
    let outcome =
        scu::get(&mut association, uids::STUDY_ROOT_GET, keys, &mut sink, &RetrieveOptions::default()).await.unwrap();
    association.release().await.unwrap();
    let elapsed = started.elapsed();
    assert!(outcome.verdict.is_ok(), "{outcome:?}");
    (elapsed, sink.instances, sink.bytes)
}

async fn our_find(orthanc: &Orthanc, keys: &InMemDicomObject) -> (Duration, usize) {
    let started = Instant::now();
    let contexts = [ProposedContext::new(uids::STUDY_ROOT_FIND, UNCOMPRESSED)];
    let options = ClientOptions::new(OUR_AE, orthanc.ae_title());
    let mut association = hie_dicom_net::connect(orthanc.dicom_addr(), &options, &contexts).await.unwrap();
    let found = scu::find(&mut association, uids::STUDY_ROOT_FIND, keys, &FindLimits::default()).await.unwrap();
    association.release().await.unwrap();
    (started.elapsed(), found.matches.len())
}

/// Counts instances and bytes; keeps nothing.
#[derive(Default)]
struct CountingSink {
    instances: usize,
    bytes: u64,
}

impl StoreSink for CountingSink {
    async fn begin(&mut self, _instance: &InstanceInfo) -> Result<(), Status> {
        Ok(())
    }

    async fn data(&mut self, fragment: Bytes) -> Result<(), Status> {
        self.bytes += fragment.len() as u64;
        Ok(())
    }

    async fn end(&mut self) -> Status {
        self.instances += 1;
        Status::SUCCESS
    }

    async fn abort(&mut self, _reason: &NetError) {}
}

fn study_keys(study_instance_uid: &str) -> InMemDicomObject {
    let mut keys = InMemDicomObject::new_empty();
    keys.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from("STUDY")));
    keys.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study_instance_uid)));
    keys
}

fn image_keys(study_instance_uid: &str) -> InMemDicomObject {
    let mut keys = InMemDicomObject::new_empty();
    keys.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from("IMAGE")));
    keys.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study_instance_uid)));
    keys.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::Empty));
    keys
}

fn study_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).unwrap().filter_map(|entry| entry.ok()?.metadata().ok()).map(|meta| meta.len()).sum()
}
