//! Domain vocabulary shared by every hie-edge crate: patient identifiers in an assigning
//! authority, OIDs, and the affinity domain the broker serves.
//!
//! No I/O, no async, no serde: wire formats map to and from these types in `hie-broker`
//! (`to_wire`/`from_wire`), and API DTOs live in `hie-inbound`.
//!
//! Modules:
//! - [`oid`]: ISO object identifiers, built only by parsing.
//! - [`clock`]: UTC calendar formatting for HL7 and the API.
//! - [`identity`]: assigning authorities, patient identifiers and the affinity domain.
//! - [`profile`]: the affinity-domain profile: prescribed codes, mappings, allowed code sets.

pub mod clock;
pub mod identity;
pub mod oid;
pub mod profile;

pub use identity::{AffinityDomain, AssigningAuthority, AuthorityKey, PatientIdentifier};
pub use oid::{Oid, OidError};
