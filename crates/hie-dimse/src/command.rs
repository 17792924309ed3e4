//! DIMSE command sets (DICOM PS3.7 section 9.3 and Annex E): typed C-ECHO, C-FIND, C-GET,
//! C-MOVE, C-STORE and C-CANCEL messages, and their encoding as group 0000 elements in Implicit
//! VR Little Endian (PS3.7 6.3.1: a command set is always Implicit VR Little Endian, whatever the
//! presentation context negotiated for the data set).
//!
//! The decoder copies only the values the typed command keeps; it never allocates what a length
//! field declares, and every failure names the element at fault.

use std::fmt;

use dicom_core::Tag;
use dicom_dictionary_std::tags;

use crate::status::{Status, SubOperations};

/// Bounds applied to input from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest command set accepted, in bytes (all command fragments of one message together).
    /// A real command set is a few hundred bytes; the largest legal one (every optional element
    /// at its maximum length) stays under 1 KiB, so the default leaves a wide margin.
    pub max_command_set_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_command_set_len: DEFAULT_MAX_COMMAND_SET_LEN }
    }
}

/// Command Field (0000,0100) values, DICOM PS3.7 Table E.1-1, in the standard's hex.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandField {
    /// PS3.7 9.3.1.1
    CStoreRq = 0x0001,
    /// PS3.7 9.3.1.2
    CStoreRsp = 0x8001,
    /// PS3.7 9.3.3.1
    CGetRq = 0x0010,
    /// PS3.7 9.3.3.2
    CGetRsp = 0x8010,
    /// PS3.7 9.3.2.1
    CFindRq = 0x0020,
    /// PS3.7 9.3.2.2
    CFindRsp = 0x8020,
    /// PS3.7 9.3.4.1
    CMoveRq = 0x0021,
    /// PS3.7 9.3.4.2
    CMoveRsp = 0x8021,
    /// PS3.7 9.3.5.1
    CEchoRq = 0x0030,
    /// PS3.7 9.3.5.2
    CEchoRsp = 0x8030,
    /// PS3.7 9.3.2.3 (also used for C-GET and C-MOVE)
    CCancelRq = 0x0FFF,
}

impl CommandField {
    /// Parses a Command Field value; `None` for values we do not implement (the N-services, too).
    pub fn from_u16(value: u16) -> Option<CommandField> {
        Some(match value {
            0x0001 => CommandField::CStoreRq,
            0x8001 => CommandField::CStoreRsp,
            0x0010 => CommandField::CGetRq,
            0x8010 => CommandField::CGetRsp,
            0x0020 => CommandField::CFindRq,
            0x8020 => CommandField::CFindRsp,
            0x0021 => CommandField::CMoveRq,
            0x8021 => CommandField::CMoveRsp,
            0x0030 => CommandField::CEchoRq,
            0x8030 => CommandField::CEchoRsp,
            0x0FFF => CommandField::CCancelRq,
            _ => return None,
        })
    }

    /// The value on the wire.
    pub fn to_u16(self) -> u16 {
        self as u16
    }
}

/// Priority (0000,0700), DICOM PS3.7 Table E.1-1.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    #[default]
    Medium = 0x0000,
    High = 0x0001,
    Low = 0x0002,
}

impl Priority {
    /// Parses a Priority value; `None` for values the standard does not define.
    pub fn from_u16(value: u16) -> Option<Priority> {
        match value {
            0x0000 => Some(Priority::Medium),
            0x0001 => Some(Priority::High),
            0x0002 => Some(Priority::Low),
            _ => None,
        }
    }
}

/// Command Data Set Type (0000,0800), DICOM PS3.7 Table E.1-1: `0x0101` means no data set
/// follows, any other value that one does. The value is kept as sent so that a command set
/// re-encodes byte for byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataSetType(pub u16);

impl DataSetType {
    /// No data set follows the command (PS3.7 E.1: 0101H).
    pub const NONE: DataSetType = DataSetType(0x0101);
    /// The value we send when a data set follows. PS3.7 allows any value but 0101H; dcmtk 3.6.7
    /// sends 0001H (captured in `test_data/ok/dcmtk-findscu-c-find-rq.bin`), and so do we.
    pub const PRESENT: DataSetType = DataSetType(0x0001);

    /// Whether a data set follows the command.
    pub fn is_present(self) -> bool {
        self != DataSetType::NONE
    }
}

impl fmt::Debug for DataSetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meaning = if self.is_present() { "present" } else { "none" };
        write!(f, "DataSetType({:#06X} {meaning})", self.0)
    }
}

/// The status-related elements a response may carry besides Status (PS3.7 Annex C: Offending
/// Element, Error Comment, Error ID).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusDetail {
    /// Offending Element (0000,0901): the tags a failure refers to.
    pub offending_element: Vec<Tag>,
    /// Error Comment (0000,0902), LO: free text, at most 64 characters.
    pub error_comment: Option<String>,
    /// Error ID (0000,0903).
    pub error_id: Option<u16>,
}

/// C-ECHO-RQ, DICOM PS3.7 Table 9.3-12.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CEchoRq {
    pub message_id: u16,
    pub affected_sop_class_uid: String,
}

/// C-ECHO-RSP, DICOM PS3.7 Table 9.3-13.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CEchoRsp {
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<String>,
    pub status: Status,
    pub detail: StatusDetail,
}

/// C-FIND-RQ, DICOM PS3.7 Table 9.3-3. The Identifier follows as the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CFindRq {
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub priority: Priority,
    pub data_set_type: DataSetType,
}

