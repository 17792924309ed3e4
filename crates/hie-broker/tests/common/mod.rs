//! What the broker's store-backed tests share: the affinity domain they run in, and ADT messages
//! built from raw PID-3 and MRG-1 text and applied by the identity rules.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use hie_broker::patients::{ApplyError, apply_adt};
use hie_core::profile::PatientMergePolicy;
use hie_core::{AffinityDomain, AssigningAuthority, Oid};
use hie_hl7::adt::{AdtMessage, parse_adt};
use hie_store::{Store, now_micros};

pub const AFFINITY_OID: &str = "1.3.6.1.4.1.21367.13.20.1000";

/// The affinity domain `AFFINITY_OID`, the hospital's MRNs under `HOSP&1.2.840.99999.1.1&ISO`.
pub fn domain() -> AffinityDomain {
    AffinityDomain::new(
        Oid::parse(AFFINITY_OID).unwrap(),
        AssigningAuthority {
            namespace_id: "HOSP".to_owned(),
            universal_id: "1.2.840.99999.1.1".to_owned(),
            universal_id_type: "ISO".to_owned(),
        },
    )
}

/// An ADT message; `pid3` and `mrg1` are raw field text.
pub fn adt_message(event: &str, control_id: &str, pid3: &str, mrg1: Option<&str>) -> AdtMessage {
    let structure = if event == "A40" { "ADT_A39" } else { "ADT_A01" };
    let mut text = format!(
        "MSH|^~\\&|ADT|HOSP|HIE|HIE|20261128120000||ADT^{event}^{structure}|{control_id}|P|2.5\rEVN|{event}|20261128120000\r\
         PID|1||{pid3}||Doe^Ann||19800101|F\r"
    );
    if let Some(mrg1) = mrg1 {
        text.push_str(&format!("MRG|{mrg1}\r"));
    }
    parse_adt(&text).unwrap_or_else(|error| panic!("test message does not parse: {error:?}"))
}

/// Applies `message` in a transaction of its own: committed if the rules accept it, rolled back
/// (nothing written) if they refuse it.
pub async fn apply(store: &Store, merge: PatientMergePolicy, message: &AdtMessage) -> Result<(), ApplyError> {
    let mut tx = store.begin().await.unwrap();
    let result = apply_adt(&mut tx, &domain(), merge, message, now_micros()).await.map(|_| ());
    match result {
        Ok(()) => tx.commit().await.unwrap(),
        Err(_) => tx.rollback().await.unwrap(),
    }
    result
}

/// Builds and applies an ADT the rules must accept.
pub async fn adt(
    store: &Store,
    merge: PatientMergePolicy,
    event: &str,
    control_id: &str,
    pid3: &str,
    mrg1: Option<&str>,
) {
    let message = adt_message(event, control_id, pid3, mrg1);
    apply(store, merge, &message).await.unwrap_or_else(|error| panic!("{event} {control_id} refused: {error:?}"));
}
