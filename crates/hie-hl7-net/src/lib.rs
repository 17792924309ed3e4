//! HL7 v2 over TCP: an MLLP server that accepts connections, frames messages and writes back what a
//! [`Handler`] answers, in order, in the charset each message declared in MSH-18.
//!
//! It owns the limits that keep one bad peer from hurting the others: a connection cap
//! (connections over it are closed at once), a frame cap (no byte beyond it is buffered; the
//! connection is closed) and an idle timeout. What a frame means is the handler's business; the
//! broker's ADT listener and the reference registry's ITI-8 feed share this loop.
//! Message bodies are PHI: nothing here logs them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use hie_hl7::mllp::MllpDecoder;

/// The listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
}

/// What happened on the listener, for the handler's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Accepted,
    /// Closed at once: the connection cap was reached.
    Refused,
    Frame,
    /// A frame over the cap or without a start block; the connection was closed.
    BadFrame,
    IdleTimeout,
}

/// What the server asks of the protocol behind it.
pub trait Handler: Send + Sync + 'static {
    /// The messages answering one frame (without MLLP framing, as UTF-8 text).
    fn answer(&self, frame: &[u8], peer: SocketAddr) -> impl Future<Output = Vec<String>> + Send;

    /// Counts an event; the default ignores it.
    fn event(&self, _event: Event) {}
}

/// Serves MLLP on `listener` until `shutdown` turns true. `name` labels the log lines.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    limits: Limits,
    handler: Arc<H>,
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, listener = name, "MLLP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            handler.event(Event::Refused);
            tracing::warn!(%peer, listener = name, "MLLP connection refused: connection cap reached");
            drop(stream);
            continue;
        };
        handler.event(Event::Accepted);
        let handler = Arc::clone(&handler);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(stream, peer, limits, &*handler, name, shutdown).await {
                tracing::debug!(%peer, %error, listener = name, "MLLP connection ended with an error");
            }
            drop(slot);
        });
    }
}

async fn connection<H: Handler>(
    mut stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    handler: &H,
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Small request/response frames: without this, Nagle and delayed ACKs add ~40 ms per message.
    stream.set_nodelay(true)?;
    let mut decoder = MllpDecoder::new(limits.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut out = Vec::with_capacity(1024);
    loop {
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    handler.event(Event::Frame);
                    out.clear();
                    // Answers go back in the charset the sender declared in MSH-18.
                    let charset = String::from_utf8_lossy(hie_hl7::charset::declared_charset(&frame)).into_owned();
                    for answer in handler.answer(&frame, peer).await {
                        hie_hl7::mllp::encode(&hie_hl7::charset::encode_from_utf8(&answer, &charset), &mut out);
                    }
                    stream.write_all(&out).await?;
                }
                Ok(None) => break,
                Err(error) => {
                    handler.event(Event::BadFrame);
                    tracing::warn!(%peer, %error, listener = name, "MLLP frame refused; closing the connection");
                    return Ok(());
                }
            }
        }
        let read = tokio::select! {
            read = tokio::time::timeout(limits.idle_timeout, stream.read_buf(&mut buffer)) => read,
            _ = shutdown.changed() => return Ok(()),
        };
        match read {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                handler.event(Event::IdleTimeout);
                tracing::info!(%peer, listener = name, "MLLP connection idle; closing");
                return Ok(());
            }
        }
    }
}

const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const READ_BUFFER_BYTES: usize = 16 * 1024;
