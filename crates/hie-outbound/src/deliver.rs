//! The seam between the outbox worker and a peer: [`Deliver`] sends one claimed item and says
//! whether a failure is worth retrying.

use std::future::Future;
use std::pin::Pin;

use hie_store::outbox::Claimed;

/// Why a delivery failed, which decides what happens to the item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The peer may take it later (connection refused, timeout, 5xx): retried with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The peer will never take it as it is (a metadata error): the item becomes `failed`, stays
    /// visible and blocks its key until an operator retries it.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The peer will take it once something else has gone first (a submission whose patient the
    /// registry does not know yet waits for the identity feed): parked, no attempt counted, due
    /// again when an item of its key is delivered (`hie_store::outbox::Report::Park`).
    #[error("waiting: {0}")]
    Park(String),
}

/// The future a [`Deliver`] returns.
pub type DeliveryFuture<'a> = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;

/// Sends the items of one topic to their peer.
///
/// Delivery is at least once: an item whose outcome was not recorded (crash, lost lease) is sent
/// again, so a peer that must not see duplicates gets the item's idempotency key in the payload.
/// A delivery must finish well within the lease; the worker cancels it at half the lease.
pub trait Deliver: Send + Sync + 'static {
    /// The outbox topic this deliverer drains.
    fn topic(&self) -> &'static str;

    /// Sends one item.
    fn deliver<'a>(&'a self, item: &'a Claimed) -> DeliveryFuture<'a>;
}

/// Accepts every item and does nothing else: for topics whose peer is not configured yet, so their
/// items do not pile up and hold their keys (an ordering key can span topics).
#[derive(Debug, Clone, Copy)]
pub struct LogDeliverer {
    topic: &'static str,
}

impl LogDeliverer {
    pub fn new(topic: &'static str) -> Self {
        LogDeliverer { topic }
    }
}

impl Deliver for LogDeliverer {
    fn topic(&self) -> &'static str {
        self.topic
    }

    fn deliver<'a>(&'a self, item: &'a Claimed) -> DeliveryFuture<'a> {
        // The id only: payloads may hold PHI.
        tracing::debug!(id = item.id, topic = self.topic, "outbox item accepted with no peer configured");
        Box::pin(std::future::ready(Ok(())))
    }
}
