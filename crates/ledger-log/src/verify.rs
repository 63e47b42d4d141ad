//! `verify`: re-checks a data directory from its bytes — sequence, hash chain, record
//! headers against their events, the identity index, the quarantine and duplicate marks,
//! the head, and the checkpoint against a fresh fold — and reports the first damage.

use crate::history::{fold_range, Limits};
use crate::layout::{
    chain_hash, decode_segment, identity_key, key_number, Head, DUPLICATE, HEAD, QUARANTINE,
    SEGMENT,
};
use crate::log::{LogError, LogReader};
use ledger_core::Replay;
use std::collections::HashMap;

/// The outcome of `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub records: u64,
    pub quarantined: u64,
    pub duplicates: u64,
    /// Problems found, in the order found; empty when the directory is sound.
    pub problems: Vec<String>,
    /// The first log position that is damaged, missing or out of place.
    pub first_bad_seq: Option<u64>,
    /// Whether a checkpoint was present and matched a fresh fold.
    pub checkpoint: CheckpointStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CheckpointStatus {
    #[default]
    Absent,
    Matches {
        seq: u64,
    },
    Differs(String),
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn bad(&mut self, seq: Option<u64>, problem: String) {
        if self.first_bad_seq.is_none() {
            self.first_bad_seq = seq;
        }
        self.problems.push(problem);
    }
}

/// Verifies an open directory. Storage errors end the check and are returned as errors;
/// damage to the content is reported in the `Report`.
pub fn verify(log: &LogReader, progress: &mut dyn FnMut(u64)) -> Result<Report, LogError> {
    verify_up_to(log, None, progress)
}

/// Verifies the directory a running process appends to (the service's, through its
/// reader): everything up to the head stored when it starts, so that a batch landing
/// meanwhile is not taken for damage.
pub fn verify_live(log: &LogReader, progress: &mut dyn FnMut(u64)) -> Result<Report, LogError> {
    let head = log.stored_head()?;
    verify_up_to(log, Some(head), progress)
}

