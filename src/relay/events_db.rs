//! The embedded relay's event store: sled for durability, nostr-database's in-memory
//! index for queries.
//!
//! Every event the index accepts is written to sled and synced to disk before the relay
//! acknowledges it (or hands it to the bot); events
//! the index discards (replaced, deleted) are removed from sled in the same call. On open, sled is
//! replayed into the index, which re-applies replacement and deletion rules, and anything it
//! discards is dropped, so the two never disagree for long. The index holds every event in
//! memory: right for a marketplace relay on one machine, not for a public relay with millions
//! of notes.

use std::collections::{BTreeSet, HashSet};

use nostr_database::{
    Backend, DatabaseError, DatabaseEventResult, DatabaseEventStatus, DatabaseHelper, Events,
    NostrDatabase, SaveEventStatus,
};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, EventId, Filter, JsonUtil, Timestamp};

use crate::store::{trees, Store, StoreError, Typed};

/// sled-backed [`NostrDatabase`].
#[derive(Debug, Clone)]
pub struct SledEventStore {
    events: Typed<String>,
    index: DatabaseHelper,
    store: Store,
}

impl SledEventStore {
    /// Opens the store and loads every stored event into the index.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let events: Typed<String> = store.tree(trees::RELAY_EVENTS)?;
        // nostr-database takes a BTreeSet; Event's interior mutability is a lazy tag cache
        // that takes no part in its ordering (created_at, id).
        #[allow(clippy::mutable_key_type)]
        let mut loaded = BTreeSet::new();
        for entry in events.iter() {
            let (key, json) = entry?;
            match Event::from_json(&json) {
                Ok(event) => {
                    loaded.insert(event);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dropping unreadable stored relay event");
                    events.remove(&key)?;
                }
            }
        }
        let index = DatabaseHelper::unbounded();
        let count = loaded.len();
        let discarded = index.bulk_load(loaded).await;
        for id in &discarded {
            events.remove(id.as_bytes())?;
        }
        tracing::debug!(
            loaded = count - discarded.len(),
            "embedded relay events loaded"
        );
        Ok(Self {
            events,
            index,
            store: store.clone(),
        })
    }

    fn remove_all(&self, ids: &HashSet<EventId>) -> Result<(), DatabaseError> {
        for id in ids {
            self.events.remove(id.as_bytes()).map_err(backend)?;
        }
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
            let db = SledEventStore::open(&store).await?;
            assert!(db.save_event(&old).await?.is_success());
            assert!(db.save_event(&new).await?.is_success());
            assert_eq!(db.events.len(), 1, "the replaced product is gone from sled");
        }
        let store = Store::open(dir.path())?;
        let db = SledEventStore::open(&store).await?;
        assert_eq!(db.check_id(&new.id).await?, DatabaseEventStatus::Saved);
        assert_eq!(
            db.check_id(&old.id).await?,
            DatabaseEventStatus::NotExistent
        );
        assert_eq!(db.count(Filter::new().kind(Kind::Custom(30018))).await?, 1);
        Ok(())
    }
}
