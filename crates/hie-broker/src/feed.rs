//! The identity feed to the registry (ITI-8, Patient Identity Feed, HL7 v2.3.1; ITI TF-2 3.8):
//! what an outbox item of [`crate::patients::IDENTITY_FEED_TOPIC`] means, and the ADT message
//! that tells the registry about the patient as the store knows them now.
//!
//! A Document Registry keeps only the affinity domain's identifiers (ITI8-5, ITI8-6), so PID-3
//! carries the patient's affinity-domain ID alone. Events: A01 (the registry learns a new
//! patient; ITI-8 admits A01/A04/A05 for that), A08 (an update, also used for A47: a changed
//! local identifier is no news to the registry), A40 (a merge, with MRG-1 the prior patient's
//! affinity-domain ID). The message is built from the store at delivery time, so a feed that
//! waited in the outbox sends the patient's current demographics.

use hie_core::AffinityDomain;
use hie_hl7::message::Separators;
use hie_store::patients::{IdentifierRow, PatientRecord};

/// One feed item, parsed from its outbox payload (`event=A40;patient=7;prior=3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedItem {
    /// The ADT event that caused it (A01, A04, A08, A40, A47...).
    pub event: String,
    pub patient: i64,
    /// The merged-away patient, for a merge.
    pub prior: Option<i64>,
}

impl FeedItem {
    pub fn parse(payload: &str) -> Option<FeedItem> {
        let mut event = None;
        let mut patient = None;
        let mut prior = None;
        for part in payload.split(';') {
            match part.split_once('=')? {
                ("event", value) => event = Some(value.to_owned()),
                ("patient", value) => patient = Some(value.parse().ok()?),
                ("prior", value) => prior = Some(value.parse().ok()?),
                _ => return None,
            }
        }
        Some(FeedItem { event: event?, patient: patient?, prior })
    }

    /// The trigger event sent to the registry.
    pub fn trigger(&self) -> &'static str {
        match self.event.as_str() {
            _ if self.prior.is_some() => "A40",
            "A01" | "A04" | "A05" | "A28" => "A01",
            _ => "A08",
        }
    }
}

/// Who sends and who receives (MSH-3/4 and MSH-5/6).
#[derive(Debug, Clone)]
pub struct FeedParties {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
}

/// Why a feed item can't be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The patient (or the prior patient of a merge) has no active affinity-domain identifier:
    /// the registry can't be told about them.
    #[error("patient #{0} has no active affinity-domain identifier")]
    NoAffinityDomainId(i64),
}

/// The ADT message (segments separated by CR) for `item`, in HL7 v2.3.1 as ITI-8 prescribes.
pub fn iti8_message(
    item: &FeedItem,
    patient: &PatientRecord,
    prior: Option<&PatientRecord>,
    domain: &AffinityDomain,
    parties: &FeedParties,
    control_id: &str,
    timestamp: &str,
) -> Result<String, FeedError> {
    let separators = Separators::default();
    let escape = |text: &str| hie_hl7::escape::encode(text, &separators).into_owned();
    let pid3 = affinity_cx(patient, domain).ok_or(FeedError::NoAffinityDomainId(patient.patient.id))?;
    let trigger = item.trigger();
    // ITI TF-2 3.8.4.1.2: ADT^A01 for A01/A04/A05, ADT^A08 for updates, ADT^A40^ADT_A39 for merges.
    let structure = match trigger {
        "A40" => "ADT^A40^ADT_A39",
        "A08" => "ADT^A08",
        _ => "ADT^A01",
    };
    let demographics = &patient.patient.demographics;
    let mut text = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{timestamp}||{structure}|{}|P|2.3.1\rEVN|{trigger}|{timestamp}\r",
        escape(&parties.sending_application),
        escape(&parties.sending_facility),
        escape(&parties.receiving_application),
        escape(&parties.receiving_facility),
        escape(control_id),
    );
    let name = format!("{}^{}", escape(&demographics.family_name), escape(&demographics.given_name));
    let name = if name == "^" { String::new() } else { name };
    text.push_str(&format!(
        "PID|||{pid3}||{name}||{}|{}\r",
        escape(&demographics.birth_date),
        escape(&demographics.sex)
    ));
    if trigger == "A40" {
        let prior = prior.ok_or(FeedError::NoAffinityDomainId(item.prior.unwrap_or_default()))?;
        let mrg1 = affinity_cx_any(prior, domain).ok_or(FeedError::NoAffinityDomainId(prior.patient.id))?;
        text.push_str(&format!("MRG|{mrg1}\r"));
    } else {
        // PV1 is required in A01/A08 (v2.3.1); class N (not applicable) for an identity feed.
        text.push_str("PV1||N\r");
    }
    Ok(text)
}

/// The patient's active affinity-domain identifier as CX.
fn affinity_cx(patient: &PatientRecord, domain: &AffinityDomain) -> Option<String> {
    affinity_rows(patient, domain).find(|row| row.active).map(crate::to_wire::cx_string)
}

/// A merged-away patient's affinity-domain identifier, active or not (a merge may retire it).
fn affinity_cx_any(patient: &PatientRecord, domain: &AffinityDomain) -> Option<String> {
    let mut rows: Vec<&IdentifierRow> = affinity_rows(patient, domain).collect();
    rows.sort_by_key(|row| !row.active);
    rows.first().map(|row| crate::to_wire::cx_string(row))
}

