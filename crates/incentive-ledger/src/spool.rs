//! The replay document written without holding history in memory.
//!
//! Payouts and refusals are history: a replay hands them over as they happen
//! ([`ledger_core::replay::Replay::drain_history`]) and [`Spool`] appends them to two
//! temporary files (postcard records framed by their length). At the end the document is written in SPEC §7's recommended key
//! order — counts, balances and claims from the fold's state, then payouts and refusals
//! read back from the files — and the digest is hashed as the payouts go by, so memory
//! holds the working set, never the payout list. The bytes are the ones
//! `serde_json::to_writer(_pretty)` gives for the whole [`Document`] (a test checks it).
//!
//! Also here: NDJSON read line by line from any reader ([`for_each_line`]), numbered as
//! [`ledger_core::replay::ndjson_lines`] numbers them, so an input file need not fit
//! in memory either.

use anyhow::{Context, Result};
use ledger_core::document::{BalanceRow, ClaimRow, PayoutDigest, PayoutRow};
use ledger_core::replay::{Drained, Rejection, Replay};
use ledger_core::Payout;
use serde::Serialize;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};

#[cfg(test)]
use ledger_core::document::Document;

/// Payouts and refusals of a replay, spooled to temporary files (removed on drop).
pub struct Spool {
    payouts: BufWriter<File>,
    rejected: BufWriter<File>,
    line: Vec<u8>,
}

impl Spool {
    pub fn new() -> Result<Spool> {
        let file =
            || tempfile::tempfile().context("cannot create a temporary file for the document");
        Ok(Spool {
            payouts: BufWriter::with_capacity(1 << 16, file()?),
            rejected: BufWriter::with_capacity(1 << 16, file()?),
            line: Vec::with_capacity(512),
        })
    }

    /// Appends what the replay drained, each record framed by its length (postcard: no
    /// formatting until the document is written).
    pub fn take(&mut self, drained: &Drained) -> Result<()> {
        for p in &drained.payouts {
            frame(&mut self.line, p)?;
            self.payouts
                .write_all(&self.line)
                .context("cannot spool a payout")?;
        }
        for r in &drained.rejections {
            frame(&mut self.line, r)?;
            self.rejected
                .write_all(&self.line)
                .context("cannot spool a refusal")?;
        }
        Ok(())
    }

    /// Writes the document of `replay` (which must have drained everything into this
    /// spool) to `out`, and returns its digest.
    pub fn finish(
        mut self,
        replay: &mut Replay,
        compact: bool,
        out: &mut impl Write,
    ) -> Result<String> {
        let rest = replay.drain_history();
        self.take(&rest)?;
        let payouts = read_back::<Payout>(self.payouts)?;
        let rejected = read_back::<Rejection>(self.rejected)?;
        write_document(replay, payouts, rejected, compact, out)
    }

    /// Calls `f` with every refusal spooled so far, in order.
    pub fn for_each_rejection(&mut self, f: &mut dyn FnMut(&Rejection)) -> Result<()> {
        for_each_spooled(&mut self.rejected, f)
    }

    /// Calls `f` with every payout spooled so far, in order.
    pub fn for_each_payout(&mut self, f: &mut dyn FnMut(&Payout)) -> Result<()> {
        for_each_spooled(&mut self.payouts, f)
    }
}

/// Calls `f` with every record of a spool file so far, in order; appends go on after.
fn for_each_spooled<T: serde::de::DeserializeOwned>(
    spooled: &mut BufWriter<File>,
    f: &mut dyn FnMut(&T),
) -> Result<()> {
    spooled.flush().context("cannot write a spool file")?;
    let mut file = spooled
        .get_ref()
        .try_clone()
        .context("cannot read a spool file back")?;
    file.rewind().context("cannot read a spool file back")?;
    for r in read_from::<T>(file)? {
        f(&r?);
    }
    // The clone shares the file's offset: appends go on at the end.
    spooled
        .get_mut()
        .seek(std::io::SeekFrom::End(0))
        .context("cannot write a spool file")?;
    Ok(())
}

