//! B-ADT: ADT messages per second with durable ACKs, over MLLP on loopback, in one run.
//!
//! Measures the release broker (`hie-edge-e2e` built by `cargo bench`) on SQLite and on
//! PostgreSQL at 1, 4 and 16 sender connections, beside two baselines measured next to each
//! broker point on the same machine:
//! - (a) the raw commit ceiling of each database: single-row INSERTs (1.5 KB text), one
//!   transaction each, with the broker's durability settings (SQLite WAL + `synchronous=FULL`,
//!   one writer; PostgreSQL `fsync` and `synchronous_commit` on, at 1, 4 and 16 clients like
//!   pgbench), through the broker's own driver: rusqlite for SQLite (the group-commit writer's
//!   connection, `hie_store::sqlite_native`), sqlx for PostgreSQL. SQLite's ceiling through sqlx
//!   is printed beside it: lower, since sqlx hands every statement to a worker thread, and the
//!   figure earlier rounds were compared with;
//! - (b) `python_mllp_server.py`: python-hl7's asyncio MLLP server that parses, commits to SQLite
//!   (WAL + FULL) and only then ACKs, loaded by the same generator.
//!
//! Each broker point is bracketed: the ceilings it is compared with are measured right before
//! and right after it (then averaged), and the Python point runs right after it. The disk is a
//! shared virtual one whose commit latency was seen to change four-fold within one run, so a
//! ceiling measured a minute earlier is no baseline; the before/after spread printed per point
//! shows how steady the disk was. Load average and CPU/IO pressure (PSI) are printed per point.
//!
//! Prints figures and ratios against the goals of issue 2; asserts nothing about time. It does
//! check every ACK (MSA-1 AA, MSA-2 = MSH-10) and prints what was not, because a bench that gets
//! AE back measures nothing. `ADT_BENCH_SECS` sets the measured seconds per point (default 5,
//! after 1 s of warm-up), `ADT_BENCH_CEILING_SECS` those of each ceiling window (default 2).
//! `ADT_BENCH_ENGINES=sqlite` and `ADT_BENCH_CONNECTIONS=1,16` restrict the points (diagnosis);
//! `HIE_E2E_BROKER_EXE` runs another build of the broker, e.g. to compare before and after (on
//! this machine only alternating runs of two builds compare them). `ADT_BENCH_PID3=local` sends
//! PID-3 with the local MRN only (no affinity-domain ID, so no identity feed is queued): a
//! diagnosis knob that shows what the outbox costs. Results go to `docs/performance.md` by hand.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hie_e2e::{BrokerOptions, BrokerProc, CR, EB, Engine, SB};
use sqlx::Connection;

const CONNECTIONS: [usize; 3] = [1, 4, 16];
const WARMUP: Duration = Duration::from_secs(1);
/// Warm-up of each ceiling window; its length is `ADT_BENCH_CEILING_SECS` (default 2).
const CEILING_WARMUP: Duration = Duration::from_millis(500);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Every patient gets one A04 and then this many A08 updates.
const UPDATES_PER_PATIENT: u64 = 3;
/// Non-AA ACKs kept for printing, per point.
const KEEP_BAD: usize = 5;
/// The payload of the ceiling's INSERT, about the size of one ADT message.
const CEILING_PAYLOAD_BYTES: usize = 1_536;
const AFFINITY_DOMAIN_OID: &str = "1.3.6.1.4.1.21367.13.20.1000";
const LOCAL_AUTHORITY: &str = "HOSP&1.2.840.99999.1.1&ISO";

