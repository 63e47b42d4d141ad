//! Lookups that grow with the log, kept out of the fold's memory (issue 15).
//!
//! The fold decides some events by what earlier ones left behind: a sale's lines (for
//! the returns against it) and the business ids whose re-use is refused (return ids,
//! adjustment ids, counted training completions). Held in RAM for ever, they would make
//! memory grow with the log. The fold keeps them in three tiers, read in this order:
//!
//! 1. *recent*: what the fold wrote since the last checkpoint — in the ledger itself,
//!    and so in its checkpoint;
//! 2. *flushing*: the recent tier of the checkpoint being written, until it is written
//!    ([`crate::Ledger::take_recent`] moves it there, [`crate::Ledger::flushed`] drops
//!    it, [`crate::Ledger::unflush`] gives it back after a failed write);
//! 3. *backing*: a [`Backing`] store holding everything up to the last checkpoint
//!    written, with the checkpoint itself, in one atomic write.
//!
//! A lookup answers the same whichever tier holds the value, so where a checkpoint falls
//! changes nothing the fold decides: the fold stays a function of the log. This crate
//! does no IO: the store is a trait, [`MemBacking`] keeps it in memory (tests) and
//! `ledger-log` keeps it on disk. A store that fails a read stops the event before it
//! changes anything ([`StoreError`]); it never turns into a refusal or another answer.

use std::collections::BTreeMap;
use std::sync::RwLock;

/// The part of the key space a stored value belongs to: the first byte of its key.
/// (Byte 0 is left to the store's own records, such as the checkpoint.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Space {
    /// sale id → the sale's record (its lines, what they counted into, what was
    /// returned of them).
    Sale = b'S',
    /// return id → nothing (the id was used).
    Return = b'R',
    /// adjustment id → nothing.
    Adjustment = b'A',
    /// (program, partner, person, certification) → nothing (the completion counted).
    Training = b'T',
    /// An event's identity key ([`crate::identity_key`]) → its content digest: for
    /// replays that decide identities themselves (`replay --events`).
    Identity = b'I',
}

impl Space {
    /// The store key of `id` in this space.
    pub fn key(self, id: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(1 + id.len());
        key.push(self as u8);
        key.extend_from_slice(id);
        key
    }
}

/// A store read failed: the event that needed it was not applied, and can be applied
/// again once the store answers.
#[derive(Debug, thiserror::Error)]
#[error("the lookup store failed: {message}")]
pub struct StoreError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn new(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn msg(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            source: None,
        }
    }
}

/// The result of a lookup that cannot fail, because every tier it read is in memory
/// (no backing store is attached).
pub(crate) fn held_in_memory<T>(result: Result<T, StoreError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => unreachable!("lookups held in memory failed: {e}"),
    }
}

/// The lowest tier: values written by earlier checkpoints. Only read by the fold; what
/// it holds is written by whoever writes the checkpoints (from [`Flush::records`]).
pub trait Backing: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether `key` holds a value.
    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get(key)?.is_some())
    }
}

/// A [`Backing`] in memory: for tests, and to check that where checkpoints fall changes
/// nothing.
#[derive(Debug, Default)]
pub struct MemBacking {
    values: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemBacking {
    /// Writes what a checkpoint moved out of the fold.
    pub fn write(&self, flush: &Flush) {
        let mut values = self
            .values
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (key, value) in flush.records() {
            values.insert(key, value);
        }
    }

    pub fn len(&self) -> usize {
        self.values
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Backing for MemBacking {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .values
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned())
    }
}

/// What [`crate::Ledger::take_recent`] (or [`crate::Replay::take_recent`]) moved out of
/// memory: the recent tier, now read-only, to be written to the backing store.
#[derive(Debug, Clone, Default)]
pub struct Flush {
    pub(crate) ledger: Option<std::sync::Arc<crate::ledger::Recent>>,
    pub(crate) identities: Option<std::sync::Arc<crate::replay::IdentityMap>>,
}

impl Flush {
    /// The store records to write: `(key, value)` pairs, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        let ledger = self.ledger.iter().flat_map(|r| r.records());
        let identities = self.identities.iter().flat_map(|m| {
            m.iter()
                .map(|(key, digest)| (Space::Identity.key(key), digest.to_vec()))
        });
        ledger.chain(identities)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ledger.as_ref().map_or(0, |r| r.len())
            + self.identities.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
