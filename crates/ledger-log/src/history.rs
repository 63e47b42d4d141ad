//! Rebuilding the replay state from a data directory — whole, as of a log position, or
//! as of a time — optionally resuming from the checkpoint; and writing checkpoints.
//!
//! Inputs are replayed in arrival order: logged records through the fold, quarantined
//! inputs and exact duplicates through the bookkeeping. The result equals
//! `replay --events` over the same inputs in the same order.

use crate::archive::{Archive, Heads};
use crate::layout::{Duplicate, Quarantined};
use crate::log::{LogError, LogReader};
use crate::lookups::LookupStore;
use crate::runs::RunName;
use ledger_core::intake::IntakeRefusal;
use ledger_core::replay::Drained;
use ledger_core::Replay;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Which part of the history to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Everything the directory holds.
    All,
    /// As it stood after log position `seq` (and the inputs that arrived before it).
    Seq(u64),
    /// After the last input that arrived before this time (ns since the Unix epoch).
    Time(u64),
    /// Records through `seq` and the other inputs that arrived through `arrival` (a
    /// stored head: what a reader beside the appending process reads).
    Head { seq: u64, arrival: u64 },
}

/// The fold state rebuilt from a directory.
pub struct Rebuilt {
    pub replay: Replay,
    /// Last log position folded.
    pub seq: u64,
    /// Last arrival accounted for.
    pub arrival: u64,
    /// The checkpoint position this rebuild resumed from, if any.
    pub resumed_from: Option<u64>,
    /// Why a checkpoint could not be used, if one was there.
    pub warnings: Vec<String>,
}

/// A persisted fold state and the position it covers.
pub(crate) struct Checkpoint {
    seq: u64,
    arrival: u64,
    hash: [u8; 32],
    replay: Replay,
    /// Where the history archive stood at `seq`, when the fold's history went there.
    archive: Option<Heads>,
    /// The lookup store's runs below the state's recent lookups, when it has a store.
    lookups: Option<Vec<RunName>>,
}

/// The stores a fold state relies on beside itself: where its drained history went,
/// and where its lookups older than its recent tier are. A checkpoint names both.
#[derive(Clone, Default)]
pub struct Stores {
    pub archive: Option<Archive>,
    pub lookups: Option<Arc<LookupStore>>,
}

/// Names the layout of the encoded state: bump it whenever the fold state's fields
/// change, so an older checkpoint is refused (and the log replayed) rather than misread.
/// 07: programs keep their `budget` (SPEC v1.1). 08: the fold's lookups that grow with
/// the log (sale records, used ids, identities) in one recent tier, and the counts of
/// drained payouts and refusals (issue 15). 09: journals drained to the history
/// archive (each entry's count of lines taken, the entries with lines to take) and
/// refusals counted per code. 10: the history archive's heads after the state. 11: the
/// lookup store's runs after those. 12: the journal's pending entries, one per line in
/// the order written. 13: the journal as one list of lines in the order written, with
/// each entry's count of lines. 14: entries keep counted revenue and units, the
/// ledger its latest business date, refusals are counted per program (issue 17).
const CHECKPOINT_MAGIC: &[u8; 8] = b"ILCKPT14";

/// Bytes of the last checkpoint encoded in this process: the next one reserves about
/// that much at once, instead of growing its buffer by doubling (each step a copy of
/// ~100 MB at 1M events, and pages faulted in twice).
static LAST_CHECKPOINT_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// The stored form of a checkpoint: magic, position, arrival, chain hash, state, then the
/// SHA-256 of all that. This encodes all but the checksum, into one buffer.
pub(crate) fn frame_checkpoint_body(
    seq: u64,
    arrival: u64,
    hash: &[u8; 32],
    replay: &Replay,
    archive: Option<&Heads>,
    lookups: Option<&[RunName]>,
) -> Result<Vec<u8>, postcard::Error> {
    let hint = LAST_CHECKPOINT_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    let mut out = Vec::with_capacity(hint + hint / 8 + 4096);
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&arrival.to_be_bytes());
    out.extend_from_slice(hash);
    let out = postcard::to_extend(replay, out)?;
    let out = postcard::to_extend(&archive, out)?;
    let out = postcard::to_extend(&lookups, out)?;
    LAST_CHECKPOINT_BYTES.store(out.len(), std::sync::atomic::Ordering::Relaxed);
    Ok(out)
}

/// Appends the checksum to a body from [`frame_checkpoint_body`].
pub(crate) fn seal_checkpoint(mut body: Vec<u8>) -> Vec<u8> {
    let sum: [u8; 32] = Sha256::digest(&body).into();
    body.extend_from_slice(&sum);
    body
}

pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.len() < 8 + 8 + 8 + 32 + 32 || &bytes[..8] != CHECKPOINT_MAGIC {
        return Err("the checkpoint is of another format".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    let actual: [u8; 32] = Sha256::digest(body).into();
    if actual.as_slice() != sum {
        return Err("the checkpoint's checksum does not match (damaged)".into());
    }
    let n = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&body[24..56]);
    let (mut replay, rest): (Replay, _) = postcard::take_from_bytes(&body[56..])
        .map_err(|e| format!("the checkpoint state does not decode: {e}"))?;
    let (archive, rest): (Option<Heads>, _) = postcard::take_from_bytes(rest)
        .map_err(|e| format!("the checkpoint's archive heads do not decode: {e}"))?;
    let lookups: Option<Vec<RunName>> = postcard::from_bytes(rest)
        .map_err(|e| format!("the checkpoint's lookup runs do not decode: {e}"))?;
    replay.restore_derived();
    Ok(Checkpoint {
        seq: n(8),
        arrival: n(16),
        hash,
        replay,
        archive,
        lookups,
    })
}

