//! Entry points for cargo-fuzz targets (compiled under `cfg(fuzzing)`) and, in its tests, the
//! property tests: command round trip, fragmentation and reassembly identity, no panic on any
//! input (the declared-length pre-scan included). Each entry point panics only when an invariant is broken, which a fuzzer reports.

use dicom_ul::pdu::{DEFAULT_MAX_PDU, PDataValue, PDataValueType, Pdu, read_pdu};

use crate::command::{Limits, decode, encode};
use crate::pdata::{Event, MessageAssembler};

/// Decodes `bytes` as a command set. Whatever decodes must re-encode canonically and decode to
/// itself, and own no more bytes than it was decoded from.
pub fn decode_command(bytes: &[u8]) {
    let Ok(command) = decode(bytes, &Limits::default()) else { return };
    let mut encoded = Vec::new();
    encode(&command, &mut encoded);
    let again = decode(&encoded, &Limits::default()).expect("a re-encoded command set must decode");
    assert_eq!(again, command, "round trip changed the command");
    let mut reencoded = Vec::new();
    encode(&again, &mut reencoded);
    assert_eq!(reencoded, encoded, "encoding is not canonical");
    assert!(owned_len(&command) <= bytes.len(), "decoded command owns more than its input");
}

/// Feeds `pdvs` to a [`MessageAssembler`] until the first error and returns the events. Every
/// data byte accepted comes out once, unchanged and in order.
pub fn assemble(pdvs: Vec<PDataValue>) -> Vec<Event> {
    let mut assembler = MessageAssembler::new(Limits::default());
    let mut events = Vec::new();
    for pdv in pdvs {
        let data = (pdv.value_type == PDataValueType::Data).then(|| pdv.data.clone());
        match assembler.handle(pdv) {
            Ok((next, event)) => {
                if let Some(data) = data {
                    assert!(
                        matches!(&event, Some(Event::DataFragment { bytes, .. }) if *bytes == data),
                        "a data fragment must come out as it went in"
                    );
                }
                events.extend(event);
                assembler = next;
            }
            Err(_) => break,
        }
    }
    events
}

/// Runs the declared-length pre-scan over `bytes` as a data set in every encoding and as a Part 10
/// file. What passes whole passes up to Pixel Data too (that reads a prefix of the same walk).
pub fn check_lengths(bytes: &[u8]) {
    use crate::bounds::{Encoding, Extent, check_data_set, check_part10};
    for encoding in [Encoding::ImplicitVrLittleEndian, Encoding::ExplicitVrLittleEndian, Encoding::ExplicitVrBigEndian]
    {
        if check_data_set(bytes, encoding, Extent::Whole).is_ok() {
            assert!(check_data_set(bytes, encoding, Extent::BeforePixelData).is_ok(), "whole passes, prefix fails");
        }
    }
    if check_part10(bytes, Extent::Whole).is_ok() {
        assert!(check_part10(bytes, Extent::BeforePixelData).is_ok(), "whole file passes, header fails");
    }
}

/// Reads `bytes` as a stream of PDUs with dicom-ul's reader and assembles their PDVs.
pub fn read_and_assemble(bytes: &[u8]) -> Vec<Event> {
    let mut buf = bytes;
    let mut pdvs = Vec::new();
    while let Ok(Some(pdu)) = read_pdu(&mut buf, DEFAULT_MAX_PDU, true) {
        if let Pdu::PData { data } = pdu {
            pdvs.extend(data);
        }
    }
    assemble(pdvs)
}

