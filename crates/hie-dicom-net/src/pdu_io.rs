//! Bounded async PDU I/O (DICOM PS3.8 9.3): [`PduReader`] reads the 6-byte PDU header, checks the
//! PDU type and its length against the limit for that type BEFORE reading the body, then buffers
//! the body only as its bytes arrive and parses it with dicom-ul's `read_pdu`. [`PduWriter`]
//! encodes with dicom-ul's `write_pdu` into a reused buffer and writes it whole.
//!
//! Limits by type (PS3.8 9.3.2 to 9.3.8): A-ASSOCIATE-RQ/AC at least 68 bytes and at most a fixed
//! bound ([`PduLimits::max_associate_length`]); P-DATA-TF at most the maximum length we declared
//! (PS3.8 D.1.1: the peer must never exceed it); A-ASSOCIATE-RJ, A-RELEASE-RQ/RP and A-ABORT
//! exactly 4 bytes. A header declaring 4 GiB is refused after 6 bytes, having allocated nothing
//! beyond the read buffer.

use bytes::BytesMut;
use dicom_ul::pdu::{AbortRQServiceProviderReason, MAXIMUM_PDU_SIZE, MINIMUM_PDU_SIZE, PDU_HEADER_SIZE, Pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// PDU types, PS3.8 Table 9-10 ... 9-26 (first byte of every PDU).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduType {
    /// PS3.8 9.3.2
    AssociateRq = 0x01,
    /// PS3.8 9.3.3
    AssociateAc = 0x02,
    /// PS3.8 9.3.4
    AssociateRj = 0x03,
    /// PS3.8 9.3.5
    PDataTf = 0x04,
    /// PS3.8 9.3.6
    ReleaseRq = 0x05,
    /// PS3.8 9.3.7
    ReleaseRp = 0x06,
    /// PS3.8 9.3.8
    Abort = 0x07,
}

impl PduType {
    /// The PDU type of a first byte; `None` for values PS3.8 does not define.
    pub fn from_u8(value: u8) -> Option<PduType> {
        Some(match value {
            0x01 => PduType::AssociateRq,
            0x02 => PduType::AssociateAc,
            0x03 => PduType::AssociateRj,
            0x04 => PduType::PDataTf,
            0x05 => PduType::ReleaseRq,
            0x06 => PduType::ReleaseRp,
            0x07 => PduType::Abort,
            _ => return None,
        })
    }

    /// The name the standard gives the PDU.
    pub fn name(self) -> &'static str {
        match self {
            PduType::AssociateRq => "A-ASSOCIATE-RQ",
            PduType::AssociateAc => "A-ASSOCIATE-AC",
            PduType::AssociateRj => "A-ASSOCIATE-RJ",
            PduType::PDataTf => "P-DATA-TF",
            PduType::ReleaseRq => "A-RELEASE-RQ",
            PduType::ReleaseRp => "A-RELEASE-RP",
            PduType::Abort => "A-ABORT",
        }
    }
}

/// The name of a parsed PDU, for errors and logs.
pub fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => PduType::AssociateRq.name(),
        Pdu::AssociationAC(_) => PduType::AssociateAc.name(),
        Pdu::AssociationRJ(_) => PduType::AssociateRj.name(),
        Pdu::PData { .. } => PduType::PDataTf.name(),
        Pdu::ReleaseRQ => PduType::ReleaseRq.name(),
        Pdu::ReleaseRP => PduType::ReleaseRp.name(),
        Pdu::AbortRQ { .. } => PduType::Abort.name(),
        Pdu::Unknown { .. } => "unknown PDU",
    }
}

/// What a PDU may declare, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduLimits {
    /// The Maximum Length we declared (PS3.8 D.1.1): the largest P-DATA-TF variable field.
    pub max_pdata_length: u32,
    /// The largest A-ASSOCIATE-RQ/AC variable field we read.
    pub max_associate_length: u32,
}

impl PduLimits {
    /// Limits with the default A-ASSOCIATE bound and `max_pdata_length` for P-DATA-TF.
    pub fn new(max_pdata_length: u32) -> PduLimits {
        PduLimits { max_pdata_length, max_associate_length: DEFAULT_MAX_ASSOCIATE_LENGTH }
    }
}

