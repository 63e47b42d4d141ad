//! The `IDENTITIES` file: the first 8 bytes of every logged event's identity key, in
//! log order, so that opening a directory reads ~8 bytes a logged event instead of
//! scanning the whole log through sled (which held ~2 GB resident for a scan of a 5M-
//! event log against its 64 MiB cache; `bench-memory --service`).
//!
//! Derived data, appended by the log after durable batches, never fsynced: chunks of
//! `[u32 count][u64 first position][count × u64 prefix][32-byte chain hash of the last
//! position][u32 CRC-32 of the chunk before it]`. A reader takes the chunks that are
//! whole, sound and contiguous from position 1, checks the last one's chain hash
//! against the log, and scans the log only after it; anything else is ignored and
//! rewritten.

use std::io::{Read, Write};
use std::path::Path;

/// The file's name in a data directory.
pub(crate) const FILE: &str = "IDENTITIES";

/// Prefixes collected before they are appended as one chunk.
pub(crate) const CHUNK: usize = 1 << 16;

/// The sound prefix of the file: prefixes for positions `1..=prefixes.len()`, the chain
/// hash the file says position `prefixes.len()` has, and the file's sound length.
pub(crate) struct Loaded {
    pub prefixes: Vec<u64>,
    pub last_hash: Option<[u8; 32]>,
    pub bytes: u64,
}

/// Reads what is sound of the file at `path` (nothing if it is missing).
pub(crate) fn load(path: &Path) -> std::io::Result<Loaded> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut loaded = Loaded {
        prefixes: Vec::new(),
        last_hash: None,
        bytes: 0,
    };
    let mut at = 0usize;
    while let Some(chunk) = read_chunk(&bytes[at..], loaded.prefixes.len() as u64 + 1) {
        let (prefixes, hash, len) = chunk;
        loaded.prefixes.extend(prefixes);
        loaded.last_hash = Some(hash);
        at += len;
        loaded.bytes = at as u64;
    }
    Ok(loaded)
}

/// The chunk at the start of `bytes` if it is whole, sound and starts at `first`:
/// its prefixes, its chain hash and its length.
fn read_chunk(bytes: &[u8], first: u64) -> Option<(Vec<u64>, [u8; 32], usize)> {
    let count = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let start = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
    let body_end = 12usize
        .checked_add(count.checked_mul(8)?)?
        .checked_add(32)?;
    let crc = u32::from_le_bytes(bytes.get(body_end..body_end + 4)?.try_into().ok()?);
    if start != first || crc32fast::hash(&bytes[..body_end]) != crc || count == 0 {
        return None;
    }
    let prefixes = bytes[12..12 + count * 8]
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .collect();
    let hash = bytes[body_end - 32..body_end].try_into().ok()?;
    Some((prefixes, hash, body_end + 4))
}

/// Appends the prefixes of positions `first ..` with the chain hash of the last, at
/// byte `at` of the file (cutting off whatever follows).
pub(crate) fn append(
    path: &Path,
    at: u64,
    first: u64,
    prefixes: &[u64],
    last_hash: &[u8; 32],
) -> std::io::Result<u64> {
    let count = u32::try_from(prefixes.len()).map_err(std::io::Error::other)?;
    let mut chunk = Vec::with_capacity(12 + prefixes.len() * 8 + 36);
    chunk.extend_from_slice(&count.to_le_bytes());
    chunk.extend_from_slice(&first.to_le_bytes());
    for p in prefixes {
        chunk.extend_from_slice(&p.to_le_bytes());
    }
    chunk.extend_from_slice(last_hash);
    let crc = crc32fast::hash(&chunk);
    chunk.extend_from_slice(&crc.to_le_bytes());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    f.set_len(at)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at))?;
    f.write_all(&chunk)?;
    Ok(at + chunk.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back_up_to_the_first_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert!(load(&path).unwrap().prefixes.is_empty());
        let at = append(&path, 0, 1, &[10, 20, 30], &[1; 32]).unwrap();
        let end = append(&path, at, 4, &[40, 50], &[2; 32]).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.prefixes, vec![10, 20, 30, 40, 50]);
        assert_eq!(loaded.last_hash, Some([2; 32]));
        assert_eq!(loaded.bytes, end);
        // A flipped byte in the second chunk: only the first is taken.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize + 14] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.prefixes, vec![10, 20, 30]);
        assert_eq!(loaded.bytes, at);
        // A chunk that does not continue the positions is not taken either.
        append(&path, at, 9, &[90], &[3; 32]).unwrap();
        assert_eq!(load(&path).unwrap().prefixes, vec![10, 20, 30]);
    }
}
