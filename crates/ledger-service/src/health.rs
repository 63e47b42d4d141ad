//! What the service's loops report beside the projection: the fault in force, the payout
//! outbox's backlog and whether it is moving, the consumer's lag, group-commit times.
//!
//! It has a lock of its own (see [`crate::Handle`]), so that reporting never waits for
//! the fold or for a checkpoint being encoded under the projection's read lock (the
//! ingest loop had waited seconds per 1M events for it). Nothing here decides anything
//! about the ledger's numbers.

use crate::histogram::Histogram;
use std::time::{Duration, Instant};

/// Which loop reported a fault; each clears only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSource {
    /// The data directory cannot be written: batches are held, nothing is acknowledged.
    Log,
    /// Payouts cannot be published (the transport refuses or does not answer).
    Publish,
    /// The history archive cannot be written: the fold holds its history in memory
    /// and writes it at the next step.
    History,
    /// The message broker cannot be reached: nothing comes in, nothing goes out.
    Transport,
}

impl FaultSource {
    /// The prefix of the fault's message (`log: …`, `publish: …`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FaultSource::Log => "log",
            FaultSource::Publish => "publish",
            FaultSource::History => "history",
            FaultSource::Transport => "nats",
        }
    }
}

/// The service's health report.
#[derive(Debug)]
pub struct Health {
    fault: Option<(FaultSource, String)>,
    /// Payouts recorded and not yet stored by the transport.
    pub(crate) outbox_backlog: usize,
    /// When the outbox last moved: it was empty, or the publisher stored a window.
    outbox_moved: Instant,
    /// A backlog that has not moved for this long is a fault (the stalled-outbox alarm).
    stall_after: Duration,
    /// Messages the consumer has not yet delivered (consumer lag), when known.
    pub(crate) consumer_pending: Option<u64>,
    /// Time of each group commit (intake, dedupe, write and flush of one batch).
    pub(crate) batch_flush: Histogram,
}

impl Health {
    pub(crate) fn new(stall_after: Duration) -> Health {
        Health {
            fault: None,
            outbox_backlog: 0,
            outbox_moved: Instant::now(),
            stall_after,
            consumer_pending: None,
            batch_flush: Histogram::default(),
        }
    }

    /// Reports a fault of `source`. A log fault is the one to report while it lasts:
    /// it is why publishing and the archive stop too, so their faults do not replace
    /// it; and an archive fault is why publishing stops.
    pub(crate) fn set_fault(&mut self, source: FaultSource, message: String) {
        let cause = |s: FaultSource| match s {
            FaultSource::Log => 0,
            FaultSource::History => 1,
            // An unreachable broker is why publishing stops.
            FaultSource::Transport => 2,
            FaultSource::Publish => 3,
        };
        if self
            .fault
            .as_ref()
            .is_some_and(|(s, _)| cause(*s) < cause(source))
        {
            return;
        }
        self.fault = Some((source, message));
    }

    /// Clears the fault if `source` reported it; another's stays.
    pub(crate) fn clear_fault(&mut self, source: FaultSource) {
        if self.fault.as_ref().is_some_and(|(s, _)| *s == source) {
            self.fault = None;
        }
    }

    /// Clears any fault (the log was found durable after a re-open).
    pub(crate) fn clear_all(&mut self) {
        self.fault = None;
    }

    /// Records the outbox's backlog; an empty outbox counts as moving.
    pub(crate) fn set_backlog(&mut self, backlog: usize, now: Instant) {
        if backlog == 0 || backlog < self.outbox_backlog {
            self.outbox_moved = now;
        }
        self.outbox_backlog = backlog;
    }

    /// The publisher stored a window of payouts.
    pub(crate) fn outbox_moved(&mut self, now: Instant) {
        self.outbox_moved = now;
    }

    /// How long a non-empty backlog has not moved, if that is past the alarm's limit.
    pub fn outbox_stalled_for(&self, now: Instant) -> Option<Duration> {
        let still = now.saturating_duration_since(self.outbox_moved);
        (self.outbox_backlog > 0 && still >= self.stall_after).then_some(still)
    }

    /// The fault in force: one a loop reported, else a stalled outbox.
    pub fn fault(&self, now: Instant) -> Option<String> {
        if let Some((source, message)) = &self.fault {
            return Some(format!("{}: {message}", source.as_str()));
        }
        self.outbox_stalled_for(now).map(|still| {
            format!(
                "outbox: {} payouts waiting and none published for {} s",
                self.outbox_backlog,
                still.as_secs()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_fault_is_not_replaced_by_the_publish_fault_it_causes() {
        let mut h = Health::new(Duration::from_secs(60));
        let now = Instant::now();
        h.set_fault(FaultSource::Log, "disk full".into());
        h.set_fault(FaultSource::Publish, "timed out".into());
        assert_eq!(h.fault(now).as_deref(), Some("log: disk full"));
        h.clear_fault(FaultSource::Publish);
        assert!(h.fault(now).is_some(), "the publisher clears only its own");
        h.clear_fault(FaultSource::Log);
        assert_eq!(h.fault(now), None);
        h.set_fault(FaultSource::Publish, "timed out".into());
        assert_eq!(h.fault(now).as_deref(), Some("publish: timed out"));
    }

    #[test]
    fn a_backlog_that_does_not_move_becomes_a_fault_and_clears_when_it_moves() {
        let mut h = Health::new(Duration::from_secs(60));
        let t0 = Instant::now();
        h.set_backlog(0, t0);
        h.set_backlog(79, t0 + Duration::from_secs(1));
        assert_eq!(
            h.fault(t0 + Duration::from_secs(59)),
            None,
            "59 s is not yet"
        );
        let stuck = h.fault(t0 + Duration::from_secs(300)).unwrap();
        assert!(stuck.starts_with("outbox: 79 payouts waiting"), "{stuck}");
        // Growing is not moving: still stalled.
        h.set_backlog(90, t0 + Duration::from_secs(301));
        assert!(h.fault(t0 + Duration::from_secs(301)).is_some());
        // A window published is.
        h.outbox_moved(t0 + Duration::from_secs(302));
        assert_eq!(h.fault(t0 + Duration::from_secs(303)), None);
        // So is a shrinking backlog, and an empty one.
        h.set_backlog(50, t0 + Duration::from_secs(500));
        assert_eq!(h.fault(t0 + Duration::from_secs(500)), None);
        h.set_backlog(0, t0 + Duration::from_secs(900));
        assert_eq!(h.fault(t0 + Duration::from_secs(2000)), None);
    }
}
