//! An incremental multipart/related splitter (RFC 2046 5.1, RFC 2387) for WADO-RS responses
//! (DICOM PS3.18 8.6.1.2): fed the body as it arrives, it gives each part's headers and then its
//! bytes in pieces, without ever holding a whole part.
//!
//! Memory is bounded by what a part's headers may take ([`MAX_HEADER_BYTES`]), or by
//! [`MIN_DATA_CHUNK`], plus one fed chunk: body bytes are handed out once that many cannot be the
//! start of a delimiter (or the part ends), and only the last `delimiter length - 1` bytes are
//! kept back. Each byte is searched for a delimiter once.
//!
//! The body is read as if it began with CRLF, so the first delimiter (`--boundary` at the very
//! start, RFC 2046 5.1.1 allows it without a preceding line break) matches like every other
//! (`CRLF--boundary`). Transport padding after a delimiter is skipped; the preamble and the
//! epilogue are ignored.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem::Finder;

/// Most header bytes of one part (reliability-security 6: 16 KiB per part).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most preamble bytes skipped before the first delimiter.
pub const MAX_PREAMBLE_BYTES: usize = 64 * 1024;
/// Smallest body chunk handed out before a part ends.
pub const MIN_DATA_CHUNK: usize = 128 * 1024;
/// RFC 2046 5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY_LEN: usize = 70;

/// What the splitter found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A part begins; its header lines, unfolded, without the final empty line.
    PartStart { headers: Vec<(String, String)> },
    /// The next bytes of the current part.
    Data(Bytes),
    /// The current part ended (a delimiter followed it).
    PartEnd,
    /// The close delimiter: no more parts.
    Closed,
}

/// Why a body could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    #[error("the multipart boundary is empty or longer than {MAX_BOUNDARY_LEN} characters")]
    BadBoundary,
    #[error("no delimiter within the first {MAX_PREAMBLE_BYTES} bytes")]
    NoDelimiter,
    #[error("part headers longer than {MAX_HEADER_BYTES} bytes")]
    HeadersTooLong,
    #[error("a part header line is not `name: value`: {0:?}")]
    BadHeader(String),
    #[error("garbage after a delimiter")]
    BadDelimiterLine,
    #[error("the body ended inside a part (no close delimiter)")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` (close), or padding and CRLF.
    AfterDelimiter,
    /// Reading a part's headers, up to the empty line.
    Headers,
    /// Inside a part's body.
    Body,
    /// After the close delimiter (the epilogue is dropped).
    Closed,
}

/// The splitter. Feed it with [`Splitter::push`], drain it with [`Splitter::next_event`] until it
/// says `None`, and call [`Splitter::finish`] when the body ends.
#[derive(Debug)]
pub struct Splitter {
    delimiter: Vec<u8>,
    /// Built once: building a searcher costs about as much as searching a small chunk.
    finder: Finder<'static>,
    buffer: BytesMut,
    state: State,
    skipped: usize,
    /// Leading bytes of `buffer` already searched without finding a delimiter.
    scanned: usize,
}

impl Splitter {
    /// A splitter for `boundary` (the Content-Type parameter, unquoted).
    pub fn new(boundary: &str) -> Result<Splitter, MultipartError> {
        if boundary.is_empty() || boundary.len() > MAX_BOUNDARY_LEN {
            return Err(MultipartError::BadBoundary);
        }
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        let finder = Finder::new(&delimiter).into_owned();
        let mut buffer = BytesMut::with_capacity(delimiter.len() * 2);
        buffer.extend_from_slice(b"\r\n");
        Ok(Splitter { delimiter, finder, buffer, state: State::Preamble, skipped: 0, scanned: 0 })
    }

