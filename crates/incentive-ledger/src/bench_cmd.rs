//! `bench`: measures the core over a generated stream in the fixtures' mix and prints
//! figures (events/s). Not a test: nothing here asserts a timing.

use anyhow::Result;
use clap::Args;
use ledger_core::gen::{GenConfig, Generator};
use ledger_core::intake::{self, Accepted};
use ledger_core::replay::{Identity, IdentityIndex};
use ledger_core::{Ledger, Replay};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// Number of generated events.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Seed of the generated stream.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Events pre-parsed at a time when timing the fold alone (bounds memory).
    #[arg(long, default_value_t = 100_000)]
    pub chunk: usize,
    /// Measure this NDJSON file instead of a generated stream.
    #[arg(long, value_name = "FILE")]
    pub from: Option<std::path::PathBuf>,
    /// Also measure the durable log in this directory: group-commit ingest of the stream
    /// (when the directory is new or empty), then replay from disk without and with a
    /// checkpoint (of whatever log the directory holds).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// With --data-dir: skip the in-memory measurements of the core.
    #[arg(long, requires = "data_dir")]
    pub log_only: bool,
    /// Inputs per group commit for the durable-log measurement.
    #[arg(long, default_value_t = 4096)]
    pub batch_size: usize,
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>10.0} events/s  ({n} events in {:.3} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

/// Long by design: a script of measurements that print in order; each phase is a few lines
/// of timing around a call.
pub fn run(args: BenchArgs) -> Result<()> {
    if let (true, Some(dir)) = (args.log_only, &args.data_dir) {
        if ledger_log::Log::open(dir)?.head().last_seq > 0 {
            return bench_log(dir, &[], args.batch_size.max(1));
        }
    }
    let lines: Vec<String> = match &args.from {
        Some(path) => std::fs::read_to_string(path)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        None => {
            eprintln!("generating {} events (seed {}) ...", args.events, args.seed);
            Generator::new(GenConfig::new(args.seed, args.events)).collect()
        }
    };
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    println!(
        "stream: {} events, {:.1} MiB of NDJSON",
        lines.len(),
        bytes as f64 / 1048576.0
    );
    if let (true, Some(dir)) = (args.log_only, &args.data_dir) {
        return bench_log(dir, &lines, args.batch_size.max(1));
    }

    // 0. The JSON reader alone, for scale.
    let start = Instant::now();
    for line in &lines {
        std::hint::black_box(ledger_core::json::parse(line.as_bytes()).is_ok());
    }
    println!("I-JSON parse only: {}", rate(lines.len(), start.elapsed()));
    let start = Instant::now();
    for line in &lines {
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(line.as_bytes()).is_ok());
    }
    println!("serde_json Value:  {}", rate(lines.len(), start.elapsed()));
    let parsed: Vec<_> = lines
        .iter()
        .take(200_000)
        .filter_map(|l| ledger_core::json::parse(l.as_bytes()).ok())
        .collect();
    let start = Instant::now();
    for j in &parsed {
        std::hint::black_box(j.content_digest());
    }
    println!("content digest:    {}", rate(parsed.len(), start.elapsed()));
    drop(parsed);
    let start = Instant::now();
    for line in lines.iter().take(200_000) {
        std::hint::black_box(intake::check(line.as_bytes()).is_ok());
    }
    println!(
        "intake check:      {}",
        rate(lines.len().min(200_000), start.elapsed())
    );

    // 1. The whole pipeline of `replay --events`: intake + identity + fold + bookkeeping.
    let start = Instant::now();
    let mut replay = Replay::new();
    for (i, line) in lines.iter().enumerate() {
        replay.push(line.as_bytes(), i as u64 + 1);
    }
    let full = start.elapsed();
    let doc_start = Instant::now();
    let doc = replay.document();
    let doc_time = doc_start.elapsed();
    println!("parse + fold:      {}", rate(lines.len(), full));
    println!(
        "document + digest: {:.3} s ({} balances, {} payouts, digest {}…)",
        doc_time.as_secs_f64(),
        doc.balances.len(),
        doc.payouts.len(),
        &doc.digest[..12]
    );
    let c = doc.events;
    println!(
        "counts: received {} applied {} rejected {} duplicates {}",
        c.received, c.applied, c.rejected, c.duplicates
    );
    drop(replay);

    // 2. Intake alone, and 3. the fold alone over pre-parsed events, chunk by chunk.
    // The fold runs twice over each chunk: plain, and keeping the statement journals
    // (as `serve` does).
    let mut intake_time = Duration::ZERO;
    let mut fold_time = Duration::ZERO;
    let mut journal_fold_time = Duration::ZERO;
    let mut folded = 0usize;
    let mut ledger = Ledger::new();
    let mut journaled = Ledger::new();
    journaled.enable_journal();
    let mut identities = IdentityIndex::default();
    for chunk in lines.chunks(args.chunk.max(1)) {
        let start = Instant::now();
        let mut events = Vec::with_capacity(chunk.len());
        for line in chunk {
            if let Ok(Accepted {
                event,
                content_digest,
            }) = intake::check(line.as_bytes())
            {
                if identities.check(&event, &content_digest) == Identity::New {
                    identities.insert(&event, content_digest);
                    events.push(event);
                }
            }
        }
        intake_time += start.elapsed();
        let start = Instant::now();
        for event in &events {
            std::hint::black_box(ledger.apply(event));
        }
        fold_time += start.elapsed();
        let start = Instant::now();
        for event in &events {
            std::hint::black_box(journaled.apply(event));
        }
        journal_fold_time += start.elapsed();
        folded += events.len();
    }
    println!("intake alone:      {}", rate(lines.len(), intake_time));
    println!("fold alone:        {}", rate(folded, fold_time));
    println!("fold + journals:   {}", rate(folded, journal_fold_time));
    drop(ledger);
    drop(journaled);
    drop(identities);
    if let Some(dir) = &args.data_dir {
        bench_log(dir, &lines, args.batch_size.max(1))?;
    }
    Ok(())
}

