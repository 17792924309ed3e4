//! B-KOS: how long a study's manifest takes, from the PACS's answer to the KOS bytes, beside the
//! bare query the PACS answers, measured in one run on one machine.
//!
//! Studies of 10, 500 and 2,000 instances are generated with hie-testkit (`generate_study`, 250
//! instances per series, cloned from a 40 KB PET image of IDS-DEPT024-a) and loaded into a real
//! Orthanc with `storescu`. For each study:
//! - **KOS alone**: `hie_kos::build_kos` and `to_part10_bytes` from the evidence (gathered once
//!   beforehand); and `hie_broker::studies::build_manifest`, what the broker runs (the same plus
//!   reading the summary back);
//! - **dimse e2e**: `DimsePacs::study_evidence` (one IMAGE-level C-FIND on a pooled association)
//!   plus the build;
//! - **bare C-FIND**: dcmtk's `findscu` with the same identifier (`-S`, the same keys, `-q`,
//!   `TCP_NODELAY=1`), process start included;
//! - **dicomweb e2e**: `DicomWebPacs::study_evidence` (QIDO-RS, pages of 1,000) plus the build;
//! - **bare QIDO**: `curl` fetching the same pages in one process.
//!
//! The queries run interleaved (dimse, findscu, dicomweb, curl, again), so that the load of other
//! work on the machine weighs on each alike, after one untimed evidence query that warms the pool
//! and the PACS's caches; each figure is the median. It prints `figure` lines, a
//! table, the overhead ratios `(e2e - bare) / bare`, and a met/MISSED line per goal (build <= 10 ms
//! at 2,000 instances; overhead <= 0.5). Nothing is asserted about time. Results go to
//! `docs/performance.md` by hand.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dicom_core::header::Header;
use hie_broker::ports::Pacs;
use hie_broker::studies::{ManifestSettings, build_manifest};
use hie_dicom_net::MoveRouter;
use hie_kos::RootedUids;
use hie_outbound::pacs::dimse::evidence_identifier;
use hie_outbound::pacs::{DicomWebPacs, DicomWebSettings, DimsePacs, DimseSettings, Retrieve};
use hie_testkit::fixtures::IDS_DEPT024_A;
use hie_testkit::{Orthanc, dcmtk, generate_study};

const SIZES: [usize; 3] = [10, 500, 2_000];
const PER_SERIES: usize = 250;
/// The QIDO page size `DicomWebPacs` asks for.
const QIDO_PAGE: usize = 1_000;
const BUILD_GOAL: Duration = Duration::from_millis(10);
/// Builds timed per size (they take milliseconds).
const BUILD_REPS: usize = 15;
const OVERHEAD_GOAL: f64 = 0.5;

