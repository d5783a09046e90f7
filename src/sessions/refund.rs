//! The refund saga: a closed or expired session's ecash goes back, then its wallet goes.
//!
//! Each move is recorded before the step after it:
//! - a token refund is made from the wallet's unspent proofs as they are (no swap, so no
//!   fee and nothing for the mint to record), and its DM is queued in the outbox in the same
//!   sled transaction that records `Refunded`. A crash before that transaction makes the same
//!   token from the same proofs again; a crash after it leaves the outbox to send the one DM;
//! - a Lightning refund records its melt quote (`Melting`) before the melt, and a crash
//!   resumes from the mint's own state of that quote. The melt's change goes back as a
//!   token, like any balance left once the Lightning payment is settled;
//! - only a `Refunded` session's wallet trees are deleted, so no ecash is deleted with them.

use std::time::Duration;

use cdk::nuts::{CurrencyUnit, MeltQuoteState, PaymentMethod, Token};
use sled::transaction::{ConflictableTransactionError, Transactional};

use super::{namespace, SessionError, SessionEvent, SessionRecord, SessionState, Sessions};
use crate::money::Sats;
use crate::outbound::Scheme;

/// Lightning refunds tried before the ecash goes back as a token instead: an address that
/// keeps failing must not keep the money.
pub(super) const MAX_MELT_FAILURES: u32 = 3;
/// How long a refund waits for the mint to settle a melt before leaving it to the next pass.
const MELT_WAIT: Duration = Duration::from_secs(4);

impl Sessions {
    /// Carries session `id`'s refund saga as far as it goes now; returns where it stands.
    /// A Lightning payment the mint has not settled leaves it `Melting`.
    pub(super) async fn finish(&self, id: &str) -> Result<SessionRecord, SessionError> {
        let _session = self.lock(id).await;
        loop {
            let record = self.stored(id)?;
            match record.state {
                SessionState::Open | SessionState::Ended => return Ok(record),
                SessionState::Closing => {
                    if !self.return_ecash(id, record).await? {
                        return self.stored(id);
                    }
                }
                SessionState::Melting => {
                    if !self.settle_melt(id, record).await? {
                        return self.stored(id);
                    }
                }
                SessionState::Refunded => {
                    if record.has_wallet {
                        self.forget_wallet(id);
                        crate::wallet::destroy(&self.inner.store, &namespace(id))?;
                    }
                    let record = record.moved(SessionEvent::TreesDeleted)?;
                    self.inner.records.insert(id.as_bytes(), &record)?;
                    tracing::info!(returned_sat = record.returned.0, "session wallet deleted");
                }
            }
        }
    }

    /// `Closing`: the balance goes back over Lightning (when an address was given and has
    /// not failed too often) or as a token. False when a Lightning refund could not start:
    /// the next pass tries again, and after [`MAX_MELT_FAILURES`] sends a token.
    async fn return_ecash(
        &self,
        id: &str,
        mut record: SessionRecord,
    ) -> Result<bool, SessionError> {
        if !record.has_wallet {
            let record = record.moved(SessionEvent::Returned)?;
            self.inner.records.insert(id.as_bytes(), &record)?;
            return Ok(true);
        }
        let wallet = self.wallet(id).await?;
        let balance = Sats::from(wallet.total_balance().await?);
        if balance == Sats::ZERO {
            let record = record.moved(SessionEvent::Returned)?;
            self.inner.records.insert(id.as_bytes(), &record)?;
            return Ok(true);
        }
        if let (Some(sealed), true) = (&record.refund_to, record.melt_failures < MAX_MELT_FAILURES)
        {
            let address = self.inner.vault.unseal(sealed)?;
            match self.quote_refund(&wallet, &address, balance).await {
                Ok((quote, amount)) => {
                    record.melt = Some(super::MeltRef { quote, amount });
                    let record = record.moved(SessionEvent::MeltQuoted)?;
                    self.inner.records.insert(id.as_bytes(), &record)?;
                    return Ok(true);
                }
                Err(why) => {
                    tracing::warn!(reason = %why, "a session's Lightning refund could not start");
                    record.melt_failures += 1;
                    self.inner.records.insert(id.as_bytes(), &record)?;
                    return Ok(false);
                }
            }
        }
        self.return_token(id, record, &wallet, balance).await?;
        Ok(true)
    }

