//! B-PUB: studies published per second end to end, against the built-in registry, in one run.
//!
//! One real Orthanc holds N generated studies (`PUBLISH_BENCH_STUDIES`, default 200, of
//! `PUBLISH_BENCH_INSTANCES` instances each, default 10, one distinct patient each). The release
//! broker (`hie-edge-e2e` built by `cargo bench`) manifests from it by DICOMweb (no polling) and
//! publishes to its own built-in registry over mutual TLS (ITI-41 with the KOS over MTOM, mode
//! provide), first on SQLite, then on a fresh PostgreSQL database. Every patient is linked by an
//! ADT and fed to the registry (ITI-8) before the clock starts. What one study costs, from its
//! trigger to `done`: the scheduler's claim, the PACS query (QIDO-RS and WADO-RS metadata), the
//! KOS, the manifest's commit with its submission, the outbox claim, the metadata, the SOAP/MTOM
//! exchange, the registry's commit, and the submission's outcome.
//!
//! Two loads per engine, each on a fresh broker (fresh store and registry, same Orthanc):
//! - closed loop, `PUBLISH_BENCH_IN_FLIGHT` studies in flight (default 8): a study is requested
//!   (`POST /api/studies/{uid}/refresh`) whenever one is done, the goal's load;
//! - burst: `hie-edge backfill` requests all of them at once and follows them.
//!
//! And two PACS: Orthanc by DICOMweb (the end-to-end figure), and the folder adapter over the
//! very same files, which takes the PACS's own cost out and shows the broker's. Beside them, the
//! PACS's ceiling measured in the same run: the two requests a manifest costs (the instance-level
//! QIDO-RS and one WADO-RS metadata), for every study, straight at Orthanc from 4 and 8 threads.
//!
//! Latency is the trigger (the client's clock before the request; a backfill's: the study's
//! `last_change_at`, when the request was recorded) to the submission's `updated_at` (the broker's
//! clock, same machine); the manifest's part ends at the submission's `created_at`. Throughput is
//! studies over first trigger to last done. One study is published first as a warm-up and left
//! out. Prints `figure` lines and a met/MISSED line for the goal (100 studies/s); asserts nothing
//! about time, but checks every study was published exactly once, at the first attempt. Results go
//! to `docs/performance.md` by hand.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hie_e2e::{BrokerOptions, BrokerProc, Engine};
use hie_testkit::{Orthanc, StudyOverrides, generate_study_with};

const AFFINITY_DOMAIN_OID: &str = "1.3.6.1.4.1.21367.13.20.1000";
const LOCAL_AUTHORITY: &str = "HOSP&1.2.840.99999.1.1&ISO";
const GOAL_STUDIES_PER_S: f64 = 100.0;
/// Longest a run may take before the bench gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the client looks for finished submissions.
const POLL: Duration = Duration::from_millis(10);
const UPLOAD_THREADS: usize = 4;
/// Every this many polls the client reads every done submission, not only the newest.
const FULL_SWEEP_EVERY: u64 = 50;

