//! The relay's journal: what lets an event be acknowledged without waiting for the disk,
//! yet survive a kill -9.
//!
//! sled keeps writes in its own buffers for up to half a second, so the relay used to flush
//! before every `OK`. A flush seals sled's buffer, hands it to sled's IO thread and waits for
//! `sync_file_range`: about a millisecond of waiting per group of events here, which made
//! persistence cost the relay a third of its publishing rate. Instead, once an event is in
//! sled, its bytes are appended to a plain file in one `write`: what the kernel holds
//! outlives the process. A checkpoint ([`super::SledEventStore::checkpoint`]) starts a new
//! file, flushes sled, and deletes the files that flush covered; the files a crash leaves are
//! written into sled again on the next open, before anything is loaded.
//!
//! What this gives up is the power cut (or kernel crash) in the second before a checkpoint:
//! the same trade as SQLite's WAL at `synchronous=NORMAL`, which nostr relays commonly run.
//!
//! A record is `[len: u32 LE][crc32 of the rest: u32 LE][event id: 32 bytes][stored bytes]`;
//! a removal has no stored bytes.
//! A file is read up to its first record that is cut short or fails its checksum: a write
//! the crash interrupted, or what a power cut left behind.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::util::lock;

/// The journal's directory, under the data dir (beside the events' generations, which
/// compaction replaces whole).
pub const JOURNAL_DIR: &str = "relay-journal";

/// Record header: length, then checksum.
const HEADER: usize = 8;

/// A record no stored event comes near (events are bounded far below it): a length past it
/// is a torn header.
const MOST_RECORD_BYTES: usize = 16 << 20;

/// The open file and what has gone into it.
#[derive(Debug)]
struct Active {
    file: File,
    seq: u64,
    records: u64,
}

/// Appends records to the newest file; see the module doc.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    active: Mutex<Active>,
}

/// One record: an event id and its stored bytes (none for a removal).
pub type Record = ([u8; 32], Vec<u8>);

/// What the files a crash left hold, oldest first.
#[derive(Debug, Default)]
pub struct Leftover {
    /// Every whole record.
    pub records: Vec<Record>,
    /// Files that ended in a record cut short or corrupt.
    pub torn: usize,
    /// The newest leftover file: everything up to it goes once sled holds the records.
    pub through: Option<u64>,
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.log")
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The journal files under `dir`, oldest first.
fn files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(seq) = seq_of(&path) {
            found.push((seq, path));
        }
    }
    found.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(found)
}

/// The whole records of one file's bytes, and whether it ended in a broken one.
fn records(bytes: &[u8]) -> (Vec<Record>, bool) {
    let mut found = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some((header, body)) = rest.split_first_chunk::<HEADER>() else {
            return (found, true);
        };
        let (len, crc) = header.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if !(32..=MOST_RECORD_BYTES).contains(&len) || body.len() < len {
            return (found, true);
        }
        let (record, after) = body.split_at(len);
        if crc32fast::hash(record) != crc {
            return (found, true);
        }
        let (id, value) = record.split_at(32);
        let mut key = [0u8; 32];
        key.copy_from_slice(id);
        found.push((key, value.to_vec()));
        rest = after;
    }
    (found, false)
}

fn create(dir: &Path, seq: u64) -> std::io::Result<File> {
    File::options()
        .create_new(true)
        .append(true)
        .open(dir.join(file_name(seq)))
}