fn main() {
    hie_e2e::init!();
    let secs = std::env::var("ADT_BENCH_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(5.0).max(0.5);
    let measure = Duration::from_secs_f64(secs);
    let linked = std::env::var("ADT_BENCH_PID3").map(|v| v != "local").unwrap_or(true);
    let started = Instant::now();
    print_machine();
    println!("bench: {} s measured per point after {} s warm-up; connections {CONNECTIONS:?}", secs, WARMUP.as_secs());
    println!("broker executable: {}", hie_e2e::broker_exe().display());
    println!(
        "corpus: A04 then {UPDATES_PER_PATIENT} A08 per patient, v2.5, {} bytes, PID-3 {}",
        adt_message("A04", "x", "p", 0, linked).len(),
        if linked {
            "MRN + affinity-domain ID (each message queues an identity feed)"
        } else {
            "MRN only (ADT_BENCH_PID3=local)"
        }
    );

    let ceiling_secs =
        std::env::var("ADT_BENCH_CEILING_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(2.0).max(0.5);
    let ceiling_window = Duration::from_secs_f64(ceiling_secs);
    println!(
        "ceilings: {ceiling_secs} s after {} ms warm-up, measured right before and after each broker point",
        CEILING_WARMUP.as_millis()
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let ceiling_dir = tempfile::Builder::new().prefix("hie-bench-ceiling-").tempdir().expect("temp dir");
    let mut ceilings = rt.block_on(Ceilings::open(&ceiling_dir.path().join("ceiling.db")));
    let py = PythonServer::start();

    let engines: Vec<Engine> = match std::env::var("ADT_BENCH_ENGINES") {
        Ok(list) => list
            .split(',')
            .filter_map(|name| match name.trim() {
                "sqlite" => Some(Engine::Sqlite),
                "postgres" => Some(Engine::Postgres),
                _ => None,
            })
            .collect(),
        Err(_) => vec![Engine::Sqlite, Engine::Postgres],
    };
    let connections: Vec<usize> = match std::env::var("ADT_BENCH_CONNECTIONS") {
        Ok(list) => list.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => CONNECTIONS.to_vec(),
    };
    let mut points = Vec::new();
    for engine in engines {
        let name = engine_name(engine);
        let broker = BrokerProc::start_with(
            BrokerOptions::new(engine)
                .env("HIE_EDGE__TELEMETRY__LOG_LEVEL", "warn")
                .env("HIE_EDGE__NODE__NAME", "bench"),
        );
        println!("broker {name} pid={}", broker.pid());
        for &n in &connections {
            let before = rt.block_on(ceilings.measure(engine, n, ceiling_window));
            let pressure_before = Pressure::now();
            let counters_before = adt_commit_counters(&broker);
            let r = run_load(broker.mllp, n, &format!("{name}{n}"), measure, linked);
            let counters_after = adt_commit_counters(&broker);
            let pressure = Pressure::now().since(&pressure_before);
            let batch = match (counters_before, counters_after) {
                (Some((c0, m0)), Some((c1, m1))) if c1 > c0 => (m1 - m0) / (c1 - c0),
                _ => f64::NAN,
            };
            r.print(&format!("broker {name}"));
            println!("figure broker {name} connections={n} mean_group_commit_batch={batch:.2} {pressure}");
            let python = run_load(py.addr, n, &format!("py{name}{n}"), measure, linked);
            python.print("python-hl7");
            let after = rt.block_on(ceilings.measure(engine, n, ceiling_window));
            let ceiling = Bracket::of(before, after);
            println!(
                "figure ceiling {name} clients=1 before={:.0} after={:.0}; clients={n} before={:.0} after={:.0} commits_per_s",
                ceiling.one.0, ceiling.one.1, ceiling.same.0, ceiling.same.1
            );
            points.push(Point { engine, broker: r, python, ceiling, load: loadavg(), pressure });
        }
        let warnings: Vec<String> = broker.stderr_log().lines().map(str::to_owned).collect();
        if !warnings.is_empty() {
            println!("broker {name} logged {} line(s) at warn or above; last 5:", warnings.len());
            for l in warnings.iter().rev().take(5).rev() {
                println!("  {l}");
            }
        }
    }
    drop(py);
    rt.block_on(ceilings.close());

    print_table(&points);
    println!("bench wall time: {:.0} s; load average now: {}", started.elapsed().as_secs_f64(), loadavg());
}

/// One broker point with the baselines measured around it.
struct Point {
    engine: Engine,
    broker: LoadResult,
    python: LoadResult,
    ceiling: Bracket,
    load: String,
    pressure: Pressure,
}

/// Ceilings before and after a point: at 1 writer/client, and at the point's client count
/// (PostgreSQL; SQLite has one writer whatever the senders).
#[derive(Clone, Copy)]
struct Bracket {
    one: (f64, f64),
    same: (f64, f64),
}

impl Bracket {
    fn of(before: (f64, f64), after: (f64, f64)) -> Bracket {
        Bracket { one: (before.0, after.0), same: (before.1, after.1) }
    }

    fn one(&self) -> f64 {
        (self.one.0 + self.one.1) / 2.0
    }

    fn same(&self) -> f64 {
        (self.same.0 + self.same.1) / 2.0
    }
}

/// Pressure stall information (`/proc/pressure/{cpu,io}`): the share of wall time some task
/// waited for a CPU or for I/O, over the point. Shows how busy the shared machine was.
#[derive(Clone, Copy, Default)]
struct Pressure {
    cpu_us: u64,
    io_us: u64,
    at: Option<Instant>,
    cpu_share: f64,
    io_share: f64,
}

impl Pressure {
    fn now() -> Pressure {
        let total = |resource: &str| -> u64 {
            std::fs::read_to_string(format!("/proc/pressure/{resource}"))
                .ok()
                .and_then(|text| {
                    text.lines().find(|l| l.starts_with("some")).and_then(|l| {
                        l.split_whitespace().find_map(|f| f.strip_prefix("total=")).and_then(|v| v.parse().ok())
                    })
                })
                .unwrap_or(0)
        };
        Pressure { cpu_us: total("cpu"), io_us: total("io"), at: Some(Instant::now()), ..Pressure::default() }
    }

    fn since(&self, earlier: &Pressure) -> Pressure {
        let wall_us = match (self.at, earlier.at) {
            (Some(now), Some(then)) => now.duration_since(then).as_micros() as f64,
            _ => f64::NAN,
        };
        Pressure {
            cpu_share: self.cpu_us.saturating_sub(earlier.cpu_us) as f64 / wall_us,
            io_share: self.io_us.saturating_sub(earlier.io_us) as f64 / wall_us,
            ..*self
        }
    }
}

impl std::fmt::Display for Pressure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "psi_cpu_some={:.0}% psi_io_some={:.0}%", self.cpu_share * 100.0, self.io_share * 100.0)
    }
}

