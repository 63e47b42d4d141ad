//! The history archive: what the fold hands out and never reads again — payouts,
//! refusals, statement journal lines — kept in files of the data directory, so that
//! the fold's memory holds its working set only (issue 15).
//!
//! It is derived data: a pure function of the log, appended by the projector as it
//! folds and never fsynced on its own. A checkpoint carries the archive's [`Heads`] —
//! how long each file was and where each chain ended at the checkpoint's position —
//! and is written only after the files are synced up to there; on open the files are
//! cut back to those lengths and the fold goes on from the checkpoint, appending the
//! same history again. Without a usable checkpoint the archive is emptied and rebuilt
//! from the log (`history::rebuild_archived`).
//!
//! Files (`history/`), each an append-only sequence of frames `[u32 length][u32 CRC-32
//! of the payload][payload]`, the payload in postcard:
//! - `payouts`: per payout, in issue order, `(previous payout of its partner, of its
//!   program, of its entry, payout)`; `payouts.offsets`: the frame offset of payout
//!   `n` at byte `8 n` (u64 LE).
//! - `refusals` and `refusals.offsets`: the same for refusals, in order.
//! - `journal`: in the order the fold drained them, records of three kinds: an entry
//!   (its id, numbered in order of first appearance), a cause (the event behind lines,
//!   written once for all its lines), and a line (entry number, number in its entry,
//!   offset of the entry's previous line, offset of its cause, the amounts).
//!
//! The per-key chains (a partner's payouts, an entry's journal lines) run backwards
//! from their heads, which are all the archive keeps in memory: O(partners, programs
//! and entries), never O(history). Why by hand: sled, which holds the log, kept every
//! unflushed write in memory and wrote ~9 KB of disk per event for this append-only
//! data (`bench-memory --service`, DECISIONS 44); append-only frames need none of a
//! B-tree's machinery.

use crate::LogError;
use ledger_core::ledger::{Cause, JournalLine, PayoutReason};
use ledger_core::replay::{Drained, Rejection};
use ledger_core::Payout;
use ledger_core::Text;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Hash maps of the archive's heads: a fast hasher with a fixed seed.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The archive's directory inside a data directory.
pub const DIR: &str = "history";
/// The file naming the archive's generation.
const GENERATION: &str = "GENERATION";

/// An entry's key in the archive: partner, program, period label.
pub type EntryId = (Text, Text, Text);

/// Where the archive stood at one position: file lengths, counts and the heads of its
/// chains. Stored in the checkpoint of that position. O(partners + programs + entries).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heads {
    /// Which archive: set when one is created, so that a checkpoint never cuts back an
    /// archive it does not describe (a rebuilt one's bytes differ: frames follow the
    /// order the fold was drained in).
    pub generation: u64,
    pub payouts: u64,
    pub payouts_bytes: u64,
    pub refusals: u64,
    pub refusals_bytes: u64,
    pub journal_bytes: u64,
    /// Entries named in the journal.
    entries: u32,
    /// The last payout (its number) of each partner, program and entry.
    by_partner: HashMap<Text, u64>,
    by_program: HashMap<Text, u64>,
    by_entry: HashMap<EntryId, u64>,
    /// Per entry: its number, its journal lines archived, and the offset of the last
    /// one's frame.
    journal: HashMap<EntryId, EntryHead>,
}

/// Where one entry's journal chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct EntryHead {
    number: u32,
    lines: u64,
    last: u64,
}

