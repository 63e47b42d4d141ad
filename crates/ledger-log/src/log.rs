//! [`Log`]: a data directory holding the append-only event log, the quarantine, the
//! duplicate marks and a checkpoint of the folded state.
//!
//! Appends are group commits: [`Log::append_batch`] checks, dedupes and appends a batch
//! with one atomic sled batch and one `flush`, and returns only after the flush — so a
//! caller may acknowledge every input of the batch once it returns `Ok`. The identity
//! index `(source, id) → (seq, content digest)` is kept in memory and rebuilt from the
//! record headers when the directory is opened (no JSON is parsed for that).

use crate::identities::IdentityIndex;
use crate::layout::{
    chain_hash, identity_key, key, key_number, segment_records, Duplicate, Head, Quarantined,
    Record, RecordRef, DUPLICATE, HEAD, QUARANTINE, RECORD_HEADER, SEGMENT,
};
use ledger_core::intake::{self, Accepted};
use ledger_core::replay::conflict_message;
use ledger_core::Code;
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Version of the data directory layout; a directory of another version is refused.
/// 2: segments of at most 24 KiB inside sled's log (2 MiB sled segments); 1 kept a whole
/// batch in one value.
pub const FORMAT_VERSION: u32 = 2;
const FORMAT_FILE: &str = "FORMAT";
const FORMAT_PREFIX: &str = "incentive-ledger data directory, format ";
/// The checkpoint: a file of its own, replaced whole (written aside, synced, renamed).
/// Kept in sled before, where every replaced checkpoint could leave its ~100 MB blob
/// behind in `sled/blobs` for good; that tree is still read when the file is absent.
const CHECKPOINT_FILE: &str = "CHECKPOINT";
const CHECKPOINT_TREE: &str = "checkpoint";
/// Outside sled: the last acknowledged position, written after every durable batch, so
/// that sled files damaged into an older (or empty) state are noticed rather than
/// silently trusted.
const HIGHWATER_FILE: &str = "HIGHWATER";
/// Its one line: the position (20 digits) and the chain hash (64 hex digits).
const HIGHWATER_BYTES: usize = 20 + 1 + 64 + 1;
const CHECKPOINT_KEY: &[u8] = b"state";

/// What went wrong with the storage; the variants say what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The path holds no data directory (a read must not create one).
    #[error("no data directory at {path}: give the directory that `ingest` or `serve` wrote")]
    NoDataDirectory { path: PathBuf },
    /// Another process holds the directory (sled's exclusive lock).
    #[error("{path} is in use by another incentive-ledger process, e.g. a running `serve`; ask it instead (`incentive-ledger status`, the HTTP API: `/v1/status`, `/v1/programs/{{id}}/report`, `POST /v1/simulations`), or stop it first")]
    InUse { path: PathBuf },
    #[error("{path}: not an incentive-ledger data directory of format {expected}: {found}; use a directory written by this version, or a new one")]
    Format {
        path: PathBuf,
        expected: u32,
        found: String,
    },
    #[error(
        "storage error in {path}; the batch was not acknowledged — retry once the disk is healthy"
    )]
    Storage {
        path: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("{path}: {what}; run `incentive-ledger verify --data-dir` for a full report")]
    Corrupt { path: PathBuf, what: String },
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The lookup store could not be read or written (its files are derived data: a
    /// restart rebuilds them from the log).
    #[error("the lookup store failed")]
    Lookups(#[source] ledger_core::store::StoreError),
    /// The fold state could not be encoded (not expected: it holds plain data); no
    /// checkpoint is written, the log stays the truth.
    #[error("the checkpoint cannot be encoded: {0}")]
    Checkpoint(String),
}

/// What the storage engine (sled) reported. Its `Display` is the engine's message; it
/// wraps the engine's error so that no sled type appears in this crate's API.
#[derive(Debug)]
pub struct StorageError(sled::Error);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StorageError {}

/// One input offered to the log.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub raw: &'a [u8],
    /// Line number in its NDJSON file, or `None` for a message (its arrival number is used).
    pub line: Option<u64>,
    /// Wall-clock arrival time, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// What the transport knows of it that its bytes do not say.
    pub transport: Transport<'a>,
}

/// What the transport knows of an input: checked with intake, and refused the same way
/// (quarantined, with a message that says what to send instead).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport<'a> {
    /// Nothing (a file, or a subject that names no type).
    #[default]
    None,
    /// It came on `subject`, the inbound subject of `event_type` (`<prefix>.<type>`): an
    /// event of another `type` is refused, so that the subject permissions of each NATS
    /// user (DECISIONS 71) hold.
    Subject {
        subject: &'a str,
        event_type: &'a str,
    },
    /// The transport could not read the message as an event (a binary-mode CloudEvent
    /// whose headers or body are not one): refused with this code and message.
    Refused(Code, &'a str),
}

impl Transport<'_> {
    /// Intake of `raw` with what the transport knows.
    fn check(&self, raw: &[u8]) -> Result<Accepted, ledger_core::IntakeRefusal> {
        let refusal = |code, message: String| ledger_core::IntakeRefusal {
            code,
            message,
            identity: None,
            event_type: None,
        };
        match *self {
            Transport::None => intake::check(raw),
            Transport::Refused(code, message) => Err(refusal(code, message.to_string())),
            Transport::Subject {
                subject,
                event_type: expected,
            } => {
                let accepted = intake::check(raw)?;
                let found = accepted.event.event_type();
                if found.as_str() == expected {
                    return Ok(accepted);
                }
                Err(ledger_core::IntakeRefusal {
                    identity: Some((
                        accepted.event.source.to_string(),
                        accepted.event.id.to_string(),
                    )),
                    event_type: Some(found),
                    ..refusal(
                        Code::InvalidEnvelope,
                        format!(
                            "`type` is {:?} but the event came on {subject}: publish each event on the subject of its own type, {}{}",
                            found.as_str(),
                            subject.strip_suffix(expected).unwrap_or_default(),
                            found.as_str()
                        ),
                    )
                })
            }
        }
    }
}