/// Heap bytes a decoded command owns: its strings and its offending-element list.
fn owned_len(command: &crate::Command) -> usize {
    use crate::Command::*;
    let strings: Vec<Option<&String>> = match command {
        CEchoRq(c) => vec![Some(&c.affected_sop_class_uid)],
        CEchoRsp(c) => vec![c.affected_sop_class_uid.as_ref(), c.detail.error_comment.as_ref()],
        CFindRq(c) => vec![Some(&c.affected_sop_class_uid)],
        CFindRsp(c) => vec![c.affected_sop_class_uid.as_ref(), c.detail.error_comment.as_ref()],
        CGetRq(c) => vec![Some(&c.affected_sop_class_uid)],
        CGetRsp(c) => vec![c.affected_sop_class_uid.as_ref(), c.detail.error_comment.as_ref()],
        CMoveRq(c) => vec![Some(&c.affected_sop_class_uid), Some(&c.move_destination)],
        CMoveRsp(c) => vec![c.affected_sop_class_uid.as_ref(), c.detail.error_comment.as_ref()],
        CStoreRq(c) => vec![
            Some(&c.affected_sop_class_uid),
            Some(&c.affected_sop_instance_uid),
            c.move_originator_ae_title.as_ref(),
        ],
        CStoreRsp(c) => vec![
            c.affected_sop_class_uid.as_ref(),
            c.affected_sop_instance_uid.as_ref(),
            c.detail.error_comment.as_ref(),
        ],
        CCancelRq(_) => vec![],
    };
    let offending = match command {
        CEchoRsp(c) => c.detail.offending_element.len(),
        CFindRsp(c) => c.detail.offending_element.len(),
        CGetRsp(c) => c.detail.offending_element.len(),
        CMoveRsp(c) => c.detail.offending_element.len(),
        CStoreRsp(c) => c.detail.offending_element.len(),
        _ => 0,
    };
    // Capacity, not length: what the allocator was actually asked for.
    strings.into_iter().flatten().map(|text| text.capacity()).sum::<usize>() + 4 * offending
}

#[cfg(test)]
mod tests {
    use dicom_core::Tag;
    use dicom_ul::pdu::{MINIMUM_PDU_SIZE, PDU_HEADER_SIZE, write_pdu};
    use proptest::prelude::*;

    use super::*;
    use crate::command::*;
    use crate::pdata::{self, MIN_MAX_PDU_LENGTH, MaxPduLength};
    use crate::status::{Status, SubOperations};

    fn uid() -> impl Strategy<Value = String> {
        "[1-9][0-9]{0,5}(\\.[0-9]{1,8}){1,7}"
    }

    fn ae_title() -> impl Strategy<Value = String> {
        "[A-Z0-9_]{1,16}"
    }

    fn priority() -> impl Strategy<Value = Priority> {
        prop_oneof![Just(Priority::Medium), Just(Priority::High), Just(Priority::Low)]
    }

    fn data_set_present() -> impl Strategy<Value = DataSetType> {
        any::<u16>().prop_filter("present", |v| *v != DataSetType::NONE.0).prop_map(DataSetType)
    }

    fn data_set_any() -> impl Strategy<Value = DataSetType> {
        prop_oneof![Just(DataSetType::NONE), data_set_present()]
    }

    fn detail() -> impl Strategy<Value = StatusDetail> {
        (
            prop::collection::vec((any::<u16>(), any::<u16>()).prop_map(|(g, e)| Tag(g, e)), 0..3),
            prop::option::of("[A-Za-z0-9][A-Za-z0-9 .:]{0,62}[A-Za-z0-9]"),
            prop::option::of(any::<u16>()),
        )
            .prop_map(|(offending_element, error_comment, error_id)| StatusDetail {
                offending_element,
                error_comment,
                error_id,
            })
    }

    fn counts() -> impl Strategy<Value = SubOperations> {
        (
            prop::option::of(any::<u16>()),
            prop::option::of(any::<u16>()),
            prop::option::of(any::<u16>()),
            prop::option::of(any::<u16>()),
        )
            .prop_map(|(remaining, completed, failed, warning)| SubOperations {
                remaining,
                completed,
                failed,
                warning,
            })
    }

