//! What hie-edge opens towards its peers: the outbox drain worker and the deliverers it hands
//! items to.
//!
//! Modules:
//! - [`deliver`]: the [`Deliver`] trait a peer adapter implements, its error, and [`LogDeliverer`]
//!   for topics with no peer configured yet.
//! - [`feed`]: [`feed::MllpFeed`], the identity feed (ITI-8) to the registry over MLLP.
//! - [`worker`]: [`OutboxWorker`], which claims due items, delivers them concurrently and records
//!   each outcome (done, retry with backoff, failed).
//! - [`registry`]: [`registry::XdsClient`], SOAP/MTOM to a registry and repository over mutual TLS.
//! - [`publish`]: [`publish::XdsPublisher`], the deliverer of registry submissions (ITI-41/42/57, ITI-18 checks).
//! - [`pacs`]: the local PACS adapters that manifests are built from ([`pacs::FolderPacs`]).

pub mod deliver;
pub mod feed;
pub mod pacs;
pub mod publish;
pub mod registry;
pub mod worker;

pub use deliver::{Deliver, DeliveryError, DeliveryFuture, LogDeliverer};
pub use worker::OutboxWorker;