/// A checkpoint payload's position, arrival, state and archive heads, if it decodes
/// (for `verify`).
pub(crate) fn peek_checkpoint(bytes: &[u8]) -> Option<(u64, u64, Replay, Option<Heads>)> {
    decode_checkpoint(bytes)
        .ok()
        .map(|cp| (cp.seq, cp.arrival, cp.replay, cp.archive))
}

/// Whether the directory's checkpoint is the service's (its history in the archive):
/// a tool that folded the log into memory must not replace it with its own.
pub fn checkpoint_names_archive(log: &LogReader) -> Result<bool, LogError> {
    Ok(log
        .load_checkpoint()?
        .and_then(|bytes| decode_checkpoint(&bytes).ok())
        .is_some_and(|cp| cp.archive.is_some()))
}

/// Persists `replay` as covering log position `seq` and arrivals up to `arrival`, with
/// `archive` where its drained history is (synced before the checkpoint is written).
pub fn save_checkpoint(
    log: &LogReader,
    replay: &Replay,
    seq: u64,
    arrival: u64,
    stores: &Stores,
) -> Result<(), LogError> {
    match prepare_checkpoint(log, replay, seq, arrival, stores)? {
        Some(pending) => pending.write(log),
        None => Ok(()),
    }
}

/// A checkpoint encoded but not yet written: the part that needs the fold state is done,
/// so the state can move on while this is checksummed and stored (on another thread).
pub struct PendingCheckpoint {
    pub seq: u64,
    /// The stored form without its checksum.
    body: Vec<u8>,
    /// The stores the checkpoint names: the archive is synced before it is written,
    /// and the lookup runs it does not name are deleted after.
    stores: Stores,
    runs: Option<Vec<RunName>>,
}

/// Encodes `replay` as covering `seq` / `arrival`; `None` if the log has no record
/// `seq` (nothing to anchor the checkpoint to).
pub fn prepare_checkpoint(
    log: &LogReader,
    replay: &Replay,
    seq: u64,
    arrival: u64,
    stores: &Stores,
) -> Result<Option<PendingCheckpoint>, LogError> {
    let hash = match seq {
        0 => [0u8; 32],
        _ => match log.record_at(seq)? {
            Some(r) => r.hash,
            None => return Ok(None),
        },
    };
    let heads = stores.archive.as_ref().map(Archive::state);
    let runs = stores.lookups.as_ref().map(|l| l.manifest());
    assert_eq!(
        replay.has_backing(),
        runs.is_some(),
        "a checkpoint names the lookup store its state reads below its recent lookups"
    );
    assert!(
        heads.as_ref().map_or(replay.holds_all_history(), |h| {
            (h.payouts, h.refusals) == (replay.payouts_issued(), replay.rejections_recorded())
        }),
        "a checkpoint's history is in it, or all in its archive"
    );
    let mut pending =
        PendingCheckpoint::encode(seq, arrival, hash, replay, heads.as_ref(), runs.as_deref())
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
    pending.stores = stores.clone();
    pending.runs = runs;
    Ok(Some(pending))
}

impl PendingCheckpoint {
    fn encode(
        seq: u64,
        arrival: u64,
        hash: [u8; 32],
        replay: &Replay,
        archive: Option<&Heads>,
        runs: Option<&[RunName]>,
    ) -> Result<PendingCheckpoint, postcard::Error> {
        Ok(PendingCheckpoint {
            seq,
            body: frame_checkpoint_body(seq, arrival, &hash, replay, archive, runs)?,
            stores: Stores::default(),
            runs: None,
        })
    }

    /// The checkpoint as stored (checksummed).
    fn framed(self) -> Vec<u8> {
        seal_checkpoint(self.body)
    }

    /// Checksums and stores the checkpoint (durable when this returns). The history
    /// archive is synced first: it must reach the checkpoint on disk before a restart
    /// can resume from it.
    pub fn write(self, log: &LogReader) -> Result<(), LogError> {
        if let Some(archive) = &self.stores.archive {
            archive.sync()?;
        }
        let (lookups, runs) = (self.stores.lookups.clone(), self.runs.clone());
        log.save_checkpoint(&self.framed())?;
        if let (Some(lookups), Some(runs)) = (lookups, runs) {
            lookups.collect(&runs);
        }
        Ok(())
    }
}

/// Limits of a rebuild: records up to `max_seq`, other inputs up to `max_arrival`, both
/// only if they arrived before `before_ns`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_seq: u64,
    pub max_arrival: u64,
    pub before_ns: u64,
}

impl Limits {
    fn of(log: &LogReader, bound: Bound) -> Result<Limits, LogError> {
        Ok(match bound {
            Bound::All => Limits {
                max_seq: u64::MAX,
                max_arrival: u64::MAX,
                before_ns: u64::MAX,
            },
            Bound::Seq(0) => Limits {
                max_seq: 0,
                max_arrival: 0,
                before_ns: u64::MAX,
            },
            Bound::Seq(n) => {
                // Beyond the end: everything.
                let arrival = log.record_at(n)?.map_or(u64::MAX, |r| r.arrival);
                Limits {
                    max_seq: n,
                    max_arrival: arrival,
                    before_ns: u64::MAX,
                }
            }
            Bound::Time(t) => Limits {
                max_seq: u64::MAX,
                max_arrival: u64::MAX,
                before_ns: t,
            },
            Bound::Head { seq, arrival } => Limits {
                max_seq: seq,
                max_arrival: arrival,
                before_ns: u64::MAX,
            },
        })
    }
}