fn engine_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    }
}

fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned());
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("machine: nproc={nproc} cpu=\"{model}\" kernel={} loadavg=\"{}\"", kernel.trim(), loadavg());
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Load generator: blocking std::net, one thread per connection, one message in flight each.

/// What one load point measured.
struct LoadResult {
    connections: usize,
    /// ACKs received inside the measured window.
    acked: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// ACKs that were not AA for the message sent (whole run, warm-up included).
    non_aa: u64,
    total: u64,
    bad_samples: Vec<String>,
    io_errors: Vec<String>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.acked as f64 / self.secs
    }

    fn print(&self, what: &str) {
        println!(
            "figure {what} connections={} msgs_per_s={:.0} ack_p50_us={} ack_p99_us={} ack_max_us={} acked={} non_aa={}/{} loadavg=\"{}\"",
            self.connections,
            self.rate(),
            self.p50_us,
            self.p99_us,
            self.max_us,
            self.acked,
            self.non_aa,
            self.total,
            loadavg()
        );
        for b in &self.bad_samples {
            println!("  non-AA: {b}");
        }
        for e in &self.io_errors {
            println!("  connection error: {e}");
        }
    }
}

#[derive(Default)]
struct ThreadResult {
    latencies_us: Vec<u32>,
    non_aa: u64,
    total: u64,
    bad_samples: Vec<String>,
    io_error: Option<String>,
}