/// C-FIND-RSP, DICOM PS3.7 Table 9.3-4. Pending responses carry a matching Identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CFindRsp {
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<String>,
    pub status: Status,
    pub data_set_type: DataSetType,
    pub detail: StatusDetail,
}

/// C-GET-RQ, DICOM PS3.7 Table 9.3-5. The Identifier follows as the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CGetRq {
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub priority: Priority,
    pub data_set_type: DataSetType,
}

/// C-GET-RSP, DICOM PS3.7 Table 9.3-6. A failure or warning may carry the Failed SOP Instance
/// UID List as a data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CGetRsp {
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<String>,
    pub status: Status,
    pub data_set_type: DataSetType,
    pub sub_operations: SubOperations,
    pub detail: StatusDetail,
}

/// C-MOVE-RQ, DICOM PS3.7 Table 9.3-7. The Identifier follows as the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CMoveRq {
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub priority: Priority,
    /// Move Destination (0000,0600), AE: the AE title the C-STORE sub-operations go to.
    pub move_destination: String,
    pub data_set_type: DataSetType,
}

/// C-MOVE-RSP, DICOM PS3.7 Table 9.3-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CMoveRsp {
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<String>,
    pub status: Status,
    pub data_set_type: DataSetType,
    pub sub_operations: SubOperations,
    pub detail: StatusDetail,
}

/// C-STORE-RQ, DICOM PS3.7 Table 9.3-1. The instance follows as the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CStoreRq {
    pub message_id: u16,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub priority: Priority,
    /// Move Originator Application Entity Title (0000,1030): set when this C-STORE is a C-MOVE
    /// sub-operation; with the message ID below it correlates the store with our C-MOVE.
    pub move_originator_ae_title: Option<String>,
    /// Move Originator Message ID (0000,1031).
    pub move_originator_message_id: Option<u16>,
    pub data_set_type: DataSetType,
}

/// C-STORE-RSP, DICOM PS3.7 Table 9.3-2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CStoreRsp {
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub status: Status,
    pub detail: StatusDetail,
}

/// C-CANCEL-RQ, DICOM PS3.7 9.3.2.3 (and 9.3.3.3, 9.3.4.3 for C-GET, C-MOVE): cancels the C-FIND, C-GET
/// or C-MOVE whose Message ID it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CCancelRq {
    pub message_id_being_responded_to: u16,
}

/// Any DIMSE-C command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    CEchoRq(CEchoRq),
    CEchoRsp(CEchoRsp),
    CFindRq(CFindRq),
    CFindRsp(CFindRsp),
    CGetRq(CGetRq),
    CGetRsp(CGetRsp),
    CMoveRq(CMoveRq),
    CMoveRsp(CMoveRsp),
    CStoreRq(CStoreRq),
    CStoreRsp(CStoreRsp),
    CCancelRq(CCancelRq),
}

impl Command {
    /// The Command Field this command is sent with.
    pub fn command_field(&self) -> CommandField {
        match self {
            Command::CEchoRq(_) => CommandField::CEchoRq,
            Command::CEchoRsp(_) => CommandField::CEchoRsp,
            Command::CFindRq(_) => CommandField::CFindRq,
            Command::CFindRsp(_) => CommandField::CFindRsp,
            Command::CGetRq(_) => CommandField::CGetRq,
            Command::CGetRsp(_) => CommandField::CGetRsp,
            Command::CMoveRq(_) => CommandField::CMoveRq,
            Command::CMoveRsp(_) => CommandField::CMoveRsp,
            Command::CStoreRq(_) => CommandField::CStoreRq,
            Command::CStoreRsp(_) => CommandField::CStoreRsp,
            Command::CCancelRq(_) => CommandField::CCancelRq,
        }
    }

    /// The Command Data Set Type as it goes on the wire.
    pub fn data_set_type(&self) -> DataSetType {
        match self {
            Command::CFindRq(c) => c.data_set_type,
            Command::CFindRsp(c) => c.data_set_type,
            Command::CGetRq(c) => c.data_set_type,
            Command::CGetRsp(c) => c.data_set_type,
            Command::CMoveRq(c) => c.data_set_type,
            Command::CMoveRsp(c) => c.data_set_type,
            Command::CStoreRq(c) => c.data_set_type,
            Command::CEchoRq(_) | Command::CEchoRsp(_) | Command::CStoreRsp(_) | Command::CCancelRq(_) => {
                DataSetType::NONE
            }
        }
    }

    /// Whether a data set follows this command on the same presentation context.
    pub fn has_data_set(&self) -> bool {
        self.data_set_type().is_present()
    }

    /// Message ID (0000,0110) of a request; `None` for responses and C-CANCEL-RQ.
    pub fn message_id(&self) -> Option<u16> {
        match self {
            Command::CEchoRq(c) => Some(c.message_id),
            Command::CFindRq(c) => Some(c.message_id),
            Command::CGetRq(c) => Some(c.message_id),
            Command::CMoveRq(c) => Some(c.message_id),
            Command::CStoreRq(c) => Some(c.message_id),
            _ => None,
        }
    }