enum Extra {
    Quarantined(Quarantined),
    Duplicate(Duplicate),
}

impl Extra {
    fn arrival(&self) -> u64 {
        match self {
            Extra::Quarantined(q) => q.arrival,
            Extra::Duplicate(d) => d.arrival,
        }
    }

    fn time_ns(&self) -> u64 {
        match self {
            Extra::Quarantined(q) => q.time_ns,
            Extra::Duplicate(d) => d.time_ns,
        }
    }

    fn apply(self, replay: &mut Replay) {
        match self {
            Extra::Quarantined(q) => {
                replay.record_quarantined(
                    IntakeRefusal {
                        code: q.code,
                        message: q.message,
                        identity: q.identity,
                        event_type: q.event_type,
                    },
                    q.line,
                );
            }
            Extra::Duplicate(d) => {
                replay.record_duplicate(Some(d.event_type));
            }
        }
    }
}

/// Rebuilds the fold state of `log` within `bound`. With `use_checkpoint`, a valid
/// checkpoint inside the bound is resumed from; an unusable one is reported in
/// `warnings` and a full replay is done instead. `progress` is called with each folded
/// log position.
pub fn rebuild(
    log: &LogReader,
    bound: Bound,
    use_checkpoint: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Rebuilt, LogError> {
    rebuild_inner(log, bound, use_checkpoint, false, progress)
}

/// As [`rebuild`], with per-entry journals (for statements): a checkpoint written
/// without journals is not used.
pub fn rebuild_with_journal(
    log: &LogReader,
    bound: Bound,
    progress: &mut dyn FnMut(u64),
) -> Result<Rebuilt, LogError> {
    rebuild_inner(log, bound, true, true, progress)
}

fn rebuild_inner(
    log: &LogReader,
    bound: Bound,
    use_checkpoint: bool,
    journal: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Rebuilt, LogError> {
    let limits = Limits::of(log, bound)?;
    let mut warnings = Vec::new();
    let mut start = None;
    if use_checkpoint && limits.before_ns == u64::MAX {
        start = usable_checkpoint(log, journal, &mut warnings)?
            .filter(|cp| cp.seq <= limits.max_seq && cp.arrival <= limits.max_arrival);
        // A checkpoint of the service holds the working set only; its payouts and
        // refusals are read back from the archive it names. (Its journals are not:
        // a rebuild with journals folds from the start instead.)
        if let Some(cp) = start.take() {
            start = with_history(log, cp, journal)?;
        }
    }
    let mut each = |_: &mut Replay, seq| {
        progress(seq);
        Ok(())
    };
    fold_from(log, Start::of(start, journal), limits, warnings, &mut each)
}

/// Where a rebuild starts: a checkpoint's state and position, or an empty state (with
/// journals if asked) at the start of the log.
struct Start {
    replay: Replay,
    seq: u64,
    arrival: u64,
    resumed_from: Option<u64>,
}

impl Start {
    fn of(checkpoint: Option<Checkpoint>, journal: bool) -> Start {
        match checkpoint {
            Some(cp) => Start {
                replay: cp.replay,
                seq: cp.seq,
                arrival: cp.arrival,
                resumed_from: Some(cp.seq),
            },
            None => {
                let mut replay = Replay::new();
                if journal {
                    replay.enable_journal();
                }
                Start {
                    replay,
                    seq: 0,
                    arrival: 0,
                    resumed_from: None,
                }
            }
        }
    }
}

/// Folds the log on from `start` within `limits` (`each` after every record).
fn fold_from(
    log: &LogReader,
    start: Start,
    limits: Limits,
    warnings: Vec<String>,
    each: &mut dyn FnMut(&mut Replay, u64) -> Result<(), LogError>,
) -> Result<Rebuilt, LogError> {
    let mut replay = start.replay;
    let (seq, arrival) = fold_range(log, &mut replay, start.seq, start.arrival, limits, each)?;
    Ok(Rebuilt {
        replay,
        seq,
        arrival,
        resumed_from: start.resumed_from,
        warnings,
    })
}

/// The stored checkpoint, if there is one that decodes and anchors to the log (and,
/// with `journal`, holds statement journals); why not, in `warnings`.
fn usable_checkpoint(
    log: &LogReader,
    journal: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Checkpoint>, LogError> {
    let Some(bytes) = log.load_checkpoint()? else {
        return Ok(None);
    };
    // The next checkpoint will be about this size.
    LAST_CHECKPOINT_BYTES.fetch_max(bytes.len(), std::sync::atomic::Ordering::Relaxed);
    let cp = match decode_checkpoint(&bytes) {
        Ok(cp) => cp,
        Err(why) => {
            warnings.push(format!(
                "checkpoint not used: {why}; replaying the whole log"
            ));
            return Ok(None);
        }
    };
    let record_hash = match cp.seq {
        0 => Some([0u8; 32]),
        s => log.record_at(s)?.map(|r| r.hash),
    };
    if record_hash != Some(cp.hash) {
        warnings.push(format!(
            "checkpoint not used: it covers position {} but the log's record there differs or is missing; replaying the whole log",
            cp.seq
        ));
        return Ok(None);
    }
    if journal && !cp.replay.ledger().journal_enabled() {
        warnings.push(
            "checkpoint not used: it holds no statement journals; replaying the whole log".into(),
        );
        return Ok(None);
    }
    Ok(Some(cp))
}

/// `cp` holding all its history, its lookup store attached: as it is, or with the
/// payouts and refusals of the archive it names read back; `None` if it cannot (no
/// archive, journals wanted, or its lookup runs unreadable).
fn with_history(
    log: &LogReader,
    mut cp: Checkpoint,
    journal: bool,
) -> Result<Option<Checkpoint>, LogError> {
    if let Some(runs) = &cp.lookups {
        match LookupStore::open_dir(log.path(), runs) {
            Ok(store) => cp.replay.attach_backing(Arc::new(store)),
            Err(_) => return Ok(None),
        }
    }
    if cp.replay.holds_all_history() {
        return Ok(Some(cp));
    }
    let Some(heads) = cp.archive.as_ref().filter(|_| !journal) else {
        return Ok(None);
    };
    let Some(archive) = Archive::read_only(log.path(), heads)? else {
        return Ok(None);
    };
    let payouts = archive.payouts(0, heads.payouts)?;
    let rejections = archive.rejections(0, heads.refusals as usize)?;
    if (payouts.len() as u64, rejections.len() as u64)
        != (cp.replay.payouts_issued(), cp.replay.rejections_recorded())
    {
        return Ok(None);
    }
    cp.replay.restore_history(payouts, rejections);
    Ok(Some(cp))
}

/// Records folded between two writes of drained history to the archive during a
/// rebuild (and between two comparisons in `verify`): bounds the history held in memory.
pub(crate) const ARCHIVE_EVERY: u64 = 4096;

/// Lookups the live fold holds in memory before it writes them to its store as a run,
/// unless configured otherwise.
pub const LOOKUPS_IN_MEMORY: usize = 200_000;

/// Moves the fold's recent lookups to `store` as one run; on a write error they stay
/// in memory (for the next try) and the error is returned.
pub fn flush_lookups(replay: &mut Replay, store: &LookupStore) -> Result<(), LogError> {
    let flush = replay.take_recent();
    match store.write(&flush) {
        Ok(()) => {
            replay.flushed();
            Ok(())
        }
        Err(e) => {
            replay.unflush();
            Err(LogError::Lookups(ledger_core::store::StoreError::new(
                "writing the lookup store failed",
                e,
            )))
        }
    }
}

/// Folds the log from its start up to `bound`, without a checkpoint (with statement
/// journals if `journal`), holding the working set only: lookups beyond
/// `lookups_in_memory` go to `store` (a temporary one: nothing is written into the
/// directory), and the history is handed to `sink` in order as it is drained (every
/// [`ARCHIVE_EVERY`] records, and the rest at the end) — what `replay --data-dir`
/// streams its document from, and what an `as_of_seq` query answers from.
pub fn fold_streaming(
    log: &LogReader,
    bound: Bound,
    journal: bool,
    store: Arc<LookupStore>,
    lookups_in_memory: usize,
    sink: &mut dyn FnMut(Drained) -> Result<(), LogError>,
    progress: &mut dyn FnMut(u64),
) -> Result<Rebuilt, LogError> {
    let limits = Limits::of(log, bound)?;
    let mut start = Start::of(None, journal);
    start.replay.attach_backing(store.clone());
    let mut each = |replay: &mut Replay, seq| {
        progress(seq);
        if seq % ARCHIVE_EVERY == 0 {
            sink(replay.drain_history())?;
        }
        if seq % 256 == 0 && replay.lookups_in_memory() >= lookups_in_memory {
            flush_lookups(replay, &store)?;
        }
        Ok(())
    };
    let mut rebuilt = fold_from(log, start, limits, Vec::new(), &mut each)?;
    sink(rebuilt.replay.drain_history())?;
    Ok(rebuilt)
}

/// Rebuilds the live fold of the whole directory (with journals) into its working set:
/// its history goes to the directory's archive and its lookups, beyond
/// `lookups_in_memory`, to the directory's lookup store — both returned. From the
/// checkpoint when the archive reaches at least as far as it says (the files are cut
/// back to its lengths; folding on appends the same history) and the lookup runs it
/// names are there and sound; else from the start of the log, into an emptied archive
/// and store, checkpointed at the end.
pub fn rebuild_archived(
    log: &LogReader,
    lookups_in_memory: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(Rebuilt, Stores), LogError> {
    let mut warnings = Vec::new();
    let mut start = None;
    let mut stores = Stores::default();
    if let Some(cp) = usable_checkpoint(log, true, &mut warnings)? {
        match resume_stores(log, &cp) {
            Ok(Some(found)) => {
                stores = found;
                start = Some(cp);
            }
            Ok(None) => warnings.push(format!(
                "the history archive is behind the checkpoint (position {}) or missing; rebuilding it from the log",
                cp.seq
            )),
            Err(e) => warnings.push(format!(
                "the stores the checkpoint (position {}) names cannot be used ({}); rebuilding them from the log",
                cp.seq,
                crate::error_chain(&e)
            )),
        }
    }
    if start.is_none() {
        stores = Stores {
            archive: Some(Archive::create(log.path())?),
            lookups: Some(Arc::new(
                LookupStore::open_dir(log.path(), &[]).map_err(|e| lookups_error(log, e))?,
            )),
        };
    }
    let (Some(archive), Some(lookups)) = (stores.archive.clone(), stores.lookups.clone()) else {
        unreachable!("a rebuild has both stores");
    };
    let mut start = Start::of(start, true);
    if !start.replay.has_backing() {
        start.replay.attach_backing(lookups.clone());
    }
    let limits = Limits::of(log, Bound::All)?;
    let mut each = |replay: &mut Replay, seq| {
        progress(seq);
        if seq % ARCHIVE_EVERY == 0 {
            archive.write(&replay.drain_history())?;
        }
        if seq % 256 == 0 && replay.lookups_in_memory() >= lookups_in_memory {
            flush_lookups(replay, &lookups)?;
        }
        Ok(())
    };
    let mut rebuilt = fold_from(log, start, limits, warnings, &mut each)?;
    archive.write(&rebuilt.replay.drain_history())?;
    // New stores: the checkpoint (if any) describes others, and must not be resumed
    // from with these. Checkpoint the rebuilt state with them.
    if rebuilt.resumed_from.is_none() {
        let (seq, arrival) = (rebuilt.seq, rebuilt.arrival);
        save_checkpoint(log, &rebuilt.replay, seq, arrival, &stores)?;
    }
    Ok((rebuilt, stores))
}

/// A fold of the directory up to a bound that wrote nothing into it: its working set,
/// and its history on disk — the directory's own archive up to the checkpoint it
/// resumed from, then a temporary archive.
pub struct ReadOnlyFold {
    pub rebuilt: Rebuilt,
    /// The directory's archive (read-only) and how many payouts and refusals of it
    /// come before the temporary archive's.
    prefix: Option<(Archive, u64, u64)>,
    rest: Archive,
    /// The lookups the working set relies on (temporary, over the directory's runs).
    _lookups: Arc<LookupStore>,
}

impl ReadOnlyFold {
    /// Payouts `from .. to` in issue order (fewer if there are fewer).
    pub fn payouts(&self, from: u64, to: u64) -> Result<Vec<ledger_core::Payout>, LogError> {
        let (mut out, base) = match &self.prefix {
            Some((archive, n, _)) => (archive.payouts(from.min(*n), to.min(*n))?, *n),
            None => (Vec::new(), 0),
        };
        let (from, to) = (from.max(base) - base, to.max(base) - base);
        out.extend(self.rest.payouts(from, to)?);
        Ok(out)
    }

    /// Refusals `from ..` (at most `limit`) in order.
    pub fn rejections(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ledger_core::replay::Rejection>, LogError> {
        let (mut out, base) = match &self.prefix {
            Some((archive, _, n)) if from < *n => (
                archive.rejections(from, limit.min((*n - from) as usize))?,
                *n,
            ),
            Some((_, _, n)) => (Vec::new(), *n),
            None => (Vec::new(), 0),
        };
        let rest_from = from.max(base) - base;
        out.extend(self.rest.rejections(rest_from, limit - out.len())?);
        Ok(out)
    }
}

/// Folds the directory up to `bound` without writing into it — what a process that may
/// run beside the service does (simulations, reports): from the checkpoint when it is
/// usable and inside the bound (its lookup runs read in place, its archive read-only),
/// else from the start; new lookups go to a temporary store over the directory's runs
/// and new history to a temporary archive. Statement journals are not kept.
pub fn fold_read_only(
    log: &LogReader,
    bound: Bound,
    progress: &mut dyn FnMut(u64),
) -> Result<ReadOnlyFold, LogError> {
    let mut warnings = Vec::new();
    let limits = Limits::of(log, bound)?;
    let checkpoint = match bound {
        Bound::Time(_) => None,
        _ => usable_checkpoint(log, false, &mut warnings)?.filter(|cp| cp.seq <= limits.max_seq),
    };
    let mut resumed = None;
    if let Some(cp) = checkpoint {
        // The lookups are read only if records are folded after the checkpoint (reading
        // a store's runs costs a pass over them).
        let more = cp.seq < limits.max_seq && log.record_at(cp.seq + 1)?.is_some();
        match read_only_stores(log, &cp, more) {
            Ok(Some((prefix, lookups))) => resumed = Some((cp, prefix, lookups)),
            Ok(None) => warnings.push(format!(
                "the checkpoint (position {}) has no history archive to read; folding the whole log",
                cp.seq
            )),
            Err(e) => warnings.push(format!(
                "the stores the checkpoint (position {}) names cannot be read ({}); folding the whole log",
                cp.seq,
                crate::error_chain(&e)
            )),
        }
    }
    let (mut start, prefix, lookups) = match resumed {
        Some((cp, prefix, lookups)) => {
            let mut start = Start::of(Some(cp), false);
            start.replay.attach_backing(lookups.clone());
            (start, prefix, lookups)
        }
        None => {
            let lookups =
                Arc::new(LookupStore::temporary(None).map_err(|e| lookups_error(log, e))?);
            let mut start = Start::of(None, false);
            start.replay.attach_backing(lookups.clone());
            (start, None, lookups)
        }
    };
    start.replay.disable_journal();
    let (base_payouts, base_refusals) = prefix.as_ref().map_or((0, 0), |(_, p, r)| (*p, *r));
    let rest = Archive::temporary()?;
    let keep = |replay: &mut Replay| -> Result<(), LogError> {
        let mut drained = replay.drain_history();
        drained.first_payout -= base_payouts;
        drained.first_rejection -= base_refusals;
        rest.write(&drained)
    };
    let mut each = |replay: &mut Replay, seq| {
        progress(seq);
        if seq % ARCHIVE_EVERY == 0 {
            keep(replay)?;
        }
        if seq % 256 == 0 && replay.lookups_in_memory() >= LOOKUPS_IN_MEMORY {
            flush_lookups(replay, &lookups)?;
        }
        Ok(())
    };
    let mut rebuilt = fold_from(log, start, limits, warnings, &mut each)?;
    keep(&mut rebuilt.replay)?;
    Ok(ReadOnlyFold {
        rebuilt,
        prefix,
        rest,
        _lookups: lookups,
    })
}

/// The checkpoint's archive opened read-only with the payouts and refusals it holds,
/// and a temporary lookup store over its runs (without them unless `lookups`: nothing
/// is folded that would look anything up); `None` if it has no archive to read.
#[allow(clippy::type_complexity)]
fn read_only_stores(
    log: &LogReader,
    cp: &Checkpoint,
    lookups: bool,
) -> Result<Option<(Option<(Archive, u64, u64)>, Arc<LookupStore>)>, LogError> {
    let prefix = match &cp.archive {
        Some(heads) => match Archive::read_only(log.path(), heads)? {
            Some(a) => Some((a, heads.payouts, heads.refusals)),
            None => return Ok(None),
        },
        // Its history is in the state: drained into the temporary archive from 0.
        None if cp.replay.holds_all_history() => None,
        None => return Ok(None),
    };
    let runs = cp.lookups.as_deref().unwrap_or_default();
    let store = if lookups {
        LookupStore::over(log.path(), runs)
    } else {
        LookupStore::temporary(None)
    }
    .map_err(|e| lookups_error(log, e))?;
    Ok(Some((prefix, Arc::new(store))))
}

fn lookups_error(log: &LogReader, e: crate::runs::RunError) -> LogError {
    LogError::Lookups(ledger_core::store::StoreError::new(
        format!(
            "the lookup store of {} cannot be opened",
            log.path().display()
        ),
        e,
    ))
}

/// The stores a checkpoint names, opened as it describes them: `None` if its archive
/// is behind it or gone; an error if its lookup runs cannot be read.
fn resume_stores(log: &LogReader, cp: &Checkpoint) -> Result<Option<Stores>, LogError> {
    let archive = match &cp.archive {
        Some(heads) => match Archive::open_at(log.path(), heads)? {
            Some(a) => a,
            None => return Ok(None),
        },
        // A checkpoint that holds all its history (one `replay --data-dir` wrote)
        // fills an empty archive at the first drain.
        None if cp.replay.holds_all_history() => Archive::create(log.path())?,
        None => return Ok(None),
    };
    let runs = cp.lookups.as_deref().unwrap_or_default();
    let lookups = LookupStore::open_dir(log.path(), runs).map_err(|e| lookups_error(log, e))?;
    Ok(Some(Stores {
        archive: Some(archive),
        lookups: Some(Arc::new(lookups)),
    }))
}

/// Folds everything appended after position `from_seq` / arrival `from_arrival` into
/// `replay` (the live projection's step). Returns the new last seq and arrival.
pub fn fold_new(
    log: &LogReader,
    replay: &mut Replay,
    from_seq: u64,
    from_arrival: u64,
) -> Result<(u64, u64), LogError> {
    let limits = Limits {
        max_seq: u64::MAX,
        max_arrival: u64::MAX,
        before_ns: u64::MAX,
    };
    fold_range(log, replay, from_seq, from_arrival, limits, &mut |_, _| {
        Ok(())
    })
}

/// Records parsed per message between the reading thread and the folding one.
const PIPELINE_CHUNK: usize = 512;
/// Chunks in flight between the two threads (bounds the memory of the pipeline).
const PIPELINE_DEPTH: usize = 16;

/// A log record read back, with its event parsed by the reader — or not yet, when the
/// fold had nothing queued and parses it itself (its bytes are then in the chunk).
struct Parsed {
    seq: u64,
    arrival: u64,
    line: u64,
    event: Slot,
}

// Boxing the parsed event would cost an allocation per record, which is what the
// pipeline's chunks exist to avoid; the raw variant is the rare one.
#[allow(clippy::large_enum_variant)]
enum Slot {
    Parsed(Result<ledger_core::Event, IntakeRefusal>),
    /// The record's bytes, at this range of [`Chunk::raw`].
    Raw(std::ops::Range<usize>),
}

/// Records passed from the reader to the fold in one message.
struct Chunk {
    items: Vec<Parsed>,
    /// Bytes of the records left unparsed.
    raw: Vec<u8>,
}

impl Chunk {
    fn with_capacity() -> Chunk {
        Chunk {
            items: Vec::with_capacity(PIPELINE_CHUNK),
            raw: Vec::new(),
        }
    }
}

/// Folds records after `from_seq` and other inputs after `from_arrival` into `replay`,
/// in arrival order, within `limits`. Returns the last seq and arrival accounted for.
///
/// Reading and parsing the records runs on a second thread, a bounded pipeline ahead of
/// the fold: the fold itself stays sequential, in log order, so the result is the same
/// as folding record by record. Parsing costs about as much as folding, so whichever
/// side is ahead helps the other: when the fold has no chunk waiting, the reader hands
/// it the next one unparsed, and the fold parses it.
pub(crate) fn fold_range(
    log: &LogReader,
    replay: &mut Replay,
    from_seq: u64,
    from_arrival: u64,
    limits: Limits,
    each: &mut dyn FnMut(&mut Replay, u64) -> Result<(), LogError>,
) -> Result<(u64, u64), LogError> {
    fold_range_visiting(
        log,
        replay,
        from_seq,
        from_arrival,
        limits,
        &mut |replay, record| {
            replay
                .try_apply_logged(record.event, record.line)
                .map_err(LogError::Lookups)?;
            each(replay, record.seq)
        },
    )
}

/// A log record as [`fold_range_visiting`] hands it over: its position, its line
/// number, its event.
pub(crate) struct Visited<'a> {
    pub seq: u64,
    pub line: u64,
    pub event: &'a ledger_core::Event,
}

/// [`fold_range`] with the folding of each record left to `visit` (which must fold
/// it, or what it stands for): quarantined inputs and duplicates between records are
/// accounted for as in the log.
pub(crate) fn fold_range_visiting(
    log: &LogReader,
    replay: &mut Replay,
    from_seq: u64,
    from_arrival: u64,
    limits: Limits,
    visit: &mut dyn FnMut(&mut Replay, Visited<'_>) -> Result<(), LogError>,
) -> Result<(u64, u64), LogError> {
    let mut extras: Vec<Extra> = log
        .quarantined_after(from_arrival)?
        .into_iter()
        .map(Extra::Quarantined)
        .chain(
            log.duplicates_after(from_arrival)?
                .into_iter()
                .map(Extra::Duplicate),
        )
        .filter(|e| {
            e.arrival() > from_arrival
                && e.arrival() <= limits.max_arrival
                && e.time_ns() < limits.before_ns
        })
        .collect();
    extras.sort_by_key(Extra::arrival);
    let mut extras = extras.into_iter().peekable();
    let mut last_seq = from_seq;
    let mut last_arrival = from_arrival;
    // Chunks the reader sent and the fold has not taken yet.
    let queued = &std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(PIPELINE_DEPTH);
        // Folded chunks go back to the reader, which drops their events (freeing memory
        // on the thread that allocated it) and reuses their buffers.
        let (back_tx, back_rx) = std::sync::mpsc::sync_channel(PIPELINE_DEPTH + 2);

        // Named, so profiles and debuggers tell the two sides apart.
        std::thread::Builder::new()
            .name("log-reader".into())
            .spawn_scoped(scope, move || {
                read_and_parse(log, from_seq + 1, limits, &tx, &back_rx, queued)
            })
            .map_err(|e| LogError::Io {
                path: log.path().to_path_buf(),
                source: e,
            })?;
        // Returning early drops `rx`, which stops the reader at its next send.
        for chunk in rx {
            queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let chunk = chunk?;
            for parsed in &chunk.items {
                if parsed.seq != last_seq + 1 {
                    return Err(LogError::Corrupt {
                        path: log.path().to_path_buf(),
                        what: format!("sequence {} expected, found {}", last_seq + 1, parsed.seq),
                    });
                }
                while let Some(e) = extras.next_if(|e| e.arrival() < parsed.arrival) {
                    e.apply(replay);
                }
                let parsed_here;
                let checked = match &parsed.event {
                    Slot::Parsed(checked) => checked,
                    Slot::Raw(range) => {
                        let raw = chunk.raw.get(range.clone()).unwrap_or_default();
                        parsed_here = ledger_core::intake::check_event(raw);
                        &parsed_here
                    }
                };
                let event = checked.as_ref().map_err(|r| LogError::Corrupt {
                    path: log.path().to_path_buf(),
                    what: format!(
                        "record {} no longer passes intake ({}: {})",
                        parsed.seq, r.code, r.message
                    ),
                })?;
                visit(
                    replay,
                    Visited {
                        seq: parsed.seq,
                        line: parsed.line,
                        event,
                    },
                )?;
                last_seq = parsed.seq;
                last_arrival = parsed.arrival;
            }
            // A full return channel only means the reader is behind on recycling.
            let _ = back_tx.try_send(chunk);
        }
        Ok::<(), LogError>(())
    })?;
    // Inputs that arrived after the last record folded (already filtered to the bound).
    for e in extras {
        last_arrival = e.arrival();
        e.apply(replay);
    }
    Ok((last_seq, last_arrival))
}

/// Tests pin the reader's choice: 1 leaves every chunk raw, 2 parses every chunk.
#[cfg(test)]
static FORCE_SPLIT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether the reader hands its next chunk over unparsed: when the fold has none waiting.
fn leave_raw(queued: usize) -> bool {
    #[cfg(test)]
    match FORCE_SPLIT.load(std::sync::atomic::Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    queued == 0
}

/// The reading side of [`fold_range`]: records from `from` within `limits`, in chunks,
/// parsed — or left raw when the fold has nothing `queued`; stops at the bound, at the
/// first error (sent on) or when the fold hangs up.
fn read_and_parse(
    log: &LogReader,
    from: u64,
    limits: Limits,
    tx: &std::sync::mpsc::SyncSender<Result<Chunk, LogError>>,
    back: &std::sync::mpsc::Receiver<Chunk>,
    queued: &std::sync::atomic::AtomicUsize,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let fresh = || match back.try_recv() {
        Ok(mut used) => {
            used.items.clear();
            used.raw.clear();
            used
        }
        Err(_) => Chunk::with_capacity(),
    };
    let send = |chunk: Result<Chunk, LogError>| {
        queued.fetch_add(1, Relaxed);
        tx.send(chunk).is_ok()
    };
    let mut chunk = Chunk::with_capacity();
    // Decided per chunk, when it starts: the fold is idle or about to be.
    let mut raw = leave_raw(queued.load(Relaxed));
    let mut read = || -> Result<(), LogError> {
        for segment in log.segments_from(from) {
            let segment = segment?;
            for record in segment.records(log) {
                let record = record?;
                if record.seq < from {
                    continue;
                }
                if record.seq > limits.max_seq || record.time_ns >= limits.before_ns {
                    return Ok(());
                }
                let event = if raw {
                    let start = chunk.raw.len();
                    chunk.raw.extend_from_slice(record.raw);
                    Slot::Raw(start..chunk.raw.len())
                } else {
                    Slot::Parsed(ledger_core::intake::check_event(record.raw))
                };
                chunk.items.push(Parsed {
                    seq: record.seq,
                    arrival: record.arrival,
                    line: record.line,
                    event,
                });
                if chunk.items.len() == PIPELINE_CHUNK {
                    let full = std::mem::replace(&mut chunk, fresh());
                    if !send(Ok(full)) {
                        return Ok(());
                    }
                    raw = leave_raw(queued.load(Relaxed));
                }
            }
        }
        Ok(())
    };
    let result = read();
    if !chunk.items.is_empty() {
        send(Ok(chunk));
    }
    if let Err(e) = result {
        send(Err(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_detect_damage() {
        let mut replay = Replay::new();
        replay.push(br#"{"not":"an event"}"#, 1);
        let bytes = PendingCheckpoint::encode(7, 9, [3; 32], &replay, None, None)
            .unwrap()
            .framed();
        let cp = decode_checkpoint(&bytes).unwrap();
        assert_eq!((cp.seq, cp.arrival, cp.hash), (7, 9, [3; 32]));
        assert_eq!(cp.replay.document(), replay.document());
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 1;
        assert!(decode_checkpoint(&damaged).is_err());
        assert!(decode_checkpoint(b"short").is_err());
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    /// The magic and the SHA-256 of the checkpoint of a small fixed state (a fixture
    /// folded with journals). A change of the encoded layout changes the digest; it must
    /// come with a new magic, so that older checkpoints are refused rather than misread.
    const PINNED: (&[u8; 8], &str) = (
        b"ILCKPT14",
        "fe57d0f958e3e319f7c9aab072740b10ce40b644d68e3766f14bcb30b1cfa038",
    );

    fn fixed_state() -> Replay {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../replay-fixtures/mdf_claims_fifo_expiry/events.ndjson");
        let bytes = std::fs::read(path).unwrap();
        let mut replay = Replay::new();
        replay.enable_journal();
        for (n, line) in ledger_core::replay::ndjson_lines(&bytes, 1) {
            replay.push(line, n);
        }
        replay
    }

    fn checkpoint_digest() -> String {
        let bytes = PendingCheckpoint::encode(7, 9, [3; 32], &fixed_state(), None, None)
            .unwrap()
            .framed();
        ledger_core::hex(&Sha256::digest(&bytes))
    }

    #[test]
    fn the_checkpoint_of_a_fixed_state_is_byte_deterministic_and_pinned() {
        let digest = checkpoint_digest();
        assert_eq!(
            digest,
            checkpoint_digest(),
            "the same state encodes the same bytes"
        );
        if CHECKPOINT_MAGIC == PINNED.0 {
            assert_eq!(
                digest, PINNED.1,
                "the checkpoint layout changed: bump CHECKPOINT_MAGIC, then pin the new magic with this digest"
            );
        } else {
            panic!(
                "CHECKPOINT_MAGIC changed: pin it in PINNED with the new layout's digest {digest}"
            );
        }
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    /// Records parsed by the reader, by the fold, or as the pipeline decides: the same
    /// document as a replay of the inputs.
    #[test]
    fn wherever_records_are_parsed_the_fold_is_the_same() {
        let lines: Vec<String> =
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(8, 6000)).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut log = crate::Log::open(dir.path()).unwrap();
        log.append_batch(&crate::log::tests::inputs(&lines))
            .unwrap();
        let mut expected = Replay::new();
        for (i, l) in lines.iter().enumerate() {
            expected.push(l.as_bytes(), i as u64 + 1);
        }
        let expected = expected.document();
        for force in [1, 2, 0] {
            FORCE_SPLIT.store(force, std::sync::atomic::Ordering::Relaxed);
            let rebuilt = rebuild(&log, Bound::All, false, &mut |_| {}).unwrap();
            assert_eq!(rebuilt.replay.document(), expected, "split {force}");
        }
        FORCE_SPLIT.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn a_real_fold_state_survives_a_checkpoint() {
        let mut replay = Replay::new();
        for (i, line) in
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(5, 3000)).enumerate()
        {
            replay.push(line.as_bytes(), i as u64 + 1);
        }
        let bytes = PendingCheckpoint::encode(1, 1, [0; 32], &replay, None, None)
            .unwrap()
            .framed();
        let back = decode_checkpoint(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.replay.document(), replay.document());
        // And folding on from the restored state matches folding on from the original.
        let mut a = replay.clone();
        let mut b = back.replay;
        for (i, line) in
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(6, 500)).enumerate()
        {
            a.push(line.as_bytes(), 5000 + i as u64);
            b.push(line.as_bytes(), 5000 + i as u64);
        }
        assert_eq!(a.document(), b.document());
    }
}
