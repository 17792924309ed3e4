//! MLLP abuse (reliability-security S7): seed crash inputs, oversized and unterminated frames,
//! garbage before the start block, a dribbled message and a connection flood. The broker must answer
//! AR/AE with ERR or close the connection, never die, keep memory bounded, and keep serving.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hie_e2e::{
    BrokerOptions, BrokerProc, EB, Engine, SB, ack_code, adt, control_id, field, mllp_connect, mllp_frame,
    mllp_read_frame, vm_hwm_kib,
};

use crate::{broker, broker_with};

const T: Duration = Duration::from_secs(10);

fn valid_msg() -> Vec<u8> {
    adt("A04", &control_id("abuse"), &format!("AB-{}^^^E2E", hie_e2e::unique_suffix()), None)
}

fn assert_alive(b: &mut BrokerProc, after: &str) {
    assert!(b.alive(), "broker died after {after}; stderr tail:\n{}", b.stderr_tail(40));
    assert!(b.healthy(), "/healthz not 200 after {after}");
}

fn assert_still_acks(b: &BrokerProc, after: &str) {
    // Retried briefly: closed connections may take a moment to free their slots.
    let deadline = Instant::now() + T;
    loop {
        match b.send(&valid_msg()) {
            Ok(ack) if ack_code(&ack) == "AA" => return,
            other if Instant::now() >= deadline => {
                panic!("no AA for a fresh message after {after}: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Reads until the peer closes; returns any frames received first. Panics if still open after T.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "connection still open after {T:?}; received {got:?}");
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => return got, // reset counts as closed
        }
    }
}

/// Seed inputs (nHapi crash corpus, deoxxa/hl7#1) and an empty or truncated frame: either an
/// AR/AE carrying ERR, or a closed connection. Never a dead broker.
#[test]
fn seed_inputs_get_an_error_ack_or_a_close() {
    let mut b = broker(Engine::Sqlite);
    let seeds: &[(&str, &[u8])] = &[
        ("empty frame", b""),
        ("truncated MSH", b"MSH|^~\\&|SND"),
        ("nHapi MSH|0...2.7", b"MSH|0|||||||00|||2.7"),
        ("nHapi MSHH0", b"MSHH0\r"),
        ("nHapi MSH|0...0", b"MSH|0|||||||||||0"),
        ("nHapi DEL in MSH-9", b"MSH|0|0|0|0|0|0|0|20\x7f|0|0|2.7"),
        ("nHapi #196 hang", b"MSH|^|||||||^A|||2.2\r^AA"),
        ("deoxxa MSH00000", b"MSH00000"),
        ("not HL7 at all", b"\x00\x01\x02\xff\xfe"),
    ];
    for (name, payload) in seeds {
        let mut s = mllp_connect(b.mllp, T).expect("connect");
        s.write_all(&mllp_frame(payload)).expect("send");
        match mllp_read_frame(&mut s, T) {
            Ok(ack) => {
                let text = String::from_utf8_lossy(&ack);
                let code = ack_code(&ack);
                assert!(["AR", "AE", "CR", "CE"].contains(&code.as_str()), "{name}: expected AR/AE, got {text:?}");
                assert!(
                    field(&ack, "ERR", 3).is_some_and(|e| !e.is_empty()),
                    "{name}: error ACK without ERR-3: {text:?}"
                );
            }
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset),
                "{name}: neither an ACK nor a close: {e}"
            ),
        }
        assert_alive(&mut b, name);
    }
    assert_still_acks(&b, "the seed inputs");
}

/// v2.7's five-character MSH-2 (truncation character, hl7apy#32) is valid HL7: AA.
#[test]
fn v27_five_char_encoding_characters_are_valid() {
    let b = broker(Engine::Sqlite);
    let id = control_id("v27");
    let msg = hie_e2e::hl7(&[
        &format!("MSH|^~\\&#|HIE-E2E|TEST|HIE-EDGE|HIE|20250101120000||ADT^A04^ADT_A01|{id}|P|2.7"),
        "EVN||20250101120000",
        &format!("PID|1||V27-{id}^^^E2E||DOE^JANE||19700101|F"),
        "PV1|1|O",
    ]);
    let ack = b.send(&msg).expect("ACK");
    assert_eq!(ack_code(&ack), "AA", "{}", String::from_utf8_lossy(&ack));
}

