//! `bench-memory`: how the memory of a replay grows with the log. Generates two seeded
//! streams (the smaller a prefix of the larger's seed, same partners), runs
//! `replay --events` over each as a child process of each binary given, and prints
//! each run's peak RSS (the kernel's `ru_maxrss` of the child), wall time and digest,
//! then the slope in bytes per logged event between the two lengths. Binaries are
//! interleaved per length, so that a busy spell of a shared host hits both alike.
//!
//! With `--service`, each stream is ingested into a data directory instead, which is
//! then opened as `serve` opens it (`open-service`, a hidden command: the rebuild from
//! the log into the history archive, a checkpoint, the log's identity index) — once
//! from nothing and once more from the checkpoint, the restart. It prints each step's
//! peak RSS and time, the checkpoint's size and the directory's bytes per event.
//! Not a test: nothing here asserts a figure.

use anyhow::{bail, Context, Result};
use clap::Args;
use ledger_core::gen::{GenConfig, Generator};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct BenchMemoryArgs {
    /// Events of the shorter stream.
    #[arg(long, default_value_t = 1_000_000)]
    pub small: usize,
    /// Events of the longer stream.
    #[arg(long, default_value_t = 5_000_000)]
    pub large: usize,
    #[arg(long, default_value_t = 77)]
    pub seed: u64,
    #[arg(long, default_value_t = 400)]
    pub partners: usize,
    /// Binaries to measure (each `replay --events` of both streams); this one when none
    /// is given. Give an old and a new build to compare them in one run.
    #[arg(long = "binary", value_name = "PATH")]
    pub binaries: Vec<PathBuf>,
    /// Where the streams and outputs are written (a temporary directory when absent;
    /// the large stream of 5M events takes ~1.6 GB).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Measure the service's data directory (ingest, first open, restart) instead of
    /// `replay --events`.
    #[arg(long)]
    pub service: bool,
}

#[derive(Args)]
pub struct OpenServiceArgs {
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Opens a data directory as `serve` does, checkpoints it, loads the log's identity
/// index, and prints the position and the seconds the open took, as JSON.
pub fn open_service(args: OpenServiceArgs) -> Result<()> {
    crate::set_purge_delay();
    let start = Instant::now();
    let (mut service, handle) = ledger_service::Service::open(ledger_service::ServiceConfig {
        data_dir: args.data_dir,
        ..ledger_service::ServiceConfig::default()
    })
    .map_err(|e| anyhow::anyhow!(ledger_service::error_chain(&e)))?;
    let opened = start.elapsed().as_secs_f64();
    let resumed_from = handle.status().checkpoint_seq;
    let mut stages = serde_json::Map::new();
    stages.insert("rss_after_open".into(), resident_bytes().into());
    service
        .settle_for_measurement(&mut |stage| {
            stages.insert(format!("rss_after_{stage}"), resident_bytes().into());
        })
        .map_err(|e| anyhow::anyhow!(ledger_service::error_chain(&e)))?;
    stages.insert("position".into(), handle.position().into());
    stages.insert("resumed_from".into(), resumed_from.into());
    stages.insert("open_seconds".into(), opened.into());
    stages.insert("total_seconds".into(), start.elapsed().as_secs_f64().into());
    println!("{}", serde_json::Value::Object(stages));
    Ok(())
}

/// This process's resident set now (`VmRSS`), in bytes; 0 where it cannot be read.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// One run's figures.
struct Run {
    peak_rss_bytes: u64,
    seconds: f64,
    digest: String,
}

pub fn run(args: BenchMemoryArgs) -> Result<()> {
    if args.small >= args.large {
        bail!("--small must be below --large");
    }
    let binaries = if args.binaries.is_empty() {
        vec![std::env::current_exe().context("cannot find this binary")?]
    } else {
        args.binaries.clone()
    };
    let temp;
    let dir = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("cannot create a work directory")?;
            temp.path().to_path_buf()
        }
    };
    if args.service {
        return run_service(&args, &binaries, &dir);
    }
    let mut results: Vec<Vec<Run>> = binaries.iter().map(|_| Vec::new()).collect();
    for n in [args.small, args.large] {
        let events = dir.join(format!("events-{n}.ndjson"));
        generate(&events, n, args.seed, args.partners)?;
        for (b, binary) in binaries.iter().enumerate() {
            let r = replay(binary, &events, &dir.join("document.json"))?;
            println!(
                "{:>9} events  peak RSS {:>7.1} MB  {:>6.1} s  digest {}  [{}]",
                n,
                r.peak_rss_bytes as f64 / 1e6,
                r.seconds,
                &r.digest[..16.min(r.digest.len())],
                binary.display()
            );
            results[b].push(r);
        }
        std::fs::remove_file(&events).ok();
    }
    for (binary, runs) in binaries.iter().zip(&results) {
        let slope = (runs[1].peak_rss_bytes as f64 - runs[0].peak_rss_bytes as f64)
            / (args.large - args.small) as f64;
        println!(
            "slope {slope:>7.1} bytes of peak RSS per event between {} and {} events  [{}]",
            args.small,
            args.large,
            binary.display()
        );
    }
    Ok(())
}

