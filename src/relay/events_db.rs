//! The embedded relay's event store: sled for durability, nostr-database's in-memory
//! index for queries.
//!
//! Every event the index accepts is written to sled and synced to disk before the relay
//! acknowledges it (or hands it to the bot); events
//! the index discards (replaced, deleted) are removed from sled in the same call. On open, sled is
//! replayed into the index, which re-applies replacement and deletion rules, and anything it
//! discards is dropped, so the two never disagree for long. The index holds every event in
//! memory, so the events of other authors than soko's own keys (the bot and the merchants it
//! manages, [`Exempt`]) are bounded (`[relay] max_stored_events`): past the bound the oldest of
//! them by `created_at` are evicted, from the index and from sled. soko's own events (stalls,
//! products, announcements) are neither evicted nor counted: they are usually the oldest on
//! the relay, and a bound that dropped the oldest of all would let anyone who writes enough
//! junk take the shops off soko's own relay. The retention pass ([`SledEventStore::expire`],
//! [`SledEventStore::forget`]) keeps the store well under that bound in normal use; see
//! `kinds/relay.md`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nostr_database::{
    Backend, DatabaseError, DatabaseEventResult, DatabaseEventStatus, DatabaseHelper, Events,
    NostrDatabase, SaveEventStatus,
};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, EventId, Filter, JsonUtil, Kind, PublicKey, Timestamp};

use super::policy::Exempt;
use crate::store::{trees, Store, StoreError, Typed};

/// The events held of authors other than soko's own keys, oldest first: what the bound
/// counts and evicts. About 150 bytes an event, next to the event itself in the index. An
/// event discarded by another writer between its indexing and its tracking here stays
/// counted until it is the oldest; eviction then finds it gone and only forgets it.
#[derive(Debug, Default)]
struct Others {
    by_age: BTreeSet<(Timestamp, EventId)>,
    by_id: HashMap<EventId, (Timestamp, PublicKey)>,
}

impl Others {
    fn track(&mut self, id: EventId, at: Timestamp, author: PublicKey) {
        if self.by_id.insert(id, (at, author)).is_none() {
            self.by_age.insert((at, id));
        }
    }