    /// Adds the next bytes of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        // Room for a whole data chunk at once: growing by doubling would copy what is held
        // again at each step.
        if self.buffer.capacity() - self.buffer.len() < chunk.len() {
            self.buffer.reserve(chunk.len().max(MIN_DATA_CHUNK) + self.delimiter.len());
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next event the bytes pushed so far allow, or `None` when more are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, MultipartError> {
        loop {
            match self.state {
                State::Closed => {
                    self.buffer.clear();
                    return Ok(None);
                }
                State::Preamble => match self.finder.find(&self.buffer) {
                    Some(at) => {
                        self.buffer.advance(at + self.delimiter.len());
                        self.state = State::AfterDelimiter;
                    }
                    None => {
                        let keep = self.delimiter.len() - 1;
                        if self.buffer.len() > keep {
                            let drop = self.buffer.len() - keep;
                            self.skipped += drop;
                            self.buffer.advance(drop);
                        }
                        if self.skipped > MAX_PREAMBLE_BYTES {
                            return Err(MultipartError::NoDelimiter);
                        }
                        return Ok(None);
                    }
                },
                State::AfterDelimiter => {
                    if self.buffer.len() < 2 {
                        return Ok(None);
                    }
                    if self.buffer.starts_with(b"--") {
                        self.state = State::Closed;
                        return Ok(Some(Event::Closed));
                    }
                    // Transport padding (RFC 2046 5.1.1: linear white space) before the CRLF.
                    let Some(line_end) = find(&self.buffer, b"\r\n") else {
                        if self.buffer.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::BadDelimiterLine);
                        }
                        return Ok(None);
                    };
                    if !self.buffer[..line_end].iter().all(|byte| *byte == b' ' || *byte == b'\t') {
                        return Err(MultipartError::BadDelimiterLine);
                    }
                    self.buffer.advance(line_end + 2);
                    self.state = State::Headers;
                }
                State::Headers => {
                    // A part with no headers starts with the empty line at once.
                    let end = if self.buffer.starts_with(b"\r\n") {
                        Some((0, 2))
                    } else {
                        find(&self.buffer, b"\r\n\r\n").map(|at| (at, 4))
                    };
                    let Some((at, separator)) = end else {
                        if self.buffer.len() > MAX_HEADER_BYTES {
                            return Err(MultipartError::HeadersTooLong);
                        }
                        return Ok(None);
                    };
                    if at > MAX_HEADER_BYTES {
                        return Err(MultipartError::HeadersTooLong);
                    }
                    let block = self.buffer.split_to(at + separator);
                    let headers = parse_headers(&block[..at])?;
                    self.state = State::Body;
                    return Ok(Some(Event::PartStart { headers }));
                }
                State::Body => {
                    let from = self.scanned.min(self.buffer.len());
                    if let Some(at) = self.finder.find(&self.buffer[from..]).map(|at| at + from) {
                        self.scanned = 0;
                        if at > 0 {
                            return Ok(Some(Event::Data(self.buffer.split_to(at).freeze())));
                        }
                        self.buffer.advance(self.delimiter.len());
                        self.state = State::AfterDelimiter;
                        return Ok(Some(Event::PartEnd));
                    }
                    // Everything but what could be the start of a delimiter is the part's; it is
                    // handed out in chunks of at least MIN_DATA_CHUNK, so that the consumer's
                    // per-chunk costs (a channel send, a TLS record, a write) are not paid per
                    // network read.
                    let keep = self.delimiter.len() - 1;
                    self.scanned = self.buffer.len().saturating_sub(keep);
                    if self.scanned < MIN_DATA_CHUNK {
                        return Ok(None);
                    }
                    let n = self.scanned;
                    self.scanned = 0;
                    return Ok(Some(Event::Data(self.buffer.split_to(n).freeze())));
                }
            }
        }
    }

    /// The body ended: fine after the close delimiter, an error anywhere else.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.state {
            State::Closed => Ok(()),
            State::Preamble => Err(MultipartError::NoDelimiter),
            _ => Err(MultipartError::Truncated),
        }
    }
}

/// The boundary parameter of a multipart Content-Type value, unquoted.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut parameters = content_type.split(';');
    let media_type = parameters.next()?.trim();
    if !media_type.eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    for parameter in parameters {
        let Some((name, value)) = parameter.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')).unwrap_or(value);
            return Some(value.to_owned());
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>, MultipartError> {
    let text = String::from_utf8_lossy(block);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").filter(|line| !line.is_empty()) {
        // RFC 5322 2.2.3: a line starting with white space continues the previous header.
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                    continue;
                }
                None => return Err(MultipartError::BadHeader(truncate(line))),
            }
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(MultipartError::BadHeader(truncate(line)));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(headers)
}