/// Where a replayed data directory's history is read back from: the directory's
/// history archive (a full replay, resumed from or making the service's checkpoint),
/// or a spool of this replay's own (a bounded replay, or one without the checkpoint).
pub enum History {
    Archive(ledger_log::Archive),
    Spool(Spool),
}

/// A replayed data directory: the fold's working set, and its history on disk.
pub struct Replayed {
    pub replay: Replay,
    pub history: History,
}

/// Payouts or refusals read from the archive this many at a time.
const ARCHIVE_CHUNK: u64 = 4096;

impl Replayed {
    /// Calls `f` with every payout, in order.
    pub fn for_each_payout(&mut self, f: &mut dyn FnMut(&Payout)) -> Result<()> {
        match &mut self.history {
            History::Spool(spool) => {
                spool.take(&self.replay.drain_history())?;
                spool.for_each_payout(f)
            }
            History::Archive(archive) => {
                for p in archived(archive.state().payouts, |from, n| {
                    archive.payouts(from, from + n)
                }) {
                    f(&p?);
                }
                Ok(())
            }
        }
    }

    /// Calls `f` with every refusal, in order.
    pub fn for_each_rejection(&mut self, f: &mut dyn FnMut(&Rejection)) -> Result<()> {
        match &mut self.history {
            History::Spool(spool) => spool.for_each_rejection(f),
            History::Archive(archive) => {
                for r in archived(archive.state().refusals, |from, n| {
                    archive.rejections(from, n as usize)
                }) {
                    f(&r?);
                }
                Ok(())
            }
        }
    }

    /// Writes the document to `out`, payouts and refusals streamed from disk; returns
    /// its digest.
    pub fn write_document(mut self, compact: bool, out: &mut impl Write) -> Result<String> {
        match self.history {
            History::Spool(spool) => spool.finish(&mut self.replay, compact, out),
            History::Archive(archive) => {
                let heads = archive.state();
                anyhow::ensure!(
                    (heads.payouts, heads.refusals)
                        == (
                            self.replay.payouts_issued(),
                            self.replay.rejections_recorded()
                        ),
                    "the history archive holds {} payouts and {} refusals, the fold {} and {}",
                    heads.payouts,
                    heads.refusals,
                    self.replay.payouts_issued(),
                    self.replay.rejections_recorded()
                );
                let payouts = archived(heads.payouts, |from, n| archive.payouts(from, from + n));
                let rejected = archived(heads.refusals, |from, n| {
                    archive.rejections(from, n as usize)
                });
                write_document(&self.replay, payouts, rejected, compact, out)
            }
        }
    }
}

/// Records `0..total` of the archive, read `ARCHIVE_CHUNK` at a time by `read(from, n)`.
fn archived<'a, T: 'a>(
    total: u64,
    mut read: impl FnMut(u64, u64) -> Result<Vec<T>, ledger_log::LogError> + 'a,
) -> impl Iterator<Item = Result<T>> + 'a {
    let mut from = 0u64;
    let mut chunk = Vec::new().into_iter();
    std::iter::from_fn(move || loop {
        if let Some(item) = chunk.next() {
            return Some(Ok(item));
        }
        if from >= total {
            return None;
        }
        let n = ARCHIVE_CHUNK.min(total - from);
        match read(from, n) {
            Ok(items) if items.len() as u64 == n => {
                from += n;
                chunk = items.into_iter();
            }
            Ok(items) => {
                from = total;
                return Some(Err(anyhow::anyhow!(
                    "the history archive gave {} records from {from} where {n} were asked for",
                    items.len()
                )));
            }
            Err(e) => {
                from = total;
                return Some(Err(
                    anyhow::Error::new(e).context("cannot read the history archive")
                ));
            }
        }
    })
}

