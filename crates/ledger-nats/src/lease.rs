//! Replicas and the lease: which `serve` process speaks for the ledger.
//!
//! Every replica folds the inbound stream through its own durable consumer into its own
//! data directory; exactly one — the holder of the **lease** — publishes payouts and
//! refusal notices. Both live in a JetStream key-value bucket (replicated like the
//! streams on a cluster):
//!
//! - `replica.<id>`: the **presence** of the process running replica `<id>`, renewed
//!   with the lease. A second process with the same replica id (a copied data
//!   directory, a configuration used twice) would share the first's consumer and
//!   corrupt its log, so it refuses to start while the first is alive
//!   ([`claim_presence`]); a process whose presence another one took over stops.
//! - `lease`: the replica holding the lease, renewed every `lease_renew_ms` with
//!   compare-and-set on the key's revision.
//!
//! **Timing is measured on each process's own monotonic clock, never compared across
//! machines.** The holder's grant runs until `renewal sent + 3/4 ttl`; a standby takes
//! the lease over (compare-and-set on the revision it saw) once that revision has not
//! changed for a whole `ttl` since it first saw it — which is later than the holder's
//! grant ran out, since the standby saw the revision after the holder sent it. A holder
//! that cannot reach NATS stops publishing when its grant runs out, by itself. The
//! payout stream fences what is left (`ledger_service::publisher`, DECISIONS 53).

use crate::config::ReplicationConfig;
use crate::NatsError;
use async_nats::jetstream::{self, kv};
use ledger_service::Leadership;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The lease's key in the bucket.
const LEASE: &str = "lease";

/// Who a replica process is, as its presence and the lease show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub replica: String,
    pub host: String,
    /// The kernel's boot id: a pid is only meaningful within one boot.
    pub boot: String,
    pub pid: u32,
    /// A value of this process's own, so that its presence is told from an earlier one
    /// of the same pid.
    pub instance: String,
}

impl Presence {
    /// This process, as replica `replica`.
    pub fn this_process(replica: &str) -> Presence {
        let pid = std::process::id();
        Presence {
            replica: replica.to_string(),
            host: host_name(),
            boot: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            pid,
            instance: short_hash(&format!("{pid}:{:?}", std::time::SystemTime::now())),
        }
    }

    fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("a presence serializes")
            .into()
    }

    fn parse(value: &[u8]) -> Option<Presence> {
        serde_json::from_slice(value).ok()
    }

    /// Whether the process this presence names is certainly gone: it ran on this
    /// machine, in this boot, and its pid is not running.
    fn certainly_gone(&self) -> bool {
        let me = Presence::this_process(&self.replica);
        !self.boot.is_empty()
            && self.host == me.host
            && self.boot == me.boot
            && self.pid != me.pid
            && !process_runs(self.pid)
    }
}

/// Whether process `pid` runs on this machine (a zombie, killed and not yet reaped by
/// its parent, does not).
fn process_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X"))
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn host_name() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "host".into())
}