fn main() {
    let started = Instant::now();
    print_machine("start");
    let orthanc = Orthanc::start();
    let work = tempfile::tempdir().expect("temp dir");
    let template = &IDS_DEPT024_A.images()[0];
    let mut studies = Vec::new();
    for n in SIZES {
        let dir = work.path().join(format!("study-{n}"));
        let study = generate_study(template, n, PER_SERIES, &dir);
        let load = Instant::now();
        load_with_storescu(&orthanc, &dir);
        println!("loaded {n} instances into Orthanc in {:.1} s", load.elapsed().as_secs_f64());
        studies.push((n, study.study_instance_uid));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dimse = DimsePacs::new(
        DimseSettings {
            ae_title: orthanc.ae_title().to_owned(),
            host: "127.0.0.1".to_owned(),
            port: orthanc.dicom_port(),
            our_ae_title: "HIE_EDGE".to_owned(),
            retrieve: Retrieve::CGet,
            max_associations: 2,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        },
        MoveRouter::new(),
    );
    let web = DicomWebPacs::new(DicomWebSettings {
        url: format!("{}/dicom-web", orthanc.http_url()),
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(60),
    })
    .expect("DICOMweb adapter");
    let settings = ManifestSettings {
        retrieve_ae_title: "HIE_EDGE".to_owned(),
        repository_unique_id: "1.2.840.99999.1.2".to_owned(),
        uid_root: "1.2.840.99999.1.3".to_owned(),
        institution_name: None,
    };
    let mut uids = RootedUids::new(&settings.uid_root).expect("UID root");
    let mut rows = Vec::new();
    for (n, study) in &studies {
        let reps = repetitions(*n);
        // Warms the pool, Orthanc's caches and ours; the evidence for the build-only figures.
        let evidence = runtime.block_on(dimse.study_evidence(study)).expect("evidence");
        assert_eq!(evidence.n_instances(), *n, "the PACS holds the whole study");
        let options =
            hie_kos::KosOptions::new("HIE_EDGE", settings.repository_unique_id.as_str(), "20261201", "120000");
        let mut kos_alone = Vec::new();
        let mut manifest = Vec::new();
        for _ in 0..BUILD_REPS {
            kos_alone.push(time(|| {
                let kos = hie_kos::build_kos(&evidence, &options, &mut uids).expect("a KOS");
                hie_kos::to_part10_bytes(&kos).expect("Part 10 bytes");
            }));
            manifest.push(time(|| {
                build_manifest(&evidence, &settings, 1, &mut uids).expect("a manifest");
            }));
        }
        let findscu_args = findscu_args(&orthanc, study);
        let curl_args = curl_args(&orthanc, study, *n);
        // Interleaved, so that the machine's load (other builds) weighs on each the same.
        let (mut dimse_e2e, mut bare_find, mut web_e2e, mut bare_qido) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            dimse_e2e.push(time(|| {
                let evidence = runtime.block_on(dimse.study_evidence(study)).expect("evidence");
                build_manifest(&evidence, &settings, 1, &mut uids).expect("a manifest");
            }));
            bare_find.push(time(|| {
                let args: Vec<&str> = findscu_args.iter().map(String::as_str).collect();
                let output = dcmtk("findscu", &args);
                assert!(output.success(), "findscu: {}", output.combined());
            }));
            web_e2e.push(time(|| {
                let evidence = runtime.block_on(web.study_evidence(study)).expect("evidence");
                assert_eq!(evidence.n_instances(), *n);
                build_manifest(&evidence, &settings, 1, &mut uids).expect("a manifest");
            }));
            bare_qido.push(time(|| {
                let status = Command::new("curl").args(&curl_args).status().expect("curl");
                assert!(status.success());
            }));
        }
        let row = Row {
            n: *n,
            kos_alone_best: kos_alone.iter().copied().min().unwrap_or_default(),
            kos_alone: median(kos_alone),
            manifest: median(manifest),
            dimse_e2e: median(dimse_e2e),
            bare_find: median(bare_find),
            web_e2e: median(web_e2e),
            bare_qido: median(bare_qido),
        };
        for (name, value) in [
            ("kos_alone", row.kos_alone),
            ("kos_alone_best", row.kos_alone_best),
            ("build_manifest", row.manifest),
            ("dimse_e2e", row.dimse_e2e),
            ("bare_findscu", row.bare_find),
            ("dicomweb_e2e", row.web_e2e),
            ("bare_qido", row.bare_qido),
        ] {
            println!("figure kos n={n} {name}_ms={:.2}", ms(value));
        }
        rows.push(row);
        print_machine(&format!("after n={n}, {reps} interleaved runs"));
    }
    println!();
    println!(
        "| instances | KOS alone ms | build_manifest ms | dimse e2e ms | bare findscu ms | overhead | dicomweb e2e ms | bare curl ms | overhead |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.1} | {:.1} | {:+.2} | {:.1} | {:.1} | {:+.2} |",
            row.n,
            ms(row.kos_alone),
            ms(row.manifest),
            ms(row.dimse_e2e),
            ms(row.bare_find),
            overhead(row.dimse_e2e, row.bare_find),
            ms(row.web_e2e),
            ms(row.bare_qido),
            overhead(row.web_e2e, row.bare_qido),
        );
    }
    println!();
    if let Some(row) = rows.iter().find(|row| row.n == 2_000) {
        let kos = row.kos_alone;
        verdict(
            "KOS of 2,000 instances built alone <= 10 ms (median)",
            kos <= BUILD_GOAL,
            format!("{:.2} ms; fastest {:.2} ms", ms(kos), ms(row.kos_alone_best)),
        );
        for (name, e2e, bare) in [("dimse", row.dimse_e2e, row.bare_find), ("dicomweb", row.web_e2e, row.bare_qido)] {
            let ratio = overhead(e2e, bare);
            verdict(
                &format!("{name} overhead at 2,000 <= {OVERHEAD_GOAL}"),
                ratio <= OVERHEAD_GOAL,
                format!("{ratio:+.2}"),
            );
        }
    }
    println!("bench took {:.1} s", started.elapsed().as_secs_f64());
}

