//! Backups of a data directory's log, taken while it is being appended to, and new
//! data directories restored from them.
//!
//! A backup is what the ledger cannot rebuild: the log's segments as stored, the
//! quarantine, the duplicate marks and the head — bounded by the head read when it
//! starts, so a batch appended meanwhile is either wholly in it or wholly out (a batch's
//! segments, marks and head are written in one atomic sled batch, and a segment never
//! spans two batches). Everything else in a data directory — checkpoints, the history
//! archive, lookups, the identity index — is derived from the log and rebuilt by the
//! first command that opens the restored directory.
//!
//! The stream (hand-written because it is a dozen lines over what the log stores, and
//! a general archive format would add a dependency and hide no complexity): the magic
//! `ILBACKUP`, a version, then frames `kind (1 byte) · number (u64 LE) · length (u32
//! LE) · bytes · CRC-32 of the bytes (u32 LE)`: `H` the head it is bounded by, `L` each
//! segment (number: its first sequence), `Q` each quarantine entry and `D` each
//! duplicate mark (number: the arrival), and `E` the end, whose number is the count of
//! frames before it and whose bytes repeat the head. A stream cut short, reordered or
//! damaged in transit is refused by [`restore`] before the directory is usable.

use crate::layout::{key, key_number, Head, DUPLICATE, HEAD, QUARANTINE, SEGMENT};
use crate::log::{Log, LogError, LogReader};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ILBACKUP";
const VERSION: u32 = 1;
/// Restored bytes per sled batch: bounds what a restore holds in memory.
const BATCH_BYTES: usize = 32 << 20;
/// The largest frame a restore accepts (a segment is at most a few MiB).
const MAX_FRAME: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the backup stream cannot be written")]
    Write(#[source] std::io::Error),
    #[error("the backup stream cannot be read")]
    Read(#[source] std::io::Error),
    #[error("not a usable backup: {0}")]
    Damaged(String),
    #[error("{0} exists and is not empty: restore into a new directory")]
    TargetNotEmpty(PathBuf),
}

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub head: Head,
    pub segments: u64,
    pub quarantined: u64,
    pub duplicates: u64,
}

fn frame(out: &mut dyn Write, kind: u8, n: u64, bytes: &[u8]) -> Result<(), BackupError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| BackupError::Damaged(format!("a value of {} bytes", bytes.len())))?;
    let mut header = [0u8; 13];
    header[0] = kind;
    header[1..9].copy_from_slice(&n.to_le_bytes());
    header[9..13].copy_from_slice(&len.to_le_bytes());
    out.write_all(&header).map_err(BackupError::Write)?;
    out.write_all(bytes).map_err(BackupError::Write)?;
    out.write_all(&crc32fast::hash(bytes).to_le_bytes())
        .map_err(BackupError::Write)
}

/// Writes the backup of `log` as it stands now to `out`.
pub fn write_backup(log: &LogReader, out: &mut dyn Write) -> Result<Summary, BackupError> {
    write_backup_through(log, log.stored_head()?, out)
}

/// Writes the backup of `log` up to `head`, a head it stored (read before: the log may
/// have gone on since).
pub fn write_backup_through(
    log: &LogReader,
    head: Head,
    out: &mut dyn Write,
) -> Result<Summary, BackupError> {
    let mut summary = Summary {
        head,
        ..Summary::default()
    };
    let head_bytes = postcard::to_stdvec(&head).map_err(|e| BackupError::Damaged(e.to_string()))?;
    out.write_all(MAGIC).map_err(BackupError::Write)?;
    out.write_all(&VERSION.to_le_bytes())
        .map_err(BackupError::Write)?;
    frame(out, b'H', 0, &head_bytes)?;
    let mut frames = 1u64;
    let tree = log.raw_tree()?;
    let storage = crate::log::storage(log.path());
    for item in tree.scan_prefix([SEGMENT]) {
        let (k, v) = item.map_err(&storage)?;
        let first = key_number(&k, SEGMENT)
            .ok_or_else(|| log.corrupt("a segment key has the wrong shape"))?;
        if first > head.last_seq {
            break;
        }
        frame(out, SEGMENT, first, &v)?;
        frames += 1;
        summary.segments += 1;
    }
    for (kind, count) in [
        (QUARANTINE, &mut summary.quarantined),
        (DUPLICATE, &mut summary.duplicates),
    ] {
        for item in tree.scan_prefix([kind]) {
            let (k, v) = item.map_err(&storage)?;
            let arrival = key_number(&k, kind)
                .ok_or_else(|| log.corrupt("a mark key has the wrong shape"))?;
            if arrival > head.last_arrival {
                break;
            }
            frame(out, kind, arrival, &v)?;
            frames += 1;
            *count += 1;
        }
    }
    frame(out, b'E', frames, &head_bytes)?;
    out.flush().map_err(BackupError::Write)?;
    Ok(summary)
}

