//! [`NetError`]: every way an association or a DIMSE operation can fail, saying who is at fault
//! (the peer, us, the network) and where, and the DIMSE status an SCP answers with when it has to
//! report one of them to its own peer ([`NetError::to_status`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use dicom_ul::pdu::{AbortRQSource, AssociationRJResult, AssociationRJSource};
use hie_dimse::{AssemblyError, Command, DimseError, Status};

use crate::association::AbortedBy;
use crate::pdu_io::PduError;
use crate::scu::RetrieveFailure;

/// Why an association or an operation on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The peer's host name could not be resolved (DNS down or the name is wrong).
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: std::io::Error },
    /// The TCP connection to the peer could not be opened (network or peer down).
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    /// The peer rejected the association (A-ASSOCIATE-RJ, PS3.8 9.3.4).
    #[error("association rejected ({}) by the {}: {reason}", result_words(result), source_words(reason))]
    Rejected { result: AssociationRJResult, reason: AssociationRJSource },
    /// The association was aborted (A-ABORT, PS3.8 9.3.8), by the peer or by us.
    #[error("association aborted by {by} ({}) {context}", abort_words(reason))]
    Aborted { by: AbortedBy, reason: AbortRQSource, context: &'static str },
    /// The peer closed the TCP connection without A-RELEASE or A-ABORT.
    #[error("peer closed the connection {context}")]
    Closed { context: &'static str },
    /// The association is no longer usable (released, aborted or failed earlier).
    #[error("the association is already closed")]
    AssociationClosed,
    /// No presentation context for this abstract syntax was accepted (or none in the role needed).
    #[error("no accepted presentation context for {abstract_syntax}{}", if *.as_scp { " with the SCP role" } else { "" })]
    NoAcceptedContext { abstract_syntax: String, as_scp: bool },
    /// A timer ran out; the association was aborted unless the kind says otherwise.
    #[error("{which} timeout after {after:?}")]
    Timeout { which: TimeoutKind, after: Duration },
    /// The peer broke the upper-layer or DIMSE protocol; we aborted the association.
    #[error("protocol violation by the peer: {0}")]
    PeerViolation(Violation),
    /// The peer answered an operation with a failure status.
    #[error("{operation} failed with status {status} ({}){}", status_meaning(*status), comment_suffix(error_comment))]
    Refused { operation: &'static str, status: Status, error_comment: Option<String> },
    /// A C-GET or C-MOVE did not deliver what it was asked for (see [`RetrieveFailure`]).
    #[error("{0}")]
    Retrieve(RetrieveFailure),
    /// What we were asked to send is not valid (our caller's fault, nothing was sent).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The data source of a C-STORE failed while it was being sent; the association was aborted.
    #[error("reading the data set to send failed: {0}")]
    Source(std::io::Error),
    /// Socket error while the association was established.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Which timer ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Opening the TCP connection.
    Connect,
    /// ARTIM (PS3.8 9.1.5): waiting for the A-ASSOCIATE-AC/RJ, or (SCP) for the A-ASSOCIATE-RQ.
    Association,
    /// Waiting for the next PDU from the peer during an operation.
    Dimse,
    /// SCP: no PDU from the peer for the idle time of an established association.
    Idle,
    /// The total time the caller allowed for one operation (C-CANCEL was sent first).
    Operation,
    /// After our C-CANCEL-RQ, the peer sent no final response in time.
    Cancel,
    /// Waiting for the A-RELEASE-RP (ARTIM).
    Release,
    /// Sending a PDU: the peer stopped reading.
    Write,
    /// Waiting for a free association in a pool.
    PoolAcquire,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::Association => "association (ARTIM)",
            TimeoutKind::Dimse => "DIMSE",
            TimeoutKind::Idle => "idle association",
            TimeoutKind::Operation => "operation",
            TimeoutKind::Cancel => "C-CANCEL (no final response)",
            TimeoutKind::Release => "release (ARTIM)",
            TimeoutKind::Write => "write",
            TimeoutKind::PoolAcquire => "pool acquire",
        })
    }
}