/// Which payouts a chain lists.
#[derive(Debug, Clone, Copy)]
pub enum PayoutsOf<'a> {
    Partner(&'a str),
    Program(&'a str),
    Entry {
        partner: &'a str,
        program: &'a str,
        period: &'a str,
    },
}

/// One payout's frame payload: the previous payouts of its chains, and the payout
/// (borrowed to write it, owned when read back).
#[derive(Serialize, Deserialize)]
struct PayoutFrame<P> {
    prev_partner: Option<u64>,
    prev_program: Option<u64>,
    prev_entry: Option<u64>,
    payout: P,
}

/// One record of the journal file.
#[derive(Serialize, Deserialize)]
enum JournalRecord {
    /// Names the next entry number.
    Entry(EntryId),
    /// The event behind the lines that refer to this record's offset.
    Cause(Cause),
    Line(LineRecord),
}

/// A journal line as stored: its cause and entry by reference.
#[derive(Serialize, Deserialize)]
struct LineRecord {
    entry: u32,
    number: u64,
    prev: Option<u64>,
    cause: u64,
    #[serde(with = "ledger_core::values::bin_decimal")]
    basis: Decimal,
    #[serde(with = "ledger_core::values::bin_decimal")]
    adjustments: Decimal,
    #[serde(with = "ledger_core::values::bin_decimal")]
    earned: Decimal,
    #[serde(with = "ledger_core::values::bin_decimal")]
    paid: Decimal,
    #[serde(with = "ledger_core::values::bin_decimal")]
    reserved: Decimal,
    payout: Option<Paid>,
}

#[derive(Serialize, Deserialize)]
struct Paid(
    uuid::Uuid,
    #[serde(with = "ledger_core::values::bin_decimal")] Decimal,
    PayoutReason,
);

/// A journal line read back, with its entry's number and the offset of its entry's
/// previous line.
struct StoredLine {
    entry: u32,
    number: u64,
    prev: Option<u64>,
    line: JournalLine,
}

/// The bytes one write appends to each file.
#[derive(Default)]
struct Frames {
    payouts: Vec<u8>,
    payout_offsets: Vec<u8>,
    refusals: Vec<u8>,
    refusal_offsets: Vec<u8>,
    journal: Vec<u8>,
}

/// What the chains' heads were before a write moved them, in the order it moved them.
#[derive(Default)]
struct Undo {
    partners: Vec<(Text, Option<u64>)>,
    programs: Vec<(Text, Option<u64>)>,
    entries: Vec<(EntryId, Option<u64>)>,
    journal: Vec<(EntryId, Option<EntryHead>)>,
    entries_named: u32,
}

impl Undo {
    fn apply(self, heads: &mut Heads) {
        fn restore<K: Eq + std::hash::Hash, V>(
            map: &mut HashMap<K, V>,
            moves: Vec<(K, Option<V>)>,
        ) {
            for (key, before) in moves.into_iter().rev() {
                match before {
                    Some(v) => map.insert(key, v),
                    None => map.remove(&key),
                };
            }
        }
        restore(&mut heads.by_partner, self.partners);
        restore(&mut heads.by_program, self.programs);
        restore(&mut heads.by_entry, self.entries);
        restore(&mut heads.journal, self.journal);
        heads.entries = self.entries_named;
    }
}

/// The archive's files, shared by every handle.
struct Files {
    dir: PathBuf,
    payouts: File,
    payout_offsets: File,
    refusals: File,
    refusal_offsets: File,
    journal: File,
    /// Keeps a temporary archive's directory alive as long as the archive.
    _temporary: Option<tempfile::TempDir>,
}

/// The history archive of a data directory (or a temporary one). Cheap to clone; one
/// writer (the projector) at a time, any number of readers beside it.
#[derive(Clone)]
pub struct Archive {
    files: Arc<Files>,
    /// What is written: readers read below these lengths and counts only.
    heads: Arc<RwLock<Heads>>,
    /// Writes still to fail on purpose (tests of the fold's hold-and-retry).
    failing_writes: Arc<AtomicU64>,
}

const FRAME_HEADER: usize = 8;
/// A frame larger than this is damage, not data (a payout or line is a few hundred
/// bytes): reading it would allocate what a damaged length says.
const MAX_FRAME: u32 = 1 << 24;

/// The payload of the frame at `at` of `bytes`, if it is whole and its checksum holds.
fn frame_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at + FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let payload = bytes.get(at + FRAME_HEADER..at.checked_add(FRAME_HEADER)?.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Appends `record` to `out` as a frame, encoded in place (no buffer of its own).
fn frame_record(out: &mut Vec<u8>, record: &impl Serialize) -> Result<(), postcard::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    // On an error the buffer went into the failed encoding: what was framed before
    // goes with it, and the whole write fails (nothing of it is written).
    *out = postcard::to_extend(record, std::mem::take(out))?;
    let payload = &out[start + FRAME_HEADER..];
    let len = u32::try_from(payload.len()).expect("a history record below 4 GiB");
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

impl Archive {
    /// Opens the archive of the data directory at `data_dir` as it stood at `heads` (a
    /// checkpoint's): its files are cut back to those lengths. `None` if they are
    /// shorter (the archive is behind the checkpoint, or gone): then use
    /// [`Archive::create`].
    pub fn open_at(data_dir: &Path, heads: &Heads) -> Result<Option<Archive>, LogError> {
        let dir = data_dir.join(DIR);
        let files = Files::open(&dir, None)?;
        if files.generation()? != Some(heads.generation) {
            return Ok(None);
        }
        let lengths = [
            (&files.payouts, heads.payouts_bytes),
            (&files.payout_offsets, heads.payouts * 8),
            (&files.refusals, heads.refusals_bytes),
            (&files.refusal_offsets, heads.refusals * 8),
            (&files.journal, heads.journal_bytes),
        ];
        for (file, len) in lengths {
            if files.len(file)? < len {
                return Ok(None);
            }
        }
        for (file, len) in lengths {
            file.set_len(len).map_err(|e| files.io(e))?;
        }
        Ok(Some(Archive::new(files, heads.clone())))
    }

    /// Creates the archive of the data directory at `data_dir` empty (removing what
    /// was there).
    pub fn create(data_dir: &Path) -> Result<Archive, LogError> {
        let dir = data_dir.join(DIR);
        let files = Files::open(&dir, None)?;
        for f in files.all() {
            f.set_len(0).map_err(|e| files.io(e))?;
        }
        let generation = files.new_generation()?;
        Ok(Archive::new(
            files,
            Heads {
                generation,
                ..Heads::default()
            },
        ))
    }

    /// An empty archive in a temporary directory, removed with its last handle.
    pub fn temporary() -> Result<Archive, LogError> {
        let temp = tempfile::tempdir().map_err(|source| LogError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let dir = temp.path().join(DIR);
        let files = Files::open(&dir, Some(temp))?;
        Ok(Archive::new(files, Heads::default()))
    }

    /// Opens the archive of `data_dir` for reading only, as far as `heads` says (for
    /// `verify` and tools); `None` if it has no such files, or they are of another
    /// generation.
    pub fn read_only(data_dir: &Path, heads: &Heads) -> Result<Option<Archive>, LogError> {
        let dir = data_dir.join(DIR);
        if !dir.join("payouts").exists() {
            return Ok(None);
        }
        let files = Files::with(&dir, std::fs::OpenOptions::new().read(true), None)?;
        if files.generation()? != Some(heads.generation) {
            return Ok(None);
        }
        Ok(Some(Archive::new(files, heads.clone())))
    }

    fn new(files: Files, heads: Heads) -> Archive {
        Archive {
            files: Arc::new(files),
            heads: Arc::new(RwLock::new(heads)),
            failing_writes: Arc::default(),
        }
    }

    fn heads(&self) -> std::sync::RwLockReadGuard<'_, Heads> {
        self.heads.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the archive stands (for a checkpoint of the fold at the same point).
    pub fn state(&self) -> Heads {
        self.heads().clone()
    }

    /// Makes the next `n` writes fail (and this handle's clones'): for tests of what
    /// the fold does when the archive cannot be written.
    #[doc(hidden)]
    pub fn fail_next_writes(&self, n: u64) {
        self.failing_writes.store(n, Ordering::Relaxed);
    }

    /// Appends drained history, which must continue what the archive holds. On an
    /// error nothing counts as written (a later write overwrites what this one left).
    pub fn write(&self, d: &Drained) -> Result<(), LogError> {
        let mut heads = self.heads.write().unwrap_or_else(|p| p.into_inner());
        if (d.first_payout, d.first_rejection) != (heads.payouts, heads.refusals)
            && !(d.payouts.is_empty() && d.rejections.is_empty())
        {
            return Err(self.files.corrupt(format!(
                "history drained from payout {} and refusal {} does not continue the archive's {} and {}",
                d.first_payout, d.first_rejection, heads.payouts, heads.refusals
            )));
        }
        // The chains' heads move as the frames are built; `undo` puts them back if the
        // files cannot be written.
        let mut undo = Undo::default();
        let built = self.build(d, &mut heads, &mut undo);
        let written = built.and_then(|frames| {
            let f = &self.files;
            // An injected fault fails where a full disk would: after the frames are
            // built and the heads moved.
            let injected =
                self.failing_writes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if injected.is_ok() {
                return Err(f.io(std::io::Error::other(
                    "injected fault: the history archive refuses a write",
                )));
            }
            let writes = [
                (&f.payouts, heads.payouts_bytes, &frames.payouts),
                (&f.payout_offsets, heads.payouts * 8, &frames.payout_offsets),
                (&f.refusals, heads.refusals_bytes, &frames.refusals),
                (
                    &f.refusal_offsets,
                    heads.refusals * 8,
                    &frames.refusal_offsets,
                ),
                (&f.journal, heads.journal_bytes, &frames.journal),
            ];
            for (file, at, bytes) in writes {
                if !bytes.is_empty() {
                    file.write_all_at(bytes, at).map_err(|e| f.io(e))?;
                }
            }
            Ok(frames)
        });
        match written {
            Ok(frames) => {
                heads.payouts += d.payouts.len() as u64;
                heads.refusals += d.rejections.len() as u64;
                heads.payouts_bytes += frames.payouts.len() as u64;
                heads.refusals_bytes += frames.refusals.len() as u64;
                heads.journal_bytes += frames.journal.len() as u64;
                Ok(())
            }
            Err(e) => {
                undo.apply(&mut heads);
                Err(e)
            }
        }
    }

    /// The frames of drained history, moving the chains' heads in `heads` (what they
    /// were goes to `undo`); counts and lengths stay as they are.
    fn build(&self, d: &Drained, heads: &mut Heads, undo: &mut Undo) -> Result<Frames, LogError> {
        let encode = |what: &str, r: Result<(), postcard::Error>| {
            r.map_err(|e| self.files.corrupt(format!("{what} does not encode: {e}")))
        };
        let mut frames = Frames::default();
        undo.entries_named = heads.entries;
        for (i, p) in d.payouts.iter().enumerate() {
            let n = heads.payouts + i as u64;
            let entry = (p.partner_id.clone(), p.program_id.clone(), p.period.clone());
            let prev_partner = heads.by_partner.insert(p.partner_id.clone(), n);
            undo.partners.push((p.partner_id.clone(), prev_partner));
            let prev_program = heads.by_program.insert(p.program_id.clone(), n);
            undo.programs.push((p.program_id.clone(), prev_program));
            let prev_entry = heads.by_entry.insert(entry.clone(), n);
            undo.entries.push((entry, prev_entry));
            let payload = PayoutFrame {
                prev_partner,
                prev_program,
                prev_entry,
                payout: p,
            };
            let at = heads.payouts_bytes + frames.payouts.len() as u64;
            frames.payout_offsets.extend_from_slice(&at.to_le_bytes());
            encode("a payout", frame_record(&mut frames.payouts, &payload))?;
        }
        for r in &d.rejections {
            let at = heads.refusals_bytes + frames.refusals.len() as u64;
            frames.refusal_offsets.extend_from_slice(&at.to_le_bytes());
            encode("a refusal", frame_record(&mut frames.refusals, r))?;
        }
        let mut causes: std::collections::HashMap<*const Cause, u64> = Default::default();
        // Each drained entry's head, looked up once and put back once after its lines.
        let mut entry_heads: Vec<Option<EntryHead>> = d
            .entries
            .iter()
            .map(|e| heads.journal.get(e).copied())
            .collect();
        let mut moved = vec![false; d.entries.len()];
        for l in &d.journal {
            let i = l.entry as usize;
            let (Some(entry), Some(head)) = (d.entries.get(i), entry_heads.get_mut(i)) else {
                return Err(self.files.corrupt(format!(
                    "a drained journal line names entry {i} of {}",
                    d.entries.len()
                )));
            };
            let at = |frames: &Frames| heads.journal_bytes + frames.journal.len() as u64;
            let (number, count, prev) = match *head {
                Some(h) => (h.number, h.lines, Some(h.last)),
                None => {
                    let record = JournalRecord::Entry(entry.clone());
                    encode("an entry", frame_record(&mut frames.journal, &record))?;
                    heads.entries += 1;
                    (heads.entries - 1, 0, None)
                }
            };
            if l.number != count {
                return Err(self.files.corrupt(format!(
                    "journal line {} of {}/{}/{} does not follow the {count} archived",
                    l.number, entry.0, entry.1, entry.2
                )));
            }
            let cause = match causes.get(&std::sync::Arc::as_ptr(&l.line.cause)) {
                Some(&cause) => cause,
                None => {
                    let cause = at(&frames);
                    let record = JournalRecord::Cause((*l.line.cause).clone());
                    encode("a cause", frame_record(&mut frames.journal, &record))?;
                    causes.insert(std::sync::Arc::as_ptr(&l.line.cause), cause);
                    cause
                }
            };
            let line_at = at(&frames);
            let line = &l.line;
            let record = JournalRecord::Line(LineRecord {
                entry: number,
                number: l.number,
                prev,
                cause,
                basis: line.basis,
                adjustments: line.adjustments,
                earned: line.earned,
                paid: line.paid,
                reserved: line.reserved,
                payout: line
                    .payout
                    .map(|(id, amount, reason)| Paid(id, amount, reason)),
            });
            encode("a journal line", frame_record(&mut frames.journal, &record))?;
            *head = Some(EntryHead {
                number,
                lines: count + 1,
                last: line_at,
            });
            moved[i] = true;
        }
        for ((entry, head), moved) in d.entries.iter().zip(entry_heads).zip(moved) {
            if let (Some(head), true) = (head, moved) {
                let before = heads.journal.insert(entry.clone(), head);
                undo.journal.push((entry.clone(), before));
            }
        }
        Ok(frames)
    }

    /// Makes what is written durable (before a checkpoint that relies on it).
    pub fn sync(&self) -> Result<(), LogError> {
        for f in self.files.all() {
            f.sync_data().map_err(|e| self.files.io(e))?;
        }
        Ok(())
    }

    /// Reads the frame at `at` of `file`: its payload, checked as [`frame_at`] does.
    fn read_frame(&self, file: &File, at: u64, what: &str) -> Result<Vec<u8>, LogError> {
        let unreadable = |e: std::io::Error| {
            self.files
                .corrupt(format!("{what} at byte {at} cannot be read: {e}"))
        };
        let mut frame = vec![0u8; FRAME_HEADER];
        file.read_exact_at(&mut frame, at).map_err(unreadable)?;
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        if len > MAX_FRAME {
            return Err(self
                .files
                .corrupt(format!("{what} at byte {at} claims {len} bytes")));
        }
        frame.resize(FRAME_HEADER + len as usize, 0);
        file.read_exact_at(&mut frame[FRAME_HEADER..], at + FRAME_HEADER as u64)
            .map_err(unreadable)?;
        if frame_at(&frame, 0).is_none() {
            return Err(self
                .files
                .corrupt(format!("{what} at byte {at} is damaged (checksum)")));
        }
        Ok(frame.split_off(FRAME_HEADER))
    }

    fn offset(&self, file: &File, n: u64, what: &str) -> Result<u64, LogError> {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, n * 8).map_err(|e| {
            self.files
                .corrupt(format!("the offset of {what} {n} cannot be read: {e}"))
        })?;
        Ok(u64::from_le_bytes(b))
    }

    fn payout_frame(&self, n: u64) -> Result<PayoutFrame<Payout>, LogError> {
        let at = self.offset(&self.files.payout_offsets, n, "payout")?;
        let bytes = self.read_frame(&self.files.payouts, at, "payout")?;
        postcard::from_bytes(&bytes).map_err(|e| {
            self.files
                .corrupt(format!("payout {n} does not decode: {e}"))
        })
    }

    /// Payouts `from .. to` in issue order (fewer if the archive holds fewer).
    /// A range's frames lie one after the other: two reads in all, its offsets and
    /// its bytes (the publisher and the digest read payouts in ranges).
    pub fn payouts(&self, from: u64, to: u64) -> Result<Vec<Payout>, LogError> {
        let (issued, end_of_file) = {
            let h = self.heads();
            (h.payouts, h.payouts_bytes)
        };
        let to = to.min(issued);
        if from >= to {
            return Ok(Vec::new());
        }
        let f = &self.files;
        let mut offsets = vec![0u8; ((to - from) * 8) as usize];
        f.payout_offsets
            .read_exact_at(&mut offsets, from * 8)
            .map_err(|e| {
                f.corrupt(format!(
                    "the offsets of payouts {from}..{to} cannot be read: {e}"
                ))
            })?;
        let offset =
            |i: usize| u64::from_le_bytes(offsets[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let start = offset(0);
        let end = if to < issued {
            self.offset(&f.payout_offsets, to, "payout")?
        } else {
            end_of_file
        };
        if end < start || end - start > u64::from(MAX_FRAME) * (to - from) {
            return Err(f.corrupt(format!(
                "the offsets of payouts {from}..{to} are out of order"
            )));
        }
        let mut bytes = vec![0u8; (end - start) as usize];
        f.payouts
            .read_exact_at(&mut bytes, start)
            .map_err(|e| f.corrupt(format!("payouts {from}..{to} cannot be read: {e}")))?;
        let mut out = Vec::with_capacity((to - from) as usize);
        for i in 0..(to - from) as usize {
            let n = from + i as u64;
            let at = offset(i)
                .checked_sub(start)
                .ok_or_else(|| f.corrupt(format!("the offset of payout {n} is out of order")))?;
            let payload = frame_at(&bytes, at as usize)
                .ok_or_else(|| f.corrupt(format!("payout {n} is damaged (checksum)")))?;
            let frame: PayoutFrame<Payout> = postcard::from_bytes(payload)
                .map_err(|e| f.corrupt(format!("payout {n} does not decode: {e}")))?;
            out.push(frame.payout);
        }
        Ok(out)
    }

    /// One payout by its issue index.
    pub fn payout(&self, n: u64) -> Result<Option<Payout>, LogError> {
        Ok(self.payouts(n, n.saturating_add(1))?.pop())
    }

    /// The issue indexes of the payouts a chain lists, from index `from` on, at most
    /// `limit`, in issue order. Walks the chain back from its head to `from`: costs
    /// the chain's payouts from `from` on.
    pub fn payout_indexes(
        &self,
        of: PayoutsOf<'_>,
        from: u64,
        limit: usize,
    ) -> Result<Vec<u64>, LogError> {
        let head = {
            let h = self.heads();
            match of {
                PayoutsOf::Partner(id) => h.by_partner.get(id).copied(),
                PayoutsOf::Program(id) => h.by_program.get(id).copied(),
                PayoutsOf::Entry {
                    partner,
                    program,
                    period,
                } => h
                    .by_entry
                    .get(&(Text::from(partner), Text::from(program), Text::from(period)))
                    .copied(),
            }
        };
        let mut newest_first = Vec::new();
        let mut at = head;
        while let Some(n) = at.filter(|&n| n >= from) {
            newest_first.push(n);
            let f = self.payout_frame(n)?;
            let prev = match of {
                PayoutsOf::Partner(_) => f.prev_partner,
                PayoutsOf::Program(_) => f.prev_program,
                PayoutsOf::Entry { .. } => f.prev_entry,
            };
            if prev.is_some_and(|p| p >= n) {
                return Err(self.files.corrupt(format!("payout {n} links forward")));
            }
            at = prev;
        }
        newest_first.reverse();
        newest_first.truncate(limit);
        Ok(newest_first)
    }

    /// Refusals in order from number `from`, at most `limit`.
    pub fn rejections(&self, from: u64, limit: usize) -> Result<Vec<Rejection>, LogError> {
        let to = self.heads().refusals.min(from.saturating_add(limit as u64));
        (from..to)
            .map(|n| {
                let at = self.offset(&self.files.refusal_offsets, n, "refusal")?;
                let bytes = self.read_frame(&self.files.refusals, at, "refusal")?;
                postcard::from_bytes(&bytes).map_err(|e| {
                    self.files
                        .corrupt(format!("refusal {n} does not decode: {e}"))
                })
            })
            .collect()
    }

    fn journal_record(&self, at: u64) -> Result<(JournalRecord, u64), LogError> {
        let bytes = self.read_frame(&self.files.journal, at, "journal record")?;
        let record = postcard::from_bytes(&bytes).map_err(|e| {
            self.files.corrupt(format!(
                "the journal record at byte {at} does not decode: {e}"
            ))
        })?;
        Ok((record, at + (FRAME_HEADER + bytes.len()) as u64))
    }

    /// The line at `at`, with its cause read from where it refers.
    fn stored_line(&self, at: u64) -> Result<StoredLine, LogError> {
        let JournalRecord::Line(r) = self.journal_record(at)?.0 else {
            return Err(self
                .files
                .corrupt(format!("byte {at} of the journal is not a line")));
        };
        self.line_of(r, at)
    }

    /// The line record `r`, read at `at`, with its cause read from where it refers.
    fn line_of(&self, r: LineRecord, at: u64) -> Result<StoredLine, LogError> {
        if r.cause >= at || r.prev.is_some_and(|p| p >= at) {
            return Err(self
                .files
                .corrupt(format!("the line at byte {at} refers forward")));
        }
        let JournalRecord::Cause(cause) = self.journal_record(r.cause)?.0 else {
            return Err(self.files.corrupt(format!(
                "the line at byte {at} refers to byte {}, which is not a cause",
                r.cause
            )));
        };
        Ok(StoredLine {
            entry: r.entry,
            number: r.number,
            prev: r.prev,
            line: JournalLine {
                cause: std::sync::Arc::new(cause),
                basis: r.basis,
                adjustments: r.adjustments,
                earned: r.earned,
                paid: r.paid,
                reserved: r.reserved,
                payout: r
                    .payout
                    .map(|Paid(id, amount, reason)| (id, amount, reason)),
            },
        })
    }

    /// The first `count` journal lines of one entry, in order (walked back from the
    /// entry's last line).
    pub fn journal(
        &self,
        partner: &str,
        program: &str,
        period: &str,
        count: u64,
    ) -> Result<Vec<JournalLine>, LogError> {
        let entry: EntryId = (Text::from(partner), Text::from(program), Text::from(period));
        let head = self.heads().journal.get(&entry).copied();
        let mut lines = Vec::with_capacity(count.min(1 << 16) as usize);
        let mut at = head.map(|h| h.last);
        while let Some(offset) = at {
            let l = self.stored_line(offset)?;
            if head.is_some_and(|h| h.number != l.entry) {
                return Err(self.files.corrupt(format!(
                    "the journal chain of {partner}/{program}/{period} is broken at byte {offset}"
                )));
            }
            if l.number < count {
                lines.push(l.line);
            }
            at = l.prev;
        }
        lines.reverse();
        if lines.len() as u64 != count {
            return Err(self.files.corrupt(format!(
                "{partner}/{program}/{period} has {} journal lines archived, not {count}",
                lines.len()
            )));
        }
        Ok(lines)
    }

    /// Reads the journal in the order it was written (for `verify`).
    pub fn journal_reader(&self) -> JournalReader<'_> {
        JournalReader {
            archive: self,
            at: 0,
            end: self.heads().journal_bytes,
            entries: Vec::new(),
        }
    }
}

/// The archived journal lines in the order they were written, each with its entry and
/// number ([`Archive::journal_reader`]).
pub struct JournalReader<'a> {
    archive: &'a Archive,
    at: u64,
    end: u64,
    entries: Vec<EntryId>,
}

/// A line [`JournalReader`] read: its entry, its number there, the line.
pub type ReadLine = (EntryId, u64, JournalLine);

impl JournalReader<'_> {
    /// The next line, `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<ReadLine>, LogError> {
        while self.at < self.end {
            let at = self.at;
            let (record, next) = self.archive.journal_record(at)?;
            self.at = next;
            match record {
                JournalRecord::Entry(id) => self.entries.push(id),
                JournalRecord::Cause(_) => {}
                JournalRecord::Line(r) => {
                    let line = self.archive.line_of(r, at)?;
                    let entry =
                        self.entries
                            .get(line.entry as usize)
                            .cloned()
                            .ok_or_else(|| {
                                self.archive
                                    .files
                                    .corrupt(format!("the line at byte {at} names no known entry"))
                            })?;
                    return Ok(Some((entry, line.number, line.line)));
                }
            }
        }
        Ok(None)
    }
}

