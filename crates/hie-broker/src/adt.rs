//! The HL7 edge of the broker: what an ADT message is answered, and the one place ACK text is
//! rendered (every AA/AE/AR/CA/CE/CR leaves through [`answer`]).
//!
//! Acknowledgment modes (HL7 v2 2.9): with MSH-15 and MSH-16 empty, original mode: one ACK
//! (AA/AE/AR). With either valued, enhanced mode: an accept ACK (CA/CE/CR) once the message is
//! safely stored, then the application ACK, each sent only when its condition (AL/NE/ER/SU)
//! says so.

use std::sync::atomic::{AtomicU64, Ordering};

use hie_core::AffinityDomain;
use hie_hl7::ack::{AckCode, build_ack};
use hie_hl7::adt::{AckCondition, ErrorCode, Hl7Error, MessageHeader};

/// How the broker answers HL7.
#[derive(Debug, Clone)]
pub struct AdtConfig {
    pub domain: AffinityDomain,
    /// MSH-3 of our ACKs.
    pub application: String,
    /// MSH-4 of our ACKs.
    pub facility: String,
    /// When MSH-15 and MSH-16 are both NE, still send the application ACK. HL7 says never (the
    /// default); some MLLP senders block on a reply regardless and need this on.
    pub answer_never_ack: bool,
    /// The most messages one group commit takes.
    pub max_batch: usize,
    /// What a merge does to the prior patient's published studies (the profile's
    /// `[patient_merge] published`).
    pub patient_merge: hie_core::profile::PatientMergePolicy,
}

/// What happened to a message, in HL7 terms.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Applied and committed (AA / CA).
    Accepted,
    /// Refused for good (AR / CR): unsupported, or wrong for the current state.
    Rejected(Hl7Error),
    /// Not applied because of an error in the message content (AE / CE).
    Error(Hl7Error),
    /// Not stored because of our own failure; the sender should retry (AE / CE, code 207).
    NotStored(Hl7Error),
    /// Seen before (same sender and MSH-10): answered with the recorded application ACK, which
    /// was AA when `accepted`, AR otherwise. Nothing is applied again.
    Repeated { accepted: bool },
}

impl Outcome {
    /// The outcome of a message that failed to decode. Unsupported type, event, processing ID
    /// or version is a reject (AR); anything else wrong with the content is an error (AE).
    pub fn from_decode_error(error: Hl7Error) -> Outcome {
        if is_unsupported(error.code) { Outcome::Rejected(error) } else { Outcome::Error(error) }
    }

    pub fn not_stored(message: &str) -> Outcome {
        Outcome::NotStored(Hl7Error {
            location: hie_hl7::adt::Location { segment: "MSH".to_owned(), sequence: 1, field: 0, component: 0 },
            code: ErrorCode::InternalError,
            message: message.to_owned(),
        })
    }

    fn application_code(&self) -> AckCode {
        match self {
            Outcome::Accepted | Outcome::Repeated { accepted: true } => AckCode::AA,
            Outcome::Rejected(_) | Outcome::Repeated { accepted: false } => AckCode::AR,
            Outcome::Error(_) | Outcome::NotStored(_) => AckCode::AE,
        }
    }

    fn error(&self) -> Option<&Hl7Error> {
        match self {
            Outcome::Accepted | Outcome::Repeated { .. } => None,
            Outcome::Rejected(error) | Outcome::Error(error) | Outcome::NotStored(error) => Some(error),
        }
    }
}

/// Renders the application ACK for an outcome (stored with the message so a repeat gets it again).
pub fn application_ack(config: &AdtConfig, header: &MessageHeader, outcome: &Outcome) -> (AckCode, String) {
    let code = outcome.application_code();
    (code, render(config, header, code, outcome.error()))
}

/// The frames to send back, in order, given the message's outcome and its application ACK.
pub fn answer(config: &AdtConfig, header: &MessageHeader, outcome: &Outcome, application_ack: String) -> Vec<String> {
    let enhanced = header.accept_ack_type.is_some() || header.application_ack_type.is_some();
    if !enhanced {
        return vec![application_ack];
    }
    let accept_condition = header.accept_ack_type.unwrap_or(AckCondition::Always);
    let application_condition = header.application_ack_type.unwrap_or(AckCondition::Always);
    let (accept_code, accepted) = match outcome {
        Outcome::Accepted | Outcome::Repeated { .. } => (AckCode::CA, true),
        // Unsupported type, event or version: the message is not taken in at all.
        Outcome::Rejected(error) if is_unsupported(error.code) => (AckCode::CR, false),
        // Taken in and stored; the application then refuses it (AR follows).
        Outcome::Rejected(_) => (AckCode::CA, true),
        Outcome::Error(_) | Outcome::NotStored(_) => (AckCode::CE, false),
    };
    let mut frames = Vec::with_capacity(2);
    if condition_holds(accept_condition, accepted) {
        let error = if accepted { None } else { outcome.error() };
        frames.push(render(config, header, accept_code, error));
    }
    // Only a message that was accepted for processing gets an application ACK.
    if accepted {
        let success = matches!(outcome, Outcome::Accepted | Outcome::Repeated { accepted: true });
        let never_both = accept_condition == AckCondition::Never && application_condition == AckCondition::Never;
        if condition_holds(application_condition, success) || (never_both && config.answer_never_ack) {
            frames.push(application_ack);
        }
    } else if frames.is_empty() && config.answer_never_ack {
        // A refused message whose sender asked for no accept ACK still learns why.
        frames.push(render(config, header, accept_code, outcome.error()));
    }
    frames
}

fn is_unsupported(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UnsupportedMessageType
            | ErrorCode::UnsupportedEvent
            | ErrorCode::UnsupportedProcessingId
            | ErrorCode::UnsupportedVersion
    )
}

fn condition_holds(condition: AckCondition, success: bool) -> bool {
    match condition {
        AckCondition::Always => true,
        AckCondition::Never => false,
        AckCondition::Error => !success,
        AckCondition::Success => success,
    }
}

fn render(config: &AdtConfig, header: &MessageHeader, code: AckCode, error: Option<&Hl7Error>) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let control_id = next_ack_control_id(now.as_micros());
    build_ack(
        header,
        code,
        error,
        &control_id,
        &hie_core::clock::hl7_timestamp(now.as_secs()),
        &config.application,
        &config.facility,
    )
}

/// ACK MSH-10: unique per process run (time) and within it (counter).
fn next_ack_control_id(now_micros: u128) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("ACK{now_micros:x}.{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_control_ids_differ() {
        assert_ne!(next_ack_control_id(5), next_ack_control_id(5));
    }
}
