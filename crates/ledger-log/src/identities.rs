//! The log's identity index on disk: which position holds each logged `(source, id)`,
//! so that a re-send is recognised, for a log of any length, with a few bytes of memory
//! per logged event.
//!
//! The identities of positions `1..=through` are [`crate::runs`] in `<data>/identities/`
//! (in memory: a Bloom filter of ~10 bits and a sliver of block index per identity; a
//! new identity — almost every one — reads no file); the identities after `through`
//! are in memory, and every [`FLUSH`] of them become one more run. `MANIFEST` names
//! the runs, `through` and the chain hash of position `through`; it is replaced (written
//! aside, synced, renamed) after the runs it names are synced.
//!
//! Derived data: on open the manifest is trusted only if the log holds its chain hash
//! at `through` and every named run reads back whole; anything else is rebuilt from the
//! log. The positions after `through` are always read from the log's record headers.
//! (Before, the index was a hash table in memory, ~30 bytes a logged event — most of
//! what the service's memory still grew by with the log.)

use crate::runs::{RunError, RunName, RunStore};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory of the index inside a data directory.
pub(crate) const DIR: &str = "identities";
const MANIFEST: &str = "MANIFEST";
/// The file of earlier versions (8-byte prefixes held in memory), deleted on open.
pub(crate) const LEGACY_FILE: &str = "IDENTITIES";

/// Identities held in memory before they are written as a run: ~3.5 MB of memory, a
/// run of ~2.6 MB.
pub(crate) const FLUSH: usize = 1 << 17;

/// What the manifest says: the runs holding positions `1..=through`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Manifest {
    pub through: u64,
    pub hash: [u8; 32],
    pub runs: Vec<RunName>,
}

impl Manifest {
    /// Reads the manifest in `dir`; `None` if it is missing or damaged (then the index
    /// is rebuilt).
    pub fn load(dir: &Path) -> Option<Manifest> {
        let bytes = std::fs::read(dir.join(MANIFEST)).ok()?;
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc {
            return None;
        }
        postcard::from_bytes(body).ok()
    }

    fn save(&self, dir: &Path) -> std::io::Result<()> {
        let mut bytes = postcard::to_stdvec(self).map_err(std::io::Error::other)?;
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(MANIFEST))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// The index: runs on disk for positions up to `through`, a table for those after.
pub(crate) struct IdentityIndex {
    dir: PathBuf,
    runs: RunStore,
    through: u64,
    recent: HashMap<[u8; 16], u64, foldhash::fast::RandomState>,
}

impl IdentityIndex {
    /// The index of `data_dir` as `manifest` describes it (the caller checked its chain
    /// hash against the log), or an empty one when `manifest` is `None`. Run files the
    /// manifest does not name are deleted; a named run that is missing or damaged is an
    /// error (the caller then starts empty).
    pub fn open(data_dir: &Path, manifest: Option<&Manifest>) -> Result<IdentityIndex, RunError> {
        let _ = std::fs::remove_file(data_dir.join(LEGACY_FILE));
        let dir = data_dir.join(DIR);
        let named = manifest.map_or(&[][..], |m| &m.runs[..]);
        let runs = RunStore::open_dir(&dir, named)?;
        if manifest.is_none() {
            // A manifest naming runs that are now gone must not be trusted later.
            let _ = std::fs::remove_file(dir.join(MANIFEST));
        }
        Ok(IdentityIndex {
            dir,
            runs,
            through: manifest.map_or(0, |m| m.through),
            recent: HashMap::with_capacity_and_hasher(FLUSH, Default::default()),
        })
    }

    /// The last position the runs hold.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// The identities held in memory (positions after [`IdentityIndex::through`]).
    pub fn recent(&self) -> usize {
        self.recent.len()
    }

    /// The position of the logged event with `identity`, if any.
    pub fn get(&self, identity: &[u8; 16]) -> Result<Option<u64>, RunError> {
        if let Some(seq) = self.recent.get(identity) {
            return Ok(Some(*seq));
        }
        Ok(self.runs.get(identity)?.and_then(|v| decode_seq(&v)))
    }

    /// Records a new identity (one no logged event has) at `seq`, the next position.
    pub fn insert(&mut self, identity: [u8; 16], seq: u64) {
        debug_assert!(seq > self.through);
        let previous = self.recent.insert(identity, seq);
        debug_assert!(previous.is_none(), "an identity is logged once");
    }

    /// Writes the identities held in memory as a run once there are at least
    /// `at_least`, then a manifest naming it with `through`/`hash` (the log's last
    /// position and its chain hash: every identity up to it is held). On failure the
    /// identities stay in memory for the next try — the runs are derived data.
    pub fn save(&mut self, at_least: usize, through: u64, hash: [u8; 32]) -> Result<(), String> {
        if self.recent.is_empty() || self.recent.len() < at_least {
            return Ok(());
        }
        debug_assert!(self
            .recent
            .values()
            .all(|&s| s > self.through && s <= through));
        let records = self
            .recent
            .iter()
            .map(|(k, seq)| (k.to_vec(), encode_seq(*seq)));
        self.runs.write(records).map_err(|e| e.to_string())?;
        let manifest = Manifest {
            through,
            hash,
            runs: self.runs.manifest(),
        };
        manifest
            .save(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.join(MANIFEST).display()))?;
        self.runs.collect(&manifest.runs);
        self.through = through;
        self.recent.clear();
        Ok(())
    }
}

fn encode_seq(seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    let mut n = seq;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

fn decode_seq(bytes: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_encode_and_decode() {
        for n in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(decode_seq(&encode_seq(n)), Some(n));
        }
        assert_eq!(decode_seq(&[0x80]), None);
    }

    /// Identities written as runs and held in memory are found; after a save the
    /// manifest opens the same index again, and a damaged manifest is not read.
    #[test]
    fn the_index_comes_back_from_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let id = |n: u64| -> [u8; 16] {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            k
        };
        let mut index = IdentityIndex::open(dir.path(), None).unwrap();
        for seq in 1..=1000 {
            index.insert(id(seq), seq);
        }
        index.save(2000, 1000, [7; 32]).unwrap();
        assert_eq!(index.through(), 0, "fewer than asked for: not saved");
        index.save(500, 1000, [7; 32]).unwrap();
        assert_eq!((index.through(), index.recent()), (1000, 0));
        for seq in 1001..=1200 {
            index.insert(id(seq), seq);
        }
        for seq in [1, 500, 1000, 1001, 1200] {
            assert_eq!(index.get(&id(seq)).unwrap(), Some(seq));
        }
        assert_eq!(index.get(&id(5000)).unwrap(), None);
        drop(index);
        let manifest = Manifest::load(&dir.path().join(DIR)).unwrap();
        assert_eq!((manifest.through, manifest.hash), (1000, [7; 32]));
        let index = IdentityIndex::open(dir.path(), Some(&manifest)).unwrap();
        assert_eq!(index.get(&id(999)).unwrap(), Some(999));
        assert_eq!(
            index.get(&id(1001)).unwrap(),
            None,
            "not saved: read from the log"
        );
        let path = dir.path().join(DIR).join(MANIFEST);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Manifest::load(&dir.path().join(DIR)).is_none());
    }
}