    /// Message ID Being Responded To (0000,0120) of a response or C-CANCEL-RQ.
    pub fn message_id_being_responded_to(&self) -> Option<u16> {
        match self {
            Command::CEchoRsp(c) => Some(c.message_id_being_responded_to),
            Command::CFindRsp(c) => Some(c.message_id_being_responded_to),
            Command::CGetRsp(c) => Some(c.message_id_being_responded_to),
            Command::CMoveRsp(c) => Some(c.message_id_being_responded_to),
            Command::CStoreRsp(c) => Some(c.message_id_being_responded_to),
            Command::CCancelRq(c) => Some(c.message_id_being_responded_to),
            _ => None,
        }
    }

    /// Status (0000,0900) of a response.
    pub fn status(&self) -> Option<Status> {
        match self {
            Command::CEchoRsp(c) => Some(c.status),
            Command::CFindRsp(c) => Some(c.status),
            Command::CGetRsp(c) => Some(c.status),
            Command::CMoveRsp(c) => Some(c.status),
            Command::CStoreRsp(c) => Some(c.status),
            _ => None,
        }
    }
}

/// Why a command set was refused. Every variant is the sending peer's fault (malformed input or
/// a protocol violation) and names the element at fault where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DimseError {
    #[error("command set of {len} bytes exceeds the limit of {max} bytes")]
    CommandSetTooLarge { len: usize, max: usize },
    #[error("command set truncated in the header of the element at byte {offset}")]
    TruncatedHeader { offset: usize },
    #[error("element {tag} declares {declared} bytes but only {remaining} remain")]
    LengthExceedsInput { tag: Tag, declared: u32, remaining: usize },
    #[error("element {tag} is not in the command group 0000")]
    NotCommandGroup { tag: Tag },
    #[error("element {tag} follows {previous}: elements must be in strictly ascending tag order")]
    OutOfOrder { tag: Tag, previous: Tag },
    #[error("Command Group Length (0000,0000) says {declared} bytes follow but {actual} do")]
    GroupLengthMismatch { declared: u32, actual: usize },
    #[error("mandatory element {tag} ({name}) is missing")]
    MissingElement { tag: Tag, name: &'static str },
    #[error("element {tag} has length {len}, which its VR does not allow")]
    BadValueLength { tag: Tag, len: usize },
    #[error("element {tag} has an invalid value: {reason}")]
    InvalidValue { tag: Tag, reason: &'static str },
    #[error("unknown or unsupported Command Field {0:#06X}")]
    UnknownCommandField(u16),
    #[error("{field:?} must be followed by a data set but Command Data Set Type is 0x0101")]
    MissingDataSet { field: CommandField },
    #[error("{field:?} must not be followed by a data set but Command Data Set Type is {value:#06X}")]
    UnexpectedDataSet { field: CommandField, value: u16 },
}

/// Appends the command set of `cmd` to `out`: Implicit VR Little Endian, Command Group Length
/// first and correct, elements in ascending tag order, UIDs padded with NUL and other strings
/// with spaces to even length (PS3.5 6.2, 7.1.2; PS3.7 6.3.1).
///
/// Values are written as given: keeping UIDs and AE titles within their VR is the caller's part.
pub fn encode(cmd: &Command, out: &mut Vec<u8>) {
    let mut elements: Vec<(Tag, Value<'_>)> = Vec::with_capacity(12);
    let field = cmd.command_field();
    elements.push((tags::COMMAND_FIELD, Value::Us(field.to_u16())));
    elements.push((tags::COMMAND_DATA_SET_TYPE, Value::Us(cmd.data_set_type().0)));
    match cmd {
        Command::CEchoRq(c) => {
            elements.push((tags::MESSAGE_ID, Value::Us(c.message_id)));
            elements.push((tags::AFFECTED_SOP_CLASS_UID, Value::Ui(&c.affected_sop_class_uid)));
        }
        Command::CEchoRsp(c) => {
            push_response(&mut elements, c.message_id_being_responded_to, &c.affected_sop_class_uid, c.status);
            push_detail(&mut elements, &c.detail);
        }
        Command::CFindRq(c) => {
            push_query_request(&mut elements, c.message_id, &c.affected_sop_class_uid, c.priority);
        }
        Command::CFindRsp(c) => {
            push_response(&mut elements, c.message_id_being_responded_to, &c.affected_sop_class_uid, c.status);
            push_detail(&mut elements, &c.detail);
        }
        Command::CGetRq(c) => {
            push_query_request(&mut elements, c.message_id, &c.affected_sop_class_uid, c.priority);
        }
        Command::CGetRsp(c) => {
            push_response(&mut elements, c.message_id_being_responded_to, &c.affected_sop_class_uid, c.status);
            push_sub_operations(&mut elements, &c.sub_operations);
            push_detail(&mut elements, &c.detail);
        }
        Command::CMoveRq(c) => {
            push_query_request(&mut elements, c.message_id, &c.affected_sop_class_uid, c.priority);
            elements.push((tags::MOVE_DESTINATION, Value::Ae(&c.move_destination)));
        }
        Command::CMoveRsp(c) => {
            push_response(&mut elements, c.message_id_being_responded_to, &c.affected_sop_class_uid, c.status);
            push_sub_operations(&mut elements, &c.sub_operations);
            push_detail(&mut elements, &c.detail);
        }
        Command::CStoreRq(c) => {
            push_query_request(&mut elements, c.message_id, &c.affected_sop_class_uid, c.priority);
            elements.push((tags::AFFECTED_SOP_INSTANCE_UID, Value::Ui(&c.affected_sop_instance_uid)));
            if let Some(ae_title) = &c.move_originator_ae_title {
                elements.push((tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE, Value::Ae(ae_title)));
            }
            if let Some(message_id) = c.move_originator_message_id {
                elements.push((tags::MOVE_ORIGINATOR_MESSAGE_ID, Value::Us(message_id)));
            }
        }
        Command::CStoreRsp(c) => {
            push_response(&mut elements, c.message_id_being_responded_to, &c.affected_sop_class_uid, c.status);
            if let Some(uid) = &c.affected_sop_instance_uid {
                elements.push((tags::AFFECTED_SOP_INSTANCE_UID, Value::Ui(uid)));
            }
            push_detail(&mut elements, &c.detail);
        }
        Command::CCancelRq(c) => {
            elements.push((tags::MESSAGE_ID_BEING_RESPONDED_TO, Value::Us(c.message_id_being_responded_to)));
        }
    }
    elements.sort_by_key(|(tag, _)| *tag);

    let group_length: usize = elements.iter().map(|(_, value)| ELEMENT_HEADER_LEN + value.padded_len()).sum();
    out.reserve(ELEMENT_HEADER_LEN + 4 + group_length);
    // A command set is a few hundred bytes: the cast cannot truncate.
    write_header(out, tags::COMMAND_GROUP_LENGTH, 4);
    out.extend_from_slice(&(group_length as u32).to_le_bytes());
    for (tag, value) in &elements {
        write_header(out, *tag, value.padded_len() as u32);
        value.write(out);
    }
}

/// Decodes one complete command set (all command fragments of a message, concatenated).
///
/// Never panics. Allocates only the strings and lists the returned command keeps, each a copy of
/// part of `bytes`, so never more than `bytes.len()` in total.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Command, DimseError> {
    if bytes.len() > limits.max_command_set_len {
        return Err(DimseError::CommandSetTooLarge { len: bytes.len(), max: limits.max_command_set_len });
    }
    let fields = Fields::parse(bytes)?;
    let field_value = fields.required_us(tags::COMMAND_FIELD, "Command Field")?;
    let field = CommandField::from_u16(field_value).ok_or(DimseError::UnknownCommandField(field_value))?;
    let data_set_type = DataSetType(fields.required_us(tags::COMMAND_DATA_SET_TYPE, "Command Data Set Type")?);
    let requires = |present: bool| -> Result<DataSetType, DimseError> {
        match (present, data_set_type.is_present()) {
            (true, false) => Err(DimseError::MissingDataSet { field }),
            (false, true) => Err(DimseError::UnexpectedDataSet { field, value: data_set_type.0 }),
            _ => Ok(data_set_type),
        }
    };

    Ok(match field {
        CommandField::CEchoRq => {
            requires(false)?;
            Command::CEchoRq(CEchoRq {
                message_id: fields.message_id()?,
                affected_sop_class_uid: fields.affected_sop_class_uid()?,
            })
        }
        CommandField::CEchoRsp => {
            requires(false)?;
            Command::CEchoRsp(CEchoRsp {
                message_id_being_responded_to: fields.message_id_being_responded_to()?,
                affected_sop_class_uid: fields.ui(tags::AFFECTED_SOP_CLASS_UID)?,
                status: fields.status()?,
                detail: fields.detail()?,
            })
        }
        CommandField::CFindRq => Command::CFindRq(CFindRq {
            message_id: fields.message_id()?,
            affected_sop_class_uid: fields.affected_sop_class_uid()?,
            priority: fields.priority()?,
            data_set_type: requires(true)?,
        }),
        CommandField::CFindRsp => Command::CFindRsp(CFindRsp {
            message_id_being_responded_to: fields.message_id_being_responded_to()?,
            affected_sop_class_uid: fields.ui(tags::AFFECTED_SOP_CLASS_UID)?,
            status: fields.status()?,
            data_set_type,
            detail: fields.detail()?,
        }),
        CommandField::CGetRq => Command::CGetRq(CGetRq {
            message_id: fields.message_id()?,
            affected_sop_class_uid: fields.affected_sop_class_uid()?,
            priority: fields.priority()?,
            data_set_type: requires(true)?,
        }),
        CommandField::CGetRsp => Command::CGetRsp(CGetRsp {
            message_id_being_responded_to: fields.message_id_being_responded_to()?,
            affected_sop_class_uid: fields.ui(tags::AFFECTED_SOP_CLASS_UID)?,
            status: fields.status()?,
            data_set_type,
            sub_operations: fields.sub_operations()?,
            detail: fields.detail()?,
        }),
        CommandField::CMoveRq => Command::CMoveRq(CMoveRq {
            message_id: fields.message_id()?,
            affected_sop_class_uid: fields.affected_sop_class_uid()?,
            priority: fields.priority()?,
            move_destination: fields
                .ae(tags::MOVE_DESTINATION)?
                .ok_or(DimseError::MissingElement { tag: tags::MOVE_DESTINATION, name: "Move Destination" })?,
            data_set_type: requires(true)?,
        }),
        CommandField::CMoveRsp => Command::CMoveRsp(CMoveRsp {
            message_id_being_responded_to: fields.message_id_being_responded_to()?,
            affected_sop_class_uid: fields.ui(tags::AFFECTED_SOP_CLASS_UID)?,
            status: fields.status()?,
            data_set_type,
            sub_operations: fields.sub_operations()?,
            detail: fields.detail()?,
        }),
        CommandField::CStoreRq => Command::CStoreRq(CStoreRq {
            message_id: fields.message_id()?,
            affected_sop_class_uid: fields.affected_sop_class_uid()?,
            affected_sop_instance_uid: fields.ui(tags::AFFECTED_SOP_INSTANCE_UID)?.ok_or(
                DimseError::MissingElement { tag: tags::AFFECTED_SOP_INSTANCE_UID, name: "Affected SOP Instance UID" },
            )?,
            priority: fields.priority()?,
            move_originator_ae_title: fields.ae(tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE)?,
            move_originator_message_id: fields.us(tags::MOVE_ORIGINATOR_MESSAGE_ID)?,
            data_set_type: requires(true)?,
        }),
        CommandField::CStoreRsp => {
            requires(false)?;
            Command::CStoreRsp(CStoreRsp {
                message_id_being_responded_to: fields.message_id_being_responded_to()?,
                affected_sop_class_uid: fields.ui(tags::AFFECTED_SOP_CLASS_UID)?,
                affected_sop_instance_uid: fields.ui(tags::AFFECTED_SOP_INSTANCE_UID)?,
                status: fields.status()?,
                detail: fields.detail()?,
            })
        }
        CommandField::CCancelRq => {
            requires(false)?;
            Command::CCancelRq(CCancelRq { message_id_being_responded_to: fields.message_id_being_responded_to()? })
        }
    })
}

// ---- encoding helpers ----

/// One element's value, borrowed from the command being encoded.
enum Value<'a> {
    Us(u16),
    Ui(&'a str),
    Ae(&'a str),
    Lo(&'a str),
    At(&'a [Tag]),
}

impl Value<'_> {
    fn padded_len(&self) -> usize {
        match self {
            Value::Us(_) => 2,
            Value::Ui(text) | Value::Ae(text) | Value::Lo(text) => text.len() + text.len() % 2,
            Value::At(list) => 4 * list.len(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Us(value) => out.extend_from_slice(&value.to_le_bytes()),
            // PS3.5 6.2: UI is padded with a single trailing NUL, other strings with a space.
            Value::Ui(text) => write_padded(out, text, 0x00),
            Value::Ae(text) | Value::Lo(text) => write_padded(out, text, b' '),
            Value::At(list) => {
                for tag in *list {
                    out.extend_from_slice(&tag.group().to_le_bytes());
                    out.extend_from_slice(&tag.element().to_le_bytes());
                }
            }
        }
    }
}

fn write_padded(out: &mut Vec<u8>, text: &str, pad: u8) {
    out.extend_from_slice(text.as_bytes());
    if text.len() % 2 == 1 {
        out.push(pad);
    }
}

/// Implicit VR Little Endian element header: group, element, 32-bit length (PS3.5 7.1.3).
fn write_header(out: &mut Vec<u8>, tag: Tag, len: u32) {
    out.extend_from_slice(&tag.group().to_le_bytes());
    out.extend_from_slice(&tag.element().to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn push_query_request<'a>(
    elements: &mut Vec<(Tag, Value<'a>)>,
    message_id: u16,
    sop_class: &'a str,
    priority: Priority,
) {
    elements.push((tags::MESSAGE_ID, Value::Us(message_id)));
    elements.push((tags::AFFECTED_SOP_CLASS_UID, Value::Ui(sop_class)));
    elements.push((tags::PRIORITY, Value::Us(priority as u16)));
}

fn push_response<'a>(
    elements: &mut Vec<(Tag, Value<'a>)>,
    message_id_being_responded_to: u16,
    sop_class: &'a Option<String>,
    status: Status,
) {
    elements.push((tags::MESSAGE_ID_BEING_RESPONDED_TO, Value::Us(message_id_being_responded_to)));
    if let Some(uid) = sop_class {
        elements.push((tags::AFFECTED_SOP_CLASS_UID, Value::Ui(uid)));
    }
    elements.push((tags::STATUS, Value::Us(status.0)));
}

fn push_detail<'a>(elements: &mut Vec<(Tag, Value<'a>)>, detail: &'a StatusDetail) {
    if !detail.offending_element.is_empty() {
        elements.push((tags::OFFENDING_ELEMENT, Value::At(&detail.offending_element)));
    }
    if let Some(comment) = &detail.error_comment {
        elements.push((tags::ERROR_COMMENT, Value::Lo(comment)));
    }
    if let Some(error_id) = detail.error_id {
        elements.push((tags::ERROR_ID, Value::Us(error_id)));
    }
}

fn push_sub_operations(elements: &mut Vec<(Tag, Value<'_>)>, counts: &SubOperations) {
    let counted = [
        (tags::NUMBER_OF_REMAINING_SUBOPERATIONS, counts.remaining),
        (tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, counts.completed),
        (tags::NUMBER_OF_FAILED_SUBOPERATIONS, counts.failed),
        (tags::NUMBER_OF_WARNING_SUBOPERATIONS, counts.warning),
    ];
    for (tag, count) in counted {
        if let Some(count) = count {
            elements.push((tag, Value::Us(count)));
        }
    }
}

// ---- decoding helpers ----

/// The raw values of the command elements we know, borrowed from the input. A fixed set of
/// slots rather than a list keeps the decoder free of allocations sized by the input.
#[derive(Default)]
struct Fields<'a> {
    affected_sop_class_uid: Option<&'a [u8]>,
    command_field: Option<&'a [u8]>,
    message_id: Option<&'a [u8]>,
    message_id_being_responded_to: Option<&'a [u8]>,
    move_destination: Option<&'a [u8]>,
    priority: Option<&'a [u8]>,
    command_data_set_type: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    offending_element: Option<&'a [u8]>,
    error_comment: Option<&'a [u8]>,
    error_id: Option<&'a [u8]>,
    affected_sop_instance_uid: Option<&'a [u8]>,
    remaining: Option<&'a [u8]>,
    completed: Option<&'a [u8]>,
    failed: Option<&'a [u8]>,
    warning: Option<&'a [u8]>,
    move_originator_ae_title: Option<&'a [u8]>,
    move_originator_message_id: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Fields<'a>, DimseError> {
        let mut fields = Fields::default();
        let mut offset = 0;
        let mut previous: Option<Tag> = None;
        // The declared Command Group Length and the offset where the group's elements start.
        let mut group_length: Option<(u32, usize)> = None;
        // Where elements after group 0000 begin, if any (see below).
        let mut trailer_from: Option<usize> = None;
        while offset < bytes.len() {
            let element_start = offset;
            let header =
                bytes.get(offset..offset + ELEMENT_HEADER_LEN).ok_or(DimseError::TruncatedHeader { offset })?;
            let tag = Tag(u16::from_le_bytes([header[0], header[1]]), u16::from_le_bytes([header[2], header[3]]));
            let declared = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let start = offset + ELEMENT_HEADER_LEN;
            let remaining = bytes.len() - start;
            // Compared in u64 so that a lying length is refused before anything is sliced or
            // allocated, on 32-bit targets too.
            if u64::from(declared) > remaining as u64 {
                return Err(DimseError::LengthExceedsInput { tag, declared, remaining });
            }
            let value = &bytes[start..start + declared as usize];
            offset = start + declared as usize;

            if trailer_from.is_some() {
                continue;
            }
            if tag.group() != COMMAND_GROUP {
                // dcmtk merges a response's status detail into the command set, after group
                // 0000: Orthanc 1.10's pending C-GET-RSP carries the Failed SOP Instance UID List
                // (0008,0058) there. Such elements are skipped (their lengths still checked)
                // where the Command Group Length says group 0000 ends, and refused anywhere else.
                match group_length {
                    Some((declared, group_start))
                        if element_start as u64 == group_start as u64 + u64::from(declared) =>
                    {
                        trailer_from = Some(element_start);
                        continue;
                    }
                    _ => return Err(DimseError::NotCommandGroup { tag }),
                }
            }
            if let Some(previous) = previous
                && tag <= previous
            {
                return Err(DimseError::OutOfOrder { tag, previous });
            }
            previous = Some(tag);

            let slot = match tag {
                tags::COMMAND_GROUP_LENGTH => {
                    group_length = Some((read_ul(tag, value)?, offset));
                    continue;
                }
                tags::AFFECTED_SOP_CLASS_UID => &mut fields.affected_sop_class_uid,
                tags::COMMAND_FIELD => &mut fields.command_field,
                tags::MESSAGE_ID => &mut fields.message_id,
                tags::MESSAGE_ID_BEING_RESPONDED_TO => &mut fields.message_id_being_responded_to,
                tags::MOVE_DESTINATION => &mut fields.move_destination,
                tags::PRIORITY => &mut fields.priority,
                tags::COMMAND_DATA_SET_TYPE => &mut fields.command_data_set_type,
                tags::STATUS => &mut fields.status,
                tags::OFFENDING_ELEMENT => &mut fields.offending_element,
                tags::ERROR_COMMENT => &mut fields.error_comment,
                tags::ERROR_ID => &mut fields.error_id,
                tags::AFFECTED_SOP_INSTANCE_UID => &mut fields.affected_sop_instance_uid,
                tags::NUMBER_OF_REMAINING_SUBOPERATIONS => &mut fields.remaining,
                tags::NUMBER_OF_COMPLETED_SUBOPERATIONS => &mut fields.completed,
                tags::NUMBER_OF_FAILED_SUBOPERATIONS => &mut fields.failed,
                tags::NUMBER_OF_WARNING_SUBOPERATIONS => &mut fields.warning,
                tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE => &mut fields.move_originator_ae_title,
                tags::MOVE_ORIGINATOR_MESSAGE_ID => &mut fields.move_originator_message_id,
                // Elements of the N-services and retired ones (PS3.7 E.2) carry nothing a
                // DIMSE-C message needs; peers that send them are still understood.
                _ => continue,
            };
            *slot = Some(value);
        }
        match group_length {
            None => Err(DimseError::MissingElement { tag: tags::COMMAND_GROUP_LENGTH, name: "Command Group Length" }),
            Some((declared, group_start)) => {
                let actual = trailer_from.unwrap_or(bytes.len()) - group_start;
                if u64::from(declared) == actual as u64 {
                    Ok(fields)
                } else {
                    Err(DimseError::GroupLengthMismatch { declared, actual })
                }
            }
        }
    }

    fn slot(&self, tag: Tag) -> Option<&'a [u8]> {
        match tag {
            tags::AFFECTED_SOP_CLASS_UID => self.affected_sop_class_uid,
            tags::COMMAND_FIELD => self.command_field,
            tags::MESSAGE_ID => self.message_id,
            tags::MESSAGE_ID_BEING_RESPONDED_TO => self.message_id_being_responded_to,
            tags::MOVE_DESTINATION => self.move_destination,
            tags::PRIORITY => self.priority,
            tags::COMMAND_DATA_SET_TYPE => self.command_data_set_type,
            tags::STATUS => self.status,
            tags::OFFENDING_ELEMENT => self.offending_element,
            tags::ERROR_COMMENT => self.error_comment,
            tags::ERROR_ID => self.error_id,
            tags::AFFECTED_SOP_INSTANCE_UID => self.affected_sop_instance_uid,
            tags::NUMBER_OF_REMAINING_SUBOPERATIONS => self.remaining,
            tags::NUMBER_OF_COMPLETED_SUBOPERATIONS => self.completed,
            tags::NUMBER_OF_FAILED_SUBOPERATIONS => self.failed,
            tags::NUMBER_OF_WARNING_SUBOPERATIONS => self.warning,
            tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE => self.move_originator_ae_title,
            tags::MOVE_ORIGINATOR_MESSAGE_ID => self.move_originator_message_id,
            _ => None,
        }
    }

    fn us(&self, tag: Tag) -> Result<Option<u16>, DimseError> {
        self.slot(tag)
            .map(|value| match value {
                [low, high] => Ok(u16::from_le_bytes([*low, *high])),
                _ => Err(DimseError::BadValueLength { tag, len: value.len() }),
            })
            .transpose()
    }

    fn required_us(&self, tag: Tag, name: &'static str) -> Result<u16, DimseError> {
        self.us(tag)?.ok_or(DimseError::MissingElement { tag, name })
    }

    /// UI (PS3.5 6.2, 9.1): digits and dots, at most 64 characters, one trailing NUL as padding.
    /// Trailing spaces are tolerated too: some peers pad UIDs that way.
    fn ui(&self, tag: Tag) -> Result<Option<String>, DimseError> {
        let Some(value) = self.slot(tag) else { return Ok(None) };
        let text = trim_end(value, &[0x00, b' ']);
        if text.len() > MAX_UID_LEN {
            return Err(DimseError::InvalidValue { tag, reason: "UID longer than 64 characters" });
        }
        if !text.iter().all(|byte| byte.is_ascii_digit() || *byte == b'.') {
            return Err(DimseError::InvalidValue { tag, reason: "UID with characters other than digits and '.'" });
        }
        Ok(Some(ascii_string(text)))
    }

    /// AE (PS3.5 6.2): at most 16 characters of the default repertoire, no control characters
    /// or backslash; leading and trailing spaces are not significant.
    fn ae(&self, tag: Tag) -> Result<Option<String>, DimseError> {
        let Some(value) = self.slot(tag) else { return Ok(None) };
        let text = trim_start(trim_end(value, &[b' ', 0x00]), b' ');
        if text.len() > MAX_AE_LEN {
            return Err(DimseError::InvalidValue { tag, reason: "AE title longer than 16 characters" });
        }
        if !text.iter().all(|byte| (0x20..0x7F).contains(byte) && *byte != b'\\') {
            return Err(DimseError::InvalidValue { tag, reason: "AE title with a control character or backslash" });
        }
        Ok(Some(ascii_string(text)))
    }

    fn affected_sop_class_uid(&self) -> Result<String, DimseError> {
        self.ui(tags::AFFECTED_SOP_CLASS_UID)?
            .ok_or(DimseError::MissingElement { tag: tags::AFFECTED_SOP_CLASS_UID, name: "Affected SOP Class UID" })
    }

    fn message_id(&self) -> Result<u16, DimseError> {
        self.required_us(tags::MESSAGE_ID, "Message ID")
    }

    fn message_id_being_responded_to(&self) -> Result<u16, DimseError> {
        self.required_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, "Message ID Being Responded To")
    }

    fn status(&self) -> Result<Status, DimseError> {
        self.required_us(tags::STATUS, "Status").map(Status)
    }

    fn priority(&self) -> Result<Priority, DimseError> {
        let value = self.required_us(tags::PRIORITY, "Priority")?;
        Priority::from_u16(value).ok_or(DimseError::InvalidValue {
            tag: tags::PRIORITY,
            reason: "Priority other than 0x0000, 0x0001, 0x0002",
        })
    }

    fn sub_operations(&self) -> Result<SubOperations, DimseError> {
        Ok(SubOperations {
            remaining: self.us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS)?,
            completed: self.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS)?,
            failed: self.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS)?,
            warning: self.us(tags::NUMBER_OF_WARNING_SUBOPERATIONS)?,
        })
    }

    fn detail(&self) -> Result<StatusDetail, DimseError> {
        let offending_element = match self.offending_element {
            None => Vec::new(),
            Some(value) if value.len() % 4 != 0 => {
                return Err(DimseError::BadValueLength { tag: tags::OFFENDING_ELEMENT, len: value.len() });
            }
            Some(value) => value
                .chunks_exact(4)
                .map(|at| Tag(u16::from_le_bytes([at[0], at[1]]), u16::from_le_bytes([at[2], at[3]])))
                .collect(),
        };
        // LO in a command set uses the default repertoire (PS3.7 6.3.1). The comment is for
        // people, so other bytes become '?' rather than a refusal; one byte per byte keeps the
        // decoded command no larger than its input.
        let error_comment = self.error_comment.map(|value| {
            trim_start(trim_end(value, &[b' ', 0x00]), b' ')
                .iter()
                .map(|byte| if byte.is_ascii() { char::from(*byte) } else { '?' })
                .collect::<String>()
        });
        Ok(StatusDetail { offending_element, error_comment, error_id: self.us(tags::ERROR_ID)? })
    }
}

