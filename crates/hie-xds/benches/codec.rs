//! Codec throughput (crates-and-performance.md B.3 B-MICRO and B-KOS): prints `figure` lines.
//! - ebRIM `SubmitObjectsRequest` parse (bounded XML tree + typed read), target >= 200 MB/s;
//! - SOAP + ebRIM + MTOM serialize of a RAD-68 Provide and Register with a 1 MB and a 20 MB
//!   KOS, target >= 100 MB/s: once as chunks (attachment borrowed, what a streaming HTTP body
//!   sends) and once copied into one buffer.
//!
//! Figures are MB/s of CPU time (this thread's time on a CPU, so a busy shared machine does not
//! deflate them); see `best_of`. Run: `cargo bench -p hie-xds --bench codec`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use hie_xds::messages::{SubmitObjectsRequest, XdsMessage};
use hie_xds::mtom::Package;
use hie_xds::xml::{self, Limits};
use hie_xds::{Addressing, RegistryObject, actions};

/// CPU time this thread has run, from /proc/thread-self/schedstat (ns on CPU). The machine is
/// shared (2 vCPUs, other builds running), so wall time alone understates the codec.
fn thread_cpu_time() -> Option<Duration> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Runs `work` until `budget` has passed (at least 3 times) and returns the time per run: the
/// mean CPU time when /proc gives it, else the best wall time.
fn best_of(budget: Duration, mut work: impl FnMut()) -> Duration {
    let started = Instant::now();
    let cpu_started = thread_cpu_time();
    let mut best = Duration::MAX;
    let mut runs = 0u32;
    while runs < 3 || started.elapsed() < budget {
        let run = Instant::now();
        work();
        best = best.min(run.elapsed());
        runs += 1;
    }
    match (cpu_started, thread_cpu_time()) {
        (Some(before), Some(after)) => (after - before) / runs,
        _ => best,
    }
}

fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

/// A Register of `n` KOS entries with their SubmissionSet and associations.
fn large_register(n: usize) -> SubmitObjectsRequest {
    let template = support::kos_submission(Vec::new()).submission;
    let mut objects = Vec::with_capacity(2 * n + 1);
    objects.push(template.objects[0].clone());
    for index in 0..n {
        if let (RegistryObject::DocumentEntry(entry), RegistryObject::Association(association)) =
            (&template.objects[1], &template.objects[2])
        {
            let mut entry = entry.clone();
            entry.id = format!("urn:uuid:94f30df9-d945-485e-9dbe-{index:012}");
            entry.unique_id = Some(format!("1.2.3.4.5.6.7.8.{index}"));
            let mut association = association.clone();
            association.id = format!("urn:uuid:4bb2a1a4-2ab4-4d5f-b9a5-{index:012}");
            association.target_object = entry.id.clone();
            objects.push(RegistryObject::DocumentEntry(entry));
            objects.push(RegistryObject::Association(association));
        }
    }
    SubmitObjectsRequest { request_slots: Vec::new(), objects }
}

fn main() {
    let budget = Duration::from_secs(3);
    // `HIE_XDS_BENCH=parse` or `=mtom` runs one part (for profiling).
    let only = std::env::var("HIE_XDS_BENCH").unwrap_or_default();
    if only.is_empty() || only == "parse" {
        parse_figures(budget);
    }
    if only == "tree" {
        let bytes = large_register(500).to_xml();
        let tree_only = best_of(budget, || {
            black_box(xml::parse(black_box(&bytes), &Limits::DEFAULT).unwrap());
        });
        println!("figure xml_tree_parse_mb_per_s {:.0}", mb_per_s(bytes.len(), tree_only));
    }
    if only.is_empty() || only == "mtom" {
        mtom_figures(budget);
    }
}

fn parse_figures(budget: Duration) {
    let register = large_register(500);
    let bytes = register.to_xml();
    let tree_only = best_of(budget, || {
        black_box(xml::parse(black_box(&bytes), &Limits::DEFAULT).unwrap());
    });
    let full = best_of(budget, || {
        let document = xml::parse(black_box(&bytes), &Limits::DEFAULT).unwrap();
        black_box(SubmitObjectsRequest::read(document.root(), &mut Package::plain(b"")).unwrap());
    });
    // The floor under everything: quick-xml's NsReader resolving every event, storing nothing.
    let text = std::str::from_utf8(&bytes).unwrap();
    let events_only = best_of(budget, || {
        let mut reader = quick_xml::reader::NsReader::from_str(black_box(text));
        loop {
            match reader.read_resolved_event() {
                Ok((_, quick_xml::events::Event::Eof)) => break,
                Ok((namespace, event)) => {
                    black_box((namespace, event));
                }
                Err(error) => panic!("{error}"),
            }
        }
    });
    println!("figure ebrim_submit_objects_bytes {}", bytes.len());
    println!("figure quick_xml_nsreader_events_mb_per_s {:.0}", mb_per_s(bytes.len(), events_only));
    println!("figure xml_tree_parse_mb_per_s {:.0}", mb_per_s(bytes.len(), tree_only));
    println!("figure ebrim_submit_objects_parse_mb_per_s {:.0} (target >= 200)", mb_per_s(bytes.len(), full));
    let write = best_of(budget, || {
        black_box(black_box(&register).to_xml());
    });
    println!("figure ebrim_submit_objects_write_mb_per_s {:.0}", mb_per_s(bytes.len(), write));
}

fn mtom_figures(budget: Duration) {
    let addressing = Addressing::request(
        actions::ITI41_REQUEST,
        "urn:uuid:6f0c1d2e-3a4b-4c5d-8e9f-a0b1c2d3e4f5",
        "https://registry.example/xds",
    );
    for size in [1_000_000usize, 20_000_000] {
        let message = support::kos_submission((0..size).map(|index| (index % 251) as u8).collect());
        let outgoing = hie_xds::write_mtom(&message, &addressing, "MIMEBoundary_6f0c1d2e", "root@hie-xds").unwrap();
        let total: usize = outgoing.chunks.iter().map(|chunk| chunk.len()).sum();
        let chunks = best_of(budget, || {
            black_box(
                hie_xds::write_mtom(black_box(&message), &addressing, "MIMEBoundary_6f0c1d2e", "root@hie-xds").unwrap(),
            );
        });
        let copied = best_of(budget, || {
            let outgoing =
                hie_xds::write_mtom(black_box(&message), &addressing, "MIMEBoundary_6f0c1d2e", "root@hie-xds").unwrap();
            black_box(outgoing.concat());
        });
        let label = size / 1_000_000;
        println!("figure pnr_mtom_{label}mb_message_bytes {total}");
        println!("figure pnr_mtom_{label}mb_serialize_chunks_mb_per_s {:.0} (target >= 100)", mb_per_s(total, chunks));
        println!(
            "figure pnr_mtom_{label}mb_serialize_into_one_buffer_mb_per_s {:.0} (target >= 100)",
            mb_per_s(total, copied)
        );
        let body = outgoing.concat();
        let read = best_of(budget, || {
            black_box(
                hie_xds::read_message::<hie_xds::messages::ProvideAndRegisterRequest>(
                    &outgoing.content_type,
                    black_box(&body),
                    &Default::default(),
                )
                .unwrap(),
            );
        });
        println!("figure pnr_mtom_{label}mb_read_mb_per_s {:.0}", mb_per_s(total, read));
    }
}
