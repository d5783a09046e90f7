//! A bounded index of the NIP-15 stalls and products soko sees on its relays, from any
//! merchant, for buyers browsing with the `catalog` command. Orders to soko's own merchants
//! are checked against [`super::Merchants`], never against this index: it only helps people
//! find things, so it may forget.
//!
//! Rules (NIP-01, NIP-09): one entry per kind ‖ author ‖ `d` tag; a newer `created_at`
//! replaces, an older one is ignored, an equal one keeps the lower event id. A kind-5
//! deletion by the author (an `a` tag naming the listing, or an `e` tag naming the indexed
//! event) leaves a tombstone, so that an older copy arriving later from another relay (or
//! again after a restart) does not bring the listing back. The index is bounded: when it is
//! full, the entry with the oldest `created_at` (tombstones included) makes room for a newer
//! one, and an event older than everything kept is not admitted.
//!
//! Anyone can make keys and sign listings, so neither the bound nor the age order may be a
//! weapon against soko's own shops: an event dated more than [`MAX_FUTURE_SECS`] ahead is
//! refused (a flood dated 2076 would otherwise outrank every honest listing for decades),
//! and the listings of soko's own merchants are kept apart from the bound: they are never
//! evicted and do not count toward `catalog_max_entries` (their number is bounded by what
//! the operator lets merchants list).
//!
//! Trees:
//! - `catalog/entries`: kind (u16 BE) ‖ author (32) ‖ `d` → [`Entry`].
//! - `catalog/ids`: event id (32) → entry key, for live entries (what `e` deletions name).
//! - `catalog/age`: created_at (u64 BE) ‖ entry key → empty: oldest first, for eviction and
//!   newest-first browsing.
//!
//! This file is the index in sled; `rules` decides which version of a listing wins and what
//! a full catalog admits, `cards` what is kept of an event and what makes it unusable.

use std::sync::{Arc, Mutex, MutexGuard};

use nostr_sdk::{Event, EventId, Kind, PublicKey};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use self::cards::read_listing;
pub use self::cards::Card;
pub use self::rules::{admit, supersedes, Admission, Version};
use crate::proto::catalog::{CatalogProduct, CatalogResult, CatalogStall, Origin};
use crate::proto::nip15::{KIND_PRODUCT, KIND_STALL};
use crate::store::{Store, StoreError, Typed};

mod cards;
mod rules;

const ENTRIES: &str = "catalog/entries";
const IDS: &str = "catalog/ids";
const AGE: &str = "catalog/age";

/// How far ahead of soko's clock a `created_at` may be: clocks drift, a quarter of an hour
/// is plenty for that, and more would let a listing outrank honest ones for as long as it
/// likes.
pub const MAX_FUTURE_SECS: u64 = 15 * 60;

/// One listing (or its tombstone), as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The event's `created_at` (a tombstone's: the time the deletion covers up to).
    pub created_at: u64,
    /// The event's id.
    pub event_id: EventId,
    /// The listing; `None` once deleted.
    pub card: Option<Card>,
}

impl Entry {
    fn version(&self) -> Version {
        Version {
            created_at: self.created_at,
            id: self.event_id.to_bytes(),
            deleted: self.card.is_none(),
        }
    }
}

/// What happened to an event offered to the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A listing new to the catalog.
    Added,
    /// A newer version of a listing it had.
    Replaced,
    /// Not newer than what the catalog has.
    Stale,
    /// The catalog is full of newer listings.
    Full,
    /// A deletion; this many listings were removed (or marked deleted before they arrived).
    Deleted(usize),
    /// Not a stall, product or deletion.
    NotAListing,
    /// Unusable, and why (bad signature, content that is not NIP-15, …).
    Invalid(String),
}

/// Filters of a catalog query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Only this author's listings.
    pub merchant: Option<PublicKey>,
    /// Only stalls with this id and products of stalls with this id.
    pub stall: Option<String>,
    /// Entries of each list.
    pub limit: usize,
}

/// The catalog; cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