fn run_load(addr: SocketAddr, connections: usize, run_tag: &str, measure: Duration, linked: bool) -> LoadResult {
    let barrier = Arc::new(Barrier::new(connections + 1));
    let mut handles = Vec::with_capacity(connections);
    for conn in 0..connections {
        let barrier = Arc::clone(&barrier);
        let tag = format!("{run_tag}c{conn}");
        handles.push(std::thread::spawn(move || sender(addr, &tag, &barrier, measure, linked)));
    }
    barrier.wait();
    let mut all = ThreadResult::default();
    let mut io_errors = Vec::new();
    for h in handles {
        let r = h.join().expect("sender thread panicked");
        all.latencies_us.extend(r.latencies_us);
        all.non_aa += r.non_aa;
        all.total += r.total;
        all.bad_samples.extend(r.bad_samples.into_iter().take(KEEP_BAD.saturating_sub(all.bad_samples.len())));
        io_errors.extend(r.io_error);
    }
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.latencies_us.is_empty() {
            return 0;
        }
        let i = ((all.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, all.latencies_us.len()) - 1;
        u64::from(all.latencies_us[i])
    };
    LoadResult {
        connections,
        acked: all.latencies_us.len() as u64,
        secs: measure.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: all.latencies_us.last().copied().map(u64::from).unwrap_or(0),
        non_aa: all.non_aa,
        total: all.total,
        bad_samples: all.bad_samples,
        io_errors,
    }
}

/// One connection: A04 for a new patient, then A08 updates, serially, until the window ends.
/// Only ACKs that arrive inside the measured window count towards rate and latency.
fn sender(addr: SocketAddr, tag: &str, barrier: &Barrier, measure: Duration, linked: bool) -> ThreadResult {
    let mut out = ThreadResult::default();
    let connected = hie_e2e::mllp_connect(addr, IO_TIMEOUT).and_then(|s| {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(s)
    });
    // Everyone passes the barrier, connected or not, so the coordinator never hangs.
    barrier.wait();
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => {
            out.io_error = Some(format!("connect: {e}"));
            return out;
        }
    };
    let start = Instant::now();
    let window_start = start + WARMUP;
    let window_end = window_start + measure;
    let mut reader = FrameReader::default();
    let mut seq: u64 = 0;
    while Instant::now() < window_end {
        let patient = seq / (UPDATES_PER_PATIENT + 1);
        let event = if seq.is_multiple_of(UPDATES_PER_PATIENT + 1) { "A04" } else { "A08" };
        let control_id = format!("{tag}m{seq}");
        let msg = adt_message(event, &control_id, &format!("{tag}p{patient}"), seq, linked);
        let frame = hie_e2e::mllp_frame(&msg);
        let sent_at = Instant::now();
        let ack = stream.write_all(&frame).and_then(|()| reader.read_frame(&mut stream));
        let done = Instant::now();
        let ack = match ack {
            Ok(a) => a,
            Err(e) => {
                out.io_error = Some(format!("message {control_id}: {e}"));
                return out;
            }
        };
        out.total += 1;
        let code = hie_e2e::ack_code(&ack);
        let msa2 = hie_e2e::field(&ack, "MSA", 2).unwrap_or_default();
        if code != "AA" || msa2 != control_id {
            out.non_aa += 1;
            if out.bad_samples.len() < KEEP_BAD {
                let text = String::from_utf8_lossy(&ack).replace('\r', " | ");
                out.bad_samples.push(format!("{control_id} ({event}): {text}"));
            }
        }
        if done >= window_start && done < window_end {
            let us = done.duration_since(sent_at).as_micros();
            out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
        seq += 1;
    }
    out
}

