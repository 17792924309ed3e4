//! A TCP fault proxy between the broker and a peer (the registry), in the spirit of Toxiproxy
//! (which no registry here packages): it forwards bytes both ways, and on command refuses
//! connections (the peer is down) or lets requests through but drops the answers (the peer
//! committed, the answer was lost: reliability-security R5). It works below TLS, so it needs no
//! keys: it only decides which bytes get through.
//!
//! Blocking std threads, like the rest of the harness.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// What the proxy does with new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Fault {
    /// Forward everything.
    Pass = 0,
    /// Close every new connection at once (the peer is down).
    Down = 1,
    /// Forward the request; once the peer starts answering, drop the answer and close the
    /// client's connection. Counts down `drop_answers`, then passes again.
    DropAnswers = 2,
}

/// A running proxy; stops accepting when dropped (connections in flight finish on their own).
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    fault: AtomicU32,
    /// Answers still to drop in [`Fault::DropAnswers`].
    drop_answers: AtomicUsize,
    /// Connections accepted.
    connections: AtomicU64,
    /// Answers dropped so far.
    dropped: AtomicU64,
    /// Connections refused while down.
    refused: AtomicU64,
    stop: AtomicBool,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let state = Arc::new(State {
            fault: AtomicU32::new(Fault::Pass as u32),
            drop_answers: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_state = Arc::clone(&state);
        thread::spawn(move || accept_loop(listener, upstream, accept_state));
        FaultProxy { addr, state }
    }

    /// Sets the fault for new connections.
    pub fn set(&self, fault: Fault) {
        self.state.fault.store(fault as u32, Ordering::SeqCst);
    }

    /// Drops the next `n` answers (each on its own connection), then passes again.
    pub fn drop_next_answers(&self, n: usize) {
        self.state.drop_answers.store(n, Ordering::SeqCst);
        self.set(Fault::DropAnswers);
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        match state.fault.load(Ordering::SeqCst) {
            fault if fault == Fault::Down as u32 => {
                state.refused.fetch_add(1, Ordering::SeqCst);
                let _ = client.shutdown(Shutdown::Both);
            }
            fault => {
                let drop_answer = fault == Fault::DropAnswers as u32
                    && state
                        .drop_answers
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
                        .is_ok();
                if state.drop_answers.load(Ordering::SeqCst) == 0 && fault == Fault::DropAnswers as u32 {
                    state.fault.store(Fault::Pass as u32, Ordering::SeqCst);
                }
                let state = Arc::clone(&state);
                thread::spawn(move || forward(client, upstream, drop_answer, state));
            }
        }
    }
}

fn forward(client: TcpStream, upstream: SocketAddr, drop_answer: bool, state: Arc<State>) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_reader), Ok(server_writer)) = (client.try_clone(), server.try_clone()) else { return };
    let upload = thread::spawn(move || copy(client_reader, server_writer));
    if drop_answer {
        // Wait for the first bytes of the answer (the peer has processed the request), then cut
        // the client off without them.
        let mut server = server;
        let mut first = [0_u8; 1];
        let _ = server.set_read_timeout(Some(Duration::from_secs(60)));
        if server.read(&mut first).unwrap_or(0) > 0 {
            state.dropped.fetch_add(1, Ordering::SeqCst);
        }
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    } else {
        let _ = copy(server, client);
    }
    let _ = upload.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) -> io::Result<()> {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return Ok(());
        }
        to.write_all(&buffer[..n])?;
    }
}