fn read_ul(tag: Tag, value: &[u8]) -> Result<u32, DimseError> {
    match value {
        [a, b, c, d] => Ok(u32::from_le_bytes([*a, *b, *c, *d])),
        _ => Err(DimseError::BadValueLength { tag, len: value.len() }),
    }
}

fn trim_end<'a>(mut value: &'a [u8], pads: &[u8]) -> &'a [u8] {
    while let [rest @ .., last] = value
        && pads.contains(last)
    {
        value = rest;
    }
    value
}

fn trim_start(mut value: &[u8], pad: u8) -> &[u8] {
    while let [first, rest @ ..] = value
        && *first == pad
    {
        value = rest;
    }
    value
}

/// Only called on bytes already checked to be ASCII.
fn ascii_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| char::from(*byte)).collect()
}

/// Tag group, element and 32-bit length (PS3.5 7.1.3, Implicit VR).
const ELEMENT_HEADER_LEN: usize = 8;
/// PS3.7 6.3: every command element is in group 0000.
const COMMAND_GROUP: u16 = 0x0000;
/// PS3.5 Table 6.2-1, UI.
const MAX_UID_LEN: usize = 64;
/// PS3.5 Table 6.2-1, AE.
const MAX_AE_LEN: usize = 16;
/// See [`Limits::max_command_set_len`].
const DEFAULT_MAX_COMMAND_SET_LEN: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_rq() -> Command {
        Command::CEchoRq(CEchoRq { message_id: 1, affected_sop_class_uid: "1.2.840.10008.1.1".to_owned() })
    }

    #[test]
    fn echo_request_bytes_follow_ps3_7() {
        let mut out = Vec::new();
        encode(&echo_rq(), &mut out);
        // The UID has 17 characters, so one NUL pads it; the group length counts the 4
        // elements after (0000,0000): 8+18, 8+2, 8+2, 8+2.
        let expected: Vec<u8> = [
            &[0, 0, 0, 0, 4, 0, 0, 0, 56, 0, 0, 0][..],
            &[0, 0, 2, 0, 18, 0, 0, 0],
            b"1.2.840.10008.1.1\0",
            &[0, 0, 0, 1, 2, 0, 0, 0, 0x30, 0],
            &[0, 0, 0x10, 1, 2, 0, 0, 0, 1, 0],
            &[0, 0, 0, 8, 2, 0, 0, 0, 1, 1],
        ]
        .concat();
        assert_eq!(out, expected);
        assert_eq!(decode(&out, &Limits::default()).unwrap(), echo_rq());
    }

    #[test]
    fn lying_length_is_refused_without_allocation() {
        let mut bytes = Vec::new();
        encode(&echo_rq(), &mut bytes);
        bytes.extend_from_slice(&[0, 0, 0x02, 0x09, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            decode(&bytes, &Limits::default()),
            Err(DimseError::LengthExceedsInput { declared: 0xFFFF_FFFF, .. })
        ));
    }

    #[test]
    fn non_ascii_error_comment_is_shown_not_refused() {
        let mut bytes = Vec::new();
        let response = Command::CEchoRsp(CEchoRsp {
            message_id_being_responded_to: 1,
            affected_sop_class_uid: None,
            status: Status(0xC000),
            detail: StatusDetail { error_comment: Some("ab".to_owned()), ..StatusDetail::default() },
        });
        encode(&response, &mut bytes);
        let at = bytes.len() - 2;
        bytes[at..].copy_from_slice(&[0xFF, 0xE9]);
        let Command::CEchoRsp(decoded) = decode(&bytes, &Limits::default()).unwrap() else { panic!() };
        assert_eq!(decoded.detail.error_comment.as_deref(), Some("??"));
    }

    /// Orthanc 1.10 (through dcmtk) puts a pending C-GET-RSP's Failed SOP Instance UID List
    /// (0008,0058) in the command set after group 0000; captured by hie-dicom-net's
    /// `scu_orthanc` test when our sink refused one instance.
    #[test]
    fn status_detail_after_group_0000_is_skipped() {
        let bytes = include_bytes!("../test_data/peer-orthanc-c-get-rsp-failed-list-in-command.bin");
        let Command::CGetRsp(response) = decode(bytes, &Limits::default()).unwrap() else { panic!("not a C-GET-RSP") };
        assert_eq!(response.status, Status::PENDING);
        assert_eq!((response.sub_operations.completed, response.sub_operations.failed), (Some(9), Some(1)));

        // The same element before the end of group 0000 is still refused.
        let mut inside = bytes.to_vec();
        inside[8] += 8;
        assert!(matches!(decode(&inside, &Limits::default()), Err(DimseError::NotCommandGroup { .. })));
        // And a command set that starts outside group 0000 (dcm4che's evil length) too.
        let evil = [&[0x08, 0, 0, 0, 4, 0, 0, 0][..], &[0, 0, 0, 0], b"evilleng"].concat();
        assert!(matches!(decode(&evil, &Limits::default()), Err(DimseError::NotCommandGroup { .. })));
    }

    #[test]
    fn missing_message_id_names_the_tag() {
        let mut bytes = Vec::new();
        encode(&echo_rq(), &mut bytes);
        // Drop (0000,0110) and fix the group length.
        let start = 12 + 26 + 10;
        bytes.drain(start..start + 10);
        bytes[8] -= 10;
        let error = decode(&bytes, &Limits::default()).unwrap_err();
        assert_eq!(error, DimseError::MissingElement { tag: tags::MESSAGE_ID, name: "Message ID" });
        assert!(error.to_string().contains("(0000,0110)"), "{error}");
    }
}