/// Tells soko's own merchants (protected from eviction) from everyone else.
#[derive(Clone)]
pub struct Own {
    is_own: Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>,
    /// Keys found to be own: eviction walks past every own listing each time, and a
    /// flood must not cost a registry lookup per own listing per stranger's listing.
    /// Only positives are kept (merchants are few; strangers are unbounded).
    known: Arc<Mutex<std::collections::HashSet<PublicKey>>>,
}

impl Own {
    /// `is_own` answers whether a key is one of soko's merchants; a key it once called
    /// own stays own.
    pub fn new(is_own: impl Fn(&PublicKey) -> bool + Send + Sync + 'static) -> Self {
        Self {
            is_own: Arc::new(is_own),
            known: Arc::default(),
        }
    }

    /// Nobody is protected.
    pub fn none() -> Self {
        Self::new(|_| false)
    }

    fn holds(&self, key: &[u8]) -> bool {
        let Some(author) = author_of(key) else {
            return false;
        };
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(&author) {
            return true;
        }
        let own = (self.is_own)(&author);
        if own {
            known.insert(author);
        }
        own
    }
}

impl std::fmt::Debug for Own {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Own(..)")
    }
}

#[derive(Debug)]
struct Inner {
    entries: Typed<Entry>,
    ids: sled::Tree,
    age: sled::Tree,
    max: usize,
    own: Own,
    /// Entries held of authors that are not soko's merchants (what the bound counts);
    /// every write happens under this lock, so check-then-write is safe.
    len: Mutex<usize>,
}

/// Sled writes of one change, applied in one transaction in this order.
#[derive(Default)]
struct Batch {
    entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ids: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    age: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    fn remove(&mut self, key: &[u8], entry: &Entry) {
        self.entries.push((key.to_vec(), None));
        if entry.card.is_some() {
            self.ids.push((entry.event_id.as_bytes().to_vec(), None));
        }
        self.age.push((age_key(entry.created_at, key), None));
    }

    fn put(&mut self, key: &[u8], encoded: Vec<u8>, entry: &Entry) {
        self.entries.push((key.to_vec(), Some(encoded)));
        if entry.card.is_some() {
            self.ids
                .push((entry.event_id.as_bytes().to_vec(), Some(key.to_vec())));
        }
        self.age
            .push((age_key(entry.created_at, key), Some(Vec::new())));
    }
}

impl Catalog {
    /// Opens the trees, keeping at most `max` entries (trimming if the bound was lowered),
    /// protecting nobody's listings.
    pub fn open(store: &Store, max: usize) -> Result<Self, StoreError> {
        Self::open_protecting(store, max, Own::none())
    }

    /// Opens the trees, keeping at most `max` entries of authors other than `own`
    /// (trimming if the bound was lowered); `own`'s listings are kept whatever the bound.
    pub fn open_protecting(store: &Store, max: usize, own: Own) -> Result<Self, StoreError> {
        let entries: Typed<Entry> = store.tree(ENTRIES)?;
        let mut len = 0;
        for key in entries.raw().iter().keys() {
            len += usize::from(!own.holds(&key?));
        }
        let catalog = Self {
            inner: Arc::new(Inner {
                entries,
                ids: store.db().open_tree(IDS)?,
                age: store.db().open_tree(AGE)?,
                max,
                own,
                len: Mutex::new(len),
            }),
        };
        let mut len = catalog.lock();
        while *len > max {
            if !catalog.evict_oldest()? {
                break;
            }
            *len -= 1;
        }
        drop(len);
        Ok(catalog)
    }