fn main() {
    hie_e2e::init!();
    let n_studies = env_usize("PUBLISH_BENCH_STUDIES", 200);
    let n_instances = env_usize("PUBLISH_BENCH_INSTANCES", 10);
    let in_flight = env_usize("PUBLISH_BENCH_IN_FLIGHT", 8).max(1);
    let started = Instant::now();
    print_machine();
    println!("broker executable: {}", hie_e2e::broker_exe().display());
    println!("corpus: {n_studies} studies x {n_instances} instances (NIST PET fixture clones), one patient each");

    let orthanc = Orthanc::start();
    let data = tempfile::Builder::new().prefix("hie-bench-publish-").tempdir().expect("temp dir");
    let studies = generate(data.path(), n_studies, n_instances);
    let upload_started = Instant::now();
    upload(&orthanc, &studies);
    println!(
        "setup: {} instances uploaded to Orthanc in {:.1} s",
        n_studies * n_instances,
        upload_started.elapsed().as_secs_f64()
    );

    for threads in [4, 8] {
        let per_second = pacs_ceiling(&orthanc, &studies, threads);
        println!(
            "figure pacs_ceiling orthanc qido+metadata threads={threads} studies_per_s={per_second:.1} load_avg={}",
            load_average()
        );
    }

    let mut rows = Vec::new();
    for pacs in [Pacs::Orthanc, Pacs::Folder] {
        for engine in [Engine::Sqlite, Engine::Postgres] {
            for load in [Load::Closed(in_flight), Load::Burst] {
                let broker = start_broker(engine, pacs, &orthanc, data.path());
                link_patients(&broker, &studies);
                let (warm_up, measured) = studies.split_at(1);
                closed_loop(&broker, warm_up, 1);
                let run = match load {
                    Load::Closed(n) => closed_loop(&broker, measured, n),
                    Load::Burst => burst(&broker, measured),
                };
                check_published_once(&broker, &studies);
                let figures = Figures::of(&run);
                println!(
                    "figure publish pacs={} engine={} load={} studies={} studies_per_s={:.1} p50_ms={:.0} p99_ms={:.0} \
                     max_ms={:.0} manifest_p50_ms={:.0} publish_p50_ms={:.0} load_avg={}",
                    pacs.name(),
                    engine_name(engine),
                    load.name(),
                    run.len(),
                    figures.per_second,
                    figures.p50_ms,
                    figures.p99_ms,
                    figures.max_ms,
                    figures.manifest_p50_ms,
                    figures.publish_p50_ms,
                    load_average(),
                );
                rows.push((pacs, engine, load, figures));
            }
        }
    }

    println!();
    println!(
        "| PACS | engine | load | studies/s | p50 ms | p99 ms | max ms | trigger to manifest p50 ms | manifest to done p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (pacs, engine, load, figures) in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            pacs.name(),
            engine_name(*engine),
            load.name(),
            figures.per_second,
            figures.p50_ms,
            figures.p99_ms,
            figures.max_ms,
            figures.manifest_p50_ms,
            figures.publish_p50_ms
        );
    }
    for (pacs, engine, load, figures) in rows.iter().filter(|(_, _, load, _)| matches!(load, Load::Closed(_))) {
        let verdict = if figures.per_second >= GOAL_STUDIES_PER_S { "met" } else { "MISSED" };
        println!(
            "goal {} {} {}: >= {GOAL_STUDIES_PER_S:.0} studies/s: {:.1} studies/s, p99 {:.0} ms: {verdict}",
            pacs.name(),
            engine_name(*engine),
            load.name(),
            figures.per_second,
            figures.p99_ms
        );
    }
    println!("bench took {:.0} s", started.elapsed().as_secs_f64());
}

/// Where the broker builds manifests from.
#[derive(Debug, Clone, Copy)]
enum Pacs {
    /// The real Orthanc, by DICOMweb.
    Orthanc,
    /// The folder adapter over the files Orthanc was given.
    Folder,
}

