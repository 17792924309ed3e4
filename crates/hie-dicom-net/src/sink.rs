//! [`StoreSink`]: where the data set of a received C-STORE-RQ goes, fragment by fragment as it
//! arrives, never joined here. Used by the C-GET SCU (one sink for every instance of the
//! retrieve), by the storage SCP (one sink per instance, from the handler) and by C-MOVE routing.
//!
//! Contract, per instance: [`StoreSink::begin`]; then, if it returned `Ok`, [`StoreSink::data`]
//! for each fragment in order; then exactly one of [`StoreSink::end`] (the whole data set
//! arrived; its status is the C-STORE-RSP status, so the sink may commit durably first) or
//! [`StoreSink::abort`] (the association died mid-instance). A `begin` or `data` that returns
//! `Err(status)` ends the instance there: nothing else is called for it, the rest of its data set
//! is discarded, and the C-STORE-RSP carries that status.
//!
//! Two optional hooks: [`StoreSink::error_comment`] gives the text of the Error Comment
//! (0000,0902) sent with a failure status, and [`StoreSink::is_cancelled`] tells a C-GET or C-MOVE
//! that nobody wants its instances any more (it then sends C-CANCEL).

use std::future::Future;

use bytes::Bytes;
use hie_dimse::Status;

use crate::error::NetError;

/// The instance a C-STORE-RQ announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Affected SOP Class UID (0000,0002).
    pub sop_class_uid: String,
    /// Affected SOP Instance UID (0000,1000).
    pub sop_instance_uid: String,
    /// The presentation context's transfer syntax, which the data set is encoded in.
    pub transfer_syntax_uid: String,
}

/// Receives instances as they stream in. See the module doc for the call order.
pub trait StoreSink: Send {
    /// A new instance starts. `Err(status)` refuses it (for example 0xA700, out of resources).
    fn begin(&mut self, instance: &InstanceInfo) -> impl Future<Output = Result<(), Status>> + Send;

    /// The next fragment of the instance's data set.
    fn data(&mut self, fragment: Bytes) -> impl Future<Output = Result<(), Status>> + Send;

    /// The data set is complete; the returned status is sent in the C-STORE-RSP.
    fn end(&mut self) -> impl Future<Output = Status> + Send;

    /// The association ended before the data set was complete; nothing will be answered.
    fn abort(&mut self, reason: &NetError) -> impl Future<Output = ()> + Send;

    /// Why the last failure status was given, for the C-STORE-RSP's Error Comment (0000,0902,
    /// LO: at most 64 characters; longer text is cut). Asked once, after a refusal or a
    /// failure status from `end`.
    fn error_comment(&mut self) -> Option<String> {
        None
    }

    /// Whether the consumer is gone, so that a C-GET or C-MOVE feeding this sink should be
    /// cancelled (PS3.7 9.3.3.3, 9.3.4.3). Checked after every message of the retrieve.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// An Error Comment (0000,0902) is LO: at most 64 characters (PS3.5 6.2).
pub(crate) fn clip_error_comment(mut comment: String) -> String {
    if comment.chars().count() > MAX_ERROR_COMMENT_CHARS {
        comment = comment.chars().take(MAX_ERROR_COMMENT_CHARS).collect();
    }
    // LO excludes backslash and control characters (PS3.5 6.2).
    comment.chars().map(|c| if c == '\\' || c.is_control() { ' ' } else { c }).collect()
}

/// PS3.5 Table 6.2-1: LO holds at most 64 characters.
const MAX_ERROR_COMMENT_CHARS: usize = 64;
