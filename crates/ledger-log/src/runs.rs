//! Sorted runs: a store of key → value records written in batches and read by key,
//! for the fold's lookups that grow with the log ([`ledger_core::store`]).
//!
//! Each [`RunStore::write`] turns one batch into an immutable *run*: a file of the
//! batch's records sorted by key, cut into blocks of about 4 KiB, each block followed
//! by a hash of its bytes. In memory a run keeps only the first key of each block and
//! a blocked Bloom filter of its keys (about 10 bits a key), so a lookup of a key that
//! is nowhere — almost every lookup: a new identity, a new sale id — reads no file, and
//! one that is somewhere reads one block per run that may hold it. Runs merge like a
//! binary counter (two runs of the same level become one of the next level), so a
//! store of `n` records has about `log2(n / batch)` runs and each record is rewritten
//! that many times, sequentially.
//!
//! Why by hand: what the fold needs is narrower than a general key-value store —
//! write-once sorted batches, point reads that almost always miss, no deletes, no
//! transactions — and the general stores measured worse at exactly this: sled 0.34
//! held ~800 MB more resident than its configured cache for 1.6M lookups of a 1M-event
//! replay and took ~3× the fold's time; fjall (an LSM) brings ~60 crates into a build
//! on 2 cores and took ~5 µs per random insert. A run is a few hundred lines: sorting,
//! sequential writes, `pread` of one block.
//!
//! A store is temporary (its directory goes with it: `replay --events`) or lives in a
//! directory of its own ([`RunStore::open_dir`]: the service's, under a data directory),
//! where a checkpoint names the runs it relies on ([`RunName`]). There run files are
//! fsynced when written, a run a merge replaced is deleted only once a later checkpoint
//! no longer names it ([`RunStore::collect`]), and opening deletes every run file the
//! checkpoint does not name (written after it, by a process that then stopped).

use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Bytes after which a block is closed (a record is never split across blocks).
const BLOCK_BYTES: usize = 4096;
/// Bloom filter bits per key; with 8 probes in one 512-bit block, ~1–2% false positives.
const FILTER_BITS_PER_KEY: usize = 10;
const FILTER_PROBES: u32 = 8;

/// A read or a write of a run file failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{doing} {path}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A block's bytes do not match the hash written after them, or do not decode.
    #[error("run file {path} is damaged at byte {offset}")]
    Damaged { path: PathBuf, offset: u64 },
}

/// The hash of keys (filters) and blocks (damage): a fixed seed, so the same bytes
/// hash alike in every process.
fn hash(bytes: &[u8]) -> u64 {
    foldhash::quality::FixedState::with_seed(0x1ed9_e5a1_0c4b_77e3).hash_one(bytes)
}

/// A blocked Bloom filter: each key sets [`FILTER_PROBES`] bits inside one 512-bit
/// block (one cache line), chosen by its hash.
struct Filter {
    blocks: Box<[[u64; 8]]>,
}

impl Filter {
    fn with_keys(keys: usize) -> Filter {
        let blocks = (keys * FILTER_BITS_PER_KEY).div_ceil(512).max(1);
        Filter {
            blocks: vec![[0u64; 8]; blocks].into_boxed_slice(),
        }
    }

