//! [`Handle`]: a handle to the live projection and the service's health, with typed
//! queries (the way mini-redis's `Db` is a handle to shared state). The locks are
//! private: the projector writes through the crate's own methods; everyone else calls a
//! query, and no query costs O(history) under the lock the fold writes with — each is
//! indexed, or (the status digest) computed at most once per position, off the request
//! path.

use crate::digest::DigestInput;
use crate::health::Health;
use crate::histogram::Histogram;
use crate::leadership::{Leadership, Replication};
use crate::projection::Projection;
use ledger_core::document::{BalanceRow, ClaimRow, Counts, PayoutRow};
use ledger_core::ledger::{ProgramView, Statement};
use ledger_core::replay::Rejection;
use ledger_core::{EventType, Replay};
use ledger_log::PayoutCanon;
use ledger_log::{Archive, LogError, LogReader, LookupStore, PayoutsOf};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// What the service reports of itself (`status` on NATS, `/v1/status` over HTTP).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Last log position folded into the projection.
    pub position: u64,
    pub arrival: u64,
    /// The replay digest of the projection at `digest_position`: the latest computed.
    /// It is computed at most once a position, on a thread of its own and only when
    /// asked for, so it trails `position` while events are folded; `None` until the
    /// first one is computed.
    pub digest: Option<String>,
    /// The log position `digest` belongs to.
    pub digest_position: Option<u64>,
    pub events: Counts,
    pub outbox_backlog: usize,
    pub checkpoint_seq: u64,
    /// Messages the consumer has not yet delivered (consumer lag), when known.
    pub consumer_pending: Option<u64>,
    /// The fault in force (storage, publishing, a stalled outbox), until it clears.
    pub fault: Option<String>,
    /// Active, standby or sole; this replica's id and the lease holder.
    #[serde(flatten)]
    pub replication: Replication,
}

/// One page of a list, and the cursor of the next (`None`: this was the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<usize>,
}

/// Which payouts to list.
#[derive(Debug, Clone, Default)]
pub struct PayoutFilter {
    pub partner: Option<String>,
    pub program: Option<String>,
}

/// One entry's statement with the payouts it received.
#[derive(Debug, Clone)]
pub struct EntryStatement {
    pub statement: Statement,
    pub payouts: Vec<PayoutRow>,
}

/// A leaderboard row: a partner's place in a program's period by basis.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderboardRow {
    pub rank: usize,
    pub balance: BalanceRow,
}

/// What `/metrics` shows, read at one moment.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub position: u64,
    pub checkpoint_seq: u64,
    pub counts: Counts,
    /// Applied, refused and duplicate inputs per event type (`None`: unreadable type).
    pub by_type: Vec<(Option<EventType>, [u64; 3])>,
    pub refused_by_code: Vec<(&'static str, u64)>,
    pub payouts: u64,
    pub outbox_backlog: usize,
    pub consumer_pending: Option<u64>,
    pub fault: Option<String>,
    pub batch_flush: Histogram,
}

/// Why a past state could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum HistoricError {
    #[error("this handle has no data directory to rebuild a past state from")]
    NoDataDirectory,
    #[error("cannot rebuild from the log")]
    Log(#[from] LogError),
    #[error("the backup failed")]
    Backup(#[source] ledger_log::backup::BackupError),
}

/// Computes the digest of the projection's current position into the cache (unless a
/// newer one is there). Under the read lock only the state's rows are copied
/// ([`crate::digest`]); the payouts new since the last digest are read from the archive
/// and the earlier ones from the digest's own file, after it. One computation at a time
/// (the file's lock). A failure is logged and leaves the previous digest in place.
fn compute_digest(inner: &Inner) {
    let mut canon = inner.canon.lock().unwrap_or_else(|p| p.into_inner());
    if canon.is_none() {
        match PayoutCanon::new() {
            Ok(c) => *canon = Some(c),
            Err(e) => {
                tracing::warn!("no status digest: its payout file cannot be created: {e}");
                return;
            }
        }
    }
    let Some(c) = canon.as_mut() else {
        return;
    };
    let (position, input) = {
        let p = inner.projection.read().unwrap_or_else(|p| p.into_inner());
        (p.seq, DigestInput::of(&p.replay))
    };
    let digest = match crate::digest::digest(c, input, &inner.archive) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("status digest of position {position} not computed: {e}");
            *canon = None;
            return;
        }
    };
    let mut cache = inner.digest.lock().unwrap_or_else(|p| p.into_inner());
    if cache.computed.as_ref().is_none_or(|c| c.0 < position) {
        cache.computed = Some((position, digest));
    }
}