/// `storescu` of every file in `dir` on one association, as a modality would send a study.
fn load_with_storescu(orthanc: &Orthanc, dir: &Path) {
    let port = orthanc.dicom_port().to_string();
    let dir = dir.display().to_string();
    let output = hie_testkit::dcmtk::dcmtk_with_timeout(
        "storescu",
        &["-aet", "HIE_EDGE", "-aec", orthanc.ae_title(), "+sd", "127.0.0.1", &port, &dir],
        Duration::from_secs(300),
    );
    assert!(output.success(), "storescu: {}", output.combined());
}

/// `findscu` with the identifier `DimsePacs` sends.
fn findscu_args(orthanc: &Orthanc, study: &str) -> Vec<String> {
    let mut args: Vec<String> =
        ["-S", "-q", "-aet", "HIE_EDGE", "-aec", orthanc.ae_title()].iter().map(|arg| (*arg).to_owned()).collect();
    for element in evidence_identifier(study).iter() {
        let tag = element.tag();
        let value = element.to_str().map(|value| value.into_owned()).unwrap_or_default();
        args.push("-k".to_owned());
        if value.is_empty() {
            args.push(format!("({:04x},{:04x})", tag.group(), tag.element()));
        } else {
            args.push(format!("({:04x},{:04x})={value}", tag.group(), tag.element()));
        }
    }
    args.push("127.0.0.1".to_owned());
    args.push(orthanc.dicom_port().to_string());
    args
}

/// `curl` fetching the QIDO pages `DicomWebPacs` fetches (the last one short or empty).
fn curl_args(orthanc: &Orthanc, study: &str, n: usize) -> Vec<String> {
    let mut fields: Vec<String> = vec!["includefield=00080005".to_owned()];
    for element in evidence_identifier(study).iter() {
        let tag = element.tag();
        if tag != dicom_dictionary_std::tags::QUERY_RETRIEVE_LEVEL {
            fields.push(format!("includefield={:04X}{:04X}", tag.group(), tag.element()));
        }
    }
    let mut args: Vec<String> =
        ["-s", "-f", "-H", "Accept: application/dicom+json"].iter().map(|arg| (*arg).to_owned()).collect();
    for page in 0..=(n / QIDO_PAGE) {
        args.push("-o".to_owned());
        args.push("/dev/null".to_owned());
        args.push(format!(
            "{}/dicom-web/studies/{study}/instances?{}&limit={QIDO_PAGE}&offset={}",
            orthanc.http_url(),
            fields.join("&"),
            page * QIDO_PAGE
        ));
    }
    args
}

/// One timed run.
fn time(run: impl FnOnce()) -> Duration {
    let started = Instant::now();
    run();
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Interleaved query runs per size: fewer for the big studies, whose queries take seconds on
/// Orthanc (it reads each instance's file for the attributes its index lacks).
fn repetitions(n: usize) -> usize {
    if n <= 100 { 7 } else { 3 }
}

/// One size's figures.
struct Row {
    n: usize,
    kos_alone: Duration,
    /// The fastest build: what the code costs with the least interference from other load.
    kos_alone_best: Duration,
    manifest: Duration,
    dimse_e2e: Duration,
    bare_find: Duration,
    web_e2e: Duration,
    bare_qido: Duration,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn overhead(e2e: Duration, bare: Duration) -> f64 {
    (e2e.as_secs_f64() - bare.as_secs_f64()) / bare.as_secs_f64()
}

fn verdict(goal: &str, met: bool, figure: String) {
    println!("goal {}: {goal} ({figure})", if met { "met" } else { "MISSED" });
}

fn print_machine(when: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(0);
    println!(
        "machine ({when}): {cpus} CPUs, load average {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}
