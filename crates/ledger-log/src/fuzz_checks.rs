//! The properties the storage fuzz targets check (`fuzz/`, `cargo +nightly fuzz run
//! checkpoint|segment`), as plain functions, so that the normal suite replays the
//! committed corpora through the very same checks on stable (`tests/fuzz_corpus.rs`).
//! Each panics when its property fails; a fuzzer reports that as a finding.
//!
//! Both targets read their input as a list of edits to a sound stored form built here
//! from a fixture (a fold's checkpoint; the segments of a small log), so the fuzzer
//! spends its time on damage to real structures rather than on bytes that fail the
//! first length check.

use crate::history::{decode_checkpoint, frame_checkpoint_body, seal_checkpoint};
use crate::layout::{chain_hash, Head, Record};
use crate::verify::{check_head, Chain, Report};
use std::sync::OnceLock;

/// The events the stored forms are built from: a fixture with programs, enrolments,
/// sales, claims and payouts.
const EVENTS: &str = include_str!("../../../replay-fixtures/mdf_claims_fifo_expiry/events.ndjson");

/// Applies `edits` to `bytes`, five input bytes an edit — `[op, position (3 bytes), value]`,
/// the position taken modulo the length: op 0 flips the bits of `value`, 1 writes
/// `value`, 2 cuts the bytes there, 3 inserts `value` there, 4 removes the byte there.
/// Returns whether `bytes` changed.
pub fn apply_edits(bytes: &mut Vec<u8>, edits: &[u8]) -> bool {
    let original = bytes.clone();
    for e in edits.chunks_exact(5) {
        if bytes.is_empty() {
            break;
        }
        let at =
            (usize::from(e[1]) << 16 | usize::from(e[2]) << 8 | usize::from(e[3])) % bytes.len();
        match e[0] % 5 {
            0 => bytes[at] ^= e[4],
            1 => bytes[at] = e[4],
            2 => bytes.truncate(at),
            3 => bytes.insert(at, e[4]),
            _ => {
                bytes.remove(at);
            }
        }
    }
    *bytes != original
}

/// A checkpoint of a real fold: its body, and the checksum it is stored with.
fn sound_checkpoint() -> &'static (Vec<u8>, Vec<u8>) {
    static SOUND: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    SOUND.get_or_init(|| {
        let mut replay = ledger_core::Replay::new();
        for (i, line) in EVENTS.lines().enumerate() {
            replay.push(line.as_bytes(), i as u64 + 1);
        }
        let body =
            frame_checkpoint_body(7, 9, &[3; 32], &replay, None, None).expect("a fold encodes");
        let sealed = seal_checkpoint(body.clone());
        let sum = sealed[body.len()..].to_vec();
        (body, sum)
    })
}

/// A damaged checkpoint is refused, never a panic: the bytes with their original
/// checksum must be refused as soon as they differ from the sound ones; the same bytes
/// sealed with a checksum that matches them (a checkpoint written wrong, or damage a
/// checksum cannot see) may decode or be refused, but must not panic. (That decoding
/// allocates no more than the input warrants is left to the fuzzer's `-malloc_limit_mb`.)
/// The raw input itself is also decoded as a stored checkpoint.
pub fn checkpoint(input: &[u8]) {
    let _ = decode_checkpoint(input);
    let (sound, sum) = sound_checkpoint();
    let mut damaged = sound.clone();
    let changed = apply_edits(&mut damaged, input);
    let mut stored = damaged.clone();
    stored.extend_from_slice(sum);
    match decode_checkpoint(&stored) {
        Ok(_) => assert!(
            !changed,
            "a damaged checkpoint decoded under its old checksum"
        ),
        Err(why) => assert!(changed, "the sound checkpoint was refused: {why}"),
    }
    let _ = decode_checkpoint(&seal_checkpoint(damaged));
}

/// The sound log the segment target damages: its records in two segments (keyed by
/// their first position), and its head.
struct SoundLog {
    segments: Vec<(u64, Vec<u8>)>,
    records: Vec<Record>,
    head: Head,
}