/// A handle to the projection; cheap to clone, shared by every reader.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    projection: RwLock<Projection>,
    /// Its own lock: the loops report without waiting for the fold (see [`Health`]).
    health: Mutex<Health>,
    /// The last position folded, for waiters (`min_position`).
    position: tokio::sync::watch::Sender<u64>,
    /// The upstream position (stream sequence) of the last message folded, for waiters
    /// on an event just published (`POST /v1/events?wait=true`).
    source_position: tokio::sync::watch::Sender<u64>,
    /// What `status` shows of the projection, copied after every fold step: under a
    /// lock of its own, so a status never waits for the fold's lock (nor for a writer
    /// queued behind a long read of it, such as the digest's copy).
    summary: Mutex<Summary>,
    /// The status digest and the position it is of: computed at most once a position,
    /// off the request path.
    digest: Mutex<DigestCache>,
    /// The canonical payouts the last digest hashed, in a file (`None` until the first
    /// digest, or after the file failed).
    canon: Mutex<Option<PayoutCanon>>,
    /// A reader of the data directory, for past states.
    log: Option<LogReader>,
    /// The projection's history archive (archived history never changes: read without
    /// the projection's lock).
    archive: Archive,
    /// Whether this process may publish (see [`Leadership`]).
    leadership: Leadership,
    /// One simulation or past report at a time ([`crate::planning`]).
    heavy: crate::planning::HeavyGate,
}

/// The projection's position, counts and checkpoint, as of its last fold step.
#[derive(Debug, Clone, Copy)]
struct Summary {
    position: u64,
    arrival: u64,
    checkpoint_seq: u64,
    events: Counts,
}

impl Summary {
    fn of(p: &Projection) -> Summary {
        Summary {
            position: p.seq,
            arrival: p.arrival,
            checkpoint_seq: p.checkpoint_seq,
            events: p.replay.counts(),
        }
    }
}

/// The latest status digest, and whether a thread is computing the next.
#[derive(Default)]
struct DigestCache {
    computed: Option<(u64, String)>,
    computing: bool,
    /// No computation starts before this: a digest reads the whole state, and a busy
    /// monitor must not turn it into a core's worth of work beside the fold.
    not_before: Option<Instant>,
}

/// A digest computation waits this many times as long as the previous one took, after
/// it: at most ~10% of a core goes to status digests however often status is asked.
const DIGEST_PAUSE_FACTOR: u32 = 9;

/// How long a backlog may stand still before it is a fault, for handles built outside
/// a service (tests, tools), which have no publisher.
const NO_STALL_ALARM: Duration = Duration::from_secs(u64::MAX / 4);

impl Handle {
    pub(crate) fn new(
        projection: Projection,
        log: Option<LogReader>,
        stall_after: Duration,
    ) -> Handle {
        let (position, _) = tokio::sync::watch::channel(projection.seq);
        let source_position = tokio::sync::watch::Sender::new(
            log.as_ref()
                .and_then(|l| l.stored_head().ok())
                .map_or(0, |h| h.source_position),
        );
        let summary = Mutex::new(Summary::of(&projection));
        let archive = projection.archive.clone();
        let handle = Handle {
            inner: Arc::new(Inner {
                summary,
                projection: RwLock::new(projection),
                health: Mutex::new(Health::new(stall_after)),
                position,
                source_position,
                digest: Mutex::new(DigestCache::default()),
                canon: Mutex::new(None),
                log,
                archive,
                leadership: Leadership::sole(),
                heavy: Default::default(),
            }),
        };
        // The first status then finds a digest ready, or on its way.
        handle.refresh_digest();
        handle
    }

