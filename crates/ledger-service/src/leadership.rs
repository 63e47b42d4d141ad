//! [`Leadership`]: whether this process may speak for the ledger — publish payouts and
//! refusal notices — and what it knows of the replica that does.
//!
//! Several replicas fold the same inbound stream and hold identical state; exactly one
//! of them publishes. A process on its own (a test, a tool, a single `serve` without a
//! lease) is [`Leadership::sole`] and always may. A replica under a lease learns its
//! role from the transport's lease loop (in `ledger-nats`), which calls
//! [`Leadership::granted`] after every successful acquisition or renewal and
//! [`Leadership::lost`] when another replica holds the lease.
//!
//! The grant is only good until a deadline on this process's own monotonic clock,
//! set *before* the renewal was sent: a process paused past it (SIGSTOP, a long GC-like
//! stall, a partition) finds its grant expired when it wakes, before it has heard from
//! anyone, and publishes nothing. The stream-side fence (each payout names the stream
//! sequence it must follow) covers the moment between the check and the send.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// This process's role, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// No lease: the only process of its ledger (tests, tools, a lone `serve`).
    Sole,
    /// Holds the lease: publishes payouts and refusal notices.
    Active,
    /// Folds and answers queries; publishes nothing.
    Standby,
}

/// What `status` shows of the replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    pub role: Role,
    /// This replica's id (`None` for a sole process).
    pub replica: Option<String>,
    /// The replica holding the lease as last seen (`None`: nobody, or unknown).
    pub lease_holder: Option<String>,
}

#[derive(Debug)]
struct State {
    replica: Option<String>,
    /// Active until this instant (only while `Some`).
    granted_until: Option<Instant>,
    holder: Option<String>,
}

/// Shared between the lease loop, the publisher, the notices and the status.
#[derive(Debug, Clone)]
pub struct Leadership {
    state: Arc<Mutex<State>>,
}

impl Default for Leadership {
    fn default() -> Leadership {
        Leadership::sole()
    }
}

impl Leadership {
    /// A process alone: always may publish.
    pub fn sole() -> Leadership {
        Leadership {
            state: Arc::new(Mutex::new(State {
                replica: None,
                granted_until: None,
                holder: None,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns this process into replica `id`, a standby until the lease is granted.
    pub fn join(&self, id: &str) {
        let mut s = self.lock();
        s.replica = Some(id.to_string());
        s.granted_until = None;
        s.holder = None;
    }

    /// The lease is this replica's until `until` (computed from the moment the
    /// acquisition or renewal was sent, minus a margin).
    pub fn granted(&self, until: Instant) {
        let mut s = self.lock();
        assert!(
            s.replica.is_some(),
            "a lease granted to a process that is no replica"
        );
        s.granted_until = Some(until);
        s.holder = s.replica.clone();
    }

    /// Another replica (or nobody, `None`) holds the lease.
    pub fn lost(&self, holder: Option<String>) {
        let mut s = self.lock();
        s.granted_until = None;
        s.holder = holder;
    }

    /// Whether this process may publish now.
    pub fn may_publish(&self) -> bool {
        let s = self.lock();
        match (&s.replica, s.granted_until) {
            (None, _) => true,
            (Some(_), Some(until)) => Instant::now() < until,
            (Some(_), None) => false,
        }
    }

    /// The role as of now, with the lease holder last seen.
    pub fn replication(&self) -> Replication {
        let s = self.lock();
        let now = Instant::now();
        let role = match (&s.replica, s.granted_until) {
            (None, _) => Role::Sole,
            (Some(_), Some(until)) if now < until => Role::Active,
            _ => Role::Standby,
        };
        Replication {
            role,
            replica: s.replica.clone(),
            lease_holder: s.holder.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_grant_expires_on_its_own_clock() {
        let l = Leadership::sole();
        assert!(l.may_publish());
        assert_eq!(l.replication().role, Role::Sole);
        l.join("a");
        assert!(!l.may_publish(), "a replica starts as a standby");
        l.granted(Instant::now() + Duration::from_secs(60));
        assert!(l.may_publish());
        assert_eq!(l.replication().lease_holder.as_deref(), Some("a"));
        l.granted(Instant::now() - Duration::from_millis(1));
        assert!(!l.may_publish(), "an expired grant publishes nothing");
        assert_eq!(l.replication().role, Role::Standby);
        l.granted(Instant::now() + Duration::from_secs(60));
        l.lost(Some("b".into()));
        assert!(!l.may_publish());
        assert_eq!(
            l.replication(),
            Replication {
                role: Role::Standby,
                replica: Some("a".into()),
                lease_holder: Some("b".into())
            }
        );
    }
}
