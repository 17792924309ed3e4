//! The HL7 listener: decodes each ADT frame the MLLP server ([`hie_hl7_net`]) hands it and
//! answers with the frames the broker decides, in order.
//!
//! The server's limits keep a bad peer from hurting others: a frame cap (no byte beyond it is
//! buffered), an idle timeout, and a connection cap (connections over it are closed at once).
//! Message bodies are never logged: they are PHI.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hie_broker::adt::{self, AdtConfig, Outcome};
use hie_broker::commit::AdtWriter;
use hie_hl7::adt::{parse_adt, parse_header};
use hie_hl7_net::{Event, Handler, Limits};
use tokio::net::TcpListener;
use tokio::sync::watch;

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
    adt_config: Arc<AdtConfig>,
    writer: AdtWriter,
    stats: Arc<MllpStats>,
}

impl Handler for Shared {
    async fn answer(&self, frame: &[u8], peer: SocketAddr) -> Vec<String> {
        let span = tracing::info_span!("hl7.message", %peer, bytes = frame.len());
        tracing::Instrument::instrument(handle_frame(self, frame), span).await
    }

    fn event(&self, event: Event) {
        let counter = match event {
            Event::Accepted => &self.stats.connections_accepted,
            Event::Refused => &self.stats.connections_refused,
            Event::Frame => &self.stats.frames_received,
            Event::BadFrame => &self.stats.frames_too_large,
            Event::IdleTimeout => &self.stats.idle_timeouts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves MLLP on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    config: MllpConfig,
    adt_config: Arc<AdtConfig>,
    writer: AdtWriter,
    stats: Arc<MllpStats>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = Limits {
        max_connections: config.max_connections,
        max_frame_bytes: config.max_frame_bytes,
        idle_timeout: config.idle_timeout,
    };
    let shared = Arc::new(Shared { adt_config, writer, stats });
    hie_hl7_net::serve(listener, limits, shared, "hl7", shutdown).await;
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