    /// The block and the bits of a key, by the key's [`hash`] `h`.
    fn probes(&self, h: u64) -> (usize, impl Iterator<Item = (usize, u64)>) {
        // The block by the whole hash (a multiply-shift range reduction), each probe's
        // bit by the top 9 bits of a further mix of it.
        let block = ((u128::from(h) * self.blocks.len() as u128) >> 64) as usize;
        let bits = (0..u64::from(FILTER_PROBES)).map(move |i| {
            let mixed =
                (h ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xd6e8_feb8_6659_fd93);
            let bit = ((mixed ^ (mixed >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 55) as usize;
            (bit / 64, 1u64 << (bit % 64))
        });
        (block, bits)
    }

    /// Adds the key whose [`hash`] is `h`.
    fn insert(&mut self, h: u64) {
        let (block, bits) = self.probes(h);
        let words = &mut self.blocks[block];
        for (word, mask) in bits {
            words[word] |= mask;
        }
    }

    /// Whether the key whose [`hash`] is `h` may have been added (never a false no).
    fn may_contain(&self, h: u64) -> bool {
        let (block, mut bits) = self.probes(h);
        let words = &self.blocks[block];
        bits.all(|(word, mask)| words[word] & mask != 0)
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * 64
    }
}

/// (first key, offset) of each block of a run, in key order.
type BlockIndex = Vec<(Box<[u8]>, u64)>;

/// One immutable run: its file, and in memory the first key of each block and the
/// filter.
struct Run {
    path: PathBuf,
    file: File,
    /// Whether dropping the run deletes its file (a temporary store's runs).
    temporary: bool,
    level: u32,
    records: u64,
    /// (first key, offset) of each block, in key order; the last entry's block ends at
    /// `end`.
    index: BlockIndex,
    end: u64,
    filter: Filter,
}

impl Drop for Run {
    fn drop(&mut self) {
        // A run is replaced only by a merge that wrote its records elsewhere; a
        // directory's run files go when no checkpoint names them (`collect`).
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a varint from `reader`, appending its bytes to `out`.
fn read_varint_from(reader: &mut impl Read, out: &mut Vec<u8>) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8; 1];
        reader.read_exact(&mut b).ok()?;
        out.push(b[0]);
        n |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

/// The key's and the value's ranges of the record at `*at` of a block's bytes, moving
/// `*at` past it; `None` if the bytes there are not a whole record (damage).
fn next_record(
    block: &[u8],
    at: &mut usize,
) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let mut pos = *at;
    let klen = usize::try_from(read_varint(block, &mut pos)?).ok()?;
    let vlen = usize::try_from(read_varint(block, &mut pos)?).ok()?;
    let key_end = pos.checked_add(klen)?;
    let value_end = key_end.checked_add(vlen)?;
    (value_end <= block.len()).then(|| {
        *at = value_end;
        (pos..key_end, key_end..value_end)
    })
}

/// The records of one block's bytes (without its trailing hash), in order.
fn block_records(block: &[u8]) -> impl Iterator<Item = Option<(&[u8], &[u8])>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at == block.len() {
            return None;
        }
        let record = next_record(block, &mut at);
        if record.is_none() {
            at = block.len(); // stop after the first damaged record
        }
        Some(record.map(|(k, v)| (&block[k], &block[v])))
    })
}

/// Writes one run file from records given in strictly increasing key order.
struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
    block: Vec<u8>,
    first_key: Option<Box<[u8]>>,
    last_key: Vec<u8>,
    offset: u64,
    index: Vec<(Box<[u8]>, u64)>,
    keys: Vec<u64>,
}

