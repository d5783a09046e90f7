//! sled storage: one tree per concern, values serde-encoded behind a version byte.
//!
//! Trees (key → value):
//! - `meta`: setting name → value (`subscription_checkpoint`: unix seconds of the newest DM handled).
//! - `seen`: event id (32 bytes) → [`SeenState`]: persistent dedupe of inbound events.
//! - `outbox`: event id (32 bytes) → signed event JSON waiting for a relay's `OK`.
//! - `replies`: sender pubkey (32 bytes) ‖ request id → the reply sent, so a replayed
//!   command gets the same answer instead of running twice.
//! - `seen/at`: `created_at` (8 bytes, big-endian) ‖ event id → `()`: `seen` in time order,
//!   for pruning.
//! - `seen/pending`: event id → event JSON of an event claimed and not yet finished.
//! - `relay/events`: event id (32 bytes) → event JSON, the embedded relay's store in older
//!   builds; now moved on the first start to a Db of its own (`relay-events/`, see
//!   `relay::SledEventStore`) and dropped from here.
//! - `wallet/{namespace}/{concern}`: one cdk wallet per namespace (see `wallet::SledWalletDatabase`).
//!
//! - an append-only audit trail per domain ([`audit`]).
//!
//! Values start with [`ENCODING_VERSION`] so that a later format can be told apart and
//! migrated instead of being misread.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long [`Store::open`] waits for another instance to release the database.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// First byte of every stored value.
pub const ENCODING_VERSION: u8 = 1;

pub mod audit;
pub mod compact;

/// Tree names, in one place so that two modules cannot collide on one.
pub mod trees {
    /// Settings and checkpoints.
    pub const META: &str = "meta";
    /// Inbound event dedupe.
    pub const SEEN: &str = "seen";
    /// Signed outgoing events not yet acknowledged.
    pub const OUTBOX: &str = "outbox";
    /// Replies by sender and request id.
    pub const REPLIES: &str = "replies";
    /// The embedded relay's events, before they had a Db of their own (read only to move them).
    pub const RELAY_EVENTS: &str = "relay/events";
    /// Inbound event ids by `created_at`, to prune `seen`.
    pub const SEEN_AT: &str = "seen/at";
    /// Inbound events claimed and not finished, kept whole to be handled again on start.
    pub const PENDING: &str = "seen/pending";
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled itself failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// Another process (or a still-stopping instance) holds the database.
    #[error("the data dir {0} is in use by another soko")]
    Locked(String),
    /// A blocking storage task did not finish.
    #[error("storage task: {0}")]
    Task(String),
    /// A value could not be encoded or decoded.
    #[error("{tree}: bad value: {reason}")]
    Codec {
        /// Tree the value belongs to.
        tree: String,
        /// What went wrong.
        reason: String,
    },
}

/// The opened database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    syncs: Arc<GroupCommit>,
}

/// The most turns [`Store::sync`] gives other tasks to join a flush before it starts.
const GATHER_TURNS: usize = 4;

/// Tickets for [`Store::sync`]: a caller takes one after its writes, and any flush that
/// starts after the ticket was issued covers them, so callers arriving while a flush runs
/// share the next one instead of queueing an fsync each.
#[derive(Debug, Default)]
struct GroupCommit {
    issued: AtomicU64,
    covered: AtomicU64,
    flushes: AtomicU64,
    flushing: tokio::sync::Mutex<()>,
}

