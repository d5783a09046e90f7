//! A merchant's balance moved out as a Cashu token that soko itself takes (a bill paid from
//! sales over USSD puts it into a session of soko's own), and a token soko made taken back
//! into a merchant's balance. Each is recorded in sled before it moves and keyed by the
//! caller, so a retry (after a crash too) repeats nothing:
//!
//! - `withdrawals` (caller's key → [`Withdrawal`]): the wallet's send operation is recorded
//!   with the debit from the balance, in one transaction, before the token is made; the
//!   token (sealed: it is bearer money) once made. A crash in between is read back from the
//!   wallet's record ([`crate::wallet::recorded_token`]); a send that never made a token is
//!   made again under the same debit. Until the token is recorded the debit counts as in
//!   flight in the books.
//! - `credits` (caller's key → [`Credit`]): the token's value is recorded before the wallet
//!   receives it, then the amount received is credited in one transaction with the record's
//!   `done`. A token already spent when retried was received by the try a crash cut short
//!   (soko made it and showed it to no one).

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::refusal::EscrowRefusal;
use super::service::{tx_error, EscrowError, EscrowService};
use crate::money::Sats;

/// A token of a merchant's balance, for soko's own use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// Whose balance.
    pub merchant: PublicKey,
    /// Debited, and the token's value.
    pub amount: Sats,
    /// The wallet's send operation id, recorded before the token is made.
    pub operation: String,
    /// The token, sealed, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A token soko made, credited back to a merchant's balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// Whose balance.
    pub merchant: PublicKey,
    /// The token's value until it is received; what was credited once `done`.
    pub amount: Sats,
    /// Credited.
    pub done: bool,
}

impl EscrowService {
    /// `amount` of `merchant`'s balance as a Cashu token of the escrow wallet, for soko to
    /// move into a wallet of its own. Idempotent per `key`: every call with the same key
    /// returns the same token and debits once; the same key with another merchant or amount
    /// is an error. A balance smaller than `amount` is refused (`BalanceTooLow`).
    pub async fn withdraw_token(
        &self,
        merchant: PublicKey,
        amount: Sats,
        key: &str,
    ) -> Result<String, EscrowError> {
        let inner = &self.inner;
        let _payouts = inner.payouts_lock.lock().await;
        if let Some(mut record) = inner.withdrawals.get(key.as_bytes())? {
            if record.merchant != merchant || record.amount != amount {
                return Err(EscrowError::Books(format!(
                    "withdrawal {key} was recorded for another merchant or amount"
                )));
            }
            if let Some(sealed) = &record.token {
                return Ok(inner.vault.unseal(sealed)?);
            }
            if let Some(token) = self.recorded_token(&record.operation).await? {
                record.token = Some(inner.vault.seal(&token)?);
                inner.withdrawals.insert(key.as_bytes(), &record)?;
                return Ok(token);
            }
            // The recorded send made no token: nothing left the wallet, the debit stands.
            let prepared = self.prepare_token(amount).await?;
            record.operation = prepared.operation.clone();
            if let Err(e) = inner.withdrawals.insert(key.as_bytes(), &record) {
                prepared.cancel().await;
                return Err(e.into());
            }
            return self.made(key, record, prepared).await;
        }
        let balance = self.balance(&merchant)?;
        if balance < amount {
            return Err(EscrowRefusal::BalanceTooLow {
                balance,
                needed: amount,
            }
            .into());
        }
        let prepared = self.prepare_token(amount).await?;
        let record = Withdrawal {
            merchant,
            amount,
            operation: prepared.operation.clone(),
            token: None,
        };
        if let Err(e) = self.debit_withdrawal(key, &record).await {
            prepared.cancel().await;
            return Err(e);
        }
        crate::failpoint::crash("escrow-withdrawal-debited", inner.withdrawals.raw());
        self.made(key, record, prepared).await
    }

