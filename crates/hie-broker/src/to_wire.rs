//! Domain and store types -> HL7 wire text.

use hie_hl7::adt::{Cx, Hd};
use hie_store::patients::IdentifierRow;

/// A stored identifier as an HL7 CX string (`id^^^ns&uid&type^code`), escaped.
pub fn cx_string(row: &IdentifierRow) -> String {
    Cx {
        id: row.id_value.clone(),
        check_digit: String::new(),
        check_digit_scheme: String::new(),
        authority: Hd {
            namespace_id: row.namespace_id.clone(),
            universal_id: row.universal_id.clone(),
            universal_id_type: row.universal_id_type.clone(),
        },
        id_type_code: row.id_type_code.clone(),
    }
    .to_cx_string()
}
