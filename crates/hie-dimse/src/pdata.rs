//! P-DATA: splitting a command set or data set into P-DATA-TF PDUs within the peer's maximum PDU
//! length (DICOM PS3.8 9.3.5, Annex E.2, D.1), and [`MessageAssembler`], the state machine that
//! turns received presentation data values back into DIMSE messages.
//!
//! Data sets are never concatenated here: each data fragment is handed on as it arrives, so an
//! instance can stream straight to where it goes.

use dicom_ul::pdu::{PDV_HEADER_SIZE, PDataValue, PDataValueType, Pdu};

use crate::command::{self, Command, DimseError, Limits};

/// The maximum length a peer declared in its Maximum Length sub-item (PS3.8 D.1.1): the largest
/// *variable field* of a P-DATA-TF PDU it will receive, so excluding the 6-byte PDU header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPduLength(u32);

impl MaxPduLength {
    /// Parses a declared maximum. 0 means "no maximum" (PS3.8 D.1.1); we then send PDUs of
    /// [`UNLIMITED_PDU_LENGTH`], which every peer that declares no limit must take.
    ///
    /// A maximum too small to carry one byte after the PDV header cannot be honoured, so it is
    /// refused: the association must be aborted rather than the peer's limit exceeded.
    pub fn from_peer(declared: u32) -> Result<MaxPduLength, AssemblyError> {
        match declared {
            0 => Ok(MaxPduLength(UNLIMITED_PDU_LENGTH)),
            declared if declared < MIN_MAX_PDU_LENGTH => Err(AssemblyError::PeerMaxPduTooSmall { declared }),
            declared => Ok(MaxPduLength(declared)),
        }
    }

    /// The largest fragment one PDV can carry: one PDV per PDU, minus the PDV item length (4),
    /// presentation context ID (1) and message control header (1) of PS3.8 9.3.5.1 and E.2.
    pub fn max_fragment_len(self) -> usize {
        (self.0 - PDV_HEADER_SIZE) as usize
    }

    /// The declared (or substituted) value.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Splits a complete command set or data set into P-DATA-TF PDUs of one PDV each, none longer
/// than the peer's maximum, the last one flagged last (PS3.8 E.2). Empty input gives one empty
/// last fragment.
pub fn fragment(
    presentation_context_id: u8,
    value_type: PDataValueType,
    bytes: &[u8],
    max_pdu_length: MaxPduLength,
) -> Fragments<'_> {
    Fragments {
        presentation_context_id,
        value_type,
        bytes,
        max_fragment_len: max_pdu_length.max_fragment_len(),
        ends_message: true,
        done: false,
    }
}

/// Like [`fragment`] for one chunk of a data set streamed from elsewhere, when more chunks
/// follow: no fragment is flagged last. Send the final chunk with [`fragment`]; a streaming
/// caller that holds one chunk back never needs to send an empty last fragment.
pub fn fragment_partial(
    presentation_context_id: u8,
    value_type: PDataValueType,
    bytes: &[u8],
    max_pdu_length: MaxPduLength,
) -> Fragments<'_> {
    Fragments {
        ends_message: false,
        done: bytes.is_empty(),
        ..fragment(presentation_context_id, value_type, bytes, max_pdu_length)
    }
}

/// Iterator over the P-DATA-TF PDUs of [`fragment`] and [`fragment_partial`].
#[derive(Debug, Clone)]
pub struct Fragments<'a> {
    presentation_context_id: u8,
    value_type: PDataValueType,
    bytes: &'a [u8],
    max_fragment_len: usize,
    ends_message: bool,
    done: bool,
}

impl Iterator for Fragments<'_> {
    type Item = Pdu;

    fn next(&mut self) -> Option<Pdu> {
        if self.done {
            return None;
        }
        let (chunk, rest) = self.bytes.split_at(self.bytes.len().min(self.max_fragment_len));
        self.bytes = rest;
        self.done = rest.is_empty();
        let value = PDataValue {
            presentation_context_id: self.presentation_context_id,
            value_type: self.value_type.clone(),
            is_last: self.done && self.ends_message,
            data: chunk.to_vec(),
        };
        Some(Pdu::PData { data: vec![value] })
    }
}

