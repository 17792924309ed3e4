//! MLLP framing (HL7 v2.5.1 Appendix C, "Minimal Lower Layer Protocol"): `0x0B payload 0x1C 0x0D`.
//!
//! Sans-IO and bounded: the decoder never holds more than `max_frame_bytes` of one payload, skips
//! garbage before the start block, and scans each byte once (the scan position is kept between
//! calls, so a 1-byte dribble costs O(n), not O(n^2)). Payloads are never logged here.

use bytes::{Buf, Bytes, BytesMut};

/// Start block (VT).
pub const START_BLOCK: u8 = 0x0B;
/// End block (FS), followed by [`CARRIAGE_RETURN`].
pub const END_BLOCK: u8 = 0x1C;
/// The byte that completes the end of a frame.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Why the byte stream cannot be framed any further; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MllpError {
    #[error("MLLP frame larger than the limit of {limit} bytes")]
    FrameTooLarge { limit: usize },
}

/// Incremental MLLP frame decoder for one connection.
#[derive(Debug, Clone)]
pub struct MllpDecoder {
    max_frame_bytes: usize,
    /// True once the start block was consumed; `buf` then starts with payload bytes.
    in_frame: bool,
    /// Bytes of `buf` already scanned without finding a complete end block.
    scanned: usize,
    skipped_garbage: u64,
}

impl MllpDecoder {
    pub fn new(max_frame_bytes: usize) -> MllpDecoder {
        MllpDecoder { max_frame_bytes, in_frame: false, scanned: 0, skipped_garbage: 0 }
    }

    /// Takes one complete frame payload out of `buf`, or returns `Ok(None)` when more bytes are needed.
    ///
    /// Bytes before a start block are dropped and counted in [`MllpDecoder::skipped_garbage`].
    /// A `0x0B` inside a frame and a `0x1C` not followed by `0x0D` are payload data.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, MllpError> {
        if !self.in_frame {
            match buf.iter().position(|&b| b == START_BLOCK) {
                Some(start) => {
                    self.skipped_garbage += start as u64;
                    buf.advance(start + 1);
                    self.in_frame = true;
                    self.scanned = 0;
                }
                None => {
                    self.skipped_garbage += buf.len() as u64;
                    buf.clear();
                    return Ok(None);
                }
            }
        }

        let mut at = self.scanned;
        while let Some(offset) = buf[at..].iter().position(|&b| b == END_BLOCK) {
            let end = at + offset;
            if end > self.max_frame_bytes {
                return Err(MllpError::FrameTooLarge { limit: self.max_frame_bytes });
            }
            match buf.get(end + 1) {
                Some(&CARRIAGE_RETURN) => {
                    let payload = buf.split_to(end).freeze();
                    buf.advance(2);
                    self.in_frame = false;
                    self.scanned = 0;
                    return Ok(Some(payload));
                }
                // The next byte decides whether this is the end block; look again when it arrives.
                None => {
                    self.scanned = end;
                    return Ok(None);
                }
                Some(_) => at = end + 1,
            }
        }
        self.scanned = buf.len();
        if self.scanned > self.max_frame_bytes {
            return Err(MllpError::FrameTooLarge { limit: self.max_frame_bytes });
        }
        Ok(None)
    }

    /// Number of bytes dropped because they were outside any frame.
    pub fn skipped_garbage(&self) -> u64 {
        self.skipped_garbage
    }

    /// True while a frame has started but not ended (useful to tell a clean close from a cut frame).
    pub fn is_in_frame(&self) -> bool {
        self.in_frame
    }
}

