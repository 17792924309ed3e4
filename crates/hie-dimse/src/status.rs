//! DIMSE statuses (DICOM PS3.7 Annex C and the per-service status tables of 9.1) and the
//! sub-operation verdict of C-GET and C-MOVE.
//!
//! A status is a `u16`, kept as received: the standard gives several services the same code
//! with different meanings (0xB000 is "coercion of data elements" for C-STORE and "sub-operations
//! complete, one or more failures" for C-GET/C-MOVE), so the names below are aliases, not an
//! exhaustive enum.

use std::fmt;

/// Status (0000,0900).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

/// The class of a status, DICOM PS3.7 C.1 to C.4 (Table C-1 ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    Success,
    Warning,
    Failure,
    Cancel,
    Pending,
}

impl Status {
    // PS3.7 C.1 Success.
    pub const SUCCESS: Status = Status(0x0000);

    // PS3.7 C.2 Pending (C-FIND, C-GET, C-MOVE).
    pub const PENDING: Status = Status(0xFF00);
    /// C-FIND: matches are continuing, but one or more Optional Keys were not supported.
    pub const PENDING_OPTIONAL_KEYS_NOT_SUPPORTED: Status = Status(0xFF01);

    // PS3.7 C.3 Cancel.
    pub const CANCEL: Status = Status(0xFE00);

    // PS3.7 C.4 Warning.
    /// Warning (general; PS3.7 C.4.1).
    pub const WARNING: Status = Status(0x0001);
    /// Attribute list error (PS3.7 C.4.2).
    pub const ATTRIBUTE_LIST_ERROR: Status = Status(0x0107);
    /// Attribute value out of range (PS3.7 C.4.3).
    pub const ATTRIBUTE_VALUE_OUT_OF_RANGE: Status = Status(0x0116);
    /// C-STORE: coercion of data elements (PS3.4 Table B.2-1).
    pub const COERCION_OF_DATA_ELEMENTS: Status = Status(0xB000);
    /// C-GET/C-MOVE: sub-operations complete, one or more failures or warnings (PS3.4 C.4.2.1.5).
    pub const SUB_OPERATIONS_COMPLETE_WITH_FAILURES: Status = Status(0xB000);
    /// C-STORE: elements discarded (PS3.4 Table B.2-1).
    pub const ELEMENTS_DISCARDED: Status = Status(0xB006);
    /// C-STORE: data set does not match SOP class, stored anyway (PS3.4 Table B.2-1).
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: Status = Status(0xB007);

    // PS3.7 C.5 Failure, and the service-specific refusals of PS3.4.
    /// Refused: out of resources (C-STORE, C-FIND).
    pub const OUT_OF_RESOURCES: Status = Status(0xA700);
    /// C-GET/C-MOVE refused: out of resources, unable to calculate number of matches.
    pub const OUT_OF_RESOURCES_NUMBER_OF_MATCHES: Status = Status(0xA701);
    /// C-GET/C-MOVE refused: out of resources, unable to perform sub-operations.
    pub const OUT_OF_RESOURCES_SUB_OPERATIONS: Status = Status(0xA702);
    /// C-MOVE refused: move destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: Status = Status(0xA801);
    /// C-FIND/C-GET/C-MOVE: identifier does not match SOP class.
    pub const IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: Status = Status(0xA900);
    /// C-STORE error: data set does not match SOP class.
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Status = Status(0xA900);
    /// Unable to process (C-FIND, C-GET, C-MOVE) / cannot understand (C-STORE): the first of the
    /// implementation-defined range C000H-CFFFH.
    pub const UNABLE_TO_PROCESS: Status = Status(0xC000);
    /// Processing failure (PS3.7 C.5.3).
    pub const PROCESSING_FAILURE: Status = Status(0x0110);
    /// Duplicate SOP Instance (PS3.7 C.5.8).
    pub const DUPLICATE_SOP_INSTANCE: Status = Status(0x0111);
    /// No such SOP Class (PS3.7 C.5.14).
    pub const NO_SUCH_SOP_CLASS: Status = Status(0x0118);
    /// SOP Class not supported (PS3.7 C.5.20).
    pub const SOP_CLASS_NOT_SUPPORTED: Status = Status(0x0122);
    /// Not authorized (PS3.7 C.5.22).
    pub const NOT_AUTHORIZED: Status = Status(0x0124);
    /// Duplicate invocation (PS3.7 C.5.9).
    pub const DUPLICATE_INVOCATION: Status = Status(0x0210);
    /// Unrecognized operation (PS3.7 C.5.19).
    pub const UNRECOGNIZED_OPERATION: Status = Status(0x0211);
    /// Mistyped argument (PS3.7 C.5.15).
    pub const MISTYPED_ARGUMENT: Status = Status(0x0212);
    /// Resource limitation (PS3.7 C.5.17).
    pub const RESOURCE_LIMITATION: Status = Status(0x0213);