/// What the assembler yields, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete command. If [`Command::has_data_set`], data fragments on the same presentation
    /// context follow.
    Command { presentation_context_id: u8, command: Command },
    /// One fragment of the data set that belongs to the last command, moved out of its PDV
    /// without copying. `last` marks the end of the data set, and so of the message.
    DataFragment { presentation_context_id: u8, bytes: Vec<u8>, last: bool },
}

/// Reassembles DIMSE messages from presentation data values (PS3.8 E.2, PS3.7 6.3): command
/// fragments are gathered (they are small and bounded by [`Limits::max_command_set_len`]), data
/// fragments are passed on one by one.
///
/// Each state is named for what it awaits and is consumed by [`MessageAssembler::handle`]; after
/// an error the assembler is gone, and the association must be aborted (PS3.8 9.1.1: a DIMSE
/// protocol violation leaves no way to resynchronise).
#[derive(Debug)]
pub enum MessageAssembler {
    /// Between messages, or inside a command set.
    ExpectCommand(ExpectCommand),
    /// Inside the data set of the last command.
    ExpectData(ExpectData),
}

/// Awaiting the (next) command fragment.
#[derive(Debug)]
pub struct ExpectCommand {
    limits: Limits,
    /// Presentation context and bytes of the command fragments received so far.
    partial: Option<(u8, Vec<u8>)>,
}

/// Awaiting the next data fragment on `presentation_context_id`.
#[derive(Debug)]
pub struct ExpectData {
    limits: Limits,
    presentation_context_id: u8,
}

impl MessageAssembler {
    /// An assembler awaiting the first command of an association.
    pub fn new(limits: Limits) -> MessageAssembler {
        MessageAssembler::ExpectCommand(ExpectCommand { limits, partial: None })
    }

    /// Takes one PDV; returns the next state and what it completed, if anything.
    pub fn handle(self, pdv: PDataValue) -> Result<(MessageAssembler, Option<Event>), AssemblyError> {
        match self {
            MessageAssembler::ExpectCommand(state) => state.handle(pdv),
            MessageAssembler::ExpectData(state) => state.handle(pdv),
        }
    }

    /// Whether the last message is complete, so that a release or a new message may come next.
    pub fn is_between_messages(&self) -> bool {
        matches!(self, MessageAssembler::ExpectCommand(ExpectCommand { partial: None, .. }))
    }
}

impl ExpectCommand {
    fn handle(self, pdv: PDataValue) -> Result<(MessageAssembler, Option<Event>), AssemblyError> {
        let ExpectCommand { limits, partial } = self;
        let pc_id = pdv.presentation_context_id;
        if pdv.value_type == PDataValueType::Data {
            return Err(AssemblyError::DataBeforeCommand { presentation_context_id: pc_id });
        }
        let mut buffer = match partial {
            Some((expected, _)) if expected != pc_id => {
                return Err(AssemblyError::MixedPresentationContexts { expected, found: pc_id });
            }
            Some((_, buffer)) => buffer,
            None => Vec::new(),
        };
        let len = buffer.len().saturating_add(pdv.data.len());
        if len > limits.max_command_set_len {
            return Err(AssemblyError::CommandSetTooLarge { len, max: limits.max_command_set_len });
        }
        if !pdv.is_last {
            buffer.extend_from_slice(&pdv.data);
            return Ok((
                MessageAssembler::ExpectCommand(ExpectCommand { limits, partial: Some((pc_id, buffer)) }),
                None,
            ));
        }
        // A command in one PDV (the usual case) is decoded in place, without a copy.
        let command = if buffer.is_empty() {
            command::decode(&pdv.data, &limits)?
        } else {
            buffer.extend_from_slice(&pdv.data);
            command::decode(&buffer, &limits)?
        };
        let next = if command.has_data_set() {
            MessageAssembler::ExpectData(ExpectData { limits, presentation_context_id: pc_id })
        } else {
            MessageAssembler::new(limits)
        };
        Ok((next, Some(Event::Command { presentation_context_id: pc_id, command })))
    }
}

