//! The history archive: what the fold hands out and never reads again — payouts,
//! refusals, statement journal lines — kept on disk, indexed for the queries the API
//! answers, so that the fold's memory holds its working set only (issue 15).
//!
//! It lives in trees of the data directory's database, beside the log (a fold without
//! a directory keeps one in a temporary database). It is derived data: a pure function
//! of the log, written by the projector as it folds, never flushed on its own (the
//! log's flushes carry it, and a checkpoint flushes it first). Its [`Mark`] says how
//! far it reaches; on open, an archive whose mark is behind the checkpoint or does not
//! match the log is rebuilt (`history::rebuild_archived`). Everything is keyed by
//! numbers the fold assigns deterministically (issue order, refusal order, line number
//! within an entry), so folding a stretch of the log again writes the same keys with
//! the same values.
//!
//! Trees (`history.*`), keys big-endian so that key order is number order; strings in
//! keys are length-prefixed (u32), so that no id can run into the next:
//! - `payouts`: issue index → payout (postcard); `by_partner`, `by_program`: id ++
//!   index → (); `by_entry`: partner ++ program ++ period ++ index → ().
//! - `refusals`: index → refusal (postcard).
//! - `journal`: partner ++ program ++ period ++ line number → journal line (postcard,
//!   its cause in full).
//! - `mark`: the [`Mark`].

use crate::log::{storage, TreeHandle};
use crate::{LogError, LogReader};
use ledger_core::ledger::JournalLine;
use ledger_core::replay::{Drained, Rejection};
use ledger_core::Payout;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const PAYOUTS: usize = 0;
const BY_PARTNER: usize = 1;
const BY_PROGRAM: usize = 2;
const BY_ENTRY: usize = 3;
const REFUSALS: usize = 4;
const JOURNAL: usize = 5;
const MARK: usize = 6;
const NAMES: [&str; 7] = [
    "history.payouts",
    "history.by_partner",
    "history.by_program",
    "history.by_entry",
    "history.refusals",
    "history.journal",
    "history.mark",
];
const MARK_KEY: &[u8] = b"m";

/// How far the archive reaches: everything the fold handed out up to log position
/// `position` (whose record has chain hash `hash`) and arrival `arrival`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub position: u64,
    pub arrival: u64,
    pub hash: [u8; 32],
    pub payouts: u64,
    pub rejections: u64,
}

impl Mark {
    const BYTES: usize = 8 + 8 + 32 + 8 + 8;

    fn encode(&self) -> [u8; Mark::BYTES] {
        let mut out = [0u8; Mark::BYTES];
        out[0..8].copy_from_slice(&self.position.to_be_bytes());
        out[8..16].copy_from_slice(&self.arrival.to_be_bytes());
        out[16..48].copy_from_slice(&self.hash);
        out[48..56].copy_from_slice(&self.payouts.to_be_bytes());
        out[56..64].copy_from_slice(&self.rejections.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Mark> {
        if bytes.len() != Mark::BYTES {
            return None;
        }
        let n = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[16..48]);
        Some(Mark {
            position: n(0),
            arrival: n(8),
            hash,
            payouts: n(48),
            rejections: n(56),
        })
    }

    /// The mark of a fold at log position `position`, with the chain hash of the log's
    /// record there (zeros at 0); `None` if the log has no such record.
    pub fn at(
        log: &LogReader,
        position: u64,
        arrival: u64,
        payouts: u64,
        rejections: u64,
    ) -> Result<Option<Mark>, LogError> {
        let hash = match position {
            0 => [0u8; 32],
            _ => match log.records_from(position).next().transpose()? {
                Some(r) if r.seq == position => r.hash,
                _ => return Ok(None),
            },
        };
        Ok(Some(Mark {
            position,
            arrival,
            hash,
            payouts,
            rejections,
        }))
    }
}

/// Which payouts an index lists.
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

/// The history archive of a data directory (or a temporary one).
#[derive(Clone)]
pub struct Archive {
    trees: Vec<TreeHandle>,
    path: PathBuf,
    /// Writes still to fail on purpose (tests of the fold's hold-and-retry).
    failing_writes: Arc<AtomicU64>,
}

fn push_str(key: &mut Vec<u8>, s: &str) {
    // Ids are far below 4 GiB (intake bounds an event's size).
    let len = u32::try_from(s.len()).expect("an id shorter than 4 GiB");
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(s.as_bytes());
}

fn entry_prefix(partner: &str, program: &str, period: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(12 + partner.len() + program.len() + period.len() + 8);
    push_str(&mut key, partner);
    push_str(&mut key, program);
    push_str(&mut key, period);
    key
}

fn with_number(mut prefix: Vec<u8>, n: u64) -> Vec<u8> {
    prefix.extend_from_slice(&n.to_be_bytes());
    prefix
}

fn trailing_number(key: &[u8]) -> Option<u64> {
    let at = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[at..].try_into().ok()?))
}