fn sound_log() -> &'static SoundLog {
    static LOG: OnceLock<SoundLog> = OnceLock::new();
    LOG.get_or_init(|| {
        let mut records = Vec::new();
        let mut previous = [0u8; 32];
        for (i, line) in EVENTS.lines().take(8).enumerate() {
            let raw = line.as_bytes().to_vec();
            let accepted = ledger_core::check(&raw).expect("a fixture event passes intake");
            let seq = i as u64 + 1;
            let hash = chain_hash(&previous, seq, &raw);
            previous = hash;
            records.push(Record {
                seq,
                arrival: 2 * seq,
                time_ns: 1_000 + seq,
                line: seq,
                identity: ledger_core::identity_key(&accepted.event.source, &accepted.event.id),
                content: accepted.content_digest,
                hash,
                raw,
            });
        }
        let segments = records
            .chunks(4)
            .map(|chunk| {
                let mut bytes = Vec::new();
                for r in chunk {
                    r.encode_into(&mut bytes);
                }
                (chunk[0].seq, bytes)
            })
            .collect();
        let last = records.last().expect("records");
        let head = Head {
            last_seq: last.seq,
            last_arrival: last.arrival,
            last_hash: last.hash,
            source_position: 0,
        };
        SoundLog {
            segments,
            records,
            head,
        }
    })
}

/// What the chain protects in a record: everything but its arrival number, time and
/// line, which are bookkeeping of when it came (arrivals are checked to increase).
fn protected(r: &Record) -> (u64, [u8; 16], [u8; 32], [u8; 32], &[u8]) {
    (r.seq, r.identity, r.content, r.hash, &r.raw)
}

/// Damage to the log's segments is detected: the first input byte picks which segment
/// the edits after it damage (or, when odd past that, removes it); `verify`'s record
/// checks then run over the segments and the head. Either they report damage, or every
/// record decodes to the sound one in all the chain protects. Segment decoding of the
/// raw input never panics, and what decodes encodes back to the same bytes.
pub fn damaged_segment(input: &[u8]) {
    if let Ok(records) = crate::layout::decode_segment(input) {
        let mut again = Vec::with_capacity(input.len());
        for r in &records {
            r.encode_into(&mut again);
        }
        assert_eq!(again, input, "a segment decoded and encoded differs");
    }
    let Some((&pick, edits)) = input.split_first() else {
        return;
    };
    let sound = sound_log();
    let target = usize::from(pick) % sound.segments.len();
    let mut segments = sound.segments.clone();
    if pick >= 128 {
        segments.remove(target);
    } else {
        apply_edits(&mut segments[target].1, edits);
    }
    let mut report = Report::default();
    let mut chain = Chain::default();
    let mut decoded = Vec::new();
    for (first, bytes) in &segments {
        if !chain.segment(*first, bytes, &mut report, &mut |_| {}) {
            break;
        }
        decoded.extend(crate::layout::decode_segment(bytes).expect("checked segments decode"));
    }
    check_head(Some(sound.head), &mut report, chain.previous_hash);
    if report.ok() {
        assert_eq!(
            decoded.len(),
            sound.records.len(),
            "records went missing unseen"
        );
        for (d, s) in decoded.iter().zip(&sound.records) {
            assert_eq!(
                protected(d),
                protected(s),
                "record {} changed unseen",
                s.seq
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sound_forms_pass_and_simple_damage_is_caught() {
        checkpoint(&[]);
        checkpoint(&[0, 0, 0, 40, 1]);
        checkpoint(&[2, 0, 0, 100, 0]);
        damaged_segment(&[0]);
        damaged_segment(&[1, 0, 0, 0, 200, 7]);
        damaged_segment(&[200]);
        let mut b = vec![1, 2, 3];
        assert!(apply_edits(&mut b, &[3, 0, 0, 1, 9]));
        assert_eq!(b, [1, 9, 2, 3]);
        assert!(!apply_edits(&mut b, &[0, 0, 0, 0, 0]));
    }
}
