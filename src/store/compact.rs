//! Issue 16: soko's state Db rewritten into a fresh one at start, once its files have grown
//! well past the data it holds.
//!
//! sled 0.34 gives back little of the space of values it deleted or overwrote: an order is
//! rewritten at each step of its life, and the escrow's footprint pass deletes spent proofs
//! and shrinks finished orders, yet the files only grow. The embedded relay's events solved
//! the same problem with generations of their own ([`crate::relay`]); soko's state is
//! rewritten the same way, but only at start, before anything else opens it: a copy of every
//! tree into `sled.compacting/`, flushed and marked complete, then two renames.
//!
//! Only at start, because the Db's handles (`sled::Db`, `sled::Tree`) are cloned into every
//! service of the daemon: a copy could not be swapped in under them. Between two starts the
//! files keep growing: sled 0.34 moves the live pages out of segments less than half full
//! and truncates free segments at the end of its file, but reuses only part of what the
//! daemon frees. Measured on an order-like load (each order written five times at 1.5 KB,
//! three side entries, then shrunk to 500 bytes; no restart), the files grew by about 4.5 MiB
//! per 1,000 orders, about 9 times the data that stayed, over 24 rounds: what bounds the
//! files of a soko that never restarts is that ratio, not this rewrite.
//!
//! What a start leaves is the data about 2.5 times over (sled's page headers and partly
//! filled segments) plus one preallocated segment (512 KiB).
//!
//! A crash at any step leaves a complete Db to open ([`settle`]):
//! - before the copy is marked complete, `sled/` is untouched and the copy is deleted;
//! - between the two renames, `sled/` is missing and the marked copy is renamed in;
//! - after them, the old files (`sled.old/`) are deleted.

use std::path::Path;

use super::{Store, StoreError};

/// Below this many bytes on disk the state Db is never rewritten: a small Db costs little,
/// and its fresh copy would be mostly sled's fixed cost. Well under the footprint goal of
/// issue 16 (40 MiB per 10k orders), so that a shop of a few thousand orders is rewritten
/// too; high enough that a rewritten Db is not due again at the next start (a copy of
/// `floor / factor` bytes takes about 3 MiB, see `a_rewritten_db_is_not_due_again`).
pub const COMPACT_FLOOR_BYTES: u64 = 4 << 20;

/// It is rewritten once its files take this many times the bytes of its keys and values.
/// A fresh copy takes 2.5 to 5 times them (sled's page headers and partly filled segments,
/// more for small entries): 3,000 orders shrunk to their books came out at about 4.6, so a
/// factor of 4 rewrote that Db again at every start.
pub const COMPACT_FACTOR: u64 = 6;

/// True when a state Db of `disk` bytes on disk holding `live` bytes of keys and values is
/// rewritten at start: past [`COMPACT_FLOOR_BYTES`] and [`COMPACT_FACTOR`] times `live`.
pub fn due(disk: u64, live: u64) -> bool {
    disk > COMPACT_FLOOR_BYTES && disk > live.saturating_mul(COMPACT_FACTOR)
}

/// Ids sled's `generate_id` may have handed out for the copy to catch up with; past it the
/// Db is left as it is (catching up counts one by one).
const MAX_ID_CATCH_UP: u64 = 50_000_000;

/// The copy under way.
const COMPACTING: &str = "sled.compacting";
/// The old files, between the renames and their deletion.
const OLD: &str = "sled.old";
/// Written into the copy once it is complete and flushed.
const COPIED: &str = "COPIED";

/// What a rewrite at start did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Bytes on disk before.
    pub before: u64,
    /// Bytes on disk after.
    pub after: u64,
    /// Keys and values held, in bytes.
    pub live: u64,
}