fn verify_up_to(
    log: &LogReader,
    limit: Option<Head>,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, LogError> {
    let mut report = Report::default();
    let tree = log.raw_tree()?;
    let storage = crate::log::storage(log.path());
    let last_hash = check_records(
        &tree,
        &storage,
        &mut report,
        limit.map_or(u64::MAX, |h| h.last_seq),
        progress,
    )?;
    let head = match limit {
        Some(h) => Some(h),
        None => tree
            .get(HEAD)
            .ok()
            .flatten()
            .and_then(|b| postcard::from_bytes(&b).ok()),
    };
    check_head(head, &mut report, last_hash);
    check_marks(
        &tree,
        &storage,
        &mut report,
        limit.map_or(u64::MAX, |h| h.last_arrival),
    )?;
    if report.ok() {
        report.checkpoint = check_checkpoint(log)?;
        if let CheckpointStatus::Differs(why) = &report.checkpoint {
            report.bad(None, format!("checkpoint: {why}"));
        }
    }
    Ok(report)
}

/// Every segment and record in order: sequence, arrival order, hash chain, intake,
/// identity and content digest, identity uniqueness. Returns the last chain hash; stops
/// at the first damage that makes the rest unreadable.
fn check_records(
    tree: &sled::Tree,
    storage: &impl Fn(sled::Error) -> LogError,
    report: &mut Report,
    max_seq: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<[u8; 32], LogError> {
    let mut chain = Chain::default();
    for item in tree.scan_prefix([SEGMENT]) {
        let (k, v) = item.map_err(storage)?;
        let Some(first) = key_number(&k, SEGMENT) else {
            report.bad(
                Some(chain.expected_seq()),
                "a segment key has the wrong shape".into(),
            );
            break;
        };
        if first > max_seq {
            break; // appended after the head this check is bounded by
        }
        if !chain.segment(first, &v, report, progress) {
            break;
        }
    }
    Ok(chain.previous_hash)
}

/// The checks of the records of a log, fed one segment at a time in key order: what
/// `verify` runs over the stored segments, and what the segment fuzz target runs over
/// damaged ones (`fuzz_checks::damaged_segment`).
#[derive(Default)]
pub(crate) struct Chain {
    /// Records checked so far (the next expected position is one more).
    checked: u64,
    pub(crate) previous_hash: [u8; 32],
    last_arrival: u64,
    identities: HashMap<[u8; 16], u64>,
}

impl Chain {
    fn expected_seq(&self) -> u64 {
        self.checked + 1
    }

    /// Checks the segment stored under key `first`; false when the damage found makes
    /// the rest of the log unreadable (the check stops there).
    pub(crate) fn segment(
        &mut self,
        first: u64,
        bytes: &[u8],
        report: &mut Report,
        progress: &mut dyn FnMut(u64),
    ) -> bool {
        let expected_seq = self.expected_seq();
        let records = match decode_segment(bytes) {
            Ok(r) => r,
            Err(e) => {
                report.bad(
                    Some(expected_seq),
                    format!(
                        "segment starting at {first} does not decode: {} at byte {}",
                        e.reason, e.offset
                    ),
                );
                return false;
            }
        };
        if records.first().map(|r| r.seq) != Some(first) {
            report.bad(
                Some(expected_seq.min(first)),
                format!("segment key {first} does not match its first record"),
            );
            return false;
        }
        for r in records {
            if !self.record(&r, report) {
                return false;
            }
            progress(r.seq);
        }
        true
    }

    /// Checks one record; false when the chain cannot be followed past it.
    fn record(&mut self, r: &crate::layout::Record, report: &mut Report) -> bool {
        let expected_seq = self.expected_seq();
        if r.seq != expected_seq {
            report.bad(
                Some(expected_seq),
                format!("sequence {expected_seq} expected, found {} (a record is missing or out of order)", r.seq),
            );
            return false;
        }
        if r.arrival <= self.last_arrival {
            report.bad(
                Some(r.seq),
                format!(
                    "record {} arrived ({}) before its predecessor ({})",
                    r.seq, r.arrival, self.last_arrival
                ),
            );
        }
        self.last_arrival = r.arrival;
        let hash = chain_hash(&self.previous_hash, r.seq, &r.raw);
        if hash != r.hash {
            report.bad(
                Some(r.seq),
                format!(
                    "record {}: hash chain broken (bytes changed, or a record before it removed)",
                    r.seq
                ),
            );
            return false;
        }
        self.previous_hash = hash;
        match ledger_core::check(&r.raw) {
            Err(refusal) => report.bad(
                Some(r.seq),
                format!(
                    "record {}: its event no longer passes intake ({})",
                    r.seq, refusal.code
                ),
            ),
            Ok(a) => {
                if identity_key(&a.event.source, &a.event.id) != r.identity {
                    report.bad(
                        Some(r.seq),
                        format!(
                            "record {}: identity index entry does not match its event",
                            r.seq
                        ),
                    );
                }
                if a.content_digest != r.content {
                    report.bad(
                        Some(r.seq),
                        format!("record {}: content digest does not match its event", r.seq),
                    );
                }
            }
        }
        if let Some(other) = self.identities.insert(r.identity, r.seq) {
            report.bad(
                Some(r.seq),
                format!(
                    "record {} repeats the (source, id) of record {other}",
                    r.seq
                ),
            );
        }
        report.records += 1;
        self.checked += 1;
        true
    }
}

/// The head names the log's last record and its hash.
pub(crate) fn check_head(head: Option<Head>, report: &mut Report, previous_hash: [u8; 32]) {
    match head {
        None if report.records > 0 => {
            report.bad(None, "the head record is missing or damaged".into())
        }
        Some(h)
            if report.ok() && (h.last_seq != report.records || h.last_hash != previous_hash) =>
        {
            report.bad(
                Some(h.last_seq.min(report.records + 1)),
                format!(
                    "the head says the log ends at {}, but it ends at {}",
                    h.last_seq, report.records
                ),
            )
        }
        _ => {}
    }
}

/// Quarantine entries and duplicate marks decode and name their own arrival.
fn check_marks(
    tree: &sled::Tree,
    storage: &impl Fn(sled::Error) -> LogError,
    report: &mut Report,
    max_arrival: u64,
) -> Result<(), LogError> {
    let beyond = |k: &[u8], kind| key_number(k, kind).is_some_and(|a| a > max_arrival);
    for item in tree.scan_prefix([QUARANTINE]) {
        let (k, v) = item.map_err(storage)?;
        if beyond(&k, QUARANTINE) {
            break;
        }
        match postcard::from_bytes::<crate::layout::Quarantined>(&v) {
            Ok(q) if Some(q.arrival) == key_number(&k, QUARANTINE) => report.quarantined += 1,
            _ => report.bad(
                None,
                format!(
                    "quarantine entry {:?} is damaged",
                    key_number(&k, QUARANTINE)
                ),
            ),
        }
    }
    for item in tree.scan_prefix([DUPLICATE]) {
        let (k, v) = item.map_err(storage)?;
        if beyond(&k, DUPLICATE) {
            break;
        }
        match postcard::from_bytes::<crate::layout::Duplicate>(&v) {
            Ok(d)
                if Some(d.arrival) == key_number(&k, DUPLICATE)
                    && d.of_seq >= 1
                    && d.of_seq <= report.records =>
            {
                report.duplicates += 1
            }
            _ => report.bad(
                None,
                format!("duplicate mark {:?} is damaged", key_number(&k, DUPLICATE)),
            ),
        }
    }
    Ok(())
}

/// Compares the checkpoint with a fresh fold of the same prefix — its state, and the
/// history archive it names up to the checkpoint: every payout, refusal and journal
/// line, in order.
fn check_checkpoint(log: &LogReader) -> Result<CheckpointStatus, LogError> {
    let Some(bytes) = log.load_checkpoint()? else {
        return Ok(CheckpointStatus::Absent);
    };
    let Some((seq, arrival, saved, heads)) = crate::history::peek_checkpoint(&bytes) else {
        return Ok(CheckpointStatus::Differs(
            "it does not decode (damaged or of another format)".into(),
        ));
    };
    let archive = match &heads {
        None => None,
        Some(h) => match crate::Archive::read_only(log.path(), h)? {
            Some(a) => Some(a),
            None => {
                return Ok(CheckpointStatus::Differs(
                    "the history archive it names is missing".into(),
                ))
            }
        },
    };
    let mut fresh = Replay::new();
    let mut compared = archive.as_ref().map(|a| ArchiveCheck {
        journal: a.journal_reader(),
        problem: None,
    });
    if archive.is_some() {
        fresh.enable_journal();
    }
    fold_range(
        log,
        &mut fresh,
        0,
        0,
        Limits {
            max_seq: seq,
            max_arrival: arrival,
            before_ns: u64::MAX,
        },
        &mut |replay, seq| {
            if let (Some(a), Some(c)) = (&archive, compared.as_mut()) {
                if seq % crate::history::ARCHIVE_EVERY == 0 {
                    c.compare(a, replay.drain_history());
                }
            }
            Ok(())
        },
    )?;
    if let (Some(a), Some(mut c)) = (archive.as_ref(), compared) {
        c.compare(a, fresh.drain_history());
        if c.problem.is_none() {
            match c.journal.next_line() {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => {
                    c.problem = Some("its journal holds lines the log does not make".into())
                }
            }
        }
        if let Some(why) = c.problem {
            return Ok(CheckpointStatus::Differs(format!("history archive: {why}")));
        }
    }
    if fresh.working_state() == saved.working_state() {
        Ok(CheckpointStatus::Matches { seq })
    } else {
        Ok(CheckpointStatus::Differs(format!(
            "the state saved for position {seq} differs from a fresh fold of the log up to it"
        )))
    }
}

/// The archive compared so far with a fresh fold's history, and the first difference.
struct ArchiveCheck<'a> {
    journal: crate::archive::JournalReader<'a>,
    problem: Option<String>,
}

impl ArchiveCheck<'_> {
    fn compare(&mut self, archive: &crate::Archive, d: ledger_core::replay::Drained) {
        if self.problem.is_some() {
            return;
        }
        let end = d.first_payout + d.payouts.len() as u64;
        if archive.payouts(d.first_payout, end).ok() != Some(d.payouts) {
            self.problem = Some(format!(
                "payouts {}..{end} differ from the log's",
                d.first_payout
            ));
            return;
        }
        let end = d.first_rejection + d.rejections.len() as u64;
        if archive
            .rejections(d.first_rejection, d.rejections.len())
            .ok()
            != Some(d.rejections)
        {
            self.problem = Some(format!(
                "refusals {}..{end} differ from the log's",
                d.first_rejection
            ));
            return;
        }
        for l in &d.journal {
            let stored = match self.journal.next_line() {
                Ok(Some(stored)) => stored,
                Ok(None) => {
                    self.problem = Some("the journal ends before the log's lines do".into());
                    return;
                }
                Err(e) => {
                    self.problem = Some(format!("the journal cannot be read: {e}"));
                    return;
                }
            };
            let (entry, n, line) = &stored;
            let Some(expected) = d.entries.get(l.entry as usize) else {
                self.problem = Some(format!("a drained journal line names entry {}", l.entry));
                return;
            };
            if (entry, *n, line) != (expected, l.number, &l.line) {
                self.problem = Some(format!(
                    "journal line {} of {}/{}/{} differs from the log's",
                    l.number, expected.0, expected.1, expected.2
                ));
                return;
            }
        }
    }
}