    /// The class of this status per PS3.7 Annex C.
    ///
    /// Codes the standard does not assign are classed as [`StatusClass::Failure`]: a status we
    /// cannot interpret must not be taken for success.
    pub fn class(self) -> StatusClass {
        match self.0 {
            0x0000 => StatusClass::Success,
            0xFF00 | 0xFF01 => StatusClass::Pending,
            0xFE00 => StatusClass::Cancel,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusClass::Warning,
            _ => StatusClass::Failure,
        }
    }

    /// Whether more responses follow for the same request.
    pub fn is_pending(self) -> bool {
        self.class() == StatusClass::Pending
    }

    /// Whether the standard assigns this code (PS3.7 Annex C, PS3.4 service tables) rather than
    /// it being a peer's invention that [`Status::class`] treats as a failure.
    pub fn is_assigned(self) -> bool {
        matches!(
            self.0,
            0x0000
                | 0x0001
                | 0x0105..=0x0107
                | 0x0110..=0x0124
                | 0x0210..=0x0213
                | 0xA000..=0xAFFF
                | 0xB000..=0xBFFF
                | 0xC000..=0xCFFF
                | 0xFE00
                | 0xFF00
                | 0xFF01
        )
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({:#06X} {:?})", self.0, self.class())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06X}", self.0)
    }
}

/// Sub-operation counts of a C-GET or C-MOVE response (PS3.7 Table 9.3-6/9.3-8, elements
/// (0000,1020) to (0000,1023)). Each is conditional, so each is optional: pending responses
/// carry `remaining`, final ones `completed`, `failed` and `warning`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
}

/// A C-GET or C-MOVE whose final response and counts show every instance delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Final Success, no failed sub-operation, and every expected instance delivered.
    Success { completed: u32 },
    /// Every expected instance delivered, some with warnings (a warning C-STORE still stores).
    SuccessWithWarnings { status: Status, completed: u32, warning: u32 },
}

/// Why a C-GET or C-MOVE did not deliver what was asked, whatever its final status claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubOperationFailure {
    #[error("status {status} is pending, not a final response")]
    NotFinal { status: Status },
    #[error("retrieve cancelled (status {status}) after {completed} sub-operations")]
    Cancelled { status: Status, completed: u32 },
    #[error("retrieve failed with status {status}")]
    Failed { status: Status, counts: SubOperations },
    #[error("final status {status} but {failed} sub-operations failed")]
    SubOperationsFailed { status: Status, failed: u32, counts: SubOperations },
    #[error("final status {status} but {remaining} sub-operations still remaining")]
    SubOperationsRemaining { status: Status, remaining: u32 },
    #[error("final status {status} but only {delivered} of {expected} instances delivered")]
    SubOperationsMissing { status: Status, delivered: u32, expected: u32 },
}

