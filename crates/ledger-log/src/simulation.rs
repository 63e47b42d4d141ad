//! Running a what-if simulation ([`ledger_core::simulate`]) over a data directory,
//! without writing into it: the log as it is (the *actual* side) is folded read-only
//! from the checkpoint ([`crate::history::fold_read_only`]); the transformed log (the
//! *simulated* side) is folded from the start through the same position, its lookups
//! in a temporary store; of its history only the payouts' canonical bytes are kept (in
//! a temporary file, for its digest, whose payouts come after the final state). Payouts
//! are compared event by event as the simulation goes, the final states at the end.
//!
//! Cost: the simulated fold is one fold of the log (a `replay --data-dir
//! --no-checkpoint`), plus the actual side's fold from the checkpoint on; without a
//! usable checkpoint the actual side is a second whole fold (a warning says so).

use crate::canon::PayoutCanon;
use crate::history::{self, Bound, Limits, ReadOnlyFold, Visited, ARCHIVE_EVERY};
use crate::log::{LogError, LogReader};
use crate::lookups::LookupStore;
use ledger_core::document::{PayoutDigest, PayoutRow};
use ledger_core::simulate::{
    ChangeRefused, Comparer, Finished, Inserted, Plan, Side, Simulation, Transformer,
};
use ledger_core::{Payout, Replay, Step};
use std::sync::Arc;

/// Why a simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    /// The plan does not fit this log (an extra event's identity is in it).
    #[error(transparent)]
    Plan(#[from] ledger_core::simulate::PlanError),
    /// Reading the directory or the temporary stores failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What a simulation found beside its result.
pub struct Simulated {
    pub simulation: Simulation,
    /// Why the checkpoint could not be resumed from, if it could not.
    pub warnings: Vec<String>,
}

/// Payouts read this many at a time from an archive.
const CHUNK: u64 = 4096;

/// The actual side's payouts in issue order, read a chunk at a time — and hashed into
/// its digest as they are taken (its balances and claims, known before, hashed first).
struct Cursor<'a> {
    fold: &'a ReadOnlyFold,
    next: u64,
    total: u64,
    chunk: std::collections::VecDeque<Payout>,
    digest: PayoutDigest,
}

