//! Planning and evaluation on the live service (issue 17): program reports, accruals,
//! budgets and a partner's opportunities from the projection; simulations and reports
//! of a past position folded from the data directory — beside ingest, never in the
//! fold's path: one at a time (a second gets [`HeavyError::Busy`] with a retry hint), on
//! a thread of its own in the idle scheduling class, reading the log and the
//! checkpoint without writing, its memory bounded as a replay's (temporary stores).

use crate::handle::Handle;
use ledger_core::ledger::Opportunity;
use ledger_core::report::{Accrual, Report};
use ledger_core::simulate::{Plan, PlanError};
use ledger_log::simulation::{Simulated, SimulationError};
use ledger_log::{Bound, LogError};
use rust_decimal::Decimal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a simulation or a past report was not made.
#[derive(Debug, thiserror::Error)]
pub enum HeavyError {
    /// Another one is running; try again after about this long.
    #[error("another simulation, past report or verify is running; retry in {} s", retry_after.as_secs())]
    Busy { retry_after: Duration },
    #[error("this service has no data directory to fold from")]
    NoDataDirectory,
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot fold the log")]
    Log(#[from] LogError),
    #[error("the background fold stopped before it finished")]
    Stopped,
}

impl From<SimulationError> for HeavyError {
    fn from(e: SimulationError) -> HeavyError {
        match e {
            SimulationError::Plan(p) => HeavyError::Plan(p),
            SimulationError::Log(l) => HeavyError::Log(l),
        }
    }
}

/// At most one background fold at a time, and how long the last one took.
#[derive(Default)]
pub(crate) struct HeavyGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    running_since: Option<Instant>,
    last_took: Duration,
}

/// Holds the gate of its handle while the background fold runs; releases it when the
/// fold ends (or panics).
struct Running {
    handle: Handle,
    started: Instant,
}

impl Drop for Running {
    fn drop(&mut self) {
        let gate = self.handle.heavy_gate();
        let mut s = gate.state.lock().unwrap_or_else(|p| p.into_inner());
        s.running_since = None;
        s.last_took = self.started.elapsed();
    }
}

impl HeavyGate {
    /// Enters `handle`'s gate, or says when to retry.
    fn enter(handle: &Handle) -> Result<Running, HeavyError> {
        let mut s = handle
            .heavy_gate()
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(since) = s.running_since {
            // As long as the last one took, less what this one has run; at least 1 s.
            let left = s.last_took.saturating_sub(since.elapsed());
            return Err(HeavyError::Busy {
                retry_after: left.max(Duration::from_secs(1)),
            });
        }
        let started = Instant::now();
        s.running_since = Some(started);
        Ok(Running {
            handle: handle.clone(),
            started,
        })
    }
}

/// Runs `f` on a thread of its own under `SCHED_IDLE` (the threads it starts inherit
/// it) and waits for it without holding a runtime thread.
async fn in_background<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HeavyError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lowest_priority();
            let _ = tx.send(f());
        })
        .map_err(|e| {
            HeavyError::Log(LogError::Io {
                path: std::env::temp_dir(),
                source: e,
            })
        })?;
    rx.await.map_err(|_| HeavyError::Stopped)
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs only on CPU time
/// that no other thread of the machine wants, so ingest, the fold, publishing and the
/// queries never wait for it (nice 19 still takes ~1.5% of a contended core, and its
/// wake-ups preempt). Where that fails (another system), nice 19.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler, gettid and setpriority take plain integers and a
    // pointer to a param that lives for the call; with pid 0 / the thread's id they act
    // on this thread only. Failure leaves the priority as it was (only slower for the
    // fold beside it).
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
}

impl Handle {
    /// Takes the background slot as a simulation would, until the guard is dropped: for
    /// tests of what a second request is told.
    #[doc(hidden)]
    pub fn hold_background_slot(&self) -> Result<impl Drop, HeavyError> {
        HeavyGate::enter(self)
    }

    /// The report of one program (or of every one) at the live position; `None` if the
    /// named program does not exist. Reads the program's entries under the read lock.
    pub fn report(&self, program_id: Option<&str>) -> Option<Report> {
        let p = self.read();
        ledger_core::report::build(&p.replay, p.seq, program_id)
    }

    /// Every program's liability at the live position, and that position.
    pub fn accruals(&self) -> (u64, Vec<Accrual>) {
        let p = self.read();
        (p.seq, ledger_core::report::accruals(&p.replay, p.seq))
    }

    /// A partner's next-tier opportunities at the live position.
    pub fn opportunities(&self, partner_id: &str) -> Vec<Opportunity> {
        self.read().replay.ledger().opportunities(partner_id)
    }

    /// (program, budget, committed) of every program with a budget.
    pub fn budgets(&self) -> Vec<(String, Decimal, Decimal)> {
        self.read().replay.ledger().budgets()
    }

    /// Runs `plan` over the data directory's log as it stands (see
    /// [`ledger_log::simulation`]), in the background.
    pub async fn simulate(&self, plan: Plan, max_payouts: usize) -> Result<Simulated, HeavyError> {
        self.in_background("simulation", move |log| {
            Ok(ledger_log::simulation::simulate(
                log,
                &plan,
                max_payouts,
                &mut |_| {},
            )?)
        })
        .await
    }

    /// The report of one program (or every one) as of `bound`, folded from the data
    /// directory in the background; `None` if the program did not exist there.
    pub async fn report_as_of(
        &self,
        bound: Bound,
        program_id: Option<String>,
    ) -> Result<Option<Report>, HeavyError> {
        self.in_background("past-report", move |log| {
            let folded = ledger_log::fold_read_only(log, bound, &mut |_| {})?;
            Ok(ledger_core::report::build(
                &folded.rebuilt.replay,
                folded.rebuilt.seq,
                program_id.as_deref(),
            ))
        })
        .await
    }

    /// Verifies the data directory up to the head stored when it starts (the log goes
    /// on meanwhile), in the background slot.
    pub async fn verify(&self) -> Result<ledger_log::Report, HeavyError> {
        self.in_background("verify", |log| {
            Ok(ledger_log::verify_live(log, &mut |_| {})?)
        })
        .await
    }

    /// Runs `f` over the data directory's log in the background slot: refused at once
    /// when it is taken, else on a thread of its own ([`in_background`]).
    async fn in_background<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&ledger_log::LogReader) -> Result<T, HeavyError> + Send + 'static,
    ) -> Result<T, HeavyError> {
        let log = self
            .log_reader()
            .ok_or(HeavyError::NoDataDirectory)?
            .clone();
        let running = HeavyGate::enter(self)?;
        in_background(name, move || {
            let _running = running;
            f(&log)
        })
        .await?
    }
}