/// How the peer broke the protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A PDU that could not be read (unknown type, bad length, malformed body).
    #[error("{0}")]
    Pdu(#[from] PduError),
    /// PDVs that do not form DIMSE messages (PS3.8 E.2, PS3.7 6.3).
    #[error("{0}")]
    Assembly(#[from] AssemblyError),
    /// A PDU that is valid but not allowed in the association's state (PS3.8 9.2 state table).
    #[error("unexpected {pdu} {state}")]
    UnexpectedPdu { pdu: &'static str, state: &'static str },
    /// A PDV on a presentation context that was not accepted.
    #[error("PDV on presentation context {0}, which was not accepted")]
    UnknownPresentationContext(u8),
    /// A P-DATA-TF PDU without any PDV (PS3.8 9.3.5 requires one or more).
    #[error("P-DATA-TF without presentation data values")]
    EmptyPData,
    /// A DIMSE message that does not belong where it came (a response to another message ID, a
    /// request in the middle of an operation, a C-STORE on a context we are not SCP for...).
    #[error("unexpected {command} {state}")]
    UnexpectedCommand { command: String, state: &'static str },
    /// A data set (C-FIND identifier) that dicom-object cannot decode, or whose declared lengths
    /// run past its end.
    #[error("malformed data set: {0}")]
    MalformedDataSet(String),
    /// The A-ASSOCIATE-AC does not match our A-ASSOCIATE-RQ.
    #[error("A-ASSOCIATE-AC: {0}")]
    BadAssociateAc(String),
    /// The peer declared a maximum PDU length we cannot honour.
    #[error("{0}")]
    MaxPduLength(AssemblyError),
}

impl Violation {
    pub(crate) fn unexpected_command(command: &Command, state: &'static str) -> Violation {
        Violation::UnexpectedCommand { command: format!("{:?}", command.command_field()), state }
    }
}

impl From<DimseError> for Violation {
    fn from(error: DimseError) -> Violation {
        Violation::Assembly(AssemblyError::Command(error))
    }
}

impl NetError {
    /// The status an SCP answers its own peer with when this error stops it from serving a
    /// request (for example a C-MOVE SCP whose onward retrieval failed): a failure the PACS
    /// reported is passed on as it is; our own resources or a third party's failure become "out
    /// of resources" (PS3.7 C.5.4 0xA700-class) so that the peer may retry; everything else is
    /// "unable to process" (0xC000, PS3.4 C.4.1.1.4).
    pub fn to_status(&self) -> Status {
        match self {
            NetError::Refused { status, .. } => *status,
            NetError::Retrieve(RetrieveFailure::SubOperations {
                failure: hie_dimse::status::SubOperationFailure::Failed { status, .. },
                ..
            }) => *status,
            NetError::Retrieve(_) => Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES,
            NetError::NoAcceptedContext { .. } => Status::SOP_CLASS_NOT_SUPPORTED,
            NetError::Connect { .. }
            | NetError::Resolve { .. }
            | NetError::Rejected { .. }
            | NetError::Timeout { .. }
            | NetError::Closed { .. }
            | NetError::Aborted { .. }
            | NetError::Io(_) => Status::OUT_OF_RESOURCES,
            _ => Status::UNABLE_TO_PROCESS,
        }
    }

    /// Whether the failure is the transport's or a closed peer's, the kind of failure a pooled
    /// association that died while idle shows on its first use.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, NetError::Closed { .. } | NetError::Io(_) | NetError::AssociationClosed)
            || matches!(self, NetError::Aborted { by: AbortedBy::Peer, .. })
    }
}

fn result_words(result: &AssociationRJResult) -> &'static str {
    match result {
        AssociationRJResult::Permanent => "permanent",
        AssociationRJResult::Transient => "transient",
    }
}

fn source_words(source: &AssociationRJSource) -> &'static str {
    match source {
        AssociationRJSource::ServiceUser(_) => "service-user",
        AssociationRJSource::ServiceProviderASCE(_) => "service-provider (ACSE)",
        AssociationRJSource::ServiceProviderPresentation(_) => "service-provider (presentation)",
    }
}

/// A-ABORT source and reason in words (PS3.8 Table 9-26).
pub(crate) fn abort_words(source: &AbortRQSource) -> String {
    match source {
        AbortRQSource::ServiceUser => "service-user".to_owned(),
        AbortRQSource::ServiceProvider(reason) => format!("service-provider: {reason}"),
        AbortRQSource::Reserved => "reserved source".to_owned(),
    }
}

/// The meaning of the statuses a PACS commonly answers with (PS3.4 C.4 and PS3.7 Annex C).
pub(crate) fn status_meaning(status: Status) -> &'static str {
    match status.0 {
        0x0000 => "success",
        0xFE00 => "cancelled",
        0xFF00 | 0xFF01 => "pending",
        0xA700 => "out of resources",
        0xA701 => "out of resources: unable to calculate number of matches",
        0xA702 => "out of resources: unable to perform sub-operations",
        0xA801 => "move destination unknown",
        0xA900 => "identifier does not match SOP class",
        0x0122 => "SOP class not supported",
        0x0124 => "not authorized",
        0x0211 => "unrecognized operation",
        0x0110 => "processing failure",
        0x0111 => "duplicate SOP instance",
        0xB000..=0xBFFF => "warning",
        0xC000..=0xCFFF => "unable to process",
        _ => match status.class() {
            hie_dimse::StatusClass::Warning => "warning",
            _ => "failure",
        },
    }
}

fn comment_suffix(comment: &Option<String>) -> String {
    comment.as_ref().map(|comment| format!(": {comment}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{AbortRQServiceProviderReason, AssociationRJServiceUserReason};

    #[test]
    fn rejections_and_aborts_read_in_words() {
        let rejected = NetError::Rejected {
            result: AssociationRJResult::Permanent,
            reason: AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
        };
        assert_eq!(
            rejected.to_string(),
            "association rejected (permanent) by the service-user: called AE title not recognized"
        );
        let aborted = NetError::Aborted {
            by: AbortedBy::Peer,
            reason: AbortRQSource::ServiceProvider(AbortRQServiceProviderReason::UnexpectedPdu),
            context: "while waiting for a C-FIND-RSP",
        };
        assert_eq!(
            aborted.to_string(),
            "association aborted by the peer (service-provider: unexpected PDU) while waiting for a C-FIND-RSP"
        );
        let refused =
            NetError::Refused { operation: "C-MOVE", status: Status(0xA801), error_comment: Some("who?".to_owned()) };
        assert_eq!(refused.to_string(), "C-MOVE failed with status 0xA801 (move destination unknown): who?");
        assert_eq!(refused.to_status(), Status::MOVE_DESTINATION_UNKNOWN);
    }
}