impl Journal {
    /// Opens the journal under `dir` (creating it), with a fresh file to append to, and
    /// reads what earlier runs left there.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Leftover)> {
        std::fs::create_dir_all(dir)?;
        let mut leftover = Leftover::default();
        for (seq, path) in files(dir)? {
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let (records, torn) = records(&bytes);
            leftover.records.extend(records);
            leftover.torn += usize::from(torn);
            leftover.through = Some(seq);
        }
        let seq = leftover.through.map_or(1, |seq| seq + 1);
        let active = Active {
            file: create(dir, seq)?,
            seq,
            records: 0,
        };
        let journal = Self {
            dir: dir.to_path_buf(),
            active: Mutex::new(active),
        };
        Ok((journal, leftover))
    }

    /// Appends one event's record; once this returns the event survives the process.
    pub fn append(&self, id: &[u8; 32], value: &[u8]) -> std::io::Result<()> {
        let len = 32 + value.len();
        let len_bytes = u32::try_from(len)
            .ok()
            .filter(|_| len <= MOST_RECORD_BYTES)
            .ok_or_else(|| std::io::Error::other("event too large for the journal"))?;
        let mut record = Vec::with_capacity(HEADER + len);
        record.extend_from_slice(&len_bytes.to_le_bytes());
        record.extend_from_slice(&[0; 4]);
        record.extend_from_slice(id);
        record.extend_from_slice(value);
        let crc = crc32fast::hash(&record[HEADER..]);
        record[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        let mut active = lock(&self.active);
        if let Err(e) = active.file.write_all(&record) {
            // A part of the record may be in the file: what follows it there could not be
            // read back, so later records go to a new file.
            let next = active.seq + 1;
            if let Ok(file) = create(&self.dir, next) {
                *active = Active {
                    file,
                    seq: next,
                    records: 0,
                };
            }
            return Err(e);
        }
        active.records += 1;
        Ok(())
    }

    /// Starts a new file, if the current one holds anything; returns the newest file that
    /// may now go, once sled has been flushed.
    pub fn rotate(&self) -> std::io::Result<Option<u64>> {
        let mut active = lock(&self.active);
        if active.records == 0 {
            return Ok(None);
        }
        let next = active.seq + 1;
        let file = create(&self.dir, next)?;
        let sealed = std::mem::replace(
            &mut *active,
            Active {
                file,
                seq: next,
                records: 0,
            },
        );
        Ok(Some(sealed.seq))
    }

    /// Deletes every file up to `seq`: sled holds their records on disk.
    pub fn remove_through(&self, seq: u64) -> std::io::Result<()> {
        for (found, path) in files(&self.dir)? {
            if found <= seq {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn records_survive_a_reopen_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, leftover) = Journal::open(dir.path()).unwrap();
        assert!(leftover.records.is_empty());
        journal.append(&[1; 32], b"first").unwrap();
        let sealed = journal.rotate().unwrap();
        journal.append(&[2; 32], b"second").unwrap();
        drop(journal);

        let (journal, leftover) = Journal::open(dir.path()).unwrap();
        assert_eq!(
            leftover.records,
            vec![([1; 32], b"first".to_vec()), ([2; 32], b"second".to_vec())]
        );
        assert_eq!(leftover.torn, 0);
        assert!(leftover.through > sealed);
        // An empty file has nothing to rotate.
        assert_eq!(journal.rotate().unwrap(), None);
        journal.remove_through(leftover.through.unwrap()).unwrap();
        drop(journal);

        let (_journal, leftover) = Journal::open(dir.path()).unwrap();
        assert!(leftover.records.is_empty());
    }

    #[test]
    fn a_torn_or_corrupt_tail_keeps_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(&[1; 32], b"whole").unwrap();
        journal.append(&[2; 32], b"cut short").unwrap();
        let path = files(dir.path()).unwrap().pop().unwrap().1;
        drop(journal);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (_journal, leftover) = Journal::open(dir.path()).unwrap();
        assert_eq!(leftover.records, vec![([1; 32], b"whole".to_vec())]);
        assert_eq!(leftover.torn, 1);

        // A flipped byte in the middle of a record stops the file there too.
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(&[1; 32], b"whole").unwrap();
        journal.append(&[2; 32], b"flipped").unwrap();
        journal.append(&[3; 32], b"after").unwrap();
        let path = files(dir.path()).unwrap().pop().unwrap().1;
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER + 32 + 5 + HEADER + 32;
        bytes[second] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_journal, leftover) = Journal::open(dir.path()).unwrap();
        assert_eq!(leftover.records, vec![([1; 32], b"whole".to_vec())]);
        assert_eq!(leftover.torn, 1);
    }

    #[test]
    fn junk_lengths_are_torn_records_not_allocations() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(records(&bytes), (vec![], true));
        assert_eq!(records(&[0; 5]), (vec![], true));
        assert_eq!(records(&[]), (vec![], false));
    }
}
