//! The embedded relay's event store: sled for durability, nostr-database's in-memory
//! index for queries.
//!
//! Every event the index accepts is written to sled and synced to disk before the relay
//! acknowledges it (or hands it to the bot); events
//! the index discards (replaced, deleted) are removed from sled in the same call. On open, sled is
//! replayed into the index, which re-applies replacement and deletion rules, and anything it
//! discards is dropped, so the two never disagree for long. The index holds every event in
//! memory, so it is bounded (`[relay] max_stored_events`): past the bound nostr-database drops
//! the oldest by `created_at`, from the index and (through `to_discard`) from sled. The
//! retention pass ([`SledEventStore::expire`], [`SledEventStore::forget`]) keeps the store
//! well under that bound in normal use; see `kinds/relay.md`.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nostr_database::{
    Backend, DatabaseError, DatabaseEventResult, DatabaseEventStatus, DatabaseHelper, Events,
    NostrDatabase, SaveEventStatus,
};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, EventId, Filter, JsonUtil, Kind, PublicKey, Timestamp};

use crate::store::{trees, Store, StoreError, Typed};

/// sled-backed [`NostrDatabase`].
#[derive(Debug, Clone)]
pub struct SledEventStore {
    events: Typed<String>,
    index: DatabaseHelper,
    /// Events removed since the index was last rebuilt (see [`Self::compact_after`]).
    removed: Arc<AtomicUsize>,
    /// For the group-commit sync before an acknowledgement.
    store: Store,
}

impl SledEventStore {
    /// Opens the store and loads the stored events into an index of at most `max_events`.
    pub async fn open(store: &Store, max_events: usize) -> Result<Self, StoreError> {
        let events: Typed<String> = store.tree(trees::RELAY_EVENTS)?;
        let this = Self {
            events,
            index: DatabaseHelper::bounded(max_events),
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
        let discarded = self.index.bulk_load(loaded).await;
        for id in &discarded {
            self.events.remove(id.as_bytes())?;
        }
        tracing::debug!(
            loaded = count - discarded.len(),
            "embedded relay events loaded"
        );
        Ok(())
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
        for id in ids {
            self.events.remove(id.as_bytes()).map_err(backend)?;
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
            }
            self.remove_all(&to_discard)?;
            if status.is_success() || !to_discard.is_empty() {
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
            let db = SledEventStore::open(&store, 100).await?;
            assert!(db.save_event(&old).await?.is_success());
            assert!(db.save_event(&new).await?.is_success());
            assert_eq!(db.events.len(), 1, "the replaced product is gone from sled");
        }
        let store = Store::open(dir.path())?;
        let db = SledEventStore::open(&store, 100).await?;
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
        let db = SledEventStore::open(&store, 100).await?;
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
        let db = SledEventStore::open(&store, 3).await?;
        let to = Keys::generate().public_key();
        for at in 1..=5 {
            db.save_event(&dm(&Keys::generate(), to, at * 100)?).await?;
        }
        assert_eq!(db.len().await, 3);
        assert_eq!(db.events.len(), 3);
        drop(db);
        let db = SledEventStore::open(&store, 2).await?;
        assert_eq!(db.len().await, 2);
        assert_eq!(
            db.events.len(),
            2,
            "reopening with a smaller bound trims sled too"
        );
        Ok(())
    }
}