impl<'a> Cursor<'a> {
    fn new(fold: &'a ReadOnlyFold) -> Cursor<'a> {
        Cursor {
            fold,
            next: 0,
            total: fold.rebuilt.replay.payouts_issued(),
            chunk: Default::default(),
            digest: fold.rebuilt.replay.state_digest(),
        }
    }

    fn peek(&mut self) -> Result<Option<&Payout>, LogError> {
        if self.chunk.is_empty() && self.next < self.total {
            let to = (self.next + CHUNK).min(self.total);
            let read = self.fold.payouts(self.next, to)?;
            if read.len() as u64 != to - self.next {
                return Err(LogError::Corrupt {
                    path: std::path::PathBuf::from("history"),
                    what: format!(
                        "the history archive gave {} payouts from {} where {} were asked for",
                        read.len(),
                        self.next,
                        to - self.next
                    ),
                });
            }
            self.next = to;
            self.chunk.extend(read);
        }
        Ok(self.chunk.front())
    }

    /// The payouts the event `(source, id)` caused: the next ones, while their cause
    /// is that event (payouts follow their causes' order in the log).
    fn caused_by(&mut self, source: &str, id: &str) -> Result<Vec<Payout>, LogError> {
        let mut out = Vec::new();
        while let Some(p) = self.peek()? {
            if p.cause_source != source || p.cause_id != id {
                break;
            }
            if let Some(p) = self.chunk.pop_front() {
                self.digest.payout(&PayoutRow::from(&p));
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// Runs `plan` over the log of `log` (through its last record at the start), listing
/// at most `max_payouts` differing payouts. Writes nothing into the directory.
pub fn simulate(
    log: &LogReader,
    plan: &Plan,
    max_payouts: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Simulated, SimulationError> {
    // Bounded by the stored head: a service may append meanwhile, and both sides must
    // read the same inputs.
    let head = log.stored_head()?;
    let bound = Bound::Head {
        seq: head.last_seq,
        arrival: head.last_arrival,
    };
    let actual = history::fold_read_only(log, bound, &mut |_| {})?;
    let position = actual.rebuilt.seq;
    let exists = actual
        .rebuilt
        .replay
        .ledger()
        .program(plan.program_id())
        .is_some();
    let store = Arc::new(LookupStore::temporary(None).map_err(|e| {
        LogError::Lookups(ledger_core::store::StoreError::new(
            "cannot create the simulation's temporary lookup store",
            e,
        ))
    })?);
    let mut replay = Replay::new();
    replay.attach_backing(store.clone());
    let mut canon = PayoutCanon::new().map_err(temp_error)?;
    let mut transformer = Transformer::new(plan, exists);
    let mut comparer = Comparer::new(max_payouts);
    let mut cursor = Cursor::new(&actual);
    let mut plan_error = None;
    let limits = Limits {
        max_seq: position,
        max_arrival: actual.rebuilt.arrival,
        before_ns: u64::MAX,
    };
    let mut visit = |replay: &mut Replay, record: Visited<'_>| -> Result<(), LogError> {
        let event = record.event;
        if plan.has_extras() {
            let identity = ledger_core::identity_key(&event.source, &event.id);
            if let Some(line) = plan.extra_with(&identity) {
                plan_error = Some(ledger_core::simulate::PlanError::ExtraInLog {
                    line,
                    seq: record.seq,
                });
                return Err(LogError::Corrupt {
                    path: log.path().to_path_buf(),
                    what: "the simulation's plan does not fit the log".into(),
                });
            }
        }
        for inserted in transformer.before(record.seq, &event.time) {
            let change = fold_inserted(replay, inserted, record.line)?;
            comparer.event(&[], &change.1);
            comparer.change(change.0);
        }
        let raw = if transformer.concerns(event) {
            log.record_at(record.seq)?.map(|r| r.raw.to_vec())
        } else {
            None
        };
        let actual_payouts = cursor.caused_by(&event.source, &event.id)?;
        match transformer.replace(record.seq, event, raw.as_deref()) {
            Some(replaced) => {
                let (change, payouts) = fold_inserted(replay, replaced, record.line)?;
                comparer.change(change);
                comparer.event(&actual_payouts, &payouts);
            }
            None => {
                let step = replay
                    .try_apply_logged(event, record.line)
                    .map_err(LogError::Lookups)?;
                // Borrowed from the replay's undrained list: no copy per event.
                let issued = match &step {
                    Step::Applied(range) => replay.payouts().get(range.clone()).unwrap_or_default(),
                    _ => &[],
                };
                comparer.event(&actual_payouts, issued);
            }
        }
        progress(record.seq);
        if record.seq.is_multiple_of(ARCHIVE_EVERY) {
            // Of the drained history only the payouts' canonical rows are kept.
            canon
                .append(&replay.drain_history().payouts)
                .map_err(temp_error)?;
        }
        if record.seq.is_multiple_of(256)
            && replay.lookups_in_memory() >= history::LOOKUPS_IN_MEMORY
        {
            history::flush_lookups(replay, &store)?;
        }
        Ok(())
    };
    let folded = history::fold_range_visiting(log, &mut replay, 0, 0, limits, &mut visit);
    if let Some(e) = plan_error {
        return Err(e.into());
    }
    let (last_seq, _) = folded?;
    if last_seq != position {
        return Err(LogError::Corrupt {
            path: log.path().to_path_buf(),
            what: format!(
                "the simulation folded through position {last_seq}, the log as it is through {position}"
            ),
        }
        .into());
    }
    // The last record's time, for a draft inserted after it.
    let last_time = match log.record_at(position)? {
        Some(r) => ledger_core::intake::check_event(&r.raw)
            .ok()
            .map(|e| e.time.to_string()),
        None => None,
    };
    for inserted in transformer.at_end(position, last_time.as_deref()) {
        let line = replay.counts().received + 1;
        let (change, payouts) = fold_inserted(&mut replay, inserted, line)?;
        comparer.event(&[], &payouts);
        comparer.change(change);
    }
    if let Some(p) = cursor.peek()? {
        return Err(LogError::Corrupt {
            path: log.path().to_path_buf(),
            what: format!(
                "payout {} of the log's history (cause {} {}) follows no record of the log",
                p.payout_id, p.cause_source, p.cause_id
            ),
        }
        .into());
    }
    canon
        .append(&replay.drain_history().payouts)
        .map_err(temp_error)?;
    let digests = Side {
        actual: cursor.digest.finish(),
        simulated: canon.digest(replay.state_digest()).map_err(temp_error)?,
    };
    let simulation = comparer.finish(
        plan,
        position,
        Finished {
            actual: actual.rebuilt.replay.ledger(),
            simulated: replay.ledger(),
            actual_counts: actual.rebuilt.replay.counts(),
            simulated_counts: replay.counts(),
            actual_refusals: actual.rebuilt.replay.refused_by_code(),
            simulated_refusals: replay.refused_by_code(),
            digests,
        },
    );
    Ok(Simulated {
        simulation,
        warnings: actual.rebuilt.warnings.clone(),
    })
}

/// Folds an event the transformation put in (its bytes go through intake, as a replay
/// of the transformed log's would); returns what was done, with the refusal if any, and
/// the payouts it caused.
fn fold_inserted(
    replay: &mut Replay,
    inserted: Inserted,
    line: u64,
) -> Result<(ledger_core::simulate::Change, Vec<Payout>), LogError> {
    let Inserted { raw, mut change } = inserted;
    let step = match ledger_core::intake::check_event(&raw) {
        Ok(event) => replay
            .try_apply_logged(&event, line)
            .map_err(LogError::Lookups)?,
        Err(refusal) => replay.record_quarantined(refusal, line),
    };
    if let Step::Rejected(i) = step {
        change.refused = replay.rejections().get(i).map(|r| ChangeRefused {
            code: r.code,
            message: r.message.clone(),
        });
    }
    let payouts = payouts_of(replay, &step);
    Ok((change, payouts))
}

fn payouts_of(replay: &Replay, step: &Step) -> Vec<Payout> {
    match step {
        Step::Applied(range) => replay
            .payouts()
            .get(range.clone())
            .unwrap_or_default()
            .to_vec(),
        _ => Vec::new(),
    }
}

fn temp_error(source: std::io::Error) -> LogError {
    LogError::Io {
        path: std::env::temp_dir(),
        source,
    }
}

#[cfg(test)]
mod tests;