/// What became of one input of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Appended to the log at this sequence; the event as intake read it, so that a live
    /// projection can fold it without reading it back.
    Appended {
        seq: u64,
        arrival: u64,
        event: Box<ledger_core::Event>,
    },
    /// An exact duplicate of the record at `of_seq`: counted, nothing appended.
    Duplicate {
        of_seq: u64,
        arrival: u64,
        event_type: ledger_core::EventType,
    },
    /// Refused at intake and quarantined.
    Quarantined {
        arrival: u64,
        code: Code,
        message: String,
        identity: Option<(String, String)>,
        event_type: Option<ledger_core::EventType>,
    },
}

/// Read access to a data directory: its records, quarantine, duplicate marks and
/// checkpoint, and the payout outbox. It cannot append (it has no identity index and no
/// head to move); every reader follows [`Log::reopen`] of the log it came from.
#[derive(Clone)]
pub struct LogReader {
    path: PathBuf,
    store: SharedStore,
    /// sled's blob files already fsynced (shared by the handles on the directory).
    synced_blobs: Arc<Mutex<HashSet<std::ffi::OsString>>>,
}

/// An open data directory, for appending: a [`LogReader`] (every read method is there,
/// through `Deref`) plus the head and the identity index that appends move.
pub struct Log {
    reader: LogReader,
    head: Head,
    /// identity key → position of every logged event ([`crate::identities`]); read
    /// from its runs and the log's record headers after them by the first append.
    /// at the first append (readers never need it).
    index: Option<IdentityIndex>,
}

/// The open sled database. Every handle on a directory (the log, its readers, the
/// outbox) shares one, and [`Log::reopen`] replaces it whole: after an IO error sled
/// refuses every later write until it is opened again.
#[derive(Clone)]
struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's log file, opened beside sled to fsync it: sled's own flush on Linux only
    /// calls `sync_file_range`, which writes the data but not the metadata that makes
    /// a grown file's new blocks reachable — a power loss, or a disk error that turns
    /// the file system read-only, then loses the batches of the last seconds although
    /// their flush returned (seen in the disk-fault runs: ext4 aborted its journal and
    /// the log reopened empty, HIGHWATER naming 3,458 acknowledged records).
    file: Arc<std::fs::File>,
}

/// `None` only while a re-open is in progress or has failed.
type SharedStore = Arc<RwLock<Option<Store>>>;

fn current(store: &SharedStore) -> Result<Store, sled::Error> {
    store
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
        .ok_or_else(|| {
            sled::Error::Io(std::io::Error::other(
                "the data directory is closed for re-opening after a storage fault",
            ))
        })
}

/// A named tree of a directory's database that follows [`Log::reopen`] (the payout
/// outbox lives in one).
#[derive(Clone)]
pub(crate) struct TreeHandle {
    store: SharedStore,
    name: String,
}

impl TreeHandle {
    pub(crate) fn get(&self) -> Result<sled::Tree, sled::Error> {
        current(&self.store)?.db.open_tree(&self.name)
    }
}

pub(crate) fn storage(path: &Path) -> impl Fn(sled::Error) -> LogError + '_ {
    move |source| LogError::Storage {
        path: path.to_path_buf(),
        source: StorageError(source),
    }
}

impl std::ops::Deref for Log {
    type Target = LogReader;

    fn deref(&self) -> &LogReader {
        &self.reader
    }
}

impl Log {
    /// Opens a data directory that exists (one `ingest` or `serve` wrote): what every
    /// command that only reads uses, so that a mistyped path is an error, never a new
    /// empty ledger.
    pub fn open_existing(path: &Path) -> Result<Log, LogError> {
        if !path.join(FORMAT_FILE).is_file() {
            return Err(LogError::NoDataDirectory {
                path: path.to_path_buf(),
            });
        }
        Log::open(path)
    }