/// Appends one MLLP frame holding `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(payload);
    out.push(END_BLOCK);
    out.push(CARRIAGE_RETURN);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode_all(decoder: &mut MllpDecoder, chunks: &[&[u8]]) -> Result<Vec<Bytes>, MllpError> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = decoder.decode(&mut buf)? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    #[test]
    fn decodes_one_frame_and_skips_garbage() {
        let mut decoder = MllpDecoder::new(100);
        let frames = decode_all(&mut decoder, &[b"junk\r\n\x0bMSH|^~\\&\x1c\x0d"]).unwrap();
        assert_eq!(frames, vec![Bytes::from_static(b"MSH|^~\\&")]);
        assert_eq!(decoder.skipped_garbage(), 6);
        assert!(!decoder.is_in_frame());
    }

    #[test]
    fn inner_start_block_and_lone_end_block_are_data() {
        let mut decoder = MllpDecoder::new(100);
        let frames = decode_all(&mut decoder, &[b"\x0ba\x0bb\x1cc\x1c\x1c\x0d"]).unwrap();
        assert_eq!(frames, vec![Bytes::from_static(b"a\x0bb\x1cc\x1c")]);
    }

    #[test]
    fn end_block_split_across_reads() {
        let mut decoder = MllpDecoder::new(100);
        let frames = decode_all(&mut decoder, &[b"\x0babc\x1c", b"\x0d\x0bde", b"f\x1c\x0d"]).unwrap();
        assert_eq!(frames, vec![Bytes::from_static(b"abc"), Bytes::from_static(b"def")]);
    }

    #[test]
    fn empty_frame() {
        let mut decoder = MllpDecoder::new(100);
        let frames = decode_all(&mut decoder, &[b"\x0b\x1c\x0d"]).unwrap();
        assert_eq!(frames, vec![Bytes::new()]);
    }

    #[test]
    fn too_large_is_reported_before_the_end_block_arrives() {
        let mut decoder = MllpDecoder::new(4);
        let mut buf = BytesMut::from(&b"\x0babcd"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"e");
        assert_eq!(decoder.decode(&mut buf), Err(MllpError::FrameTooLarge { limit: 4 }));
        // At the limit exactly is fine.
        let mut decoder = MllpDecoder::new(4);
        let frames = decode_all(&mut decoder, &[b"\x0babcd\x1c\x0d"]).unwrap();
        assert_eq!(frames.len(), 1);
        let mut decoder = MllpDecoder::new(4);
        assert_eq!(decode_all(&mut decoder, &[b"\x0babcde\x1c\x0d"]), Err(MllpError::FrameTooLarge { limit: 4 }));
    }

    #[test]
    fn garbage_without_start_block_is_not_buffered() {
        let mut decoder = MllpDecoder::new(10);
        let mut buf = BytesMut::from(&[b'x'; 1000][..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
        assert_eq!(decoder.skipped_garbage(), 1000);
    }

    #[test]
    fn one_byte_dribble_is_linear() {
        // 200 KB one byte at a time; a rescanning decoder would do ~2e10 byte visits here.
        let payload = vec![b'a'; 200_000];
        let mut wire = Vec::new();
        encode(&payload, &mut wire);
        let mut decoder = MllpDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[byte]);
            if let Some(frame) = decoder.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].len(), payload.len());
    }

    proptest! {
        #[test]
        fn split_points_do_not_change_frames(
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>().prop_filter("no FS", |b| *b != END_BLOCK), 0..60), 1..5),
            garbage in proptest::collection::vec(any::<u8>().prop_filter("no VT", |b| *b != START_BLOCK), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut wire = garbage.clone();
            for payload in &payloads {
                encode(payload, &mut wire);
            }
            let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
            let mut decoder = MllpDecoder::new(64);
            let frames = decode_all(&mut decoder, &chunks).unwrap();
            let expected: Vec<Bytes> = payloads.iter().map(|p| Bytes::copy_from_slice(p)).collect();
            prop_assert_eq!(frames, expected);
            prop_assert_eq!(decoder.skipped_garbage(), garbage.len() as u64);
        }

        #[test]
        fn buffer_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..50) {
            let limit = 100;
            let mut decoder = MllpDecoder::new(limit);
            let mut buf = BytesMut::new();
            for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(frame)) => prop_assert!(frame.len() <= limit),
                        Ok(None) => break,
                        Err(MllpError::FrameTooLarge { .. }) => return Ok(()),
                    }
                }
                // Payload held back is at most the limit (plus one pending end-block byte).
                prop_assert!(buf.len() <= limit + 1);
            }
        }
    }
}