    fn untrack(&mut self, id: &EventId) {
        if let Some((at, _)) = self.by_id.remove(id) {
            self.by_age.remove(&(at, *id));
        }
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Takes out the oldest tracked events until `keep` are left, and returns those to evict:
    /// an author that has become one of soko's own since (a merchant's key registered after
    /// its events were loaded) is left alone, only no longer counted.
    fn over(&mut self, keep: usize, ours: &HashSet<PublicKey>) -> Vec<EventId> {
        let mut evict = Vec::new();
        while self.len() > keep {
            let Some((_, id)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((_, author)) = self.by_id.remove(&id) {
                if !ours.contains(&author) {
                    evict.push(id);
                }
            }
        }
        evict
    }
}

/// sled-backed [`NostrDatabase`].
#[derive(Debug, Clone)]
pub struct SledEventStore {
    events: Typed<String>,
    /// Unbounded: the bound is ours (see [`Others`]), since nostr-database's would evict
    /// soko's own events first.
    index: DatabaseHelper,
    /// soko's own keys: their events are exempt from the bound.
    ours: Exempt,
    others: Arc<Mutex<Others>>,
    max_others: usize,
    /// Events removed since the index was last rebuilt (see [`Self::compact_after`]).
    removed: Arc<AtomicUsize>,
    /// For the group-commit sync before an acknowledgement.
    store: Store,
}

impl SledEventStore {
    /// Opens the store and loads the stored events, keeping at most `max_events` of authors
    /// outside `ours` (soko's own keys, which must be complete before opening: the events of
    /// a key missing from it count as an outsider's and may be evicted).
    pub async fn open(store: &Store, max_events: usize, ours: Exempt) -> Result<Self, StoreError> {
        let events: Typed<String> = store.tree(trees::RELAY_EVENTS)?;
        let this = Self {
            events,
            index: DatabaseHelper::unbounded(),
            ours,
            others: Arc::default(),
            max_others: max_events,
            removed: Arc::default(),
            store: store.clone(),
        };
        this.load().await?;
        Ok(this)
    }

    /// Replays sled into the index, dropping from sled what the index refuses.
    async fn load(&self) -> Result<(), StoreError> {
        // nostr-database takes a BTreeSet; Event's interior mutability is a lazy tag cache
        // that takes no part in its ordering (created_at, id).
        #[allow(clippy::mutable_key_type)]
        let mut loaded = BTreeSet::new();
        for entry in self.events.iter() {
            let (key, json) = entry?;
            match Event::from_json(&json) {
                Ok(event) => {
                    loaded.insert(event);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dropping unreadable stored relay event");
                    self.events.remove(&key)?;
                }
            }
        }
        let count = loaded.len();
        let candidates: Vec<(EventId, Timestamp, PublicKey)> = {
            let ours = self.ours();
            loaded
                .iter()
                .filter(|event| !ours.contains(&event.pubkey))
                .map(|event| (event.id, event.created_at, event.pubkey))
                .collect()
        };
        let discarded = self.index.bulk_load(loaded).await;
        for id in &discarded {
            self.events.remove(id.as_bytes())?;
        }
        {
            let mut others = self.others();
            *others = Others::default();
            for (id, at, author) in candidates {
                if !discarded.contains(&id) {
                    others.track(id, at, author);
                }
            }
        }
        let evicted = self.evict().await?;
        tracing::debug!(
            loaded = count - discarded.len() - evicted,
            evicted,
            "embedded relay events loaded"
        );
        Ok(())
    }

    fn ours(&self) -> std::sync::RwLockReadGuard<'_, HashSet<PublicKey>> {
        // The set is only ever inserted into: a panic while holding it leaves it usable.
        self.ours.read().unwrap_or_else(|e| e.into_inner())
    }

    fn others(&self) -> MutexGuard<'_, Others> {
        self.others.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Evicts the oldest events of other authors past the bound; returns how many. Each
    /// delete scans the whole index (nostr-database has no index by id for deletion), so
    /// past the bound a batch of 1/64 of it goes at once: a flood costs one scan per
    /// `max_events / 64` writes, not one per write.
    async fn evict(&self) -> Result<usize, StoreError> {
        let ids = {
            let mut others = self.others();
            if others.len() <= self.max_others {
                return Ok(0);
            }
            let keep = self.max_others - self.max_others / 64;
            let ours = self.ours();
            others.over(keep, &ours)
        };
        let mut evicted = 0;
        for batch in ids.chunks(500) {
            if let Some(ids) = self
                .index
                .delete(Filter::new().ids(batch.iter().copied()))
                .await
            {
                self.remove_stored(&ids)?;
                evicted += ids.len();
            }
        }
        Ok(evicted)
    }

    /// nostr-database remembers the id of every event it discards (so that a deleted event
    /// cannot come back), in memory and for ever. Retention discards an event per event
    /// written, so after `threshold` removals the index is rebuilt from sled: the NIP-09
    /// deletions stored there are applied again, the rest of that memory is released.
    pub async fn compact_after(&self, threshold: usize) -> Result<bool, StoreError> {
        if self.removed.load(Ordering::Relaxed) < threshold {
            return Ok(false);
        }
        self.removed.store(0, Ordering::Relaxed);
        self.index.clear().await;
        self.load().await?;
        Ok(true)
    }

    /// True when the index holds the event.
    pub async fn holds(&self, id: &EventId) -> bool {
        self.index.has_event(id).await
    }

    /// Events held, in the index (sled follows it).
    pub async fn len(&self) -> usize {
        self.index.count(Filter::new()).await
    }

    /// True when no event is held.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Deletes the events of `kinds` created at or before `until`; returns how many.
    pub async fn expire(&self, kinds: &[Kind], until: Timestamp) -> Result<usize, DatabaseError> {
        if kinds.is_empty() {
            return Ok(0);
        }
        let filter = Filter::new().kinds(kinds.iter().copied()).until(until);
        match self.index.delete(filter).await {
            Some(ids) => {
                self.remove_all(&ids)?;
                Ok(ids.len())
            }
            None => Ok(0),
        }
    }

    /// Deletes the events of `kinds` addressed (`p` tag) to one of `to`, created at or before
    /// `until`, for which `done` is true; returns how many.
    pub async fn forget(
        &self,
        kinds: &[Kind],
        to: &[PublicKey],
        until: Timestamp,
        done: impl Fn(&EventId) -> bool,
    ) -> Result<usize, DatabaseError> {
        if to.is_empty() || kinds.is_empty() {
            return Ok(0);
        }
        // Ids and times only: cloning the events themselves could mean hundreds of MB.
        let candidates = Filter::new()
            .kinds(kinds.iter().copied())
            .pubkeys(to.iter().copied())
            .until(until);
        let ids: Vec<EventId> = self
            .index
            .negentropy_items(candidates)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| done(id))
            .collect();
        let mut forgotten = 0;
        for batch in ids.chunks(500) {
            if let Some(ids) = self
                .index
                .delete(Filter::new().ids(batch.iter().copied()))
                .await
            {
                self.remove_all(&ids)?;
                forgotten += ids.len();
            }
        }
        Ok(forgotten)
    }