impl ExpectData {
    fn handle(self, pdv: PDataValue) -> Result<(MessageAssembler, Option<Event>), AssemblyError> {
        let ExpectData { limits, presentation_context_id } = self;
        if pdv.value_type == PDataValueType::Command {
            return Err(AssemblyError::CommandDuringDataSet { presentation_context_id: pdv.presentation_context_id });
        }
        if pdv.presentation_context_id != presentation_context_id {
            return Err(AssemblyError::MixedPresentationContexts {
                expected: presentation_context_id,
                found: pdv.presentation_context_id,
            });
        }
        let last = pdv.is_last;
        let next = if last {
            MessageAssembler::new(limits)
        } else {
            MessageAssembler::ExpectData(ExpectData { limits, presentation_context_id })
        };
        Ok((next, Some(Event::DataFragment { presentation_context_id, bytes: pdv.data, last })))
    }
}

/// Why a sequence of PDVs is not a valid DIMSE message stream. All but
/// [`AssemblyError::PeerMaxPduTooSmall`] are the sending peer's protocol violations; each one
/// calls for an A-ABORT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssemblyError {
    #[error("data fragment on presentation context {presentation_context_id} without a command announcing a data set")]
    DataBeforeCommand { presentation_context_id: u8 },
    #[error("command fragment on presentation context {presentation_context_id} while a data set was being received")]
    CommandDuringDataSet { presentation_context_id: u8 },
    #[error("fragment on presentation context {found} inside a message on presentation context {expected}")]
    MixedPresentationContexts { expected: u8, found: u8 },
    #[error("command set of at least {len} bytes exceeds the limit of {max} bytes")]
    CommandSetTooLarge { len: usize, max: usize },
    #[error("invalid command set: {0}")]
    Command(#[from] DimseError),
    #[error("peer's maximum PDU length {declared} cannot carry a fragment (minimum {MIN_MAX_PDU_LENGTH})")]
    PeerMaxPduTooSmall { declared: u32 },
}