impl Store {
    /// Opens (or creates) the database under `dir/sled`.
    ///
    /// sled holds an exclusive file lock while any handle lives. A soko restarting in the
    /// same process (tests, or a supervisor) may still have tasks of the old instance
    /// finishing, so a held lock is retried for a few seconds before it is reported.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            let opened = sled::Config::new()
                .path(dir.join("sled"))
                .mode(sled::Mode::HighThroughput)
                .open();
            match opened {
                Ok(db) => {
                    return Ok(Self {
                        db,
                        syncs: Arc::default(),
                    })
                }
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock") =>
                {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked(dir.display().to_string()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A store over a Db opened elsewhere (a test's temporary one). Its syncs are grouped
    /// only among the handles cloned from it.
    pub fn from_db(db: sled::Db) -> Self {
        Self {
            db,
            syncs: Arc::default(),
        }
    }

    /// A typed view of one tree.
    pub fn tree<V>(&self, name: &str) -> Result<Typed<V>, StoreError> {
        Ok(Typed {
            tree: self.db.open_tree(name)?,
            _value: PhantomData,
        })
    }

    /// The underlying sled database, for modules that manage their own trees (the wallet).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Writes everything to disk. Blocking `flush` on a blocking thread: sled 0.34's
    /// `flush_async` can deadlock when flushes overlap (sled issue #1308), and the wallet
    /// store flushes on its own schedule.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(())
    }

    /// Returns once everything this task wrote before the call is on disk. Concurrent
    /// callers share flushes (group commit): under load one fsync serves many replies.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.sync_to(self.ticket()).await
    }

    /// A ticket for everything this task wrote so far: [`Self::sync_to`] waits for a flush
    /// that covers it.
    fn ticket(&self) -> u64 {
        self.syncs.issued.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Returns once the writes made before `ticket` was taken are on disk.
    async fn sync_to(&self, ticket: u64) -> Result<(), StoreError> {
        let syncs = &self.syncs;
        let _turn = syncs.flushing.lock().await;
        if syncs.covered.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Let the writers that are ready to run write and take their tickets first, for
        // as long as new ones keep coming (a few turns at most), so that this flush covers
        // them too. Each flush costs far more than its fsync: sled hands the write to its
        // IO threads and wakes all of them, and on two cores the DM benchmark made 2.4
        // flushes and 26 context switches per round trip. Without other work ready, a turn
        // costs nothing.
        let mut seen = syncs.issued.load(Ordering::SeqCst);
        for _ in 0..GATHER_TURNS {
            tokio::task::yield_now().await;
            let now = syncs.issued.load(Ordering::SeqCst);
            if now == seen {
                break;
            }
            seen = now;
        }
        // Every ticket issued up to now belongs to writes made before this flush starts.
        let covers = syncs.issued.load(Ordering::SeqCst);
        self.flush().await?;
        syncs.flushes.fetch_add(1, Ordering::Relaxed);
        syncs.covered.store(covers, Ordering::SeqCst);
        Ok(())
    }

    /// How many flushes [`Store::sync`] has made: fewer than its callers under load.
    pub fn sync_flushes(&self) -> u64 {
        self.syncs.flushes.load(Ordering::Relaxed)
    }
}

/// Makes `dir` soko's private data dir: created if missing, mode 0700, and every file and
/// directory already in it no more open than 0600 / 0700 (a data dir made by an older
/// build, or copied with looser modes, is tightened; the count is returned to be logged).
/// The process umask becomes 0077 as well, since sled, SQLite (`-wal`, `-shm`) and sled's
/// later segment and snapshot files are created by libraries that take the umask as it is:
/// their files then start private whatever the umask soko was started with. The umask is
/// process-wide; a daemon holding ecash has no file that others should read.
pub fn make_private_dir(dir: &Path) -> std::io::Result<usize> {
    use rustix::fs::Mode;
    rustix::process::umask(Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(dir)?;
    tighten(dir, true)
}

fn tighten(path: &Path, is_dir: bool) -> std::io::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode() & 0o7777;
    let allowed = if is_dir { 0o700 } else { 0o600 };
    let mut changed = 0;
    if mode & !allowed != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & allowed))?;
        changed += 1;
    }
    if is_dir {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            // Links are left alone: following one could change a file outside the data dir.
            if kind.is_dir() || kind.is_file() {
                match tighten(&entry.path(), kind.is_dir()) {
                    Ok(n) => changed += n,
                    // Gone between the listing and the look: sled's snapshot files, a
                    // compaction's old generation, removed by a soko still stopping in this
                    // process. Nothing left to tighten.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(changed)
}

/// A tree whose values are all of type `V`.
#[derive(Debug)]
pub struct Typed<V> {
    tree: sled::Tree,
    _value: PhantomData<fn() -> V>,
}

impl<V> Clone for Typed<V> {
    fn clone(&self) -> Self {
        Self {
            tree: self.tree.clone(),
            _value: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> Typed<V> {
    /// The raw tree, for multi-tree transactions.
    pub fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    /// Reads a value.
    pub fn get(&self, key: &[u8]) -> Result<Option<V>, StoreError> {
        self.tree
            .get(key)?
            .map(|bytes| self.decode(&bytes))
            .transpose()
    }

    /// Writes a value.
    pub fn insert(&self, key: &[u8], value: &V) -> Result<(), StoreError> {
        self.tree.insert(key, self.encode(value)?)?;
        Ok(())
    }

    /// Writes a value only if the key is absent; true when this call wrote it.
    pub fn insert_if_absent(&self, key: &[u8], value: &V) -> Result<bool, StoreError> {
        let swapped = self
            .tree
            .compare_and_swap(key, None::<&[u8]>, Some(self.encode(value)?))?;
        Ok(swapped.is_ok())
    }

    /// Removes a value.
    pub fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree.remove(key)?;
        Ok(())
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(sled::IVec, V), StoreError>> + '_ {
        self.tree.iter().map(move |entry| {
            let (key, bytes) = entry?;
            Ok((key, self.decode(&bytes)?))
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Encodes a value the way this tree stores it.
    pub fn encode(&self, value: &V) -> Result<Vec<u8>, StoreError> {
        encode(value).map_err(|reason| self.codec_error(reason))
    }

    /// Decodes a value as this tree stores it.
    pub fn decode(&self, bytes: &[u8]) -> Result<V, StoreError> {
        decode(bytes).map_err(|reason| self.codec_error(reason))
    }

    fn codec_error(&self, reason: String) -> StoreError {
        StoreError::Codec {
            tree: String::from_utf8_lossy(&self.tree.name()).into_owned(),
            reason,
        }
    }
}

/// Encodes a value: version byte, then JSON.
pub fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>, String> {
    let mut out = vec![ENCODING_VERSION];
    serde_json::to_writer(&mut out, value).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, String> {
    match bytes.split_first() {
        Some((&ENCODING_VERSION, body)) => serde_json::from_slice(body).map_err(|e| e.to_string()),
        Some((version, _)) => Err(format!("unknown encoding version {version}")),
        None => Err("empty value".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_released_soon_is_waited_for() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = Store::open(dir.path())?;
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        let second = Store::open(dir.path());
        releaser.join().map_err(|_| "releaser panicked")?;
        assert!(second.is_ok());
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_syncs_share_flushes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let tree: Typed<u32> = store.tree("t")?;
        let mut writers = tokio::task::JoinSet::new();
        let start = Arc::new(tokio::sync::Barrier::new(64));
        for i in 0..64u32 {
            let (store, tree, start) = (store.clone(), tree.clone(), start.clone());
            writers.spawn(async move {
                start.wait().await;
                tree.insert(&i.to_be_bytes(), &i)?;
                store.sync().await
            });
        }
        while let Some(done) = writers.join_next().await {
            done??;
        }
        let flushes = store.sync_flushes();
        assert!((1..64).contains(&flushes), "{flushes} flushes for 64 syncs");
        // A sync after the others still flushes: nothing of it was covered yet.
        tree.insert(b"late", &1)?;
        store.sync().await?;
        assert_eq!(store.sync_flushes(), flushes + 1);
        drop((tree, store));
        let reopened = Store::open(dir.path())?;
        let tree: Typed<u32> = reopened.tree("t")?;
        assert_eq!(tree.get(&7u32.to_be_bytes())?, Some(7));
        Ok(())
    }

    #[test]
    fn a_loose_data_dir_is_tightened() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir()?;
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("sled"))?;
        std::fs::write(dir.join("sled/db"), b"x")?;
        std::fs::write(dir.join("dev-mint.sqlite"), b"x")?;
        for (path, mode) in [
            ("", 0o755),
            ("sled", 0o755),
            ("sled/db", 0o644),
            ("dev-mint.sqlite", 0o640),
        ] {
            std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(mode))?;
        }
        assert_eq!(make_private_dir(&dir)?, 4);
        let mode = |p: &str| std::fs::metadata(dir.join(p)).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode("")?, 0o700);
        assert_eq!(mode("sled")?, 0o700);
        assert_eq!(mode("sled/db")?, 0o600);
        assert_eq!(mode("dev-mint.sqlite")?, 0o600);
        assert_eq!(make_private_dir(&dir)?, 0, "nothing left to tighten");
        Ok(())
    }

    #[test]
    fn values_round_trip_and_unknown_versions_are_refused() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Codec {
            tree: String::new(),
            reason: e.to_string(),
        })?;
        let store = Store::open(dir.path())?;
        let tree: Typed<Vec<u32>> = store.tree("t")?;
        tree.insert(b"k", &vec![1, 2])?;
        assert_eq!(tree.get(b"k")?, Some(vec![1, 2]));
        assert!(!tree.insert_if_absent(b"k", &vec![3])?);
        assert!(tree.insert_if_absent(b"j", &vec![3])?);
        store.db().open_tree("t")?.insert(b"x", &[9u8, b'1'][..])?;
        assert!(matches!(tree.get(b"x"), Err(StoreError::Codec { .. })));
        Ok(())
    }
}
