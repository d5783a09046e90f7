//! Where the embedded relay's events live on disk, and how a compacted copy replaces them.
//!
//! sled 0.34 does not give back the space of deleted values, and the relay deletes an event
//! for nearly every one it stores (retention, the bound). So the events have a sled Db of
//! their own, apart from soko's state, and that Db is rewritten into a fresh one when its
//! files grow well past the data they hold ([`CompactRule`]).
//!
//! Layout under `<data_dir>/relay-events/`:
//! - `gen-<n>/`: one sled Db (a [`crate::store::Store`] directory) per generation;
//! - `CURRENT`: the number of the generation in use, replaced by an atomic rename.
//!
//! A compaction builds `gen-<n+1>` completely (copied, flushed, directories synced) before
//! it writes `CURRENT`, so the rename is the commit point: a crash before it leaves the old
//! generation named and complete, a crash after it the new one. Whatever `CURRENT` does not
//! name is a leftover of an unfinished or finished compaction and is deleted on open
//! ([`discard_others`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The pointer file.
const POINTER: &str = "CURRENT";
/// The pointer being written, renamed over [`POINTER`] once synced.
const POINTER_TMP: &str = "CURRENT.tmp";

/// Below this many bytes on disk the events Db is never rewritten: a small store costs
/// little, and its fresh copy would be mostly sled's fixed cost. Well under the footprint
/// goal of issue 16 (40 MiB per 10k orders), so that the wraps and DMs of a few thousand
/// orders are given back once retention deleted them; high enough that a rewritten store
/// is not due again (a copy of `floor / factor` bytes of events takes under 8 MiB, see
/// `events_db`'s `a_rewritten_store_is_not_due_again`).
pub const COMPACT_FLOOR_BYTES: u64 = 8 << 20;

/// The events Db is rewritten once its files take this many times the bytes of the events
/// it holds. A fresh copy takes about 2 to 2.5 times the live bytes (sled's headers and
/// partly filled segments), so 3 leaves room to grow into between rewrites: at the default
/// write budget a full store is rewritten at most about every half hour of sustained flood,
/// and disk stays under about 3 × live (4 × during a rewrite).
pub const COMPACT_FACTOR: u64 = 3;

/// When the events Db is rewritten: [`CompactRule::DEFAULT`] (the constants above) in soko,
/// smaller in unit tests so that they need not write as much.
#[derive(Debug, Clone, Copy)]
pub struct CompactRule {
    /// Bytes on disk below which it is never rewritten.
    pub floor: u64,
    /// Rewritten past this many times its live bytes.
    pub factor: u64,
}

impl CompactRule {
    /// soko's rule.
    pub const DEFAULT: Self = Self {
        floor: COMPACT_FLOOR_BYTES,
        factor: COMPACT_FACTOR,
    };

    /// True when a Db of `disk` bytes holding `live` bytes of events should be rewritten,
    /// `rewritten_to` bytes on disk after this process last rewrote it (0 if it has not).
    ///
    /// The files must also have grown by a floor's worth since that rewrite: events much
    /// smaller than usual (sled's headers then weigh more) could leave a copy that is due
    /// again at once, and the janitor would rewrite the whole store at every pass.
    pub fn due(&self, disk: u64, live: u64, rewritten_to: u64) -> bool {
        disk > self.floor
            && disk > live.saturating_mul(self.factor)
            && disk > rewritten_to.saturating_add(self.floor)
    }
}

/// The directory of generation `n`.
pub fn gen_dir(root: &Path, n: u64) -> PathBuf {
    root.join(format!("gen-{n}"))
}

/// The generation `CURRENT` names, if there is one.
pub fn read_pointer(root: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::read_to_string(root.join(POINTER)) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: not a generation number: {text:?}",
                    root.join(POINTER).display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes generation `n` the one in use: the pointer is written to a temporary file, synced,
/// renamed over `CURRENT` and the directory synced. An error before the rename leaves the
/// old pointer; the rename itself is atomic. A failure to sync the directory after the
/// rename is reported as `Ok(false)`: the new pointer is in place for this run, but a power
/// loss might still bring back the old one, which is complete too.
pub fn commit(root: &Path, n: u64) -> std::io::Result<bool> {
    let tmp = root.join(POINTER_TMP);
    {
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(file, "{n}")?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, root.join(POINTER))?;
    Ok(sync_dir(root).is_ok())
}

/// Deletes everything under `root` but the pointer and generation `keep`'s directory: the
/// half-made copies of interrupted compactions, the old generations of finished ones, and a
/// pointer left unrenamed. Returns how many entries went.
pub fn discard_others(root: &Path, keep: Option<u64>) -> std::io::Result<usize> {
    let keep_dir = keep.map(|n| gen_dir(root, n));
    let mut removed = 0;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == POINTER || Some(&path) == keep_dir.as_ref() {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        removed += 1;
    }
    if removed > 0 {
        sync_dir(root)?;
    }
    Ok(removed)
}

/// fsyncs `dir` and every directory under it, so that the files sled created (and synced)
/// in them are reachable after a crash.
pub fn sync_dirs(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_dirs(&entry.path())?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_waits_for_the_floor_and_the_factor() {
        let mib = 1 << 20;
        let should_compact = |disk, live| CompactRule::DEFAULT.due(disk, live, 0);
        assert!(!should_compact(8 * mib, 1), "at the floor");
        assert!(!should_compact(200 * mib, 100 * mib), "under 3 × live");
        assert!(!should_compact(300 * mib, 100 * mib), "at 3 × live");
        assert!(should_compact(301 * mib, 100 * mib));
        assert!(should_compact(8 * mib + 1, 0), "everything deleted");
        assert!(!should_compact(u64::MAX, u64::MAX));
    }

    #[test]
    fn a_rewrite_waits_for_a_floor_of_growth_since_the_last() {
        let mib = 1 << 20;
        let rule = CompactRule::DEFAULT;
        // A copy that came out at 3.5 × its live bytes is not rewritten again at once...
        assert!(!rule.due(35 * mib, 10 * mib, 35 * mib));
        assert!(!rule.due(43 * mib, 10 * mib, 35 * mib));
        // ...only once the files grew by the floor, like a store never rewritten.
        assert!(rule.due(43 * mib + 1, 10 * mib, 35 * mib));
        assert!(rule.due(35 * mib, 10 * mib, 0));
    }

    #[test]
    fn the_pointer_commits_and_leftovers_are_discarded() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let root = root.path();
        assert_eq!(read_pointer(root)?, None);
        for n in [1, 2, 3] {
            std::fs::create_dir_all(gen_dir(root, n).join("sled"))?;
            std::fs::write(gen_dir(root, n).join("sled/db"), b"x")?;
        }
        assert!(commit(root, 2)?);
        assert_eq!(read_pointer(root)?, Some(2));
        // A pointer written but not renamed: the crash came before the commit.
        std::fs::write(root.join(POINTER_TMP), b"3\n")?;
        assert_eq!(read_pointer(root)?, Some(2));
        assert_eq!(discard_others(root, Some(2))?, 3);
        let mut left: Vec<String> = std::fs::read_dir(root)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        left.sort();
        assert_eq!(left, ["CURRENT", "gen-2"]);
        assert!(crate::util::size_on_disk(root) > 0);
        assert_eq!(discard_others(root, Some(2))?, 0);
        Ok(())
    }

    #[test]
    fn a_garbled_pointer_is_an_error_not_an_empty_store() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        std::fs::write(root.path().join(POINTER), b"gen-x")?;
        assert_eq!(
            read_pointer(root.path()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::InvalidData)
        );
        Ok(())
    }
}