/// Reads MLLP frames with a buffer (the harness reads a byte per syscall, which would make the
/// load generator, not the server, the bottleneck on 2 cores).
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    fn read_frame(&mut self, stream: &mut TcpStream) -> io::Result<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == [EB, CR]) {
                let frame: Vec<u8> = self.buf.drain(..end + 2).collect();
                let start = frame.iter().position(|&b| b == SB).map(|i| i + 1).unwrap_or(0);
                return Ok(frame[start..end].to_vec());
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A realistic ADT v2.5 message of about 1.3-1.5 KB: MRN in the local authority plus the
/// affinity domain's patient ID (so every A04 links and queues an identity feed), next of kin,
/// visit, allergy, diagnosis and insurance. A08s change the address and phone.
fn adt_message(event: &str, control_id: &str, patient: &str, seq: u64, linked: bool) -> Vec<u8> {
    // A04 and A08 share the ADT_A01 structure in v2.5.
    let structure = "ADT_A01";
    let house = 1 + seq % 997;
    let affinity_id = if linked { format!("~AD{patient}^^^&{AFFINITY_DOMAIN_OID}&ISO^PI") } else { String::new() };
    let phone = 5_550_000 + seq % 10_000;
    let segs = [
        format!(
            "MSH|^~\\&|ADT1|HOSP|HIE-EDGE|HIE|20250314083000||ADT^{event}^{structure}|{control_id}|P|2.5|||||DEU|UNICODE UTF-8"
        ),
        format!("EVN|{event}|20250314083000|||OP1234^Operator^Olga^^^^^^HOSP"),
        format!(
            "PID|1||MRN{patient}^^^{LOCAL_AUTHORITY}^MR{affinity_id}||\
             Beispiel-Mustermann^Johanna^Maria^^Dr.^^L~Mustermann^Johanna^^^^^B||19700101|F|||\
             {house} Hauptstrasse^Wohnung 4^Musterstadt^BY^80331^DEU^H~Postfach 12^^Musterstadt^BY^80300^DEU^M||\
             ^PRN^PH^^49^89^{phone}~^NET^Internet^johanna.beispiel@example.org|^WPN^PH^^49^89^7654321|ger|M|CAT|\
             VN{patient}^^^{LOCAL_AUTHORITY}^VN|||N||||||N"
        ),
        "PD1|||Praxis Dr. Huber^^12345|1122334^Huber^Thomas^^^Dr.^^^HOSP".to_owned(),
        format!(
            "NK1|1|Mustermann^Karl^^^^^L|SPO^Spouse^HL70063|{house} Hauptstrasse^^Musterstadt^BY^80331^DEU^H|\
             ^PRN^PH^^49^89^{phone}||EC^Emergency Contact^HL70131"
        ),
        "PV1|1|O|AMB^R12^B1^HOSP^^^^^Ambulanz Innere|R|||1122334^Huber^Thomas^^^Dr.^^^HOSP|||MED||||1|||\
         1122334^Huber^Thomas^^^Dr.^^^HOSP|OP|V0000123^^^HOSP^VN|||||||||||||||||||||||||20250314080000"
            .to_owned(),
        "PV2|||R51^Headache^I10||||||20250314|1|||||||||||||N".to_owned(),
        "AL1|1|DA|70618^Penicillin^RXNORM|MO|Rash|20100101".to_owned(),
        "DG1|1||R51^Headache^I10|Headache|20250314080000|A".to_owned(),
        "IN1|1|GKV^Gesetzliche Krankenversicherung|108310400^^^&1.2.276.0.76.4.5&ISO^NIIP|AOK Bayern|\
         Carl-Wery-Strasse 28^^Muenchen^BY^81739^DEU||^WPN^PH^^49^89^6273000|||||20240101|20251231|||\
         Mustermann^Johanna|SEL^Self|19700101|Hauptstrasse^^Musterstadt^BY^80331^DEU"
            .to_owned(),
    ];
    let mut s = segs.join("\r");
    s.push('\r');
    s.into_bytes()
}

/// (commits, committed messages) from the broker's `/metrics`.
fn adt_commit_counters(broker: &BrokerProc) -> Option<(f64, f64)> {
    let (status, body) = hie_e2e::http_get(broker.api_addr, "/metrics", Duration::from_secs(10)).ok()?;
    if status != 200 {
        return None;
    }
    let value = |name: &str| -> Option<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
    };
    Some((value("hie_adt_commits_total")?, value("hie_adt_committed_messages_total")?))
}

// ---------------------------------------------------------------------------------------------
// (a) Raw commit ceilings, through the broker's drivers.

fn ceiling_payload() -> String {
    "x".repeat(CEILING_PAYLOAD_BYTES)
}

/// A ceiling's window: [`CEILING_WARMUP`] from its creation, then `window`, counting the
/// operations that end inside it.
#[derive(Clone)]
struct Tally {
    counting_from: Instant,
    until: Instant,
    window: Duration,
    counted: u64,
}

impl Tally {
    fn new(window: Duration) -> Tally {
        let start = Instant::now();
        Tally { counting_from: start + CEILING_WARMUP, until: start + CEILING_WARMUP + window, window, counted: 0 }
    }

