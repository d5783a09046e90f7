//! What agents propose to merchants — a link, a stall, a product, a deletion — and where
//! each proposal is. The merchant approves or rejects over USSD (menu 4); the agent may
//! withdraw its own, and unlinking an agent withdraws its pending ones.
//!
//! Trees (written together in one transaction when a proposal is added):
//! - `proposals`: id (u64 BE) → [`Proposal`].
//! - `proposals_by_merchant`: merchant (32) ‖ id → created_at.
//! - `proposals_by_agent`: agent (32) ‖ id → created_at.
//!
//! Status changes go through the pure [`transition`] and a compare-and-swap on the record,
//! so two decisions racing cannot both apply.

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub use crate::proto::agents::{ProposalKind, ProposalStatus};
use crate::proto::nip15::{Product, Stall};
use crate::store::{Store, StoreError, Typed};

/// What a proposal asks the merchant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "content", rename_all = "snake_case")]
pub enum Proposed {
    /// Link the proposing agent to the merchant (the phone was the merchant's already).
    Link,
    /// Create or replace this stall.
    Stall(Stall),
    /// Create or replace this product.
    Product(Product),
    /// Delete a stall (30017) or product (30018).
    Delete {
        /// 30017 or 30018.
        kind: u16,
        /// The listing's id.
        id: String,
    },
}

impl Proposed {
    /// Its kind.
    pub fn kind(&self) -> ProposalKind {
        match self {
            Self::Link => ProposalKind::Link,
            Self::Stall(_) => ProposalKind::Stall,
            Self::Product(_) => ProposalKind::Product,
            Self::Delete { .. } => ProposalKind::Delete,
        }
    }

    /// The listing it is about, if any.
    pub fn listing_id(&self) -> Option<&str> {
        match self {
            Self::Link => None,
            Self::Stall(stall) => Some(&stall.id),
            Self::Product(product) => Some(&product.id),
            Self::Delete { id, .. } => Some(id),
        }
    }
}

/// One proposal as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Its id.
    pub id: u64,
    /// The merchant (hex on disk).
    pub merchant: PublicKey,
    /// The proposing agent (hex on disk).
    pub agent: PublicKey,
    /// What it asks.
    pub proposed: Proposed,
    /// Where it is.
    pub status: ProposalStatus,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the decision.
    pub decided_at: Option<u64>,
    /// The event published on approval.
    pub event_id: Option<String>,
}

/// A decision on a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The merchant approves.
    Approve,
    /// The merchant rejects.
    Reject,
    /// The agent withdraws it, or the merchant unlinked the agent.
    Withdraw,
}

/// What a decision does to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The proposal moves to this status.
    To(ProposalStatus),
    /// It is there already (the same decision again): nothing to do, nothing to repeat.
    Already,
    /// It was decided otherwise; it stays as it is.
    Decided(ProposalStatus),
}

/// The only status rule: a pending proposal is decided once; the same decision again is
/// a no-op (a retried approval publishes once), any other is refused.
pub fn transition(current: ProposalStatus, decision: Decision) -> Transition {
    let target = match decision {
        Decision::Approve => ProposalStatus::Approved,
        Decision::Reject => ProposalStatus::Rejected,
        Decision::Withdraw => ProposalStatus::Withdrawn,
    };
    match current {
        ProposalStatus::Pending => Transition::To(target),
        done if done == target => Transition::Already,
        done => Transition::Decided(done),
    }
}

/// The proposal store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Proposals {
    db: sled::Db,
    records: Typed<Proposal>,
    by_merchant: Typed<u64>,
    by_agent: Typed<u64>,
}

