//! Planning and evaluation commands over a data directory (issue 17): `simulate` (a
//! draft program on the real log) and `report` (what programs cost and owe). Neither
//! writes into the directory.

use crate::progress;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ledger_core::simulate::Plan;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Table,
    /// One JSON document.
    Json,
    /// Comma-separated rows with a header (RFC 4180).
    Csv,
}

#[derive(Args)]
pub struct SimulateArgs {
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The draft: a JSON file holding the `data` of a program.published event (its
    /// `version` is ignored; versions are numbered by where the draft goes).
    #[arg(long, value_name = "DRAFT.json")]
    pub program: PathBuf,
    /// The log position the draft applies from (default 1: from the start). Versions
    /// the log applied from here on are taken with the draft's fields; if the program
    /// exists before it, the draft is also inserted here as a new version.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub from_seq: Option<u64>,
    /// NDJSON events inserted at the position, in file order (e.g. enrollments).
    #[arg(long, value_name = "EXTRA.ndjson")]
    pub events: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Differing payouts listed in the JSON form (all are counted).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_payouts: usize,
    /// Rows per section in the table form.
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub rows: usize,
}

/// Reads the draft and the extra events and checks them as intake would.
pub fn plan(program: &Path, from_seq: Option<u64>, events: Option<&Path>) -> Result<Plan> {
    let draft = std::fs::read(program)
        .with_context(|| format!("cannot read the draft program {}", program.display()))?;
    let mut extras = Vec::new();
    if let Some(path) = events {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read the extra events {}", path.display()))?;
        let mut reader = std::io::BufReader::new(file);
        crate::spool::for_each_line(&mut reader, 1, |line, raw| {
            extras.push((line, raw.to_vec()));
            Ok(())
        })
        .with_context(|| format!("cannot read the extra events {}", path.display()))?;
    }
    Plan::new(&draft, from_seq, extras).with_context(|| {
        format!(
            "cannot simulate {}{}",
            program.display(),
            events.map_or(String::new(), |e| format!(" with {}", e.display()))
        )
    })
}

pub fn simulate(args: SimulateArgs) -> Result<()> {
    let dir = &args.data_dir;
    let log = crate::log_cmd::open(dir)?;
    let plan = plan(&args.program, args.from_seq, args.events.as_deref())?;
    let bar = progress::bar(log.head().last_seq, "simulate");
    let simulated =
        ledger_log::simulation::simulate(&log.reader(), &plan, args.max_payouts, &mut |seq| {
            bar.set_position(seq)
        })
        .with_context(|| format!("cannot simulate on {}", dir.display()))?;
    bar.finish_and_clear();
    for w in &simulated.warnings {
        eprintln!("warning: {w}");
    }
    let s = &simulated.simulation;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Table => out.write_all(s.table(args.rows).as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, s)?;
            writeln!(out)?;
        }
        Format::Csv => out.write_all(s.csv().as_bytes())?,
    }
    out.flush()?;
    Ok(())
}

#[derive(Args)]
pub struct ReportArgs {
    #[arg(long, env = "INCENTIVE_LEDGER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// One program (default: every program).
    #[arg(long, value_name = "ID")]
    pub program: Option<String>,
    /// The report as it stood after this log position.
    #[arg(long, value_name = "N", conflicts_with = "as_of_time")]
    pub as_of_seq: Option<u64>,
    /// The report after the last input that arrived before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub as_of_time: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn report(args: ReportArgs) -> Result<()> {
    let dir = &args.data_dir;
    let log = crate::log_cmd::open(dir)?;
    let bound = match (args.as_of_seq, args.as_of_time.as_deref()) {
        (Some(n), _) => ledger_log::Bound::Seq(n),
        (None, Some(t)) => ledger_log::Bound::Time(crate::log_cmd::parse_time(t)?),
        (None, None) => ledger_log::Bound::All,
    };
    let bar = progress::bar(log.head().last_seq, "report");
    let folded = ledger_log::fold_read_only(&log.reader(), bound, &mut |seq| bar.set_position(seq))
        .with_context(|| format!("cannot fold {}", dir.display()))?;
    bar.finish_and_clear();
    for w in &folded.rebuilt.warnings {
        eprintln!("warning: {w}");
    }
    let report = ledger_core::report::build(
        &folded.rebuilt.replay,
        folded.rebuilt.seq,
        args.program.as_deref(),
    )
    .with_context(|| {
        format!(
            "no program {} in the log at position {}",
            args.program.as_deref().unwrap_or_default(),
            folded.rebuilt.seq
        )
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Table => out.write_all(report.table().as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Csv => out.write_all(report.csv().as_bytes())?,
    }
    out.flush()?;
    Ok(())
}
