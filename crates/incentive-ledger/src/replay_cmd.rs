//! `replay`: read NDJSON event files (or stdin) or a data directory, fold them and print
//! the document.

use crate::spool::{for_each_line, History, Replayed, Spool};
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
    /// `json`: the replay document; `csv`: one of its tables (--table) for a spreadsheet.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// With --format csv: which table.
    #[arg(long, value_enum, required_if_eq("format", "csv"))]
    pub table: Option<Table>,
    /// With --events: lookups held in memory before they move to the temporary store
    /// (about 150–300 bytes each).
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub lookups_in_memory: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Csv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    Balances,
    Claims,
    Payouts,
    Rejected,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let mut replayed = match &args.data_dir {
        Some(dir) => crate::log_cmd::replay_dir(
            dir,
            args.as_of_seq,
            args.as_of_time.as_deref(),
            !args.no_checkpoint,
        )?,
        None => fold_files(&args)?,
    };
    if let (Format::Csv, Some(table)) = (args.format, args.table) {
        return write_csv(&mut replayed, table);
    }
    // Files print their refusals as they are folded (naming the file); a directory's
    // come from its history.
    if args.messages && args.data_dir.is_some() {
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

/// Folds `--events` files line by line with the lookups in a temporary store and the
/// payouts and refusals spooled to temporary files, so that memory holds the working
/// set only (issue 15) — a file larger than memory replays.
fn fold_files(args: &ReplayArgs) -> Result<Replayed> {
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
    // The replay holds the store (its backing) for as long as it lives.
    drop(store);
    Ok(Replayed {
        replay,
        history: History::Spool(spool),
    })
}

/// One table of the document as CSV (RFC 4180, a header line): balances and claims from
/// the working set, payouts and refusals streamed from disk.
fn write_csv(replayed: &mut Replayed, table: Table) -> Result<()> {
    use ledger_core::document::{BalanceRow, ClaimRow, CsvRow, PayoutRow};
    use ledger_core::replay::Rejection;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = String::new();
    let mut row = |out: &mut dyn Write, fields: &mut dyn Iterator<Item = &str>| {
        line.clear();
        ledger_core::values::push_csv_record(&mut line, fields);
        out.write_all(line.as_bytes())
    };
    match table {
        Table::Balances => {
            row(&mut out, &mut BalanceRow::HEADER.iter().copied())?;
            for b in replayed.replay.ledger().balances_iter() {
                let fields = BalanceRow::from(&b).fields();
                row(&mut out, &mut fields.iter().map(String::as_str))?;
            }
        }
        Table::Claims => {
            row(&mut out, &mut ClaimRow::HEADER.iter().copied())?;
            for c in replayed.replay.ledger().claims_iter() {
                let fields = ClaimRow::from(&c).fields();
                row(&mut out, &mut fields.iter().map(String::as_str))?;
            }
        }
        Table::Payouts => {
            row(&mut out, &mut PayoutRow::HEADER.iter().copied())?;
            let mut written = Ok(());
            replayed.for_each_payout(&mut |p| {
                if written.is_ok() {
                    let fields = PayoutRow::from(p).fields();
                    written = row(&mut out, &mut fields.iter().map(String::as_str));
                }
            })?;
            written?;
        }
        Table::Rejected => {
            row(&mut out, &mut Rejection::HEADER.iter().copied())?;
            let mut written = Ok(());
            replayed.for_each_rejection(&mut |r| {
                if written.is_ok() {
                    let fields = r.fields();
                    written = row(&mut out, &mut fields.iter().map(String::as_str));
                }
            })?;
            written?;
        }
    }
    out.flush()?;
    Ok(())
}