    fn remove_all(&self, ids: &HashSet<EventId>) -> Result<(), DatabaseError> {
        self.remove_stored(ids).map_err(backend)
    }

    /// Removes from sled (and from the bound's count) what the index has discarded.
    fn remove_stored(&self, ids: &HashSet<EventId>) -> Result<(), StoreError> {
        {
            let mut others = self.others();
            for id in ids {
                others.untrack(id);
            }
        }
        for id in ids {
            self.events.remove(id.as_bytes())?;
        }
        self.removed.fetch_add(ids.len(), Ordering::Relaxed);
        Ok(())
    }
}

fn backend(e: StoreError) -> DatabaseError {
    DatabaseError::backend(e)
}

impl NostrDatabase for SledEventStore {
    fn backend(&self) -> Backend {
        Backend::Custom("sled".to_owned())
    }

    fn save_event<'a>(
        &'a self,
        event: &'a Event,
    ) -> BoxedFuture<'a, Result<SaveEventStatus, DatabaseError>> {
        Box::pin(async move {
            if event.kind.is_ephemeral() {
                return Ok(SaveEventStatus::Rejected(
                    nostr_database::RejectedReason::Ephemeral,
                ));
            }
            // The relay sends OK (and hands the event to subscribers, the bot among them)
            // only after this returns. sled buffers writes for up to half a second, so the
            // event is synced to disk first: an acknowledgement tells the sender it may stop
            // resending, and a kill -9 must not take back an acknowledged order. Concurrent
            // senders share one fsync (Store::sync is a group commit).
            let DatabaseEventResult { status, to_discard } = self.index.index_event(event).await;
            if status.is_success() {
                self.events
                    .insert(event.id.as_bytes(), &event.as_json())
                    .map_err(backend)?;
                if !self.ours().contains(&event.pubkey) {
                    self.others()
                        .track(event.id, event.created_at, event.pubkey);
                }
            }
            self.remove_all(&to_discard)?;
            let evicted = self.evict().await.map_err(backend)?;
            if status.is_success() || !to_discard.is_empty() || evicted > 0 {
                self.store.sync().await.map_err(backend)?;
            }
            Ok(status)
        })
    }

    fn check_id<'a>(
        &'a self,
        event_id: &'a EventId,
    ) -> BoxedFuture<'a, Result<DatabaseEventStatus, DatabaseError>> {
        Box::pin(async move {
            Ok(if self.index.has_event_id_been_deleted(event_id).await {
                DatabaseEventStatus::Deleted
            } else if self.index.has_event(event_id).await {
                DatabaseEventStatus::Saved
            } else {
                DatabaseEventStatus::NotExistent
            })
        })
    }

    fn event_by_id<'a>(
        &'a self,
        event_id: &'a EventId,
    ) -> BoxedFuture<'a, Result<Option<Event>, DatabaseError>> {
        Box::pin(async move { Ok(self.index.event_by_id(event_id).await) })
    }

    fn count(&self, filter: Filter) -> BoxedFuture<'_, Result<usize, DatabaseError>> {
        Box::pin(async move { Ok(self.index.count(filter).await) })
    }

    fn query(&self, filter: Filter) -> BoxedFuture<'_, Result<Events, DatabaseError>> {
        Box::pin(async move { Ok(self.index.query(filter).await) })
    }

    fn negentropy_items(
        &self,
        filter: Filter,
    ) -> BoxedFuture<'_, Result<Vec<(EventId, Timestamp)>, DatabaseError>> {
        Box::pin(async move { Ok(self.index.negentropy_items(filter).await) })
    }

    fn delete(&self, filter: Filter) -> BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move {
            if let Some(ids) = self.index.delete(filter).await {
                self.remove_all(&ids)?;
            }
            Ok(())
        })
    }

    fn wipe(&self) -> BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move {
            self.index.clear().await;
            *self.others() = Others::default();
            self.events.raw().clear().map_err(|e| backend(e.into()))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::{EventBuilder, Keys, Kind, Tag};

    use super::*;

    #[tokio::test]
    async fn replaced_events_leave_sled_and_survive_reopen(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let keys = Keys::generate();
        let product = |price: &str, at: u64| {
            EventBuilder::new(Kind::Custom(30018), format!("{{\"price\":{price}}}"))
                .tag(Tag::identifier("p1"))
                .custom_created_at(Timestamp::from(at))
                .sign_with_keys(&keys)
        };
        let old = product("1", 1_000)?;
        let new = product("2", 2_000)?;
        {
            let store = Store::open(dir.path())?;
            let db = SledEventStore::open(&store, 100, Exempt::default()).await?;
            assert!(db.save_event(&old).await?.is_success());
            assert!(db.save_event(&new).await?.is_success());
            assert_eq!(db.events.len(), 1, "the replaced product is gone from sled");
        }
        let store = Store::open(dir.path())?;
        let db = SledEventStore::open(&store, 100, Exempt::default()).await?;
        assert_eq!(db.check_id(&new.id).await?, DatabaseEventStatus::Saved);
        assert_eq!(
            db.check_id(&old.id).await?,
            DatabaseEventStatus::NotExistent
        );
        assert_eq!(db.count(Filter::new().kind(Kind::Custom(30018))).await?, 1);
        Ok(())
    }

    fn dm(from: &Keys, to: PublicKey, at: u64) -> Result<Event, nostr_sdk::event::builder::Error> {
        EventBuilder::new(Kind::EncryptedDirectMessage, "x")
            .tag(Tag::public_key(to))
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(from)
    }

    #[tokio::test]
    async fn retention_expires_old_events_and_forgets_handled_ones(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let db = SledEventStore::open(&store, 100, Exempt::default()).await?;
        let (soko, other, sender) = (Keys::generate(), Keys::generate(), Keys::generate());
        let old = dm(&sender, other.public_key(), 1_000)?;
        let recent = dm(&sender, other.public_key(), 5_000)?;
        let handled = dm(&sender, soko.public_key(), 4_000)?;
        let unhandled = dm(&sender, soko.public_key(), 4_001)?;
        for event in [&old, &recent, &handled, &unhandled] {
            assert!(db.save_event(event).await?.is_success());
        }
        let dms = [Kind::EncryptedDirectMessage];
        assert_eq!(db.expire(&dms, Timestamp::from(2_000)).await?, 1);
        let done = handled.id;
        let forgotten = db
            .forget(&dms, &[soko.public_key()], Timestamp::from(4_500), |id| {
                *id == done
            })
            .await?;
        assert_eq!(forgotten, 1);
        for (event, kept) in [
            (&old, false),
            (&recent, true),
            (&handled, false),
            (&unhandled, true),
        ] {
            assert_eq!(db.holds(&event.id).await, kept);
            assert_eq!(db.events.get(event.id.as_bytes())?.is_some(), kept);
        }
        Ok(())
    }

    #[tokio::test]
    async fn the_index_is_bounded_and_sled_follows() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let db = SledEventStore::open(&store, 3, Exempt::default()).await?;
        let to = Keys::generate().public_key();
        for at in 1..=5 {
            db.save_event(&dm(&Keys::generate(), to, at * 100)?).await?;
        }
        assert_eq!(db.len().await, 3);
        assert_eq!(db.events.len(), 3);
        drop(db);
        let db = SledEventStore::open(&store, 2, Exempt::default()).await?;
        assert_eq!(db.len().await, 2);
        assert_eq!(
            db.events.len(),
            2,
            "reopening with a smaller bound trims sled too"
        );
        Ok(())
    }

    #[tokio::test]
    async fn own_events_are_neither_evicted_nor_counted() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let soko = Keys::generate();
        let ours = Exempt::default();
        ours.write()
            .map_err(|e| e.to_string())?
            .insert(soko.public_key());
        let db = SledEventStore::open(&store, 3, ours.clone()).await?;
        let stall = EventBuilder::new(Kind::Custom(30017), "{}")
            .tag(Tag::identifier("duka"))
            .custom_created_at(Timestamp::from(1))
            .sign_with_keys(&soko)?;
        let profile = EventBuilder::new(Kind::Metadata, "{}")
            .custom_created_at(Timestamp::from(2))
            .sign_with_keys(&soko)?;
        assert!(db.save_event(&stall).await?.is_success());
        assert!(db.save_event(&profile).await?.is_success());
        let to = Keys::generate().public_key();
        let mut junk = Vec::new();
        for at in 1..=6 {
            let event = dm(&Keys::generate(), to, at * 100)?;
            assert!(db.save_event(&event).await?.is_success());
            junk.push(event);
        }
        // An outsider's replaceable event, replaced: the old version leaves the count too.
        let squatter = Keys::generate();
        for at in [700, 800] {
            let product = EventBuilder::new(Kind::Custom(30018), "{}")
                .tag(Tag::identifier("p"))
                .custom_created_at(Timestamp::from(at))
                .sign_with_keys(&squatter)?;
            assert!(db.save_event(&product).await?.is_success());
        }
        // A deletion of soko's stall by someone else is refused (NIP-09: same author only).
        let deletion =
            EventBuilder::delete(nostr_sdk::nips::nip09::EventDeletionRequest::new().id(stall.id))
                .custom_created_at(Timestamp::from(900))
                .sign_with_keys(&Keys::generate())?;
        assert_eq!(
            db.save_event(&deletion).await?,
            SaveEventStatus::Rejected(nostr_database::RejectedReason::InvalidDelete)
        );

        let own = [&stall, &profile];
        check(&db, 3, &own, &junk[4..], squatter.public_key()).await?;
        assert!(!db_holds_any(&store, &junk[..4]).await?);
        // Reopening applies the same rule, here to a smaller bound.
        let db = SledEventStore::open(&store, 2, ours).await?;
        assert!(!db.holds(&junk[4].id).await);
        check(&db, 2, &own, &junk[5..], squatter.public_key()).await?;
        Ok(())
    }

    /// soko's `own` events all held, and the `bound` newest of the others: the squatter's
    /// product and the `newest` junk.
    async fn check(
        db: &SledEventStore,
        bound: usize,
        own: &[&Event],
        newest: &[Event],
        squatter: PublicKey,
    ) -> Result<(), Box<dyn std::error::Error>> {
        for event in own {
            assert!(db.holds(&event.id).await);
        }
        assert_eq!(db.len().await, own.len() + bound);
        assert_eq!(db.events.len(), own.len() + bound, "sled follows the index");
        assert_eq!(db.others().len(), bound);
        for event in newest {
            assert!(db.holds(&event.id).await);
        }
        assert_eq!(db.count(Filter::new().author(squatter)).await?, 1);
        Ok(())
    }

    async fn db_holds_any(store: &Store, events: &[Event]) -> Result<bool, StoreError> {
        let sled: Typed<String> = store.tree(trees::RELAY_EVENTS)?;
        for event in events {
            if sled.get(event.id.as_bytes())?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