impl RunWriter {
    fn create(path: PathBuf) -> Result<RunWriter, RunError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| RunError::Io {
                doing: "cannot create run file",
                path: path.clone(),
                source,
            })?;
        Ok(RunWriter {
            path,
            out: BufWriter::with_capacity(1 << 16, file),
            block: Vec::with_capacity(BLOCK_BYTES * 2),
            first_key: None,
            last_key: Vec::new(),
            offset: 0,
            index: Vec::new(),
            keys: Vec::new(),
        })
    }

    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), RunError> {
        assert!(
            self.keys.is_empty() || key > self.last_key.as_slice(),
            "run records come in strictly increasing key order"
        );
        if self.first_key.is_none() {
            self.first_key = Some(key.into());
        }
        write_varint(&mut self.block, key.len() as u64);
        write_varint(&mut self.block, value.len() as u64);
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.keys.push(hash(key));
        if self.block.len() >= BLOCK_BYTES {
            self.close_block()?;
        }
        Ok(())
    }

    fn close_block(&mut self) -> Result<(), RunError> {
        let Some(first) = self.first_key.take() else {
            return Ok(());
        };
        let sum = hash(&self.block);
        self.block.extend_from_slice(&sum.to_le_bytes());
        self.out
            .write_all(&self.block)
            .map_err(|source| RunError::Io {
                doing: "cannot write run file",
                path: self.path.clone(),
                source,
            })?;
        self.index.push((first, self.offset));
        self.offset += self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Ends the file; `durable`: fsynced (a directory's runs, which a checkpoint may
    /// name; a temporary store's are derived data, rebuilt by a replay).
    fn finish(mut self, level: u32, durable: bool) -> Result<Run, RunError> {
        self.close_block()?;
        let io = |path: &Path, source| RunError::Io {
            doing: "cannot finish run file",
            path: path.to_path_buf(),
            source,
        };
        let file = self
            .out
            .into_inner()
            .map_err(|e| io(&self.path, e.into_error()))?;
        if durable {
            file.sync_all().map_err(|e| io(&self.path, e))?;
        }
        let mut filter = Filter::with_keys(self.keys.len());
        for &h in &self.keys {
            filter.insert(h);
        }
        Ok(Run {
            path: self.path,
            file,
            temporary: !durable,
            level,
            records: self.keys.len() as u64,
            index: self.index,
            end: self.offset,
            filter,
        })
    }
}

impl Run {
    /// Reads a run file back, a block at a time: its block index and filter, every
    /// block checked.
    fn load(path: PathBuf, level: u32) -> Result<Run, RunError> {
        // Two passes over the file: the first checks every block and counts the keys,
        // the second fills a filter sized for them — rather than holding every key's
        // hash meanwhile (8 bytes a record, doubled by growth: ~100 MB for a run of
        // 5M identities, held on after as freed memory).
        let mut records = 0u64;
        let (index, end) = Run::scan_file(&path, &mut |_| records += 1)?;
        let mut filter = Filter::with_keys(usize::try_from(records).unwrap_or(usize::MAX));
        Run::scan_file(&path, &mut |key| filter.insert(hash(key)))?;
        let io = |source| RunError::Io {
            doing: "cannot read run file",
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        Ok(Run {
            file,
            temporary: false,
            level,
            records,
            index,
            end,
            filter,
            path,
        })
    }

    /// Reads the run file at `path` whole, checking each block's hash and calling
    /// `key` with every key; returns the block index and the file's length.
    fn scan_file(path: &Path, key: &mut dyn FnMut(&[u8])) -> Result<(BlockIndex, u64), RunError> {
        let io = |source| RunError::Io {
            doing: "cannot read run file",
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let end = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let damaged = |offset: u64| RunError::Damaged {
            path: path.to_path_buf(),
            offset,
        };
        let mut index = Vec::new();
        let mut block = Vec::with_capacity(BLOCK_BYTES * 2);
        let mut start = 0u64;
        while start < end {
            // A block holds records until it reaches BLOCK_BYTES, then its hash; the
            // last one ends with its hash at the end of the file.
            block.clear();
            let mut first: Option<Box<[u8]>> = None;
            loop {
                let klen =
                    read_varint_from(&mut reader, &mut block).ok_or_else(|| damaged(start))?;
                let vlen =
                    read_varint_from(&mut reader, &mut block).ok_or_else(|| damaged(start))?;
                let at = block.len();
                let len = usize::try_from(klen.checked_add(vlen).ok_or_else(|| damaged(start))?)
                    .map_err(|_| damaged(start))?;
                if start + (at + len) as u64 > end {
                    return Err(damaged(start));
                }
                block.resize(at + len, 0);
                reader.read_exact(&mut block[at..]).map_err(io)?;
                let k = &block[at..at + klen as usize];
                if first.is_none() {
                    first = Some(k.into());
                }
                key(k);
                let consumed = start + block.len() as u64;
                if block.len() >= BLOCK_BYTES || end - consumed == 8 {
                    break;
                }
            }
            let mut sum = [0u8; 8];
            reader.read_exact(&mut sum).map_err(|_| damaged(start))?;
            if hash(&block) != u64::from_le_bytes(sum) {
                return Err(damaged(start));
            }
            index.push((first.ok_or_else(|| damaged(start))?, start));
            start += block.len() as u64 + 8;
        }
        Ok((index, end))
    }

    /// The file offsets where block `i` starts and ends (its hash included).
    fn block_bounds(&self, i: usize) -> (u64, u64) {
        let end = self.index.get(i + 1).map_or(self.end, |b| b.1);
        (self.index[i].1, end)
    }

    fn damaged(&self, offset: u64) -> RunError {
        RunError::Damaged {
            path: self.path.clone(),
            offset,
        }
    }

    fn read_error(&self, source: std::io::Error) -> RunError {
        RunError::Io {
            doing: "cannot read run file",
            path: self.path.clone(),
            source,
        }
    }

    /// Checks the bytes of the block read from `start` against the hash that ends them,
    /// and cuts the hash off.
    fn check_block(&self, start: u64, buf: &mut Vec<u8>) -> Result<(), RunError> {
        let body_len = buf
            .len()
            .checked_sub(8)
            .ok_or_else(|| self.damaged(start))?;
        let (body, sum) = buf.split_at(body_len);
        let sum = u64::from_le_bytes(sum.try_into().map_err(|_| self.damaged(start))?);
        if hash(body) != sum {
            return Err(self.damaged(start));
        }
        buf.truncate(body_len);
        Ok(())
    }

    /// The bytes of block `i` (checked against its hash), without the hash.
    fn block(&self, i: usize) -> Result<Vec<u8>, RunError> {
        let (start, end) = self.block_bounds(i);
        let mut buf = vec![0u8; (end - start) as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(|e| self.read_error(e))?;
        self.check_block(start, &mut buf)?;
        Ok(buf)
    }

    /// The value of `key` (whose [`hash`] is `h`) in this run.
    fn get(&self, key: &[u8], h: u64) -> Result<Option<Vec<u8>>, RunError> {
        if !self.filter.may_contain(h) {
            return Ok(None);
        }
        // The last block whose first key is ≤ key.
        let i = self
            .index
            .partition_point(|(first, _)| first.as_ref() <= key);
        let Some(i) = i.checked_sub(1) else {
            return Ok(None);
        };
        let block = self.block(i)?;
        for record in block_records(&block) {
            let (k, v) = record.ok_or_else(|| self.damaged(self.index[i].1))?;
            match k.cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(v.to_vec())),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// Every record, in key order, read sequentially (for merges).
    fn scan(&self) -> Result<RunScan<'_>, RunError> {
        // Its own handle: the run's file is read with `pread`, this one sequentially.
        let file = File::open(&self.path).map_err(|e| self.read_error(e))?;
        let mut scan = RunScan {
            run: self,
            reader: BufReader::with_capacity(1 << 16, file),
            block: 0,
            buf: Vec::new(),
            at: 0,
            current: None,
        };
        scan.advance()?;
        Ok(scan)
    }
}

/// A key and its value, owned.
type Record = (Vec<u8>, Vec<u8>);

/// A sequential reader of a run's records, block by block, without a copy per record:
/// [`RunScan::current`] points into the block read last.
struct RunScan<'a> {
    run: &'a Run,
    reader: BufReader<File>,
    /// The next block to read.
    block: usize,
    /// The current block's bytes, without its hash.
    buf: Vec<u8>,
    /// Where the next record of `buf` starts.
    at: usize,
    /// The current record's key and value, as ranges of `buf`.
    current: Option<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl RunScan<'_> {
    fn current(&self) -> Option<(&[u8], &[u8])> {
        let (k, v) = self.current.clone()?;
        Some((&self.buf[k], &self.buf[v]))
    }

    /// Moves to the next record (reading the next block when this one is done).
    fn advance(&mut self) -> Result<(), RunError> {
        while self.at == self.buf.len() {
            if self.block == self.run.index.len() {
                self.current = None;
                return Ok(());
            }
            self.read_block()?;
        }
        let start = self.run.index[self.block - 1].1;
        let record = next_record(&self.buf, &mut self.at).ok_or_else(|| self.run.damaged(start))?;
        self.current = Some(record);
        Ok(())
    }

    fn read_block(&mut self) -> Result<(), RunError> {
        let (start, end) = self.run.block_bounds(self.block);
        self.buf.resize((end - start) as usize, 0);
        self.reader
            .read_exact(&mut self.buf)
            .map_err(|e| self.run.read_error(e))?;
        self.run.check_block(start, &mut self.buf)?;
        self.at = 0;
        self.block += 1;
        Ok(())
    }
}

/// Where a store keeps its run files.
enum Place {
    Temporary(tempfile::TempDir),
    Dir(PathBuf),
    /// Another process's directory, read in place ([`RunStore::read_only`]).
    ReadOnly(PathBuf),
}

impl Place {
    fn path(&self) -> &Path {
        match self {
            Place::Temporary(dir) => dir.path(),
            Place::Dir(dir) | Place::ReadOnly(dir) => dir,
        }
    }

    fn durable(&self) -> bool {
        matches!(self, Place::Dir(_))
    }
}

/// The runs `named` of directory `dir`, each read whole and checked.
fn load_named(dir: &Path, named: &[RunName]) -> Result<Vec<Arc<Run>>, RunError> {
    named
        .iter()
        .map(|r| Run::load(dir.join(&r.file), r.level).map(Arc::new))
        .collect()
}

/// A run as a checkpoint names it: its file (in the store's directory) and level.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunName {
    pub file: String,
    pub level: u32,
}

/// Runs of sorted records: see the module docs.
pub struct RunStore {
    /// Oldest first; a lookup reads newest first.
    runs: RwLock<Vec<Arc<Run>>>,
    next_file: std::sync::atomic::AtomicU64,
    /// Files of a directory's runs that merges replaced, kept while a checkpoint may
    /// name them.
    retired: std::sync::Mutex<Vec<PathBuf>>,
    // Last: the directory goes after the runs (whose drops remove their files).
    place: Place,
}

/// What a store holds, for figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    pub runs: usize,
    pub records: u64,
    pub file_bytes: u64,
    /// Bytes held in memory: block indexes and filters.
    pub memory_bytes: u64,
}

impl RunStore {
    /// A store in a new directory under `parent` (the system's temporary directory when
    /// `None`), removed when the store is dropped.
    pub fn temporary(parent: Option<&Path>) -> Result<RunStore, RunError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("incentive-ledger-lookups-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .map_err(|source| RunError::Io {
            doing: "cannot create a temporary directory under",
            path: parent.map_or_else(std::env::temp_dir, Path::to_path_buf),
            source,
        })?;
        Ok(RunStore {
            runs: RwLock::new(Vec::new()),
            next_file: std::sync::atomic::AtomicU64::new(1),
            retired: Default::default(),
            place: Place::Temporary(dir),
        })
    }

    /// The store in directory `dir` (created if missing) holding the runs `named`, in
    /// that order (a checkpoint's [`RunStore::manifest`]); every other run file there
    /// is deleted. Each named run is read whole and checked.
    pub fn open_dir(dir: &Path, named: &[RunName]) -> Result<RunStore, RunError> {
        let io = |doing, source| RunError::Io {
            doing,
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", e))?;
        let mut next = 1u64;
        for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list", e))? {
            let entry = entry.map_err(|e| io("cannot list", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(n) = name
                .strip_prefix("run-")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            next = next.max(n + 1);
            if !named.iter().any(|r| r.file == name) {
                std::fs::remove_file(entry.path()).map_err(|e| io("cannot delete a run in", e))?;
            }
        }
        Ok(RunStore {
            runs: RwLock::new(load_named(dir, named)?),
            next_file: std::sync::atomic::AtomicU64::new(next),
            retired: Default::default(),
            place: Place::Dir(dir.to_path_buf()),
        })
    }

    /// The runs `named` of directory `dir`, for reading only: nothing there is
    /// deleted, written or merged (a tool reading a directory another process may
    /// hold). Writes to it are refused.
    pub fn read_only(dir: &Path, named: &[RunName]) -> Result<RunStore, RunError> {
        Ok(RunStore {
            runs: RwLock::new(load_named(dir, named)?),
            next_file: std::sync::atomic::AtomicU64::new(u64::MAX),
            retired: Default::default(),
            place: Place::ReadOnly(dir.to_path_buf()),
        })
    }

    /// The runs as a checkpoint names them, oldest first.
    pub fn manifest(&self) -> Vec<RunName> {
        self.runs()
            .iter()
            .map(|r| RunName {
                file: r
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                level: r.level,
            })
            .collect()
    }

    /// Deletes the files of replaced runs that `kept` (the durable checkpoint's
    /// manifest) does not name.
    pub fn collect(&self, kept: &[RunName]) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.retain(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let named = kept.iter().any(|r| Some(&r.file) == name.as_ref());
            if !named {
                let _ = std::fs::remove_file(path);
            }
            named
        });
    }

    /// fsyncs the directory (after files were added), for a directory's store.
    fn sync_dir(&self) -> Result<(), RunError> {
        if let Place::Dir(dir) = &self.place {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| RunError::Io {
                    doing: "cannot sync",
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn new_file(&self) -> PathBuf {
        let n = self
            .next_file
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.place.path().join(format!("run-{n:08}"))
    }

    fn runs(&self) -> Vec<Arc<Run>> {
        self.runs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Adds a batch of records as a new run (a key given twice keeps its last value;
    /// a key already stored is overwritten), then merges runs of equal level.
    pub fn write(
        &self,
        records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<(), RunError> {
        if let Place::ReadOnly(dir) = &self.place {
            return Err(RunError::Io {
                doing: "cannot write into a store opened read-only at",
                path: dir.clone(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
        let mut sorted: Vec<Record> = records.into_iter().collect();
        if sorted.is_empty() {
            return Ok(());
        }
        // Stable, so that of equal keys the last given comes last and is kept.
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut writer = RunWriter::create(self.new_file())?;
        for (i, (k, v)) in sorted.iter().enumerate() {
            if sorted.get(i + 1).is_some_and(|next| next.0 == *k) {
                continue;
            }
            writer.push(k, v)?;
        }
        let run = Arc::new(writer.finish(0, self.place.durable())?);
        self.runs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(run);
        self.merge()?;
        self.sync_dir()
    }

    /// While the two newest runs are of one level, merges them into one of the next.
    fn merge(&self) -> Result<(), RunError> {
        loop {
            let runs = self.runs();
            let [.., older, newer] = runs.as_slice() else {
                return Ok(());
            };
            if older.level != newer.level {
                return Ok(());
            }
            let merged = Arc::new(merge_two(
                older,
                newer,
                self.new_file(),
                self.place.durable(),
            )?);
            debug_assert!(merged.records <= older.records + newer.records);
            let mut guard = self
                .runs
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Only this store's writer changes the list, one write at a time.
            let n = guard.len();
            assert!(
                n >= 2 && Arc::ptr_eq(&guard[n - 2], older) && Arc::ptr_eq(&guard[n - 1], newer),
                "runs are written and merged by one writer at a time"
            );
            guard.truncate(n - 2);
            guard.push(merged);
            if self.place.durable() {
                let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
                retired.push(older.path.clone());
                retired.push(newer.path.clone());
            }
        }
    }

    /// The value stored under `key`, from the newest run that holds it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RunError> {
        // Under the read lock (no copy of the list): a writer waits for at most the
        // reads of one block per run.
        let runs = self
            .runs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Hashed once for every run's filter.
        let h = hash(key);
        for run in runs.iter().rev() {
            if let Some(v) = run.get(key, h)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    pub fn stats(&self) -> RunStats {
        let runs = self.runs();
        RunStats {
            runs: runs.len(),
            records: runs.iter().map(|r| r.records).sum(),
            file_bytes: runs.iter().map(|r| r.end).sum(),
            memory_bytes: runs
                .iter()
                .map(|r| {
                    let index: usize = r.index.iter().map(|(k, _)| k.len() + 32).sum();
                    (index + r.filter.bytes()) as u64
                })
                .sum(),
        }
    }
}

/// Merges two runs into a new one at the next level; on equal keys `newer` wins.
fn merge_two(older: &Run, newer: &Run, path: PathBuf, durable: bool) -> Result<Run, RunError> {
    let mut writer = RunWriter::create(path)?;
    let (mut a, mut b) = (older.scan()?, newer.scan()?);
    loop {
        match (a.current(), b.current()) {
            (None, None) => break,
            (Some((k, v)), None) => {
                writer.push(k, v)?;
                a.advance()?;
            }
            (None, Some((k, v))) => {
                writer.push(k, v)?;
                b.advance()?;
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    writer.push(ka, va)?;
                    a.advance()?;
                }
                std::cmp::Ordering::Greater => {
                    writer.push(kb, vb)?;
                    b.advance()?;
                }
                std::cmp::Ordering::Equal => {
                    writer.push(kb, vb)?;
                    a.advance()?;
                    b.advance()?;
                }
            },
        }
    }
    writer.finish(older.level + 1, durable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A seeded model check: batches of random writes (new keys, overwrites, keys
    /// sharing prefixes, empty values) against a `BTreeMap`, with lookups of present
    /// and absent keys after every batch.
    #[test]
    fn runs_answer_as_a_map_does() {
        for seed in 1..=6u64 {
            let dir = tempfile::tempdir().unwrap();
            let store = RunStore::temporary(Some(dir.path())).unwrap();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for batch in 0..40 {
                let n = (next() % 900) as usize + 1;
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    let r = next();
                    let key = match r % 4 {
                        0 => format!("S-{:06}", r % 5000).into_bytes(),
                        1 => format!("S-{:06}-{}", r % 5000, r % 3).into_bytes(),
                        2 => (r % 100_000).to_be_bytes().to_vec(),
                        _ => vec![b'I'; (r % 40) as usize + 1],
                    };
                    let value = vec![(r >> 8) as u8; (r >> 16) as usize % 300];
                    records.push((key, value));
                }
                for (k, v) in &records {
                    model.insert(k.clone(), v.clone());
                }
                store.write(records).unwrap();
                for _ in 0..300 {
                    let r = next();
                    let key = match r % 3 {
                        0 => format!("S-{:06}", r % 6000).into_bytes(),
                        1 => (r % 120_000).to_be_bytes().to_vec(),
                        _ => vec![b'I'; (r % 50) as usize],
                    };
                    assert_eq!(
                        store.get(&key).unwrap(),
                        model.get(&key).cloned(),
                        "seed {seed} batch {batch}"
                    );
                }
            }
            for (k, v) in &model {
                assert_eq!(store.get(k).unwrap().as_ref(), Some(v), "seed {seed}");
            }
            let stats = store.stats();
            assert!(stats.runs <= 7, "{stats:?}");
            // Runs of different levels may both hold a key; a merge keeps one of each.
            assert!(stats.records >= model.len() as u64, "{stats:?}");
        }
    }

    /// A directory's store reopened from a manifest answers as before; the files a
    /// merge replaced stay until a manifest no longer names them, files no manifest
    /// names are deleted on open, and a damaged named run is refused on open.
    #[test]
    fn a_directory_store_reopens_from_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("lookups");
        let store = RunStore::open_dir(&at, &[]).unwrap();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut manifests = Vec::new();
        for batch in 0..9u32 {
            let records: Vec<Record> = (0..700u32)
                .map(|i| {
                    let k = format!("K-{:05}", (i * 7 + batch * 131) % 4000).into_bytes();
                    (k, vec![batch as u8; (i % 50) as usize])
                })
                .collect();
            for (k, v) in &records {
                model.insert(k.clone(), v.clone());
            }
            store.write(records).unwrap();
            manifests.push(store.manifest());
        }
        let files = |p: &Path| std::fs::read_dir(p).unwrap().count();
        // Nothing was collected: every file a merge replaced is still there.
        assert!(files(&at) > store.manifest().len());
        let kept = store.manifest();
        store.collect(&kept);
        assert_eq!(files(&at), kept.len());
        drop(store);
        // A stray file from after the checkpoint goes on open.
        std::fs::write(at.join("run-99999999"), b"after the checkpoint").unwrap();
        let store = RunStore::open_dir(&at, &kept).unwrap();
        assert_eq!(files(&at), kept.len());
        for (k, v) in &model {
            assert_eq!(store.get(k).unwrap().as_ref(), Some(v));
        }
        assert_eq!(store.get(b"K-99999").unwrap(), None);
        drop(store);
        let victim = at.join(&kept[0].file);
        let mut bytes = std::fs::read(&victim).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&victim, bytes).unwrap();
        assert!(matches!(
            RunStore::open_dir(&at, &kept),
            Err(RunError::Damaged { .. })
        ));
    }

    #[test]
    fn a_damaged_block_is_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::temporary(Some(dir.path())).unwrap();
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..2000u32)
            .map(|i| (i.to_be_bytes().to_vec(), vec![7u8; 20]))
            .collect();
        store.write(records).unwrap();
        let run = store.runs()[0].clone();
        let bytes = std::fs::read(&run.path).unwrap();
        let mut damaged = bytes.clone();
        damaged[100] ^= 1;
        std::fs::write(&run.path, &damaged).unwrap();
        let key = 3u32.to_be_bytes();
        assert!(matches!(store.get(&key), Err(RunError::Damaged { .. })));
        std::fs::write(&run.path, &bytes).unwrap();
        assert_eq!(store.get(&key).unwrap(), Some(vec![7u8; 20]));
    }

    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        let mut f = Filter::with_keys(100_000);
        for i in 0..100_000u64 {
            f.insert(hash(&i.to_le_bytes()));
        }
        assert!((0..100_000u64).all(|i| f.may_contain(hash(&i.to_le_bytes()))));
        let false_positives = (100_000..200_000u64)
            .filter(|i| f.may_contain(hash(&i.to_le_bytes())))
            .count();
        assert!(
            false_positives < 3_000,
            "{false_positives} false positives in 100,000"
        );
    }
}