    fn command() -> impl Strategy<Value = Command> {
        let status = any::<u16>().prop_map(Status);
        prop_oneof![
            (any::<u16>(), uid()).prop_map(|(message_id, affected_sop_class_uid)| Command::CEchoRq(CEchoRq {
                message_id,
                affected_sop_class_uid
            })),
            (any::<u16>(), prop::option::of(uid()), status.clone(), detail()).prop_map(|(id, uid, status, detail)| {
                Command::CEchoRsp(CEchoRsp {
                    message_id_being_responded_to: id,
                    affected_sop_class_uid: uid,
                    status,
                    detail,
                })
            }),
            (any::<u16>(), uid(), priority(), data_set_present()).prop_map(|(id, uid, priority, ds)| {
                Command::CFindRq(CFindRq { message_id: id, affected_sop_class_uid: uid, priority, data_set_type: ds })
            }),
            (any::<u16>(), prop::option::of(uid()), status.clone(), data_set_any(), detail()).prop_map(
                |(id, uid, status, ds, detail)| Command::CFindRsp(CFindRsp {
                    message_id_being_responded_to: id,
                    affected_sop_class_uid: uid,
                    status,
                    data_set_type: ds,
                    detail
                })
            ),
            (any::<u16>(), uid(), priority(), data_set_present()).prop_map(|(id, uid, priority, ds)| {
                Command::CGetRq(CGetRq { message_id: id, affected_sop_class_uid: uid, priority, data_set_type: ds })
            }),
            (any::<u16>(), prop::option::of(uid()), status.clone(), data_set_any(), counts(), detail()).prop_map(
                |(id, uid, status, ds, sub_operations, detail)| Command::CGetRsp(CGetRsp {
                    message_id_being_responded_to: id,
                    affected_sop_class_uid: uid,
                    status,
                    data_set_type: ds,
                    sub_operations,
                    detail
                })
            ),
            (any::<u16>(), uid(), priority(), ae_title(), data_set_present()).prop_map(
                |(id, uid, priority, ae, ds)| {
                    Command::CMoveRq(CMoveRq {
                        message_id: id,
                        affected_sop_class_uid: uid,
                        priority,
                        move_destination: ae,
                        data_set_type: ds,
                    })
                }
            ),
            (any::<u16>(), prop::option::of(uid()), status.clone(), data_set_any(), counts(), detail()).prop_map(
                |(id, uid, status, ds, sub_operations, detail)| Command::CMoveRsp(CMoveRsp {
                    message_id_being_responded_to: id,
                    affected_sop_class_uid: uid,
                    status,
                    data_set_type: ds,
                    sub_operations,
                    detail
                })
            ),
            (
                any::<u16>(),
                uid(),
                uid(),
                priority(),
                prop::option::of(ae_title()),
                prop::option::of(any::<u16>()),
                data_set_present()
            )
                .prop_map(|(id, class, instance, priority, ae, originator_id, ds)| Command::CStoreRq(
                    CStoreRq {
                        message_id: id,
                        affected_sop_class_uid: class,
                        affected_sop_instance_uid: instance,
                        priority,
                        move_originator_ae_title: ae,
                        move_originator_message_id: originator_id,
                        data_set_type: ds,
                    }
                )),
            (any::<u16>(), prop::option::of(uid()), prop::option::of(uid()), status, detail()).prop_map(
                |(id, class, instance, status, detail)| Command::CStoreRsp(CStoreRsp {
                    message_id_being_responded_to: id,
                    affected_sop_class_uid: class,
                    affected_sop_instance_uid: instance,
                    status,
                    detail
                })
            ),
            any::<u16>().prop_map(|id| Command::CCancelRq(CCancelRq { message_id_being_responded_to: id })),
        ]
    }

    fn max_pdu_length() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(MIN_MAX_PDU_LENGTH),
            Just(MIN_MAX_PDU_LENGTH + 1),
            Just(MINIMUM_PDU_SIZE),
            Just(0),
            MIN_MAX_PDU_LENGTH..70_000,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn encode_then_decode_is_identity(command in command()) {
            let mut bytes = Vec::new();
            encode(&command, &mut bytes);
            prop_assert_eq!(bytes.len() % 2, 0);
            let group_length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
            prop_assert_eq!(group_length, bytes.len() - 12);
            prop_assert_eq!(decode(&bytes, &Limits::default()).unwrap(), command);
            decode_command(&bytes);
        }

