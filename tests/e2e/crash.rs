//! Crash safety (reliability-security R2): four MLLP senders feed ADT for 20 patients while a killer
//! thread SIGKILLs the broker at random intervals and restarts it on the same store and ports. Each
//! sender waits for the AA of a message before sending the next one and resends the same message
//! (same MSH-10) after any error, timeout or reset, until it gets an AA. Afterwards
//! `/api/patients` must show, per patient, every message exactly once, in send order: 0 ACKed
//! messages lost, 0 applied twice, per-patient order kept. Runs on SQLite and PostgreSQL.
//!
//! Timing is printed, never asserted. Sleeps only pace the senders and space the kills; what must
//! hold (the minimum number of kills while senders run) is enforced by a condition variable.
//!
//! `HIE_E2E_CRASH_SEED` replays a run's random choices (kill intervals, pacing, interleaving);
//! `HIE_E2E_CRASH_ROUNDS` (messages per patient, default 25) and `HIE_E2E_CRASH_MIN_KILLS` (default
//! 8) scale it up for the Long tier.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hie_e2e::{BrokerProc, Engine, ack_code, field, hl7, mllp_connect, mllp_frame, mllp_read_frame};

use crate::broker;

const SENDERS: usize = 4;
const PATIENTS_PER_SENDER: usize = 5;
/// Messages per patient (one A04, then A08s): 4 x 5 x 25 = 500 messages.
const DEFAULT_ROUNDS: usize = 25;
const DEFAULT_MIN_KILLS: u32 = 8;
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before reconnecting while the broker is down.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// Mean pause between two messages of one sender: spreads the ~500 messages over enough kill
/// cycles that kills land while messages are in flight (R2 paces 500 messages over 15+ kills).
const MEAN_PACE: Duration = Duration::from_millis(100);
/// Kill intervals, U(KILL_MIN, KILL_MAX).
const KILL_MIN: Duration = Duration::from_millis(300);
const KILL_MAX: Duration = Duration::from_millis(1200);
/// How long an aimed kill waits for a message in flight, and the jitter after it shows up.
const AIM_WAIT: Duration = Duration::from_secs(1);
const AIM_JITTER: Duration = Duration::from_millis(3);
/// A message that cannot get an AA in this long means the broker is not coming back.
const MESSAGE_DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn crash_safety_sqlite() {
    crash_safety(Engine::Sqlite);
}

#[test]
fn crash_safety_postgres() {
    crash_safety(Engine::Postgres);
}

/// splitmix64: small, seedable, good enough to pick intervals and interleavings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi].
    fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_micros() as u64;
        lo + Duration::from_micros(self.next() % (span + 1))
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0)
}

/// One message a sender must get acknowledged.
#[derive(Debug, Clone)]
struct Planned {
    control_id: String,
    /// 1-based patient number: PID-3 is `P<n>^^^HOSP`.
    patient: usize,
    /// The sequence number carried in PID-5 (`Seq0000` for the A04).
    seq: usize,
    payload: Vec<u8>,
}

/// What happened to one message, as the sender saw it.
#[derive(Debug, Clone)]
struct Sent {
    control_id: String,
    patient: usize,
    seq: usize,
    /// Times the message was sent (1 = no resend).
    attempts: u32,
    /// Attempts that got no ACK (write failed, reset, EOF or timeout): the broker may or may not
    /// have committed them.
    unanswered: u32,
    /// Attempts answered with something other than AA (AE while the store was unavailable).
    nacks: u32,
    /// Whether the AA came from the broker's record of an earlier attempt (a repeat) rather than a
    /// fresh apply; `None` if that cannot be told from the ACK.
    repeat: Option<bool>,
}

#[derive(Debug, Default)]
struct ControlState {
    kills: u32,
    /// Set by the test once every sender is done: the killer stops (after a restart).
    stop: bool,
    /// Set if the killer panicked (e.g. the broker did not come back): senders give up.
    killer_dead: bool,
    /// Senders with a message written and its ACK not yet read.
    in_flight: u32,
}

/// Shared between the killer and the senders.
#[derive(Default)]
struct Control {
    state: Mutex<ControlState>,
    changed: Condvar,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn killer_dead(&self) -> bool {
        self.lock().killer_dead
    }

