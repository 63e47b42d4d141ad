//! The fold's lookups that grow with the log — sale records and the business ids whose
//! re-use is refused — in the tiers of [`crate::store`]: recent (here, checkpointed with
//! the ledger), flushing (being written) and backing (written).

use super::*;
use crate::store::{Backing, Flush, Space, StoreError};
use std::borrow::Cow;

/// The recent tier: what the fold wrote since the last checkpoint moved it out.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Recent {
    pub(super) sales: HashMap<Text, SaleRecord>,
    pub(super) returns: HashSet<Text>,
    pub(super) adjustments: HashSet<Text>,
    /// (program, partner, person, certification) completions already counted.
    pub(super) trained: HashSet<(Sym, Sym, Text, Text)>,
}

/// The store key of a counted completion: both symbols in 4 bytes each, then the person
/// id with its length in front (so that the pair splits one way only), then the
/// certification.
fn training_key(program: Sym, partner: Sym, person: &str, cert: &str) -> Vec<u8> {
    let mut id = Vec::with_capacity(12 + person.len() + cert.len());
    id.extend_from_slice(&program.0.to_be_bytes());
    id.extend_from_slice(&partner.0.to_be_bytes());
    // A person id is far shorter than 4 GiB: intake bounds an event to 1 MiB.
    id.extend_from_slice(&(person.len() as u32).to_be_bytes());
    id.extend_from_slice(person.as_bytes());
    id.extend_from_slice(cert.as_bytes());
    Space::Training.key(&id)
}

impl Recent {
    pub(crate) fn len(&self) -> usize {
        self.sales.len() + self.returns.len() + self.adjustments.len() + self.trained.len()
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        let sales = self.sales.iter().map(|(id, record)| {
            // Plain data into a vector: postcard fails only on types it cannot encode.
            let value = postcard::to_allocvec(record).expect("a sale record encodes");
            (Space::Sale.key(id.as_bytes()), value)
        });
        fn ids(space: Space, ids: &HashSet<Text>) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
            ids.iter()
                .map(move |id| (space.key(id.as_bytes()), Vec::new()))
        }
        let trained = self.trained.iter().map(|(program, partner, person, cert)| {
            (training_key(*program, *partner, person, cert), Vec::new())
        });
        sales
            .chain(ids(Space::Return, &self.returns))
            .chain(ids(Space::Adjustment, &self.adjustments))
            .chain(trained)
    }

    /// Adds what `older` holds and this tier does not (a value here is newer).
    fn merge_older(&mut self, older: &Recent) {
        for (id, record) in &older.sales {
            self.sales
                .entry(id.clone())
                .or_insert_with(|| record.clone());
        }
        self.returns.extend(older.returns.iter().cloned());
        self.adjustments.extend(older.adjustments.iter().cloned());
        self.trained.extend(older.trained.iter().cloned());
    }
}

/// The tiers below the recent one. Not part of a checkpoint: a restored ledger gets its
/// backing store attached again ([`Ledger::attach_backing`]).
#[derive(Clone, Default)]
pub(super) struct Lower {
    flushing: Option<Arc<Recent>>,
    backing: Option<Arc<dyn Backing>>,
}

impl std::fmt::Debug for Lower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lower")
            .field("flushing", &self.flushing.as_ref().map(|r| r.len()))
            .field("backing", &self.backing.is_some())
            .finish()
    }
}

impl Ledger {
    /// Reads lookups below the recent tier from `backing` from now on.
    pub fn attach_backing(&mut self, backing: Arc<dyn Backing>) {
        self.lower.backing = Some(backing);
    }

    pub fn has_backing(&self) -> bool {
        self.lower.backing.is_some()
    }

    /// Moves the recent tier out, to be written to the backing store with the next
    /// checkpoint; until [`Ledger::flushed`] (or [`Ledger::unflush`]) lookups read it
    /// where it is.
    pub fn take_recent(&mut self) -> Flush {
        assert!(
            self.lower.backing.is_some(),
            "the recent tier moves out only to a backing store"
        );
        assert!(
            self.lower.flushing.is_none(),
            "one checkpoint's lookups are written at a time"
        );
        let recent = Arc::new(std::mem::take(&mut self.recent));
        self.lower.flushing = Some(recent.clone());
        Flush {
            ledger: Some(recent),
            identities: None,
        }
    }

    /// The backing store now holds what [`Ledger::take_recent`] moved out.
    pub fn flushed(&mut self) {
        self.lower.flushing = None;
    }

    /// Writing what [`Ledger::take_recent`] moved out failed: it comes back to the
    /// recent tier (under what the fold wrote since), for the next checkpoint.
    pub fn unflush(&mut self) {
        if let Some(older) = self.lower.flushing.take() {
            self.recent.merge_older(&older);
        }
    }

    /// Entries of the tiers held in memory (recent and flushing).
    pub fn lookups_in_memory(&self) -> usize {
        self.recent.len() + self.lower.flushing.as_ref().map_or(0, |f| f.len())
    }

    /// Whether a tier holds the id: the two in memory by `held`, the backing one by key.
    fn used(
        &self,
        held: impl Fn(&Recent) -> bool,
        key: impl FnOnce() -> Vec<u8>,
    ) -> Result<bool, StoreError> {
        if held(&self.recent) || self.lower.flushing.as_deref().is_some_and(&held) {
            return Ok(true);
        }
        match &self.lower.backing {
            Some(backing) => backing.contains(&key()),
            None => Ok(false),
        }
    }

    /// The record of a sale, from whichever tier holds it.
    pub(super) fn sale_record(
        &self,
        sale_id: &str,
    ) -> Result<Option<Cow<'_, SaleRecord>>, StoreError> {
        if let Some(r) = self.recent.sales.get(sale_id) {
            return Ok(Some(Cow::Borrowed(r)));
        }
        if let Some(r) = self
            .lower
            .flushing
            .as_deref()
            .and_then(|f| f.sales.get(sale_id))
        {
            return Ok(Some(Cow::Borrowed(r)));
        }
        let Some(backing) = &self.lower.backing else {
            return Ok(None);
        };
        match backing.get(&Space::Sale.key(sale_id.as_bytes()))? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Cow::Owned)
                .map(Some)
                .map_err(|e| {
                    StoreError::new(
                        format!("the stored record of sale {sale_id:?} does not decode"),
                        e,
                    )
                }),
        }
    }

    pub(super) fn sale_known(&self, sale_id: &str) -> Result<bool, StoreError> {
        self.used(
            |t| t.sales.contains_key(sale_id),
            || Space::Sale.key(sale_id.as_bytes()),
        )
    }

    pub(super) fn return_used(&self, return_id: &str) -> Result<bool, StoreError> {
        self.used(
            |t| t.returns.contains(return_id),
            || Space::Return.key(return_id.as_bytes()),
        )
    }

    pub(super) fn adjustment_used(&self, adjustment_id: &str) -> Result<bool, StoreError> {
        self.used(
            |t| t.adjustments.contains(adjustment_id),
            || Space::Adjustment.key(adjustment_id.as_bytes()),
        )
    }

    pub(super) fn completion_counted(
        &self,
        program: Sym,
        partner: Sym,
        person: &str,
        cert: &str,
    ) -> Result<bool, StoreError> {
        let key = (program, partner, Text::from(person), Text::from(cert));
        self.used(
            |t| t.trained.contains(&key),
            || training_key(program, partner, person, cert),
        )
    }
}