    /// Opens (or creates) a data directory.
    pub fn open(path: &Path) -> Result<Log, LogError> {
        let io = |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let format_path = path.join(FORMAT_FILE);
        let expected = format!("{FORMAT_PREFIX}{FORMAT_VERSION}\n");
        match std::fs::read_to_string(&format_path) {
            Ok(found) if found == expected => {}
            Ok(found) => {
                return Err(LogError::Format {
                    path: path.to_path_buf(),
                    expected: FORMAT_VERSION,
                    found: format!("its {FORMAT_FILE} file says {:?}", found.trim()),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let non_empty = std::fs::read_dir(path).map_err(io)?.next().is_some();
                if non_empty {
                    return Err(LogError::Format {
                        path: path.to_path_buf(),
                        expected: FORMAT_VERSION,
                        found: format!("the directory is not empty and has no {FORMAT_FILE} file"),
                    });
                }
                // Durably: a FORMAT file whose bytes a crash (or a disk error that turns
                // the file system read-only) left unwritten makes the directory one
                // that no version opens.
                write_durably(path, FORMAT_FILE, expected.as_bytes()).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        let mut log = Log {
            reader: LogReader {
                path: path.to_path_buf(),
                store: Arc::new(RwLock::new(Some(open_store(path)?))),
                synced_blobs: Arc::default(),
            },
            head: Head::default(),
            index: None,
        };
        log.load()?;
        Ok(log)
    }

    /// Reads the head and rebuilds the identity index from the record headers.
    /// Closes the database and opens it again, re-reading the head and the identity
    /// index from what is on disk: the way back from a storage fault, after which sled
    /// refuses every write. Handles that share the store follow; until this succeeds
    /// they answer with an error.
    pub fn reopen(&mut self) -> Result<(), LogError> {
        let mut slot = self
            .store
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // sled holds a lock on its files until the last handle is gone — and its own
        // write threads may still hold one for a moment after ours are dropped: a
        // lock not yet released is waited for, a bounded while.
        drop(slot.take());
        let mut tries = 0;
        let store = loop {
            match open_store(&self.path) {
                Err(LogError::InUse { .. }) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        *slot = Some(store);
        drop(slot);
        self.index = None;
        self.load()
    }

    /// Reads the identity index (once): its runs if their manifest's chain hash is the
    /// log's at that position, then the record headers after it — checking on the way
    /// that the sequence has no gap. The first append does it; a caller that wants the
    /// cost paid before (a benchmark of the service's memory) calls it.
    pub fn ensure_index(&mut self) -> Result<(), LogError> {
        if self.index.is_some() {
            return Ok(());
        }
        let manifest = crate::identities::Manifest::load(&self.path.join(crate::identities::DIR));
        let anchored = match &manifest {
            Some(m) if m.through == 0 => true,
            Some(m) => {
                m.through <= self.head.last_seq
                    && self.record_at(m.through)?.is_some_and(|r| r.hash == m.hash)
            }
            None => false,
        };
        let opened = IdentityIndex::open(&self.path, manifest.as_ref().filter(|_| anchored));
        let mut index = match opened {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(
                    "the identity index of {} is rebuilt from the log: {}",
                    self.path.display(),
                    crate::error_chain(&e)
                );
                IdentityIndex::open(&self.path, None).map_err(|e| self.runs_error(e))?
            }
        };
        let mut expected_seq = index.through() + 1;
        for segment in self.segments_from(expected_seq) {
            let segment = segment?;
            for r in segment.records(self) {
                let r = r?;
                if r.seq < expected_seq {
                    continue;
                }
                if r.seq != expected_seq {
                    return Err(
                        self.corrupt(format!("sequence {expected_seq} expected, found {}", r.seq))
                    );
                }
                index.insert(r.identity, r.seq);
                expected_seq += 1;
                if index.recent() >= crate::identities::FLUSH {
                    // A rebuild holds one batch at a time, whatever the log's length.
                    index.save(0, r.seq, r.hash).map_err(|e| {
                        self.corrupt(format!("the identity index cannot be written: {e}"))
                    })?;
                }
            }
        }
        if expected_seq - 1 != self.head.last_seq {
            return Err(self.corrupt(format!(
                "the head says sequence {} but the log ends at {}",
                self.head.last_seq,
                expected_seq - 1
            )));
        }
        // What was read from the log is written as a run now, so that the next open
        // reads the log only past it (best effort, as after an append).
        let head = self.head;
        if let Err(e) = index.save(1, head.last_seq, head.last_hash) {
            tracing::warn!(
                "the identity index of {} cannot be written: {e}",
                self.path.display()
            );
        }
        self.index = Some(index);
        Ok(())
    }

    fn runs_error(&self, e: crate::runs::RunError) -> LogError {
        self.corrupt(format!(
            "the identity index cannot be opened: {}",
            crate::error_chain(&e)
        ))
    }

    fn load(&mut self) -> Result<(), LogError> {
        let tree = self.store()?.tree;
        let head: Head = match tree.get(HEAD).map_err(storage(&self.path))? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| self.corrupt(format!("the head record does not decode: {e}")))?,
            None => Head::default(),
        };
        // The log must end with the record the head names (the whole sequence is checked
        // by readers as they go, by the first append, and by `verify`).
        let (last_seq, last_hash) = match tree.scan_prefix([SEGMENT]).next_back() {
            None => (0, [0u8; 32]),
            Some(item) => {
                let (k, bytes) = item.map_err(storage(&self.path))?;
                let first = key_number(&k, SEGMENT)
                    .ok_or_else(|| self.corrupt("a segment key has the wrong shape"))?;
                let segment = Segment { first, bytes };
                let last = segment
                    .records(self)
                    .last()
                    .ok_or_else(|| self.corrupt(format!("segment {first} is empty")))??;
                (last.seq, last.hash)
            }
        };
        if let Ok(text) = std::fs::read_to_string(self.path.join(HIGHWATER_FILE)) {
            let acknowledged: u64 = text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| self.corrupt(format!("{HIGHWATER_FILE} is unreadable")))?;
            if acknowledged > last_seq {
                return Err(self.corrupt(format!(
                    "records up to sequence {acknowledged} were acknowledged, but the log holds only {last_seq}; the sled files are damaged — first missing sequence {}",
                    last_seq + 1
                )));
            }
        }
        if head.last_seq != last_seq || head.last_hash != last_hash {
            return Err(self.corrupt(format!(
                "the head says sequence {} but the log ends at {last_seq}",
                head.last_seq
            )));
        }
        self.head = head;
        Ok(())
    }

    /// A second handle on the same directory for readers (as-of queries, the fold of
    /// batches found in the log, checkpoints) beside the writer: it shares sled's trees
    /// and follows re-opens.
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// Records that the upstream source now ends at `position`, below the head's
    /// source position: its stream was recreated or purged (the broker lost its store),
    /// and its sequences start again. The next batches carry the new positions. Durable
    /// when it returns; the records are untouched.
    pub fn rebase_source(&mut self, position: u64) -> Result<(), LogError> {
        let mut head = self.head;
        assert!(
            position < head.source_position,
            "a rebase moves the source position back"
        );
        head.source_position = position;
        let store = self.store()?;
        store
            .tree
            .insert(HEAD, encode(&head))
            .map_err(storage(&self.path))?;
        self.flush()?;
        self.head = head;
        Ok(())
    }

    /// Whether the log holds `raw` already: `Some(true)` when an event with its identity
    /// and content is logged, `Some(false)` when no event with its identity is, `None`
    /// when it cannot tell — intake refuses it (a refused input has no identity to look
    /// up), or its identity is logged with other content (a conflicting re-use, which
    /// the quarantine holds, not the records). Lets the ingest loop tell a redelivery
    /// from a new message that came at a position the log has consumed.
    pub fn holds(
        &mut self,
        raw: &[u8],
        transport: Transport<'_>,
    ) -> Result<Option<bool>, LogError> {
        self.ensure_index()?;
        let Ok(accepted) = transport.check(raw) else {
            return Ok(None);
        };
        let identity = identity_key(&accepted.event.source, &accepted.event.id);
        Ok(match self.logged(&identity)? {
            None => Some(false),
            Some((_, content)) if content == accepted.content_digest => Some(true),
            Some(_) => None,
        })
    }

    /// Checks, dedupes and appends a batch; returns after it is durable (one flush).
    /// On error nothing of the batch is acknowledged and the log is unchanged in memory.
    pub fn append_batch(&mut self, inputs: &[Input<'_>]) -> Result<Vec<Outcome>, LogError> {
        self.append_batch_from(inputs, None)
    }

    /// As [`Log::append_batch`], also recording the upstream position (the JetStream
    /// stream sequence) of the batch's last input in the head, atomically with it.
    ///
    /// Long by design: one pass decides every input of the batch (intake outcome, identity,
    /// chain hash, segment cuts) against a head that only becomes the log's after the
    /// single atomic write; split, the pieces would hand that head and the batch around.
    pub fn append_batch_from(
        &mut self,
        inputs: &[Input<'_>],
        source_position: Option<u64>,
    ) -> Result<Vec<Outcome>, LogError> {
        self.ensure_index()?;
        let mut head = self.head;
        if let Some(p) = source_position {
            head.source_position = head.source_position.max(p);
        }
        let mut batch = sled::Batch::default();
        // The batch's records, cut into segments of at most SEGMENT_BYTES (or one record),
        // each stored under the sequence of its first record.
        let mut segment: Vec<u8> = Vec::with_capacity(SEGMENT_BYTES);
        let mut segment_first = head.last_seq + 1;
        let mut new_index: HashMap<[u8; 16], (u64, [u8; 32])> = HashMap::new();
        let mut outcomes = Vec::with_capacity(inputs.len());
        for (input, checked) in inputs.iter().zip(check_all(inputs)) {
            head.last_arrival += 1;
            let arrival = head.last_arrival;
            let line = input.line.unwrap_or(arrival);
            let quarantine =
                |code,
                 message: String,
                 identity: Option<(String, String)>,
                 event_type: Option<ledger_core::EventType>| Quarantined {
                    arrival,
                    time_ns: input.time_ns,
                    line,
                    code,
                    message,
                    identity,
                    event_type,
                    raw: input.raw.to_vec(),
                };
            let q = match checked {
                Err(r) => quarantine(r.code, r.message, r.identity, r.event_type),
                Ok(Accepted {
                    event,
                    content_digest,
                }) => {
                    let identity = identity_key(&event.source, &event.id);
                    let known = match new_index.get(&identity) {
                        Some(found) => Some(*found),
                        None => self.logged(&identity)?,
                    };
                    match known {
                        Some((seq, content)) if content == content_digest => {
                            let dup = Duplicate {
                                arrival,
                                time_ns: input.time_ns,
                                of_seq: seq,
                                event_type: event.event_type(),
                            };
                            batch.insert(&key(DUPLICATE, arrival), encode(&dup));
                            outcomes.push(Outcome::Duplicate {
                                of_seq: seq,
                                arrival,
                                event_type: event.event_type(),
                            });
                            continue;
                        }
                        Some(_) => quarantine(
                            Code::DuplicateConflict,
                            conflict_message(&event),
                            Some((event.source.to_string(), event.id.to_string())),
                            Some(event.event_type()),
                        ),
                        None => {
                            head.last_seq += 1;
                            let seq = head.last_seq;
                            if !segment.is_empty()
                                && segment.len() + RECORD_HEADER + input.raw.len() > SEGMENT_BYTES
                            {
                                let full = std::mem::replace(
                                    &mut segment,
                                    Vec::with_capacity(SEGMENT_BYTES),
                                );
                                batch.insert(&key(SEGMENT, segment_first), full);
                                segment_first = seq;
                            }
                            let hash = chain_hash(&head.last_hash, seq, input.raw);
                            head.last_hash = hash;
                            Record {
                                seq,
                                arrival,
                                time_ns: input.time_ns,
                                line,
                                identity,
                                content: content_digest,
                                hash,
                                raw: input.raw,
                            }
                            .encode_into(&mut segment);
                            new_index.insert(identity, (seq, content_digest));
                            outcomes.push(Outcome::Appended {
                                seq,
                                arrival,
                                event: Box::new(event),
                            });
                            continue;
                        }
                    }
                }
            };
            batch.insert(&key(QUARANTINE, arrival), encode(&q));
            outcomes.push(Outcome::Quarantined {
                arrival,
                code: q.code,
                message: q.message,
                identity: q.identity,
                event_type: q.event_type,
            });
        }
        if !segment.is_empty() {
            batch.insert(&key(SEGMENT, segment_first), segment);
        }
        batch.insert(HEAD, encode(&head));
        let store = self.store()?;
        store.tree.apply_batch(batch).map_err(storage(&self.path))?;
        self.flush()?;
        // Durable: now the in-memory view may move on.
        if head.last_seq != self.head.last_seq {
            self.write_highwater(&head)?;
        }
        self.head = head;
        if let Some(index) = &mut self.index {
            for (identity, (seq, _)) in new_index {
                index.insert(identity, seq);
            }
            // Best effort: the identities stay in memory until a write succeeds, and
            // opening reads the positions the runs lack from the log.
            if let Err(e) = index.save(crate::identities::FLUSH, head.last_seq, head.last_hash) {
                tracing::warn!(
                    "the identity index of {} cannot be written: {e}",
                    self.path.display()
                );
            }
        }
        debug_assert_eq!(outcomes.len(), inputs.len());
        Ok(outcomes)
    }

    /// The position and content digest of the logged event with `identity`, if any:
    /// the position the index names is read back for the content digest.
    fn logged(&self, identity: &[u8; 16]) -> Result<Option<(u64, [u8; 32])>, LogError> {
        let Some(index) = &self.index else {
            return Ok(None);
        };
        let Some(seq) = index.get(identity).map_err(|e| self.runs_error(e))? else {
            return Ok(None);
        };
        let record = self.record_at(seq)?.ok_or_else(|| {
            self.corrupt(format!(
                "the identity index names position {seq}, which the log does not hold"
            ))
        })?;
        if record.identity != *identity {
            return Err(self.corrupt(format!(
                "the identity index names position {seq} for an identity the record there does not have"
            )));
        }
        Ok(Some((seq, record.content)))
    }

    /// Writes the high-water mark after a durable batch, without an fsync of its own
    /// (it is a lower bound: an older mark after a crash is still true). It is one
    /// fixed-width line overwritten in place, so that a crash leaves the old mark or
    /// the new one: a file replaced by a rename whose data was not written yet may come
    /// back empty (seen after an ext4 error turned the file system read-only, which
    /// made the directory unopenable). Created durably the first time.
    pub(crate) fn write_highwater(&self, head: &Head) -> Result<(), LogError> {
        use std::os::unix::fs::FileExt;
        let text = format!(
            "{:020} {}\n",
            head.last_seq,
            ledger_core::hex(&head.last_hash)
        );
        assert_eq!(text.len(), HIGHWATER_BYTES, "the mark has a fixed width");
        let path = self.path.join(HIGHWATER_FILE);
        let io = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => file.write_all_at(text.as_bytes(), 0).map_err(io),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_durably(&self.path, HIGHWATER_FILE, text.as_bytes()).map_err(io)
            }
            Err(e) => Err(io(e)),
        }
    }
}

/// Replaces the file `name` of directory `dir` whole and durably: writes `bytes` to
/// `name.tmp`, fsyncs it, renames it over `name` and fsyncs the directory.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

impl LogReader {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn corrupt(&self, what: impl Into<String>) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn store(&self) -> Result<Store, LogError> {
        current(&self.store).map_err(storage(&self.path))
    }

    /// fsyncs the files in sled's `blobs` directory not synced before, then the
    /// directory. Values kept in blobs are rare by design (see `SEGMENT_BYTES`): the
    /// checkpoint and large outbox steps.
    fn sync_blobs(&self) -> Result<(), LogError> {
        let dir = self.path.join("sled").join("blobs");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path, source }
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                match std::fs::File::open(&path) {
                    Ok(f) => f.sync_all().map_err(io(&path))?,
                    // Removed by sled's cleanup since the listing.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&path)(e)),
                }
                new = true;
            }
            present.insert(name);
        }
        // Names sled has removed are forgotten (sled does not reuse them).
        *synced = present;
        if !new {
            return Ok(());
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    }

