//! Issue 16: finished orders shrunk to what accounting and disputes need, once `[market]
//! order_retention_secs` has passed since they were placed ([`OrderRecord::shrinkable`],
//! [`OrderRecord::shrunk`]), and the escrow wallet's records of their paid invoices (the
//! mint quote, the incoming payment in its history) dropped with them.
//!
//! The wallet's records go first, then the order is shrunk: a crash in between leaves a
//! whole order whose wallet records are gone, which the next pass shrinks (dropping what is
//! already gone again is a no-op). The other way round, a crash would leave wallet records
//! no pass would look for again.

use std::collections::HashMap;

use cdk::nuts::MintQuoteState;
use cdk_common::wallet::TransactionId;

use super::consolidate::Consolidation;
use super::service::{EscrowError, EscrowService, OrderRecord};
use crate::store::StoreError;

/// What one footprint pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tidied {
    /// The proofs swapped into few, when they were too many.
    pub consolidated: Option<Consolidation>,
    /// Spent proofs removed from the wallet's store.
    pub spent_pruned: usize,
    /// Finished orders shrunk.
    pub orders_shrunk: usize,
    /// Mint quotes of their paid invoices dropped from the wallet's store.
    pub quotes_dropped: usize,
    /// Incoming payments of those invoices dropped from the wallet's history.
    pub transactions_dropped: usize,
}

impl EscrowService {
    /// Shrinks every finished order past the retention window ([`OrderRecord::shrinkable`]),
    /// dropping the wallet's records of its paid invoice first.
    pub async fn shrink_finished(&self) -> Result<Tidied, EscrowError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let window = inner.footprint.order_retention_secs;
        let mut due: Vec<Vec<u8>> = Vec::new();
        for entry in inner.orders.iter() {
            let (key, record) = entry?;
            if record.shrinkable(now, window) {
                due.push(key.to_vec());
            }
        }
        let mut tidied = Tidied::default();
        if due.is_empty() {
            return Ok(tidied);
        }
        let payments = self.incoming_payments_by_quote().await?;
        for key in due {
            // Under the order lock, re-read: a record is only ever shrunk as it stands.
            let _guard = inner.lock.lock().await;
            let Some(record) = inner.orders.get(&key)? else {
                continue;
            };
            if !record.shrinkable(inner.clock.now(), window) {
                continue;
            }
            let (quote, transactions) = self.drop_paid_invoice(&record, &payments).await?;
            tidied.quotes_dropped += usize::from(quote);
            tidied.transactions_dropped += transactions;
            let shrunk = record.shrunk(inner.clock.now());
            let swapped = inner
                .orders
                .raw()
                .compare_and_swap(
                    &key,
                    Some(inner.orders.encode(&record)?),
                    Some(inner.orders.encode(&shrunk)?),
                )
                .map_err(StoreError::from)?;
            tidied.orders_shrunk += usize::from(swapped.is_ok());
        }
        Ok(tidied)
    }

    /// The escrow wallet's incoming payments by the mint quote they paid.
    async fn incoming_payments_by_quote(
        &self,
    ) -> Result<HashMap<String, Vec<TransactionId>>, EscrowError> {
        let mut by_quote: HashMap<String, Vec<TransactionId>> = HashMap::new();
        let incoming = self
            .inner
            .wallet
            .list_transactions(Some(cdk_common::wallet::TransactionDirection::Incoming))
            .await?;
        for transaction in incoming {
            if let Some(quote) = transaction.quote_id.clone() {
                by_quote.entry(quote).or_default().push(transaction.id());
            }
        }
        Ok(by_quote)
    }

    /// Drops the wallet's mint quote of `record`'s invoice, once issued and used by no
    /// operation, and its incoming payment; (quote dropped, payments dropped).
    async fn drop_paid_invoice(
        &self,
        record: &OrderRecord,
        payments: &HashMap<String, Vec<TransactionId>>,
    ) -> Result<(bool, usize), EscrowError> {
        if record.quote_id.is_empty() {
            return Ok((false, 0));
        }
        let store = &self.inner.wallet.localstore;
        let quote = store
            .get_mint_quote(&record.quote_id)
            .await
            .map_err(cdk::Error::from)?;
        let dropped = match quote {
            Some(q) if q.state == MintQuoteState::Issued && q.used_by_operation.is_none() => {
                store
                    .remove_mint_quote(&record.quote_id)
                    .await
                    .map_err(cdk::Error::from)?;
                true
            }
            // An expired order's quote was never paid: nothing of it is wanted either.
            Some(q)
                if q.state == MintQuoteState::Unpaid
                    && q.used_by_operation.is_none()
                    && record.state == super::state::EscrowState::Expired =>
            {
                store
                    .remove_mint_quote(&record.quote_id)
                    .await
                    .map_err(cdk::Error::from)?;
                true
            }
            _ => false,
        };
        let mut removed = 0;
        for id in payments.get(&record.quote_id).into_iter().flatten() {
            store
                .remove_transaction(*id)
                .await
                .map_err(cdk::Error::from)?;
            removed += 1;
        }
        Ok((dropped, removed))
    }
}