fn truncate(line: &str) -> String {
    line.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each part's headers and bytes.
    type Parts = Vec<(Vec<(String, String)>, Vec<u8>)>;

    fn split_all(body: &[u8], chunk: usize) -> Result<Parts, MultipartError> {
        let mut splitter = Splitter::new("b0und").unwrap();
        let mut parts = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            splitter.push(piece);
            while let Some(event) = splitter.next_event()? {
                match event {
                    Event::PartStart { headers } => parts.push((headers, Vec::new())),
                    Event::Data(bytes) => parts.last_mut().unwrap().1.extend_from_slice(&bytes),
                    Event::PartEnd | Event::Closed => {}
                }
            }
        }
        splitter.finish()?;
        Ok(parts)
    }

    const BODY: &[u8] = b"preamble\r\n--b0und\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--b0unx \r\n\
        --b0und  \r\nContent-Type: application/dicom\r\nX-Long: a\r\n  b\r\n\r\n\r\n--b0und--\r\nepilogue";

    #[test]
    fn parts_come_out_whole_whatever_the_chunking() {
        for chunk in [1, 2, 3, 7, 16, 1000] {
            let parts = split_all(BODY, chunk).unwrap();
            assert_eq!(parts.len(), 2, "chunk {chunk}");
            assert_eq!(parts[0].0, [("content-type".to_owned(), "application/dicom".to_owned())]);
            assert_eq!(parts[0].1, b"first\r\n--b0unx ", "chunk {chunk}: a near-delimiter is data");
            assert_eq!(parts[1].0[1], ("x-long".to_owned(), "a b".to_owned()), "folded header");
            assert_eq!(parts[1].1, b"", "chunk {chunk}");
        }
    }

    #[test]
    fn a_body_that_starts_with_the_delimiter_has_no_preamble() {
        let parts = split_all(b"--b0und\r\n\r\nx\r\n--b0und--", 4).unwrap();
        assert_eq!(parts, [(Vec::new(), b"x".to_vec())]);
    }

    #[test]
    fn broken_bodies_are_errors() {
        assert_eq!(split_all(b"--b0und\r\n\r\nhalf a part", 5), Err(MultipartError::Truncated));
        assert_eq!(split_all(b"no delimiter at all", 5), Err(MultipartError::NoDelimiter));
        assert_eq!(split_all(b"--b0undX\r\n\r\nx\r\n--b0und--", 5), Err(MultipartError::BadDelimiterLine));
        assert_eq!(
            split_all(b"--b0und\r\nno colon\r\n\r\nx\r\n--b0und--", 5).unwrap_err(),
            MultipartError::BadHeader("no colon".to_owned())
        );
        let mut long = b"--b0und\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES + 1));
        assert_eq!(split_all(&long, 4096), Err(MultipartError::HeadersTooLong));
        assert_eq!(Splitter::new("").unwrap_err(), MultipartError::BadBoundary);
    }

    #[test]
    fn memory_stays_bounded_inside_a_big_part() {
        let mut splitter = Splitter::new("b0und").unwrap();
        splitter.push(b"--b0und\r\n\r\n");
        assert!(matches!(splitter.next_event(), Ok(Some(Event::PartStart { .. }))));
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut n_bytes = 0;
        for _ in 0..100 {
            splitter.push(&chunk);
            while let Some(event) = splitter.next_event().unwrap() {
                if let Event::Data(bytes) = event {
                    n_bytes += bytes.len();
                }
            }
            assert!(splitter.buffer.len() < MIN_DATA_CHUNK + chunk.len(), "at most a chunk is held");
        }
        assert_eq!(n_bytes + splitter.buffer.len(), 100 * chunk.len());
    }

    #[test]
    fn the_boundary_parameter_is_read_quoted_or_not() {
        let content_type = r#"multipart/related; type="application/dicom"; boundary="a b:c""#;
        assert_eq!(boundary_of(content_type).as_deref(), Some("a b:c"));
        assert_eq!(boundary_of("Multipart/Related;boundary=xyz").as_deref(), Some("xyz"));
        assert_eq!(boundary_of("application/dicom; boundary=xyz"), None);
        assert_eq!(boundary_of("multipart/related; type=x"), None);
    }
}