impl Proposals {
    /// Opens the trees.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            db: store.db().clone(),
            records: store.tree("proposals")?,
            by_merchant: store.tree("proposals_by_merchant")?,
            by_agent: store.tree("proposals_by_agent")?,
        })
    }

    /// Records a pending proposal.
    pub fn add(
        &self,
        merchant: &PublicKey,
        agent: &PublicKey,
        proposed: Proposed,
        now: u64,
    ) -> Result<Proposal, StoreError> {
        // sled's ids are unique and increasing across restarts; 0 is kept out of sight.
        let id = self.db.generate_id()?.saturating_add(1);
        let proposal = Proposal {
            id,
            merchant: *merchant,
            agent: *agent,
            proposed,
            status: ProposalStatus::Pending,
            created_at: now,
            decided_at: None,
            event_id: None,
        };
        let record = self.records.encode(&proposal)?;
        let at = self.by_merchant.encode(&now)?;
        let merchant_key = index_key(merchant, id);
        let agent_key = index_key(agent, id);
        (
            self.records.raw(),
            self.by_merchant.raw(),
            self.by_agent.raw(),
        )
            .transaction(|(records, by_merchant, by_agent)| {
                records.insert(&id.to_be_bytes(), record.clone())?;
                by_merchant.insert(merchant_key.as_slice(), at.clone())?;
                by_agent.insert(agent_key.as_slice(), at.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => {
                    StoreError::Task("proposal transaction aborted".to_owned())
                }
            })?;
        Ok(proposal)
    }

    /// One proposal.
    pub fn get(&self, id: u64) -> Result<Option<Proposal>, StoreError> {
        self.records.get(&id.to_be_bytes())
    }

    /// Every proposal to `merchant`, oldest first.
    pub fn of_merchant(&self, merchant: &PublicKey) -> Result<Vec<Proposal>, StoreError> {
        self.indexed(&self.by_merchant, merchant)
    }

    /// Every proposal of `agent`, oldest first.
    pub fn of_agent(&self, agent: &PublicKey) -> Result<Vec<Proposal>, StoreError> {
        self.indexed(&self.by_agent, agent)
    }

    /// The proposals waiting for `merchant`, oldest first.
    pub fn pending_for(&self, merchant: &PublicKey) -> Result<Vec<Proposal>, StoreError> {
        Ok(self
            .of_merchant(merchant)?
            .into_iter()
            .filter(|p| p.status == ProposalStatus::Pending)
            .collect())
    }

    /// Applies `decision` to proposal `id` (compare-and-swap, retried on a concurrent
    /// change). Returns the transition and the proposal as it is now; `None` if unknown.
    pub fn decide(
        &self,
        id: u64,
        decision: Decision,
        now: u64,
        event_id: Option<String>,
    ) -> Result<Option<(Transition, Proposal)>, StoreError> {
        let key = id.to_be_bytes();
        loop {
            let Some(old) = self.records.raw().get(key)? else {
                return Ok(None);
            };
            let mut proposal = self.records.decode(&old)?;
            let step = transition(proposal.status, decision);
            let Transition::To(status) = step else {
                return Ok(Some((step, proposal)));
            };
            proposal.status = status;
            proposal.decided_at = Some(now);
            proposal.event_id.clone_from(&event_id);
            let new = self.records.encode(&proposal)?;
            if self
                .records
                .raw()
                .compare_and_swap(key, Some(old), Some(new))?
                .is_ok()
            {
                return Ok(Some((step, proposal)));
            }
        }
    }

    fn indexed(&self, index: &Typed<u64>, owner: &PublicKey) -> Result<Vec<Proposal>, StoreError> {
        let mut found = Vec::new();
        for entry in index.raw().scan_prefix(owner.to_bytes()) {
            let (key, _) = entry?;
            let Some(id) = key
                .get(32..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            if let Some(proposal) = self.get(id)? {
                found.push(proposal);
            }
        }
        Ok(found)
    }
}

fn index_key(owner: &PublicKey, id: u64) -> Vec<u8> {
    [owner.to_bytes().as_slice(), &id.to_be_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use nostr_sdk::Keys;

    use super::*;

    #[test]
    fn a_pending_proposal_is_decided_once() {
        use Decision::*;
        use ProposalStatus::*;
        assert_eq!(transition(Pending, Approve), Transition::To(Approved));
        assert_eq!(transition(Pending, Reject), Transition::To(Rejected));
        assert_eq!(transition(Pending, Withdraw), Transition::To(Withdrawn));
        // The same decision again changes nothing and asks for nothing to be redone.
        assert_eq!(transition(Approved, Approve), Transition::Already);
        assert_eq!(transition(Rejected, Reject), Transition::Already);
        assert_eq!(transition(Withdrawn, Withdraw), Transition::Already);
        // Another decision is refused with the status it has.
        assert_eq!(transition(Approved, Reject), Transition::Decided(Approved));
        assert_eq!(
            transition(Approved, Withdraw),
            Transition::Decided(Approved)
        );
        assert_eq!(transition(Rejected, Approve), Transition::Decided(Rejected));
        assert_eq!(
            transition(Withdrawn, Approve),
            Transition::Decided(Withdrawn)
        );
        assert_eq!(
            transition(Withdrawn, Reject),
            Transition::Decided(Withdrawn)
        );
    }

    #[test]
    fn proposals_are_indexed_by_merchant_and_agent() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let proposals = Proposals::open(&store)?;
        let (merchant, agent) = (Keys::generate().public_key(), Keys::generate().public_key());
        let other = Keys::generate().public_key();
        let first = proposals.add(&merchant, &agent, Proposed::Link, 1)?;
        let second = proposals.add(
            &merchant,
            &other,
            Proposed::Delete {
                kind: 30018,
                id: "mango".into(),
            },
            2,
        )?;
        assert!(second.id > first.id);
        assert_eq!(proposals.of_merchant(&merchant)?.len(), 2);
        assert_eq!(proposals.of_agent(&agent)?, vec![first.clone()]);
        let (step, now) = proposals
            .decide(first.id, Decision::Approve, 5, Some("ev".into()))?
            .ok_or("known")?;
        assert_eq!(step, Transition::To(ProposalStatus::Approved));
        assert_eq!(
            (now.decided_at, now.event_id.as_deref()),
            (Some(5), Some("ev"))
        );
        let (again, _) = proposals
            .decide(first.id, Decision::Approve, 6, None)?
            .ok_or("known")?;
        assert_eq!(again, Transition::Already);
        assert_eq!(proposals.get(first.id)?.and_then(|p| p.decided_at), Some(5));
        assert_eq!(proposals.pending_for(&merchant)?, vec![second]);
        assert!(proposals
            .decide(999_999, Decision::Reject, 7, None)?
            .is_none());
        Ok(())
    }
}
