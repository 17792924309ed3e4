//! B-KOS: how long a study's manifest takes, from the PACS's answer to the KOS bytes, beside the
//! bare query the PACS answers, measured in one run on one machine.
//!
//! Studies of 10, 500 and 2,000 instances are generated with hie-testkit (`generate_study`, 250
//! instances per series, cloned from a 40 KB PET image of IDS-DEPT024-a) and loaded into a real
//! Orthanc with `storescu`. For each study:
//! - **build**: the KOS alone from the evidence (`hie_broker::studies::build_manifest`: build,
//!   summarize, Part 10 bytes), the evidence gathered once beforehand;
//! - **dimse e2e**: `DimsePacs::study_evidence` (one IMAGE-level C-FIND on a pooled association)
//!   plus the build;
//! - **bare C-FIND**: dcmtk's `findscu` with the same identifier (`-S`, the same keys, `-q`,
//!   `TCP_NODELAY=1`), process start included;
//! - **dicomweb e2e**: `DicomWebPacs::study_evidence` (QIDO-RS, pages of 1,000) plus the build;
//! - **bare QIDO**: `curl` fetching the same pages in one process.
//!
//! Each figure is the median of several runs after one warm-up run. It prints `figure` lines, a
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
        let reps = if *n >= 2_000 { 5 } else { 9 };
        let evidence = runtime.block_on(dimse.study_evidence(study)).expect("evidence");
        assert_eq!(evidence.n_instances(), *n, "the PACS holds the whole study");
        let build = median(reps * 3, || {
            let (bytes, _, _) = build_manifest(&evidence, &settings, 1, &mut uids).expect("a manifest");
            assert!(!bytes.is_empty());
        });
        let dimse_e2e = median(reps, || {
            let evidence = runtime.block_on(dimse.study_evidence(study)).expect("evidence");
            build_manifest(&evidence, &settings, 1, &mut uids).expect("a manifest");
        });
        let findscu_args = findscu_args(&orthanc, study);
        let bare_find = median(reps, || {
            let args: Vec<&str> = findscu_args.iter().map(String::as_str).collect();
            let output = dcmtk("findscu", &args);
            assert!(output.success(), "findscu: {}", output.combined());
        });
        let web_e2e = median(reps, || {
            let evidence = runtime.block_on(web.study_evidence(study)).expect("evidence");
            assert_eq!(evidence.n_instances(), *n);
            build_manifest(&evidence, &settings, 1, &mut uids).expect("a manifest");
        });
        let curl_args = curl_args(&orthanc, study, *n);
        let bare_qido = median(reps, || {
            let status = Command::new("curl").args(&curl_args).status().expect("curl");
            assert!(status.success());
        });
        for (name, value) in [
            ("build", build),
            ("dimse_e2e", dimse_e2e),
            ("bare_findscu", bare_find),
            ("dicomweb_e2e", web_e2e),
            ("bare_qido", bare_qido),
        ] {
            println!("figure kos n={n} {name}_ms={:.2}", ms(value));
        }
        rows.push((*n, build, dimse_e2e, bare_find, web_e2e, bare_qido));
        print_machine(&format!("after n={n}"));
    }
    println!();
    println!(
        "| instances | build ms | dimse e2e ms | bare findscu ms | overhead | dicomweb e2e ms | bare curl ms | overhead |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (n, build, dimse_e2e, bare_find, web_e2e, bare_qido) in &rows {
        println!(
            "| {n} | {:.2} | {:.1} | {:.1} | {:+.2} | {:.1} | {:.1} | {:+.2} |",
            ms(*build),
            ms(*dimse_e2e),
            ms(*bare_find),
            overhead(*dimse_e2e, *bare_find),
            ms(*web_e2e),
            ms(*bare_qido),
            overhead(*web_e2e, *bare_qido),
        );
    }
    println!();
    if let Some((_, build, dimse_e2e, bare_find, web_e2e, bare_qido)) = rows.iter().find(|row| row.0 == 2_000) {
        verdict("KOS build of 2,000 instances <= 10 ms", *build <= BUILD_GOAL, format!("{:.2} ms", ms(*build)));
        for (name, e2e, bare) in [("dimse", dimse_e2e, bare_find), ("dicomweb", web_e2e, bare_qido)] {
            let ratio = overhead(*e2e, *bare);
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

/// The median time of `reps` runs of `run`, after one warm-up run.
fn median(reps: usize, mut run: impl FnMut()) -> Duration {
    run();
    let mut times: Vec<Duration> = (0..reps.max(1))
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
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
