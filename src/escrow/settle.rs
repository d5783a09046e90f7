//! Delivery with the buyer's code: the escrow goes to the merchant's balance.

use nostr_sdk::PublicKey;

use super::code::Verdict;
use super::messages::{describe, status};
use super::service::{
    code_scope, order_key, Change, Delivery, EscrowError, EscrowService, OrderRecord,
};
use super::state::{transition, EscrowEvent, EscrowState};
use crate::money::Sats;

impl EscrowService {
    /// The merchant presents the buyer's code for order `number`.
    pub async fn deliver(
        &self,
        merchant: PublicKey,
        number: u64,
        code: &str,
    ) -> Result<Delivery, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let key = order_key(&merchant, number);
        let Some(record) = inner.orders.get(&key)? else {
            return Ok(Delivery::Refused(format!("there is no order #{number}")));
        };
        if record.state != EscrowState::Paid {
            return Ok(Delivery::Refused(format!(
                "order #{number} cannot be delivered: {}",
                describe(record.state, number)
            )));
        }
        let Some(stored) = &record.code else {
            return Ok(Delivery::Refused(format!(
                "order #{number} has no code yet"
            )));
        };
        let (verdict, updated) = inner
            .codes
            .check(&code_scope(&merchant, number), stored, code);
        let mut next = record.clone();
        next.code = Some(updated);
        let refusal = match verdict {
            Verdict::Accepted => None,
            Verdict::Wrong { attempts_left } => Some(format!(
                "wrong code for order #{number}; {attempts_left} tries left"
            )),
            Verdict::Locked | Verdict::AlreadyLocked => {
                next.state = transition(record.state, EscrowEvent::CodeAttemptsExhausted)
                    .unwrap_or(record.state);
                Some(format!(
                    "too many wrong codes: order #{number} is locked for review by soko's operator"
                ))
            }
        };
        if let Some(why) = refusal {
            inner.orders.insert(&key, &next)?;
            return Ok(Delivery::Refused(why));
        }
        let delivered = transition(record.state, EscrowEvent::CodeAccepted).unwrap_or(record.state);
        next.state = delivered;
        self.credit_merchant(merchant, number, &key, &record, next)
            .await?;
        tracing::info!(
            order = number,
            sats = record.total.0,
            "delivered; escrow released to the merchant's balance"
        );
        Ok(Delivery::Released(record.total))
    }

    /// An admin's decision for the merchant on a disputed order (five wrong codes, or a
    /// dispute the review found groundless): the escrow goes to the merchant as if the code
    /// had been presented.
    pub async fn release(&self, merchant: PublicKey, number: u64) -> Result<Delivery, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let key = order_key(&merchant, number);
        let Some(record) = inner.orders.get(&key)? else {
            return Ok(Delivery::Refused(format!("there is no order #{number}")));
        };
        let Ok(delivered) = transition(record.state, EscrowEvent::ResolvedForMerchant) else {
            return Ok(Delivery::Refused(format!(
                "only a disputed order is released by an admin; {}",
                describe(record.state, number)
            )));
        };
        let mut next = record.clone();
        next.state = delivered;
        self.credit_merchant(merchant, number, &key, &record, next)
            .await?;
        tracing::info!(
            order = number,
            sats = record.total.0,
            "disputed order released to the merchant's balance by an admin"
        );
        Ok(Delivery::Released(record.total))
    }

    /// Settles a `Delivered` order: the payout is a credit to the merchant's balance held
    /// in soko's escrow wallet, so delivery and payout complete in one transaction, with the
    /// buyer's completion notice. Call with the escrow lock held.
    async fn credit_merchant(
        &self,
        merchant: PublicKey,
        number: u64,
        key: &[u8],
        record: &OrderRecord,
        mut next: OrderRecord,
    ) -> Result<(), EscrowError> {
        next.state = transition(next.state, EscrowEvent::PayoutSettled).unwrap_or(next.state);
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
            .map_err(|e| EscrowError::Publish(e.to_string()))?;
        let change = Change {
            balance: Some((merchant.to_bytes().to_vec(), credited)),
            ..Change::default()
        };
        self.commit(key, &next, change, &[dm]).await
    }

    /// Holds order `number` for the operator's decision: the code no longer releases it, and
    /// it can be refunded (or released to the merchant by an admin later).
    pub async fn dispute(&self, merchant: PublicKey, number: u64) -> Result<Delivery, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let key = order_key(&merchant, number);
        let Some(record) = inner.orders.get(&key)? else {
            return Ok(Delivery::Refused(format!("there is no order #{number}")));
        };
        let Ok(next) = transition(record.state, EscrowEvent::DisputeOpened) else {
            return Ok(Delivery::Refused(format!(
                "order #{number} cannot be disputed: {}",
                describe(record.state, number)
            )));
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
        Ok(Delivery::Released(record.total))
    }
}