    /// Whether the database still has the checkpoint tree of an earlier version.
    fn has_legacy_checkpoint(db: &sled::Db) -> bool {
        db.tree_names()
            .iter()
            .any(|n| n.as_ref() == CHECKPOINT_TREE.as_bytes())
    }

    /// The head as last stored (with the batch that moved it): where a reader beside
    /// the appending process may bound what it reads, so that records and the inputs
    /// quarantined or deduplicated with them are read alike.
    pub fn stored_head(&self) -> Result<Head, LogError> {
        let tree = self.store()?.tree;
        match tree.get(HEAD).map_err(storage(&self.path))? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| self.corrupt(format!("the head record does not decode: {e}"))),
            None => Ok(Head::default()),
        }
    }

    /// Writes the records `from ..= to` as `export` prints them: each event's bytes as
    /// they were accepted, one a line — or, `with_chain`, wrapped as
    /// `{"seq":N,"hash":"…","event":<the bytes>}` for an external audit of the chain.
    /// `out` is called with a buffer of whole lines at a time and may stop the export
    /// by returning false.
    pub fn export(
        &self,
        from: u64,
        to: u64,
        with_chain: bool,
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(1 << 16);
        for record in self.records_from(from) {
            let r = record?;
            if r.seq > to {
                break;
            }
            if with_chain {
                buf.extend_from_slice(b"{\"seq\":");
                buf.extend_from_slice(r.seq.to_string().as_bytes());
                buf.extend_from_slice(b",\"hash\":\"");
                buf.extend_from_slice(ledger_core::hex(&r.hash).as_bytes());
                buf.extend_from_slice(b"\",\"event\":");
                buf.extend_from_slice(&r.raw);
                buf.extend_from_slice(b"}\n");
            } else {
                buf.extend_from_slice(&r.raw);
                buf.push(b'\n');
            }
            if buf.len() >= 1 << 16 {
                if !out(&buf) {
                    return Ok(());
                }
                buf.clear();
            }
        }
        if !buf.is_empty() {
            out(&buf);
        }
        Ok(())
    }

    /// Every record with `seq ≥ from`, in order, segment by segment.
    pub fn records_from(&self, from: u64) -> impl Iterator<Item = Result<Record, LogError>> + '_ {
        self.segments_from(from).flat_map(move |segment| {
            let records: Vec<Result<Record, LogError>> = match segment {
                Err(e) => vec![Err(e)],
                Ok(segment) => segment
                    .records(self)
                    .filter(|r| r.as_ref().map_or(true, |r| r.seq >= from))
                    .map(|r| r.map(|r| r.to_record()))
                    .collect(),
            };
            records
        })
    }

    /// The record at position `seq`, if the log holds it: one segment read, only that
    /// record copied out.
    pub fn record_at(&self, seq: u64) -> Result<Option<Record>, LogError> {
        let Some(segment) = self.segments_from(seq).next().transpose()? else {
            return Ok(None);
        };
        for r in segment.records(self) {
            let r = r?;
            if r.seq == seq {
                return Ok(Some(r.to_record()));
            }
            if r.seq > seq {
                break;
            }
        }
        Ok(None)
    }

    /// The stored segments from the one holding position `from` on, in order (read
    /// their records with [`Segment::records`], without copying them).
    pub fn segments_from(&self, from: u64) -> impl Iterator<Item = Result<Segment, LogError>> + '_ {
        let (tree, closed) = match self.store() {
            Ok(store) => (Some(store.tree), None),
            Err(e) => (None, Some(Err(e))),
        };
        closed
            .into_iter()
            .chain(tree.into_iter().flat_map(move |tree| {
                // Start at the segment holding `from`: the last segment key ≤ from.
                let start = tree
                    .range(..=key(SEGMENT, from.max(1)))
                    .next_back()
                    .and_then(|r| r.ok())
                    .and_then(|(k, _)| key_number(&k, SEGMENT))
                    .unwrap_or(1);
                tree.range(key(SEGMENT, start)..key(SEGMENT, u64::MAX))
                    .map(move |item| {
                        let (k, bytes) = item.map_err(storage(&self.path))?;
                        let first = key_number(&k, SEGMENT)
                            .ok_or_else(|| self.corrupt("a segment key has the wrong shape"))?;
                        Ok(Segment { first, bytes })
                    })
            }))
    }

    /// Every quarantined input, by arrival.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, LogError> {
        self.scan_decoded(QUARANTINE, 0, "a quarantine entry")
    }

    /// Every exact duplicate, by arrival.
    pub fn duplicates(&self) -> Result<Vec<Duplicate>, LogError> {
        self.scan_decoded(DUPLICATE, 0, "a duplicate mark")
    }

    /// Quarantined inputs that arrived after `arrival`.
    pub fn quarantined_after(&self, arrival: u64) -> Result<Vec<Quarantined>, LogError> {
        self.scan_decoded(QUARANTINE, arrival, "a quarantine entry")
    }

    /// Exact duplicates that arrived after `arrival`.
    pub fn duplicates_after(&self, arrival: u64) -> Result<Vec<Duplicate>, LogError> {
        self.scan_decoded(DUPLICATE, arrival, "a duplicate mark")
    }

    /// Decodes every value under a one-byte key prefix with a number above `after`, in
    /// key order.
    fn scan_decoded<T: serde::de::DeserializeOwned>(
        &self,
        prefix: u8,
        after: u64,
        what: &str,
    ) -> Result<Vec<T>, LogError> {
        let start = key(prefix, after.saturating_add(1));
        self.store()?
            .tree
            .range(start..=key(prefix, u64::MAX))
            .map(|item| {
                let (_, v) = item.map_err(storage(&self.path))?;
                postcard::from_bytes(&v)
                    .map_err(|e| self.corrupt(format!("{what} does not decode: {e}")))
            })
            .collect()
    }

    /// Stores a checkpoint payload, replacing the previous one atomically: written to a
    /// file aside, synced, renamed over `CHECKPOINT`, and the directory synced. A crash
    /// leaves either the old checkpoint or the new one, never a mix (and a damaged one is
    /// refused by its checksum, then the log replayed).
    pub fn save_checkpoint(&self, payload: &[u8]) -> Result<(), LogError> {
        write_durably(&self.path, CHECKPOINT_FILE, payload).map_err(|source| LogError::Io {
            path: self.path.join(CHECKPOINT_FILE),
            source,
        })?;
        // A checkpoint left in sled by an earlier version is superseded: drop it, so
        // that sled can reclaim its space.
        let db = self.store()?.db;
        if LogReader::has_legacy_checkpoint(&db) {
            db.drop_tree(CHECKPOINT_TREE).map_err(storage(&self.path))?;
            self.flush()?;
        }
        Ok(())
    }

    /// The stored checkpoint payload, if any: the `CHECKPOINT` file, or else one that
    /// an earlier version kept in sled.
    pub fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, LogError> {
        let path = self.path.join(CHECKPOINT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogError::Io { path, source }),
        }
        let db = self.store()?.db;
        if !LogReader::has_legacy_checkpoint(&db) {
            return Ok(None);
        }
        let tree = db.open_tree(CHECKPOINT_TREE).map_err(storage(&self.path))?;
        Ok(tree
            .get(CHECKPOINT_KEY)
            .map_err(storage(&self.path))?
            .map(|v| v.to_vec()))
    }

    /// The payout outbox of this directory (its own tree of the same database), checked
    /// to open now, and followed across [`Log::reopen`].
    pub fn outbox(&self) -> Result<crate::OutboxStore, LogError> {
        let handle = TreeHandle {
            store: self.store.clone(),
            name: crate::outbox::TREE.to_string(),
        };
        handle.get().map_err(storage(&self.path))?;
        Ok(crate::OutboxStore::new(handle, self.path.clone()))
    }

    /// Direct access to the log's tree, for `verify`.
    pub(crate) fn raw_tree(&self) -> Result<sled::Tree, LogError> {
        Ok(self.store()?.tree)
    }

    /// The stored bytes of the segment whose first record is `first`, as they are on
    /// disk: for tests and tools that damage a directory on purpose.
    #[doc(hidden)]
    pub fn raw_segment(&self, first: u64) -> Result<Option<Vec<u8>>, LogError> {
        let tree = self.raw_tree()?;
        let value = tree.get(key(SEGMENT, first)).map_err(storage(&self.path))?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// Overwrites the segment whose first record is `first` with `bytes`, bypassing
    /// every check: for tests that damage a directory on purpose (never for repairs).
    #[doc(hidden)]
    pub fn overwrite_raw_segment(&self, first: u64, bytes: &[u8]) -> Result<(), LogError> {
        let tree = self.raw_tree()?;
        tree.insert(key(SEGMENT, first), bytes)
            .map_err(storage(&self.path))?;
        Ok(())
    }

    /// Makes everything written so far durable: sled's flush (which writes its log
    /// with `sync_file_range`), an fdatasync of sled's log file (which commits the
    /// file's size and block map too), then an fsync of sled's blob files, which sled
    /// itself never syncs.
    pub fn flush(&self) -> Result<(), LogError> {
        let store = self.store()?;
        store.db.flush().map_err(storage(&self.path))?;
        store.file.sync_data().map_err(|source| LogError::Io {
            path: self.path.join("sled").join("db"),
            source,
        })?;
        self.sync_blobs()
    }
}