impl Pacs {
    fn name(&self) -> &'static str {
        match self {
            Pacs::Orthanc => "orthanc-dicomweb",
            Pacs::Folder => "folder",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Load {
    /// This many studies in flight; the next is requested when one is done.
    Closed(usize),
    /// All at once, by `hie-edge backfill`.
    Burst,
}

impl Load {
    fn name(&self) -> String {
        match self {
            Load::Closed(n) => format!("{n}-in-flight"),
            Load::Burst => "burst-backfill".to_owned(),
        }
    }
}

/// One generated study and its patient.
struct BenchStudy {
    uid: String,
    /// The first instance's Series and SOP Instance UIDs (the PACS ceiling's metadata request).
    first: (String, String),
    mrn: String,
    ad_id: String,
    paths: Vec<PathBuf>,
}

/// What one study's publication took, in microseconds since the epoch.
#[derive(Debug, Clone, Copy)]
struct Timing {
    triggered: i64,
    manifested: i64,
    done: i64,
}

fn generate(dir: &Path, n_studies: usize, n_instances: usize) -> Vec<BenchStudy> {
    let template = &hie_testkit::fixtures::IDS_DEPT024_A.images()[0];
    let run = hie_e2e::unique_suffix();
    (0..n_studies)
        .map(|index| {
            let (mrn, ad_id) = (format!("BMRN{index}-{run}"), format!("BAD{index}-{run}"));
            let overrides = StudyOverrides {
                patient_id: Some(mrn.clone()),
                patient_name: Some(format!("Bench^P{index}")),
                accession_number: Some(format!("BA{index}")),
                ..StudyOverrides::default()
            };
            let study =
                generate_study_with(template, n_instances, n_instances, &dir.join(index.to_string()), &overrides);
            let first = (study.instances[0].series_instance_uid.clone(), study.instances[0].sop_instance_uid.clone());
            BenchStudy { uid: study.study_instance_uid.clone(), first, mrn, ad_id, paths: study.paths() }
        })
        .collect()
}

fn upload(orthanc: &Orthanc, studies: &[BenchStudy]) {
    let paths: Vec<&PathBuf> = studies.iter().flat_map(|study| &study.paths).collect();
    let chunk = paths.len().div_ceil(UPLOAD_THREADS).max(1);
    std::thread::scope(|scope| {
        for part in paths.chunks(chunk) {
            scope.spawn(move || {
                for path in part {
                    if let Err(error) = orthanc.upload(path) {
                        panic!("{error}");
                    }
                }
            });
        }
    });
}

fn start_broker(engine: Engine, pacs: Pacs, orthanc: &Orthanc, folder: &Path) -> BrokerProc {
    let options = BrokerOptions::new(engine)
        .env("HIE_EDGE__TELEMETRY__LOG_LEVEL", "warn")
        .env("HIE_EDGE__NODE__NAME", "bench")
        .env("HIE_EDGE__PACS__POLL_INTERVAL_SECS", "0")
        .env("HIE_EDGE__PACS__POLL_LOOKBACK_DAYS", "20000");
    let options = match pacs {
        Pacs::Orthanc => options
            .env("HIE_EDGE__PACS__KIND", "dicomweb")
            .env("HIE_EDGE__PACS__URL", &format!("{}/dicom-web", orthanc.http_url())),
        Pacs::Folder => {
            options.env("HIE_EDGE__PACS__KIND", "folder").env("HIE_EDGE__PACS__PATH", &folder.display().to_string())
        }
    };
    BrokerProc::start_with(options)
}

/// Studies per second Orthanc answers the two requests a manifest costs with, from `threads`
/// clients: the instance-level QIDO-RS with included fields, and one instance's metadata.
fn pacs_ceiling(orthanc: &Orthanc, studies: &[BenchStudy], threads: usize) -> f64 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], orthanc.http_port()));
    let timeout = Duration::from_secs(30);
    let started = Instant::now();
    let chunk = studies.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in studies.chunks(chunk) {
            scope.spawn(move || {
                for study in part {
                    let query = format!(
                        "/dicom-web/studies/{}/instances?includefield=00100010&includefield=00100020\
                         &includefield=00081032&includefield=00080050&limit=1000&offset=0",
                        study.uid
                    );
                    let (series, instance) = &study.first;
                    let metadata =
                        format!("/dicom-web/studies/{}/series/{series}/instances/{instance}/metadata", study.uid);
                    for path in [query, metadata] {
                        let response = hie_testkit::http::get(addr, &path, timeout).expect("Orthanc answers");
                        assert_eq!(response.status, 200, "{path}");
                    }
                }
            });
        }
    });
    studies.len() as f64 / started.elapsed().as_secs_f64()
}

