//! A client-side event database that remembers nothing.
//!
//! nostr-sdk's default in-memory tracker drops an event id it has already notified, even if
//! our loop lagged and never saw it. soko dedupes persistently in sled instead, so the pool
//! must pass every copy through: duplicates cost one sled lookup, a lost DM costs a customer.

use nostr_database::{
    Backend, DatabaseError, DatabaseEventStatus, Events, NostrDatabase, SaveEventStatus,
};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, EventId, Filter};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct NoDatabase;

impl NostrDatabase for NoDatabase {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    fn save_event<'a>(
        &'a self,
        _event: &'a Event,
    ) -> BoxedFuture<'a, Result<SaveEventStatus, DatabaseError>> {
        Box::pin(async { Ok(SaveEventStatus::Success) })
    }

    fn check_id<'a>(
        &'a self,
        _event_id: &'a EventId,
    ) -> BoxedFuture<'a, Result<DatabaseEventStatus, DatabaseError>> {
        Box::pin(async { Ok(DatabaseEventStatus::NotExistent) })
    }

    fn event_by_id<'a>(
        &'a self,
        _event_id: &'a EventId,
    ) -> BoxedFuture<'a, Result<Option<Event>, DatabaseError>> {
        Box::pin(async { Ok(None) })
    }

    fn count(&self, _filter: Filter) -> BoxedFuture<'_, Result<usize, DatabaseError>> {
        Box::pin(async { Ok(0) })
    }

    fn query(&self, filter: Filter) -> BoxedFuture<'_, Result<Events, DatabaseError>> {
        Box::pin(async move { Ok(Events::new(&filter)) })
    }

    fn delete(&self, _filter: Filter) -> BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async { Ok(()) })
    }

    fn wipe(&self) -> BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async { Ok(()) })
    }
}
