//! Identifiers the registry hands out or checks: entryUUIDs (`urn:uuid:` + RFC 4122 version 4),
//! patient ids in the affinity domain's canonical CX form, and DTM values padded for comparison.

use hie_core::Oid;
use hie_hl7::adt::Cx;
use rand::Rng;

/// The URN prefix of UUID ids (ITI TF-3 4.2.3.1.5: an id is a UUID URN or a symbolic id).
pub const UUID_URN_PREFIX: &str = "urn:uuid:";

/// A fresh `urn:uuid:` id (RFC 4122 4.4: random, version 4, variant 10).
pub fn new_uuid() -> String {
    let mut bytes: [u8; UUID_BYTES] = rand::rng().random();
    bytes[VERSION_BYTE] = (bytes[VERSION_BYTE] & 0x0f) | 0x40;
    bytes[VARIANT_BYTE] = (bytes[VARIANT_BYTE] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{UUID_URN_PREFIX}{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Whether `id` is meant as a UUID (it has the URN prefix, in any case) rather than symbolic.
pub fn is_uuid_form(id: &str) -> bool {
    id.len() >= UUID_URN_PREFIX.len() && id[..UUID_URN_PREFIX.len()].eq_ignore_ascii_case(UUID_URN_PREFIX)
}

/// The canonical (lower-case) form of a `urn:uuid:` id, or `None` if it is not a well-formed UUID.
pub fn canonical_uuid(id: &str) -> Option<String> {
    if !is_uuid_form(id) {
        return None;
    }
    let uuid = &id[UUID_URN_PREFIX.len()..];
    let groups: Vec<&str> = uuid.split('-').collect();
    let well_formed = groups.len() == UUID_GROUP_LENGTHS.len()
        && groups
            .iter()
            .zip(UUID_GROUP_LENGTHS)
            .all(|(group, length)| group.len() == length && group.bytes().all(|byte| byte.is_ascii_hexdigit()));
    well_formed.then(|| format!("{UUID_URN_PREFIX}{}", uuid.to_ascii_lowercase()))
}

/// Why a patientId is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientIdProblem {
    /// Not a CX with an id and an ISO assigning authority (ITI TF-3 4.2.3.2.16).
    Malformed,
    /// Well formed, in another assigning authority than the affinity domain's.
    OtherDomain,
}

/// The canonical `id^^^&oid&ISO` of a patientId in the affinity domain `authority`.
pub fn canonical_patient_id(value: &str, authority: &Oid) -> Result<String, PatientIdProblem> {
    let cx = Cx::parse(value.trim()).map_err(|_| PatientIdProblem::Malformed)?;
    if cx.authority.universal_id.is_empty() || !cx.authority.universal_id_type.eq_ignore_ascii_case(ISO) {
        return Err(PatientIdProblem::Malformed);
    }
    if cx.authority.universal_id != authority.as_str() {
        return Err(PatientIdProblem::OtherDomain);
    }
    Ok(patient_key(&cx.id, authority))
}

/// The canonical form of an identifier `id` in `authority`.
pub fn patient_key(id: &str, authority: &Oid) -> String {
    format!("{id}^^^&{authority}&{ISO}")
}

/// A DTM (`YYYY[MM[DD[HH[MM[SS]]]]]`, ITI TF-3 4.2.3.1.3) padded with zeros to 14 digits, so DTMs
/// compare as text; `None` if `value` is not a DTM.
pub fn padded_dtm(value: &str) -> Option<String> {
    let value = value.trim();
    let well_formed = DTM_LENGTHS.contains(&value.len()) && value.bytes().all(|byte| byte.is_ascii_digit());
    well_formed.then(|| format!("{value:0<width$}", width = PADDED_DTM_LENGTH))
}

const UUID_BYTES: usize = 16;
/// Byte holding the version nibble (RFC 4122 4.1.3).
const VERSION_BYTE: usize = 6;
/// Byte holding the variant bits (RFC 4122 4.1.1).
const VARIANT_BYTE: usize = 8;
const UUID_GROUP_LENGTHS: [usize; 5] = [8, 4, 4, 4, 12];
/// The universal id type of an OID authority (HL7 table 0301).
const ISO: &str = "ISO";
const DTM_LENGTHS: [usize; 6] = [4, 6, 8, 10, 12, 14];
const PADDED_DTM_LENGTH: usize = 14;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_uuids_are_version_4_and_canonical() {
        let uuid = new_uuid();
        assert_eq!(canonical_uuid(&uuid).as_deref(), Some(uuid.as_str()));
        assert_eq!(&uuid[UUID_URN_PREFIX.len() + 14..UUID_URN_PREFIX.len() + 15], "4");
        assert_ne!(new_uuid(), uuid);
    }

    #[test]
    fn uuid_forms() {
        assert_eq!(
            canonical_uuid("URN:UUID:AABBCCDD-BDDA-424E-8C96-DF4873BE8501").as_deref(),
            Some("urn:uuid:aabbccdd-bdda-424e-8c96-df4873be8501")
        );
        assert_eq!(canonical_uuid("urn:uuid:aabbccdd-bdda-UUIDPREFIX-df4873be8501"), None);
        assert!(is_uuid_form("urn:uuid:x"));
        assert!(!is_uuid_form("Document01"));
    }

    #[test]
    fn patient_ids_are_canonical_in_the_domain() {
        let domain = Oid::parse("1.2.3").unwrap();
        assert_eq!(canonical_patient_id("P1^^^&1.2.3&ISO", &domain), Ok("P1^^^&1.2.3&ISO".to_owned()));
        assert_eq!(canonical_patient_id("P1^^^NS&1.2.3&iso", &domain), Ok("P1^^^&1.2.3&ISO".to_owned()));
        assert_eq!(canonical_patient_id("P1^^^&1.2.4&ISO", &domain), Err(PatientIdProblem::OtherDomain));
        assert_eq!(canonical_patient_id("MYPATIENTID", &domain), Err(PatientIdProblem::Malformed));
        assert_eq!(canonical_patient_id("^^^&1.2.3&ISO", &domain), Err(PatientIdProblem::Malformed));
    }

    #[test]
    fn dtm_is_padded() {
        assert_eq!(padded_dtm("20051224").as_deref(), Some("20051224000000"));
        assert_eq!(padded_dtm("20051224235959").as_deref(), Some("20051224235959"));
        assert_eq!(padded_dtm("2005122"), None);
        assert_eq!(padded_dtm("2005-12-24"), None);
    }
}
