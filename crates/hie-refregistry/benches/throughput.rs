//! Throughput of the reference registry through its HTTP endpoints, on SQLite and PostgreSQL:
//! ITI-42 registrations/s, and ITI-41 provide-and-register/s of 20 KB and 1 MB documents (KOS
//! sized, MTOM), with 8 concurrent clients; prints requests/s and latency p50/p99.
//!
//! `cargo bench -p hie-refregistry --bench throughput` (PostgreSQL on 127.0.0.1:5432 as for the
//! tests; `HIE_BENCH_ROUNDS` scales the request counts). Figures are printed, never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{entry, provide, submission};
use hie_refregistry::{REGISTRY_PATH, REPOSITORY_PATH};
use hie_xds::actions;
use hie_xds::messages::{RegistryResponse, ResponseStatus};
use support::{Engine, Harness};

const CLIENTS: usize = 8;
const DOMAIN: &str = "1.3.6.1.4.1.21367.13.20.1000";

#[derive(Clone, Copy)]
enum Workload {
    Register,
    Provide { document_bytes: usize },
}

impl Workload {
    fn label(self) -> String {
        match self {
            Workload::Register => "ITI-42 register".to_owned(),
            Workload::Provide { document_bytes } => format!("ITI-41 provide {} KB", document_bytes / 1024),
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let scale: usize = std::env::var("HIE_BENCH_ROUNDS").ok().and_then(|value| value.parse().ok()).unwrap_or(1);
    println!("reference registry throughput, {CLIENTS} concurrent clients over HTTP/1.1 on 127.0.0.1");
    println!("{:<10} {:<24} {:>8} {:>10} {:>10} {:>10}", "engine", "workload", "requests", "req/s", "p50 ms", "p99 ms");
    for engine in [Engine::Sqlite, Engine::Postgres] {
        for (workload, per_client) in [
            (Workload::Register, 100 * scale),
            (Workload::Provide { document_bytes: 20 * 1024 }, 50 * scale),
            (Workload::Provide { document_bytes: 1024 * 1024 }, 10 * scale),
        ] {
            runtime.block_on(run(engine, workload, per_client));
        }
    }
}

async fn run(engine: Engine, workload: Workload, per_client: usize) {
    let harness = Arc::new(Harness::start(engine, DOMAIN).await);
    harness.feed("BENCH").await;
    let patient = harness.patient("BENCH");
    // One request of each kind first, so connection set-up and caches are not in the figures.
    one(&harness, workload, &patient, usize::MAX, 0).await;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for client in 0..CLIENTS {
        let harness = Arc::clone(&harness);
        let patient = patient.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for index in 0..per_client {
                let request_started = Instant::now();
                one(&harness, workload, &patient, client, index).await;
                latencies.push(request_started.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{:<10} {:<24} {:>8} {:>10.1} {:>10.2} {:>10.2}",
        format!("{engine:?}"),
        workload.label(),
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(0.50).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
    );
}

/// One registration with uniqueIds of its own; panics on anything but Success.
async fn one(harness: &Harness, workload: Workload, patient: &str, client: usize, index: usize) {
    let set = format!("1.9.{client}.{index}");
    let document = format!("1.2.{client}.{index}");
    let request = submission(&set, patient, vec![entry("Doc", &document, patient)]);
    let answer = match workload {
        Workload::Register => harness.soap(REGISTRY_PATH, actions::ITI42_REQUEST, &request).await,
        Workload::Provide { document_bytes } => {
            let mut provide = provide(request);
            let mut content = document.clone().into_bytes();
            content.resize(document_bytes, b'K');
            if let Some(hie_xds::RegistryObject::DocumentEntry(entry)) = provide.submission.objects.get_mut(2) {
                entry.hash = None;
                entry.size = None;
            }
            provide.documents[0].content = content;
            harness.mtom(REPOSITORY_PATH, actions::ITI41_REQUEST, &provide).await
        }
    };
    let response: RegistryResponse =
        hie_xds::read_message(&answer.content_type, &answer.body, &Default::default()).unwrap().message;
    assert_eq!(response.status, ResponseStatus::Success, "{:#?}", response.errors);
}