impl Files {
    /// The files of the archive in `dir` (created, with the directory, if missing),
    /// for reading and writing.
    fn open(dir: &Path, temporary: Option<tempfile::TempDir>) -> Result<Files, LogError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let options = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .clone();
        Files::with(dir, &options, temporary)
    }

    /// The files of the archive in `dir`, each opened with `options`.
    fn with(
        dir: &Path,
        options: &std::fs::OpenOptions,
        temporary: Option<tempfile::TempDir>,
    ) -> Result<Files, LogError> {
        let open = |name: &str| {
            options.open(dir.join(name)).map_err(|source| LogError::Io {
                path: dir.join(name),
                source,
            })
        };
        Ok(Files {
            payouts: open("payouts")?,
            payout_offsets: open("payouts.offsets")?,
            refusals: open("refusals")?,
            refusal_offsets: open("refusals.offsets")?,
            journal: open("journal")?,
            dir: dir.to_path_buf(),
            _temporary: temporary,
        })
    }

    /// The generation the directory's `GENERATION` file names, if it has one.
    fn generation(&self) -> Result<Option<u64>, LogError> {
        match std::fs::read(self.dir.join(GENERATION)) {
            Ok(b) => Ok(b.try_into().ok().map(u64::from_le_bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Names a new generation (one after the last, or the time's nanoseconds if that
    /// is later), durably; returns it.
    fn new_generation(&self) -> Result<u64, LogError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let next = self.generation()?.map_or(0, |g| g.wrapping_add(1)).max(now);
        let path = self.dir.join(GENERATION);
        let mut f = File::create(&path).map_err(|e| self.io(e))?;
        std::io::Write::write_all(&mut f, &next.to_le_bytes()).map_err(|e| self.io(e))?;
        f.sync_all().map_err(|e| self.io(e))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(next)
    }

    fn all(&self) -> [&File; 5] {
        [
            &self.payouts,
            &self.payout_offsets,
            &self.refusals,
            &self.refusal_offsets,
            &self.journal,
        ]
    }

    fn len(&self, f: &File) -> Result<u64, LogError> {
        Ok(f.metadata().map_err(|e| self.io(e))?.len())
    }

    fn io(&self, source: std::io::Error) -> LogError {
        LogError::Io {
            path: self.dir.clone(),
            source,
        }
    }

    fn corrupt(&self, what: String) -> LogError {
        LogError::Corrupt {
            path: self.dir.clone(),
            what: format!("history archive: {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::gen::{GenConfig, Generator};
    use ledger_core::Replay;

    /// A replay that kept its history, and the same replay drained into an archive at
    /// uneven points, some writes failing and tried again with more history: the archive
    /// answers every read as the kept history does, and so does the archive reopened at
    /// a midway state's heads after more was written (cut back, then written again).
    #[test]
    fn the_archive_reads_back_what_a_replay_kept_through_failed_writes_and_reopening() {
        let lines: Vec<String> = Generator::new(GenConfig::new(21, 2500)).collect();
        let mut kept = Replay::new();
        kept.enable_journal();
        let mut drained = Replay::new();
        drained.enable_journal();
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::create(dir.path()).unwrap();
        let mut held = Drained::default();
        let mut midway = None;
        for (i, l) in lines.iter().enumerate() {
            kept.push(l.as_bytes(), i as u64 + 1);
            drained.push(l.as_bytes(), i as u64 + 1);
            if i % 97 == 0 {
                held.extend(drained.drain_history());
                if i % 5 == 0 {
                    archive.fail_next_writes(1);
                    assert!(archive.write(&held).is_err());
                } else {
                    archive.write(&held).unwrap();
                    held = Drained::default();
                }
            }
            if i == 1200 && held.is_empty() {
                midway = Some((archive.state(), drained.clone()));
            }
        }
        held.extend(drained.drain_history());
        archive.write(&held).unwrap();
        let check = |archive: &Archive| {
            let all = kept.payouts();
            assert_eq!(archive.payouts(0, u64::MAX).unwrap(), all);
            assert_eq!(
                archive.rejections(0, usize::MAX).unwrap(),
                kept.rejections()
            );
            let partner = all[all.len() / 2].partner_id.to_string();
            let own: Vec<u64> = (0..all.len() as u64)
                .filter(|&n| all[n as usize].partner_id == partner)
                .collect();
            let of = PayoutsOf::Partner(&partner);
            assert_eq!(archive.payout_indexes(of, 0, usize::MAX).unwrap(), own);
            assert_eq!(
                archive.payout_indexes(of, own[3], 5).unwrap(),
                own[3..8].to_vec()
            );
            for b in kept.ledger().balances() {
                let st = kept
                    .ledger()
                    .statement(&b.partner_id, &b.program_id, &b.period)
                    .unwrap();
                let lines = archive
                    .journal(
                        &b.partner_id,
                        &b.program_id,
                        &b.period,
                        st.lines.len() as u64,
                    )
                    .unwrap();
                assert_eq!(
                    lines, st.lines,
                    "{}/{}/{}",
                    b.partner_id, b.program_id, b.period
                );
            }
        };
        check(&archive);

        // Reopened at the midway heads: cut back, then the rest written again.
        let (heads, mut replay) = midway.expect("a midway state with nothing held");
        drop(archive);
        let archive = Archive::open_at(dir.path(), &heads).unwrap().unwrap();
        for (i, l) in lines.iter().enumerate().skip(1201) {
            replay.push(l.as_bytes(), i as u64 + 1);
            if i % 300 == 0 {
                archive.write(&replay.drain_history()).unwrap();
            }
        }
        archive.write(&replay.drain_history()).unwrap();
        check(&archive);
        // Heads of another generation open nothing.
        let other = Heads {
            generation: heads.generation + 1,
            ..heads
        };
        drop(archive);
        assert!(Archive::open_at(dir.path(), &other).unwrap().is_none());
    }
}