fn affinity_rows<'a>(patient: &'a PatientRecord, domain: &AffinityDomain) -> impl Iterator<Item = &'a IdentifierRow> {
    let key = affinity_key(domain);
    patient.identifiers.iter().filter(move |row| row.authority_key == key)
}

fn affinity_key(domain: &AffinityDomain) -> String {
    domain
        .key(&hie_core::AssigningAuthority {
            universal_id: domain.patient_id_authority().to_string(),
            universal_id_type: "ISO".to_owned(),
            ..Default::default()
        })
        .as_str()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use hie_core::{AssigningAuthority, Oid};
    use hie_store::patients::{Demographics, PatientRow};

    use super::*;

    fn domain() -> AffinityDomain {
        AffinityDomain::new(
            Oid::parse("1.3.6.1.4.1.21367.13.20.1000").unwrap(),
            AssigningAuthority { namespace_id: "HOSP".to_owned(), ..Default::default() },
        )
    }

    fn record(id: i64, ad_id: Option<&str>, active: bool) -> PatientRecord {
        let mut identifiers = vec![IdentifierRow {
            authority_key: "ns:HOSP".to_owned(),
            id_value: format!("MRN{id}"),
            patient_id: id,
            namespace_id: "HOSP".to_owned(),
            universal_id: String::new(),
            universal_id_type: String::new(),
            id_type_code: "MR".to_owned(),
            active: true,
        }];
        if let Some(ad_id) = ad_id {
            identifiers.push(IdentifierRow {
                authority_key: "uid:1.3.6.1.4.1.21367.13.20.1000".to_owned(),
                id_value: ad_id.to_owned(),
                patient_id: id,
                namespace_id: "IHEBLUE".to_owned(),
                universal_id: "1.3.6.1.4.1.21367.13.20.1000".to_owned(),
                universal_id_type: "ISO".to_owned(),
                id_type_code: String::new(),
                active,
            });
        }
        PatientRecord {
            patient: PatientRow {
                id,
                merged_into: None,
                demographics: Demographics {
                    family_name: "Müller|Smith".to_owned(),
                    given_name: "Ann".to_owned(),
                    birth_date: "19800101".to_owned(),
                    sex: "F".to_owned(),
                },
            },
            identifiers,
            history: Vec::new(),
        }
    }

    fn parties() -> FeedParties {
        FeedParties {
            sending_application: "HIE_EDGE".to_owned(),
            sending_facility: "HOSP".to_owned(),
            receiving_application: "REGISTRY".to_owned(),
            receiving_facility: "HIE".to_owned(),
        }
    }

    #[test]
    fn payloads_parse_and_pick_the_trigger() {
        let create = FeedItem::parse("event=A04;patient=7").unwrap();
        assert_eq!((create.patient, create.prior, create.trigger()), (7, None, "A01"));
        assert_eq!(FeedItem::parse("event=A08;patient=7").unwrap().trigger(), "A08");
        assert_eq!(FeedItem::parse("event=A47;patient=7").unwrap().trigger(), "A08");
        let merge = FeedItem::parse("event=A40;patient=7;prior=3").unwrap();
        assert_eq!((merge.prior, merge.trigger()), (Some(3), "A40"));
        for bad in ["", "event=A01", "patient=x;event=A01", "event=A01;patient=1;colour=2"] {
            assert!(FeedItem::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_feed_carries_only_the_affinity_domain_id_and_parses_back() {
        let item = FeedItem::parse("event=A01;patient=7").unwrap();
        let text =
            iti8_message(&item, &record(7, Some("AD7"), true), None, &domain(), &parties(), "F-1", "20261201120000")
                .unwrap();
        let message = hie_hl7::adt::parse_adt(&text).unwrap();
        assert_eq!(message.header.control_id, "F-1");
        let pid3 = &message.groups[0].pid.identifiers;
        assert_eq!(pid3.len(), 1, "{text}");
        assert_eq!(pid3[0].id, "AD7");
        assert_eq!(pid3[0].authority.universal_id, "1.3.6.1.4.1.21367.13.20.1000");
        assert!(text.contains("Müller\\F\\Smith"), "escaped: {text}");
        assert!(text.contains("|2.3.1\r"), "{text}");
    }

    #[test]
    fn a_merge_names_the_prior_patient_in_mrg() {
        let item = FeedItem::parse("event=A40;patient=7;prior=3").unwrap();
        let survivor = record(7, Some("AD7"), true);
        let prior = record(3, Some("AD3"), false);
        let text =
            iti8_message(&item, &survivor, Some(&prior), &domain(), &parties(), "F-2", "20261201120000").unwrap();
        assert!(text.contains("ADT^A40^ADT_A39"), "{text}");
        assert!(text.contains("MRG|AD3^^^IHEBLUE&1.3.6.1.4.1.21367.13.20.1000&ISO\r"), "{text}");
        let message = hie_hl7::adt::parse_adt(&text).unwrap();
        assert!(message.event.has_merge_groups());
    }

    #[test]
    fn a_patient_without_an_affinity_domain_id_is_refused() {
        let item = FeedItem::parse("event=A01;patient=7").unwrap();
        let error = iti8_message(&item, &record(7, None, true), None, &domain(), &parties(), "F", "20261201120000");
        assert_eq!(error, Err(FeedError::NoAffinityDomainId(7)));
    }
}