    /// Entries held of authors other than soko's merchants (what the bound counts),
    /// tombstones included.
    pub fn len(&self) -> usize {
        *self.lock()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offers an event from a relay: a stall, a product or a deletion from any author.
    pub fn ingest(&self, event: &Event) -> Result<Ingested, StoreError> {
        let is_listing = event.kind == Kind::SetStall || event.kind == Kind::SetProduct;
        if !is_listing && event.kind != Kind::EventDeletion {
            return Ok(Ingested::NotAListing);
        }
        // The relay pool checks signatures too; checking here keeps forged listings out
        // whatever the pool does, at the cost of one verification per listing.
        if event.verify().is_err() {
            return Ok(Ingested::Invalid("bad id or signature".to_owned()));
        }
        let now = nostr_sdk::Timestamp::now().as_secs();
        if event.created_at.as_secs() > now.saturating_add(MAX_FUTURE_SECS) {
            return Ok(Ingested::Invalid(format!(
                "created_at more than {MAX_FUTURE_SECS} s in the future"
            )));
        }
        if event.kind == Kind::EventDeletion {
            return self.delete(event);
        }
        let (d, card) = match read_listing(event) {
            Ok(found) => found,
            Err(why) => return Ok(Ingested::Invalid(why)),
        };
        let entry = Entry {
            created_at: event.created_at.as_secs(),
            event_id: event.id,
            card: Some(card),
        };
        self.upsert(&entry_key(event.kind.as_u16(), &event.pubkey, &d), entry)
    }

    /// Listings matching `query`, newest first.
    pub fn query(&self, query: &Query) -> Result<CatalogResult, StoreError> {
        let mut result = CatalogResult::default();
        if query.limit == 0 {
            return Ok(result);
        }
        let mut take = |key: &[u8], entry: Entry| -> Result<bool, StoreError> {
            collect(&mut result, query, key, entry);
            Ok(result.stalls.len() >= query.limit && result.products.len() >= query.limit)
        };
        match &query.merchant {
            // One merchant's listings are contiguous in `entries`.
            Some(merchant) => {
                let mut found = Vec::new();
                for kind in [KIND_STALL, KIND_PRODUCT] {
                    let prefix = entry_key(kind, merchant, "");
                    for item in self.inner.entries.raw().scan_prefix(&prefix) {
                        let (key, bytes) = item?;
                        found.push((key, self.inner.entries.decode(&bytes)?));
                    }
                }
                found.sort_by(|(_, a), (_, b)| {
                    b.created_at
                        .cmp(&a.created_at)
                        .then(a.event_id.cmp(&b.event_id))
                });
                for (key, entry) in found {
                    if take(&key, entry)? {
                        break;
                    }
                }
            }
            // Everyone's: walk the age index from the newest and stop once both lists are full.
            None => {
                for item in self.inner.age.iter().rev() {
                    let (age, _) = item?;
                    let Some(key) = age.get(8..) else { continue };
                    let Some(entry) = self.inner.entries.get(key)? else {
                        continue;
                    };
                    // sled's iterators do not see a transaction whole: while a newer version
                    // replaces an entry, the walk can meet the old age key already pointing at
                    // the new entry. It is listed under its own age only, or a page could show
                    // it out of order (or twice).
                    if age.get(..8) != Some(entry.created_at.to_be_bytes().as_slice()) {
                        continue;
                    }
                    if take(key, entry)? {
                        break;
                    }
                }
            }
        }
        result.stalls.truncate(query.limit);
        result.products.truncate(query.limit);
        Ok(result)
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // The counter stays right even if a writer panicked: it changes only after a commit.
        self.inner.len.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a kind-5 deletion: `a` tags name listings by coordinate, `e` tags by event id;
    /// only the author's own listings are touched.
    fn delete(&self, event: &Event) -> Result<Ingested, StoreError> {
        let mut removed = 0;
        for coordinate in event.tags.coordinates() {
            let kind = coordinate.kind.as_u16();
            if (kind != KIND_STALL && kind != KIND_PRODUCT) || coordinate.public_key != event.pubkey
            {
                continue;
            }
            let tombstone = Entry {
                created_at: event.created_at.as_secs(),
                event_id: event.id,
                card: None,
            };
            let key = entry_key(kind, &event.pubkey, &coordinate.identifier);
            if matches!(
                self.upsert(&key, tombstone)?,
                Ingested::Added | Ingested::Replaced
            ) {
                removed += 1;
            }
        }
        for id in event.tags.event_ids() {
            let Some(key) = self.inner.ids.get(id.as_bytes())? else {
                continue;
            };
            if author_of(&key) != Some(event.pubkey) {
                continue;
            }
            let Some(entry) = self.inner.entries.get(&key)? else {
                continue;
            };
            if entry.event_id != *id || entry.card.is_none() {
                continue;
            }
            let tombstone = Entry {
                card: None,
                ..entry
            };
            if matches!(self.upsert(&key, tombstone)?, Ingested::Replaced) {
                removed += 1;
            }
        }
        Ok(Ingested::Deleted(removed))
    }

    /// Writes `entry` under `key` if it supersedes what is there and the bound lets it in.
    fn upsert(&self, key: &[u8], entry: Entry) -> Result<Ingested, StoreError> {
        let mut len = self.lock();
        let mut batch = Batch::default();
        let mut grows = false;
        let outcome = match self.inner.entries.get(key)? {
            Some(old) => {
                if !supersedes(&entry.version(), &old.version()) {
                    return Ok(Ingested::Stale);
                }
                batch.remove(key, &old);
                Ingested::Replaced
            }
            // soko's own shops neither count nor compete for room.
            None if self.inner.own.holds(key) => Ingested::Added,
            None => {
                let oldest = self.oldest()?;
                match admit(
                    *len,
                    self.inner.max,
                    oldest.as_ref().map(|(created_at, _, _)| *created_at),
                    entry.created_at,
                ) {
                    Admission::Insert => grows = true,
                    Admission::EvictOldest => {
                        if let Some((_, old_key, old)) = &oldest {
                            batch.remove(old_key, old);
                        }
                    }
                    Admission::Refuse => return Ok(Ingested::Full),
                }
                Ingested::Added
            }
        };
        batch.put(key, self.inner.entries.encode(&entry)?, &entry);
        self.apply(batch)?;
        if grows {
            *len += 1;
        }
        Ok(outcome)
    }

    /// The oldest entry that may be evicted (not soko's own): (created_at, key, entry).
    fn oldest(&self) -> Result<Option<(u64, Vec<u8>, Entry)>, StoreError> {
        for item in self.inner.age.iter() {
            let (age, _) = item?;
            let Some(key) = age.get(8..) else { continue };
            if self.inner.own.holds(key) {
                continue;
            }
            if let Some(entry) = self.inner.entries.get(key)? {
                return Ok(Some((entry.created_at, key.to_vec(), entry)));
            }
        }
        Ok(None)
    }

    /// Removes the oldest entry; false when there is none. The caller holds the lock.
    fn evict_oldest(&self) -> Result<bool, StoreError> {
        let Some((_, key, entry)) = self.oldest()? else {
            return Ok(false);
        };
        let mut batch = Batch::default();
        batch.remove(&key, &entry);
        self.apply(batch)?;
        Ok(true)
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let inner = &self.inner;
        (inner.entries.raw(), &inner.ids, &inner.age)
            .transaction(|(entries, ids, age)| {
                for (tree, writes) in [
                    (entries, &batch.entries),
                    (ids, &batch.ids),
                    (age, &batch.age),
                ] {
                    for (key, value) in writes {
                        match value {
                            Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                            None => tree.remove(key.as_slice())?,
                        };
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => StoreError::Codec {
                    tree: ENTRIES.to_owned(),
                    reason: "transaction aborted".to_owned(),
                },
            })
    }
}

/// Adds a live entry matching the query's filters to the result.
fn collect(result: &mut CatalogResult, query: &Query, key: &[u8], entry: Entry) {
    let Some(author) = author_of(key) else {
        return;
    };
    if query.merchant.is_some_and(|m| m != author) {
        return;
    }
    let origin = Origin {
        merchant: author.to_hex(),
        created_at: entry.created_at,
        event_id: entry.event_id.to_hex(),
    };
    let stall_filter = query.stall.as_deref();
    match entry.card {
        Some(Card::Stall(stall))
            if stall_filter.is_none_or(|s| s == stall.id) && result.stalls.len() < query.limit =>
        {
            result.stalls.push(CatalogStall { origin, stall });
        }
        Some(Card::Product(product))
            if stall_filter.is_none_or(|s| s == product.stall_id)
                && result.products.len() < query.limit =>
        {
            result.products.push(CatalogProduct { origin, product });
        }
        _ => {}
    }
}

fn entry_key(kind: u16, author: &PublicKey, d: &str) -> Vec<u8> {
    [
        kind.to_be_bytes().as_slice(),
        author.as_bytes(),
        d.as_bytes(),
    ]
    .concat()
}

fn author_of(key: &[u8]) -> Option<PublicKey> {
    key.get(2..34)
        .and_then(|bytes| PublicKey::from_slice(bytes).ok())
}

fn age_key(created_at: u64, key: &[u8]) -> Vec<u8> {
    [created_at.to_be_bytes().as_slice(), key].concat()
}

#[cfg(test)]
mod tests {
    use nostr_sdk::{EventBuilder, Keys, Tag, Timestamp};

    use super::*;

    type Res<T> = Result<T, Box<dyn std::error::Error>>;

    fn stall(keys: &Keys, id: &str, name: &str, at: u64) -> Res<Event> {
        let content = serde_json::json!({"id": id, "name": name, "currency": "sat",
            "shipping": [{"id": "world", "cost": 21}]});
        Ok(EventBuilder::new(Kind::SetStall, content.to_string())
            .tag(Tag::identifier(id))
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)?)
    }

    fn product(keys: &Keys, id: &str, stall: &str, at: u64) -> Res<Event> {
        let content = serde_json::json!({"id": id, "stall_id": stall, "name": id,
            "currency": "USD", "price": 12.5, "quantity": 4});
        Ok(EventBuilder::new(Kind::SetProduct, content.to_string())
            .tag(Tag::identifier(id))
            .tag(Tag::hashtag("fruit"))
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)?)
    }

    fn all() -> Query {
        Query {
            merchant: None,
            stall: None,
            limit: 50,
        }
    }

    #[test]
    fn listings_replace_delete_and_evict_in_sled() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let catalog = Catalog::open(&store, 3)?;
        let alice = Keys::generate();
        let bob = Keys::generate();

        assert_eq!(
            catalog.ingest(&stall(&alice, "s", "v1", 100)?)?,
            Ingested::Added
        );
        assert_eq!(
            catalog.ingest(&stall(&alice, "s", "v2", 200)?)?,
            Ingested::Replaced
        );
        assert_eq!(
            catalog.ingest(&stall(&alice, "s", "v0", 150)?)?,
            Ingested::Stale
        );
        assert_eq!(
            catalog.ingest(&product(&alice, "p", "s", 120)?)?,
            Ingested::Added
        );
        let found = catalog.query(&all())?;
        assert_eq!(found.stalls.len(), 1);
        assert_eq!(found.stalls[0].stall.name, "v2");
        assert_eq!(found.stalls[0].stall.shipping[0].cost, 21);
        assert_eq!(found.products[0].product.price, 1250, "cents");
        assert_eq!(found.products[0].product.categories, ["fruit"]);

        // Someone else's deletion touches nothing; the author's removes by `e` tag.
        let p_id = EventId::parse(&found.products[0].origin.event_id)?;
        let forged =
            EventBuilder::delete(nostr_sdk::nips::nip09::EventDeletionRequest::new().id(p_id))
                .sign_with_keys(&bob)?;
        assert_eq!(catalog.ingest(&forged)?, Ingested::Deleted(0));
        let real =
            EventBuilder::delete(nostr_sdk::nips::nip09::EventDeletionRequest::new().id(p_id))
                .sign_with_keys(&alice)?;
        assert_eq!(catalog.ingest(&real)?, Ingested::Deleted(1));
        assert!(catalog.query(&all())?.products.is_empty());
        // The deleted version again (another relay's copy) stays deleted.
        assert_eq!(
            catalog.ingest(&product(&alice, "p", "s", 120)?)?,
            Ingested::Stale
        );
        assert_eq!(catalog.len(), 2, "the tombstone counts");

        // Full at 3: a newer listing evicts the oldest (the tombstone at 120), an older one
        // is not admitted.
        assert_eq!(
            catalog.ingest(&stall(&bob, "b1", "B1", 300)?)?,
            Ingested::Added
        );
        assert_eq!(
            catalog.ingest(&stall(&bob, "b2", "B2", 400)?)?,
            Ingested::Added
        );
        assert_eq!(catalog.len(), 3);
        assert_eq!(
            catalog.ingest(&stall(&bob, "b0", "B0", 50)?)?,
            Ingested::Full
        );
        assert_eq!(
            catalog.ingest(&stall(&bob, "b3", "B3", 500)?)?,
            Ingested::Added
        );
        let names: Vec<String> = catalog
            .query(&all())?
            .stalls
            .into_iter()
            .map(|s| s.stall.name)
            .collect();
        assert_eq!(
            names,
            ["B3", "B2", "B1"],
            "newest first; alice's v2 at 200 evicted"
        );
        assert_eq!(catalog.len(), 3);

        // Filters.
        let bobs = catalog.query(&Query {
            merchant: Some(bob.public_key()),
            stall: Some("b2".into()),
            limit: 50,
        })?;
        assert_eq!(bobs.stalls.len(), 1);
        assert_eq!(bobs.stalls[0].origin.merchant, bob.public_key().to_hex());
        let one = catalog.query(&Query {
            merchant: None,
            stall: None,
            limit: 1,
        })?;
        assert_eq!(one.stalls.len(), 1);

        // Reopened with a lower bound, the oldest go.
        drop(catalog);
        let catalog = Catalog::open(&store, 1)?;
        assert_eq!(catalog.len(), 1);
        assert_eq!(catalog.query(&all())?.stalls[0].stall.name, "B3");
        Ok(())
    }

    #[test]
    fn own_listings_are_never_evicted_and_the_far_future_is_refused(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let shop = Keys::generate();
        let own = shop.public_key();
        let catalog = Catalog::open_protecting(&store, 2, Own::new(move |k| *k == own))?;
        assert_eq!(
            catalog.ingest(&stall(&shop, "s", "Shop", 100)?)?,
            Ingested::Added
        );
        assert_eq!(catalog.len(), 0, "own listings are not counted");
        let now = Timestamp::now().as_secs();
        let future = stall(&Keys::generate(), "x", "X", now + MAX_FUTURE_SECS + 60)?;
        assert!(matches!(catalog.ingest(&future)?, Ingested::Invalid(_)));
        assert_eq!(
            catalog.ingest(&stall(&Keys::generate(), "y", "Y", now + 60)?)?,
            Ingested::Added,
            "a little clock drift is fine"
        );
        for at in [200, 300, 400] {
            catalog.ingest(&stall(&Keys::generate(), "z", "Z", at)?)?;
        }
        assert_eq!(catalog.len(), 2);
        let found = catalog.query(&Query {
            merchant: Some(own),
            ..all()
        })?;
        assert_eq!(
            found.stalls.len(),
            1,
            "the oldest entry, but soko's own, stays"
        );
        drop(catalog);
        let catalog = Catalog::open_protecting(&store, 1, Own::new(move |k| *k == own))?;
        assert_eq!(catalog.len(), 1);
        assert_eq!(
            catalog
                .query(&Query {
                    merchant: Some(own),
                    ..all()
                })?
                .stalls
                .len(),
            1
        );
        Ok(())
    }

    #[test]
    fn unusable_listings_are_explained_not_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let catalog = Catalog::open(&store, 10)?;
        let keys = Keys::generate();
        let cases = [
            ("not json", "s"),
            (r#"{"id":"s","name":"S"}"#, "s"),
            (r#"{"id":"s","name":"S","currency":"sat"}"#, "other"),
            (r#"{"id":"s","name":" ","currency":"sat"}"#, "s"),
            (r#"{"id":"s","name":"S","currency":"dollars"}"#, "s"),
            (
                r#"{"id":"s","name":"S","currency":"sat","shipping":[{"id":"z","cost":-1}]}"#,
                "s",
            ),
        ];
        for (content, d) in cases {
            let event = EventBuilder::new(Kind::SetStall, content)
                .tag(Tag::identifier(d))
                .sign_with_keys(&keys)?;
            assert!(
                matches!(catalog.ingest(&event)?, Ingested::Invalid(_)),
                "{content}"
            );
        }
        let no_d = EventBuilder::new(Kind::SetStall, r#"{"id":"s","name":"S","currency":"sat"}"#)
            .sign_with_keys(&keys)?;
        assert!(matches!(catalog.ingest(&no_d)?, Ingested::Invalid(_)));
        let mut forged = stall(&keys, "s", "S", 100)?;
        forged.content = r#"{"id":"s","name":"Forged","currency":"sat"}"#.to_owned();
        assert!(matches!(catalog.ingest(&forged)?, Ingested::Invalid(_)));
        assert!(catalog.is_empty());
        Ok(())
    }
}
