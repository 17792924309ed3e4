//! Micro-benchmark of the manifest itself, without a PACS: `build_kos` and `to_part10_bytes` for
//! studies of 10, 500 and 2,000 instances (250 per series, PET SOP class, patient and study
//! attributes from a real IDS-DEPT024-a header), beside dicom-object's own writer on the same
//! object (`FileDicomObject::write_all`, the reference the manifest's bytes must equal).
//!
//! Each figure is the best and the median of [`REPS`] runs after [`WARM_UP`] untimed ones. It
//! prints the load average before and after, `figure` lines and a table; nothing is asserted
//! about time. B-KOS (`cargo bench -p hie-e2e --bench kos`) measures the same build beside the
//! PACS queries.
//!
//! `cargo bench -p hie-kos --bench build`

use std::time::{Duration, Instant};

use dicom_dictionary_std::uids;
use hie_kos::{
    InstanceHeader, InstanceRef, KosOptions, RootedUids, SeriesKey, StudyEvidence, StudyEvidenceBuilder, build_kos,
    from_instance_header, read_instance_header, to_part10_bytes,
};

const SIZES: [usize; 3] = [10, 500, 2_000];
const PER_SERIES: usize = 250;
const REPS: usize = 25;
const WARM_UP: usize = 3;
const STUDY_UID_ROOT: &str = "1.2.826.0.1.3680043.10.999.42";

fn main() {
    print_load("start");
    let template =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/studies/IDS-DEPT024-a/images/000000.dcm"))
            .expect("the fixture image");
    let header = from_instance_header(&read_instance_header(&template).expect("a readable header")).expect("UIDs");
    let options = KosOptions::new("HIE_EDGE", "1.2.840.99999.1.2", "20261201", "120000");
    let mut uids = RootedUids::new("1.2.840.99999.1.3").expect("UID root");
    println!(
        "| instances | build_kos ms (best / median) | to_part10_bytes ms | total ms | dicom-object write_all ms | bytes |"
    );
    println!("|---|---|---|---|---|---|");
    for n in SIZES {
        let evidence = evidence(&header, n);
        let kos = build_kos(&evidence, &options, &mut uids).expect("a KOS");
        let n_bytes = to_part10_bytes(&kos).expect("bytes").len();
        let (mut build, mut encode, mut total, mut reference) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for rep in 0..WARM_UP + REPS {
            let started = Instant::now();
            let kos = build_kos(&evidence, &options, &mut uids).expect("a KOS");
            let built = started.elapsed();
            let started = Instant::now();
            let bytes = to_part10_bytes(&kos).expect("bytes");
            let encoded = started.elapsed();
            let started = Instant::now();
            let mut written = Vec::new();
            kos.write_all(&mut written).expect("dicom-object writes it");
            let referenced = started.elapsed();
            assert_eq!(bytes, written, "to_part10_bytes differs from dicom-object's writer at {n} instances");
            if rep >= WARM_UP {
                build.push(built);
                encode.push(encoded);
                total.push(built + encoded);
                reference.push(referenced);
            }
        }
        let (build, encode, total, reference) = (stats(build), stats(encode), stats(total), stats(reference));
        println!(
            "figure n={n} build_kos_ms={:.3} to_part10_bytes_ms={:.3} total_ms={:.3} total_best_ms={:.3} \
             dicom_object_write_ms={:.3} bytes={n_bytes}",
            ms(build.median),
            ms(encode.median),
            ms(total.median),
            ms(total.best),
            ms(reference.median)
        );
        println!(
            "| {n} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {n_bytes} |",
            ms(build.best),
            ms(build.median),
            ms(encode.best),
            ms(encode.median),
            ms(total.best),
            ms(total.median),
            ms(reference.best),
            ms(reference.median)
        );
    }
    print_load("end");
}

/// `n` instances in series of [`PER_SERIES`], all carrying the template's patient and study.
fn evidence(template: &InstanceHeader, n: usize) -> StudyEvidence {
    let study = format!("{STUDY_UID_ROOT}.{n}");
    let mut builder = StudyEvidenceBuilder::for_study(study.as_str());
    for index in 0..n {
        let series = format!("{study}.{}", index / PER_SERIES + 1);
        let mut header = template.clone();
        header.study_instance_uid = study.clone();
        header.series = SeriesKey { series_instance_uid: series.clone(), ..template.series.clone() };
        header.instance = InstanceRef {
            sop_class_uid: uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE.to_owned(),
            sop_instance_uid: format!("{series}.{}", index + 1),
        };
        builder.add_header(header).expect("an instance of the study");
    }
    builder.build().expect("evidence")
}

struct Stats {
    best: Duration,
    median: Duration,
}

fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort();
    Stats { best: times[0], median: times[times.len() / 2] }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn print_load(when: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("machine {when}: load average {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}
