//! Stalls and products proposed to a merchant for approval. The agents issue fills this
//! store (an agent proposes, the merchant approves or rejects over USSD); until then it is
//! empty, and USSD menu 4 reads it like any other list.
//!
//! Tree `proposals`: merchant pubkey (32) ‖ proposal id → [`Proposal`].

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, Typed};

/// One proposal waiting for the merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Its id, unique per merchant.
    pub id: String,
    /// One line for the merchant's screen, e.g. "Product: Mango 500 sat, by agent Juma".
    pub summary: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// The proposal store.
#[derive(Debug, Clone)]
pub struct Proposals {
    tree: Typed<Proposal>,
}

impl Proposals {
    /// Opens the tree.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree("proposals")?,
        })
    }

    /// Records a proposal for `merchant`.
    pub fn add(&self, merchant: &PublicKey, proposal: &Proposal) -> Result<(), StoreError> {
        self.tree.insert(&key(merchant, &proposal.id), proposal)
    }

    /// The proposals waiting for `merchant`, oldest first.
    pub fn pending_for(&self, merchant: &PublicKey) -> Result<Vec<Proposal>, StoreError> {
        let mut found = Vec::new();
        for entry in self.tree.raw().scan_prefix(merchant.to_bytes()) {
            let (_, bytes) = entry?;
            found.push(self.tree.decode(&bytes)?);
        }
        found.sort_by_key(|p| p.created_at);
        Ok(found)
    }
}

fn key(merchant: &PublicKey, id: &str) -> Vec<u8> {
    [merchant.to_bytes().as_slice(), id.as_bytes()].concat()
}