fn short_hash(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` can name a replica (a key-value key and a consumer name).
pub fn valid_replica_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The replica id: the configured one, else the one in the data directory's `REPLICA`
/// file, made there at the first start (the host name and a random suffix).
pub fn replica_id(config: &ReplicationConfig, data_dir: &Path) -> Result<String, NatsError> {
    let invalid = |id: &str| {
        NatsError::Replica {
        message: format!(
            "replica id {id:?}: use 1 to 64 letters, digits, '-' or '_' (it names a consumer and a key)"
        ),
    }
    };
    if let Some(id) = &config.replica_id {
        return valid_replica_id(id)
            .then(|| id.clone())
            .ok_or_else(|| invalid(id));
    }
    let path = data_dir.join("REPLICA");
    if let Some(id) = read_trimmed(&path.to_string_lossy()) {
        return valid_replica_id(&id)
            .then_some(id.clone())
            .ok_or_else(|| NatsError::Replica {
                message: format!(
                    "{}: {id:?} is not a replica id (1 to 64 letters, digits, '-' or '_')",
                    path.display()
                ),
            });
    }
    let host: String = host_name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let id = format!(
        "{host}-{}",
        short_hash(&format!(
            "{}:{}:{:?}",
            data_dir.display(),
            std::process::id(),
            std::time::SystemTime::now()
        ))
    );
    // Durably, like the directory's FORMAT: the id names this replica's consumer.
    ledger_service::write_durably(data_dir, "REPLICA", format!("{id}\n").as_bytes()).map_err(
        |e| NatsError::Replica {
            message: format!("cannot write the replica id to {}: {e}", path.display()),
        },
    )?;
    info!(replica = %id, file = %path.display(), "this data directory is a new replica");
    Ok(id)
}

/// Opens the lease bucket, creating it if it does not exist.
pub async fn bucket(
    js: &jetstream::Context,
    config: &ReplicationConfig,
    default_replicas: usize,
) -> Result<kv::Store, NatsError> {
    if let Ok(store) = js.get_key_value(&config.lease_bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: config.lease_bucket.clone(),
            description: "incentive-ledger: the publishing lease and the replicas' presence".into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            num_replicas: config.lease_replicas.unwrap_or(default_replicas).max(1),
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Two replicas creating it at once: the loser opens the winner's.
        Err(e) => js
            .get_key_value(&config.lease_bucket)
            .await
            .map_err(|_| crate::jetstream::js_err("lease bucket")(e)),
    }
}

/// A key's revision as first seen, on this process's own clock: how long it has stood
/// unchanged is the only time a replica measures of another (no clocks are compared
/// across machines).
#[derive(Debug, Default)]
struct Sighting(Option<(u64, Instant)>);

impl Sighting {
    /// Whether a revision was seen before.
    fn watching(&self) -> bool {
        self.0.is_some()
    }

    /// Notes `revision`: how long it has stood if it is the one seen before, `None` if
    /// it is new (first seen, or changed since).
    fn unchanged_for(&mut self, revision: u64) -> Option<Duration> {
        match self.0 {
            Some((r, since)) if r == revision => Some(since.elapsed()),
            _ => {
                self.0 = Some((revision, Instant::now()));
                None
            }
        }
    }
}

fn presence_key(replica: &str) -> String {
    format!("replica.{replica}")
}

/// A live entry's value and revision (`None`: no entry, or deleted).
async fn live_entry(
    kv: &kv::Store,
    key: &str,
) -> Result<Option<(bytes::Bytes, u64)>, kv::EntryError> {
    Ok(kv
        .entry(key)
        .await?
        .filter(|e| e.operation == kv::Operation::Put)
        .map(|e| (e.value, e.revision)))
}

/// Claims replica `me.replica` for this process: at once if nobody holds it or its
/// holder certainly died on this machine; after `ttl` without a renewal if it ran
/// elsewhere; and refuses if the holder renews it meanwhile. Returns the presence's
/// revision.
pub async fn claim_presence(
    kv: &kv::Store,
    me: &Presence,
    ttl: Duration,
) -> Result<u64, NatsError> {
    let key = presence_key(&me.replica);
    let kv_err = crate::jetstream::js_err("replica presence");
    let deadline = Instant::now() + ttl * 2 + Duration::from_secs(2);
    let mut seen = Sighting::default();
    loop {
        if Instant::now() > deadline {
            return Err(NatsError::Replica {
                message: format!(
                    "could not claim replica {:?}: its presence kept changing hands",
                    me.replica
                ),
            });
        }
        match live_entry(kv, &key).await.map_err(&kv_err)? {
            None => {
                if let Ok(revision) = kv.create(&key, me.to_bytes()).await {
                    return Ok(revision);
                }
            }
            Some((value, revision)) => {
                let other = Presence::parse(&value);
                let watched = seen.watching();
                let stood = seen.unchanged_for(revision);
                if watched && stood.is_none() {
                    // Renewed while we watched: alive.
                    return Err(running(other.as_ref(), &me.replica));
                }
                let gone = other.as_ref().is_none_or(Presence::certainly_gone);
                if gone || stood.is_some_and(|d| d >= ttl) {
                    if let Ok(revision) = kv.update(&key, me.to_bytes(), revision).await {
                        return Ok(revision);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn running(other: Option<&Presence>, replica: &str) -> NatsError {
    let who = other.map_or_else(
        || "another process".to_string(),
        |o| format!("pid {} on {}", o.pid, o.host),
    );
    NatsError::Replica {
        message: format!(
            "replica {replica:?} is already running ({who}): a second process on one \
             replica id would take half of its events. Give this process its own data \
             directory (it becomes a new replica, a standby) or its own \
             [replication] replica_id; see docs/OPERATIONS.md, \"Running in HA\""
        ),
    }
}

/// The lease loop's settings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub renew: Duration,
}

impl LeaseTiming {
    pub fn of(config: &ReplicationConfig) -> LeaseTiming {
        let ttl = Duration::from_millis(config.lease_ttl_ms.max(300));
        let renew = Duration::from_millis(config.lease_renew_ms.max(50)).min(ttl / 3);
        LeaseTiming { ttl, renew }
    }

    /// How long a grant lasts after its renewal was sent.
    fn grant(&self) -> Duration {
        self.ttl * 3 / 4
    }
}

/// Runs the lease for replica `me` until `stop` turns true, updating `leadership`;
/// then releases the lease (if held) and the presence. Returns an error if another
/// process took this replica's presence over (this one must stop).
pub async fn run(
    kv: kv::Store,
    me: Presence,
    mut presence_revision: u64,
    timing: LeaseTiming,
    leadership: Leadership,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), NatsError> {
    let value = me.to_bytes();
    let presence = presence_key(&me.replica);
    let mut holding: Option<u64> = None;
    let mut seen = Sighting::default();
    let mut last_error: Option<String> = None;
    let mut first = true;
    loop {
        let sent = Instant::now();
        // The presence first: a process whose replica was taken over stops at once.
        match kv.update(&presence, value.clone(), presence_revision).await {
            Ok(r) => presence_revision = r,
            // An earlier renewal stored but not acknowledged (a NATS leader changed on
            // the way) leaves the entry this process's: carry on with its revision.
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                match own_revision(&kv, &presence, &value).await {
                    Some(r) => presence_revision = r,
                    None => {
                        leadership.lost(None);
                        return Err(NatsError::Replica {
                            message: format!(
                                "replica {:?} was claimed by another process while this one \
                                 could not renew its presence: stopping",
                                me.replica
                            ),
                        });
                    }
                }
            }
            Err(e) => note(&mut last_error, format!("presence not renewed: {e}")),
        }
        let step = match holding {
            Some(revision) => match kv.update(LEASE, value.clone(), revision).await {
                Ok(r) => {
                    holding = Some(r);
                    leadership.granted(sent + timing.grant());
                    Ok(())
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Our own renewal, stored but not acknowledged, leaves it ours (the
                    // grant is not extended: when that renewal was stored is unknown).
                    if let Some(r) = own_revision(&kv, LEASE, &value).await {
                        holding = Some(r);
                    } else {
                        holding = None;
                        let holder = lease_holder(&kv).await;
                        warn!(holder = ?holder, "the lease was taken over: this replica is a standby now");
                        leadership.lost(holder);
                    }
                    Ok(())
                }
                Err(e) => Err(format!("lease not renewed: {e}")),
            },
            None => match live_entry(&kv, LEASE).await {
                Err(e) => Err(format!("lease not read: {e}")),
                Ok(None) => {
                    if let Ok(r) = kv.create(LEASE, value.clone()).await {
                        holding = Some(r);
                        leadership.granted(sent + timing.grant());
                        info!(replica = %me.replica, "lease acquired: this replica is active");
                    }
                    Ok(())
                }
                // Our own acquisition, stored but not acknowledged: ours, granted at the
                // next renewal.
                Ok(Some((current, revision))) if current == value => {
                    holding = Some(revision);
                    Ok(())
                }
                Ok(Some((current, revision))) => {
                    let holder = Presence::parse(&current);
                    let own = holder.as_ref().is_some_and(|h| h.replica == me.replica);
                    let expired = seen
                        .unchanged_for(revision)
                        .is_some_and(|d| d >= timing.ttl);
                    // This replica's own lease from before a restart (its presence is
                    // ours now, so no other process of it runs): taken back at once.
                    if expired || (own && first) {
                        if let Ok(r) = kv.update(LEASE, value.clone(), revision).await {
                            holding = Some(r);
                            leadership.granted(sent + timing.grant());
                            info!(replica = %me.replica, previous = ?holder.map(|h| h.replica), "lease taken over: this replica is active");
                        }
                    } else {
                        leadership.lost(holder.map(|h| h.replica));
                    }
                    Ok(())
                }
            },
        };
        match step {
            Ok(()) => last_error = None,
            Err(message) => note(&mut last_error, message),
        }
        first = false;
        let wait = timing.renew.saturating_sub(sent.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    leadership.lost(None);
    if let Some(revision) = holding {
        let _ = kv.delete_expect_revision(LEASE, Some(revision)).await;
    }
    let _ = kv
        .delete_expect_revision(&presence, Some(presence_revision))
        .await;
    Ok(())
}

fn note(last: &mut Option<String>, message: String) {
    if last.as_ref() != Some(&message) {
        warn!("{message}");
    }
    *last = Some(message);
}

/// The revision of `key` if its live value is `value` (this process's own write).
async fn own_revision(kv: &kv::Store, key: &str, value: &[u8]) -> Option<u64> {
    let (current, revision) = live_entry(kv, key).await.ok()??;
    (current.as_ref() == value).then_some(revision)
}

async fn lease_holder(kv: &kv::Store) -> Option<String> {
    let (value, _) = live_entry(kv, LEASE).await.ok()??;
    Presence::parse(&value).map(|p| p.replica)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_name_a_key_and_a_consumer() {
        assert!(valid_replica_id("ledger-a_1"));
        for bad in ["", "a.b", "a b", "a*", "é", &"x".repeat(65)] {
            assert!(!valid_replica_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_process_runs_until_it_is_gone_or_a_zombie() {
        assert!(process_runs(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited and not yet reaped: a zombie, gone for our purposes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_runs(pid) {
            assert!(Instant::now() < deadline, "the child did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(!process_runs(pid));
    }

    #[test]
    fn a_data_directory_keeps_its_replica_id() {
        let dir = tempfile::tempdir().unwrap();
        let config = ReplicationConfig::default();
        let id = replica_id(&config, dir.path()).unwrap();
        assert!(valid_replica_id(&id), "{id}");
        assert_eq!(replica_id(&config, dir.path()).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(replica_id(&config, other.path()).unwrap(), id);
        let named = ReplicationConfig {
            replica_id: Some("b".into()),
            ..ReplicationConfig::default()
        };
        assert_eq!(replica_id(&named, dir.path()).unwrap(), "b");
        let bad = ReplicationConfig {
            replica_id: Some("a.b".into()),
            ..ReplicationConfig::default()
        };
        assert!(replica_id(&bad, dir.path()).is_err());
    }
}