/// One ADT per patient over one MLLP connection, then waits for every identity feed to be done.
fn link_patients(broker: &BrokerProc, studies: &[BenchStudy]) {
    let mut stream = hie_e2e::mllp_connect(broker.mllp, Duration::from_secs(30)).expect("MLLP connect");
    for (index, study) in studies.iter().enumerate() {
        let message = hie_e2e::hl7(&[
            &format!("MSH|^~\\&|BENCH|HOSP|HIE_EDGE|HIE_EDGE|20261201090000||ADT^A04^ADT_A01|BPUB{index}|P|2.5"),
            "EVN|A04|20261201090000",
            &format!(
                "PID|1||{}^^^{LOCAL_AUTHORITY}^MR~{}^^^IHEBLUE&{AFFINITY_DOMAIN_OID}&ISO^PI||Bench^P{index}||19780324|M",
                study.mrn, study.ad_id
            ),
            "PV1|1|O",
        ]);
        std::io::Write::write_all(&mut stream, &hie_e2e::mllp_frame(&message)).expect("send ADT");
        let ack = hie_e2e::mllp_read_frame(&mut stream, Duration::from_secs(30)).expect("ACK");
        assert_eq!(hie_e2e::ack_code(&ack), "AA", "{}", String::from_utf8_lossy(&ack));
    }
    wait(broker, "every identity feed delivered", || {
        let pending = broker.get_json("/api/outbox?state=pending&limit=1000");
        pending.as_array().is_some_and(Vec::is_empty).then_some(())
    });
}

/// `in_flight` studies requested at a time, the next when one is done.
fn closed_loop(broker: &BrokerProc, studies: &[BenchStudy], in_flight: usize) -> Vec<Timing> {
    let mut triggered: HashMap<String, i64> = HashMap::new();
    let mut next = studies.iter();
    let mut open = 0_usize;
    let mut polls = 0_u64;
    let mut done: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        while open < in_flight {
            let Some(study) = next.next() else { break };
            triggered.insert(study.uid.clone(), now_micros());
            let (status, body) = broker.post(&format!("/api/studies/{}/refresh", study.uid));
            assert_eq!(status, 202, "{body}");
            open += 1;
        }
        if done.len() == studies.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed loop: {} of {} done after {RUN_TIMEOUT:?}",
            done.len(),
            studies.len()
        );
        std::thread::sleep(POLL);
        polls += 1;
        let before = done.len();
        // The newest few each time; now and then all of them, so none is missed for good.
        let limit = if polls.is_multiple_of(FULL_SWEEP_EVERY) { studies.len() + 10 } else { 4 * in_flight };
        collect_done(broker, limit, &triggered, &mut done);
        open -= done.len() - before;
    }
    timings(&triggered, &done)
}

/// `hie-edge backfill` requests every study at once and follows them until all are published.
fn burst(broker: &BrokerProc, studies: &[BenchStudy]) -> Vec<Timing> {
    let config = hie_e2e::quickstart_config().display().to_string();
    let start = now_micros();
    let output = broker
        .command(&["backfill", "--config", &config, "--since", "20150101", "--stall-timeout", "60"])
        .output()
        .expect("run backfill");
    let summary = String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_owned();
    assert!(output.status.success(), "backfill: {summary} {}", String::from_utf8_lossy(&output.stderr));
    println!("burst: {summary}");
    let mut done = BTreeMap::new();
    let wanted: HashMap<String, i64> = studies.iter().map(|study| (study.uid.clone(), start)).collect();
    collect_done(broker, studies.len() + 10, &wanted, &mut done);
    // When each request was recorded (the CLI lists the PACS first).
    let listed = broker.get_json(&format!("/api/studies?limit={}", studies.len() + 10));
    let recorded: HashMap<String, i64> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|study| {
            let uid = study["study_instance_uid"].as_str()?.to_owned();
            Some((uid, rfc3339_micros(study["last_change_at"].as_str()?)?))
        })
        .collect();
    let triggered: HashMap<String, i64> = studies
        .iter()
        .map(|study| (study.uid.clone(), recorded.get(&study.uid).copied().unwrap_or(start).max(start)))
        .collect();
    timings(&triggered, &done)
}

