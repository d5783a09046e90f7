//! The embedded relay's event store: sled for durability, nostr-database's in-memory
//! index for queries.
//!
//! Every event the index accepts is written to sled and to the journal ([`super::journal`])
//! before the relay acknowledges it or hands it to anyone (soko's own bot in-process, see
//! [`SledEventStore::feed`]); events the index discards (replaced, deleted) are removed from
//! sled in the same call. On open, what the journal holds is written to sled, then sled is
//! replayed into the index, which re-applies replacement and deletion rules, and anything it
//! discards is dropped, so the two never disagree for long. The index holds every event in
//! memory, so the events of other authors than soko's own keys (the bot and the merchants it
//! manages, [`Exempt`]) are bounded (`[relay] max_stored_events`): past the bound the first
//! of them to arrive are evicted, from the index and from sled. soko's own events (stalls,
//! products, announcements) are neither evicted nor counted: they are usually the oldest on
//! the relay, and a bound that dropped the oldest of all would let anyone who writes enough
//! junk take the shops off soko's own relay. The retention pass ([`SledEventStore::expire`],
//! [`SledEventStore::forget`]) keeps the store well under that bound in normal use; see
//! `kinds/relay.md`.
//!
//! The events are in a sled Db of their own (`<data_dir>/relay-events/`, see
//! [`super::generations`]), because sled 0.34 never gives back the space of deleted values:
//! each flood of junk, however well bounded in events, left its full size in the file. That
//! Db is rewritten into a fresh one ([`SledEventStore::compact`]) at start and by the
//! janitor once its files pass a floor and a multiple of the bytes it holds
//! ([`CompactRule`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nostr_database::{
    Backend, DatabaseError, DatabaseEventResult, DatabaseEventStatus, DatabaseHelper, Events,
    NostrDatabase, SaveEventStatus,
};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, EventId, Filter, Kind, PublicKey, Timestamp};
use tokio::sync::RwLock;

use super::codec;
use super::generations::{self, gen_dir, CompactRule};
use super::journal::{Journal, Leftover, JOURNAL_DIR};
use super::policy::{expires, oldest_kept, Exempt};
use crate::store::{trees, Store, StoreError};
use crate::util::lock;

/// The events' own directory, under the data dir.
pub const EVENTS_DIR: &str = "relay-events";

/// The tree holding the events in a generation's Db: event id (32 bytes) → event JSON.
const EVENTS_TREE: &str = "events";

/// A compaction copies in batches of about this many bytes: big enough for few sled
/// batches, small enough that a cancelled one stops soon.
const COPY_BATCH_BYTES: usize = 4 << 20;

/// Retention deletes at most this many events under one hold of the index's write lock.
pub const PRUNE_BATCH: usize = 500;

/// Events the [`SledEventStore::feed`] holds for a slow receiver before it lags: a few
/// seconds of the write budgets' worst case.
pub const FEED_CAPACITY: usize = 8192;

/// Keys the load drops are removed in sled batches of this many.
const DELETE_BATCH: usize = 10_000;

/// What a load left out, and the keys still to remove from sled.
#[derive(Default)]
struct Dropped {
    keys: Vec<sled::IVec>,
    expired: usize,
    evicted: usize,
    unreadable: usize,
}

/// Failures opening or compacting the events' store.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// sled failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or directory of the events' store.
    #[error("{path}: {source}")]
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// `CURRENT` names a generation whose directory is gone: refusing to start empty.
    #[error("{0} is missing: the relay's events are lost or were moved (restore it, or delete CURRENT next to it to start the relay empty)")]
    MissingGeneration(PathBuf),
    /// Another soko kept moving the pointer while this one opened the store.
    #[error("{0}: the pointer kept changing while opening")]
    Unstable(PathBuf),
    /// The compaction was abandoned (the relay is stopping).
    #[error("compaction cancelled")]
    Cancelled,
    /// A blocking task did not finish.
    #[error("events store task: {0}")]
    Task(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> EventsError + '_ {
    move |source| EventsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn task(e: tokio::task::JoinError) -> EventsError {
    EventsError::Task(e.to_string())
}

/// The events held of authors other than soko's own keys, in the order they arrived: what
/// the bound counts and evicts, first in first out. Not by `created_at`: NIP-59 dates gift
/// wraps up to two days back, so a bound by date evicted a wrap that had just arrived (an
/// order not answered yet, soko's own reply, signed by a one-time key) before any of the
/// junk written after it. By arrival, an event outlives the next `max_stored_events` writes
/// whatever its date. At a load, stored events arrive in `created_at` order. About 170
/// bytes an event, and about 80 more for an author not tracked yet, next to the event
/// itself in the index. An event discarded by another
/// writer between its indexing and its tracking here stays counted until it is the oldest;
/// eviction then finds it gone and only forgets it.
#[derive(Debug, Default)]
struct Others {
    by_arrival: BTreeSet<(u64, EventId)>,
    by_id: HashMap<EventId, Tracked>,
    /// Tracked events per author: whether an event can be found without a scan.
    per_author: HashMap<PublicKey, usize>,
    arrivals: u64,
}

/// What [`Others`] keeps of an event.
type Identity = (EventId, PublicKey, Kind, Timestamp);

fn identity(event: &Event) -> Identity {
    (event.id, event.pubkey, event.kind, event.created_at)
}

/// A tracked event, with what finds it in the index by author instead of by a scan.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    arrival: u64,
    author: PublicKey,
    kind: Kind,
    created_at: Timestamp,
}

/// An event to remove from the index, and how to find it there.
#[derive(Debug, Clone, Copy)]
struct Removal {
    id: EventId,
    /// The event's kind, author and second, when it is its author's only event here.
    sole: Option<(Kind, PublicKey, Timestamp)>,
}

impl Others {
    fn track(&mut self, (id, author, kind, created_at): Identity) {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.by_id.entry(id) {
            self.arrivals += 1;
            entry.insert(Tracked {
                arrival: self.arrivals,
                author,
                kind,
                created_at,
            });
            self.by_arrival.insert((self.arrivals, id));
            *self.per_author.entry(author).or_default() += 1;
        }
    }

