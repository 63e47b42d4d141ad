//! Commands over a data directory: `ingest`, `verify`, `export`, `rejected`, and the
//! `--data-dir` side of `replay`.

use crate::progress;
use crate::spool::{History, Replayed, Spool};
use anyhow::{bail, Context, Result};
use clap::Args;
use ledger_log::{history, Bound, Input, Log, LogError, LookupStore, Outcome};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Opens a data directory that exists, for a command that reads it: a missing one is
/// an error ("no data directory at …"), never a new empty ledger; one held by a running
/// service says so in one line.
pub fn open(dir: &Path) -> Result<Log> {
    Log::open_existing(dir).map_err(one_line)
}

/// Errors that say all there is to say in their own message (a missing or busy
/// directory) pass as they are; others get the directory named.
fn one_line(e: LogError) -> anyhow::Error {
    match e {
        LogError::NoDataDirectory { .. } | LogError::InUse { .. } => anyhow::Error::new(e),
        other => {
            let path = match &other {
                LogError::Format { path, .. }
                | LogError::Storage { path, .. }
                | LogError::Corrupt { path, .. }
                | LogError::Io { path, .. } => Some(path.clone()),
                _ => None,
            };
            let e = anyhow::Error::new(other);
            match path {
                Some(p) => e.context(format!("cannot open data directory {}", p.display())),
                None => e.context("cannot open the data directory"),
            }
        }
    }
}

#[derive(Args)]
pub struct IngestArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// NDJSON files to append, in order (`-` reads stdin); line numbers continue across files.
    #[arg(long = "events", value_name = "FILE", num_args = 1.., required = true)]
    pub events: Vec<PathBuf>,
    /// Inputs per group commit (one flush per batch).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_size: u64,
    /// After each durable batch, print `durable <last line> <last seq>` on stdout.
    #[arg(long)]
    pub print_durable: bool,
}

#[derive(Default)]
struct IngestCounts {
    received: u64,
    appended: u64,
    duplicates: u64,
    quarantined: u64,
}

pub fn ingest(args: IngestArgs) -> Result<()> {
    // Every input can be read before the directory is created or written.
    for path in args.events.iter().filter(|p| p.as_os_str() != "-") {
        std::fs::File::open(path)
            .with_context(|| format!("cannot read events file {}", path.display()))?;
    }
    let mut log = Log::open(&args.data_dir).map_err(one_line)?;
    let total_bytes: u64 = args
        .events
        .iter()
        .filter(|p| p.as_os_str() != "-")
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress::bar(total_bytes, "ingest");
    let mut counts = IngestCounts::default();
    let mut line_no = 0u64;
    let batch_size = args.batch_size as usize;
    let mut pending: Vec<(Vec<u8>, u64)> = Vec::with_capacity(batch_size);
    let stdout = std::io::stdout();
    let flush = |log: &mut Log,
                 pending: &mut Vec<(Vec<u8>, u64)>,
                 counts: &mut IngestCounts|
     -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let time_ns = now_ns();
        let inputs: Vec<Input> = pending
            .iter()
            .map(|(raw, line)| Input {
                raw,
                line: Some(*line),
                time_ns,
                transport: ledger_log::Transport::None,
            })
            .collect();
        let outcomes = log.append_batch(&inputs)?;
        for o in &outcomes {
            counts.received += 1;
            match o {
                Outcome::Appended { .. } => counts.appended += 1,
                Outcome::Duplicate { .. } => counts.duplicates += 1,
                Outcome::Quarantined { .. } => counts.quarantined += 1,
            }
        }
        if args.print_durable {
            let last_line = pending.last().map_or(0, |p| p.1);
            let mut out = stdout.lock();
            writeln!(out, "durable {last_line} {}", log.head().last_seq)?;
            out.flush()?;
        }
        pending.clear();
        Ok(())
    };
    for path in &args.events {
        let reader: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot read events file {}", path.display()))?,
            )
        };
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("cannot read events file {}", path.display()))?;
            if n == 0 {
                break;
            }
            bar.inc(n as u64);
            line_no += 1;
            let mut line = buf.as_slice();
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                continue;
            }
            pending.push((line.to_vec(), line_no));
            if pending.len() >= batch_size {
                flush(&mut log, &mut pending, &mut counts)?;
            }
        }
    }
    flush(&mut log, &mut pending, &mut counts)?;
    bar.finish_and_clear();
    println!(
        "received {}, appended {}, duplicates {}, quarantined {}; the log now ends at sequence {}",
        counts.received,
        counts.appended,
        counts.duplicates,
        counts.quarantined,
        log.head().last_seq
    );
    Ok(())
}

/// Parses `--as-of-time` (RFC 3339) into nanoseconds since the Unix epoch.
pub fn parse_time(s: &str) -> Result<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).with_context(|| {
        format!("--as-of-time expects an RFC 3339 time such as 2026-03-01T12:00:00Z, got {s:?}")
    })?;
    let ns = t
        .timestamp_nanos_opt()
        .filter(|n| *n >= 0)
        .with_context(|| format!("--as-of-time {s} is outside the range the log records"))?;
    Ok(ns as u64)
}

