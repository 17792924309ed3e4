//! Graceful shutdown of the real binary: SIGTERM stops a serving broker with exit status 0 and
//! no panic, leaving a store that opens again.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn serve_until_accepting(store_url: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let quickstart = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/quickstart.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hie-edge"))
        .args(["serve", "--config", quickstart])
        .env("HIE_EDGE__STORE__URL", store_url)
        .env("HIE_EDGE__HL7__LISTEN", "127.0.0.1:0")
        .env("HIE_EDGE__API__LISTEN", "127.0.0.1:0")
        .env("HIE_EDGE__DICOM__LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let accepting = loop {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("accepting work") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    if !accepting {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the broker never accepted work");
    }
    (child, receiver)
}

#[test]
fn sigterm_stops_the_broker_cleanly_and_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("shutdown.db").display());
    for _ in 0..2 {
        let (mut child, lines) = serve_until_accepting(&store_url);
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        let rest: Vec<String> = lines.try_iter().collect();
        assert!(exit.success(), "exit {exit:?}; stderr: {rest:#?}");
        assert!(!rest.iter().any(|line| line.contains("panicked")), "{rest:#?}");
        assert!(rest.iter().any(|line| line.contains("shutting down")), "{rest:#?}");
    }
}
