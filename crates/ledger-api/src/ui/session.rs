//! Sign-in sessions of the web pages: a bearer token from the configuration exchanged
//! for a random session id in an `HttpOnly`, `SameSite=Strict` cookie, with a CSRF token
//! of its own that every form carries back. Sessions live in memory (a restart signs
//! everyone out), expire after [`SESSION_TTL`], and are bounded in number. Failed
//! sign-ins are counted, and each one past the first few waits longer before its
//! answer ([`Throttle`]).

use crate::Role;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at most; the oldest goes when a new one would pass it.
const MAX_SESSIONS: usize = 10_000;
/// The session cookie's name.
pub const COOKIE: &str = "ledger_session";
/// The cookie of the sign-in form's CSRF token (there is no session yet).
pub const SIGN_IN_COOKIE: &str = "ledger_sign_in";

/// A random value of 32 bytes, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator failing is not something a web page can work around.
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    ledger_core::hex(&bytes)
}

/// Compares two strings in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// The token's name in the configuration: events published from the console carry
    /// it in their source (`console/<name>`).
    pub name: String,
    /// The token every form of this session carries.
    pub csrf: String,
    expires: Instant,
    created: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    throttle: Mutex<Throttle>,
}

impl Sessions {
    /// A new session for `role`; its id (for the cookie).
    pub fn open(&self, role: Role, name: String) -> (String, Session) {
        let now = Instant::now();
        let session = Session {
            role,
            name,
            csrf: random_token(),
            expires: now + SESSION_TTL,
            created: now,
        };
        let id = random_token();
        let mut all = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| s.expires > now);
        if all.len() >= MAX_SESSIONS {
            if let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
        }
        all.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of a cookie's id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut all = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                all.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Counts a failed sign-in and says how long its answer should wait.
    pub fn failed(&self) -> Duration {
        self.throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed(Instant::now())
    }

    /// Failed sign-ins so far (for `/metrics`).
    pub fn failures(&self) -> u64 {
        self.throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .total
    }
}

/// Failed sign-ins in the last minute: the first [`FREE_FAILURES`] answer at once, each
/// later one waits twice as long as the one before, up to [`MAX_DELAY`] — a mistyped
/// token costs nothing, guessing costs seconds a try.
#[derive(Default)]
pub struct Throttle {
    recent: std::collections::VecDeque<Instant>,
    total: u64,
}

const FREE_FAILURES: usize = 3;
const MAX_DELAY: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(60);

impl Throttle {
    pub fn failed(&mut self, now: Instant) -> Duration {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        // Bounded: one minute of failures is all it keeps.
        if self.recent.len() > 10_000 {
            self.recent.pop_front();
        }
        self.total += 1;
        let over = self.recent.len().saturating_sub(FREE_FAILURES) as u32;
        if over == 0 {
            return Duration::ZERO;
        }
        (Duration::from_millis(125) * 2u32.saturating_pow(over.min(16) - 1)).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_are_bounded_and_close() {
        let s = Sessions::default();
        let (id, session) = s.open(Role::Finance, "fin".into());
        assert_eq!(id.len(), 64);
        assert_ne!(session.csrf, id);
        assert_eq!(s.get(&id).unwrap().role, Role::Finance);
        assert!(s.get("other").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
        let (a, _) = s.open(Role::Admin, "a".into());
        let (b, _) = s.open(Role::Admin, "b".into());
        assert_ne!(a, b, "ids are random");
    }

    #[test]
    fn repeated_failures_wait_longer_and_longer() {
        let mut t = Throttle::default();
        let start = Instant::now();
        let delays: Vec<Duration> = (0..10)
            .map(|i| t.failed(start + Duration::from_millis(i)))
            .collect();
        assert_eq!(&delays[..3], &[Duration::ZERO; 3]);
        assert!(
            delays[3] > Duration::ZERO && delays[4] > delays[3],
            "{delays:?}"
        );
        assert_eq!(delays[9], MAX_DELAY);
        // A minute later the slate is clean.
        assert_eq!(t.failed(start + Duration::from_secs(120)), Duration::ZERO);
        assert_eq!(t.total, 11);
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