/// A 100 MB frame: the connection is closed (an error ACK first is fine) and the broker's peak RSS
/// grows by less than 32 MiB, i.e. the frame is never buffered.
#[test]
fn hundred_megabyte_frame_is_cut_off_with_bounded_memory() {
    let mut b = broker(Engine::Sqlite);
    assert_still_acks(&b, "start-up"); // warm up allocator and pools before the baseline
    let before = vm_hwm_kib(b.pid());
    let mut s = mllp_connect(b.mllp, T).expect("connect");
    let mut head = vec![SB];
    head.extend_from_slice(b"MSH|^~\\&|HIE-E2E|TEST|HIE-EDGE|HIE|20250101120000||ADT^A04|BIG|P|2.5\rNTE|1||");
    let _ = s.write_all(&head);
    let chunk = vec![b'A'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..100 {
        // The broker closing mid-way makes writes fail: that is the expected outcome.
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(&[EB, b'\r']);
    let _ = read_until_closed(&mut s);
    let after = vm_hwm_kib(b.pid());
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "VmHWM grew from {before} KiB to {after} KiB on a 100 MB frame ({sent} bytes sent)"
    );
    assert_alive(&mut b, "a 100 MB frame");
    assert_still_acks(&b, "a 100 MB frame");
}

/// A frame without end block gets no ACK; the idle timeout closes the connection.
#[test]
fn missing_end_block_gets_no_ack_and_idle_close() {
    let mut b = broker_with(BrokerOptions::new(Engine::Sqlite).env("HIE_EDGE__HL7__IDLE_TIMEOUT_SECS", "2"));
    let mut s = mllp_connect(b.mllp, T).expect("connect");
    let mut f = vec![SB];
    f.extend_from_slice(&valid_msg());
    s.write_all(&f).expect("send");
    let got = read_until_closed(&mut s);
    assert!(!got.contains(&SB), "an ACK for an unterminated frame: {:?}", String::from_utf8_lossy(&got));
    assert_alive(&mut b, "an unterminated frame");
    assert_still_acks(&b, "an unterminated frame");
}

/// Bytes before the start block are skipped; the message behind them is ACKed.
#[test]
fn garbage_before_start_block_is_skipped() {
    let b = broker(Engine::Sqlite);
    let mut s = mllp_connect(b.mllp, T).expect("connect");
    let mut data = b"GET / HTTP/1.0\r\n\r\n\x00\xff garbage \x1c\r".to_vec();
    data.extend_from_slice(&mllp_frame(&valid_msg()));
    s.write_all(&data).expect("send");
    let ack = mllp_read_frame(&mut s, T).expect("ACK");
    assert_eq!(ack_code(&ack), "AA", "{}", String::from_utf8_lossy(&ack));
}

/// One byte per write, a few ms apart: reassembled and ACKed.
#[test]
fn one_byte_dribble_is_acked() {
    let b = broker(Engine::Sqlite);
    let mut s = mllp_connect(b.mllp, T).expect("connect");
    for byte in mllp_frame(&valid_msg()) {
        s.write_all(&[byte]).expect("dribble");
        std::thread::sleep(Duration::from_millis(3));
    }
    let ack = mllp_read_frame(&mut s, T).expect("ACK");
    assert_eq!(ack_code(&ack), "AA", "{}", String::from_utf8_lossy(&ack));
}

/// 1000 connections against a cap of 50: at most 50 stay open, the ones kept still work, and once
/// they are gone a fresh connection is served.
#[test]
fn connection_flood_is_capped() {
    const CAP: usize = 50;
    let mut b = broker_with(BrokerOptions::new(Engine::Sqlite).env("HIE_EDGE__HL7__MAX_CONNECTIONS", &CAP.to_string()));
    let mut conns: Vec<TcpStream> = Vec::new();
    for _ in 0..1000 {
        // Refused at the door is as good as closed.
        if let Ok(s) = TcpStream::connect_timeout(&b.mllp, T) {
            conns.push(s);
        }
    }
    // Over-cap connections must be closed by the broker (accepted and dropped), not left in the
    // backlog looking open: poll until the count of open ones settles at or below the cap.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut open: Vec<TcpStream>;
    loop {
        open = Vec::new();
        for s in conns.drain(..) {
            s.set_nonblocking(true).expect("nonblocking");
            let mut byte = [0u8; 1];
            // EOF, reset, or unexpected data: not an idle open slot.
            if matches!((&s).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock) {
                open.push(s);
            }
        }
        if open.len() <= CAP || Instant::now() >= deadline {
            break;
        }
        conns = std::mem::take(&mut open);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(open.len() <= CAP, "{} connections open, cap {CAP}", open.len());
    assert_alive(&mut b, "1000 connections");

    // A connection the broker kept must still be served.
    if let Some(s) = open.first_mut() {
        s.set_nonblocking(false).expect("blocking");
        s.write_all(&mllp_frame(&valid_msg())).expect("send on a kept connection");
        let ack = mllp_read_frame(s, T).expect("ACK on a kept connection");
        assert_eq!(ack_code(&ack), "AA");
    }
    drop(open);
    assert_still_acks(&b, "the flood");
}