    /// Notes one finished operation; `false` once the window is over.
    fn tick(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.until {
            return false;
        }
        if now >= self.counting_from {
            self.counted += 1;
        }
        true
    }

    /// Operations per second over the window.
    fn rate(&self) -> f64 {
        self.counted as f64 / self.window.as_secs_f64()
    }
}

/// The ceiling databases, kept open for the whole run: a SQLite file with the broker's pragmas
/// and a fresh PostgreSQL database.
struct Ceilings {
    sqlite: sqlx::sqlite::SqliteConnection,
    sqlite_native: rusqlite::Connection,
    pg_url: String,
}

impl Ceilings {
    async fn open(path: &Path) -> Ceilings {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .expect("sqlite url")
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let mut sqlite = SqliteConnection::connect_with(&options).await.expect("open ceiling sqlite");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
            .execute(&mut sqlite)
            .await
            .expect("create table");
        let sqlite_native = rusqlite::Connection::open(path).expect("open ceiling sqlite (rusqlite)");
        sqlite_native.pragma_update(None, "synchronous", "FULL").expect("synchronous=FULL");
        let pg_url = hie_e2e::fresh_pg_database();
        let mut setup = sqlx::PgConnection::connect(&pg_url).await.expect("connect ceiling postgres");
        sqlx::query("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)")
            .execute(&mut setup)
            .await
            .expect("create table");
        for setting in ["fsync", "synchronous_commit"] {
            let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                .fetch_one(&mut setup)
                .await
                .expect("show");
            println!("postgres {setting}={v}");
        }
        Ceilings { sqlite, sqlite_native, pg_url }
    }

    /// (1-writer ceiling, ceiling at `clients`) for `engine`, commits/s.
    async fn measure(&mut self, engine: Engine, clients: usize, window: Duration) -> (f64, f64) {
        match engine {
            Engine::Sqlite => {
                let rate = self.sqlite_native(window);
                let via_sqlx = self.sqlite(window).await;
                println!("figure ceiling sqlite driver=sqlx commits_per_s={via_sqlx:.0}");
                (rate, rate)
            }
            Engine::Postgres => {
                let one = self.postgres(1, window).await;
                let same = if clients == 1 { one } else { self.postgres(clients, window).await };
                (one, same)
            }
        }
    }

    /// Single-row INSERTs, one transaction each, one writer (SQLite has no other kind).
    async fn sqlite(&mut self, window: Duration) -> f64 {
        let payload = ceiling_payload();
        let mut tally = Tally::new(window);
        loop {
            // One statement outside BEGIN is one transaction: one WAL fsync per row.
            sqlx::query("INSERT INTO t (payload) VALUES ($1)")
                .bind(&payload)
                .execute(&mut self.sqlite)
                .await
                .expect("insert");
            if !tally.tick() {
                return tally.rate();
            }
        }
    }

    /// [`Ceilings::sqlite`] through rusqlite, the group-commit writer's driver: on this thread,
    /// with no hand-off.
    fn sqlite_native(&mut self, window: Duration) -> f64 {
        let payload = ceiling_payload();
        let mut tally = Tally::new(window);
        loop {
            self.sqlite_native
                .prepare_cached("INSERT INTO t (payload) VALUES ($1)")
                .and_then(|mut insert| insert.execute([&payload]))
                .expect("insert");
            if !tally.tick() {
                return tally.rate();
            }
        }
    }

    /// Single-row INSERTs from `clients` connections at once (like pgbench).
    async fn postgres(&self, clients: usize, window: Duration) -> f64 {
        // One window for all clients, started before they connect (inside the warm-up).
        let tally = Tally::new(window);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let url = self.pg_url.clone();
            let mut tally = tally.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                let payload = ceiling_payload();
                loop {
                    sqlx::query("INSERT INTO t (payload) VALUES ($1)")
                        .bind(&payload)
                        .execute(&mut conn)
                        .await
                        .expect("insert");
                    if !tally.tick() {
                        return tally.counted;
                    }
                }
            }));
        }
        let mut total = 0u64;
        for t in tasks {
            total += t.await.expect("ceiling task");
        }
        total as f64 / window.as_secs_f64()
    }

    async fn close(self) {
        drop(self.sqlite);
        drop(self.sqlite_native);
        drop_pg_database(&self.pg_url).await;
    }
}