/// Rebuilds the document of a data directory (for `replay --data-dir`).
/// Replays a data directory up to `as_of_seq` / `as_of_time` (the whole log without
/// either), holding the working set only: the history is read back from disk.
///
/// A whole replay that may use the checkpoint resumes from the service's checkpoint
/// and history archive, or — where there are none, or they do not match the log —
/// builds them as the service's first open does (and checkpoints them), so that the
/// next replay resumes. Any other replay folds from the start with a temporary lookup
/// store and spools its history, writing nothing into the directory.
pub fn replay_dir(
    dir: &Path,
    as_of_seq: Option<u64>,
    as_of_time: Option<&str>,
    checkpoint: bool,
) -> Result<Replayed> {
    let log = open(dir)?;
    let bound = match (as_of_seq, as_of_time) {
        (Some(n), None) => Bound::Seq(n),
        (None, Some(t)) => Bound::Time(parse_time(t)?),
        (None, None) => Bound::All,
        (Some(_), Some(_)) => bail!("give --as-of-seq or --as-of-time, not both"),
    };
    let bar = progress::bar(log.head().last_seq, "replay");
    let mut progress = |seq| bar.set_position(seq);
    let cannot = || format!("cannot replay {}", dir.display());
    if checkpoint && bound == Bound::All {
        let (rebuilt, stores) =
            history::rebuild_archived(&log, history::LOOKUPS_IN_MEMORY, &mut progress)
                .with_context(cannot)?;
        bar.finish_and_clear();
        for w in &rebuilt.warnings {
            eprintln!("warning: {w}");
        }
        // Folded on from the checkpoint: checkpoint again, so the next replay resumes
        // from here (a rebuild from the start was checkpointed already).
        if rebuilt.resumed_from.is_some_and(|from| from < rebuilt.seq) {
            history::save_checkpoint(&log, &rebuilt.replay, rebuilt.seq, rebuilt.arrival, &stores)
                .with_context(|| format!("cannot write a checkpoint into {}", dir.display()))?;
        }
        let archive = stores
            .archive
            .context("a rebuild of the directory gave no history archive")?;
        return Ok(Replayed {
            replay: rebuilt.replay,
            history: History::Archive(archive),
        });
    }
    let store = Arc::new(
        LookupStore::temporary(None)
            .context("cannot create the replay's temporary lookup store")?,
    );
    let mut spool = Spool::new()?;
    let rebuilt = history::fold_streaming(
        &log,
        bound,
        false,
        store,
        history::LOOKUPS_IN_MEMORY,
        &mut |drained| {
            spool.take(&drained).map_err(|e| LogError::Io {
                path: std::env::temp_dir(),
                source: std::io::Error::other(format!("{e:#}")),
            })
        },
        &mut progress,
    )
    .with_context(cannot)?;
    bar.finish_and_clear();
    Ok(Replayed {
        replay: rebuilt.replay,
        history: History::Spool(spool),
    })
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Returns `Ok(false)` when damage was found (the caller exits non-zero).
pub fn verify(args: VerifyArgs) -> Result<bool> {
    let log = match Log::open_existing(&args.data_dir) {
        Ok(log) => log,
        // Nothing to verify, or nothing that may be read now: an error, not damage.
        Err(e @ (LogError::NoDataDirectory { .. } | LogError::InUse { .. })) => {
            return Err(e.into())
        }
        Err(e) => {
            println!("DAMAGED: {e}");
            return Ok(false);
        }
    };
    let bar = progress::bar(log.head().last_seq, "verify");
    let report = match ledger_log::verify(&log, &mut |seq| bar.set_position(seq)) {
        Ok(r) => r,
        Err(e) => {
            bar.finish_and_clear();
            println!("DAMAGED: {e}");
            return Ok(false);
        }
    };
    bar.finish_and_clear();
    println!(
        "records: {} (gap-free from 1: {}), quarantined: {}, duplicates: {}",
        report.records,
        report.first_bad_seq.is_none(),
        report.quarantined,
        report.duplicates
    );
    match &report.checkpoint {
        ledger_log::CheckpointStatus::Absent => println!("checkpoint: none"),
        ledger_log::CheckpointStatus::Matches { seq } => {
            println!("checkpoint: at sequence {seq}, equal to a fresh fold")
        }
        ledger_log::CheckpointStatus::Differs(why) => println!("checkpoint: {why}"),
    }
    if report.ok() {
        println!("OK: hash chain, sequence, identity index and checkpoint verified");
        return Ok(true);
    }
    match report.first_bad_seq {
        Some(seq) => println!("DAMAGED: first bad sequence {seq}"),
        None => println!("DAMAGED"),
    }
    for p in &report.problems {
        println!("  - {p}");
    }
    Ok(false)
}

#[derive(Args)]
pub struct ExportArgs {
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Wrap each event as {"seq":N,"hash":"…","event":<the event bytes>} for external audit.
    #[arg(long)]
    pub with_chain: bool,
}

pub fn export(args: ExportArgs) -> Result<()> {
    let log = open(&args.data_dir)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut written = Ok(());
    log.export(1, u64::MAX, args.with_chain, &mut |bytes| {
        written = out.write_all(bytes);
        written.is_ok()
    })?;
    written?;
    out.flush()?;
    Ok(())
}

#[derive(Args)]
pub struct RejectedArgs {
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A refusal's line, stage, code and sender as the listings align them.
pub fn refusal_columns(r: &ledger_core::replay::Rejection) -> String {
    format!(
        "{:>8}  {:<10}  {:<24}  {:<40}",
        r.line,
        r.stage(),
        r.code.as_str(),
        r.who()
    )
}

pub fn rejected(args: RejectedArgs) -> Result<()> {
    let mut replayed = replay_dir(&args.data_dir, None, None, true)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut written = Ok(());
    replayed.for_each_rejection(&mut |r| {
        if written.is_err() {
            return;
        }
        written = if args.json {
            writeln!(out, "{}", r.to_json())
        } else {
            writeln!(out, "{}  {}", refusal_columns(r), r.message)
        };
    })?;
    written?;
    out.flush()?;
    Ok(())
}
