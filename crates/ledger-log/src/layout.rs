//! The on-disk layout of a data directory's sled tree: keys and record encodings.
//!
//! Everything of the log lives in one sled tree so that a batch is one atomic
//! `apply_batch`. Keys start with a one-byte kind:
//!
//! | key | value |
//! |---|---|
//! | `L` + first seq (u64 BE) | a *segment*: the records of one appended batch |
//! | `Q` + arrival (u64 BE) | a quarantined input ([`Quarantined`]) |
//! | `D` + arrival (u64 BE) | an exact duplicate: seq of the original (u64 BE) + arrival time |
//! | `H` | the head ([`Head`]): last seq, last arrival, last hash |
//!
//! A record is a fixed 116-byte header followed by the raw bytes exactly as received:
//! `seq u64 | arrival u64 | time_ns u64 | line u64 | identity [16] | content [32] |
//! hash [32] | len u32 | raw`. `hash = SHA-256(previous hash ‖ seq BE ‖ raw)`, with 32
//! zero bytes before the first record. Integers are big-endian.

use ledger_core::Code;
use sha2::{Digest, Sha256};

pub const SEGMENT: u8 = b'L';
pub const QUARANTINE: u8 = b'Q';
pub const DUPLICATE: u8 = b'D';
pub const HEAD: &[u8] = b"H";

/// Bytes of a record header before the raw event (116).
pub const RECORD_HEADER: usize = 8 * 4 + 16 + 32 + 32 + 4;

pub fn key(kind: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The number in a `kind + u64` key, if the key has that shape.
pub fn key_number(key: &[u8], kind: u8) -> Option<u64> {
    if key.len() == 9 && key[0] == kind {
        Some(u64::from_be_bytes(key[1..].try_into().ok()?))
    } else {
        None
    }
}

/// The chain hash of a record.
pub fn chain_hash(previous: &[u8; 32], seq: u64, raw: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(seq.to_be_bytes());
    h.update(raw);
    h.finalize().into()
}

pub use ledger_core::identity_key;

/// One logged event: owning its bytes by default, or borrowing them from the segment
/// that holds them ([`RecordRef`]) or from the input being appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<Raw = Vec<u8>> {
    pub seq: u64,
    /// 1-based arrival number among every input the directory received.
    pub arrival: u64,
    /// Wall-clock time of arrival, nanoseconds since the Unix epoch (for `--as-of-time`).
    pub time_ns: u64,
    /// Line number the input had in its NDJSON file, or its arrival number for messages.
    pub line: u64,
    pub identity: [u8; 16],
    /// `Json::content_digest` of the event, for the exact-duplicate check.
    pub content: [u8; 32],
    pub hash: [u8; 32],
    pub raw: Raw,
}

/// A record borrowed from the segment that holds it.
pub type RecordRef<'a> = Record<&'a [u8]>;

impl<Raw: AsRef<[u8]>> Record<Raw> {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let raw = self.raw.as_ref();
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.arrival.to_be_bytes());
        out.extend_from_slice(&self.time_ns.to_be_bytes());
        out.extend_from_slice(&self.line.to_be_bytes());
        out.extend_from_slice(&self.identity);
        out.extend_from_slice(&self.content);
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        out.extend_from_slice(raw);
    }
}

/// Why a segment could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub reason: &'static str,
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], DecodeError> {
    let slice = bytes.get(*at..*at + n).ok_or(DecodeError {
        offset: *at,
        reason: "truncated record",
    })?;
    *at += n;
    Ok(slice)
}

fn u64_at(bytes: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    let s = take(bytes, at, 8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(s);
    Ok(u64::from_be_bytes(b))
}

fn array_at<const N: usize>(bytes: &[u8], at: &mut usize) -> Result<[u8; N], DecodeError> {
    let s = take(bytes, at, N)?;
    let mut b = [0u8; N];
    b.copy_from_slice(s);
    Ok(b)
}

impl RecordRef<'_> {
    pub fn to_record(&self) -> Record {
        Record {
            seq: self.seq,
            arrival: self.arrival,
            time_ns: self.time_ns,
            line: self.line,
            identity: self.identity,
            content: self.content,
            hash: self.hash,
            raw: self.raw.to_vec(),
        }
    }
}

