//! Sans-IO DIMSE codec for hie-edge: the message layer that dicom-ul lacks, on top of its PDU
//! types. Bytes and PDUs in, typed commands out, and back; no sockets, no async.
//!
//! A received message goes [`pdata::MessageAssembler::handle`] (PDVs in) → [`pdata::Event`]
//! (a [`command::Command`], then its data set fragment by fragment). A message sent goes
//! [`command::encode`] → [`pdata::fragment`] (PDUs within the peer's maximum length).
//! The async association layer (client pool, timeouts, SCP) lives in the I/O crates.
//!
//! Modules:
//! - [`command`]: command fields, typed C-ECHO/FIND/GET/MOVE/STORE/CANCEL, the command-set codec
//!   (Implicit VR Little Endian, group 0000) and [`DimseError`].
//! - [`status`]: [`Status`] with the standard's codes, [`StatusClass`], sub-operation counts and
//!   the C-GET/C-MOVE [`status::verdict`].
//! - [`pdata`]: P-DATA fragmentation within the peer's maximum PDU length, and reassembly.
//! - [`bounds`]: the declared-length pre-scan of data sets and Part 10 files, run before
//!   dicom-parser reads what a peer or a medium sent (hie-dicom-net's identifiers, hie-kos's
//!   instance headers and manifests).
//! - [`uids`]: SOP classes and transfer syntaxes we negotiate, from dicom-dictionary-std.
//! - `fuzzing` (tests and `cfg(fuzzing)` only): entry points for fuzz targets.
//!
//! Invariant: no input makes this crate panic or allocate more than the input it was given.

pub mod bounds;
pub mod command;
pub mod pdata;
pub mod status;
pub mod uids;

pub use command::{Command, CommandField, DataSetType, DimseError, Limits, Priority, decode, encode};
pub use pdata::{AssemblyError, Event, MaxPduLength, MessageAssembler};
pub use status::{Status, StatusClass, SubOperations};

/// Entry points for cargo-fuzz targets and the no-panic property tests.
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
