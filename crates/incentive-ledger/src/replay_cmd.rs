//! `replay`: read NDJSON event files (or stdin) or a data directory, fold them and print
//! the document.

use crate::spool::{for_each_line, Spool};
use anyhow::{Context, Result};
use clap::Args;
use ledger_core::Replay;
use ledger_log::LookupStore;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct ReplayArgs {
    /// NDJSON files of CloudEvents, applied in the order given (`-` reads stdin).
    /// Line numbers continue across files.
    #[arg(long = "events", value_name = "FILE", num_args = 1.., required_unless_present = "data_dir", conflicts_with = "data_dir")]
    pub events: Vec<PathBuf>,
    /// Replay a data directory's log instead of files.
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: the document as it stood after this log position.
    #[arg(long, requires = "data_dir", conflicts_with = "as_of_time")]
    pub as_of_seq: Option<u64>,
    /// With --data-dir: the document after the last input that arrived before this
    /// RFC 3339 time.
    #[arg(long, requires = "data_dir")]
    pub as_of_time: Option<String>,
    /// With --data-dir: neither read nor write the checkpoint (fold the whole log).
    #[arg(long, requires = "data_dir")]
    pub no_checkpoint: bool,
    /// Print each refusal's human-readable message on stderr.
    #[arg(long)]
    pub messages: bool,
    /// Print the document on one line instead of indented.
    #[arg(long)]
    pub compact: bool,
    /// With --events: lookups held in memory before they move to the temporary store
    /// (about 150–300 bytes each).
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub lookups_in_memory: usize,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    match &args.data_dir {
        Some(dir) => {
            let mut replayed = crate::log_cmd::replay_dir(
                dir,
                args.as_of_seq,
                args.as_of_time.as_deref(),
                !args.no_checkpoint,
            )?;
            if args.messages {
                replayed.for_each_rejection(&mut |r| {
                    eprintln!("{}: {}: {}: {}", r.line, r.who(), r.code, r.message);
                })?;
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            replayed.write_document(args.compact, &mut out)?;
            writeln!(out)?;
            out.flush()?;
            Ok(())
        }
        None => replay_files(&args),
    }
}

/// `replay --events`: folds the files line by line with its lookups in a temporary
/// store and its payouts and refusals spooled to temporary files, so that memory holds
/// the working set only (issue 15) — a file larger than memory replays.
fn replay_files(args: &ReplayArgs) -> Result<()> {
    let store = Arc::new(
        LookupStore::temporary(None)
            .context("cannot create the replay's temporary lookup store")?,
    );
    let mut replay = Replay::new();
    replay.attach_backing(store.clone());
    let mut spool = Spool::new()?;
    let mut first_line = 1u64;
    let stderr = std::io::stderr();
    for path in &args.events {
        let mut input: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read events file {}", path.display()))?;
            Box::new(BufReader::with_capacity(1 << 16, file))
        };
        let lines = for_each_line(&mut input, first_line, |line, raw| {
            replay.try_push(raw, line).with_context(|| {
                format!(
                    "{}:{line}: the replay's lookup store failed",
                    path.display()
                )
            })?;
            let drained = replay.drain_history();
            if args.messages {
                for r in &drained.rejections {
                    let _ = writeln!(
                        stderr.lock(),
                        "{}:{line}: {}: {}: {}",
                        path.display(),
                        r.who(),
                        r.code,
                        r.message
                    );
                }
            }
            spool.take(&drained)?;
            if replay.lookups_in_memory() >= args.lookups_in_memory {
                ledger_log::history::flush_lookups(&mut replay, &store)
                    .context("cannot write the replay's temporary lookup store")?;
            }
            Ok(())
        })
        .with_context(|| format!("cannot read events file {}", path.display()))?;
        first_line += lines;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    spool.finish(&mut replay, args.compact, &mut out)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