/// Why a PDU could not be read. The variants with an [`PduError::abort_reason`] are the peer's
/// protocol violations and call for an A-ABORT with that provider reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PduError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection between PDUs.
    #[error("connection closed by the peer")]
    Closed,
    /// The peer closed the connection inside a PDU.
    #[error("connection closed inside a {pdu_type:#04X} PDU after {received} of {declared} bytes")]
    Truncated { pdu_type: u8, declared: u64, received: usize },
    /// The first byte is not a PDU type of PS3.8 9.3.
    #[error("unrecognized PDU type {pdu_type:#04X}")]
    UnknownType { pdu_type: u8 },
    #[error("{} declares {declared} bytes, more than the {max} allowed", pdu_type.name())]
    TooLong { pdu_type: PduType, declared: u32, max: u32 },
    #[error("{} declares {declared} bytes, fewer than the {min} it needs", pdu_type.name())]
    TooShort { pdu_type: PduType, declared: u32, min: u32 },
    #[error("{} declares {declared} bytes but has a fixed length of {expected}", pdu_type.name())]
    WrongLength { pdu_type: PduType, declared: u32, expected: u32 },
    /// The body does not parse (dicom-ul's reader refused it).
    #[error("malformed {}: {detail}", pdu_type.name())]
    Malformed { pdu_type: PduType, detail: String },
    /// A PDU we were about to send could not be encoded (our fault: for example an AE title
    /// longer than 16 characters).
    #[error("cannot encode {pdu}: {detail}")]
    Encode { pdu: &'static str, detail: String },
}

impl PduError {
    /// The A-ABORT provider reason for this error (PS3.8 Table 9-26), `None` when there is no
    /// peer left to tell or when the fault is ours.
    pub fn abort_reason(&self) -> Option<AbortRQServiceProviderReason> {
        match self {
            PduError::UnknownType { .. } => Some(AbortRQServiceProviderReason::UnrecognizedPdu),
            PduError::TooLong { .. }
            | PduError::TooShort { .. }
            | PduError::WrongLength { .. }
            | PduError::Malformed { .. } => Some(AbortRQServiceProviderReason::InvalidPduParameter),
            PduError::Io(_) | PduError::Closed | PduError::Truncated { .. } | PduError::Encode { .. } => None,
        }
    }
}

/// Reads PDUs from a byte stream, buffering no more than one PDU plus one read ahead.
#[derive(Debug, Default)]
pub struct PduReader {
    buffer: BytesMut,
}

impl PduReader {
    pub fn new() -> PduReader {
        PduReader { buffer: BytesMut::new() }
    }

    /// Whether bytes of a next PDU are already buffered.
    pub fn has_buffered(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Reads one PDU. Cancel-safe: bytes read before a cancellation stay buffered for the next call.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, stream: &mut R, limits: &PduLimits) -> Result<Pdu, PduError> {
        let header_len = PDU_HEADER_SIZE as usize;
        while self.buffer.len() < header_len {
            self.fill(stream, header_len, None).await?;
        }
        let pdu_type = self.buffer[0];
        // PS3.8 9.3.1: byte 2 is reserved and not tested; bytes 3-6 are the length, big endian.
        let declared = u32::from_be_bytes([self.buffer[2], self.buffer[3], self.buffer[4], self.buffer[5]]);
        let pdu_type = check_header(pdu_type, declared, limits)?;
        let total = header_len + declared as usize;
        while self.buffer.len() < total {
            self.fill(stream, total, Some((pdu_type, declared))).await?;
        }
        let frame = self.buffer.split_to(total).freeze();
        let parse_bound = match pdu_type {
            PduType::AssociateRq | PduType::AssociateAc => limits.max_associate_length,
            _ => limits.max_pdata_length,
        }
        .clamp(MINIMUM_PDU_SIZE, MAXIMUM_PDU_SIZE);
        match dicom_ul::pdu::read_pdu(frame, parse_bound, false) {
            Ok(Some(pdu)) => Ok(pdu),
            Ok(None) => Err(PduError::Malformed { pdu_type, detail: "incomplete PDU".to_owned() }),
            Err(error) => Err(PduError::Malformed { pdu_type, detail: error.to_string() }),
        }
    }

