//! The broker's decisions. Given a decoded message, it decides what changes, writes the change
//! and everything that must follow from it (outbox items) through `hie-store` in one
//! transaction, and says what the peer is answered. It reaches no peer itself.
//!
//! Modules:
//! - [`patients`]: ADT -> identities, merges (A40), identifier changes (A47); `apply_adt` is the entry.
//! - [`adt`]: the HL7 edge of the broker: configuration, outcomes, and the one place ACKs are rendered.
//! - [`commit`]: the group-commit writer that applies ADT from every connection in batched
//!   transactions and answers each message only after its batch is durable.
//! - [`feed`]: the identity feed (ITI-8) message for an outbox item, built from the store.
//! - [`studies`]: when a study is ready (C-STORE arrivals, PACS polls, requests; quiet period)
//!   and the scheduler that turns it into manifest versions.
//! - [`publish`]: what is queued for the registry when a manifest version is made or a study is
//!   gone, the XDS metadata, and what a registry's answer means.
//! - [`ports`]: the traits through which decisions reach peers ([`ports::Pacs`]).
//! - [`from_wire`] / [`to_wire`]: HL7 types <-> domain types.
//! - `working_set`: what a batch has read and decided before it writes (the rules' view of the
//!   database during a group commit).

pub mod adt;
pub mod commit;
pub mod feed;
pub mod from_wire;
pub mod patients;
pub mod ports;
pub mod publish;
pub mod studies;
pub mod to_wire;
mod working_set;