    /// Makes the prepared token and records it.
    async fn made(
        &self,
        key: &str,
        mut record: Withdrawal,
        prepared: super::tokens::Prepared<'_>,
    ) -> Result<String, EscrowError> {
        let token = prepared.confirm().await?;
        record.token = Some(self.inner.vault.seal(&token)?);
        self.inner.withdrawals.insert(key.as_bytes(), &record)?;
        tracing::info!(
            sats = record.amount.0,
            "a merchant's balance left as a token for soko"
        );
        Ok(token)
    }

    /// The withdrawal record and the debit, in one transaction under the escrow lock.
    async fn debit_withdrawal(&self, key: &str, record: &Withdrawal) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let balance = self.balance(&record.merchant)?;
        let remaining = balance
            .checked_sub(record.amount)
            .ok_or(EscrowRefusal::BalanceTooLow {
                balance,
                needed: record.amount,
            })?;
        let encoded = inner.withdrawals.encode(record)?;
        let balance = inner.balances.encode(&remaining)?;
        let merchant = record.merchant.to_bytes();
        (inner.withdrawals.raw(), inner.balances.raw())
            .transaction(|(withdrawals, balances)| {
                withdrawals.insert(key.as_bytes(), encoded.clone())?;
                balances.insert(merchant.as_slice(), balance.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)
    }

    /// Takes `token` (one soko made) into the escrow wallet and credits what it brought to
    /// `merchant`'s balance. Idempotent per `key`: a second call credits nothing more and
    /// answers the amount credited the first time.
    pub async fn credit_token(
        &self,
        merchant: PublicKey,
        token: &str,
        key: &str,
    ) -> Result<Sats, EscrowError> {
        let inner = &self.inner;
        let _payouts = inner.payouts_lock.lock().await;
        let recorded = inner.credits.get(key.as_bytes())?;
        if let Some(credit) = &recorded {
            if credit.merchant != merchant {
                return Err(EscrowError::Books(format!(
                    "credit {key} was recorded for another merchant"
                )));
            }
            if credit.done {
                return Ok(credit.amount);
            }
        }
        let value = match &recorded {
            Some(credit) => credit.amount,
            None => {
                let parsed: cdk::nuts::Token = token
                    .trim()
                    .parse()
                    .map_err(|e| EscrowError::Books(format!("not a token: {e}")))?;
                let value = Sats::from(parsed.value().map_err(cdk::Error::from)?);
                inner.credits.insert(
                    key.as_bytes(),
                    &Credit {
                        merchant,
                        amount: value,
                        done: false,
                    },
                )?;
                value
            }
        };
        let received = match inner.wallet.receive(token.trim(), Default::default()).await {
            Ok(received) => {
                inner.metrics.wallet_op("receive", true);
                Sats::from(received)
            }
            // Received by the try a crash cut short. What came in is the token's value less
            // the mint's NUT-02 input fee; soko's dev mint charges none (with a mint that
            // does, the reconciliation shows that fee as a drift).
            Err(cdk::Error::TokenAlreadySpent) if recorded.is_some() => value,
            Err(e) => {
                inner.metrics.wallet_op("receive", false);
                return Err(e.into());
            }
        };
        let _guard = inner.lock.lock().await;
        let credit = Credit {
            merchant,
            amount: received,
            done: true,
        };
        let balance = self
            .balance(&merchant)?
            .checked_add(received)
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        let encoded = inner.credits.encode(&credit)?;
        let balance = inner.balances.encode(&balance)?;
        let merchant_bytes = merchant.to_bytes();
        (inner.credits.raw(), inner.balances.raw())
            .transaction(|(credits, balances)| {
                credits.insert(key.as_bytes(), encoded.clone())?;
                balances.insert(merchant_bytes.as_slice(), balance.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        tracing::info!(
            sats = received.0,
            "a token soko made was credited back to a merchant"
        );
        Ok(received)
    }

    /// Debits of withdrawals whose token is not recorded yet (still in the wallet, or on
    /// their way out).
    pub(super) fn withdrawals_in_flight(&self) -> Result<Sats, EscrowError> {
        let mut sum = Sats::ZERO;
        for entry in self.inner.withdrawals.iter() {
            let (_, record) = entry?;
            if record.token.is_none() {
                sum = Sats(sum.0.saturating_add(record.amount.0));
            }
        }
        Ok(sum)
    }
}