/// One group-committed batch of records as stored.
pub struct Segment {
    /// The sequence its key names (that of its first record).
    pub first: u64,
    bytes: sled::IVec,
}

impl Segment {
    /// Its records, borrowed; a record that does not decode ends it with an error.
    pub fn records<'a>(
        &'a self,
        log: &'a LogReader,
    ) -> impl Iterator<Item = Result<RecordRef<'a>, LogError>> + 'a {
        segment_records(&self.bytes).map(move |r| {
            r.map_err(|e| {
                log.corrupt(format!(
                    "segment {}: {} at byte {}",
                    self.first, e.reason, e.offset
                ))
            })
        })
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of integers, strings and byte arrays always encode; an empty value
    // written in their place would be a silently damaged record, so this is asserted.
    postcard::to_allocvec(value).expect("log entries of plain data encode")
}

/// Inputs per intake thread below which a batch is checked on the calling thread.
const PARALLEL_INTAKE_MIN: usize = 512;

/// Runs intake on every input, in order; large batches are split across the machine's
/// cores (intake is pure, and the slowest part of an append).
fn check_all(inputs: &[Input<'_>]) -> Vec<Result<Accepted, ledger_core::IntakeRefusal>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(inputs.len() / PARALLEL_INTAKE_MIN)
        .max(1);
    if threads == 1 {
        return inputs.iter().map(|i| i.transport.check(i.raw)).collect();
    }
    let per_thread = inputs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = inputs.chunks(per_thread);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|i| i.transport.check(i.raw))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = first.iter().map(|i| i.transport.check(i.raw)).collect();
        for handle in others {
            match handle.join() {
                Ok(part) => all.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    })
}