/// The smallest maximum PDU length that carries one byte per fragment.
pub const MIN_MAX_PDU_LENGTH: u32 = PDV_HEADER_SIZE + 1;
/// What we send when a peer declares no maximum: dicom-ul's own large buffer size
/// (`LARGE_PDU_SIZE`, 256 KiB minus the PDU header), big enough that per-PDU overhead vanishes.
pub const UNLIMITED_PDU_LENGTH: u32 = 262_144 - dicom_ul::pdu::PDU_HEADER_SIZE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CEchoRq, CStoreRq, encode};
    use crate::{DataSetType, Priority};

    fn pdv(pc_id: u8, value_type: PDataValueType, is_last: bool, data: Vec<u8>) -> PDataValue {
        PDataValue { presentation_context_id: pc_id, value_type, is_last, data }
    }

    fn command_bytes(with_data: bool) -> Vec<u8> {
        let command = if with_data {
            Command::CStoreRq(CStoreRq {
                message_id: 1,
                affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".to_owned(),
                affected_sop_instance_uid: "1.2.3".to_owned(),
                priority: Priority::Medium,
                move_originator_ae_title: None,
                move_originator_message_id: None,
                data_set_type: DataSetType::PRESENT,
            })
        } else {
            Command::CEchoRq(CEchoRq { message_id: 1, affected_sop_class_uid: "1.2.840.10008.1.1".to_owned() })
        };
        let mut bytes = Vec::new();
        encode(&command, &mut bytes);
        bytes
    }

    fn feed(pdvs: Vec<PDataValue>) -> Result<Vec<Event>, AssemblyError> {
        let mut assembler = MessageAssembler::new(Limits::default());
        let mut events = Vec::new();
        for pdv in pdvs {
            let (next, event) = assembler.handle(pdv)?;
            assembler = next;
            events.extend(event);
        }
        Ok(events)
    }

    #[test]
    fn data_before_command_is_refused() {
        let error = feed(vec![pdv(1, PDataValueType::Data, true, vec![1, 2])]).unwrap_err();
        assert_eq!(error, AssemblyError::DataBeforeCommand { presentation_context_id: 1 });
    }

    #[test]
    fn data_after_a_command_without_data_set_is_refused() {
        let error = feed(vec![
            pdv(1, PDataValueType::Command, true, command_bytes(false)),
            pdv(1, PDataValueType::Data, true, vec![1, 2]),
        ])
        .unwrap_err();
        assert_eq!(error, AssemblyError::DataBeforeCommand { presentation_context_id: 1 });
    }

    #[test]
    fn mixed_presentation_contexts_are_refused() {
        let bytes = command_bytes(true);
        let (first, second) = bytes.split_at(10);
        let error = feed(vec![
            pdv(1, PDataValueType::Command, false, first.to_vec()),
            pdv(3, PDataValueType::Command, true, second.to_vec()),
        ])
        .unwrap_err();
        assert_eq!(error, AssemblyError::MixedPresentationContexts { expected: 1, found: 3 });

        let error = feed(vec![
            pdv(1, PDataValueType::Command, true, bytes.clone()),
            pdv(3, PDataValueType::Data, true, vec![0]),
        ])
        .unwrap_err();
        assert_eq!(error, AssemblyError::MixedPresentationContexts { expected: 1, found: 3 });
    }

    #[test]
    fn command_fragment_after_the_last_command_fragment_is_refused() {
        let error = feed(vec![
            pdv(1, PDataValueType::Command, true, command_bytes(true)),
            pdv(1, PDataValueType::Command, true, command_bytes(false)),
        ])
        .unwrap_err();
        assert_eq!(error, AssemblyError::CommandDuringDataSet { presentation_context_id: 1 });
    }

    #[test]
    fn oversized_command_set_is_refused_before_it_is_buffered() {
        let mut assembler = MessageAssembler::new(Limits { max_command_set_len: 100 });
        for _ in 0..2 {
            let (next, event) = assembler.handle(pdv(1, PDataValueType::Command, false, vec![0; 50])).unwrap();
            assert!(event.is_none());
            assembler = next;
        }
        let error = assembler.handle(pdv(1, PDataValueType::Command, false, vec![0; 1])).unwrap_err();
        assert_eq!(error, AssemblyError::CommandSetTooLarge { len: 101, max: 100 });
    }

    #[test]
    fn data_streams_fragment_by_fragment() {
        let events = feed(vec![
            pdv(5, PDataValueType::Command, true, command_bytes(true)),
            pdv(5, PDataValueType::Data, false, vec![1, 2]),
            pdv(5, PDataValueType::Data, true, vec![3]),
            pdv(5, PDataValueType::Command, true, command_bytes(false)),
        ])
        .unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[1], Event::DataFragment { presentation_context_id: 5, bytes: vec![1, 2], last: false });
        assert_eq!(events[2], Event::DataFragment { presentation_context_id: 5, bytes: vec![3], last: true });
    }

    #[test]
    fn max_pdu_length_is_parsed() {
        assert_eq!(MaxPduLength::from_peer(0).unwrap().get(), UNLIMITED_PDU_LENGTH);
        assert_eq!(MaxPduLength::from_peer(6), Err(AssemblyError::PeerMaxPduTooSmall { declared: 6 }));
        assert_eq!(MaxPduLength::from_peer(MIN_MAX_PDU_LENGTH).unwrap().max_fragment_len(), 1);
        assert_eq!(MaxPduLength::from_peer(16_384).unwrap().max_fragment_len(), 16_378);
    }

    #[test]
    fn partial_fragments_are_never_last() {
        let max = MaxPduLength::from_peer(16).unwrap();
        let pdus: Vec<Pdu> = fragment_partial(1, PDataValueType::Data, &[7; 25], max).collect();
        assert_eq!(pdus.len(), 3);
        assert!(pdus.iter().all(|pdu| matches!(pdu, Pdu::PData { data } if !data[0].is_last)));
        assert_eq!(fragment_partial(1, PDataValueType::Data, &[], max).count(), 0);
        let whole: Vec<Pdu> = fragment(1, PDataValueType::Data, &[], max).collect();
        assert!(matches!(&whole[..], [Pdu::PData { data }] if data[0].is_last && data[0].data.is_empty()));
    }
}
