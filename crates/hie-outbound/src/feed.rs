//! The identity feed sender (ITI-8 Patient Identity Source): drains the `iti8` outbox topic to
//! the registry's MLLP endpoint (`[registry] feed = "mllp://host:port"`), one message per item,
//! each answered by an HL7 ACK before the item is done.
//!
//! Each message is built when it is sent, from the store ([`hie_broker::feed::iti8_message`]),
//! with MSH-10 derived from the outbox item id, so a retry after a lost ACK carries the same
//! control ID and a receiver that dedupes by MSH-10 applies it once. The ACK must answer that
//! control ID (MSA-2): an ACK for another message is never taken for ours.

use std::time::Duration;

use bytes::BytesMut;
use hie_broker::feed::{FeedError, FeedItem, FeedParties, iti8_message};
use hie_core::AffinityDomain;
use hie_hl7::mllp::{MllpDecoder, encode};
use hie_store::Store;
use hie_store::outbox::Claimed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::deliver::{Deliver, DeliveryError, DeliveryFuture};

/// Largest ACK read back.
const MAX_ACK_BYTES: usize = 64 * 1024;

/// Where and how the feed goes.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// `host:port` of the registry's MLLP listener.
    pub address: String,
    pub parties: FeedParties,
    pub connect_timeout: Duration,
    /// Longest wait for the ACK.
    pub ack_timeout: Duration,
}

/// Sends identity feeds over MLLP.
#[derive(Debug, Clone)]
pub struct MllpFeed {
    store: Store,
    domain: AffinityDomain,
    settings: FeedSettings,
}

impl MllpFeed {
    pub fn new(store: Store, domain: AffinityDomain, settings: FeedSettings) -> MllpFeed {
        MllpFeed { store, domain, settings }
    }

    async fn deliver_item(&self, item: &Claimed) -> Result<(), DeliveryError> {
        let Some(feed) = FeedItem::parse(&item.payload) else {
            return Err(DeliveryError::Permanent(format!("outbox item {}: not a feed payload", item.id)));
        };
        let store_error = |error: hie_store::StoreError| DeliveryError::Retryable(format!("store: {error}"));
        let Some(patient) = self.store.patient_record(feed.patient).await.map_err(store_error)? else {
            return Err(DeliveryError::Permanent(format!("patient #{} is not in the store", feed.patient)));
        };
        let prior = match feed.prior {
            Some(prior) => self.store.patient_record(prior).await.map_err(store_error)?,
            None => None,
        };
        let control_id = format!("HIEF{}", item.id);
        let timestamp = hie_core::clock::hl7_timestamp(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs()),
        );
        let message = match iti8_message(
            &feed,
            &patient,
            prior.as_ref(),
            &self.domain,
            &self.settings.parties,
            &control_id,
            &timestamp,
        ) {
            Ok(message) => message,
            Err(FeedError::NoAffinityDomainId(patient_id)) => {
                // The link was undone since the item was queued (an identifier change): the
                // registry has nothing to learn. Blocking the patient's later items would be worse.
                tracing::warn!(item = item.id, patient_id, "identity feed skipped: no affinity-domain identifier now");
                return Ok(());
            }
        };
        let ack = self.exchange(message.as_bytes()).await?;
        check_ack(&ack, &control_id)
    }

    /// Sends one framed message and reads one framed answer.
    async fn exchange(&self, message: &[u8]) -> Result<String, DeliveryError> {
        let address = &self.settings.address;
        let unreachable = |what: &str, error: &dyn std::fmt::Display| {
            DeliveryError::Retryable(format!("registry feed {address}: {what}: {error}"))
        };
        let mut stream = tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| unreachable("connect", &"timed out"))?
            .map_err(|error| unreachable("connect", &error))?;
        stream.set_nodelay(true).map_err(|error| unreachable("socket", &error))?;
        let mut frame = Vec::with_capacity(message.len() + 3);
        encode(message, &mut frame);
        stream.write_all(&frame).await.map_err(|error| unreachable("send", &error))?;
        let mut decoder = MllpDecoder::new(MAX_ACK_BYTES);
        let mut buffer = BytesMut::with_capacity(4096);
        let read = async {
            loop {
                if let Some(payload) = decoder.decode(&mut buffer).map_err(|error| unreachable("ACK", &error))? {
                    return Ok(payload);
                }
                if stream.read_buf(&mut buffer).await.map_err(|error| unreachable("receive", &error))? == 0 {
                    return Err(unreachable("receive", &"connection closed before the ACK"));
                }
            }
        };
        let payload = tokio::time::timeout(self.settings.ack_timeout, read)
            .await
            .map_err(|_| unreachable("ACK", &format!("none within {:?}", self.settings.ack_timeout)))??;
        hie_hl7::charset::decode_to_utf8(&payload)
            .map_err(|error| DeliveryError::Retryable(format!("registry feed {address}: unreadable ACK: {error:?}")))
    }
}

impl Deliver for MllpFeed {
    fn topic(&self) -> &'static str {
        hie_broker::patients::IDENTITY_FEED_TOPIC
    }

    fn deliver<'a>(&'a self, item: &'a Claimed) -> DeliveryFuture<'a> {
        Box::pin(self.deliver_item(item))
    }
}

/// AA or CA answering `control_id` is success; AR is a refusal for good; AE, or an answer to
/// another message, is retried (HL7 v2.5.1 2.9.2: AE may be transient, AR is not).
fn check_ack(ack: &str, control_id: &str) -> Result<(), DeliveryError> {
    let msa = ack
        .split(['\r', '\n'])
        .find(|segment| segment.starts_with("MSA"))
        .ok_or_else(|| DeliveryError::Retryable("registry feed: answer without MSA".to_owned()))?;
    let separator = msa.chars().nth(3).unwrap_or('|');
    let fields: Vec<&str> = msa.split(separator).collect();
    let code = fields.get(1).copied().unwrap_or_default();
    let answered = fields.get(2).copied().unwrap_or_default();
    let text = fields.get(3).copied().unwrap_or_default();
    if answered != control_id {
        return Err(DeliveryError::Retryable(format!(
            "registry feed: the ACK answers {answered:?}, not our {control_id:?}"
        )));
    }
    match code {
        "AA" | "CA" => Ok(()),
        "AR" | "CR" => Err(DeliveryError::Permanent(format!("registry feed refused ({code}): {text}"))),
        other => Err(DeliveryError::Retryable(format!("registry feed error ({other}): {text}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_checked_by_code_and_control_id() {
        let ack = |code: &str, id: &str| format!("MSH|^~\\&|R|H|E|E|20261201||ACK|1|P|2.3.1\rMSA|{code}|{id}|text\r");
        assert_eq!(check_ack(&ack("AA", "HIEF1"), "HIEF1"), Ok(()));
        assert_eq!(check_ack(&ack("CA", "HIEF1"), "HIEF1"), Ok(()));
        assert!(matches!(check_ack(&ack("AR", "HIEF1"), "HIEF1"), Err(DeliveryError::Permanent(_))));
        assert!(matches!(check_ack(&ack("AE", "HIEF1"), "HIEF1"), Err(DeliveryError::Retryable(_))));
        assert!(
            matches!(check_ack(&ack("AA", "HIEF2"), "HIEF1"), Err(DeliveryError::Retryable(text)) if text.contains("HIEF2"))
        );
        assert!(matches!(check_ack("garbage", "HIEF1"), Err(DeliveryError::Retryable(_))));
    }
}