/// Opens the database and the log's tree in `dir`.
fn open_store(dir: &Path) -> Result<Store, LogError> {
    let db = open_sled(&dir.join("sled"))?;
    let tree = db.open_tree("log").map_err(storage(dir))?;
    let path = dir.join("sled").join("db");
    let file = std::fs::File::open(&path).map_err(|source| LogError::Io { path, source })?;
    Ok(Store {
        db,
        tree,
        file: Arc::new(file),
    })
}

/// Largest segment value (unless one record is larger). sled stores a value that does not
/// fit a quarter of its log segment, and a tree leaf whose (up to 17) values together do
/// not, in a separate "blob" file that it never fsyncs ([`Log::flush`] does it for it);
/// records kept in small values stay inside sled's log, which its flush fsyncs. A batch
/// of more than ~1,500 typical events still fills a leaf past that before sled splits it.
const SEGMENT_BYTES: usize = 24 << 10;

/// sled's log segment: a leaf of 17 segments fits a quarter of it. Larger segments cost
/// more per flush (sled starts every flush's next buffer as a fresh zeroed segment).
const SLED_SEGMENT_BYTES: usize = 2 << 20;

/// sled's page cache.
const CACHE_BYTES: u64 = 64 << 20;

/// Opens sled, turning a panic inside sled (seen on some damaged files) into an error.
fn open_sled(path: &Path) -> Result<sled::Db, LogError> {
    let config = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        // Records are read once, in order, on open and on replay: a large page cache
        // only costs memory (sled's default is 1 GiB).
        .cache_capacity(CACHE_BYTES)
        .segment_size(SLED_SEGMENT_BYTES)
        // Durability comes from the explicit flush of every batch, not from a timer.
        .flush_every_ms(None);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())) {
        // sled says so in its message only (an `Other` I/O error).
        Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
            Err(LogError::InUse {
                path: path.parent().unwrap_or(path).to_path_buf(),
            })
        }
        Ok(result) => result.map_err(|source| LogError::Storage {
            path: path.to_path_buf(),
            source: StorageError(source),
        }),
        Err(_) => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            what: "sled could not open its files (they appear damaged)".into(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Opens `dir` again right after its last handle was dropped: sled's own threads may
    /// hold its file lock a moment longer (as `reopen` knows), so an `InUse` is waited
    /// out, a bounded while.
    pub(crate) fn open_when_free(dir: &Path) -> Log {
        for _ in 0..200 {
            match Log::open(dir) {
                Err(LogError::InUse { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other.unwrap(),
            }
        }
        panic!("{} stayed locked for 4 s", dir.display());
    }

    /// The identity index read back from its runs (and the log after them) finds every
    /// logged event's re-send, whether the runs are whole, damaged, gone or of another
    /// log; a rebuild of a long log holds one batch of identities in memory at a time.
    #[test]
    fn the_identity_index_comes_back_from_its_runs_or_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> =
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(12, 900)).collect();
        let mut log = Log::open(dir.path()).unwrap();
        // The first append reads the (empty) log and writes nothing; appends after it
        // stay in memory until a batch is full.
        log.append_batch(&inputs(&lines[..600])).unwrap();
        let idx = dir.path().join(crate::identities::DIR);
        assert!(crate::identities::Manifest::load(&idx).is_none());
        let manifest = |log: &Log| {
            let m = crate::identities::Manifest::load(&idx).unwrap();
            let head = log.head();
            assert_eq!((m.through, m.hash), (head.last_seq, head.last_hash));
            assert_eq!(log.index.as_ref().unwrap().through(), head.last_seq);
            // Only the runs it names are in the directory.
            let mut files: Vec<String> = std::fs::read_dir(&idx)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| f != "MANIFEST")
                .collect();
            files.sort();
            let mut named: Vec<String> = m.runs.iter().map(|r| r.file.clone()).collect();
            named.sort();
            assert_eq!(files, named);
            m
        };
        let resend_all = |log: &mut Log| {
            log.reopen().unwrap();
            let head = log.head();
            let again = log.append_batch(&inputs(&lines)).unwrap();
            assert!(again.iter().all(|o| !matches!(o, Outcome::Appended { .. })));
            assert_eq!(log.head().last_seq, head.last_seq);
        };
        // A re-open reads the log past the runs (none yet), and writes what it read.
        log.reopen().unwrap();
        log.ensure_index().unwrap();
        let first = manifest(&log);
        log.append_batch(&inputs(&lines[600..])).unwrap();
        resend_all(&mut log);
        let whole = manifest(&log);
        assert!(whole.runs.len() >= 2 || whole.runs != first.runs);
        // Another re-open finds the runs whole and reads nothing from the log.
        resend_all(&mut log);
        assert_eq!(manifest(&log), whole);
        // A damaged run: rebuilt from the log.
        let run = idx.join(&whole.runs[0].file);
        let mut damaged = std::fs::read(&run).unwrap();
        damaged[20] ^= 0xff;
        std::fs::write(&run, &damaged).unwrap();
        resend_all(&mut log);
        let rebuilt = manifest(&log);
        assert!(rebuilt.runs.iter().all(|r| !whole.runs.contains(r)));
        // The manifest gone, or naming another log's position: rebuilt too.
        std::fs::remove_file(idx.join("MANIFEST")).unwrap();
        resend_all(&mut log);
        let again = manifest(&log);
        assert!(again.runs.iter().all(|r| !rebuilt.runs.contains(r)));
        let mut foreign = again.clone();
        foreign.hash[0] ^= 1;
        let mut bytes = postcard::to_stdvec(&foreign).unwrap();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(idx.join("MANIFEST"), &bytes).unwrap();
        resend_all(&mut log);
        assert!(manifest(&log).runs.iter().all(|r| !again.runs.contains(r)));
    }

    /// The lines as inputs, numbered from 1 (shared with the history tests).
    pub(crate) fn inputs(lines: &[String]) -> Vec<Input<'_>> {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| Input {
                raw: l.as_bytes(),
                line: Some(i as u64 + 1),
                time_ns: 0,
                transport: Transport::None,
            })
            .collect()
    }

    #[test]
    fn a_rebased_source_position_is_durable_and_batches_go_on_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> =
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(4, 20)).collect();
        let mut log = Log::open(dir.path()).unwrap();
        log.append_batch_from(&inputs(&lines[..10]), Some(500))
            .unwrap();
        assert_eq!(log.head().source_position, 500);
        let last_seq = log.head().last_seq;
        log.rebase_source(0).unwrap();
        drop(log);
        let mut log = open_when_free(dir.path());
        assert_eq!(log.head().source_position, 0);
        assert_eq!(log.head().last_seq, last_seq);
        log.append_batch_from(&inputs(&lines[10..]), Some(10))
            .unwrap();
        assert_eq!(log.head().source_position, 10);
        assert!(log.head().last_seq > last_seq);
    }

    #[test]
    fn the_log_tells_what_it_holds_by_identity_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> =
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(4, 20)).collect();
        let mut log = Log::open(dir.path()).unwrap();
        log.append_batch(&inputs(&lines[..10])).unwrap();
        let held = lines[..10]
            .iter()
            .find(|l| intake::check(l.as_bytes()).is_ok())
            .unwrap();
        let new = lines[10..]
            .iter()
            .find(|l| intake::check(l.as_bytes()).is_ok() && !lines[..10].iter().any(|h| h == *l))
            .unwrap();
        assert_eq!(
            log.holds(held.as_bytes(), Transport::None).unwrap(),
            Some(true)
        );
        assert_eq!(
            log.holds(new.as_bytes(), Transport::None).unwrap(),
            Some(false)
        );
        assert_eq!(log.holds(b"{not json", Transport::None).unwrap(), None);
        // The identity of a logged event with other content: a conflicting re-use.
        let mut event: serde_json::Value = serde_json::from_str(held).unwrap();
        event["time"] = serde_json::json!("2020-01-01T00:00:00Z");
        let conflict = serde_json::to_vec(&event).unwrap();
        assert!(intake::check(&conflict).is_ok());
        assert_eq!(log.holds(&conflict, Transport::None).unwrap(), None);
    }

    #[test]
    fn a_reopened_log_reads_its_state_back_and_its_handles_follow() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> =
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(9, 400)).collect();
        let mut log = Log::open(dir.path()).unwrap();
        let reader = log.reader();
        let outbox = log.outbox().unwrap();
        log.append_batch(&inputs(&lines[..200])).unwrap();
        let head = log.head();
        outbox.record(0, 3, head.last_seq).unwrap();

        log.reopen().unwrap();
        assert_eq!(log.head(), head);
        // The identity index came back: a re-send is a duplicate, nothing is appended.
        let again = log.append_batch(&inputs(&lines[..200])).unwrap();
        assert!(again.iter().all(|o| !matches!(o, Outcome::Appended { .. })));
        assert_eq!(log.head().last_seq, head.last_seq);
        log.append_batch(&inputs(&lines[200..])).unwrap();
        // Handles taken before the re-open read the new store.
        assert_eq!(outbox.recorded().unwrap(), 3);
        let records = reader.records_from(1).count() as u64;
        assert_eq!(records, log.head().last_seq);
        drop((log, reader, outbox));
        // sled's own threads may hold its file lock a moment after the last handle is
        // dropped (as `reopen` knows): wait for it, a bounded while.
        let reopened = open_when_free(dir.path());
        assert_eq!(reopened.records_from(1).count() as u64, records);
    }

    #[test]
    fn a_large_batch_stays_inside_sleds_synced_log() {
        // sled never fsyncs the separate files it keeps large values in; a batch of
        // ~400 KB must be stored as values small enough to stay in its log.
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> =
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(3, 1200)).collect();
        let mut log = Log::open(dir.path()).unwrap();
        log.append_batch(&inputs(&lines)).unwrap();
        assert!(log.head().last_seq > 1000);
        let blobs = dir.path().join("sled").join("blobs");
        let files = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
        assert_eq!(files, 0, "values went to blob files in {}", blobs.display());
        let segments = log.segments_from(1).count();
        assert!(segments > 10, "{segments} segments");
        assert_eq!(log.records_from(1).count() as u64, log.head().last_seq);
    }

    /// Files in `sled/blobs` (sled keeps large values there).
    fn blobs(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("sled").join("blobs")).map_or(0, |d| d.count())
    }

    #[test]
    fn a_checkpoint_is_one_file_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> =
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(4, 3000)).collect();
        for (round, part) in lines.chunks(1000).enumerate() {
            let mut log = Log::open(dir.path()).unwrap();
            log.append_batch(&inputs(part)).unwrap();
            // Large enough that sled would have kept it as a blob.
            let payload = vec![round as u8; (3 << 20) + round];
            log.save_checkpoint(&payload).unwrap();
            assert_eq!(log.load_checkpoint().unwrap(), Some(payload));
        }
        let log = Log::open(dir.path()).unwrap();
        let stored = log.load_checkpoint().unwrap().unwrap();
        assert_eq!((stored.len(), stored[0]), ((3 << 20) + 2, 2));
        assert!(!dir.path().join("CHECKPOINT.tmp").exists());
        assert_eq!(blobs(dir.path()), 0, "no checkpoint went into sled");
    }

    #[test]
    fn a_checkpoint_kept_in_sled_by_an_earlier_version_is_read_then_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        assert_eq!(log.load_checkpoint().unwrap(), None);
        let db = log.store().unwrap().db;
        let legacy = vec![1u8; 2 << 20];
        db.open_tree(CHECKPOINT_TREE)
            .unwrap()
            .insert(CHECKPOINT_KEY, legacy.as_slice())
            .unwrap();
        log.flush().unwrap();
        assert_eq!(log.load_checkpoint().unwrap(), Some(legacy));
        let new = vec![2u8; 1000];
        log.save_checkpoint(&new).unwrap();
        assert_eq!(log.load_checkpoint().unwrap(), Some(new));
        assert!(!LogReader::has_legacy_checkpoint(&db));
    }
}