/// One binary's figures for a data directory of one length.
struct ServiceRun {
    ingest: Run,
    first_open: Run,
    first_open_seconds: f64,
    restart: Run,
    restart_seconds: f64,
    checkpoint_bytes: u64,
    directory_bytes: u64,
}

fn run_service(args: &BenchMemoryArgs, binaries: &[PathBuf], dir: &Path) -> Result<()> {
    let mut results: Vec<Vec<ServiceRun>> = binaries.iter().map(|_| Vec::new()).collect();
    for n in [args.small, args.large] {
        let events = dir.join(format!("events-{n}.ndjson"));
        generate(&events, n, args.seed, args.partners)?;
        for (b, binary) in binaries.iter().enumerate() {
            let data = dir.join(format!("data-{n}-{b}"));
            if data.exists() {
                std::fs::remove_dir_all(&data)?;
            }
            let ingest = child(binary, &["ingest", "--events"], &events, &data, None)?;
            let opened = dir.join("open.json");
            let first_open = child(binary, &["open-service"], &events, &data, Some(&opened))?;
            let first: serde_json::Value = serde_json::from_slice(&std::fs::read(&opened)?)?;
            let restart = child(binary, &["open-service"], &events, &data, Some(&opened))?;
            let again: serde_json::Value = serde_json::from_slice(&std::fs::read(&opened)?)?;
            println!(
                "{n:>9} events  resident after the restart's open {:.1} MB, after a checkpoint {:.1} MB, after the log's identity index {:.1} MB  [{}]",
                again["rss_after_open"].as_f64().unwrap_or(0.0) / 1e6,
                again["rss_after_checkpoint"].as_f64().unwrap_or(0.0) / 1e6,
                again["rss_after_identity_index"].as_f64().unwrap_or(0.0) / 1e6,
                binary.display()
            );
            let run = ServiceRun {
                ingest,
                first_open,
                first_open_seconds: first["total_seconds"].as_f64().unwrap_or(f64::NAN),
                restart,
                restart_seconds: again["open_seconds"].as_f64().unwrap_or(f64::NAN),
                checkpoint_bytes: std::fs::metadata(data.join("CHECKPOINT"))
                    .map(|m| m.len())
                    .unwrap_or(0),
                directory_bytes: directory_bytes(&data)?,
            };
            let mb = |b: u64| b as f64 / 1e6;
            println!(
                "{n:>9} events  ingest {:>6.1} s ({:>6.0} ev/s) peak {:>7.1} MB | first open {:>6.1} s peak {:>7.1} MB | restart {:>5.2} s (open) peak {:>7.1} MB | checkpoint {:>6.1} MB | directory {:>7.1} MB, {:>4.0} B/event  [{}]",
                run.ingest.seconds,
                n as f64 / run.ingest.seconds,
                mb(run.ingest.peak_rss_bytes),
                run.first_open_seconds,
                mb(run.first_open.peak_rss_bytes),
                run.restart_seconds,
                mb(run.restart.peak_rss_bytes),
                mb(run.checkpoint_bytes),
                mb(run.directory_bytes),
                run.directory_bytes as f64 / n as f64,
                binary.display()
            );
            results[b].push(run);
            std::fs::remove_dir_all(&data).ok();
        }
        std::fs::remove_file(&events).ok();
    }
    let span = (args.large - args.small) as f64;
    for (binary, runs) in binaries.iter().zip(&results) {
        let slope = |f: fn(&ServiceRun) -> u64| (f(&runs[1]) as f64 - f(&runs[0]) as f64) / span;
        println!(
            "slope per event between {} and {} events: restart peak RSS {:>6.1} B, first open {:>6.1} B, ingest {:>6.1} B, checkpoint {:>6.1} B  [{}]",
            args.small,
            args.large,
            slope(|r| r.restart.peak_rss_bytes),
            slope(|r| r.first_open.peak_rss_bytes),
            slope(|r| r.ingest.peak_rss_bytes),
            slope(|r| r.checkpoint_bytes),
            binary.display()
        );
    }
    Ok(())
}

