//! An append-only audit trail of admins' actions (dispute resolutions and the like), one
//! sled tree per domain: the exchange's `exchange/audit`, the escrow's `escrow/audit`. It
//! lives in the foundation so both domains keep theirs the same way without naming each
//! other.
//!
//! Keys are 8-byte big-endian sequence numbers from 1, without gaps; the next number is kept
//! under the key `next` of the same tree and taken in the same sled transaction as the
//! entry it numbers. So entries are visible in their order (a reader paging with
//! [`Audit::since`] never skips one that commits later with a smaller number) and an
//! aborted transaction leaves no gap. There is no API to change or remove an entry.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::store::{self, Store, StoreError};

/// The name codec errors give the trail.
const TREE: &str = "audit";

/// The key of the next sequence number (not 8 bytes long, so never an entry's key).
const NEXT: &[u8] = b"next";

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix seconds, on the services' clock.
    pub at: u64,
    /// The admin's public key, hex.
    pub admin: String,
    /// What was done, e.g. `resolve`.
    pub action: String,
    /// The offer (or order) acted on.
    pub offer: String,
    /// The decision and its amounts, in words.
    pub detail: String,
}

/// The trail. A clone appends to the same one.
#[derive(Debug, Clone)]
pub struct Audit {
    tree: sled::Tree,
}

impl Audit {
    /// Opens the trail kept in the sled tree `tree`.
    pub fn open(store: &Store, tree: &str) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.db().open_tree(tree)?,
        })
    }

    /// Appends an entry; returns its sequence number.
    pub fn append(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        self.tree
            .transaction(|tx| Self::append_in::<StoreError>(tx, entry))
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
            })
    }

    /// Appends an entry inside a caller's sled transaction over [`Audit::raw`] (and its own
    /// trees), so the action and its record commit together; returns its sequence number.
    pub fn append_in<E: From<StoreError>>(
        tx: &TransactionalTree,
        entry: &AuditEntry,
    ) -> Result<u64, ConflictableTransactionError<E>> {
        let value =
            Self::encode(entry).map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
        let next = match tx.get(NEXT)? {
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
                    ConflictableTransactionError::Abort(E::from(codec("a bad sequence number")))
                })?;
                u64::from_be_bytes(bytes)
            }
            None => 1,
        };
        let after = next
            .checked_add(1)
            .ok_or_else(|| ConflictableTransactionError::Abort(E::from(codec("full"))))?;
        tx.insert(NEXT, &after.to_be_bytes())?;
        tx.insert(&next.to_be_bytes(), value)?;
        Ok(next)
    }

    /// The tree, for a caller's transaction across trees: append with [`Audit::append_in`]
    /// (a plain insert would bypass the numbering).
    pub fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    /// An entry as the trail stores it.
    pub fn encode(entry: &AuditEntry) -> Result<Vec<u8>, StoreError> {
        store::encode(entry).map_err(codec)
    }

    /// Up to `limit` entries numbered after `after`, oldest first (`after` 0: from the
    /// start).
    pub fn since(&self, after: u64, limit: usize) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut entries = Vec::new();
        for item in self.tree.range(first.to_be_bytes()..) {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let Ok(seq) = <[u8; 8]>::try_from(key.as_ref()) else {
                continue;
            };
            entries.push((
                u64::from_be_bytes(seq),
                store::decode(&value).map_err(codec)?,
            ));
        }
        Ok(entries)
    }
}

fn codec(reason: impl Into<String>) -> StoreError {
    StoreError::Codec {
        tree: TREE.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sled::Transactional;

    fn entry(n: u64) -> AuditEntry {
        AuditEntry {
            at: 1_800_000_000 + n,
            admin: "ab".repeat(32),
            action: "resolve".to_owned(),
            offer: format!("offer-{n}"),
            detail: "TAKER_WINS: escrow 50000 sat and both bonds to the taker".to_owned(),
        }
    }

    #[test]
    fn entries_read_back_in_order_after_a_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let store = Store::open(dir.path())?;
            let audit = Audit::open(&store, "exchange/audit")?;
            assert!(audit.since(0, 10)?.is_empty());
            for n in 1..=3 {
                assert_eq!(audit.append(&entry(n))?, n);
            }
            store.db().flush()?;
        }
        let store = Store::open(dir.path())?;
        let audit = Audit::open(&store, "exchange/audit")?;
        let all = audit.since(0, 10)?;
        assert_eq!(all, (1..=3).map(|n| (n, entry(n))).collect::<Vec<_>>());
        assert_eq!(audit.since(1, 1)?, vec![(2, entry(2))]);
        assert!(audit.since(3, 10)?.is_empty());
        assert!(audit.since(u64::MAX, 10)?.is_empty());
        // The numbering goes on where it stopped.
        assert_eq!(audit.append(&entry(4))?, 4);
        Ok(())
    }

    #[test]
    fn concurrent_appends_are_numbered_without_gaps() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let audit = Audit::open(&store, "exchange/audit")?;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let audit = audit.clone();
                std::thread::spawn(move || {
                    (0..25)
                        .map(|n| audit.append(&entry(t * 100 + n)))
                        .collect::<Result<Vec<u64>, _>>()
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for thread in threads {
            seqs.extend(thread.join().map_err(|_| "appender panicked")??);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
        assert_eq!(audit.since(0, 1_000)?.len(), 100);
        Ok(())
    }

    #[test]
    fn an_entry_commits_or_aborts_with_the_callers_transaction(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let audit = Audit::open(&store, "exchange/audit")?;
        let offers = store.db().open_tree("offers")?;
        let resolve = |fail: bool| {
            (&offers, audit.raw()).transaction(|(offers, trail)| {
                offers.insert(b"o1", b"RESOLVED".as_slice())?;
                let seq = Audit::append_in::<StoreError>(trail, &entry(1))?;
                if fail {
                    return Err(ConflictableTransactionError::Abort(codec("payout refused")));
                }
                Ok(seq)
            })
        };
        assert!(resolve(true).is_err());
        assert_eq!(offers.get(b"o1")?, None);
        assert!(audit.since(0, 10)?.is_empty(), "aborted with the action");
        assert_eq!(resolve(false).map_err(|e| format!("{e:?}"))?, 1, "no gap");
        assert_eq!(offers.get(b"o1")?.as_deref(), Some(b"RESOLVED".as_slice()));
        assert_eq!(audit.since(0, 10)?, vec![(1, entry(1))]);
        Ok(())
    }
}
