//! hie-dicom-net: the DICOM upper layer (PS3.8) and DIMSE exchanges (PS3.7) over tokio TCP, for
//! both ends of the broker: the SCU that queries and retrieves from the local PACS, and the
//! storage SCP that takes instances (including C-MOVE sub-operations addressed to us).
//!
//! Why our own association layer: dicom-ul 0.10 is used only for its `pdu` module (PDU types,
//! `read_pdu`, `write_pdu`, pure functions over buffers), WITHOUT its `async` feature. Its
//! association objects do not give what the broker needs: PDU reads that refuse a declared length
//! before allocating it, the exact A-ASSOCIATE-RJ reasons, ARTIM and idle timers, data fragments
//! streamed to a sink, C-GET role negotiation and C-MOVE correlation. The DIMSE codec (command
//! sets, statuses, fragmentation, reassembly) is `hie-dimse`; this crate adds sockets and time.
//!
//! Modules:
//! - [`pdu_io`]: bounded async PDU reader (type and length checked on the 6-byte header before
//!   the body is read) and the PDU writer; `TCP_NODELAY` on every socket.
//! - [`association`]: an established association (either side): accepted presentation contexts,
//!   maximum PDU lengths, sending commands and data sets, [`association::Incoming`] messages,
//!   release and abort, every wait bounded.
//! - [`client`]: [`client::connect`], the requestor side of negotiation (A-ASSOCIATE-RQ with
//!   SCP/SCU role selection, AC/RJ/ABORT handling).
//! - [`scu`]: typed C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE and C-CANCEL operations.
//! - [`sink`]: [`sink::StoreSink`], where a received instance's data set streams to.
//! - [`header`]: [`header::HeaderCollector`], the prefix of a streamed data set before its
//!   Pixel Data; [`header::file_meta`], the one File Meta Information writer (PS3.10 7.1), and
//!   [`header::part10_header`], which puts it in front of a data set.
//! - [`server`]: the storage and verification SCP ([`server::serve`]), with the acceptor side of
//!   negotiation and its rejections.
//! - [`moves`]: [`moves::MoveRouter`], correlating C-MOVE sub-operations that arrive at our SCP
//!   with the C-MOVE the SCU side issued.
//! - [`pool`]: [`pool::AssociationPool`], bounded and reused associations per peer and purpose.
//! - [`error`]: [`NetError`], who is at fault and where, and its DIMSE status mapping.
//!
//! Invariant: no input from a peer panics this crate or makes it allocate what a length field
//! declares before the bytes are there; every await on a peer is bounded by a timeout.

pub mod association;
pub mod client;
pub mod error;
pub mod header;
pub mod moves;
pub mod pdu_io;
pub mod pool;
pub mod scu;
pub mod server;
pub mod sink;

mod dataset;

pub use association::{AbortedBy, Association, Incoming, PresentationContext};
pub use client::{ClientOptions, ProposedContext, Timeouts, connect};
pub use error::{NetError, TimeoutKind, Violation};
pub use header::{HeaderCollector, HeaderError, MetaIdentity, file_meta, part10_header};
pub use moves::{MoveEvent, MoveRegistration, MoveRouter, MoveSink};
pub use pool::{AssociationPool, PoolOptions, PooledAssociation};
pub use scu::{FindLimits, FindOutcome, FindStop, RetrieveFailure, RetrieveOptions, RetrieveOutcome};
pub use server::{AssociationInfo, ScpHandler, ServerEvent, ServerPolicy, ServerTimeouts, StorageClasses, serve};
pub use sink::{InstanceInfo, StoreSink};

/// Root of the UIDs this implementation mints for itself: a UUID-derived UID (PS3.5 B.2,
/// `2.25.` followed by the decimal value of a random 128-bit UUID generated once for hie-edge),
/// which is globally unique without a registered organisation root.
pub const UID_ROOT: &str = "2.25.266082774865395599690742923147408528395";

/// Implementation Class UID sent in every A-ASSOCIATE-RQ and -AC (PS3.7 D.3.3.2):
/// [`UID_ROOT`] followed by `.1` (arc 1 = the DICOM implementation).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.266082774865395599690742923147408528395.1";

/// Implementation Version Name (PS3.7 D.3.3.2): 1 to 16 characters of the default repertoire.
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("HIE_EDGE_", env!("CARGO_PKG_VERSION"));

/// DICOM Application Context Name (PS3.7 A.2.1), the only one defined.
pub const APPLICATION_CONTEXT_NAME: &str = "1.2.840.10008.3.1.1.1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implementation_identifiers_fit_their_fields() {
        assert!(IMPLEMENTATION_CLASS_UID.starts_with(UID_ROOT));
        assert!(IMPLEMENTATION_CLASS_UID.len() <= 64);
        assert!(IMPLEMENTATION_CLASS_UID.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.'));
        assert!((1..=16).contains(&IMPLEMENTATION_VERSION_NAME.len()), "{IMPLEMENTATION_VERSION_NAME}");
    }
}