async fn drop_pg_database(url: &str) {
    let Some(name) = url.rsplit('/').next() else { return };
    if let Ok(mut admin) = sqlx::PgConnection::connect(&hie_e2e::pg_admin_url()).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        // Best effort: a leftover database only costs disk space.
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
    }
}

// ---------------------------------------------------------------------------------------------
// (b) The Python server.

struct PythonServer {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PythonServer {
    fn start() -> PythonServer {
        let dir = tempfile::Builder::new().prefix("hie-bench-py-").tempdir().expect("temp dir");
        let addr = hie_e2e::free_addr();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_mllp_server.py");
        let mut child = Command::new(hie_e2e::python())
            .arg(&script)
            .arg(addr.port().to_string())
            .arg(dir.path().join("python.db"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("python stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read python server stdout");
        assert!(line.starts_with("READY"), "python MLLP server did not start: {line:?}");
        PythonServer { addr, child, _dir: dir }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The summary.

fn print_table(points: &[Point]) {
    println!();
    println!(
        "{:<9} {:>5} {:>10} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7} {:>13} {:>13} {:>14} {:>9}",
        "engine",
        "conns",
        "msgs/s",
        "p50 us",
        "p99 us",
        "vs (a)1",
        "vs (a)N",
        "vs py(b)",
        "py msgs/s",
        "non-AA",
        "(a)1 bef/aft",
        "(a)N bef/aft",
        "load avg",
        "psi cpu/io"
    );
    for point in points {
        let r = &point.broker;
        let c = &point.ceiling;
        println!(
            "{:<9} {:>5} {:>10.0} {:>9} {:>9} {:>9.2}x {:>9.2}x {:>9.1}x {:>10.0} {:>7} {:>6.0}/{:<6.0} {:>6.0}/{:<6.0} {:>14} {:>4.0}/{:<3.0}%",
            engine_name(point.engine),
            r.connections,
            r.rate(),
            r.p50_us,
            r.p99_us,
            r.rate() / c.one(),
            r.rate() / c.same(),
            r.rate() / point.python.rate(),
            point.python.rate(),
            r.non_aa,
            c.one.0,
            c.one.1,
            c.same.0,
            c.same.1,
            point.load,
            point.pressure.cpu_share * 100.0,
            point.pressure.io_share * 100.0
        );
    }
    for point in points {
        let p = &point.python;
        println!(
            "{:<9} {:>5} {:>10.0} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7}   (next to broker {})",
            "python-b",
            p.connections,
            p.rate(),
            p.p50_us,
            p.p99_us,
            "",
            "",
            "",
            "",
            p.non_aa,
            engine_name(point.engine)
        );
    }
    println!(
        "goals (issue 2): vs (a)1 >= 0.8x at 1 connection; >= 2x at 16 connections (group commit); vs py(b) >= 10x; \
         (a)1 = the engine's 1-writer commit ceiling, (a)N = PostgreSQL's ceiling at the same client count, \
         each the mean of the measurements right before and after the point"
    );
    for point in points {
        let r = &point.broker;
        let ceiling_1 = point.ceiling.one();
        let py = point.python.rate();
        let mut verdicts = Vec::new();
        match r.connections {
            1 => verdicts.push(verdict("vs ceiling >= 0.8x", r.rate() / ceiling_1 >= 0.8)),
            16 => verdicts.push(verdict("vs ceiling >= 2x", r.rate() / ceiling_1 >= 2.0)),
            _ => {}
        }
        verdicts.push(verdict("vs python >= 10x", r.rate() / py >= 10.0));
        verdicts.push(verdict("all AA", r.non_aa == 0 && r.io_errors.is_empty()));
        println!("ratio broker {} connections={}: {}", engine_name(point.engine), r.connections, verdicts.join(", "));
    }
}

fn verdict(what: &str, met: bool) -> String {
    format!("{what} {}", if met { "met" } else { "MISSED" })
}
