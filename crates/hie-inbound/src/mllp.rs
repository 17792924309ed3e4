//! The MLLP listener: accepts HL7 v2 connections, frames messages, decodes them, and answers
//! each with the frames the broker decides, in order.
//!
//! Limits keep a bad peer from hurting others: a frame cap (no byte beyond it is buffered), an
//! idle timeout, and a connection cap (connections over it are closed at once). Message bodies
//! are never logged: they are PHI.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use hie_broker::adt::{self, AdtConfig, Outcome};
use hie_broker::commit::AdtWriter;
use hie_hl7::adt::{parse_adt, parse_header};
use hie_hl7::mllp::MllpDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Listener settings (`[hl7]`).
#[derive(Debug, Clone)]
pub struct MllpConfig {
    pub max_frame_bytes: usize,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct MllpStats {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub frames_received: AtomicU64,
    pub frames_too_large: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub decode_errors: AtomicU64,
}

/// What a connection needs, shared by all of them.
#[derive(Debug)]
struct Shared {
    config: MllpConfig,
    adt_config: Arc<AdtConfig>,
    writer: AdtWriter,
    stats: Arc<MllpStats>,
}

/// Serves MLLP on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    config: MllpConfig,
    adt_config: Arc<AdtConfig>,
    writer: AdtWriter,
    stats: Arc<MllpStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let shared = Arc::new(Shared { config, adt_config, writer, stats });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            shared.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "MLLP connection refused: connection cap reached");
            drop(stream);
            continue;
        };
        shared.stats.connections_accepted.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(stream, peer, &shared, shutdown).await {
                tracing::debug!(%peer, %error, "MLLP connection ended with an error");
            }
            drop(slot);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Small request/response frames: without this, Nagle and delayed ACKs add ~40 ms per message.
    stream.set_nodelay(true)?;
    let mut decoder = MllpDecoder::new(shared.config.max_frame_bytes);
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(1024);
    loop {
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    shared.stats.frames_received.fetch_add(1, Ordering::Relaxed);
                    out.clear();
                    // Answers go back in the charset the sender declared in MSH-18.
                    let charset = String::from_utf8_lossy(hie_hl7::charset::declared_charset(&frame)).into_owned();
                    let span = tracing::info_span!("hl7.message", %peer, bytes = frame.len());
                    for answer in tracing::Instrument::instrument(handle_frame(shared, &frame), span).await {
                        let encoded = hie_hl7::charset::encode_from_utf8(&answer, &charset);
                        hie_hl7::mllp::encode(&encoded, &mut out);
                    }
                    stream.write_all(&out).await?;
                }
                Ok(None) => break,
                Err(error) => {
                    shared.stats.frames_too_large.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, %error, "MLLP frame refused; closing the connection");
                    return Ok(());
                }
            }
        }
        let read = tokio::select! {
            read = tokio::time::timeout(shared.config.idle_timeout, stream.read_buf(&mut buffer)) => read,
            _ = shutdown.changed() => return Ok(()),
        };
        match read {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                shared.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, "MLLP connection idle; closing");
                return Ok(());
            }
        }
    }
}

/// Decodes one frame and returns the frames to answer with. This is the HL7 rescue: every way a
/// message can fail ends here as an AE/AR (or CE/CR) with ERR naming the field.
async fn handle_frame(shared: &Shared, frame: &[u8]) -> Vec<String> {
    let config = &shared.adt_config;
    let decode_failed = |header: hie_hl7::adt::MessageHeader, error: hie_hl7::adt::Hl7Error| {
        shared.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
        tracing::info!(code = ?error.code, location = ?error.location, "HL7 message refused");
        let outcome = Outcome::from_decode_error(error);
        let (_, application_ack) = adt::application_ack(config, &header, &outcome);
        adt::answer(config, &header, &outcome, application_ack)
    };
    let text = match hie_hl7::charset::decode_to_utf8(frame) {
        Ok(text) => text,
        Err(error) => {
            let lossy = String::from_utf8_lossy(frame);
            return decode_failed(hie_hl7::ack::salvage_header(&lossy), error);
        }
    };
    let header = match parse_header(&text) {
        Ok(header) => header,
        Err(error) => return decode_failed(hie_hl7::ack::salvage_header(&text), error),
    };
    let message = match parse_adt(&text) {
        Ok(message) => message,
        Err(error) => return decode_failed(header, error),
    };
    match shared.writer.submit(message).await {
        Ok(frames) => frames,
        Err(stopped) => {
            let outcome = Outcome::not_stored(&stopped.to_string());
            let (_, application_ack) = adt::application_ack(config, &header, &outcome);
            adt::answer(config, &header, &outcome, application_ack)
        }
    }
}