    fn set_in_flight(&self, up: bool) {
        let mut st = self.lock();
        if up {
            st.in_flight += 1;
        } else {
            st.in_flight -= 1;
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Blocks until at least `kills` kills have happened (so a fast run still sees the minimum
    /// number of kills while its senders are busy).
    fn wait_for_kills(&self, kills: u32) {
        let mut st = self.lock();
        while st.kills < kills && !st.killer_dead {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        assert!(!st.killer_dead, "the killer thread died (see its panic above)");
    }
}

/// Marks the killer dead if it unwinds, so the senders stop waiting for a broker that will not
/// come back.
struct KillerGuard<'a>(&'a Control);

impl Drop for KillerGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().killer_dead = true;
            self.0.changed.notify_all();
        }
    }
}

/// The per-sender message plan: every patient's A04 first, then rounds of A08 with the patients in
/// a random order per round; per patient, the order is the sequence number.
fn plan(sender: usize, rounds: usize, rng: &mut Rng) -> Vec<Planned> {
    let app = format!("CRASH-S{sender}");
    let facility = format!("FAC{sender}");
    let mut out = Vec::with_capacity(rounds * PATIENTS_PER_SENDER);
    for seq in 0..rounds {
        let mut patients: Vec<usize> = (0..PATIENTS_PER_SENDER).map(|k| sender * PATIENTS_PER_SENDER + k + 1).collect();
        rng.shuffle(&mut patients);
        for patient in patients {
            let control_id = format!("S{sender}-{:04}", out.len());
            let event = if seq == 0 { "A04" } else { "A08" };
            let msh = format!(
                "MSH|^~\\&|{app}|{facility}|HIE-EDGE|HIE|20250101120000||ADT^{event}^ADT_A01|{control_id}|P|2.5"
            );
            let evn = format!("EVN|{event}|20250101120000");
            let pid = format!("PID|1||P{patient}^^^HOSP||Seq{seq:04}^JANE||19700101|F");
            let payload = hl7(&[&msh, &evn, &pid, "PV1|1|O"]);
            out.push(Planned { control_id, patient, seq, payload });
        }
    }
    out
}

/// The microsecond time in the broker's ACK MSH-10 (`ACK<hex micros>.<n>`): a repeat is answered
/// with the ACK recorded when the message was first applied, so its time precedes the resend.
fn ack_time_micros(ack: &[u8]) -> Option<u128> {
    let id = field(ack, "MSH", 10)?;
    let hex = id.strip_prefix("ACK")?.split('.').next()?;
    u128::from_str_radix(hex, 16).ok()
}

fn sender_run(mllp: SocketAddr, plan: Vec<Planned>, mut rng: Rng, control: &Control, min_kills: u32) -> Vec<Sent> {
    let total = plan.len();
    let mut conn: Option<TcpStream> = None;
    let mut sent = Vec::with_capacity(total);
    for (i, msg) in plan.into_iter().enumerate() {
        // Message i waits for kill floor(i * (K+1) / N): the last stretch is sent after kill K.
        control.wait_for_kills((i * (min_kills as usize + 1) / total) as u32);
        if i > 0 {
            std::thread::sleep(rng.duration(Duration::ZERO, MEAN_PACE * 2));
        }
        let frame = mllp_frame(&msg.payload);
        let deadline = Instant::now() + MESSAGE_DEADLINE;
        let mut rec = Sent {
            control_id: msg.control_id.clone(),
            patient: msg.patient,
            seq: msg.seq,
            attempts: 0,
            unanswered: 0,
            nacks: 0,
            repeat: None,
        };
        loop {
            assert!(!control.killer_dead(), "the killer thread died (see its panic above)");
            assert!(
                Instant::now() < deadline,
                "{}: no AA within {MESSAGE_DEADLINE:?} ({} attempts)",
                msg.control_id,
                rec.attempts
            );
            let stream = match conn.as_mut() {
                Some(s) => s,
                None => match mllp_connect(mllp, CONNECT_TIMEOUT) {
                    Ok(s) => conn.insert(s),
                    Err(_) => {
                        // The broker is down (between a kill and its restart): try again.
                        std::thread::sleep(RECONNECT_PAUSE);
                        continue;
                    }
                },
            };
            rec.attempts += 1;
            let attempt_start = now_micros();
            control.set_in_flight(true);
            let answer = stream.write_all(&frame).and_then(|()| mllp_read_frame(stream, ACK_TIMEOUT));
            control.set_in_flight(false);
            match answer {
                Ok(ack) => {
                    let msa2 = field(&ack, "MSA", 2).unwrap_or_default();
                    assert_eq!(
                        msa2,
                        msg.control_id,
                        "ACK for another message on a serial connection: {}",
                        String::from_utf8_lossy(&ack)
                    );
                    match ack_code(&ack).as_str() {
                        "AA" => {
                            rec.repeat = ack_time_micros(&ack).map(|t| t < attempt_start);
                            break;
                        }
                        // Not stored (e.g. the store was unavailable): the broker asks for a resend.
                        "AE" => {
                            rec.nacks += 1;
                            std::thread::sleep(RECONNECT_PAUSE);
                        }
                        other => panic!(
                            "{}: unexpected ACK {other} (attempt {}): {}",
                            msg.control_id,
                            rec.attempts,
                            String::from_utf8_lossy(&ack)
                        ),
                    }
                }
                Err(_) => {
                    // Reset, EOF or timeout: committed or not, we cannot tell; resend on a new
                    // connection (a late ACK on the old one must not be taken for the resend's).
                    rec.unanswered += 1;
                    conn = None;
                }
            }
        }
        sent.push(rec);
    }
    sent
}