    /// A handle on a fold made elsewhere (a replay in memory, a test), at log position
    /// `seq`; with `log`, past states can be rebuilt from that directory. The history
    /// the replay holds moves to a temporary archive.
    pub fn from_replay(
        replay: Replay,
        seq: u64,
        arrival: u64,
        log: Option<LogReader>,
    ) -> Result<Handle, LogError> {
        let projection = Projection::new(replay, seq, arrival, 0, Archive::temporary()?, None)?;
        Ok(Handle::new(projection, log, NO_STALL_ALARM))
    }

    /// Whether this process may publish, and its role among the replicas.
    pub fn leadership(&self) -> &Leadership {
        &self.inner.leadership
    }

    /// The head of the log as last stored (with the inputs around it): what an export or
    /// a backup started now can include in full.
    pub fn stored_head(&self) -> Result<ledger_log::layout::Head, HistoricError> {
        let log = self.log_reader().ok_or(HistoricError::NoDataDirectory)?;
        Ok(log.stored_head()?)
    }

    /// The log's records `1 ..= through` as `incentive-ledger export` prints them
    /// (byte-identical), handed to `out` a buffer of whole lines at a time; `out`
    /// returning false stops it. Reads the data directory, never the projection: call
    /// it from a blocking thread.
    pub fn export(
        &self,
        through: u64,
        with_chain: bool,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), HistoricError> {
        let log = self.log_reader().ok_or(HistoricError::NoDataDirectory)?;
        Ok(log.export(1, through, with_chain, out)?)
    }

    /// Writes a backup of the data directory up to `head` (one [`Handle::stored_head`]
    /// gave) to `out` ([`ledger_log::backup`]): consistent while the log goes on.
    pub fn backup(
        &self,
        head: ledger_log::layout::Head,
        out: &mut dyn std::io::Write,
    ) -> Result<ledger_log::backup::Summary, HistoricError> {
        let log = self.log_reader().ok_or(HistoricError::NoDataDirectory)?;
        ledger_log::backup::write_backup_through(log, head, out).map_err(HistoricError::Backup)
    }

    /// Reports the message broker unreachable (`Some(why)`) or reachable again (`None`):
    /// `/health/ready` and `status` say so while it lasts.
    pub fn transport_fault(&self, why: Option<String>) {
        let mut h = self.health();
        match why {
            Some(message) => h.set_fault(crate::health::FaultSource::Transport, message),
            None => h.clear_fault(crate::health::FaultSource::Transport),
        }
    }

    /// The data directory's log, where the handle has one (past states, simulations).
    pub(crate) fn log_reader(&self) -> Option<&LogReader> {
        self.inner.log.as_ref()
    }

    pub(crate) fn heavy_gate(&self) -> &crate::planning::HeavyGate {
        &self.inner.heavy
    }

    /// The history archive the queries read.
    pub(crate) fn archive(&self) -> &Archive {
        &self.inner.archive
    }

    /// Makes the next `n` writes to the history archive fail: for tests of the fold's
    /// hold-and-retry.
    #[doc(hidden)]
    pub fn fail_next_archive_writes(&self, n: u64) {
        self.inner.archive.fail_next_writes(n);
    }

    // ----- for the service's own loops -------------------------------------------------

