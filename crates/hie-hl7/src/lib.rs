//! Sans-IO HL7 v2 codec for hie-edge: bytes in, typed ADT and ACK text out, no I/O and no async.
//!
//! The pipeline for one MLLP frame is [`mllp::MllpDecoder::decode`] → [`charset::decode_to_utf8`]
//! → [`adt::parse_adt`] → (the broker decides) → [`ack::build_ack`] → [`charset::encode_from_utf8`]
//! → [`mllp::encode`]. When parsing fails, [`ack::salvage_header`] still gives what the ACK needs.
//!
//! Modules:
//! - [`mllp`]: bounded MLLP frame decoder and encoder.
//! - [`charset`]: BOM, MSH-18 character sets, segment terminators.
//! - [`escape`]: HL7 escape sequences, decoded at leaf access and encoded on output.
//! - [`message`]: separators and the segment/field/repetition/component/subcomponent structure.
//! - [`adt`]: typed ADT (header, PID, MRG, CX, XPN) and its validation rules.
//! - [`ack`]: ACK builder with MSA and ERR, and header salvage for unparseable input.
//! - [`error`]: [`Hl7Error`] with HL7 table 0357 codes and ERR-2 locations.
//! - `fuzzing` (tests and `cfg(fuzzing)` only): entry points for fuzz targets.
//!
//! Invariant: no input makes this crate panic; every failure is an [`Hl7Error`] or an [`mllp::MllpError`].

pub mod ack;
pub mod adt;
pub mod charset;
pub mod error;
pub mod escape;
pub mod message;
pub mod mllp;

pub use error::{ErrorCode, Hl7Error, Location};
pub use message::Separators;

/// Entry points for cargo-fuzz targets and the no-panic property tests.
#[cfg(any(test, fuzzing))]
pub mod fuzzing {
    use bytes::BytesMut;

    use crate::ack::{AckCode, build_ack, salvage_header};
    use crate::message::Message;
    use crate::{adt, charset, escape, mllp};

    /// Runs the whole decode pipeline on `bytes` and checks that the ACK is always well-formed.
    ///
    /// Panics only if an invariant is broken: a fuzzer reports that as a crash.
    pub fn parse_any(bytes: &[u8]) {
        let mut decoder = mllp::MllpDecoder::new(1 << 16);
        let mut buf = BytesMut::from(bytes);
        while let Ok(Some(_frame)) = decoder.decode(&mut buf) {}

        let (text, charset_error) = match charset::decode_to_utf8(bytes) {
            Ok(text) => (text, None),
            Err(error) => (String::from_utf8_lossy(bytes).into_owned(), Some(error)),
        };
        let (header, code, error) = match charset_error {
            Some(error) => (salvage_header(&text), AckCode::AR, Some(error)),
            None => match adt::parse_adt(&text) {
                Ok(message) => (message.header, AckCode::AA, None),
                Err(error) => (salvage_header(&text), AckCode::AR, Some(error)),
            },
        };
        if let Some(message) = Message::parse(&text).ok().and_then(|m| m.segments().last().copied()) {
            let separators = *message.separators();
            let raw = message.raw();
            let decoded = escape::decode(raw, &separators);
            assert_eq!(escape::decode(&escape::encode(&decoded, &separators), &separators), decoded);
        }

        let ack = build_ack(&header, code, error.as_ref(), "ACK1", "20240101000000", "HIE^1.2^ISO", "FAC");
        let parsed = Message::parse(&ack).expect("our ACK parses");
        let msa = parsed.segment("MSA", 1).expect("our ACK has MSA");
        assert_eq!(msa.field(1).value(), code.as_str());
        assert_eq!(msa.field(2).value(), header.control_id.as_str());
        assert_eq!(parsed.separators(), &header.separators);
        if let Some(error) = &error {
            let err = parsed.segment("ERR", 1).expect("our ACK has ERR");
            assert_eq!(err.field(3).value(), error.code.code().to_string());
            assert_eq!(err.field(8).value(), error.message.as_str());
        }
        let mut wire = Vec::new();
        mllp::encode(&charset::encode_from_utf8(&ack, &header.charset), &mut wire);
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::parse_any;

        static FIXTURES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(read_fixtures);

        fn fixtures() -> &'static [Vec<u8>] {
            &FIXTURES
        }

        fn read_fixtures() -> Vec<Vec<u8>> {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data");
            let mut inputs = Vec::new();
            for folder in ["ok", "err"] {
                for entry in std::fs::read_dir(dir.join(folder)).unwrap() {
                    let path = entry.unwrap().path();
                    if path.extension().is_some_and(|ext| ext == "hl7") {
                        inputs.push(std::fs::read(path).unwrap());
                    }
                }
            }
            inputs.sort();
            inputs
        }

        /// Bytes that steer mutations into the interesting places of HL7.
        fn interesting_byte() -> impl Strategy<Value = u8> {
            const INTERESTING: &[u8] = b"|^~\\&#\r\n\"X\x0b\x1c\xc3\xfc";
            prop_oneof![3 => prop::sample::select(INTERESTING), 1 => any::<u8>()]
        }

        #[derive(Debug, Clone)]
        enum Mutation {
            Replace(prop::sample::Index, u8),
            Insert(prop::sample::Index, Vec<u8>),
            Delete(prop::sample::Index, usize),
            Truncate(prop::sample::Index),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            prop_oneof![
                (any::<prop::sample::Index>(), interesting_byte()).prop_map(|(at, b)| Mutation::Replace(at, b)),
                (any::<prop::sample::Index>(), prop::collection::vec(interesting_byte(), 1..6))
                    .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
                (any::<prop::sample::Index>(), 1usize..20).prop_map(|(at, n)| Mutation::Delete(at, n)),
                any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            ]
        }

        fn apply(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
            for mutation in mutations {
                let len = input.len();
                match mutation {
                    Mutation::Replace(at, b) if len > 0 => {
                        let i = at.index(len);
                        input[i] = *b;
                    }
                    Mutation::Insert(at, bytes) => {
                        let i = at.index(len + 1);
                        input.splice(i..i, bytes.iter().copied());
                    }
                    Mutation::Delete(at, n) if len > 0 => {
                        let i = at.index(len);
                        let end = (i + n).min(len);
                        input.drain(i..end);
                    }
                    Mutation::Truncate(at) => input.truncate(at.index(len + 1)),
                    _ => {}
                }
            }
            input
        }

        #[test]
        fn fixtures_and_seeds_do_not_panic() {
            for input in fixtures() {
                parse_any(input);
            }
        }

        proptest! {
            // PROPTEST_CASES raises the count for a longer local run.
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(2000)
            ))]

            #[test]
            fn random_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                parse_any(&bytes);
            }

            #[test]
            fn random_msh_prefixed_bytes_do_not_panic(
                tail in prop::collection::vec(interesting_byte(), 0..300),
            ) {
                let mut input = b"MSH|^~\\&|".to_vec();
                input.extend_from_slice(&tail);
                parse_any(&input);
            }

            #[test]
            fn mutated_fixtures_do_not_panic(
                pick in any::<prop::sample::Index>(),
                mutations in prop::collection::vec(mutation(), 1..8),
            ) {
                let inputs = fixtures();
                let input = apply(inputs[pick.index(inputs.len())].clone(), &mutations);
                parse_any(&input);
            }
        }
    }
}