/// The latest done submissions of the studies in `wanted`, by study: (created_at, updated_at).
fn collect_done(
    broker: &BrokerProc,
    limit: usize,
    wanted: &HashMap<String, i64>,
    done: &mut BTreeMap<String, (i64, i64)>,
) {
    let rows = broker.get_json(&format!("/api/submissions?state=done&limit={limit}"));
    for row in rows.as_array().into_iter().flatten() {
        let uid = row["study_instance_uid"].as_str().unwrap_or_default().to_owned();
        if !wanted.contains_key(&uid) {
            continue;
        }
        let (Some(created), Some(updated)) = (
            rfc3339_micros(row["created_at"].as_str().unwrap_or_default()),
            rfc3339_micros(row["updated_at"].as_str().unwrap_or_default()),
        ) else {
            continue;
        };
        done.entry(uid).or_insert((created, updated));
    }
}

fn timings(triggered: &HashMap<String, i64>, done: &BTreeMap<String, (i64, i64)>) -> Vec<Timing> {
    done.iter()
        .filter_map(|(uid, (created, updated))| {
            triggered.get(uid).map(|&triggered| Timing { triggered, manifested: *created, done: *updated })
        })
        .collect()
}

/// Every study has exactly one done publication and the registry one DocumentEntry per patient.
fn check_published_once(broker: &BrokerProc, studies: &[BenchStudy]) {
    let rows = broker.get_json(&format!("/api/submissions?limit={}", studies.len() + 10));
    let rows = rows.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), studies.len(), "one submission per study");
    assert!(
        rows.iter().all(|row| row["state"] == "done" && row["attempts"] == 1),
        "every one done at the first attempt"
    );
    let refused: u64 = metric(broker, "hie_outbox_items", "failed");
    assert_eq!(refused, 0, "no failed outbox item");
}

/// A sample of `/metrics` whose name and labels contain `label`.
fn metric(broker: &BrokerProc, name: &str, label: &str) -> u64 {
    let (_, text) = broker.get("/metrics");
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.split_whitespace().last().and_then(|value| value.parse::<f64>().ok()))
        .map(|value| value as u64)
        .sum()
}

struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    manifest_p50_ms: f64,
    publish_p50_ms: f64,
}

impl Figures {
    fn of(run: &[Timing]) -> Figures {
        let first = run.iter().map(|timing| timing.triggered).min().unwrap_or(0);
        let last = run.iter().map(|timing| timing.done).max().unwrap_or(0);
        let span_s = ((last - first).max(1)) as f64 / 1e6;
        let mut total: Vec<i64> = run.iter().map(|timing| timing.done - timing.triggered).collect();
        let mut manifest: Vec<i64> = run.iter().map(|timing| timing.manifested - timing.triggered).collect();
        let mut publish: Vec<i64> = run.iter().map(|timing| timing.done - timing.manifested).collect();
        Figures {
            per_second: run.len() as f64 / span_s,
            p50_ms: percentile(&mut total, 0.50),
            p99_ms: percentile(&mut total, 0.99),
            max_ms: percentile(&mut total, 1.0),
            manifest_p50_ms: percentile(&mut manifest, 0.50),
            publish_p50_ms: percentile(&mut publish, 0.50),
        }
    }
}

/// Nearest-rank percentile of microsecond samples, in milliseconds.
fn percentile(samples: &mut [i64], fraction: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let rank = ((fraction * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1] as f64 / 1e3
}

fn wait(broker: &BrokerProc, what: &str, mut probe: impl FnMut() -> Option<()>) {
    let deadline = Instant::now() + RUN_TIMEOUT;
    while probe().is_none() {
        assert!(
            Instant::now() < deadline,
            "{what}: not after {RUN_TIMEOUT:?}; broker log:\n{}",
            broker.stderr_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros() as i64).unwrap_or(0)
}

/// `2026-12-01T10:08:12.575778Z` as microseconds since the epoch.
fn rfc3339_micros(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date_parts = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date_parts.next()??, date_parts.next()??, date_parts.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock_parts = clock.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock_parts.next()??, clock_parts.next()??, clock_parts.next()??);
    let micros: i64 = format!("{fraction:0<6}")[..6].parse().ok()?;
    // Days from civil (proleptic Gregorian), as in H. Hinnant's algorithm.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000) + micros)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn engine_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_default()
}

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("machine: {cores} cores ({cpu}), load average {}", load_average());
}