        #[test]
        fn fragment_then_assemble_is_identity(
            command in command(),
            data in prop::collection::vec(any::<u8>(), 0..20_000),
            declared_max in max_pdu_length(),
            pc_id in (0u8..128).prop_map(|n| 2 * n + 1),
        ) {
            let max = MaxPduLength::from_peer(declared_max).unwrap();
            let mut command_set = Vec::new();
            encode(&command, &mut command_set);
            let mut pdus: Vec<Pdu> = pdata::fragment(pc_id, PDataValueType::Command, &command_set, max).collect();
            let data = command.has_data_set().then_some(data);
            if let Some(data) = &data {
                pdus.extend(pdata::fragment(pc_id, PDataValueType::Data, data, max));
            }
            let mut pdvs = Vec::new();
            for pdu in pdus {
                let mut wire = Vec::new();
                write_pdu(&mut wire, &pdu).unwrap();
                // PS3.8 D.1.1: the PDU-length field (the variable field) never exceeds the maximum.
                let pdu_length = u32::from_be_bytes([wire[2], wire[3], wire[4], wire[5]]);
                prop_assert!(pdu_length <= max.get(), "{pdu_length} > {}", max.get());
                prop_assert_eq!(wire.len() as u32, pdu_length + PDU_HEADER_SIZE);
                if max.get() >= MINIMUM_PDU_SIZE {
                    let read = read_pdu(&mut &wire[..], max.get(), true).unwrap().unwrap();
                    prop_assert_eq!(&read, &pdu);
                }
                let Pdu::PData { data } = pdu else { unreachable!() };
                pdvs.extend(data);
            }
            let events = assemble(pdvs);
            let Some(Event::Command { presentation_context_id, command: decoded }) = events.first() else {
                panic!("no command event: {events:?}")
            };
            prop_assert_eq!(*presentation_context_id, pc_id);
            prop_assert_eq!(decoded, &command);
            let mut reassembled = Vec::new();
            let mut saw_last = false;
            for event in &events[1..] {
                let Event::DataFragment { bytes, last, presentation_context_id } = event else { panic!("{event:?}") };
                prop_assert!(!saw_last);
                prop_assert_eq!(*presentation_context_id, pc_id);
                prop_assert!(bytes.len() <= max.max_fragment_len());
                reassembled.extend_from_slice(bytes);
                saw_last = *last;
            }
            match data {
                Some(data) => {
                    prop_assert!(saw_last);
                    prop_assert_eq!(reassembled, data);
                }
                None => prop_assert_eq!(events.len(), 1),
            }
        }

        #[test]
        fn decode_of_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            decode_command(&bytes);
        }

        #[test]
        fn decode_of_mutated_command_sets_never_panics(
            command in command(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            encode(&command, &mut bytes);
            for (index, value) in flips {
                let at = index.index(bytes.len());
                bytes[at] = value;
            }
            let cut = cut.index(bytes.len() + 1);
            decode_command(&bytes[..cut]);
        }

        #[test]
        fn assembling_arbitrary_pdvs_never_panics(
            pdvs in prop::collection::vec(
                (any::<u8>(), any::<bool>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)),
                0..16,
            ),
        ) {
            let pdvs = pdvs
                .into_iter()
                .map(|(pc_id, command, is_last, data)| PDataValue {
                    presentation_context_id: pc_id,
                    value_type: if command { PDataValueType::Command } else { PDataValueType::Data },
                    is_last,
                    data,
                })
                .collect();
            assemble(pdvs);
        }

        #[test]
        fn the_length_pre_scan_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            dicm_at in prop::option::of(0usize..2),
        ) {
            // Some inputs as Part 10 files, so the meta group walk is reached.
            let bytes = match dicm_at {
                Some(0) => [&b"DICM"[..], &bytes[..]].concat(),
                Some(_) => [&[0u8; 128][..], b"DICM\x02\x00\x10\x00UI", &bytes[..]].concat(),
                None => bytes,
            };
            check_lengths(&bytes);
        }

        #[test]
        fn reading_arbitrary_pdu_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            read_and_assemble(&bytes);
        }
    }
}