/// Runs `binary <args> <events> --data-dir <data>` (`events` only for `ingest`), its
/// stdout to `output` (or nowhere), and reads its peak RSS.
fn child(
    binary: &Path,
    args: &[&str],
    events: &Path,
    data: &Path,
    output: Option<&Path>,
) -> Result<Run> {
    let mut cmd = std::process::Command::new(binary);
    cmd.args(args);
    if args[0] == "ingest" {
        cmd.arg(events);
    }
    cmd.arg("--data-dir").arg(data);
    match output {
        Some(path) => cmd.stdout(std::fs::File::create(path)?),
        None => cmd.stdout(std::process::Stdio::null()),
    };
    let start = Instant::now();
    let spawned = cmd
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let (status, peak_rss_bytes) = wait_with_peak_rss(spawned.id())?;
    if !status.success() {
        bail!("{} {} failed: {status}", binary.display(), args[0]);
    }
    Ok(Run {
        peak_rss_bytes,
        seconds: start.elapsed().as_secs_f64(),
        digest: String::new(),
    })
}

/// Bytes of every file under `dir`.
fn directory_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            directory_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

fn generate(path: &Path, n: usize, seed: u64, partners: usize) -> Result<()> {
    let mut cfg = GenConfig::new(seed, n);
    cfg.partners = partners.max(1);
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    for line in Generator::new(cfg) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Runs `binary replay --events events --compact` into `output`, and reads the peak
/// RSS the kernel accounted to it.
fn replay(binary: &Path, events: &Path, output: &Path) -> Result<Run> {
    let out = std::fs::File::create(output)?;
    let start = Instant::now();
    let child = std::process::Command::new(binary)
        .args(["replay", "--compact", "--events"])
        .arg(events)
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    let (status, peak_rss_bytes) = wait_with_peak_rss(child.id())?;
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{} replay failed: {status}", binary.display());
    }
    Ok(Run {
        peak_rss_bytes,
        seconds,
        digest: last_digest(output)?,
    })
}

/// Waits for the child `pid` and returns its exit status and peak resident set size
/// (`ru_maxrss`, which Linux reports in KiB).
fn wait_with_peak_rss(pid: u32) -> Result<(std::process::ExitStatus, u64)> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0i32;
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = libc::pid_t::try_from(pid).context("a child's pid fits pid_t")?;
    // SAFETY: `status` and `usage` are valid for writes for the call's duration, and
    // `pid` is our own child, not yet waited for.
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if got != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    Ok((std::process::ExitStatus::from_raw(status), kib * 1024))
}

/// The `digest` of a compact document: its last member.
fn last_digest(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(200)))?;
    let mut tail = String::new();
    f.read_to_string(&mut tail)?;
    let at = tail
        .rfind("\"digest\":\"")
        .context("the document has no digest")?;
    Ok(tail[at + 10..].chars().take(64).collect())
}