    /// The projection for writing. A panic while holding the lock leaves consistent data
    /// (it is only read after).
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Projection> {
        self.inner
            .projection
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Projection> {
        self.inner
            .projection
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The health report for reading or writing; a panic while holding it leaves it
    /// usable.
    pub(crate) fn health(&self) -> MutexGuard<'_, Health> {
        self.inner.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the projection's position, counts and checkpoint (after a fold step or
    /// a checkpoint), and tells waiters the fold reached its position.
    pub(crate) fn advanced(&self, p: &Projection) {
        *self.inner.summary.lock().unwrap_or_else(|e| e.into_inner()) = Summary::of(p);
        self.inner.position.send_replace(p.seq);
    }

    /// Holds a read of the projection, as the projector does while it encodes a
    /// checkpoint: for tests that check queries go on meanwhile.
    #[doc(hidden)]
    pub fn hold_read(&self) -> impl Drop + '_ {
        self.read()
    }

    // ----- queries ----------------------------------------------------------------------

    /// The last log position folded.
    pub fn position(&self) -> u64 {
        *self.inner.position.borrow()
    }

    /// The upstream position (stream sequence) of the last message folded: every
    /// message of the source up to it is in the log and folded (or quarantined).
    pub fn source_position(&self) -> u64 {
        *self.inner.source_position.borrow()
    }

    /// The fold has taken every message of the source up to `position`.
    pub(crate) fn source_folded(&self, position: u64) {
        self.inner.source_position.send_if_modified(|p| {
            let newer = position > *p;
            *p = (*p).max(position);
            newer
        });
    }

    /// Waits until the fold has taken the source's message at `position`, at most
    /// `limit`; whether it did.
    pub async fn wait_for_source(&self, position: u64, limit: Duration) -> bool {
        let mut rx = self.inner.source_position.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|&p| p >= position)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Waits until the fold has reached `position`, at most `limit`; whether it did.
    pub async fn wait_for_position(&self, position: u64, limit: Duration) -> bool {
        let mut rx = self.inner.position.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|&p| p >= position)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// The fault in force, if any (what `/health/ready` answers).
    pub fn fault(&self) -> Option<String> {
        self.health().fault(Instant::now())
    }

    /// The service's status, at O(1) cost: the digest is the latest computed, with the
    /// position it belongs to. If it is not of the current position, a thread is
    /// started to compute that one (unless one is at work, or the last one ended less
    /// than [`DIGEST_PAUSE_FACTOR`] times its duration ago), which a later call shows.
    pub fn status(&self) -> Status {
        let status = self.status_with_cached_digest();
        if status.digest_position != Some(status.position) {
            self.refresh_digest();
        }
        status
    }

    /// The status with the digest of the current position, computed here if it is not
    /// yet (seconds at millions of events): for a final status, and tools that need it.
    pub fn status_exact(&self) -> Status {
        let status = self.status_with_cached_digest();
        if status.digest_position == Some(status.position) {
            return status;
        }
        compute_digest(&self.inner);
        self.status_with_cached_digest()
    }

    fn status_with_cached_digest(&self) -> Status {
        let Summary {
            position,
            arrival,
            checkpoint_seq,
            events,
        } = *self.inner.summary.lock().unwrap_or_else(|e| e.into_inner());
        let computed = self.digest_cache().computed.clone();
        let h = self.health();
        Status {
            position,
            arrival,
            digest_position: computed.as_ref().map(|c| c.0),
            digest: computed.map(|c| c.1),
            events,
            outbox_backlog: h.outbox_backlog,
            checkpoint_seq,
            consumer_pending: h.consumer_pending,
            fault: h.fault(Instant::now()),
            replication: self.inner.leadership.replication(),
        }
    }

    fn digest_cache(&self) -> MutexGuard<'_, DigestCache> {
        self.inner.digest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a thread computing the digest of the current position, unless one is
    /// at work already.
    fn refresh_digest(&self) {
        {
            let mut cache = self.digest_cache();
            if cache.computing || cache.not_before.is_some_and(|t| Instant::now() < t) {
                return;
            }
            cache.computing = true;
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("status-digest".into())
            .spawn(move || {
                let started = Instant::now();
                compute_digest(&inner);
                let took = started.elapsed();
                let mut cache = inner.digest.lock().unwrap_or_else(|p| p.into_inner());
                cache.computing = false;
                cache.not_before = Some(Instant::now() + took * DIGEST_PAUSE_FACTOR);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the status digest thread: {e}");
            self.digest_cache().computing = false;
        }
    }

    /// One partner's balances (every program and period), in document order.
    pub fn partner_balances(&self, partner_id: &str) -> Vec<BalanceRow> {
        let p = self.read();
        let balances = p.replay.ledger().partner_balances(partner_id);
        balances.iter().map(BalanceRow::from).collect()
    }

    /// The statement of one entry, with the payouts it received: the entry as it
    /// stands, its journal lines and payouts read from the archive up to the same point.
    pub fn statement(
        &self,
        partner_id: &str,
        program_id: &str,
        period: &str,
    ) -> Result<Option<EntryStatement>, LogError> {
        let (statement, issued) = {
            let p = self.read();
            let statement = p.replay.ledger().statement(partner_id, program_id, period);
            (statement, p.replay.payouts_issued())
        };
        let Some(mut statement) = statement else {
            return Ok(None);
        };
        let archive = self.archive();
        // The entry's own label (the query's may be written otherwise).
        let label = statement.balance.period.clone();
        let mut lines = archive.journal(partner_id, program_id, &label, statement.first_line)?;
        lines.append(&mut statement.lines);
        statement.lines = lines;
        statement.first_line = 0;
        let of = PayoutsOf::Entry {
            partner: partner_id,
            program: program_id,
            period: &label,
        };
        let mut payouts = Vec::new();
        for i in archive.payout_indexes(of, 0, usize::MAX)? {
            if i >= issued {
                break;
            }
            payouts.extend(archive.payout(i)?.as_ref().map(PayoutRow::from));
        }
        Ok(Some(EntryStatement { statement, payouts }))
    }

    pub fn claim(&self, claim_id: &str) -> Option<ClaimRow> {
        let p = self.read();
        let claim = p.replay.ledger().claim(claim_id)?;
        Some(ClaimRow::from(&claim))
    }

    /// Claims by claim id: one partner's or everyone's, of one status (`pending`,
    /// `approved`, `denied`, `rejected`) or any; at most `limit`.
    pub fn claims(
        &self,
        partner_id: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Vec<ClaimRow> {
        let p = self.read();
        p.replay
            .ledger()
            .claims_iter()
            .filter(|c| partner_id.is_none_or(|id| c.partner_id == id))
            .map(|c| ClaimRow::from(&c))
            .filter(|c| status.is_none_or(|s| c.status == s))
            .take(limit)
            .collect()
    }

    /// Payouts in issue order from cursor `after` (an issue index), at most `limit`; a
    /// partner or program filter reads that partner's (or program's) payouts only,
    /// through the archive's indexes.
    pub fn payouts(
        &self,
        filter: &PayoutFilter,
        after: usize,
        limit: usize,
    ) -> Result<Page<PayoutRow>, LogError> {
        assert!(limit > 0, "a page holds at least one item");
        let issued = self.read().replay.payouts_issued();
        let archive = self.archive();
        let after = after as u64;
        let index = match (&filter.partner, &filter.program) {
            (Some(partner), _) => Some(PayoutsOf::Partner(partner)),
            (None, Some(program)) => Some(PayoutsOf::Program(program)),
            (None, None) => None,
        };
        let Some(index) = index else {
            let to = issued.min(after.saturating_add(limit as u64));
            let items = archive.payouts(after.min(to), to)?;
            return Ok(Page {
                items: items.iter().map(PayoutRow::from).collect(),
                next: (to < issued).then_some(to as usize),
            });
        };
        let fits = |x: &ledger_core::Payout| {
            filter
                .program
                .as_ref()
                .is_none_or(|program| x.program_id == *program)
        };
        let mut items = Vec::new();
        let mut from = after;
        // Candidates are read a page at a time; each loop reads at least one, and stops
        // at the end of the index or at the payouts issued when the query began.
        'pages: loop {
            let candidates = archive.payout_indexes(index, from, limit + 1)?;
            let Some(&last) = candidates.last() else {
                break;
            };
            for i in candidates {
                if i >= issued {
                    break 'pages;
                }
                let Some(x) = archive.payout(i)? else {
                    break 'pages;
                };
                if !fits(&x) {
                    continue;
                }
                if items.len() == limit {
                    return Ok(Page {
                        items,
                        next: Some(i as usize),
                    });
                }
                items.push(PayoutRow::from(&x));
            }
            from = last + 1;
        }
        Ok(Page { items, next: None })
    }

    /// Refusals in arrival order from cursor `after`, at most `limit`.
    pub fn rejections(&self, after: usize, limit: usize) -> Result<Page<Rejection>, LogError> {
        assert!(limit > 0, "a page holds at least one item");
        let recorded = self.read().replay.rejections_recorded();
        let after = after as u64;
        let take = recorded.saturating_sub(after).min(limit as u64) as usize;
        let items = if take == 0 {
            Vec::new()
        } else {
            self.archive().rejections(after, take)?
        };
        let end = after + items.len() as u64;
        Ok(Page {
            next: (end < recorded).then_some(end as usize),
            items,
        })
    }

    /// Every program, by program_id.
    pub fn programs(&self) -> Vec<ProgramView> {
        self.read().replay.ledger().programs()
    }

    pub fn program(&self, program_id: &str) -> Option<ProgramView> {
        self.programs()
            .into_iter()
            .find(|v| v.current.program_id == program_id)
    }

    /// Partners of a program's period ranked by basis (highest first), ties by partner
    /// id; `None` if there is no such program.
    pub fn leaderboard(&self, program_id: &str, period: &str) -> Option<Vec<LeaderboardRow>> {
        let mut rows = self
            .read()
            .replay
            .ledger()
            .period_balances(program_id, period)?;
        rows.sort_by(|a, b| {
            b.basis
                .cmp(&a.basis)
                .then_with(|| a.partner_id.cmp(&b.partner_id))
        });
        Some(
            rows.iter()
                .enumerate()
                .map(|(i, b)| LeaderboardRow {
                    rank: i + 1,
                    balance: BalanceRow::from(b),
                })
                .collect(),
        )
    }

    /// Counters and gauges for `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let p = self.read();
        let (position, checkpoint_seq, counts, payouts) = (
            p.seq,
            p.checkpoint_seq,
            p.replay.counts(),
            p.replay.payouts_issued(),
        );
        let by_type = p
            .replay
            .counts_by_type()
            .iter()
            .map(|(t, c)| (*t, *c))
            .collect();
        let mut refused_by_code: Vec<(&'static str, u64)> = p
            .replay
            .refused_by_code()
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect();
        drop(p);
        refused_by_code.sort_unstable();
        let h = self.health();
        Metrics {
            position,
            checkpoint_seq,
            counts,
            by_type,
            refused_by_code,
            payouts,
            outbox_backlog: h.outbox_backlog,
            consumer_pending: h.consumer_pending,
            fault: h.fault(Instant::now()),
            batch_flush: h.batch_flush.clone(),
        }
    }

    /// The state as it stood after log position `n`, rebuilt from the data directory
    /// (with journals, for statements) into a handle of its own. Costs a fold of the
    /// log up to `n` — for audits; call it from a blocking thread — but holds the
    /// working set only, as the live service does: its history goes to a temporary
    /// archive and its lookups to a temporary store, both removed with the handle.
    pub fn as_of(&self, n: u64) -> Result<Handle, HistoricError> {
        let log = self
            .inner
            .log
            .as_ref()
            .ok_or(HistoricError::NoDataDirectory)?;
        let store = Arc::new(LookupStore::temporary(None).map_err(|e| {
            LogError::Lookups(ledger_core::store::StoreError::new(
                "cannot create a temporary lookup store",
                e,
            ))
        })?);
        let archive = Archive::temporary()?;
        let rebuilt = ledger_log::history::fold_streaming(
            log,
            ledger_log::Bound::Seq(n),
            true,
            store.clone(),
            ledger_log::history::LOOKUPS_IN_MEMORY,
            &mut |drained| archive.write(&drained),
            &mut |_| {},
        )?;
        let projection = Projection::new(
            rebuilt.replay,
            rebuilt.seq,
            rebuilt.arrival,
            0,
            archive,
            Some(store),
        )?;
        Ok(Handle::new(projection, None, NO_STALL_ALARM))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> (Handle, Vec<ledger_core::Payout>) {
        let mut replay = Replay::new();
        for (i, line) in
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(3, 4000)).enumerate()
        {
            replay.push(line.as_bytes(), i as u64 + 1);
        }
        let payouts = replay.payouts().to_vec();
        (
            Handle::from_replay(replay, 4000, 4000, None).unwrap(),
            payouts,
        )
    }

    /// Paging through the indexes gives what a filter over every payout gives, in
    /// issue order, for every filter and page size.
    #[test]
    fn payout_pages_through_the_indexes_equal_a_scan_of_every_payout() {
        let (h, all) = handle();
        let partner = all[all.len() / 2].partner_id.to_string();
        let program = all[all.len() / 3].program_id.to_string();
        let filters = [
            PayoutFilter::default(),
            PayoutFilter {
                partner: Some(partner.clone()),
                program: None,
            },
            PayoutFilter {
                partner: None,
                program: Some(program.clone()),
            },
            PayoutFilter {
                partner: Some(partner),
                program: Some(program),
            },
            PayoutFilter {
                partner: Some("nobody".into()),
                program: None,
            },
        ];
        for filter in &filters {
            let expected: Vec<PayoutRow> = all
                .iter()
                .filter(|p| filter.partner.as_ref().is_none_or(|x| p.partner_id == *x))
                .filter(|p| filter.program.as_ref().is_none_or(|x| p.program_id == *x))
                .map(PayoutRow::from)
                .collect();
            for limit in [1, 7, 1000] {
                let mut got = Vec::new();
                let mut after = 0;
                for _ in 0..=all.len() {
                    let page = h.payouts(filter, after, limit).unwrap();
                    assert!(page.items.len() <= limit);
                    got.extend(page.items);
                    match page.next {
                        Some(n) => after = n,
                        None => break,
                    }
                }
                assert_eq!(got, expected, "{filter:?} limit {limit}");
            }
        }
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;
    use ledger_core::gen::{GenConfig, Generator};

    fn until_digest_at(handle: &Handle, position: u64) -> Status {
        for _ in 0..2000 {
            let s = handle.status();
            if s.digest_position == Some(position) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no digest of position {position}: {:?}", handle.status());
    }

    /// `status` never computes the digest itself: at a new position it answers the
    /// previous digest with the position that one belongs to, and a thread computes
    /// the new one, which a later call shows.
    #[test]
    fn status_answers_the_latest_computed_digest_and_its_position() {
        let lines: Vec<String> = Generator::new(GenConfig::new(4, 1500)).collect();
        let mut replay = Replay::new();
        for (i, l) in lines[..1000].iter().enumerate() {
            replay.push(l.as_bytes(), i as u64 + 1);
        }
        let first = replay.document().digest;
        let handle = Handle::from_replay(replay, 1000, 1000, None).unwrap();
        let s = until_digest_at(&handle, 1000);
        assert_eq!(s.digest.as_deref(), Some(first.as_str()));
        {
            let mut p = handle.write();
            for (i, l) in lines[1000..].iter().enumerate() {
                p.replay.push(l.as_bytes(), 1001 + i as u64);
            }
            p.seq = 1500;
            p.archive_new(&mut Vec::new()).unwrap();
            handle.advanced(&p);
        }
        let s = handle.status();
        assert_eq!(s.position, 1500);
        assert_eq!(
            s.digest_position,
            Some(1000),
            "the request did not compute it"
        );
        assert_eq!(s.digest.as_deref(), Some(first.as_str()));
        let expected = {
            let mut replay = Replay::new();
            for (i, l) in lines.iter().enumerate() {
                replay.push(l.as_bytes(), i as u64 + 1);
            }
            replay.document().digest
        };
        assert_ne!(expected, first);
        let s = until_digest_at(&handle, 1500);
        assert_eq!(s.digest, Some(expected.clone()));
        assert_eq!(handle.status_exact().digest, Some(expected));
    }
}