    fn untrack(&mut self, id: &EventId) -> Option<Tracked> {
        let tracked = self.by_id.remove(id)?;
        self.by_arrival.remove(&(tracked.arrival, *id));
        if let std::collections::hash_map::Entry::Occupied(mut count) =
            self.per_author.entry(tracked.author)
        {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        Some(tracked)
    }

    /// How to remove `id`, tracked as `tracked`, before its author's count drops.
    fn removal(&self, id: EventId, tracked: &Tracked) -> Removal {
        let sole = self.per_author.get(&tracked.author) == Some(&1);
        Removal {
            id,
            sole: sole.then_some((tracked.kind, tracked.author, tracked.created_at)),
        }
    }

    /// How to remove `id`, whether tracked or not (soko's own events are not).
    fn removal_of(&self, id: EventId) -> Removal {
        match self.by_id.get(&id) {
            Some(tracked) => self.removal(id, tracked),
            None => Removal { id, sole: None },
        }
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Takes out the oldest tracked events until `keep` are left, and returns those to evict:
    /// an author that has become one of soko's own since (a merchant's key registered after
    /// its events were loaded) is left alone, only no longer counted.
    fn over(&mut self, keep: usize, ours: &HashSet<PublicKey>) -> Vec<Removal> {
        let mut evict = Vec::new();
        while self.len() > keep {
            let Some(&(_, id)) = self.by_arrival.first() else {
                break;
            };
            let Some(tracked) = self.by_id.get(&id).copied() else {
                self.by_arrival.pop_first();
                continue;
            };
            let removal = self.removal(id, &tracked);
            self.untrack(&id);
            if !ours.contains(&tracked.author) {
                evict.push(removal);
            }
        }
        evict
    }
}

/// The generation in use.
#[derive(Debug)]
struct Current {
    gen: u64,
    /// For the checkpoints' flushes.
    store: Store,
    /// Event id → the event as [`codec`] stores it.
    events: sled::Tree,
}

impl Current {
    fn open(root: &Path, gen: u64) -> Result<Self, StoreError> {
        let store = Store::open(&gen_dir(root, gen))?;
        let events = store.db().open_tree(EVENTS_TREE)?;
        Ok(Self { gen, store, events })
    }
}

/// Keys written while a compaction copies: `Some` while one runs.
type Dirty = Arc<Mutex<Option<HashSet<Vec<u8>>>>>;

/// What one compaction did.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// Bytes on disk before.
    pub before: u64,
    /// Bytes on disk after (the new generation).
    pub after: u64,
    /// Events copied.
    pub copied: usize,
    /// Keys written during the copy and replayed into the copy while writers waited.
    pub replayed: usize,
    /// Time spent copying, writers running.
    pub copy: Duration,
    /// Time writers waited: from asking for the write lock until the new Db was in use.
    pub paused: Duration,
}

/// sled-backed [`NostrDatabase`].
#[derive(Debug, Clone)]
pub struct SledEventStore {
    /// Writers hold it shared for their write; a compaction takes it
    /// exclusively only to replay what arrived during its copy and switch Dbs.
    current: Arc<RwLock<Current>>,
    /// `<data_dir>/relay-events`.
    root: Arc<PathBuf>,
    /// Unbounded: the bound is ours (see [`Others`]), since nostr-database's would evict
    /// soko's own events first.
    index: DatabaseHelper,
    /// soko's own keys: their events are exempt from the bound.
    ours: Exempt,
    others: Arc<Mutex<Others>>,
    max_others: usize,
    /// `[relay] retention_secs`: regular events older than the window are not loaded.
    retention_secs: Option<u64>,
    /// Events removed since the index was last rebuilt (see [`Self::compact_after`]).
    removed: Arc<AtomicUsize>,
    /// Bytes of the keys and values held: what a compaction would copy.
    live: Arc<AtomicU64>,
    dirty: Dirty,
    /// One compaction at a time (and no wipe during one).
    compacting: Arc<tokio::sync::Mutex<()>>,
    rule: CompactRule,
    /// Every event stored, once journaled, for soko's bot in this process ([`Self::feed`]).
    feed: tokio::sync::broadcast::Sender<Event>,
    /// Bytes on disk after this process's last compaction (0 before the first).
    rewritten_to: Arc<AtomicU64>,
    /// Every write to sled, until a flush covers it: see [`super::journal`].
    journal: Arc<Journal>,
    /// `<data_dir>/relay-journal`, for errors.
    journal_dir: Arc<PathBuf>,
}

/// Records the keys written during a compaction's copy; dropped (the compaction finished,
/// failed or was cancelled with its task) it stops recording and stops the copy.
struct Tracking {
    dirty: Dirty,
    cancel: Arc<AtomicBool>,
}

impl Tracking {
    fn start(dirty: &Dirty) -> Self {
        *lock(dirty) = Some(HashSet::new());
        Self {
            dirty: dirty.clone(),
            cancel: Arc::default(),
        }
    }

    fn take(&self) -> HashSet<Vec<u8>> {
        lock(&self.dirty).take().unwrap_or_default()
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        *lock(&self.dirty) = None;
        self.cancel.store(true, Ordering::Relaxed);
    }
}

fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// Opens the generation `CURRENT` names under `root` (creating the first one), then
/// deletes every other: see [`generations`].
///
/// The sled lock on the named generation is what orders two sokos in one process (a
/// restart while the old instance's compaction finishes): the old one holds its generation
/// until the compaction has switched the pointer, so the pointer is read again once the
/// lock is held, and only a pointer that did not move is trusted.
fn open_current(root: &Path) -> Result<Current, EventsError> {
    std::fs::create_dir_all(root).map_err(io_at(root))?;
    for _ in 0..10 {
        let Some(gen) = generations::read_pointer(root).map_err(io_at(root))? else {
            // Never committed: anything here is a first creation cut short.
            generations::discard_others(root, None).map_err(io_at(root))?;
            let current = Current::open(root, 1)?;
            current.store.db().flush().map_err(StoreError::from)?;
            let dir = gen_dir(root, 1);
            generations::sync_dirs(&dir).map_err(io_at(&dir))?;
            generations::commit(root, 1).map_err(io_at(root))?;
            return Ok(current);
        };
        let dir = gen_dir(root, gen);
        if !dir.is_dir() {
            return Err(EventsError::MissingGeneration(dir));
        }
        let current = Current::open(root, gen)?;
        if generations::read_pointer(root).map_err(io_at(root))? == Some(gen) {
            let discarded = generations::discard_others(root, Some(gen)).map_err(io_at(root))?;
            if discarded > 0 {
                tracing::info!(
                    discarded,
                    gen,
                    "embedded relay store: removed what an earlier compaction left"
                );
            }
            return Ok(current);
        }
    }
    Err(EventsError::Unstable(root.to_path_buf()))
}

/// Moves the events an older soko kept in its main Db (tree `relay/events`) into `current`,
/// then drops that tree. Copying is idempotent (keys are event ids), and the tree is dropped
/// only once the copy is on disk, so a crash anywhere repeats it on the next start.
async fn migrate(legacy: &Store, current: &Current) -> Result<usize, StoreError> {
    let db = legacy.db();
    if !db
        .tree_names()
        .iter()
        .any(|name| name == trees::RELAY_EVENTS.as_bytes())
    {
        return Ok(0);
    }
    let old = db.open_tree(trees::RELAY_EVENTS)?;
    let copied = copy_tree(&old, &current.events, &AtomicBool::new(false))?
        .ok_or_else(|| StoreError::Task("migration cancelled".to_owned()))?;
    current.store.flush().await?;
    db.drop_tree(trees::RELAY_EVENTS)?;
    legacy.flush().await?;
    Ok(copied)
}

/// Writes into `current` what the journal files an earlier run left hold, in the order they
/// were written (a removal is a record without a value: stored events are never empty),
/// flushes it, then deletes those files. A crash anywhere in here repeats it: every record
/// says what its key holds, so writing one twice changes nothing.
async fn replay(
    current: &Current,
    journal: &Journal,
    leftover: Leftover,
    dir: &Path,
) -> Result<(), EventsError> {
    let Some(through) = leftover.through else {
        return Ok(());
    };
    if leftover.torn > 0 {
        tracing::warn!(
            files = leftover.torn,
            dir = %dir.display(),
            "embedded relay journal: a file ends in a record cut short; the records before it are kept"
        );
    }
    let records = leftover.records.len();
    // A batch keeps the last write of each key: the order of the records is kept.
    let mut batch = sled::Batch::default();
    for (id, value) in leftover.records {
        if value.is_empty() {
            batch.remove(&id[..]);
        } else {
            batch.insert(&id[..], value);
        }
    }
    current
        .events
        .apply_batch(batch)
        .map_err(StoreError::from)?;
    current.store.flush().await?;
    journal.remove_through(through).map_err(io_at(dir))?;
    if records > 0 {
        tracing::info!(
            records,
            "embedded relay: writes the last run had not flushed were taken from its journal"
        );
    }
    Ok(())
}

/// Copies every entry of `from` into `to` in batches; `None` when `cancel` was set.
fn copy_tree(
    from: &sled::Tree,
    to: &sled::Tree,
    cancel: &AtomicBool,
) -> Result<Option<usize>, StoreError> {
    let (mut batch, mut bytes, mut copied) = (sled::Batch::default(), 0, 0);
    for entry in from.iter() {
        let (key, value) = entry?;
        bytes += key.len() + value.len();
        batch.insert(key, value);
        copied += 1;
        if bytes >= COPY_BATCH_BYTES {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            to.apply_batch(std::mem::take(&mut batch))?;
            bytes = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(Some(copied))
}

impl SledEventStore {
    /// Opens the store under `data_dir` and loads the stored events, keeping at most
    /// `max_events` of authors outside `ours` (soko's own keys, which must be complete
    /// before opening: the events of a key missing from it count as an outsider's and may
    /// be evicted), and with `retention_secs`, no regular event older than that window
    /// (gift wraps: two days more, see [`oldest_kept`]). Events an older soko kept in
    /// `legacy` (its main Db) are moved over first; a store whose files have grown well past
    /// its events is compacted.
    pub async fn open(
        data_dir: &Path,
        legacy: &Store,
        max_events: usize,
        retention_secs: Option<u64>,
        ours: Exempt,
    ) -> Result<Self, EventsError> {
        let keep = (max_events, retention_secs);
        Self::open_with(data_dir, legacy, keep, ours, CompactRule::DEFAULT).await
    }

    async fn open_with(
        data_dir: &Path,
        legacy: &Store,
        (max_events, retention_secs): (usize, Option<u64>),
        ours: Exempt,
        rule: CompactRule,
    ) -> Result<Self, EventsError> {
        let root = data_dir.join(EVENTS_DIR);
        let opening = root.clone();
        let current = tokio::task::spawn_blocking(move || open_current(&opening))
            .await
            .map_err(task)??;
        let migrated = migrate(legacy, &current).await?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "embedded relay events moved to their own store ({EVENTS_DIR}/)"
            );
        }
        let journal_dir = data_dir.join(JOURNAL_DIR);
        let opening = journal_dir.clone();
        let (journal, leftover) = tokio::task::spawn_blocking(move || Journal::open(&opening))
            .await
            .map_err(task)?
            .map_err(io_at(&journal_dir))?;
        replay(&current, &journal, leftover, &journal_dir).await?;
        let this = Self {
            current: Arc::new(RwLock::new(current)),
            root: Arc::new(root),
            index: DatabaseHelper::unbounded(),
            ours,
            others: Arc::default(),
            max_others: max_events,
            retention_secs,
            removed: Arc::default(),
            live: Arc::default(),
            dirty: Arc::default(),
            compacting: Arc::default(),
            rule,
            feed: tokio::sync::broadcast::channel(FEED_CAPACITY).0,
            rewritten_to: Arc::default(),
            journal: Arc::new(journal),
            journal_dir: Arc::new(journal_dir),
        };
        this.load().await?;
        // A failed compaction leaves the store as it was: start anyway, the janitor retries.
        match this.compact_if_needed().await {
            Ok(Some(done)) => log_compaction(&done),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "embedded relay store compaction failed"),
        }
        Ok(this)
    }

