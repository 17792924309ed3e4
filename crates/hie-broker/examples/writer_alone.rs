//! Diagnosis for `docs/performance.md`: the group-commit writer alone, without MLLP, sockets or a
//! load generator in another process. N submitters each send the ADT bench's pattern (an A04 for
//! a new patient, then three A08), waiting for each answer, for a few seconds; prints msgs/s, ACK
//! latency and the mean batch. Asserts nothing about time.
//!
//! `cargo run --release -p hie-broker --example writer_alone -- [STORE_URL] [SUBMITTERS] [SECONDS]`
//! (defaults: a fresh SQLite file in a temporary directory, 1, 3). PostgreSQL: pass
//! `postgres://hie:hie@127.0.0.1:5432/<empty database>`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hie_broker::adt::AdtConfig;
use hie_broker::commit::AdtWriter;
use hie_core::{AffinityDomain, AssigningAuthority, Oid};
use hie_hl7::adt::{AdtMessage, parse_adt};
use hie_store::{Store, StoreOptions};

const AFFINITY_DOMAIN_OID: &str = "1.3.6.1.4.1.21367.13.20.1000";
const UPDATES_PER_PATIENT: u64 = 3;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let temp = tempfile::TempDir::new().expect("temporary directory");
    let url = args.next().unwrap_or_else(|| format!("sqlite://{}?mode=rwc", temp.path().join("writer.db").display()));
    let submitters: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let secs: f64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(3.0);
    let store = Store::connect(&StoreOptions { url, max_connections: 8, acquire_timeout: Duration::from_secs(10) })
        .await
        .expect("open the store");
    let domain = AffinityDomain::new(
        Oid::parse(AFFINITY_DOMAIN_OID).expect("affinity domain OID"),
        AssigningAuthority {
            namespace_id: "HOSP".to_owned(),
            universal_id: "1.2.840.99999.1.1".to_owned(),
            universal_id_type: "ISO".to_owned(),
        },
    );
    let config = Arc::new(AdtConfig {
        domain,
        application: "HIE_EDGE".to_owned(),
        facility: "HIE_EDGE".to_owned(),
        answer_never_ack: false,
        max_batch: 256,
        patient_merge: hie_core::profile::PatientMergePolicy::default(),
    });
    let (writer, _task) = AdtWriter::spawn(store.clone(), config, Arc::new(tokio::sync::Notify::new()));
    let run = format!("{:x}", hie_store::now_micros());
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for submitter in 0..submitters {
        let writer = writer.clone();
        let tag = format!("{run}c{submitter}");
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < end {
                let event = if seq.is_multiple_of(UPDATES_PER_PATIENT + 1) { "A04" } else { "A08" };
                let patient = format!("{tag}p{}", seq / (UPDATES_PER_PATIENT + 1));
                let message = message(event, &format!("{tag}m{seq}"), &patient);
                let sent = Instant::now();
                let frames = writer.submit(message).await.expect("the writer runs");
                latencies_us.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                assert!(frames.first().is_some_and(|ack| ack.contains("\rMSA|AA|")), "not AA: {frames:?}");
                seq += 1;
            }
            latencies_us
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.expect("submitter"));
    }
    latencies_us.sort_unstable();
    let stats = writer.stats_handle();
    let commits = stats.commits.load(Ordering::Relaxed).max(1);
    let at = |share: f64| latencies_us.get((latencies_us.len() as f64 * share) as usize).copied().unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "engine={:?} submitters={submitters} msgs_per_s={:.0} ack_p50_us={} ack_p99_us={} mean_batch={:.2} loadavg=\"{}\"",
        store.engine(),
        latencies_us.len() as f64 / secs,
        at(0.50),
        at(0.99),
        latencies_us.len() as f64 / commits as f64,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}

/// The ADT bench's message shape, trimmed to what the writer reads: MSH, EVN, PID with the MRN
/// and the affinity domain's ID (so each message queues an identity feed).
fn message(event: &str, control_id: &str, patient: &str) -> AdtMessage {
    let text = format!(
        "MSH|^~\\&|ADT1|HOSP|HIE-EDGE|HIE|20250314083000||ADT^{event}^ADT_A01|{control_id}|P|2.5\r\
         EVN|{event}|20250314083000\r\
         PID|1||MRN{patient}^^^HOSP&1.2.840.99999.1.1&ISO^MR~AD{patient}^^^&{AFFINITY_DOMAIN_OID}&ISO^PI||\
         Beispiel-Mustermann^Johanna||19700101|F\r"
    );
    parse_adt(&text).expect("the example message parses")
}
