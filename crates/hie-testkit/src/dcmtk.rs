//! Running dcmtk's command-line tools (Debian package `dcmtk`) as peers: always with
//! `TCP_NODELAY=1` in the environment (real-peers.md "Nagle": without it dcmtk stalls about 40 ms
//! per small PDU and every timing is ten times too slow), output captured, bounded in time.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a tool printed and how it exited.
#[derive(Debug)]
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// Whether the tool exited with 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Standard output and standard error together, for assertions on messages.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `tool` with `args`, `TCP_NODELAY=1`, and at most [`TOOL_TIMEOUT`]; panics with a clear
/// message when the tool is not installed or hangs.
pub fn dcmtk(tool: &str, args: &[&str]) -> ToolOutput {
    dcmtk_with_timeout(tool, args, TOOL_TIMEOUT)
}

/// [`dcmtk`] with another time bound.
pub fn dcmtk_with_timeout(tool: &str, args: &[&str], limit: Duration) -> ToolOutput {
    let mut child = Command::new(tool)
        .args(args)
        .env("TCP_NODELAY", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{tool} is not runnable ({error}): install Debian's dcmtk"));
    let mut stdout = child.stdout.take().map(drain_in_thread);
    let mut stderr = child.stderr.take().map(drain_in_thread);
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{tool} {args:?} did not finish within {limit:?}");
            }
            Err(error) => panic!("waiting for {tool}: {error}"),
        }
    };
    let collect = |handle: &mut Option<std::thread::JoinHandle<String>>| {
        handle.take().and_then(|handle| handle.join().ok()).unwrap_or_default()
    };
    ToolOutput { status, stdout: collect(&mut stdout), stderr: collect(&mut stderr) }
}

fn drain_in_thread(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The default bound on one tool run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