/// Finishes or undoes a rewrite a crash interrupted, so that `dir/sled` is the one Db.
pub fn settle(dir: &Path) -> std::io::Result<()> {
    let current = dir.join("sled");
    let copy = dir.join(COMPACTING);
    let old = dir.join(OLD);
    if !current.exists() {
        if copy.join(COPIED).exists() {
            std::fs::rename(&copy, &current)?;
        } else if old.exists() {
            std::fs::rename(&old, &current)?;
        }
        sync_dir(dir)?;
    }
    if current.exists() {
        for leftover in [&old, &copy] {
            if leftover.exists() {
                std::fs::remove_dir_all(leftover)?;
            }
        }
        match std::fs::remove_file(current.join(COPIED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl Store {
    /// [`Store::open`], after rewriting the Db into a fresh one when it is [`due`]. Only for a
    /// process's first open of `dir` (soko's start): nothing else may hold the Db meanwhile.
    pub fn open_compacted(dir: &Path) -> Result<(Self, Option<Compacted>), StoreError> {
        settle(dir).map_err(io_error)?;
        let before = crate::util::size_on_disk(&dir.join("sled"));
        let mut compacted = None;
        if before > COMPACT_FLOOR_BYTES {
            let store = Self::open(dir)?;
            let live = live_bytes(&store.db)?;
            if due(before, live) && rewrite(&store.db, dir)? {
                drop(store);
                swap_in(dir).map_err(io_error)?;
                compacted = Some(Compacted {
                    before,
                    after: crate::util::size_on_disk(&dir.join("sled")),
                    live,
                });
            }
        }
        Ok((Self::open(dir)?, compacted))
    }
}

/// Keys and values of every tree, in bytes.
fn live_bytes(db: &sled::Db) -> Result<u64, StoreError> {
    let mut live = 0u64;
    for name in db.tree_names() {
        for entry in db.open_tree(&name)?.iter() {
            let (key, value) = entry?;
            live = live.saturating_add((key.len() + value.len()) as u64);
        }
    }
    Ok(live)
}

/// Copies every tree of `db` (and its id counter) into `dir/sled.compacting`, flushed and
/// marked complete; false when the counter is too far on to catch up.
fn rewrite(db: &sled::Db, dir: &Path) -> Result<bool, StoreError> {
    let copy_dir = dir.join(COMPACTING);
    if copy_dir.exists() {
        std::fs::remove_dir_all(&copy_dir).map_err(io_error)?;
    }
    // One id is spent here; sled hands out ids in order, so the copy only needs to reach it.
    let next_id = db.generate_id()?;
    if next_id > MAX_ID_CATCH_UP {
        tracing::warn!(
            next_id,
            "sled's id counter is too far on to copy; the state Db is not compacted"
        );
        return Ok(false);
    }
    let copy = sled::Config::new()
        .path(&copy_dir)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    for name in db.tree_names() {
        let to = copy.open_tree(&name)?;
        let mut batch = sled::Batch::default();
        let mut bytes = 0usize;
        for entry in db.open_tree(&name)?.iter() {
            let (key, value) = entry?;
            bytes += key.len() + value.len();
            batch.insert(key, value);
            if bytes >= 4 << 20 {
                to.apply_batch(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        to.apply_batch(batch)?;
    }
    while copy.generate_id()? < next_id {}
    copy.flush()?;
    drop(copy);
    std::fs::write(copy_dir.join(COPIED), b"complete\n").map_err(io_error)?;
    sync_dir(&copy_dir).map_err(io_error)?;
    Ok(true)
}

/// The marked copy `dir/sled.compacting` becomes `dir/sled`: the old files move aside, the
/// copy moves in, the old files go.
fn swap_in(dir: &Path) -> std::io::Result<()> {
    let current = dir.join("sled");
    std::fs::rename(&current, dir.join(OLD))?;
    std::fs::rename(dir.join(COMPACTING), &current)?;
    sync_dir(dir)?;
    settle(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Sled(sled::Error::Io(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Res = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_db_mostly_deleted_is_rewritten_small_with_its_data_and_ids() -> Res {
        let dir = tempfile::tempdir()?;
        let (kept, last_id) = {
            let store = Store::open(dir.path())?;
            let tree = store.db().open_tree("t")?;
            let value = vec![7u8; 4096];
            for i in 0u32..8_000 {
                tree.insert(i.to_be_bytes(), value.clone())?;
            }
            for i in 100u32..8_000 {
                tree.remove(i.to_be_bytes())?;
            }
            store.db().insert(b"default", b"tree")?;
            let last_id = store.db().generate_id()?;
            store.db().flush()?;
            (100usize, last_id)
        };
        let (store, compacted) = Store::open_compacted(dir.path())?;
        let compacted = compacted.ok_or("a rewrite")?;
        assert!(compacted.after * 4 < compacted.before, "{compacted:?}");
        assert_eq!(store.db().open_tree("t")?.len(), kept);
        assert_eq!(store.db().get(b"default")?.as_deref(), Some(&b"tree"[..]));
        assert!(store.db().generate_id()? > last_id);
        assert!(!dir.path().join(OLD).exists());
        assert!(!dir.path().join(COMPACTING).exists());
        drop(store);
        // Small now: opened as it is.
        let (_, again) = Store::open_compacted(dir.path())?;
        assert_eq!(again, None);
        Ok(())
    }

    #[test]
    fn the_rule_waits_for_the_floor_and_the_factor() {
        let mib = 1 << 20;
        assert!(!due(4 * mib, 0), "at the floor");
        assert!(due(4 * mib + 1, 0), "past it, everything deleted");
        assert!(!due(60 * mib, 10 * mib), "at 6 × live");
        assert!(due(60 * mib + 1, 10 * mib));
        // A fresh copy of small entries takes about 4.6 × live: not due again.
        assert!(!due(46 * mib, 10 * mib));
        assert!(!due(u64::MAX, u64::MAX));
    }

    /// Fills a Db with `live` bytes of order-sized values that stay and `junk` bytes that
    /// were written and deleted.
    fn filled(dir: &Path, live: u64, junk: u64) -> Res {
        let store = Store::open(dir)?;
        let tree = store.db().open_tree("orders")?;
        let value = vec![5u8; 592];
        let (kept, deleted) = (live / 600, junk / 600);
        for i in 0..kept + deleted {
            tree.insert(i.to_be_bytes(), value.clone())?;
        }
        for i in kept..kept + deleted {
            tree.remove(i.to_be_bytes())?;
        }
        store.db().flush()?;
        Ok(())
    }

    #[test]
    fn a_small_db_is_left_as_it_is() -> Res {
        // A shop's first days: some orders, some deleted, files under the floor.
        let dir = tempfile::tempdir()?;
        filled(dir.path(), 100 << 10, 256 << 10)?;
        let before = crate::util::size_on_disk(&dir.path().join("sled"));
        assert!(before <= COMPACT_FLOOR_BYTES, "{before}");
        let (_, compacted) = Store::open_compacted(dir.path())?;
        assert_eq!(compacted, None);
        Ok(())
    }

    #[test]
    fn a_rewritten_db_is_not_due_again() -> Res {
        // Live data just past where the factor rather than the floor decides, and well
        // past it: once rewritten, the next starts open the copy as it is, or every start
        // would copy the whole Db again.
        for live in [COMPACT_FLOOR_BYTES / COMPACT_FACTOR + (64 << 10), 3 << 20] {
            let dir = tempfile::tempdir()?;
            filled(dir.path(), live, 16 << 20)?;
            let (store, compacted) = Store::open_compacted(dir.path())?;
            let compacted = compacted.ok_or("a rewrite")?;
            assert!(!due(compacted.after, compacted.live), "{compacted:?}");
            assert_eq!(store.db().open_tree("orders")?.len() as u64, live / 600);
            drop(store);
            let (_, again) = Store::open_compacted(dir.path())?;
            assert_eq!(again, None, "{compacted:?}");
        }
        Ok(())
    }

    #[test]
    fn a_rewrite_cut_short_leaves_one_complete_db() -> Res {
        let make = |path: &Path, mark: &[u8]| -> Res {
            std::fs::create_dir_all(path)?;
            std::fs::write(path.join("db"), mark)?;
            Ok(())
        };
        let read = |dir: &Path| std::fs::read(dir.join("sled/db"));
        // A copy not marked complete: the old Db stays.
        let dir = tempfile::tempdir()?;
        make(&dir.path().join("sled"), b"old")?;
        make(&dir.path().join(COMPACTING), b"half")?;
        settle(dir.path())?;
        assert_eq!(read(dir.path())?, b"old");
        assert!(!dir.path().join(COMPACTING).exists());
        // Between the renames: the marked copy moves in, the old files go.
        let dir = tempfile::tempdir()?;
        make(&dir.path().join(OLD), b"old")?;
        make(&dir.path().join(COMPACTING), b"new")?;
        std::fs::write(dir.path().join(COMPACTING).join(COPIED), b"")?;
        settle(dir.path())?;
        assert_eq!(read(dir.path())?, b"new");
        assert!(!dir.path().join(OLD).exists());
        assert!(!dir.path().join("sled").join(COPIED).exists());
        // Moved aside, no complete copy: the old Db comes back.
        let dir = tempfile::tempdir()?;
        make(&dir.path().join(OLD), b"old")?;
        settle(dir.path())?;
        assert_eq!(read(dir.path())?, b"old");
        Ok(())
    }
}