/// One frame read back: its kind, number and bytes (checked against its CRC).
fn read_frame(input: &mut dyn Read) -> Result<(u8, u64, Vec<u8>), BackupError> {
    let mut header = [0u8; 13];
    input.read_exact(&mut header).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            BackupError::Damaged("the stream ends before its end frame (cut short)".into())
        } else {
            BackupError::Read(e)
        }
    })?;
    let kind = header[0];
    let n = u64::from_le_bytes(header[1..9].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(header[9..13].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(BackupError::Damaged(format!("a frame of {len} bytes")));
    }
    let mut bytes = vec![0u8; len as usize];
    let mut crc = [0u8; 4];
    input
        .read_exact(&mut bytes)
        .and_then(|()| input.read_exact(&mut crc))
        .map_err(|_| BackupError::Damaged("the stream ends inside a frame (cut short)".into()))?;
    if crc32fast::hash(&bytes) != u32::from_le_bytes(crc) {
        return Err(BackupError::Damaged(format!(
            "frame {:?} {n} does not match its checksum",
            kind as char
        )));
    }
    Ok((kind, n, bytes))
}

/// Restores the backup read from `input` into `to`, a new (or empty) directory. On an
/// error the directory is left without a head the log agrees with, so that no command
/// takes it for a sound ledger — remove it and restore again.
pub fn restore(input: &mut dyn Read, to: &Path) -> Result<Summary, BackupError> {
    if std::fs::read_dir(to).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BackupError::TargetNotEmpty(to.to_path_buf()));
    }
    let mut magic = [0u8; 12];
    input
        .read_exact(&mut magic)
        .map_err(|_| BackupError::Damaged("too short to be a backup".into()))?;
    if &magic[..8] != MAGIC {
        return Err(BackupError::Damaged(
            "it does not begin with ILBACKUP".into(),
        ));
    }
    let version = u32::from_le_bytes(magic[8..].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(BackupError::Damaged(format!(
            "backup format {version}; this version reads {VERSION}"
        )));
    }
    let (kind, _, head_bytes) = read_frame(input)?;
    let head: Head = match kind {
        b'H' => postcard::from_bytes(&head_bytes)
            .map_err(|_| BackupError::Damaged("its head does not decode".into()))?,
        _ => {
            return Err(BackupError::Damaged(
                "it does not begin with its head".into(),
            ))
        }
    };
    let mut log = Log::open(to)?;
    let tree = log.raw_tree()?;
    let storage = crate::log::storage(to);
    let mut summary = Summary {
        head,
        ..Summary::default()
    };
    let mut batch = sled::Batch::default();
    let mut pending = 0usize;
    let mut frames = 1u64;
    let mut last = (SEGMENT, 0u64);
    loop {
        let (kind, n, bytes) = read_frame(input)?;
        if kind == b'E' {
            if n != frames || bytes != head_bytes {
                return Err(BackupError::Damaged(format!(
                    "its end frame counts {n} frames for the {frames} read, or names another head"
                )));
            }
            break;
        }
        let rank = |k: u8| {
            [SEGMENT, QUARANTINE, DUPLICATE]
                .iter()
                .position(|x| *x == k)
        };
        let (Some(now), Some(before)) = (rank(kind), rank(last.0)) else {
            return Err(BackupError::Damaged(format!(
                "an unknown frame kind {kind}"
            )));
        };
        if (now, n) <= (before, last.1) {
            return Err(BackupError::Damaged(format!(
                "frame {:?} {n} is out of order",
                kind as char
            )));
        }
        let beyond = match kind {
            SEGMENT => n > head.last_seq,
            _ => n > head.last_arrival,
        };
        if beyond {
            return Err(BackupError::Damaged(format!(
                "frame {:?} {n} lies beyond the head it is bounded by",
                kind as char
            )));
        }
        match kind {
            SEGMENT => summary.segments += 1,
            QUARANTINE => summary.quarantined += 1,
            _ => summary.duplicates += 1,
        }
        last = (kind, n);
        frames += 1;
        pending += bytes.len();
        batch.insert(&key(kind, n), bytes);
        if pending >= BATCH_BYTES {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(&storage)?;
            pending = 0;
        }
    }
    batch.insert(HEAD, head_bytes);
    tree.apply_batch(batch).map_err(&storage)?;
    log.flush()?;
    log.write_highwater(&head)?;
    drop(tree);
    // Opened again, the directory checks that its log ends where its head says.
    log.reopen()?;
    Ok(summary)
}

/// A backup of the directory `log` reads, restored into `to` (the stream passed from
/// one thread to the other in chunks, through a bounded channel: no OS pipe, whose
/// closing early would raise SIGPIPE).
pub fn backup_to(log: &LogReader, to: &Path) -> Result<Summary, BackupError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::scope(|scope| {
        let written = scope.spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, ChannelWriter(tx));
            write_backup(log, &mut out)
        });
        let restored = restore(
            &mut ChannelReader {
                rx,
                chunk: Vec::new(),
                at: 0,
            },
            to,
        );
        let written = written
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let summary = restored?;
        written?;
        Ok(summary)
    })
}

/// Restores a backup that arrives in chunks (from the network) into `to`; the stream
/// ends when the sender is dropped.
pub fn restore_chunks(
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    to: &Path,
) -> Result<Summary, BackupError> {
    restore(
        &mut ChannelReader {
            rx: chunks,
            chunk: Vec::new(),
            at: 0,
        },
        to,
    )
}