    /// Reads more bytes, reserving only what the current PDU still needs (at most
    /// [`READ_CHUNK`] at a time), so a lying length costs nothing until its bytes arrive.
    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
        needed: usize,
        inside: Option<(PduType, u32)>,
    ) -> Result<(), PduError> {
        let want = needed.saturating_sub(self.buffer.len()).clamp(MIN_READ, READ_CHUNK);
        self.buffer.reserve(want);
        let n = stream.read_buf(&mut self.buffer).await?;
        if n == 0 {
            return Err(match inside {
                None if self.buffer.is_empty() => PduError::Closed,
                None => PduError::Truncated {
                    pdu_type: self.buffer[0],
                    declared: u64::from(PDU_HEADER_SIZE),
                    received: self.buffer.len(),
                },
                Some((pdu_type, declared)) => PduError::Truncated {
                    pdu_type: pdu_type as u8,
                    declared: u64::from(declared) + u64::from(PDU_HEADER_SIZE),
                    received: self.buffer.len(),
                },
            });
        }
        Ok(())
    }
}

/// Checks a PDU header against PS3.8 9.3 and our limits.
fn check_header(pdu_type: u8, declared: u32, limits: &PduLimits) -> Result<PduType, PduError> {
    let pdu_type = PduType::from_u8(pdu_type).ok_or(PduError::UnknownType { pdu_type })?;
    match pdu_type {
        PduType::AssociateRq | PduType::AssociateAc => {
            if declared < MIN_ASSOCIATE_LENGTH {
                return Err(PduError::TooShort { pdu_type, declared, min: MIN_ASSOCIATE_LENGTH });
            }
            if declared > limits.max_associate_length {
                return Err(PduError::TooLong { pdu_type, declared, max: limits.max_associate_length });
            }
        }
        PduType::PDataTf => {
            if declared < MIN_PDATA_LENGTH {
                return Err(PduError::TooShort { pdu_type, declared, min: MIN_PDATA_LENGTH });
            }
            if declared > limits.max_pdata_length {
                return Err(PduError::TooLong { pdu_type, declared, max: limits.max_pdata_length });
            }
        }
        PduType::AssociateRj | PduType::ReleaseRq | PduType::ReleaseRp | PduType::Abort => {
            if declared != FIXED_BODY_LENGTH {
                return Err(PduError::WrongLength { pdu_type, declared, expected: FIXED_BODY_LENGTH });
            }
        }
    }
    Ok(pdu_type)
}

/// Writes PDUs through one reused encoding buffer.
#[derive(Debug, Default)]
pub struct PduWriter {
    buffer: Vec<u8>,
}

impl PduWriter {
    pub fn new() -> PduWriter {
        PduWriter { buffer: Vec::new() }
    }

    /// Encodes `pdu` and writes it whole.
    pub async fn write<W: AsyncWrite + Unpin>(&mut self, stream: &mut W, pdu: &Pdu) -> Result<(), PduError> {
        self.buffer.clear();
        dicom_ul::pdu::write_pdu(&mut self.buffer, pdu)
            .map_err(|error| PduError::Encode { pdu: pdu_name(pdu), detail: error.to_string() })?;
        stream.write_all(&self.buffer).await?;
        // A data set PDU may have grown the buffer to the peer's maximum; keep it, since the
        // next PDU is likely the same size, but not beyond the send cap.
        if self.buffer.capacity() > RETAINED_WRITE_BUFFER {
            self.buffer = Vec::new();
        }
        Ok(())
    }
}

/// Sets `TCP_NODELAY`: DIMSE exchanges many small PDUs (responses, commands), and Nagle's
/// algorithm meeting delayed ACKs stalls each by about 40 ms (measured: 10x on C-GET, see
/// real-peers.md "Nagle").
pub fn configure_socket(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)
}

