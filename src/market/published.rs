//! What soko last published for each of a merchant's replaceable events: its profile and DM
//! relay list, its NIP-15 stalls and products, their Gamma forms (`kinds/gamma.md`).
//!
//! Tree `published_listings`: merchant pubkey ‖ kind (u16 BE) ‖ `d` → [`Record`]. A record
//! keeps the ids of the last versions (a NIP-09 deletion names them in `e` tags: NIP-15
//! clients read only those), a digest of the content and tags (a version that would not
//! change anything is not published again) and the newest `created_at` (each version is
//! dated after the one before, so a relay never keeps an older one for being as old). It is
//! written in the same sled transaction that queues the event in the outbox: an event is
//! known here exactly when it is on its way.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, Typed};

/// Ids remembered per coordinate: a client that missed a few updates still holds one of them.
pub const IDS_KEPT: usize = 8;

/// The last publication of one coordinate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Event ids (hex) of the last versions, oldest first, at most [`IDS_KEPT`].
    pub ids: Vec<String>,
    /// SHA-256 (hex) of the last version's kind, content and tags; empty once deleted.
    pub digest: String,
    /// `created_at` of the last version, or of the deletion.
    pub created_at: u64,
    /// A deletion was published after the last version.
    pub deleted: bool,
}

/// A replaceable event's place: its kind and `d` tag.
pub type Coordinate = (u16, String);

/// The records, and the lock that makes one merchant's publishing a single step.
#[derive(Debug, Clone)]
pub struct Published {
    tree: Typed<Record>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Published {
    /// Opens the tree.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree("published_listings")?,
            lock: Arc::default(),
        })
    }

    /// The tree, to join in the transaction that queues the events.
    pub fn tree(&self) -> &Typed<Record> {
        &self.tree
    }

    /// Held while a merchant's events are worked out and queued, so that two changes cannot
    /// interleave (one publishing a product the other just withdrew).
    pub fn lock(&self) -> &tokio::sync::Mutex<()> {
        &self.lock
    }

    /// One record.
    pub fn get(
        &self,
        merchant: &nostr_sdk::PublicKey,
        kind: u16,
        d: &str,
    ) -> Result<Option<Record>, StoreError> {
        self.tree.get(&key(merchant, kind, d))
    }

    /// Every record of `merchant`, by kind and `d`.
    pub fn of(
        &self,
        merchant: &nostr_sdk::PublicKey,
    ) -> Result<Vec<(Coordinate, Record)>, StoreError> {
        let prefix = merchant.to_bytes();
        let mut records = Vec::new();
        for entry in self.tree.raw().scan_prefix(prefix) {
            let (k, bytes) = entry?;
            let Some(rest) = k.get(32..) else { continue };
            let (Some(kind), Some(d)) = (rest.get(..2), rest.get(2..)) else {
                continue;
            };
            let kind = u16::from_be_bytes([kind[0], kind[1]]);
            let d = String::from_utf8_lossy(d).into_owned();
            records.push(((kind, d), self.tree.decode(&bytes)?));
        }
        Ok(records)
    }
}

/// The key of a coordinate.
pub fn key(merchant: &nostr_sdk::PublicKey, kind: u16, d: &str) -> Vec<u8> {
    let mut key = merchant.to_bytes().to_vec();
    key.extend_from_slice(&kind.to_be_bytes());
    key.extend_from_slice(d.as_bytes());
    key
}

impl Record {
    /// The record after publishing a version `id` dated `created_at` with `digest`.
    pub fn published(&self, id: &str, digest: &str, created_at: u64) -> Self {
        let mut ids = self.ids.clone();
        ids.push(id.to_owned());
        let excess = ids.len().saturating_sub(IDS_KEPT);
        ids.drain(..excess);
        Self {
            ids,
            digest: digest.to_owned(),
            created_at,
            deleted: false,
        }
    }

    /// The record after a deletion dated `created_at`.
    pub fn withdrawn(&self, created_at: u64) -> Self {
        Self {
            ids: self.ids.clone(),
            digest: String::new(),
            created_at,
            deleted: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_the_last_ids_and_forgets_its_digest_when_deleted() {
        let mut record = Record::default();
        for n in 0..10 {
            record = record.published(&format!("id{n}"), "dg", 100 + n);
        }
        assert_eq!(record.ids.len(), IDS_KEPT);
        assert_eq!(record.ids.first().map(String::as_str), Some("id2"));
        assert_eq!(record.ids.last().map(String::as_str), Some("id9"));
        let gone = record.withdrawn(200);
        assert!(gone.deleted && gone.digest.is_empty());
        assert_eq!(gone.ids, record.ids);
        let back = gone.published("id10", "dg", 201);
        assert!(!back.deleted);
        assert_eq!(back.created_at, 201);
    }
}