impl Archive {
    /// The archive of the directory `log` reads.
    pub fn of(log: &LogReader) -> Result<Archive, LogError> {
        let archive = Archive {
            trees: NAMES.iter().map(|n| log.tree_handle(n)).collect(),
            path: log.path().to_path_buf(),
            failing_writes: Arc::default(),
        };
        archive.tree(MARK)?;
        Ok(archive)
    }

    /// An archive in a temporary database of its own, removed with its last handle.
    pub fn temporary() -> Result<Archive, LogError> {
        let path = Path::new("(temporary history archive)");
        let trees = TreeHandle::temporary(&NAMES).map_err(storage(path))?;
        Ok(Archive {
            trees,
            path: path.to_path_buf(),
            failing_writes: Arc::default(),
        })
    }

    fn tree(&self, which: usize) -> Result<sled::Tree, LogError> {
        self.trees[which].get().map_err(storage(&self.path))
    }

    fn corrupt(&self, what: String) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            what: format!("history archive: {what}"),
        }
    }

    /// Makes the next `n` writes fail (and this handle's clones'): for tests of what
    /// the fold does when the archive cannot be written.
    #[doc(hidden)]
    pub fn fail_next_writes(&self, n: u64) {
        self.failing_writes.store(n, Ordering::Relaxed);
    }

    /// How far the archive reaches, if it was ever written.
    pub fn mark(&self) -> Result<Option<Mark>, LogError> {
        let value = self
            .tree(MARK)?
            .get(MARK_KEY)
            .map_err(storage(&self.path))?;
        match value {
            None => Ok(None),
            Some(v) => Mark::decode(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("its mark is {} bytes", v.len()))),
        }
    }

    /// Records how far the archive reaches (after the history up to there is written).
    pub fn set_mark(&self, mark: &Mark) -> Result<(), LogError> {
        self.tree(MARK)?
            .insert(MARK_KEY, &mark.encode()[..])
            .map_err(storage(&self.path))?;
        Ok(())
    }

    /// Removes everything (before a rebuild from the log).
    pub fn clear(&self) -> Result<(), LogError> {
        for t in &self.trees {
            t.clear().map_err(storage(&self.path))?;
        }
        Ok(())
    }

    /// Writes drained history: payouts and refusals at their numbers, journal lines at
    /// theirs, and the indexes. Idempotent: writing the same history again changes
    /// nothing.
    pub fn write(&self, d: &Drained) -> Result<(), LogError> {
        let injected =
            self.failing_writes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if injected.is_ok() {
            return Err(LogError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(
                    "injected fault: the history archive refuses a write",
                ),
            });
        }
        let encode = |what: &str, r: Result<Vec<u8>, postcard::Error>| {
            r.map_err(|e| self.corrupt(format!("{what} does not encode: {e}")))
        };
        if !d.payouts.is_empty() {
            let mut payouts = sled::Batch::default();
            let mut by_partner = sled::Batch::default();
            let mut by_program = sled::Batch::default();
            let mut by_entry = sled::Batch::default();
            for (i, p) in d.payouts.iter().enumerate() {
                let n = d.first_payout + i as u64;
                payouts.insert(
                    &n.to_be_bytes(),
                    encode("a payout", postcard::to_stdvec(p))?,
                );
                let mut k = Vec::with_capacity(4 + p.partner_id.len() + 8);
                push_str(&mut k, &p.partner_id);
                by_partner.insert(with_number(k, n), &[]);
                let mut k = Vec::with_capacity(4 + p.program_id.len() + 8);
                push_str(&mut k, &p.program_id);
                by_program.insert(with_number(k, n), &[]);
                let k = entry_prefix(&p.partner_id, &p.program_id, &p.period);
                by_entry.insert(with_number(k, n), &[]);
            }
            for (tree, batch) in [
                (PAYOUTS, payouts),
                (BY_PARTNER, by_partner),
                (BY_PROGRAM, by_program),
                (BY_ENTRY, by_entry),
            ] {
                self.tree(tree)?
                    .apply_batch(batch)
                    .map_err(storage(&self.path))?;
            }
        }
        if !d.rejections.is_empty() {
            let mut batch = sled::Batch::default();
            for (i, r) in d.rejections.iter().enumerate() {
                let n = d.first_rejection + i as u64;
                batch.insert(
                    &n.to_be_bytes(),
                    encode("a refusal", postcard::to_stdvec(r))?,
                );
            }
            self.tree(REFUSALS)?
                .apply_batch(batch)
                .map_err(storage(&self.path))?;
        }
        if !d.journal.is_empty() {
            let mut batch = sled::Batch::default();
            for l in &d.journal {
                let k = entry_prefix(&l.partner_id, &l.program_id, &l.period);
                let v = encode("a journal line", postcard::to_stdvec(&l.line))?;
                batch.insert(with_number(k, l.number), v);
            }
            self.tree(JOURNAL)?
                .apply_batch(batch)
                .map_err(storage(&self.path))?;
        }
        Ok(())
    }

    /// Payouts `from .. to` in issue order (fewer if the archive holds fewer).
    pub fn payouts(&self, from: u64, to: u64) -> Result<Vec<Payout>, LogError> {
        let tree = self.tree(PAYOUTS)?;
        let mut out = Vec::with_capacity(to.saturating_sub(from).min(4096) as usize);
        for item in tree.range(from.to_be_bytes()..to.to_be_bytes()) {
            let (k, v) = item.map_err(storage(&self.path))?;
            let expected = from + out.len() as u64;
            if trailing_number(&k) != Some(expected) {
                return Err(self.corrupt(format!("payout {expected} is missing")));
            }
            out.push(
                postcard::from_bytes(&v)
                    .map_err(|e| self.corrupt(format!("payout {expected} does not decode: {e}")))?,
            );
        }
        Ok(out)
    }

    /// The issue indexes of the payouts an index lists, from index `from` on, at most
    /// `limit`.
    pub fn payout_indexes(
        &self,
        of: PayoutsOf<'_>,
        from: u64,
        limit: usize,
    ) -> Result<Vec<u64>, LogError> {
        let (tree, prefix) = match of {
            PayoutsOf::Partner(id) => {
                let mut k = Vec::new();
                push_str(&mut k, id);
                (BY_PARTNER, k)
            }
            PayoutsOf::Program(id) => {
                let mut k = Vec::new();
                push_str(&mut k, id);
                (BY_PROGRAM, k)
            }
            PayoutsOf::Entry {
                partner,
                program,
                period,
            } => (BY_ENTRY, entry_prefix(partner, program, period)),
        };
        let tree = self.tree(tree)?;
        let start = with_number(prefix.clone(), from);
        let mut out = Vec::new();
        for item in tree.range(start..).take(limit) {
            let (k, _) = item.map_err(storage(&self.path))?;
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            out.extend(trailing_number(&k));
        }
        Ok(out)
    }

    /// One payout by its issue index.
    pub fn payout(&self, n: u64) -> Result<Option<Payout>, LogError> {
        Ok(self.payouts(n, n.saturating_add(1))?.pop())
    }

    /// Refusals in order from number `from`, at most `limit`.
    pub fn rejections(&self, from: u64, limit: usize) -> Result<Vec<Rejection>, LogError> {
        let tree = self.tree(REFUSALS)?;
        let mut out = Vec::new();
        for item in tree.range(from.to_be_bytes()..).take(limit) {
            let (k, v) = item.map_err(storage(&self.path))?;
            let expected = from + out.len() as u64;
            if trailing_number(&k) != Some(expected) {
                return Err(self.corrupt(format!("refusal {expected} is missing")));
            }
            out.push(
                postcard::from_bytes(&v).map_err(|e| {
                    self.corrupt(format!("refusal {expected} does not decode: {e}"))
                })?,
            );
        }
        Ok(out)
    }

    /// Journal line `number` of one entry, if the archive holds it.
    pub fn journal_line(
        &self,
        partner: &str,
        program: &str,
        period: &str,
        number: u64,
    ) -> Result<Option<JournalLine>, LogError> {
        let key = with_number(entry_prefix(partner, program, period), number);
        let Some(v) = self.tree(JOURNAL)?.get(key).map_err(storage(&self.path))? else {
            return Ok(None);
        };
        postcard::from_bytes(&v).map(Some).map_err(|e| {
            self.corrupt(format!(
                "journal line {number} of {partner}/{program}/{period} does not decode: {e}"
            ))
        })
    }

    /// The first `count` journal lines of one entry, in order.
    pub fn journal(
        &self,
        partner: &str,
        program: &str,
        period: &str,
        count: u64,
    ) -> Result<Vec<JournalLine>, LogError> {
        let prefix = entry_prefix(partner, program, period);
        let tree = self.tree(JOURNAL)?;
        let mut out = Vec::new();
        let range = with_number(prefix.clone(), 0)..with_number(prefix, count);
        for item in tree.range(range) {
            let (k, v) = item.map_err(storage(&self.path))?;
            let expected = out.len() as u64;
            if trailing_number(&k) != Some(expected) {
                return Err(self.corrupt(format!(
                    "journal line {expected} of {partner}/{program}/{period} is missing"
                )));
            }
            out.push(postcard::from_bytes(&v).map_err(|e| {
                self.corrupt(format!(
                    "journal line {expected} of {partner}/{program}/{period} does not decode: {e}"
                ))
            })?);
        }
        if out.len() as u64 != count {
            return Err(self.corrupt(format!(
                "{partner}/{program}/{period} has {} journal lines, not {count}",
                out.len()
            )));
        }
        Ok(out)
    }
}
