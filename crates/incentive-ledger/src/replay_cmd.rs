//! `replay`: read NDJSON event files (or stdin), fold them and print the document.

use anyhow::{Context, Result};
use clap::Args;
use ledger_core::replay::{ndjson_lines, physical_lines};
use ledger_core::{Replay, Step};
use std::io::{Read, Write};
use std::path::PathBuf;

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
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read events from stdin")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read events file {}", path.display()))
    }
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let replay = match &args.data_dir {
        Some(dir) => {
            let replay = crate::log_cmd::replay_dir(
                dir,
                args.as_of_seq,
                args.as_of_time.as_deref(),
                !args.no_checkpoint,
            )?;
            if args.messages {
                for r in replay.rejections() {
                    let who = match &r.identity {
                        Some((source, id)) => format!("{source}/{id}"),
                        None => "-".to_string(),
                    };
                    eprintln!("{}: {who}: {}: {}", r.line, r.code, r.message);
                }
            }
            replay
        }
        None => replay_files(&args)?,
    };
    print_document(&replay, args.compact)
}

fn replay_files(args: &ReplayArgs) -> Result<Replay> {
    let mut replay = Replay::new();
    let mut first_line = 1u64;
    let stderr = std::io::stderr();
    for path in &args.events {
        let bytes = read_input(path)?;
        for (line, raw) in ndjson_lines(&bytes, first_line) {
            let step = replay.push(raw, line);
            if args.messages {
                if let Step::Rejected(index) = step {
                    let r = &replay.rejections()[index];
                    let who = match &r.identity {
                        Some((source, id)) => format!("{source}/{id}"),
                        None => "-".to_string(),
                    };
                    let _ = writeln!(
                        stderr.lock(),
                        "{}:{line}: {who}: {}: {}",
                        path.display(),
                        r.code,
                        r.message
                    );
                }
            }
        }
        first_line += physical_lines(&bytes);
    }
    Ok(replay)
}

fn print_document(replay: &Replay, compact: bool) -> Result<()> {
    let doc = replay.document();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    if compact {
        serde_json::to_writer(&mut out, &doc)?;
    } else {
        serde_json::to_writer_pretty(&mut out, &doc)?;
    }
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
