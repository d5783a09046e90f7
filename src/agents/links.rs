//! Links between agents and the merchants they look after, and the merchants' sharing
//! setting.
//!
//! Trees (both written in one transaction, so each index always mirrors the other):
//! - `agent_links`: agent (32) ‖ merchant (32) → [`Link`].
//! - `merchant_agents`: merchant (32) ‖ agent (32) → [`Link`].
//! - `agent_sharing`: merchant (32) → `true` when its linked agents get the buyer's details
//!   with paid-order notices (off when absent).

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::store::{Store, StoreError, Typed};

/// One link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Unix seconds it was made.
    pub linked_at: u64,
}

/// The link store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Links {
    by_agent: Typed<Link>,
    by_merchant: Typed<Link>,
    sharing: Typed<bool>,
}

impl Links {
    /// Opens the trees.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            by_agent: store.tree("agent_links")?,
            by_merchant: store.tree("merchant_agents")?,
            sharing: store.tree("agent_sharing")?,
        })
    }

    /// Links `agent` to `merchant` (both indexes at once); an existing link is kept as it
    /// was. Returns the link.
    pub fn link(
        &self,
        agent: &PublicKey,
        merchant: &PublicKey,
        now: u64,
    ) -> Result<Link, StoreError> {
        if let Some(link) = self.get(agent, merchant)? {
            return Ok(link);
        }
        let link = Link { linked_at: now };
        let value = self.by_agent.encode(&link)?;
        let forward = pair(agent, merchant);
        let backward = pair(merchant, agent);
        (self.by_agent.raw(), self.by_merchant.raw())
            .transaction(|(by_agent, by_merchant)| {
                by_agent.insert(forward.as_slice(), value.clone())?;
                by_merchant.insert(backward.as_slice(), value.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        Ok(link)
    }

    /// Removes the link (both indexes at once); true when there was one.
    pub fn unlink(&self, agent: &PublicKey, merchant: &PublicKey) -> Result<bool, StoreError> {
        let forward = pair(agent, merchant);
        let backward = pair(merchant, agent);
        (self.by_agent.raw(), self.by_merchant.raw())
            .transaction(|(by_agent, by_merchant)| {
                let had = by_agent.remove(forward.as_slice())?.is_some();
                by_merchant.remove(backward.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(had)
            })
            .map_err(tx_error)
    }

    /// The link between them, if any.
    pub fn get(&self, agent: &PublicKey, merchant: &PublicKey) -> Result<Option<Link>, StoreError> {
        self.by_agent.get(&pair(agent, merchant))
    }

    /// True when `agent` is linked to `merchant`.
    pub fn is_linked(&self, agent: &PublicKey, merchant: &PublicKey) -> Result<bool, StoreError> {
        Ok(self.get(agent, merchant)?.is_some())
    }

    /// The merchants `agent` is linked to.
    pub fn merchants_of(&self, agent: &PublicKey) -> Result<Vec<(PublicKey, Link)>, StoreError> {
        scan(&self.by_agent, agent)
    }

    /// The agents linked to `merchant`, oldest link first.
    pub fn agents_of(&self, merchant: &PublicKey) -> Result<Vec<(PublicKey, Link)>, StoreError> {
        let mut agents = scan(&self.by_merchant, merchant)?;
        agents.sort_by_key(|(_, link)| link.linked_at);
        Ok(agents)
    }

    /// Whether `merchant`'s agents get buyers' details with paid-order notices.
    pub fn shares_buyer(&self, merchant: &PublicKey) -> Result<bool, StoreError> {
        Ok(self.sharing.get(&merchant.to_bytes())?.unwrap_or(false))
    }

    /// Sets that.
    pub fn set_shares_buyer(&self, merchant: &PublicKey, share: bool) -> Result<(), StoreError> {
        if share {
            self.sharing.insert(&merchant.to_bytes(), &true)
        } else {
            self.sharing.remove(&merchant.to_bytes())
        }
    }
}

fn pair(first: &PublicKey, second: &PublicKey) -> Vec<u8> {
    [first.to_bytes().as_slice(), second.to_bytes().as_slice()].concat()
}

fn scan(tree: &Typed<Link>, owner: &PublicKey) -> Result<Vec<(PublicKey, Link)>, StoreError> {
    let mut found = Vec::new();
    for entry in tree.raw().scan_prefix(owner.to_bytes()) {
        let (key, bytes) = entry?;
        let Some(other) = key.get(32..).and_then(|k| PublicKey::from_slice(k).ok()) else {
            continue;
        };
        found.push((other, tree.decode(&bytes)?));
    }
    Ok(found)
}

fn tx_error(e: TransactionError<()>) -> StoreError {
    match e {
        TransactionError::Storage(e) => e.into(),
        // Nothing aborts these transactions.
        TransactionError::Abort(()) => StoreError::Task("link transaction aborted".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::Keys;

    use super::*;

    #[test]
    fn both_indexes_follow_links_and_unlinks() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let links = Links::open(&store)?;
        let (agent, other) = (Keys::generate().public_key(), Keys::generate().public_key());
        let merchant = Keys::generate().public_key();
        assert_eq!(links.link(&agent, &merchant, 10)?.linked_at, 10);
        // Linking again keeps the first link.
        assert_eq!(links.link(&agent, &merchant, 20)?.linked_at, 10);
        links.link(&other, &merchant, 30)?;
        assert!(links.is_linked(&agent, &merchant)?);
        assert_eq!(
            links.merchants_of(&agent)?,
            vec![(merchant, Link { linked_at: 10 })]
        );
        let agents: Vec<PublicKey> = links
            .agents_of(&merchant)?
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        assert_eq!(agents, vec![agent, other]);
        assert!(links.unlink(&agent, &merchant)?);
        assert!(!links.unlink(&agent, &merchant)?);
        assert!(!links.is_linked(&agent, &merchant)?);
        assert!(links.merchants_of(&agent)?.is_empty());
        assert_eq!(links.agents_of(&merchant)?.len(), 1);
        assert!(!links.shares_buyer(&merchant)?);
        links.set_shares_buyer(&merchant, true)?;
        assert!(links.shares_buyer(&merchant)?);
        links.set_shares_buyer(&merchant, false)?;
        assert!(!links.shares_buyer(&merchant)?);
        Ok(())
    }
}
