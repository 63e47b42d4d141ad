//! `incentive-ledger`: the command-line entry point. Parses arguments and wires the
//! library crates together; all domain logic lives in `ledger-core`.

mod backup_cmd;
mod bench_cmd;
mod bench_memory;
mod bench_service;
mod config;
mod docs_cmd;
mod generate_cmd;
mod import_cmd;
mod log_cmd;
mod nats_cmd;
mod plan_cmd;
mod program_cmd;
mod progress;
mod redrive_cmd;
mod replay_cmd;
mod spool;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// The fold allocates many small, short-lived strings; mimalloc roughly halves the time
// the system allocator spends on them (measured with `incentive-ledger bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "incentive-ledger",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("INCENTIVE_LEDGER_REVISION"), ")"),
    about = "Event-sourced ledger for channel incentive programs",
    long_about = "Event-sourced ledger for channel incentive programs: rebates, MDF/co-op funds, \
SPIFs, bonuses and training rewards. Balances are a pure function of the event log, so any \
log replays to the same document and digest on any machine."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fold an event log and print the replay document (SPEC §7) as JSON.
    Replay(replay_cmd::ReplayArgs),
    /// Measure intake and fold throughput over a generated stream and print figures.
    Bench(bench_cmd::BenchArgs),
    /// Write a seeded NDJSON event stream in the mix of real feeds to stdout.
    Generate(generate_cmd::GenerateArgs),
    /// Append NDJSON events to a data directory's durable log (idempotent).
    Ingest(log_cmd::IngestArgs),
    /// Re-check a data directory: hash chain, sequence, indexes, checkpoint.
    Verify(log_cmd::VerifyArgs),
    /// Copy a ledger's log into a new data directory — from a directory, or through the
    /// running service — and verify the copy.
    Backup(backup_cmd::BackupArgs),
    /// Print a data directory's log as NDJSON, byte-identical to what was accepted.
    Export(log_cmd::ExportArgs),
    /// Turn a CSV export of sales or returns into CloudEvents (NDJSON, or sent to NATS),
    /// by a column mapping; bad rows are listed with their line and nothing is imported.
    Import(import_cmd::ImportArgs),
    /// List every refusal of a data directory (quarantine and business) with its message.
    Rejected(log_cmd::RejectedArgs),
    /// List refused events by code, stage, program, partner or arrival, and send the
    /// chosen ones again (a business refusal under a new id derived from its own).
    Redrive(redrive_cmd::RedriveArgs),
    /// Write programs: check one (printed back in plain words) or wrap it in a
    /// program.published CloudEvent.
    #[command(subcommand)]
    Program(program_cmd::ProgramCommand),
    /// What a draft program would have earned and paid on the real log: a replay of
    /// the log with the draft in it, compared with the log as it is.
    Simulate(plan_cmd::SimulateArgs),
    /// What programs earned, paid and owe per period, their attainment, budget and
    /// refusals, at the log's end or as of a position or time.
    Report(plan_cmd::ReportArgs),
    /// Run the service: JetStream ingest, live projection, payout publishing, status.
    Serve(Box<nats_cmd::ServeArgs>),
    /// Send NDJSON events to the inbound JetStream subjects (backfills, demos).
    Publish(nats_cmd::PublishArgs),
    /// Ask a running service for its log position, digest and backlog.
    Status(nats_cmd::StatusArgs),
    /// Print the payout.issued messages stored in the payout stream.
    Payouts(nats_cmd::PayoutsArgs),
    /// Measure the service end to end against a running nats-server and print figures.
    BenchService(bench_service::BenchServiceArgs),
    /// Measure how a replay's peak memory grows with the log (two lengths, the slope).
    BenchMemory(bench_memory::BenchMemoryArgs),
    /// Print a shell's completion script (e.g. `completions bash >
    /// /etc/bash_completion.d/incentive-ledger`).
    Completions(docs_cmd::CompletionsArgs),
    /// Write the manual pages (one per command) generated from this command line.
    Man(docs_cmd::ManArgs),
    /// Open a data directory as `serve` does, checkpoint it and exit, printing the time
    /// it took (what `bench-memory --service` measures; no transport needed).
    #[command(hide = true)]
    OpenService(bench_memory::OpenServiceArgs),
}