/// The document of `replay` (its working set) with `payouts` and `rejected` (its whole
/// history, in order), written to `out` member by member; returns its digest, hashed as
/// the payouts go by.
fn write_document(
    replay: &Replay,
    payouts: impl Iterator<Item = Result<Payout>>,
    rejected: impl Iterator<Item = Result<Rejection>>,
    compact: bool,
    out: &mut impl Write,
) -> Result<String> {
    let ledger = replay.ledger();
    // Rows are written and hashed one at a time: none of them is held.
    let mut digest = PayoutDigest::new();
    let mut w = Writer {
        out,
        compact,
        members: 0,
    };
    w.begin()?;
    w.member("events", &replay.counts())?;
    w.array(
        "balances",
        ledger.balances_iter().map(|b| {
            let row = BalanceRow::from(&b);
            digest.balance(&row);
            Ok(row)
        }),
    )?;
    w.array(
        "claims",
        ledger.claims_iter().map(|c| {
            let row = ClaimRow::from(&c);
            digest.claim(&row);
            Ok(row)
        }),
    )?;
    w.array(
        "payouts",
        payouts.map(|p| {
            let row = PayoutRow::from(&p?);
            digest.payout(&row);
            Ok(row)
        }),
    )?;
    w.array("rejected", rejected.map(|r| r.map(|r| r.row())))?;
    let digest = digest.finish();
    w.member("digest", &digest)?;
    w.end()?;
    Ok(digest)
}

/// `record` as a spool frame: its postcard length (u32, little-endian), then its bytes.
fn frame(buf: &mut Vec<u8>, record: &impl Serialize) -> Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    let mut framed = postcard::to_extend(record, std::mem::take(buf))
        .context("a spooled record does not encode")?;
    let len = u32::try_from(framed.len() - 4).context("a spooled record is over 4 GiB")?;
    framed[..4].copy_from_slice(&len.to_le_bytes());
    *buf = framed;
    Ok(())
}

/// The records of a spool file, read back from its start.
fn read_back<T: serde::de::DeserializeOwned>(
    file: BufWriter<File>,
) -> Result<impl Iterator<Item = Result<T>>> {
    let mut file = file.into_inner().context("cannot finish a spool file")?;
    file.rewind().context("cannot read a spool file back")?;
    read_from(file)
}

/// The records of a spool file from where `file` stands.
fn read_from<T: serde::de::DeserializeOwned>(
    file: File,
) -> Result<impl Iterator<Item = Result<T>>> {
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut body = Vec::with_capacity(512);
    Ok(std::iter::from_fn(move || {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => {
                return Some(Err(
                    anyhow::Error::new(e).context("cannot read a spool file back")
                ))
            }
        }
        body.resize(u32::from_le_bytes(len) as usize, 0);
        Some(
            reader
                .read_exact(&mut body)
                .context("a spool file ends inside a record")
                .and_then(|()| {
                    postcard::from_bytes::<T>(&body).context("a spooled record does not read back")
                }),
        )
    }))
}

/// A JSON object written member by member, compact or indented as serde_json's
/// pretty printer indents (two spaces a level).
struct Writer<'a, W: Write> {
    out: &'a mut W,
    compact: bool,
    members: usize,
}

impl<W: Write> Writer<'_, W> {
    fn begin(&mut self) -> Result<()> {
        self.out.write_all(b"{")?;
        Ok(())
    }

    fn key(&mut self, key: &str) -> Result<()> {
        let sep: &[u8] = match (self.members, self.compact) {
            (0, true) => b"",
            (_, true) => b",",
            (0, false) => b"\n  ",
            (_, false) => b",\n  ",
        };
        self.members += 1;
        self.out.write_all(sep)?;
        serde_json::to_writer(&mut *self.out, key)?;
        self.out
            .write_all(if self.compact { b":" } else { b": " })?;
        Ok(())
    }

    /// `value` written at `depth` levels of indentation.
    fn value(&mut self, value: &impl Serialize, depth: usize) -> Result<()> {
        if self.compact {
            serde_json::to_writer(&mut *self.out, value)?;
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(value)?;
        let indent = "  ".repeat(depth);
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                self.out.write_all(b"\n")?;
                self.out.write_all(indent.as_bytes())?;
            }
            self.out.write_all(line)?;
        }
        Ok(())
    }

    fn member(&mut self, key: &str, value: &impl Serialize) -> Result<()> {
        self.key(key)?;
        self.value(value, 1)
    }

    fn array<R: Serialize>(
        &mut self,
        key: &str,
        rows: impl Iterator<Item = Result<R>>,
    ) -> Result<()> {
        self.key(key)?;
        self.out.write_all(b"[")?;
        let mut n = 0usize;
        for row in rows {
            let row = row?;
            let sep: &[u8] = match (n, self.compact) {
                (0, true) => b"",
                (_, true) => b",",
                (0, false) => b"\n    ",
                (_, false) => b",\n    ",
            };
            self.out.write_all(sep)?;
            self.value(&row, 2)?;
            n += 1;
        }
        if n > 0 && !self.compact {
            self.out.write_all(b"\n  ")?;
        }
        self.out.write_all(b"]")?;
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        self.out
            .write_all(if self.compact { b"}" } else { b"\n}" })?;
        Ok(())
    }
}