/// The records of a segment, in order, without copying their bytes; stops after the
/// first error.
pub fn segment_records(bytes: &[u8]) -> SegmentRecords<'_> {
    SegmentRecords {
        bytes,
        at: 0,
        failed: false,
    }
}

pub struct SegmentRecords<'a> {
    bytes: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> SegmentRecords<'a> {
    fn decode_one(&mut self) -> Result<RecordRef<'a>, DecodeError> {
        let bytes = self.bytes;
        let at = &mut self.at;
        let seq = u64_at(bytes, at)?;
        let arrival = u64_at(bytes, at)?;
        let time_ns = u64_at(bytes, at)?;
        let line = u64_at(bytes, at)?;
        let identity = array_at::<16>(bytes, at)?;
        let content = array_at::<32>(bytes, at)?;
        let hash = array_at::<32>(bytes, at)?;
        let len = u32::from_be_bytes(array_at::<4>(bytes, at)?) as usize;
        let raw = take(bytes, at, len)?;
        Ok(RecordRef {
            seq,
            arrival,
            time_ns,
            line,
            identity,
            content,
            hash,
            raw,
        })
    }
}

impl<'a> Iterator for SegmentRecords<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.bytes.len() {
            return None;
        }
        let item = self.decode_one();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Decodes every record of a segment.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    segment_records(bytes)
        .map(|r| r.map(|r| r.to_record()))
        .collect()
}

/// An input refused at intake, kept with its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Quarantined {
    pub arrival: u64,
    pub time_ns: u64,
    /// Line number in its NDJSON file (or the arrival number for messages).
    pub line: u64,
    pub code: Code,
    pub message: String,
    pub identity: Option<(String, String)>,
    /// The `type` attribute, when it named an event type (for counts by type).
    pub event_type: Option<ledger_core::EventType>,
    pub raw: Vec<u8>,
}

/// An exact duplicate: when it arrived and which record it repeated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Duplicate {
    pub arrival: u64,
    pub time_ns: u64,
    pub of_seq: u64,
    pub event_type: ledger_core::EventType,
}

/// The position of the log: what the next append continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub last_seq: u64,
    pub last_arrival: u64,
    pub last_hash: [u8; 32],
    /// Highest position in the upstream source (the JetStream stream sequence) whose
    /// input was appended, quarantined or counted as a duplicate; 0 for file ingest.
    /// The service resumes consuming right after it, so the log keeps the stream's order.
    pub source_position: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records: Vec<Record> = (1..=3)
            .map(|i| Record {
                seq: i,
                arrival: i + 10,
                time_ns: 5,
                line: i,
                identity: [i as u8; 16],
                content: [7; 32],
                hash: [9; 32],
                raw: format!("{{\"n\":{i}}}").into_bytes(),
            })
            .collect();
        let mut buf = Vec::new();
        for r in &records {
            r.encode_into(&mut buf);
        }
        assert_eq!(decode_segment(&buf).unwrap(), records);
        assert!(decode_segment(&buf[..buf.len() - 1]).is_err());
        assert_eq!(RECORD_HEADER, 116);
    }

    #[test]
    fn keys_and_identities() {
        assert_eq!(key_number(&key(SEGMENT, 42), SEGMENT), Some(42));
        assert_eq!(key_number(&key(SEGMENT, 42), QUARANTINE), None);
        assert_ne!(identity_key("ab", "c"), identity_key("a", "bc"));
        assert_ne!(chain_hash(&[0; 32], 1, b"x"), chain_hash(&[0; 32], 2, b"x"));
    }
}