/// Turns transparent huge pages off for this process. The folded state is millions of
/// small allocations; with THP on (`always` on common distributions) the kernel zeroes a
/// whole 2 MiB page on each fault as mimalloc's arenas grow and are purged, which cost
/// about a fifth of a 1M-event replay (`perf`: `clear_page_erms`); off, replay from disk
/// ran about 20% faster (`bench --data-dir D --log-only`, DECISIONS 21b).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag of this
    // process; failure (an old kernel) leaves THP as it was, which is only slower.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e` of the v3 header the
/// locked `libmimalloc-sys` builds; the crate exports no constant for it). A test checks
/// that it reads the v3 default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long the service's freed memory stays with it before it goes back to the kernel.
/// mimalloc's default (1 s) hands back the log buffers, fetched batches and checkpoint
/// buffers the service frees and allocates again all the time, and each purge meant
/// faulting the pages in again (system time); never handing anything back made the
/// resident memory of a long-lived process a high-water mark that only grew — a 12-minute
/// soak went from 369 to 633 MB between positions 295,000 and 706,000, while with 10 s it
/// stayed between 300 and 400 MB (DECISIONS 21f, docs/PERFORMANCE.md).
const PURGE_DELAY_MS: std::os::raw::c_long = 10_000;

/// Sets the service's purge delay ([`PURGE_DELAY_MS`]). An operator's own
/// `MIMALLOC_PURGE_DELAY` (mimalloc's documented variable, in milliseconds, read by
/// mimalloc itself; -1: never) wins.
pub(crate) fn set_purge_delay() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets a plain option; called before the service's threads start.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// Files this process creates are readable by its user alone (mode 0600, directories
/// 0700): a ledger's log, checkpoints and history hold every partner's sales and
/// payouts, and a shared host's other users have no business reading them.
fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask takes and returns a plain mode; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// A tool whose output is piped into `head` stops quietly when the reader goes, as
/// Unix tools do (Rust ignores SIGPIPE, so a closed stdout was a panic). Not for the
/// service: it writes to sockets, where a gone peer is an error to handle, not a reason
/// to die.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restores a signal's default disposition; no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    private_files();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::BenchService(_)) {
        default_sigpipe();
    }
    let result = match cli.command {
        Command::Replay(args) => replay_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Generate(args) => generate_cmd::run(args),
        Command::Ingest(args) => log_cmd::ingest(args),
        Command::Verify(args) => match log_cmd::verify(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(2),
            Err(e) => Err(e),
        },
        Command::Export(args) => log_cmd::export(args),
        Command::Rejected(args) => log_cmd::rejected(args),
        Command::Redrive(args) => redrive_cmd::redrive(args),
        Command::Backup(args) => backup_cmd::backup(args),
        Command::Import(args) => import_cmd::import(args),
        Command::Completions(args) => docs_cmd::completions(args),
        Command::Man(args) => docs_cmd::man(args),
        Command::Program(command) => program_cmd::run(command),
        Command::Simulate(args) => plan_cmd::simulate(args),
        Command::Report(args) => plan_cmd::report(args),
        Command::Serve(args) => nats_cmd::serve(*args),
        Command::Publish(args) => nats_cmd::publish(args),
        Command::Status(args) => nats_cmd::status(args),
        Command::Payouts(args) => nats_cmd::payouts(args),
        Command::BenchService(args) => bench_service::run(args),
        Command::BenchMemory(args) => bench_memory::run(args),
        Command::OpenService(args) => bench_memory::open_service(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_where_it_is_expected() {
        // SAFETY: reads an option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc v3's default, unless the environment overrides it.
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(v) => assert_eq!(delay.to_string(), v),
            Err(_) => assert_eq!(delay, 1000),
        }
        // The next option (use_numa_nodes) defaults to 0, the one before is deprecated.
        let numa = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY + 1) };
        assert_eq!(numa, 0);
    }
}