struct ChannelWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send(buf.to_vec()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the restore stopped")
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0), // the writer is done
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::tests::{inputs, open_when_free};

    /// Generated events, with a malformed line and exact re-sends among them.
    fn lines(seed: u64, n: usize) -> Vec<String> {
        let mut lines: Vec<String> =
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(seed, n)).collect();
        lines.insert(3, "{not json".into());
        let again = lines[5].clone();
        lines.push(again);
        lines
    }

    fn everything(
        log: &LogReader,
    ) -> (
        Vec<crate::layout::Record>,
        Vec<crate::layout::Quarantined>,
        usize,
        Head,
    ) {
        (
            log.records_from(1).map(Result::unwrap).collect(),
            log.quarantined().unwrap(),
            log.duplicates().unwrap().len(),
            log.stored_head().unwrap(),
        )
    }

    /// A restored backup holds the same records, quarantine, marks and head, and
    /// verifies sound.
    #[test]
    fn a_restored_backup_is_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(&dir.path().join("data")).unwrap();
        let lines = lines(3, 3000);
        for chunk in lines.chunks(700) {
            log.append_batch(&inputs(chunk)).unwrap();
        }
        let to = dir.path().join("copy");
        let summary = backup_to(&log, &to).unwrap();
        assert_eq!(summary.head, log.stored_head().unwrap());
        assert_eq!(
            (summary.quarantined, summary.duplicates),
            (
                log.quarantined().unwrap().len() as u64,
                log.duplicates().unwrap().len() as u64
            )
        );
        assert!(summary.quarantined >= 1 && summary.duplicates >= 1);
        let copy = open_when_free(&to);
        assert_eq!(everything(&copy), everything(&log));
        let report = crate::verify(&copy, &mut |_| {}).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!(report.records, log.stored_head().unwrap().last_seq);
        // A second restore into the same place is refused; the copy is untouched.
        drop(copy);
        let again = backup_to(&log, &to).unwrap_err();
        assert!(matches!(again, BackupError::TargetNotEmpty(_)), "{again}");
    }

    /// A stream cut short, damaged or of another kind is refused, never half taken.
    #[test]
    fn a_damaged_stream_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(&dir.path().join("data")).unwrap();
        log.append_batch(&inputs(&lines(4, 400))).unwrap();
        let mut stream = Vec::new();
        write_backup(&log, &mut stream).unwrap();
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (stream[..stream.len() - 30].to_vec(), "cut short"),
            (stream[..40].to_vec(), "cut short"),
            (b"ILBACKUX\x01\x00\x00\x00".to_vec(), "ILBACKUP"),
        ];
        let mut flipped = stream.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        cases.push((flipped, "checksum"));
        for (i, (bytes, says)) in cases.into_iter().enumerate() {
            let to = dir.path().join(format!("copy-{i}"));
            let e = restore(&mut bytes.as_slice(), &to).unwrap_err().to_string();
            assert!(e.contains(says), "case {i}: {e}");
            // Whatever was written is not taken for a sound directory.
            if to.join("FORMAT").exists() {
                let mut opened = Log::open(&to);
                for _ in 0..200 {
                    if !matches!(opened, Err(LogError::InUse { .. })) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    opened = Log::open(&to);
                }
                if let Ok(partial) = opened {
                    assert_eq!(partial.stored_head().unwrap().last_seq, 0, "case {i}");
                    assert!(partial.records_from(1).next().is_none(), "case {i}");
                }
            }
        }
        let to = dir.path().join("whole");
        restore(&mut stream.as_slice(), &to).unwrap();
        assert!(crate::verify(&open_when_free(&to), &mut |_| {})
            .unwrap()
            .ok());
    }

    /// Backups taken while batches keep landing are each a sound prefix of the log,
    /// and so is a live verify.
    #[test]
    fn backups_while_appending_are_consistent_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(&dir.path().join("data")).unwrap();
        let reader = log.reader();
        let lines = lines(5, 6000);
        let (first, rest) = lines.split_at(500);
        log.append_batch(&inputs(first)).unwrap();
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                for chunk in rest.chunks(50) {
                    log.append_batch(&inputs(chunk)).unwrap();
                }
                log
            });
            for i in 0..4 {
                let report = crate::verify_live(&reader, &mut |_| {}).unwrap();
                assert!(report.ok(), "live verify {i}: {:?}", report.problems);
                let to = dir.path().join(format!("copy-{i}"));
                let s = backup_to(&reader, &to).unwrap();
                let copy = open_when_free(&to);
                let report = crate::verify(&copy, &mut |_| {}).unwrap();
                assert!(report.ok(), "backup {i}: {:?}", report.problems);
                assert_eq!(report.records, s.head.last_seq);
            }
            let log = writer.join().unwrap();
            let last = dir.path().join("last");
            backup_to(&log, &last).unwrap();
            assert_eq!(everything(&open_when_free(&last)), everything(&log));
        });
    }
}