/// Judges a finished C-GET or C-MOVE from its final response status and counts, and from the
/// number of instances we expected (for example from the C-FIND that preceded it, or the
/// C-STOREs our own SCP received for it).
///
/// A final Success is not taken at its word (issue 3, PS3.4 C.4.2.3.1 and C.4.3.3.1): failed
/// sub-operations, sub-operations still remaining, or fewer delivered (completed plus warning)
/// than expected all make it a [`SubOperationFailure`]. 0xB000 with failures is a failure too.
pub fn verdict(
    final_status: Status,
    counts: SubOperations,
    expected: Option<u32>,
) -> Result<Outcome, SubOperationFailure> {
    let status = final_status;
    let completed = u32::from(counts.completed.unwrap_or(0));
    let failed = u32::from(counts.failed.unwrap_or(0));
    let warning = u32::from(counts.warning.unwrap_or(0));
    let remaining = u32::from(counts.remaining.unwrap_or(0));
    match status.class() {
        StatusClass::Pending => return Err(SubOperationFailure::NotFinal { status }),
        StatusClass::Cancel => return Err(SubOperationFailure::Cancelled { status, completed }),
        StatusClass::Failure => return Err(SubOperationFailure::Failed { status, counts }),
        StatusClass::Success | StatusClass::Warning => {}
    }
    if failed > 0 {
        return Err(SubOperationFailure::SubOperationsFailed { status, failed, counts });
    }
    if remaining > 0 {
        return Err(SubOperationFailure::SubOperationsRemaining { status, remaining });
    }
    let delivered = completed + warning;
    if let Some(expected) = expected
        && delivered < expected
    {
        return Err(SubOperationFailure::SubOperationsMissing { status, delivered, expected });
    }
    if warning > 0 || status.class() == StatusClass::Warning {
        Ok(Outcome::SuccessWithWarnings { status, completed, warning })
    } else {
        Ok(Outcome::Success { completed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code, classified by the ranges of PS3.7 Annex C written out independently.
    #[test]
    fn status_classes_follow_ps3_7_annex_c() {
        for code in 0..=u16::MAX {
            let expected = match code {
                0x0000 => StatusClass::Success,
                0xFF00 | 0xFF01 => StatusClass::Pending,
                0xFE00 => StatusClass::Cancel,
                0x0001 | 0x0107 | 0x0116 => StatusClass::Warning,
                code if code >> 12 == 0xB => StatusClass::Warning,
                _ => StatusClass::Failure,
            };
            assert_eq!(Status(code).class(), expected, "{code:#06X}");
        }
    }

    #[test]
    fn named_statuses_have_their_class() {
        let table = [
            (Status::SUCCESS, StatusClass::Success),
            (Status::PENDING, StatusClass::Pending),
            (Status::PENDING_OPTIONAL_KEYS_NOT_SUPPORTED, StatusClass::Pending),
            (Status::CANCEL, StatusClass::Cancel),
            (Status::WARNING, StatusClass::Warning),
            (Status::COERCION_OF_DATA_ELEMENTS, StatusClass::Warning),
            (Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES, StatusClass::Warning),
            (Status::ELEMENTS_DISCARDED, StatusClass::Warning),
            (Status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING, StatusClass::Warning),
            (Status::OUT_OF_RESOURCES, StatusClass::Failure),
            (Status::OUT_OF_RESOURCES_NUMBER_OF_MATCHES, StatusClass::Failure),
            (Status::OUT_OF_RESOURCES_SUB_OPERATIONS, StatusClass::Failure),
            (Status::MOVE_DESTINATION_UNKNOWN, StatusClass::Failure),
            (Status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, StatusClass::Failure),
            (Status::UNABLE_TO_PROCESS, StatusClass::Failure),
            (Status(0xCFFF), StatusClass::Failure),
            (Status::SOP_CLASS_NOT_SUPPORTED, StatusClass::Failure),
            (Status::DUPLICATE_SOP_INSTANCE, StatusClass::Failure),
        ];
        for (status, class) in table {
            assert_eq!(status.class(), class, "{status:?}");
            assert!(status.is_assigned(), "{status:?}");
        }
        assert!(!Status(0x1234).is_assigned());
        assert_eq!(Status(0x1234).class(), StatusClass::Failure, "unassigned codes are never success");
    }

    fn final_counts(completed: u16, failed: u16, warning: u16) -> SubOperations {
        SubOperations { remaining: None, completed: Some(completed), failed: Some(failed), warning: Some(warning) }
    }

    #[test]
    fn success_with_every_instance_is_success() {
        assert_eq!(verdict(Status::SUCCESS, final_counts(3, 0, 0), Some(3)), Ok(Outcome::Success { completed: 3 }));
        assert_eq!(verdict(Status::SUCCESS, final_counts(3, 0, 0), None), Ok(Outcome::Success { completed: 3 }));
    }

    #[test]
    fn success_with_failed_sub_operations_is_not_success() {
        let counts = final_counts(2, 1, 0);
        assert_eq!(
            verdict(Status::SUCCESS, counts, Some(3)),
            Err(SubOperationFailure::SubOperationsFailed { status: Status::SUCCESS, failed: 1, counts })
        );
        let warning = Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES;
        assert!(matches!(
            verdict(warning, counts, None),
            Err(SubOperationFailure::SubOperationsFailed { failed: 1, .. })
        ));
    }

    #[test]
    fn success_with_missing_sub_operations_is_not_success() {
        assert_eq!(
            verdict(Status::SUCCESS, final_counts(2, 0, 0), Some(3)),
            Err(SubOperationFailure::SubOperationsMissing { status: Status::SUCCESS, delivered: 2, expected: 3 })
        );
        // A final Success that reports no counts at all delivered nothing we can vouch for.
        assert!(matches!(
            verdict(Status::SUCCESS, SubOperations::default(), Some(1)),
            Err(SubOperationFailure::SubOperationsMissing { delivered: 0, expected: 1, .. })
        ));
        let still_running = SubOperations { remaining: Some(4), ..final_counts(1, 0, 0) };
        assert!(matches!(
            verdict(Status::SUCCESS, still_running, None),
            Err(SubOperationFailure::SubOperationsRemaining { remaining: 4, .. })
        ));
    }

    #[test]
    fn warnings_count_as_delivered() {
        assert_eq!(
            verdict(Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES, final_counts(2, 0, 1), Some(3)),
            Ok(Outcome::SuccessWithWarnings {
                status: Status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES,
                completed: 2,
                warning: 1
            })
        );
    }

    #[test]
    fn pending_cancel_and_failure_are_not_success() {
        assert!(matches!(
            verdict(Status::PENDING, final_counts(1, 0, 0), None),
            Err(SubOperationFailure::NotFinal { .. })
        ));
        assert!(matches!(
            verdict(Status::CANCEL, final_counts(1, 0, 0), None),
            Err(SubOperationFailure::Cancelled { .. })
        ));
        assert!(matches!(
            verdict(Status::MOVE_DESTINATION_UNKNOWN, SubOperations::default(), None),
            Err(SubOperationFailure::Failed { .. })
        ));
    }
}
