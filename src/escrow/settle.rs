//! Delivery with the buyer's code: the escrow goes to the merchant's balance.

use nostr_sdk::PublicKey;

use super::code::Verdict;
use super::messages::{describe, status};
use super::payout::Payout;
use super::refusal::EscrowRefusal;
use super::service::{code_scope, order_key, Change, EscrowError, EscrowService, OrderRecord};
use super::state::{transition, EscrowEvent, EscrowState};
use crate::money::Sats;

/// What a delivery (or an admin's release) came to: the order's total credited to the
/// merchant's balance, then what became of the payout to its destination, and the balance
/// left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Credited to the merchant's balance.
    pub credited: Sats,
    /// The payout that followed at once.
    pub payout: Payout,
    /// The balance after it.
    pub balance: Sats,
}

impl EscrowService {
    /// [`Self::deliver`], then straight on to the merchant's payout destination, if it has
    /// one: what `order_deliver` and USSD menu 2 do.
    pub async fn deliver_and_pay_out(
        &self,
        merchant: PublicKey,
        number: u64,
        code: &str,
    ) -> Result<Settled, EscrowError> {
        let credited = self.deliver(merchant, number, code).await?;
        self.then_pay_out(merchant, credited).await
    }

    /// [`Self::release`], then the payout as a delivery does.
    pub async fn release_and_pay_out(
        &self,
        merchant: PublicKey,
        number: u64,
    ) -> Result<Settled, EscrowError> {
        let credited = self.release(merchant, number).await?;
        self.then_pay_out(merchant, credited).await
    }

    pub(super) async fn then_pay_out(
        &self,
        merchant: PublicKey,
        credited: Sats,
    ) -> Result<Settled, EscrowError> {
        let payout = self.pay_out(merchant).await?;
        Ok(Settled {
            credited,
            payout,
            balance: self.balance(&merchant)?,
        })
    }

    /// The merchant presents the buyer's code for order `number`; the right one credits the
    /// order's total to the merchant's balance, which is returned.
    pub async fn deliver(
        &self,
        merchant: PublicKey,
        number: u64,
        code: &str,
    ) -> Result<Sats, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let key = order_key(&merchant, number);
        let Some(record) = inner.orders.get(&key)? else {
            return Err(EscrowRefusal::NoSuchOrder(number).into());
        };
        if record.state != EscrowState::Paid {
            return Err(EscrowRefusal::NotDeliverable {
                number,
                state: record.state,
            }
            .into());
        }
        let Some(stored) = &record.code else {
            return Err(EscrowRefusal::NoCodeYet(number).into());
        };
        let (verdict, updated) = inner
            .codes
            .check(&code_scope(&merchant, number), stored, code);
        let mut next = record.clone();
        next.code = Some(updated);
        let refusal = match verdict {
            Verdict::Accepted => None,
            Verdict::Wrong { attempts_left } => Some(EscrowRefusal::WrongCode {
                number,
                attempts_left,
            }),
            Verdict::Locked | Verdict::AlreadyLocked => {
                next.state = transition(record.state, EscrowEvent::CodeAttemptsExhausted)?;
                Some(EscrowRefusal::CodeLocked(number))
            }
        };
        if let Some(refusal) = refusal {
            inner.orders.insert(&key, &next)?;
            return Err(refusal.into());
        }
        let delivered = transition(record.state, EscrowEvent::CodeAccepted)?;
        next.state = delivered;
        self.credit_merchant(merchant, number, &key, &record, next, None)
            .await?;
        tracing::info!(
            order = number,
            sats = record.total.0,
            "delivered; escrow released to the merchant's balance"
        );
        Ok(record.total)
    }

    /// An admin's decision for the merchant on a disputed order (five wrong codes, or a
    /// dispute the review found groundless): the escrow goes to the merchant as if the code
    /// had been presented.
    /// Returns what was credited.
    pub async fn release(&self, merchant: PublicKey, number: u64) -> Result<Sats, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let key = order_key(&merchant, number);
        let Some(record) = inner.orders.get(&key)? else {
            return Err(EscrowRefusal::NoSuchOrder(number).into());
        };
        // An issue still waiting for its answer is settled by the answer or `order_resolve`.
        if record.issue.as_ref().is_some_and(|i| i.outcome.is_none()) {
            return Err(EscrowRefusal::IssueOpen(number).into());
        }
        let allowed = (record.state == EscrowState::Disputed)
            .then(|| transition(record.state, EscrowEvent::ResolvedForMerchant).ok())
            .flatten();
        let Some(delivered) = allowed else {
            return Err(EscrowRefusal::NotDisputed {
                number,
                state: record.state,
            }
            .into());
        };
        let mut next = record.clone();
        next.state = delivered;
        self.credit_merchant(merchant, number, &key, &record, next, None)
            .await?;
        tracing::info!(
            order = number,
            sats = record.total.0,
            "disputed order released to the merchant's balance by an admin"
        );
        Ok(record.total)
    }

    /// Settles a `Delivered` order: the payout is a credit to the merchant's balance held
    /// in soko's escrow wallet, so delivery and payout complete in one transaction, with the
    /// buyer's completion notice (and `audit`, an admin's decision, in the same commit).
    /// Call with the escrow lock held.
    pub(super) async fn credit_merchant(
        &self,
        merchant: PublicKey,
        number: u64,
        key: &[u8],
        record: &OrderRecord,
        mut next: OrderRecord,
        audit: Option<crate::store::audit::AuditEntry>,
    ) -> Result<(), EscrowError> {
        next.state = transition(next.state, EscrowEvent::PayoutSettled)?;
        let dm = self
            .seal_to_buyer(
                &merchant,
                record,
                status(&next, &describe(next.state, number)),
            )
            .await?;
        let balance = self
            .inner
            .balances
            .get(&merchant.to_bytes())?
            .unwrap_or(Sats::ZERO);
        let credited = balance
            .checked_add(record.total)
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        let change = Change {
            balance: Some((merchant.to_bytes().to_vec(), credited)),
            audit,
            ..Change::default()
        };
        self.commit(key, &next, change, &[dm]).await?;
        self.inner.metrics.order_completed();
        Ok(())
    }

    /// Holds order `number` for the operator's decision: the code no longer releases it, and
    /// it can be refunded (or released to the merchant by an admin later).
    pub async fn dispute(&self, merchant: PublicKey, number: u64) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let key = order_key(&merchant, number);
        let Some(record) = inner.orders.get(&key)? else {
            return Err(EscrowRefusal::NoSuchOrder(number).into());
        };
        let Ok(next) = transition(record.state, EscrowEvent::DisputeOpened) else {
            return Err(EscrowRefusal::NotDisputable {
                number,
                state: record.state,
            }
            .into());
        };
        let mut disputed = record.clone();
        disputed.state = next;
        let dm = self
            .seal_to_buyer(
                &merchant,
                &record,
                status(&disputed, &describe(next, number)),
            )
            .await?;
        self.commit(&key, &disputed, Change::default(), &[dm])
            .await?;
        tracing::info!(order = number, "order disputed");
        Ok(())
    }
}