/// This process's resident memory now and at its peak, as the kernel reports it.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?".to_string(), |v| v.trim().to_string())
    };
    format!("RSS {}, peak {}", field("VmRSS:"), field("VmHWM:"))
}

fn bench_log(dir: &std::path::Path, lines: &[String], batch_size: usize) -> Result<()> {
    use ledger_log::Log;
    let start = Instant::now();
    let mut log = Log::open(dir)?;
    println!(
        "open:              {:.3} s ({} records; {})",
        start.elapsed().as_secs_f64(),
        log.head().last_seq,
        memory()
    );
    if log.head().last_seq > 0 {
        println!(
            "durable ingest:    skipped ({} already holds {} records)",
            dir.display(),
            log.head().last_seq
        );
    } else {
        bench_ingest(&mut log, lines, batch_size)?;
    }
    bench_replay(&log)
}

fn bench_ingest(log: &mut ledger_log::Log, lines: &[String], batch_size: usize) -> Result<()> {
    use ledger_log::Input;
    let start = Instant::now();
    let mut line_no = 0u64;
    for chunk in lines.chunks(batch_size) {
        let inputs: Vec<Input> = chunk
            .iter()
            .map(|l| {
                line_no += 1;
                Input {
                    raw: l.as_bytes(),
                    line: Some(line_no),
                    time_ns: 0,
                    transport: ledger_log::Transport::None,
                }
            })
            .collect();
        log.append_batch(&inputs)?;
    }
    let ingest = start.elapsed();
    println!(
        "durable ingest:    {}  (batches of {batch_size}, one flush each, {} batches)",
        rate(lines.len(), ingest),
        lines.len().div_ceil(batch_size)
    );
    Ok(())
}

fn bench_replay(log: &ledger_log::Log) -> Result<()> {
    use ledger_log::{history, Bound};
    let records = log.head().last_seq as usize;
    // The reading side alone: sled, segment decoding and intake's parse, no fold.
    let start = Instant::now();
    let mut parsed = 0usize;
    for segment in log.segments_from(1) {
        let segment = segment?;
        for record in segment.records(log) {
            parsed += usize::from(ledger_core::intake::check_event(record?.raw).is_ok());
        }
    }
    println!("read + parse only: {}", rate(parsed, start.elapsed()));
    let start = Instant::now();
    let rebuilt = history::rebuild(log, Bound::All, false, &mut |_| {})?;
    let full = start.elapsed();
    println!(
        "replay from disk:  {}  (no checkpoint, {records} records; {})",
        rate(records, full),
        memory()
    );
    let start = Instant::now();
    let pending = history::prepare_checkpoint(
        log,
        &rebuilt.replay,
        rebuilt.seq,
        rebuilt.arrival,
        &history::Stores::default(),
    )?;
    let encoded = start.elapsed();
    if let Some(pending) = pending {
        pending.write(log)?;
    }
    println!(
        "checkpoint write:  {:.3} s (encoding the state {:.3} s, storing it {:.3} s)",
        start.elapsed().as_secs_f64(),
        encoded.as_secs_f64(),
        (start.elapsed() - encoded).as_secs_f64()
    );
    drop(rebuilt);
    let start = Instant::now();
    let resumed = history::rebuild(log, Bound::All, true, &mut |_| {})?;
    println!(
        "replay from disk:  {:.3} s with the checkpoint at {} (resumed: {})",
        start.elapsed().as_secs_f64(),
        resumed.seq,
        resumed.resumed_from.is_some()
    );
    Ok(())
}