    /// The whole balance as one token, its DM queued with the move to `Refunded`.
    async fn return_token(
        &self,
        id: &str,
        mut record: SessionRecord,
        wallet: &crate::wallet::Wallet,
        balance: Sats,
    ) -> Result<(), SessionError> {
        let inner = &self.inner;
        let proofs = wallet.get_unspent_proofs().await?;
        let token = Token::new(wallet.mint_url.clone(), proofs, None, CurrencyUnit::Sat);
        let why = match record.ended.map(|e| e.reason) {
            Some(super::EndReason::Expired) => "your session expired",
            _ => "your session is closed",
        };
        let text = format!(
            "Refund from soko: {why}. {} sat as Cashu ecash; redeem it in any Cashu wallet:\n{token}",
            balance.0
        );
        let dm = inner
            .publisher
            .seal_dm(&inner.bot, record.key, Scheme::Nip17, &text)
            .await?;
        record.returned = record
            .returned
            .checked_add(balance)
            .unwrap_or(record.returned);
        let record = record.moved(SessionEvent::Returned)?;
        let encoded = inner.records.encode(&record)?;
        let queued = inner.publisher.outbox().stage(&dm)?;
        (inner.records.raw(), inner.publisher.outbox().raw())
            .transaction(|(records, outbox)| {
                records.insert(id.as_bytes(), encoded.clone())?;
                queued.insert(outbox)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => SessionError::Store(e.into()),
                sled::transaction::TransactionError::Abort(()) => SessionError::Store(
                    crate::store::StoreError::Task("refund transaction aborted".to_owned()),
                ),
            })?;
        self.move_held(balance, false);
        crate::failpoint::crash("session-refund-queued", inner.records.raw());
        tracing::info!(sats = balance.0, "session ecash returned as a token");
        inner.publisher.outbox().deliver(&dm).await?;
        Ok(())
    }

    /// A melt quote paying `balance` (less the fee reserve) to `address`.
    async fn quote_refund(
        &self,
        wallet: &crate::wallet::Wallet,
        address: &str,
        balance: Sats,
    ) -> Result<(String, Sats), String> {
        // The fee reserve is only known from the quote: ask for everything, then once
        // more for what fits beside the reserve.
        let mut amount = balance;
        for _ in 0..2 {
            let invoice = self
                .inner
                .rules
                .lnurl
                .invoice_for(address, amount)
                .await
                .map_err(|e| e.to_string())?;
            let quote = wallet
                .melt_quote(PaymentMethod::BOLT11, invoice, None, None)
                .await
                .map_err(|e| e.to_string())?;
            let reserve = Sats::from(quote.fee_reserve);
            if amount
                .checked_add(reserve)
                .is_ok_and(|debit| debit <= balance)
            {
                return Ok((quote.id, amount));
            }
            match balance.checked_sub(reserve) {
                Some(smaller) if smaller > Sats::ZERO => amount = smaller,
                _ => break,
            }
        }
        Err(format!(
            "{balance} sat does not cover the Lightning fee reserve"
        ))
    }

    /// `Melting`: pays the recorded quote, or reads how the mint settled it. True when it
    /// was paid; false while the mint still has it pending, or when it failed (back to
    /// `Closing`, tried again next pass).
    async fn settle_melt(&self, id: &str, mut record: SessionRecord) -> Result<bool, SessionError> {
        let wallet = self.wallet(id).await?;
        let Some(super::MeltRef { quote, amount }) = record.melt.clone() else {
            return Err(SessionError::Store(crate::store::StoreError::Task(
                "a melting session without its quote".to_owned(),
            )));
        };
        let state = crate::wallet::melt_state(&wallet, &quote).await;
        let paid = match state {
            Ok(MeltQuoteState::Paid) => true,
            Ok(MeltQuoteState::Pending) => return Ok(false),
            Ok(MeltQuoteState::Unpaid) => self.melt(&wallet, &quote).await?,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "the mint's state of a session refund is unknown");
                return Ok(false);
            }
        };
        let paid = match paid {
            true => true,
            false => match crate::wallet::melt_state(&wallet, &quote).await {
                Ok(MeltQuoteState::Paid) => true,
                Ok(MeltQuoteState::Unpaid | MeltQuoteState::Failed) => false,
                _ => return Ok(false),
            },
        };
        record.melt = None;
        let record = if paid {
            record.returned = record
                .returned
                .checked_add(amount)
                .unwrap_or(record.returned);
            self.move_held(amount, false);
            // Paid once: the change goes back as a token, and the address is forgotten.
            record.refund_to = None;
            tracing::info!(sats = amount.0, "session ecash returned over Lightning");
            record.moved(SessionEvent::MeltPaid)?
        } else {
            record.melt_failures += 1;
            record.moved(SessionEvent::MeltFailed)?
        };
        self.inner.records.insert(id.as_bytes(), &record)?;
        // A failed payment is tried again on the next pass, not at once.
        Ok(paid)
    }

    /// Pays `quote` from the wallet; true when the mint settled it within [`MELT_WAIT`].
    async fn melt(
        &self,
        wallet: &crate::wallet::Wallet,
        quote: &str,
    ) -> Result<bool, SessionError> {
        let prepared = match wallet.prepare_melt(quote, Default::default()).await {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::warn!(error = %e, "a session refund melt could not be prepared");
                return Ok(false);
            }
        };
        match prepared.confirm_prefer_async().await {
            Ok(cdk::wallet::MeltOutcome::Paid(_)) => Ok(true),
            Ok(cdk::wallet::MeltOutcome::Pending(pending)) => Ok(matches!(
                tokio::time::timeout(MELT_WAIT, pending).await,
                Ok(Ok(_))
            )),
            Err(e) => {
                tracing::warn!(error = %e, "a session refund melt failed");
                Ok(false)
            }
        }
    }
}
