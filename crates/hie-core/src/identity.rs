//! Patient identity in the affinity domain's terms: assigning authorities, identifiers, and the
//! rules that say which authority is the hospital's and which is the affinity domain's.

use crate::oid::Oid;

/// An HL7 HD (hierarchic designator) naming who issued an identifier.
///
/// Either part may be empty: senders write `HOSP`, `&1.2.3&ISO` or `HOSP&1.2.3&ISO` for the same
/// authority, so matching goes through [`AffinityDomain::key`], never through equality.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AssigningAuthority {
    pub namespace_id: String,
    pub universal_id: String,
    pub universal_id_type: String,
}

/// The canonical, comparable name of an assigning authority: its universal ID when it has one,
/// its namespace otherwise. Stored with every identifier so lookups are exact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthorityKey(String);

/// One patient identifier (an HL7 CX without the check digit parts we do not act on).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatientIdentifier {
    pub id: String,
    pub authority: AssigningAuthority,
    /// CX-5, e.g. `MR` or `PI`; kept so identifiers round-trip unchanged.
    pub id_type_code: String,
}

/// The affinity domain this broker serves, as configured.
#[derive(Debug, Clone)]
pub struct AffinityDomain {
    /// The affinity domain's assigning authority (`[affinity_domain] patient_id_authority`).
    patient_id_authority: Oid,
    /// The hospital's own MRN authority; identifiers without any authority are taken to be in it.
    local_authority: AssigningAuthority,
}

impl AssigningAuthority {
    pub fn is_empty(&self) -> bool {
        self.namespace_id.is_empty() && self.universal_id.is_empty()
    }
}

impl AuthorityKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a key read back from the store.
    pub fn from_stored(text: String) -> AuthorityKey {
        AuthorityKey(text)
    }
}

impl AffinityDomain {
    pub fn new(patient_id_authority: Oid, local_authority: AssigningAuthority) -> AffinityDomain {
        AffinityDomain { patient_id_authority, local_authority }
    }

    pub fn patient_id_authority(&self) -> &Oid {
        &self.patient_id_authority
    }

    pub fn local_authority(&self) -> &AssigningAuthority {
        &self.local_authority
    }

    /// Completes an authority from what the configuration knows: no authority at all means the
    /// local one, and a known namespace or OID gains its other half. This is what makes `HOSP` and
    /// `HOSP&1.2.3&ISO` the same authority.
    pub fn normalize(&self, authority: &AssigningAuthority) -> AssigningAuthority {
        if authority.is_empty() {
            return self.local_authority.clone();
        }
        let mut normalized = authority.clone();
        let local = &self.local_authority;
        let names_local = (!local.universal_id.is_empty() && authority.universal_id == local.universal_id)
            || (authority.universal_id.is_empty()
                && !local.namespace_id.is_empty()
                && authority.namespace_id == local.namespace_id);
        if names_local {
            if normalized.namespace_id.is_empty() {
                normalized.namespace_id.clone_from(&local.namespace_id);
            }
            if normalized.universal_id.is_empty() {
                normalized.universal_id.clone_from(&local.universal_id);
                normalized.universal_id_type.clone_from(&local.universal_id_type);
            }
        }
        if normalized.universal_id == self.patient_id_authority.as_str() && normalized.universal_id_type.is_empty() {
            normalized.universal_id_type = "ISO".to_owned();
        }
        normalized
    }

    /// The comparable key of an authority (after [`AffinityDomain::normalize`]).
    pub fn key(&self, authority: &AssigningAuthority) -> AuthorityKey {
        let normalized = self.normalize(authority);
        if normalized.universal_id.is_empty() {
            AuthorityKey(format!("ns:{}", normalized.namespace_id))
        } else {
            AuthorityKey(format!("uid:{}", normalized.universal_id))
        }
    }

    /// Whether an identifier is issued by the affinity domain (and so is the patient's
    /// affinity-domain ID, the one the registry knows).
    pub fn is_affinity_domain(&self, authority: &AssigningAuthority) -> bool {
        self.normalize(authority).universal_id == self.patient_id_authority.as_str()
    }

    /// Whether an identifier is the hospital's own MRN.
    pub fn is_local(&self, authority: &AssigningAuthority) -> bool {
        self.key(authority) == self.key(&self.local_authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(namespace_id: &str, universal_id: &str) -> AssigningAuthority {
        AssigningAuthority {
            namespace_id: namespace_id.to_owned(),
            universal_id: universal_id.to_owned(),
            universal_id_type: if universal_id.is_empty() { String::new() } else { "ISO".to_owned() },
        }
    }

    fn domain() -> AffinityDomain {
        AffinityDomain::new(Oid::parse("1.3.6.1.4.1.21367.13.20.1000").unwrap(), authority("HOSP", "1.2.3.4"))
    }

    #[test]
    fn empty_authority_is_local() {
        let domain = domain();
        assert!(domain.is_local(&AssigningAuthority::default()));
        assert_eq!(domain.key(&AssigningAuthority::default()), domain.key(&authority("", "1.2.3.4")));
    }

    #[test]
    fn namespace_and_oid_forms_of_the_local_authority_match() {
        let domain = domain();
        let by_namespace = domain.key(&authority("HOSP", ""));
        assert_eq!(by_namespace, domain.key(&authority("", "1.2.3.4")));
        assert_eq!(by_namespace, domain.key(&authority("HOSP", "1.2.3.4")));
        assert_ne!(by_namespace, domain.key(&authority("OTHER", "")));
    }

    #[test]
    fn affinity_domain_is_recognized_by_oid_only() {
        let domain = domain();
        assert!(domain.is_affinity_domain(&authority("", "1.3.6.1.4.1.21367.13.20.1000")));
        assert!(domain.is_affinity_domain(&authority("IHEBLUE", "1.3.6.1.4.1.21367.13.20.1000")));
        assert!(!domain.is_affinity_domain(&authority("HOSP", "")));
        assert!(!domain.is_affinity_domain(&AssigningAuthority::default()));
    }
}
