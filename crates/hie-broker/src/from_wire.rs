//! HL7 wire types -> domain types.

use hie_core::{AssigningAuthority, PatientIdentifier};
use hie_hl7::adt::{Cx, Hd};
use hie_store::patients::Demographics;

pub fn authority(hd: &Hd) -> AssigningAuthority {
    AssigningAuthority {
        namespace_id: hd.namespace_id.clone(),
        universal_id: hd.universal_id.clone(),
        universal_id_type: hd.universal_id_type.clone(),
    }
}

pub fn identifier(cx: &Cx) -> PatientIdentifier {
    PatientIdentifier { id: cx.id.clone(), authority: authority(&cx.authority), id_type_code: cx.id_type_code.clone() }
}

/// The first name in PID-5 and the scalar PID fields we keep.
pub fn demographics(pid: &hie_hl7::adt::Pid) -> Demographics {
    let (family_name, given_name) =
        pid.names.first().map(|name| (name.family.clone(), name.given.clone())).unwrap_or_default();
    Demographics { family_name, given_name, birth_date: pid.birth_date.clone(), sex: pid.sex.clone() }
}