/// Closes our side of `stream` and waits at most `linger` for the peer to close its side
/// (PS3.8 9.2 state Sta13, ARTIM), discarding what it still sends without buffering it. Closing
/// a socket with unread bytes makes the kernel send RST, which can destroy our last PDU (an
/// A-ABORT, A-ASSOCIATE-RJ or A-RELEASE-RP) before the peer reads it.
pub async fn linger_close(stream: &mut TcpStream, linger: std::time::Duration) {
    let _ = stream.shutdown().await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(linger, async {
        while let Ok(n) = stream.read(&mut discard).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The largest A-ASSOCIATE-RQ/AC we read by default. A request proposing all 128 presentation
/// contexts with a dozen transfer syntaxes each stays under 64 KiB.
pub const DEFAULT_MAX_ASSOCIATE_LENGTH: u32 = 256 * 1024;
/// PS3.8 9.3.2: protocol version, reserved, called and calling AE titles, reserved (2+2+16+16+32).
const MIN_ASSOCIATE_LENGTH: u32 = 68;
/// PS3.8 9.3.5.1: one PDV item at least (item length 4, context ID 1, message control header 1).
const MIN_PDATA_LENGTH: u32 = 6;
/// PS3.8 9.3.4, 9.3.6, 9.3.7, 9.3.8: the variable part of RJ, RELEASE-RQ/RP and ABORT is 4 bytes.
const FIXED_BODY_LENGTH: u32 = 4;
/// The most one read asks for; bulk data arrives in reads of this size.
const READ_CHUNK: usize = 64 * 1024;
/// The least one read asks for, so a header read usually brings a whole small PDU with it.
const MIN_READ: usize = 4 * 1024;
/// Write buffers above this are not kept between PDUs.
const RETAINED_WRITE_BUFFER: usize = 2 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_bytes(bytes: &[u8], limits: PduLimits) -> Result<Pdu, PduError> {
        let mut stream = bytes;
        PduReader::new().read(&mut stream, &limits).await
    }

    #[tokio::test]
    async fn lying_lengths_are_refused_on_the_header() {
        let limits = PduLimits::new(16_384);
        let huge = [0x04, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            read_bytes(&huge, limits).await,
            Err(PduError::TooLong { pdu_type: PduType::PDataTf, declared: 0xFFFF_FFFF, max: 16_384 })
        ));
        let release = [0x05, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0];
        let error = read_bytes(&release, limits).await.unwrap_err();
        assert!(matches!(error, PduError::WrongLength { expected: 4, declared: 5, .. }));
        assert_eq!(error.abort_reason(), Some(AbortRQServiceProviderReason::InvalidPduParameter));
        let garbage = b"GET / HTTP/1.1\r\n";
        let error = read_bytes(garbage, limits).await.unwrap_err();
        assert!(matches!(error, PduError::UnknownType { pdu_type: b'G' }));
        assert_eq!(error.abort_reason(), Some(AbortRQServiceProviderReason::UnrecognizedPdu));
        let big_rq = [0x01, 0, 0x00, 0x10, 0x00, 0x01];
        assert!(matches!(read_bytes(&big_rq, limits).await, Err(PduError::TooLong { declared: 1_048_577, .. })));
    }

    #[tokio::test]
    async fn pdus_round_trip_and_truncation_is_reported() {
        let mut out = Vec::new();
        let mut writer = PduWriter::new();
        writer.write(&mut out, &Pdu::ReleaseRQ).await.unwrap();
        writer
            .write(
                &mut out,
                &Pdu::PData {
                    data: vec![dicom_ul::pdu::PDataValue {
                        presentation_context_id: 1,
                        value_type: dicom_ul::pdu::PDataValueType::Data,
                        is_last: true,
                        data: vec![7; 100],
                    }],
                },
            )
            .await
            .unwrap();
        let limits = PduLimits::new(16_384);
        let mut stream = &out[..];
        let mut reader = PduReader::new();
        assert_eq!(reader.read(&mut stream, &limits).await.unwrap(), Pdu::ReleaseRQ);
        let Pdu::PData { data } = reader.read(&mut stream, &limits).await.unwrap() else { panic!() };
        assert_eq!(data[0].data, vec![7; 100]);
        assert!(matches!(reader.read(&mut stream, &limits).await, Err(PduError::Closed)));

        let mut cut = &out[10..out.len() - 1];
        assert!(matches!(
            PduReader::new().read(&mut cut, &limits).await,
            Err(PduError::Truncated { pdu_type: 0x04, declared: 112, received: 111 })
        ));
    }
}
