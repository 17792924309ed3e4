//! Prints single-core messages/s for the decode pipeline (charset, parse_adt, build_ack) over
//! the golden ADT fixtures. Run with `cargo run --release -p hie-hl7 --example throughput`.

use std::time::{Duration, Instant};

use hie_hl7::ack::{AckCode, build_ack};
use hie_hl7::adt::parse_adt;
use hie_hl7::charset::decode_to_utf8;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/ok");
    for name in ["ipf-pixfeed-A01-maximal-v231.hl7", "msfc-ADT-A01-02-v28.hl7", "msfc-ADT-A01-01-v28.hl7"] {
        let raw = std::fs::read(dir.join(name)).expect("fixture");
        let mut n_messages = 0u64;
        let mut ack_bytes = 0usize;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            for _ in 0..1000 {
                let text = decode_to_utf8(&raw).expect("charset");
                let message = parse_adt(&text).expect("adt");
                let ack = build_ack(&message.header, AckCode::AA, None, "1", "20240101000000", "HIE", "EDGE");
                ack_bytes += ack.len();
                n_messages += 1;
            }
        }
        let rate = n_messages as f64 / start.elapsed().as_secs_f64();
        println!("{name} ({} bytes): {rate:.0} msgs/s ({ack_bytes} ACK bytes)", raw.len());
    }
}