    /// Replays sled into the index, dropping from sled what the index refuses, what is past
    /// the retention window and the oldest outsiders' events past the bound.
    ///
    /// The store is read one event at a time, and only what will be kept is held: the
    /// outsiders' events in a set trimmed to the bound as it fills. A store left with a
    /// million events (soko down for weeks, or a smaller bound than before) then costs the
    /// memory of what the relay serves, not of what is on disk, and no eviction scans the
    /// index afterwards.
    async fn load(&self) -> Result<(), StoreError> {
        let current = self.current.read().await;
        let now = Timestamp::now().as_secs();
        let ours = self.ours().clone();
        // nostr-database takes a BTreeSet; Event's interior mutability is a lazy tag cache
        // that takes no part in its ordering (created_at, id).
        #[allow(clippy::mutable_key_type)]
        let mut own = BTreeSet::new();
        let mut others: BTreeMap<(Timestamp, EventId), Event> = BTreeMap::new();
        let mut dropped = Dropped::default();
        for entry in current.events.iter() {
            let (key, bytes) = entry?;
            let event = match codec::decode(&bytes) {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping unreadable stored relay event");
                    dropped.unreadable += 1;
                    dropped.keys.push(key);
                    continue;
                }
            };
            let past = self.retention_secs.is_some_and(|secs| {
                expires(event.kind)
                    && event.created_at.as_secs() < oldest_kept(event.kind, secs, now)
            });
            if past {
                dropped.expired += 1;
                dropped.keys.push(key);
            } else if ours.contains(&event.pubkey) {
                own.insert(event);
            } else {
                others.insert((event.created_at, event.id), event);
                if others.len() > self.max_others {
                    if let Some(((_, id), _)) = others.pop_first() {
                        dropped.evicted += 1;
                        dropped.keys.push(id.as_bytes().as_slice().into());
                    }
                }
            }
            if dropped.keys.len() >= DELETE_BATCH {
                self.delete_batch(&current, std::mem::take(&mut dropped.keys))?;
            }
        }
        self.delete_batch(&current, std::mem::take(&mut dropped.keys))?;
        let candidates: Vec<Identity> = others.values().map(identity).collect();
        #[allow(clippy::mutable_key_type)]
        let mut loaded = own;
        loaded.extend(others.into_values());
        let count = loaded.len();
        let discarded = self.index.bulk_load(loaded).await;
        let mut live = 0;
        for entry in current.events.iter() {
            let (key, value) = entry?;
            live += entry_bytes(&key, &value);
        }
        // Set, not added: the deletions below subtract from it.
        self.live.store(live, Ordering::Relaxed);
        for id in &discarded {
            self.delete(&current, id.as_bytes())?;
        }
        {
            let mut others = self.others();
            *others = Others::default();
            for candidate in candidates {
                if !discarded.contains(&candidate.0) {
                    others.track(candidate);
                }
            }
        }
        tracing::debug!(
            loaded = count - discarded.len(),
            expired = dropped.expired,
            evicted = dropped.evicted,
            unreadable = dropped.unreadable,
            "embedded relay events loaded"
        );
        Ok(())
    }

    /// Removes `keys` from the Db in use in one sled batch (and tells a running compaction);
    /// the live count is left to the caller. Not journaled: only a load removes this way,
    /// and the next load removes again whatever a crash kept (a store left for weeks may
    /// drop a million events here).
    fn delete_batch(&self, current: &Current, keys: Vec<sled::IVec>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in &keys {
            batch.remove(key.clone());
            self.mark(key);
        }
        current.events.apply_batch(batch)?;
        Ok(())
    }

    /// [`NostrDatabase::save_event`], calling `before` with the outcome once the event is
    /// written. The relay sends `OK` (and hands the event to its connections'
    /// subscriptions) only after this returns: the event is then in the journal, so a kill
    /// -9 cannot take back an acknowledged order, and no sender waits for the disk.
    pub async fn save(
        &self,
        event: &Event,
        before: impl FnOnce(&SaveEventStatus) + Send,
    ) -> Result<SaveEventStatus, DatabaseError> {
        // The Db is held for the whole write, so that a compaction cannot switch Dbs between
        // the sled write and its journal record.
        let current = self.current.read().await;
        let status = self.write(&current, event, before).await?;
        drop(current);
        self.announce(event, &status);
        Ok(status)
    }

    /// Starts a new journal file, flushes sled, then deletes the journal files that flush
    /// covered. The relay runs it every [`super::CHECKPOINT_EVERY`]: it bounds what a start
    /// replays and what a power cut could take.
    pub async fn checkpoint(&self) -> Result<(), EventsError> {
        let current = self.current.read().await;
        let Some(sealed) = self.journal.rotate().map_err(io_at(&self.journal_dir))? else {
            return Ok(());
        };
        // Every record in the sealed files was written to this Db before it was appended
        // (see `write`), and a compaction, which would switch Dbs, waits for this read.
        current.store.flush().await?;
        drop(current);
        self.journal
            .remove_through(sealed)
            .map_err(io_at(&self.journal_dir))
    }

    /// The write half of a save: index, sled and journal, the bound.
    async fn write(
        &self,
        current: &Current,
        event: &Event,
        before: impl FnOnce(&SaveEventStatus) + Send,
    ) -> Result<SaveEventStatus, DatabaseError> {
        if event.kind.is_ephemeral() {
            return Ok(SaveEventStatus::Rejected(
                nostr_database::RejectedReason::Ephemeral,
            ));
        }
        let DatabaseEventResult { status, to_discard } = self.index.index_event(event).await;
        // A duplicate is written again: the save that indexed it first may not have reached
        // the journal yet, and this caller may stop resending once told it is taken.
        let duplicate = matches!(
            status,
            SaveEventStatus::Rejected(nostr_database::RejectedReason::Duplicate)
        );
        if status.is_success() || duplicate {
            let stored = codec::encode(event);
            // sled first: a checkpoint flushes sled only after it has sealed the journal
            // file, so each record it deletes is in what that flush wrote.
            self.put(current, event.id.as_bytes(), &stored)
                .map_err(backend)?;
            self.journal
                .append(event.id.as_bytes(), &stored)
                .map_err(|e| DatabaseError::backend(io_at(&self.journal_dir)(e)))?;
        }
        if status.is_success() && !self.ours().contains(&event.pubkey) {
            self.others().track(identity(event));
        }
        self.remove_all(current, &to_discard)?;
        self.evict(current).await.map_err(backend)?;
        before(&status);
        Ok(status)
    }

    /// Journals a removal from sled. One that fails is logged, not returned: the removal
    /// stands, and a crash before the next checkpoint can only bring the event back, to be
    /// removed again by the rules that removed it.
    fn journal_removal(&self, key: &[u8]) {
        let Ok(id) = <&[u8; 32]>::try_from(key) else {
            return;
        };
        if let Err(e) = self.journal.append(id, &[]) {
            tracing::warn!(error = %e, dir = %self.journal_dir.display(), "embedded relay journal: a removal was not recorded");
        }
    }

    fn announce(&self, event: &Event, status: &SaveEventStatus) {
        if status.is_success() && self.feed.receiver_count() > 0 {
            // No receiver is not an error: the bot is not listening yet, or has stopped.
            let _ = self.feed.send(event.clone());
        }
    }

    /// Every event stored from now on (soko's own as well as outsiders'), once it is
    /// journaled. soko's bot hears its own relay this way: over a websocket each inbound DM
    /// cost the relay a JSON encoding and a frame, and the bot's relay pool a JSON decoding
    /// and a second signature check (the relay checks every event it accepts from a
    /// connection; soko's own are signed here). A receiver more than [`FEED_CAPACITY`] events behind is told
    /// how many it missed, and must ask the relay for them (a `REQ`: they are stored).
    pub fn feed(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.feed.subscribe()
    }

    fn ours(&self) -> std::sync::RwLockReadGuard<'_, HashSet<PublicKey>> {
        // The set is only ever inserted into: a panic while holding it leaves it usable.
        self.ours.read().unwrap_or_else(|e| e.into_inner())
    }

    fn others(&self) -> MutexGuard<'_, Others> {
        lock(&self.others)
    }

    /// Writes one entry to the Db in use, keeping the live count and telling a running
    /// compaction.
    fn put(&self, current: &Current, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let added = entry_bytes(key, value);
        let old = current.events.insert(key, value)?;
        self.live.fetch_add(added, Ordering::Relaxed);
        if let Some(old) = old {
            self.unlive(entry_bytes(key, &old));
        }
        self.mark(key);
        Ok(())
    }

    /// Removes one entry, like [`Self::put`].
    fn delete(&self, current: &Current, key: &[u8]) -> Result<(), StoreError> {
        if let Some(old) = current.events.remove(key)? {
            self.unlive(entry_bytes(key, &old));
        }
        self.mark(key);
        self.journal_removal(key);
        Ok(())
    }

    fn unlive(&self, bytes: u64) {
        let _ = self
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                Some(live.saturating_sub(bytes))
            });
    }

    fn mark(&self, key: &[u8]) {
        if let Some(dirty) = lock(&self.dirty).as_mut() {
            dirty.insert(key.to_vec());
        }
    }

    /// Evicts the oldest events of other authors past the bound; returns how many. Past the
    /// bound a batch of 1/64 of it goes at once, so that the events of authors with several
    /// (see [`Self::discard`]) cost one scan of the index per `max_events / 64` writes, not
    /// one per write.
    async fn evict(&self, current: &Current) -> Result<usize, StoreError> {
        let removals = {
            let mut others = self.others();
            if others.len() <= self.max_others {
                return Ok(0);
            }
            let keep = self.max_others - self.max_others / 64;
            let ours = self.ours();
            others.over(keep, &ours)
        };
        self.discard(current, &removals).await
    }

    /// Removes events from the index and sled; returns how many went.
    ///
    /// nostr-database deletes by filter, and it answers a filter of ids by scanning every
    /// event it holds, under the index's write lock. So an event that is its author's only
    /// one here is found through the index's (kind, author) set instead, narrowed to its own
    /// second: a step or two. Gift wraps, each signed by a one-time key, and floods from
    /// fresh keys go that way. The events of authors with several share filters of ids of
    /// at most [`PRUNE_BATCH`], a scan each. (The (kind, author, second) filter would take
    /// any other event of that author, kind and second along; an author with one event has
    /// none, unless one arrives, backdated to that second, between the count and the
    /// delete.)
    async fn discard(&self, current: &Current, removals: &[Removal]) -> Result<usize, StoreError> {
        let mut gone = 0;
        let mut by_id = Vec::new();
        for removal in removals {
            let Some((kind, author, second)) = removal.sole else {
                by_id.push(removal.id);
                continue;
            };
            let filter = Filter::new()
                .kind(kind)
                .author(author)
                .since(second)
                .until(second);
            if let Some(ids) = self.index.delete(filter).await {
                self.remove_stored(current, &ids)?;
                gone += ids.len();
            }
        }
        for batch in by_id.chunks(PRUNE_BATCH) {
            let filter = Filter::new().ids(batch.iter().copied());
            if let Some(ids) = self.index.delete(filter).await {
                self.remove_stored(current, &ids)?;
                gone += ids.len();
            }
        }
        Ok(gone)
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

    /// Bytes of the events held (keys and values as stored).
    pub fn live_bytes(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Bytes the Db in use takes on disk.
    pub async fn disk_bytes(&self) -> u64 {
        let dir = gen_dir(&self.root, self.current.read().await.gen);
        tokio::task::spawn_blocking(move || crate::util::size_on_disk(&dir))
            .await
            .unwrap_or(0)
    }

    /// Compacts when the [`CompactRule`] says so; returns what it did, if anything.
    pub async fn compact_if_needed(&self) -> Result<Option<Compaction>, EventsError> {
        let disk = self.disk_bytes().await;
        let rewritten_to = self.rewritten_to.load(Ordering::Relaxed);
        if !self.rule.due(disk, self.live_bytes(), rewritten_to) {
            return Ok(None);
        }
        let done = self.compact().await?;
        self.rewritten_to.store(done.after, Ordering::Relaxed);
        Ok(Some(done))
    }

    /// Rewrites the events into a fresh generation and switches to it.
    ///
    /// Writers are not stopped for the copy, which takes seconds for a full store: the keys
    /// they write meanwhile are recorded ([`Tracking`]), and only to replay those, flush the
    /// copy and move the pointer does the compaction hold the write lock. Holding it for the
    /// whole copy would have been simpler, but would have stalled every acknowledgement (the
    /// bot's replies among them) for as long as a gigabyte takes to rewrite.
    ///
    /// The part under the lock runs to its end on a blocking thread even if this future is
    /// dropped (the relay stopping), so the pointer and the Db in use cannot disagree.
    pub async fn compact(&self) -> Result<Compaction, EventsError> {
        let _one = self.compacting.lock().await;
        let (old_gen, old_events) = {
            let current = self.current.read().await;
            (current.gen, current.events.clone())
        };
        let before = self.disk_bytes().await;
        let new_gen = old_gen + 1;
        let new_dir = gen_dir(&self.root, new_gen);
        // Started before the copy reads anything: a write the copy may miss is recorded.
        let tracking = Tracking::start(&self.dirty);
        let started = Instant::now();
        let cancel = tracking.cancel.clone();
        let building = new_dir.clone();
        let in_root = self.root.clone();
        let (new_current, copied) = tokio::task::spawn_blocking(move || {
            let built = (|| {
                if building.exists() {
                    std::fs::remove_dir_all(&building).map_err(io_at(&building))?;
                }
                let new = Current::open(&in_root, new_gen)?;
                let Some(copied) = copy_tree(&old_events, &new.events, &cancel)? else {
                    return Err(EventsError::Cancelled);
                };
                // Most of the copy on disk now, while writers run: the flush under the lock
                // then has only the replay left to write.
                new.store.db().flush().map_err(StoreError::from)?;
                Ok((new, copied))
            })();
            if built.is_err() {
                let _ = std::fs::remove_dir_all(&building);
            }
            built
        })
        .await
        .map_err(task)??;
        let copy = started.elapsed();

        let asked = Instant::now();
        let mut current = self.current.clone().write_owned().await;
        let dirty = tracking.take();
        let replayed = dirty.len();
        let root = self.root.clone();
        let (paused, after) = tokio::task::spawn_blocking(move || {
            let switched = (|| {
                for key in &dirty {
                    match current.events.get(key).map_err(StoreError::from)? {
                        Some(value) => new_current.events.insert(key.as_slice(), value),
                        None => new_current.events.remove(key.as_slice()),
                    }
                    .map_err(StoreError::from)?;
                }
                new_current.store.db().flush().map_err(StoreError::from)?;
                generations::sync_dirs(&new_dir).map_err(io_at(&new_dir))?;
                if !generations::commit(&root, new_gen).map_err(io_at(&root))? {
                    tracing::warn!(dir = %root.display(), "could not sync the directory after switching the relay store; a power loss may bring back the previous (complete) one");
                }
                Ok::<_, EventsError>(())
            })();
            if let Err(e) = switched {
                drop(new_current);
                let _ = std::fs::remove_dir_all(&new_dir);
                return Err(e);
            }
            let old = std::mem::replace(&mut *current, new_current);
            drop(current);
            let paused = asked.elapsed();
            // Closed before its files go: sled writes its last state on drop.
            drop(old);
            let old_dir = gen_dir(&root, old_gen);
            if let Err(e) = std::fs::remove_dir_all(&old_dir) {
                tracing::warn!(dir = %old_dir.display(), error = %e, "old relay store left on disk; it is removed at the next start");
            }
            Ok((paused, crate::util::size_on_disk(&new_dir)))
        })
        .await
        .map_err(task)??;
        Ok(Compaction {
            before,
            after,
            copied,
            replayed,
            copy,
            paused,
        })
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

    /// Deletes at most `max` events of `kinds` created at or before `until`; returns how
    /// many. They go in batches of [`PRUNE_BATCH`], the index's lock released between
    /// batches, so that readers and writers are not held up by a long backlog.
    pub async fn expire(
        &self,
        kinds: &[Kind],
        until: Timestamp,
        max: usize,
    ) -> Result<usize, DatabaseError> {
        let mut expired = 0;
        while !kinds.is_empty() && expired < max {
            let batch = PRUNE_BATCH.min(max - expired);
            let filter = Filter::new()
                .kinds(kinds.iter().copied())
                .until(until)
                .limit(batch);
            let current = self.current.read().await;
            let Some(ids) = self.index.delete(filter).await else {
                break;
            };
            self.remove_all(&current, &ids)?;
            expired += ids.len();
            if ids.len() < batch {
                break;
            }
        }
        Ok(expired)
    }

    /// Deletes at most `max` events of `kinds` addressed (`p` tag) to one of `to`, created
    /// at or before `until`, for which `done` is true; returns how many.
    pub async fn forget(
        &self,
        kinds: &[Kind],
        to: &[PublicKey],
        until: Timestamp,
        max: usize,
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
            .take(max)
            .collect();
        let mut forgotten = 0;
        for batch in ids.chunks(PRUNE_BATCH) {
            let removals: Vec<Removal> = {
                let others = self.others();
                batch.iter().map(|id| others.removal_of(*id)).collect()
            };
            let current = self.current.read().await;
            forgotten += self.discard(&current, &removals).await.map_err(backend)?;
        }
        Ok(forgotten)
    }

    fn remove_all(&self, current: &Current, ids: &HashSet<EventId>) -> Result<(), DatabaseError> {
        self.remove_stored(current, ids).map_err(backend)
    }

    /// Removes from sled (and from the bound's count) what the index has discarded.
    fn remove_stored(&self, current: &Current, ids: &HashSet<EventId>) -> Result<(), StoreError> {
        {
            let mut others = self.others();
            for id in ids {
                others.untrack(id);
            }
        }
        for id in ids {
            self.delete(current, id.as_bytes())?;
        }
        self.removed.fetch_add(ids.len(), Ordering::Relaxed);
        Ok(())
    }
}

/// Logs a finished compaction.
pub fn log_compaction(done: &Compaction) {
    tracing::info!(
        before_mb = done.before >> 20,
        after_mb = done.after >> 20,
        events = done.copied,
        replayed = done.replayed,
        copy_ms = done.copy.as_millis() as u64,
        paused_ms = done.paused.as_millis() as u64,
        "embedded relay store compacted"
    );
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
        Box::pin(self.save(event, |_| {}))
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
            let current = self.current.read().await;
            if let Some(ids) = self.index.delete(filter).await {
                self.remove_all(&current, &ids)?;
            }
            Ok(())
        })
    }

    fn wipe(&self) -> BoxedFuture<'_, Result<(), DatabaseError>> {
        Box::pin(async move {
            // Not during a compaction: its copy would bring the events back.
            let _one = self.compacting.lock().await;
            let current = self.current.read().await;
            self.index.clear().await;
            *self.others() = Others::default();
            current.events.clear().map_err(|e| backend(e.into()))?;
            self.live.store(0, Ordering::Relaxed);
            drop(current);
            // What the journal holds must not come back at the next start.
            self.checkpoint().await.map_err(DatabaseError::backend)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::{EventBuilder, JsonUtil, Keys, Kind, Tag};

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
            let db = SledEventStore::open(dir.path(), &store, 100, None, Exempt::default()).await?;
            assert!(db.save_event(&old).await?.is_success());
            assert!(db.save_event(&new).await?.is_success());
            assert_eq!(
                db.stored_len().await,
                1,
                "the replaced product is gone from sled"
            );
        }
        let store = Store::open(dir.path())?;
        let db = SledEventStore::open(dir.path(), &store, 100, None, Exempt::default()).await?;
        assert_eq!(db.check_id(&new.id).await?, DatabaseEventStatus::Saved);
        assert_eq!(
            db.check_id(&old.id).await?,
            DatabaseEventStatus::NotExistent
        );
        assert_eq!(db.count(Filter::new().kind(Kind::Custom(30018))).await?, 1);
        Ok(())
    }

    fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy_dir(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), target)?;
            }
        }
        Ok(())
    }

    /// A kill -9 at its worst: sled's files as they were at the last checkpoint, and the
    /// journal as it is now. What was saved or removed since comes back from the journal,
    /// up to a record the kill cut short.
    #[tokio::test]
    async fn a_crash_keeps_what_the_journal_holds() -> Result<(), Box<dyn std::error::Error>> {
        let live = tempfile::tempdir()?;
        let crashed = tempfile::tempdir()?;
        let store = Store::open(live.path())?;
        let db = SledEventStore::open(live.path(), &store, 100, None, Exempt::default()).await?;
        let (from, to) = (Keys::generate(), Keys::generate().public_key());
        let removed = dm(&from, to, 1_000)?;
        assert!(db.save_event(&removed).await?.is_success());
        db.checkpoint().await?;
        let journal = live.path().join(JOURNAL_DIR);
        assert_eq!(
            std::fs::read_dir(&journal)?.count(),
            1,
            "a checkpoint leaves only the file it started"
        );
        copy_dir(
            &live.path().join(EVENTS_DIR),
            &crashed.path().join(EVENTS_DIR),
        )?;

        let saved = [dm(&from, to, 2_000)?, dm(&from, to, 3_000)?];
        for event in &saved {
            assert!(db.save_event(event).await?.is_success());
        }
        NostrDatabase::delete(&db, Filter::new().id(removed.id)).await?;
        copy_dir(&journal, &crashed.path().join(JOURNAL_DIR))?;
        // A last record the kill cut short.
        let cut = dm(&from, to, 4_000)?;
        let mut files: Vec<_> = std::fs::read_dir(crashed.path().join(JOURNAL_DIR))?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        let newest = files.pop().ok_or("no journal file")?;
        let mut bytes = std::fs::read(&newest)?;
        bytes.extend_from_slice(&[200, 1, 0, 0, 1, 2, 3, 4]);
        bytes.extend_from_slice(cut.id.as_bytes());
        std::fs::write(&newest, bytes)?;

        let store = Store::open(crashed.path())?;
        let db = SledEventStore::open(crashed.path(), &store, 100, None, Exempt::default()).await?;
        for event in &saved {
            assert_eq!(db.check_id(&event.id).await?, DatabaseEventStatus::Saved);
        }
        assert_eq!(
            db.check_id(&removed.id).await?,
            DatabaseEventStatus::NotExistent
        );
        assert_eq!(
            db.check_id(&cut.id).await?,
            DatabaseEventStatus::NotExistent
        );
        assert_eq!(db.stored_len().await, 2);
        assert_eq!(
            std::fs::read_dir(crashed.path().join(JOURNAL_DIR))?.count(),
            1,
            "what was replayed is gone from the journal"
        );
        Ok(())
    }

    /// A fresh store holding at most `bound` outsiders' events, no retention window.
    async fn bounded(
        bound: usize,
    ) -> Result<(tempfile::TempDir, Store, SledEventStore), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let db = SledEventStore::open(dir.path(), &store, bound, None, Exempt::default()).await?;
        Ok((dir, store, db))
    }

    fn dm(from: &Keys, to: PublicKey, at: u64) -> Result<Event, nostr_sdk::event::builder::Error> {
        EventBuilder::new(Kind::EncryptedDirectMessage, "x")
            .tag(Tag::public_key(to))
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(from)
    }

    #[tokio::test]
    async fn a_retention_pass_deletes_no_more_than_it_is_given(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _store, db) = bounded(10_000).await?;
        let (sender, to) = (Keys::generate(), Keys::generate().public_key());
        let backlog = 2 * PRUNE_BATCH + 100;
        for at in 0..backlog as u64 {
            db.save_event(&dm(&sender, to, 1_000 + at)?).await?;
        }
        let kept = dm(&sender, to, 9_000)?;
        db.save_event(&kept).await?;
        let dms = [Kind::EncryptedDirectMessage];
        let until = Timestamp::from(5_000);
        assert_eq!(
            db.expire(&dms, until, PRUNE_BATCH + 7).await?,
            PRUNE_BATCH + 7
        );
        assert_eq!(db.len().await, backlog - PRUNE_BATCH - 7 + 1);
        assert_eq!(
            db.expire(&dms, until, usize::MAX).await?,
            PRUNE_BATCH - 7 + 100
        );
        assert_eq!(db.expire(&dms, until, usize::MAX).await?, 0);
        assert_eq!(db.stored_len().await, 1);
        assert!(db.holds(&kept.id).await);
        Ok(())
    }

    #[tokio::test]
    async fn loading_leaves_out_what_is_past_the_window_and_the_bound(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let (soko, merchant, sender) = (Keys::generate(), Keys::generate(), Keys::generate());
        let ours = Exempt::default();
        ours.write()
            .map_err(|e| e.to_string())?
            .insert(soko.public_key());
        let now = Timestamp::now().as_secs();
        let (day, window) = (24 * 3600, 7 * 24 * 3600);
        let wrap = |age: u64| {
            EventBuilder::new(Kind::GiftWrap, "w")
                .tag(Tag::public_key(soko.public_key()))
                .custom_created_at(Timestamp::from(now - age))
                .sign_with_keys(&Keys::generate())
        };
        let listing = |kind: u16, age: u64| {
            EventBuilder::new(Kind::Custom(kind), "{}")
                .tag(Tag::identifier("duka"))
                .custom_created_at(Timestamp::from(now - age))
                .sign_with_keys(&merchant)
        };
        let to = Keys::generate().public_key();
        let old_dm = dm(&sender, to, now - window - 60)?;
        let old_reply = dm(&soko, to, now - window - 60)?;
        let recent_dm = dm(&sender, to, now - day)?;
        let recent_reply = dm(&soko, to, now - 2 * day)?;
        // NIP-59 backdates wraps by up to two days: they keep two days more.
        let backdated_wrap = wrap(window + day)?;
        let old_wrap = wrap(window + 3 * day)?;
        let (stall, product) = (listing(30017, 90 * day)?, listing(30018, 60 * day)?);
        {
            let db = SledEventStore::open(dir.path(), &store, 100, None, ours.clone()).await?;
            for event in [
                &old_dm,
                &old_reply,
                &recent_dm,
                &recent_reply,
                &backdated_wrap,
                &old_wrap,
                &stall,
                &product,
            ] {
                assert!(db.save_event(event).await?.is_success());
            }
        }
        let db = SledEventStore::open(dir.path(), &store, 100, Some(window), ours).await?;
        for (event, kept) in [
            (&old_dm, false),
            (&old_reply, false),
            (&old_wrap, false),
            (&recent_dm, true),
            (&recent_reply, true),
            (&backdated_wrap, true),
            (&stall, true),
            (&product, true),
        ] {
            db.assert_kept(&event.id, kept).await;
        }
        assert_eq!(db.others().len(), 4);
        assert_eq!(db.len().await, 5);
        let live = db.live_bytes();
        let mut stored = 0;
        for event in [&recent_dm, &recent_reply, &backdated_wrap, &stall, &product] {
            stored += 32 + codec::encode(event).len() as u64;
        }
        assert_eq!(live, stored, "the live count is of what is kept");
        Ok(())
    }

    #[tokio::test]
    async fn retention_expires_old_events_and_forgets_handled_ones(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _store, db) = bounded(100).await?;
        let (soko, other, sender) = (Keys::generate(), Keys::generate(), Keys::generate());
        let old = dm(&sender, other.public_key(), 1_000)?;
        let recent = dm(&sender, other.public_key(), 5_000)?;
        let handled = dm(&sender, soko.public_key(), 4_000)?;
        let unhandled = dm(&sender, soko.public_key(), 4_001)?;
        for event in [&old, &recent, &handled, &unhandled] {
            assert!(db.save_event(event).await?.is_success());
        }
        let dms = [Kind::EncryptedDirectMessage];
        assert_eq!(
            db.expire(&dms, Timestamp::from(2_000), usize::MAX).await?,
            1
        );
        let done = handled.id;
        let forgotten = db
            .forget(
                &dms,
                &[soko.public_key()],
                Timestamp::from(4_500),
                10,
                |id| *id == done,
            )
            .await?;
        assert_eq!(forgotten, 1);
        for (event, kept) in [
            (&old, false),
            (&recent, true),
            (&handled, false),
            (&unhandled, true),
        ] {
            db.assert_kept(&event.id, kept).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn the_index_is_bounded_and_sled_follows() -> Result<(), Box<dyn std::error::Error>> {
        let (dir, store, db) = bounded(3).await?;
        let to = Keys::generate().public_key();
        for at in 1..=5 {
            db.save_event(&dm(&Keys::generate(), to, at * 100)?).await?;
        }
        assert_eq!(db.len().await, 3);
        assert_eq!(db.stored_len().await, 3);
        drop(db);
        let db = SledEventStore::open(dir.path(), &store, 2, None, Exempt::default()).await?;
        assert_eq!(db.len().await, 2);
        assert_eq!(
            db.stored_len().await,
            2,
            "reopening with a smaller bound trims sled too"
        );
        Ok(())
    }

    /// A gift wrap dated two days back, just arrived, is not the first to go past the bound:
    /// the events that arrived before it are, whatever their dates.
    #[tokio::test]
    async fn the_bound_evicts_by_arrival_not_by_date() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _store, db) = bounded(3).await?;
        let to = Keys::generate().public_key();
        let now = Timestamp::now().as_secs();
        let mut earlier = Vec::new();
        for n in 0..3 {
            let event = dm(&Keys::generate(), to, now - 10 + n)?;
            assert!(db.save_event(&event).await?.is_success());
            earlier.push(event);
        }
        let wrap = EventBuilder::new(Kind::GiftWrap, "sealed")
            .tag(Tag::public_key(to))
            .custom_created_at(Timestamp::from(now - 2 * 86_400))
            .sign_with_keys(&Keys::generate())?;
        assert!(db.save_event(&wrap).await?.is_success());
        assert!(db.holds(&wrap.id).await, "the wrap just arrived");
        assert!(!db.holds(&earlier[0].id).await, "the first to arrive went");
        for event in &earlier[1..] {
            assert!(db.holds(&event.id).await);
        }
        Ok(())
    }

    /// Authors with many events (found by a scan of ids) and authors with one (found
    /// through their own set) go in the order they arrived, and sled keeps exactly what the
    /// index holds.
    #[tokio::test]
    async fn prolific_and_one_time_authors_are_evicted_alike_by_arrival(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let bound = 64;
        let db = SledEventStore::open(dir.path(), &store, bound, None, Exempt::default()).await?;
        let to = Keys::generate().public_key();
        let flooder = Keys::generate();
        let mut arrived = Vec::new();
        // The flooder's events are found by scans, the others' through their authors; its dates run backwards, so that an order by
        // date could not pass for the order of arrival.
        for n in 0..200u64 {
            let event = if n % 3 == 0 {
                dm(&Keys::generate(), to, 10_000 + n)?
            } else {
                dm(&flooder, to, 10_000 - n)?
            };
            assert!(db.save_event(&event).await?.is_success());
            arrived.push(event.id);
            let held = db.len().await;
            assert!(held <= bound, "{held} held past the bound of {bound}");
            // Eviction takes the oldest to arrive, so what is held is the latest `held`.
            let first_kept = arrived.len() - held;
            for (at, id) in arrived.iter().enumerate() {
                let kept = at >= first_kept;
                db.assert_kept(id, kept).await;
            }
        }
        assert_eq!(db.stored_len().await, db.len().await);
        Ok(())
    }

    /// Eviction takes the event it means and nothing else, whether it finds it through its
    /// author (an author's only event) or by a scan (an author with two), even next to
    /// events of the same second.
    #[tokio::test]
    async fn eviction_takes_only_the_event_it_means() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _store, db) = bounded(4).await?;
        let to = Keys::generate().public_key();
        let twice = Keys::generate();
        let sole = dm(&Keys::generate(), to, 500)?;
        let first = dm(&twice, to, 500)?;
        let twin = EventBuilder::new(Kind::EncryptedDirectMessage, "twin")
            .tag(Tag::public_key(to))
            .custom_created_at(Timestamp::from(500))
            .sign_with_keys(&twice)?;
        let neighbour = dm(&Keys::generate(), to, 500)?;
        for event in [&sole, &first, &twin, &neighbour] {
            assert!(db.save_event(event).await?.is_success());
        }
        let late = [
            dm(&Keys::generate(), to, 600)?,
            dm(&Keys::generate(), to, 601)?,
        ];
        for event in &late {
            assert!(db.save_event(event).await?.is_success());
        }
        for (event, kept) in [
            (&sole, false),
            (&first, false),
            (&twin, true),
            (&neighbour, true),
            (&late[0], true),
            (&late[1], true),
        ] {
            db.assert_kept(&event.id, kept).await;
        }
        assert_eq!(db.others().len(), 4);
        Ok(())
    }

    /// A retention pass removes exactly the handled events, whether each is its author's only
    /// one (found through its author) or not (found by a scan), even next to an unhandled
    /// event of the same author and second.
    #[tokio::test]
    async fn forgetting_takes_exactly_the_handled_events_of_any_author(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _store, db) = bounded(1_000).await?;
        let soko = Keys::generate().public_key();
        let chatty = Keys::generate();
        let mut all = Vec::new();
        // Two a second: each handled one has an unhandled twin or is one.
        for n in 0..12u64 {
            all.push(
                EventBuilder::new(Kind::EncryptedDirectMessage, n.to_string())
                    .tag(Tag::public_key(soko))
                    .custom_created_at(Timestamp::from(1_000 + n / 2))
                    .sign_with_keys(&chatty)?,
            );
        }
        for n in 0..10 {
            all.push(dm(&Keys::generate(), soko, 1_000 + n)?);
        }
        for event in &all {
            assert!(db.save_event(event).await?.is_success());
        }
        let handled: HashSet<EventId> = all.iter().step_by(3).map(|event| event.id).collect();
        let dms = [Kind::EncryptedDirectMessage];
        let forgotten = db
            .forget(&dms, &[soko], Timestamp::from(9_999), usize::MAX, |id| {
                handled.contains(id)
            })
            .await?;
        assert_eq!(forgotten, handled.len());
        for event in &all {
            let kept = !handled.contains(&event.id);
            db.assert_kept(&event.id, kept).await;
        }
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
        let db = SledEventStore::open(dir.path(), &store, 3, None, ours.clone()).await?;
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
        for event in &junk[..4] {
            assert!(!db.stored(&event.id).await);
        }
        // Reopening applies the same rule, here to a smaller bound.
        drop(db);
        let db = SledEventStore::open(dir.path(), &store, 2, None, ours).await?;
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
        assert_eq!(
            db.stored_len().await,
            own.len() + bound,
            "sled follows the index"
        );
        assert_eq!(db.others().len(), bound);
        for event in newest {
            assert!(db.holds(&event.id).await);
        }
        assert_eq!(db.count(Filter::new().author(squatter)).await?, 1);
        Ok(())
    }

    #[cfg(test)]
    impl SledEventStore {
        async fn stored_len(&self) -> usize {
            self.current.read().await.events.len()
        }

        /// Asserts that the index holds `id` and sled stores it, or neither.
        async fn assert_kept(&self, id: &EventId, kept: bool) {
            assert_eq!(self.holds(id).await, kept, "held in the index: {id}");
            assert_eq!(self.stored(id).await, kept, "stored in sled: {id}");
        }

        async fn stored(&self, id: &EventId) -> bool {
            matches!(
                self.current.read().await.events.get(id.as_bytes()),
                Ok(Some(_))
            )
        }

        async fn gen(&self) -> u64 {
            self.current.read().await.gen
        }
    }

    #[tokio::test]
    async fn events_of_an_older_soko_move_to_their_own_store_once(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let to = Keys::generate().public_key();
        let events: Vec<Event> = (1..=5)
            .map(|at| dm(&Keys::generate(), to, at * 100))
            .collect::<Result<_, _>>()?;
        {
            // What an older soko left: the events in its main Db, next to its other trees.
            let store = Store::open(dir.path())?;
            let old: crate::store::Typed<String> = store.tree(trees::RELAY_EVENTS)?;
            for event in &events {
                old.insert(event.id.as_bytes(), &event.as_json())?;
            }
            store.tree::<u32>(trees::META)?.insert(b"k", &7)?;
            store.flush().await?;
        }
        for round in 0..2 {
            let store = Store::open(dir.path())?;
            let db = SledEventStore::open(dir.path(), &store, 100, None, Exempt::default()).await?;
            for event in &events {
                assert!(db.holds(&event.id).await, "round {round}");
                assert!(db.stored(&event.id).await, "round {round}");
            }
            assert_eq!(db.stored_len().await, events.len());
            assert!(
                !store
                    .db()
                    .tree_names()
                    .iter()
                    .any(|n| n == trees::RELAY_EVENTS.as_bytes()),
                "the old tree is dropped"
            );
            assert_eq!(store.tree::<u32>(trees::META)?.get(b"k")?, Some(7));
            assert!(dir.path().join(EVENTS_DIR).join("gen-1/sled").is_dir());
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compaction_keeps_the_writes_that_arrive_during_its_copy(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (dir, store, db) = bounded(10_000).await?;
        let to = Keys::generate().public_key();
        let big = |at: u64| {
            EventBuilder::new(Kind::EncryptedDirectMessage, "x".repeat(20_000))
                .tag(Tag::public_key(to))
                .custom_created_at(Timestamp::from(at))
                .sign_with_keys(&Keys::generate())
        };
        let mut kept = Vec::new();
        for at in 1..=300 {
            kept.push(big(at)?);
        }
        for event in &kept {
            db.save_event(event).await?;
        }
        // Half of them deleted: these must stay deleted through the copy.
        let gone: Vec<EventId> = kept.drain(..150).map(|e| e.id).collect();
        db.expire(
            &[Kind::EncryptedDirectMessage],
            Timestamp::from(150),
            usize::MAX,
        )
        .await?;
        let live = db.live_bytes();
        assert!(live > 150 * 20_000 && live < 150 * 21_000, "{live}");

        let writer = {
            let db = db.clone();
            let late: Vec<Event> = (1_000..1_200).map(big).collect::<Result<_, _>>()?;
            tokio::spawn(async move {
                for event in &late {
                    db.save_event(event).await?;
                }
                Ok::<_, DatabaseError>(late)
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let done = db.compact().await?;
        let late = writer.await??;
        assert_eq!(db.gen().await, 2);
        assert!(done.copied >= 150, "{done:?}");
        kept.extend(late);
        let check = |db: SledEventStore, kept: Vec<EventId>, gone: Vec<EventId>| async move {
            for id in &kept {
                assert!(db.stored(id).await);
                assert!(db.holds(id).await);
            }
            for id in &gone {
                assert!(!db.stored(id).await);
            }
            assert_eq!(db.stored_len().await, kept.len());
        };
        let kept: Vec<EventId> = kept.iter().map(|e| e.id).collect();
        check(db, kept.clone(), gone.clone()).await;
        let db = SledEventStore::open(dir.path(), &store, 10_000, None, Exempt::default()).await?;
        check(db, kept, gone).await;
        let root = dir.path().join(EVENTS_DIR);
        assert!(!gen_dir(&root, 1).exists(), "the old generation is removed");
        assert_eq!(generations::read_pointer(&root)?, Some(2));
        Ok(())
    }

    #[tokio::test]
    async fn a_store_grown_past_its_events_is_compacted_at_open(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let to = Keys::generate().public_key();
        let rule = CompactRule {
            floor: 4 << 20,
            factor: 3,
        };
        let open =
            || SledEventStore::open_with(dir.path(), &store, (20, None), Exempt::default(), rule);
        {
            let db = open().await?;
            // Junk past the floor, nearly all of it evicted by the bound of 20.
            for at in 0..300u64 {
                let junk = EventBuilder::new(Kind::EncryptedDirectMessage, "j".repeat(60_000))
                    .tag(Tag::public_key(to))
                    .custom_created_at(Timestamp::from(1_000 + at))
                    .sign_with_keys(&Keys::generate())?;
                db.save_event(&junk).await?;
            }
            let (disk, live) = (db.disk_bytes().await, db.live_bytes());
            assert!(
                rule.due(disk, live, 0),
                "{disk} bytes on disk for {live} live"
            );
        }
        let db = open().await?;
        assert_eq!(db.gen().await, 2, "compacted at open");
        let (disk, live) = (db.disk_bytes().await, db.live_bytes());
        assert!(
            !rule.due(disk, live, 0),
            "{disk} bytes on disk for {live} live"
        );
        assert_eq!(db.len().await, 20);
        assert_eq!(db.stored_len().await, 20);
        Ok(())
    }

    #[tokio::test]
    async fn a_rewritten_store_is_not_due_again() -> Result<(), Box<dyn std::error::Error>> {
        // soko's rule, on events of a gift wrap's size: live bytes just past where the
        // factor rather than the floor decides. Rewritten once, the store must not be due
        // again at the next start, or every start (and janitor pass) would copy it whole.
        let rule = CompactRule::DEFAULT;
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let to = Keys::generate().public_key();
        let wrap = |at: u64, bytes: usize| {
            EventBuilder::new(Kind::GiftWrap, "w".repeat(bytes))
                .tag(Tag::public_key(to))
                .custom_created_at(Timestamp::from(at))
                .sign_with_keys(&Keys::generate())
        };
        let target = rule.floor / rule.factor + (64 << 10);
        let kept = {
            let mut events = Vec::new();
            let mut bytes = 0;
            while bytes < target {
                let event = wrap(1_000_000 + events.len() as u64, 1_200)?;
                bytes += codec::encode(&event).len() as u64 + 32;
                events.push(event);
            }
            events
        };
        let open = || {
            SledEventStore::open_with(
                dir.path(),
                &store,
                (2 * kept.len(), None),
                Exempt::default(),
                rule,
            )
        };
        {
            let db = open().await?;
            // Older wraps, then retention deletes them.
            for at in 0..300u64 {
                db.save_event(&wrap(1_000 + at, 60_000)?).await?;
            }
            for event in &kept {
                db.save_event(event).await?;
            }
            let expired = db
                .expire(&[Kind::GiftWrap], Timestamp::from(2_000), usize::MAX)
                .await?;
            assert_eq!(expired, 300);
            assert_eq!(db.len().await, kept.len());
        }
        let db = open().await?;
        assert_eq!(db.gen().await, 2, "compacted at open");
        let (disk, live) = (db.disk_bytes().await, db.live_bytes());
        assert!(live > rule.floor / rule.factor, "{live}");
        assert!(
            !rule.due(disk, live, 0),
            "{disk} bytes on disk for {live} live"
        );
        drop(db);
        let db = open().await?;
        assert_eq!(db.gen().await, 2, "not compacted again");
        assert_eq!(db.stored_len().await, kept.len());
        Ok(())
    }
}