/// Calls `f(line number, line)` for each non-blank physical line read from `reader`,
/// numbered from `first_line`, without its `\n` or `\r\n` — as
/// [`ledger_core::replay::ndjson_lines`] splits a whole text. Returns the number of
/// physical lines read (so that files given together number on).
pub fn for_each_line(
    reader: &mut impl BufRead,
    first_line: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let mut buf = Vec::with_capacity(4096);
    let mut lines = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(lines);
        }
        let number = first_line + lines;
        lines += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            f(number, line)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::replay::{ndjson_lines, physical_lines};

    #[test]
    fn lines_read_from_a_reader_are_split_and_numbered_as_ndjson_lines() {
        for text in [
            &b""[..],
            b"a",
            b"a\n",
            b"a\r\n\n  \t\r\nb\nc",
            b"\n\nx\r\ny\n\n",
            b"  \n\t",
        ] {
            let mut got = Vec::new();
            let count = for_each_line(&mut &text[..], 5, |n, l| {
                got.push((n, l.to_vec()));
                Ok(())
            })
            .unwrap();
            let expected: Vec<(u64, Vec<u8>)> = ndjson_lines(text, 5)
                .map(|(n, l)| (n, l.to_vec()))
                .collect();
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(text));
            assert_eq!(count, physical_lines(text));
        }
    }

    /// The spooled document is byte for byte what serde_json writes for the whole
    /// document, compact and indented, on every public fixture and a generated stream.
    #[test]
    fn the_spooled_document_equals_the_whole_document() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../replay-fixtures");
        let mut inputs: Vec<Vec<String>> = Vec::new();
        for entry in std::fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path().join("events.ndjson");
            let text = std::fs::read_to_string(path).unwrap();
            inputs.push(text.lines().map(String::from).collect());
        }
        inputs.push(
            ledger_core::gen::Generator::new(ledger_core::gen::GenConfig::new(3, 2500)).collect(),
        );
        assert!(inputs.len() > 5);
        for lines in inputs {
            let mut whole = Replay::new();
            let mut drained = Replay::new();
            let mut spool = Spool::new().unwrap();
            for (i, l) in lines.iter().enumerate() {
                whole.push(l.as_bytes(), i as u64 + 1);
                drained.push(l.as_bytes(), i as u64 + 1);
                if i % 7 == 0 {
                    spool.take(&drained.drain_history()).unwrap();
                }
            }
            let doc: Document = whole.document();
            for compact in [true, false] {
                let expected = if compact {
                    serde_json::to_vec(&doc).unwrap()
                } else {
                    serde_json::to_vec_pretty(&doc).unwrap()
                };
                let mut again = Replay::new();
                let mut spool2 = Spool::new().unwrap();
                for (i, l) in lines.iter().enumerate() {
                    again.push(l.as_bytes(), i as u64 + 1);
                    spool2.take(&again.drain_history()).unwrap();
                }
                let mut out = Vec::new();
                let digest = spool2.finish(&mut again, compact, &mut out).unwrap();
                assert_eq!(digest, doc.digest);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
            let mut out = Vec::new();
            assert_eq!(
                spool.finish(&mut drained, true, &mut out).unwrap(),
                doc.digest
            );
        }
    }
}