struct KillerReport {
    kills: u32,
    /// Kills that struck while some sender was waiting for an ACK.
    in_flight_kills: u32,
    restart_times: Vec<Duration>,
}

fn killer_run(broker: &mut BrokerProc, control: &Control, mut rng: Rng) -> KillerReport {
    let _guard = KillerGuard(control);
    let mut restart_times = Vec::new();
    let mut kills = 0;
    let mut in_flight_kills = 0;
    loop {
        let interval = rng.duration(KILL_MIN, KILL_MAX);
        {
            let st = control.lock();
            let (st, _) =
                control.changed.wait_timeout_while(st, interval, |s| !s.stop).unwrap_or_else(|p| p.into_inner());
            if st.stop {
                break;
            }
            // The paced senders are idle most of the time; most kills are aimed at a message in
            // flight (written, ACK not yet read), somewhere in its receive/commit/ACK path.
            if !rng.next().is_multiple_of(4) {
                let (st, _) = control
                    .changed
                    .wait_timeout_while(st, AIM_WAIT, |s| s.in_flight == 0 && !s.stop)
                    .unwrap_or_else(|p| p.into_inner());
                if st.stop {
                    break;
                }
                drop(st);
                std::thread::sleep(rng.duration(Duration::ZERO, AIM_JITTER));
            }
        }
        if control.lock().in_flight > 0 {
            in_flight_kills += 1;
        }
        broker.kill9();
        kills += 1;
        {
            control.lock().kills = kills;
            control.changed.notify_all();
        }
        // Always restarted, so the broker is up when the killer stops.
        let t = Instant::now();
        broker.restart();
        restart_times.push(t.elapsed());
    }
    KillerReport { kills, in_flight_kills, restart_times }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

/// The value of a Prometheus sample line starting with `name_and_labels`.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l[name_and_labels.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn crash_safety(engine: Engine) {
    let seed: u64 = env_or("HIE_E2E_CRASH_SEED", now_micros() as u64);
    let rounds: usize = env_or("HIE_E2E_CRASH_ROUNDS", DEFAULT_ROUNDS).max(2);
    let min_kills: u32 = env_or("HIE_E2E_CRASH_MIN_KILLS", DEFAULT_MIN_KILLS);
    eprintln!("crash_safety {engine:?}: seed {seed} (replay with HIE_E2E_CRASH_SEED={seed})");
    let mut seeds = Rng(seed);
    let plans: Vec<Vec<Planned>> = (0..SENDERS).map(|s| plan(s, rounds, &mut Rng(seeds.next()))).collect();
    let sender_rngs: Vec<Rng> = (0..SENDERS).map(|_| Rng(seeds.next())).collect();
    let killer_rng = Rng(seeds.next());

    let mut b = broker(engine);
    let mllp = b.mllp;
    let control = Control::default();
    let started = Instant::now();
    let (sent, killer) = std::thread::scope(|scope| {
        let senders: Vec<_> = plans
            .into_iter()
            .zip(sender_rngs)
            .map(|(plan, rng)| {
                let control = &control;
                scope.spawn(move || sender_run(mllp, plan, rng, control, min_kills))
            })
            .collect();
        let killer = {
            let (control, b) = (&control, &mut b);
            scope.spawn(move || killer_run(b, control, killer_rng))
        };
        let results: Vec<_> = senders.into_iter().map(|h| h.join()).collect();
        control.lock().stop = true;
        control.changed.notify_all();
        let killer = killer.join();
        let sent: Vec<Sent> =
            results.into_iter().flat_map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e))).collect();
        (sent, killer.unwrap_or_else(|e| std::panic::resume_unwind(e)))
    });
    let elapsed = started.elapsed();
    assert!(b.healthy(), "broker not healthy after the last restart; stderr tail:\n{}", b.stderr_tail(40));

    // Expected per patient: control ids in send order (one sender per patient).
    let mut expected: BTreeMap<usize, Vec<&Sent>> = BTreeMap::new();
    for s in &sent {
        expected.entry(s.patient).or_default().push(s);
    }
    let mut problems = Vec::new();
    for (&patient, msgs) in &expected {
        let cx = format!("P{patient}^^^HOSP");
        let found = b.patients(&cx);
        if found.len() != 1 {
            problems.push(format!("{cx}: {} patients found, want 1", found.len()));
            continue;
        }
        let p = &found[0];
        let history: Vec<String> = p["history"]
            .as_array()
            .map(|h| h.iter().map(|e| e["message_control_id"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &history {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        for m in msgs {
            match counts.get(m.control_id.as_str()).copied().unwrap_or(0) {
                1 => {}
                0 => problems.push(format!("{cx}: ACKed {} (seq {}) LOST", m.control_id, m.seq)),
                n => problems.push(format!("{cx}: {} (seq {}) applied {n} times", m.control_id, m.seq)),
            }
        }
        for id in counts.keys() {
            if !msgs.iter().any(|m| m.control_id == *id) {
                problems.push(format!("{cx}: history has {id}, which was not sent for this patient"));
            }
        }
        if history.len() != msgs.len() {
            problems.push(format!("{cx}: {} history entries for {} distinct messages", history.len(), msgs.len()));
        }
        let want: Vec<&str> = msgs.iter().map(|m| m.control_id.as_str()).collect();
        let got: Vec<&str> = history.iter().map(String::as_str).collect();
        if want != got {
            problems.push(format!("{cx}: order differs\n  sent:    {want:?}\n  history: {got:?}"));
        }
        let last = msgs.iter().map(|m| m.seq).max().unwrap_or(0);
        let family = p["family_name"].as_str().unwrap_or_default();
        if !family.eq_ignore_ascii_case(&format!("Seq{last:04}")) {
            problems.push(format!("{cx}: family_name {family:?}, want Seq{last:04} (the last sent)"));
        }
    }

    let (status, metrics) = b.get("/metrics");
    assert_eq!(status, 200, "/metrics: {metrics}");
    let repeat_metric = metric(&metrics, "hie_hl7_messages_total{outcome=\"repeat\"}");

    let mut restarts = killer.restart_times.clone();
    restarts.sort();
    let attempts: u64 = sent.iter().map(|s| u64::from(s.attempts)).sum();
    let resent = sent.iter().filter(|s| s.attempts > 1).count();
    let unanswered: u64 = sent.iter().map(|s| u64::from(s.unanswered)).sum();
    let nacks: u64 = sent.iter().map(|s| u64::from(s.nacks)).sum();
    let repeats = sent.iter().filter(|s| s.repeat == Some(true)).count();
    let fresh_after_resend = sent.iter().filter(|s| s.attempts > 1 && s.repeat == Some(false)).count();
    let unknown = sent.iter().filter(|s| s.repeat.is_none()).count();
    eprintln!(
        "crash_safety {engine:?}: {} messages from {SENDERS} senders over {} patients in {:.1} s; \
         {} kills ({} with a message in flight); restart-to-healthy p50 {:?} max {:?}",
        sent.len(),
        expected.len(),
        elapsed.as_secs_f64(),
        killer.kills,
        killer.in_flight_kills,
        percentile(&restarts, 0.5),
        restarts.last().copied().unwrap_or_default(),
    );
    eprintln!(
        "crash_safety {engine:?}: {} resends ({attempts} attempts, {resent} messages resent, {unanswered} \
         unanswered, {nacks} AE); AA answered as repeat of a committed attempt: {repeats}, fresh apply on \
         a resend: {fresh_after_resend}, undetermined: {unknown}; /metrics repeat (last life only): {}",
        attempts - sent.len() as u64,
        repeat_metric.map_or("absent".to_owned(), |v| v.to_string()),
    );

    if !problems.is_empty() {
        let log = std::env::temp_dir().join(format!("hie-e2e-crash-{engine:?}-{seed}.log"));
        let _ = std::fs::write(&log, b.stderr_log());
        panic!(
            "crash safety violated on {engine:?} (seed {seed}, broker log kept at {}):\n{}",
            log.display(),
            problems.join("\n")
        );
    }
    assert!(killer.kills >= min_kills, "only {} kills while the senders ran, want at least {min_kills}", killer.kills);
    assert!(repeat_metric.is_some_and(|v| v >= 0.0), "/metrics lacks hie_hl7_messages_total{{outcome=\"repeat\"}}");
}
