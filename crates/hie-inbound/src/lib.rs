//! What hie-edge accepts from the network: each listener decodes, hands the decision to
//! `hie-broker`, and answers in its own protocol through one rescue function.
//!
//! Modules:
//! - [`mllp`]: the HL7 v2 MLLP listener (bounded frames, idle timeout, connection cap).
//! - [`api`]: the HTTP listener: health, readiness, Prometheus metrics and the REST API.
//! - [`dicom`]: the DICOM listener: C-ECHO, C-STORE (instance headers kept, studies marked
//!   changed) and the destination of our C-MOVEs.
//! - [`xdsi`]: `/xdsi/imaging-source` on the HTTPS listener: RAD-69 and ITI-43 retrievals,
//!   authorized per partner and streamed from the local PACS.

pub mod api;
pub mod dicom;
pub mod mllp;
pub mod xdsi;
