//! Paying a merchant's balance out over Lightning: resolve the merchant's Lightning address
//! or LNURL-pay link to an invoice ([`crate::lnurl`]), then melt from the escrow wallet. A merchant
//! without one that named an npub for tokens gets the balance as a Cashu token DM instead
//! (the send's operation id recorded first, see [`super::tokens`]).
//!
//! The merchant's balance is debited by the amount plus the mint's fee reserve in the same
//! sled transaction that records the payout as pending in the ledger; the melt follows.
//! A melt that fails gives the debit back (compensation); change from an unused fee reserve
//! is credited back. On start, a payout still pending is settled from the mint's answer.
//! The states a payout record goes through and the events that move it are
//! [`super::saga`]'s; every settlement asks its transition function.

use cdk::nuts::{MeltQuoteState, PaymentMethod};
use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::books::Melt;
use super::refusal::PayoutFailure;
use super::saga::{payout_transition, InvalidMove, PayoutEvent, PayoutState};
use super::service::{tx_error, EscrowError, EscrowService};
use crate::money::Sats;

/// A payout in flight or settled.
///
/// Stored as JSON with its `state` (see [`super::saga`]) and, for records written before the
/// state existed and for an older soko reading this one, `done`: a record without `state`
/// reads as settled when `done`, as debited otherwise (melt or token by `token_to`). The keys
/// are stored as hex, as they always were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredPayout", into = "StoredPayout")]
pub struct PayoutRecord {
    /// The merchant paid.
    pub merchant: PublicKey,
    /// Amount plus fee reserve taken from the balance.
    pub debited: Sats,
    /// Amount the invoice pays.
    pub amount: Sats,
    /// How far the payout got.
    pub state: PayoutState,
    /// For a token payout: the key the token is DM'd to. The record's key is then the
    /// wallet's send operation id instead of a melt quote id.
    pub token_to: Option<PublicKey>,
}

/// [`PayoutRecord`] as it is on disk, in either form.
#[derive(Serialize, Deserialize)]
struct StoredPayout {
    merchant: PublicKey,
    debited: Sats,
    amount: Sats,
    #[serde(default)]
    done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_to: Option<PublicKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<PayoutState>,
}

impl From<StoredPayout> for PayoutRecord {
    fn from(stored: StoredPayout) -> Self {
        let token = stored.token_to.is_some();
        let state = stored.state.unwrap_or(match (stored.done, token) {
            (true, true) => PayoutState::Sent,
            (true, false) => PayoutState::Paid,
            (false, true) => PayoutState::TokenDebited,
            (false, false) => PayoutState::MeltDebited,
        });
        Self {
            merchant: stored.merchant,
            debited: stored.debited,
            amount: stored.amount,
            state,
            token_to: stored.token_to,
        }
    }
}

impl From<PayoutRecord> for StoredPayout {
    fn from(record: PayoutRecord) -> Self {
        Self {
            merchant: record.merchant,
            debited: record.debited,
            amount: record.amount,
            done: !record.state.in_flight(),
            token_to: record.token_to,
            state: Some(record.state),
        }
    }
}

impl PayoutRecord {
    /// The record moved by `event`, if the saga allows it.
    fn moved(mut self, event: PayoutEvent) -> Result<Self, InvalidMove> {
        self.state = payout_transition(self.state, event)?;
        Ok(self)
    }
}

/// The outcome of a payout attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payout {
    /// The merchant has no Lightning address: the balance stays in soko.
    NotConfigured,
    /// Nothing to pay.
    Nothing,
    /// Paid.
    Sent {
        /// Received by the merchant.
        amount: Sats,
        /// Lightning fee paid.
        fee: Sats,
    },
    /// Sent as a Cashu token DM to the merchant's npub.
    Token(Sats),
    /// Taken from the balance and handed to the mint (or the wallet), whose answer was
    /// unclear: soko settles it from the mint's later answer, paid or given back to the
    /// balance. Not in the balance meanwhile.
    Pending(Sats),
    /// Not paid; the balance is intact.
    Failed(PayoutFailure),
}

impl EscrowService {
    /// Pays the merchant's whole balance to its Lightning address (or as a token to its npub),
    /// if it has one.
    ///
    /// Payouts run one at a time (`payouts` lock), so a balance only grows while one is being
    /// prepared; the LNURL and mint calls run outside the escrow lock, which is taken only to
    /// debit, settle or give back (orders keep flowing meanwhile).
    pub async fn pay_out(&self, merchant: PublicKey) -> Result<Payout, EscrowError> {
        let inner = &self.inner;
        let _payouts = inner.payouts_lock.lock().await;
        let profile = inner.merchants.get(&merchant)?;
        let balance = self.balance(&merchant)?;
        match (profile.lightning_address, profile.tokens_to) {
            (Some(destination), _) => {
                self.pay_out_lightning(merchant, &destination, balance)
                    .await
            }
            (None, Some(_)) if balance == Sats::ZERO => Ok(Payout::Nothing),
            (None, Some(npub)) => self.pay_out_token(merchant, &npub, balance).await,
            (None, None) => Ok(Payout::NotConfigured),
        }
    }

    /// Pays the merchant's whole balance to `destination` (a Lightning address or LNURL-pay
    /// link), e.g. one the merchant typed in over USSD.
    pub async fn pay_out_to(
        &self,
        merchant: PublicKey,
        destination: &str,
    ) -> Result<Payout, EscrowError> {
        let _payouts = self.inner.payouts_lock.lock().await;
        let balance = self.balance(&merchant)?;
        self.pay_out_lightning(merchant, destination, balance).await
    }

    /// Pays `balance` to `destination` over Lightning. Called with the payouts lock held.
    async fn pay_out_lightning(
        &self,
        merchant: PublicKey,
        destination: &str,
        balance: Sats,
    ) -> Result<Payout, EscrowError> {
        let inner = &self.inner;
        if balance == Sats::ZERO {
            return Ok(Payout::Nothing);
        }
        // The fee reserve is only known from the melt quote, so ask for the whole balance
        // first and, if amount + reserve does not fit, once more for balance - reserve.
        let mut amount = balance;
        let mut attempt = 0;
        let quote = loop {
            attempt += 1;
            let invoice = match inner.lnurl.invoice_for(destination, amount).await {
                Ok(invoice) => invoice,
                Err(e) => return Ok(Payout::Failed(PayoutFailure::Destination(e.to_string()))),
            };
            let quote = match inner
                .wallet
                .melt_quote(PaymentMethod::BOLT11, invoice, None, None)
                .await
            {
                Ok(quote) => quote,
                Err(e) => return Ok(Payout::Failed(PayoutFailure::MintRefused(e.to_string()))),
            };
            let reserve = Sats::from(quote.fee_reserve);
            if amount
                .checked_add(reserve)
                .is_ok_and(|debit| debit <= balance)
            {
                break quote;
            }
            match balance.checked_sub(reserve) {
                Some(smaller) if smaller > Sats::ZERO && attempt < 2 => amount = smaller,
                _ => return Ok(Payout::Failed(PayoutFailure::BelowFeeReserve(balance))),
            }
        };
        let debited = amount
            .checked_add(Sats::from(quote.fee_reserve))
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        let record = PayoutRecord {
            merchant,
            debited,
            amount,
            state: PayoutState::MeltDebited,
            token_to: None,
        };
        self.debit_payout(&merchant, &quote.id, &record).await?;
        tracing::info!(
            sats = amount.0,
            "paying a merchant's balance out over Lightning"
        );

        match self.melt_booking_swap_fee(&quote.id).await {
            Ok(Melt::Paid(finalized)) => {
                let fee = Sats::from(finalized.fee_paid());
                self.finish_payout(&merchant, &quote.id, fee).await?;
                Ok(Payout::Sent { amount, fee })
            }
            Ok(Melt::Pending) => {
                tracing::warn!(
                    sats = amount.0,
                    "payout not settled by the mint yet; will settle from its later answer"
                );
                Ok(Payout::Pending(amount))
            }
            Err(e) => {
                // Only a payment the mint reports unpaid is given back; anything unclear
                // stays pending for `tick` to settle from the mint's later answer.
                let state = self.melt_state(&quote.id).await;
                if matches!(state, Ok(MeltQuoteState::Unpaid | MeltQuoteState::Failed)) {
                    self.undo_payout(&merchant, &quote.id, PayoutEvent::MintRefused)
                        .await?;
                    Ok(Payout::Failed(PayoutFailure::PaymentFailed(e.to_string())))
                } else {
                    tracing::warn!(error = %e, "payout outcome unclear; will settle from the mint's state");
                    Ok(Payout::Pending(amount))
                }
            }
        }
    }

    /// Records the payout as pending and takes its debit from the balance, in one
    /// transaction under the escrow lock.
    async fn debit_payout(
        &self,
        merchant: &PublicKey,
        key: &str,
        record: &PayoutRecord,
    ) -> Result<(), EscrowError> {
        let _guard = self.inner.lock.lock().await;
        let balance = self.balance(merchant)?;
        let remaining = balance.checked_sub(record.debited).ok_or_else(|| {
            EscrowError::Books(format!(
                "a payout of {} exceeds the balance {balance}",
                record.debited
            ))
        })?;
        self.write_payout(merchant, key, record, remaining)
    }

    /// The payout record and the merchant's balance, in one transaction.
    fn write_payout(
        &self,
        merchant: &PublicKey,
        key: &str,
        record: &PayoutRecord,
        balance: Sats,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let encoded = inner.payouts.encode(record)?;
        let balance = inner.balances.encode(&balance)?;
        let merchant_bytes = merchant.to_bytes();
        (inner.payouts.raw(), inner.balances.raw())
            .transaction(|(payouts, balances)| {
                payouts.insert(key.as_bytes(), encoded.clone())?;
                balances.insert(merchant_bytes.as_slice(), balance.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)
    }

    /// The stored payout `key`, which must be there.
    fn stored_payout(&self, key: &str) -> Result<PayoutRecord, EscrowError> {
        self.inner
            .payouts
            .get(key.as_bytes())?
            .ok_or_else(|| EscrowError::Books(format!("payout {key} vanished")))
    }

    /// `Paid`: the unused fee reserve back to the balance. The stored record is read under
    /// the lock, so a payout settled elsewhere is an illegal move, not a second credit.
    async fn finish_payout(
        &self,
        merchant: &PublicKey,
        quote_id: &str,
        fee: Sats,
    ) -> Result<(), EscrowError> {
        let _guard = self.inner.lock.lock().await;
        let record = self.stored_payout(quote_id)?.moved(PayoutEvent::MintPaid)?;
        let spent = record
            .amount
            .checked_add(fee)
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        let unused = record.debited.checked_sub(spent).unwrap_or(Sats::ZERO);
        let balance = self
            .balance(merchant)?
            .checked_add(unused)
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        self.write_payout(merchant, quote_id, &record, balance)
    }

    /// `GivenBack` (by `event`: the mint refused the melt, or the send made no token): the
    /// whole debit back to the balance.
    async fn undo_payout(
        &self,
        merchant: &PublicKey,
        key: &str,
        event: PayoutEvent,
    ) -> Result<(), EscrowError> {
        let _guard = self.inner.lock.lock().await;
        let record = self.stored_payout(key)?.moved(event)?;
        let balance = self
            .balance(merchant)?
            .checked_add(record.debited)
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        self.write_payout(merchant, key, &record, balance)
    }

    /// The whole balance as a Cashu token DM'd (NIP-17, from the merchant's managed key) to
    /// the merchant's own npub. Called with the payouts lock held.
    async fn pay_out_token(
        &self,
        merchant: PublicKey,
        npub: &str,
        balance: Sats,
    ) -> Result<Payout, EscrowError> {
        let to = PublicKey::parse(npub)
            .map_err(|e| EscrowError::Books(format!("stored payout npub: {e}")))?;
        let prepared = match self.prepare_token(balance).await {
            Ok(prepared) => prepared,
            Err(e) => return Ok(Payout::Failed(PayoutFailure::Token(e.to_string()))),
        };
        let operation = prepared.operation.clone();
        let record = PayoutRecord {
            merchant,
            debited: balance,
            amount: balance,
            state: PayoutState::TokenDebited,
            token_to: Some(to),
        };
        if let Err(e) = self.debit_payout(&merchant, &operation, &record).await {
            prepared.cancel().await;
            return Err(e);
        }
        match prepared.confirm().await {
            Ok(token) => {
                self.send_token_payout(&merchant, &operation, &token)
                    .await?;
                tracing::info!(sats = balance.0, "paid a merchant's balance out as a token");
                Ok(Payout::Token(balance))
            }
            // Whether the token exists is for the wallet's record to say: settled on a later
            // pass (given back if it was never made).
            Err(e) => {
                tracing::warn!(error = %e, "token payout unclear; will settle from the wallet's record");
                Ok(Payout::Pending(balance))
            }
        }
    }

    /// `Sent`: the token's DM queued, in one transaction with the move; then sent.
    async fn send_token_payout(
        &self,
        merchant: &PublicKey,
        operation: &str,
        token: &str,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let record = self
            .stored_payout(operation)?
            .moved(PayoutEvent::TokenMade)?;
        let to = record
            .token_to
            .ok_or_else(|| EscrowError::Books("token payout without a recipient".to_owned()))?;
        let text = format!(
            "Payout from soko: {} sat as Cashu ecash. Redeem it in any Cashu wallet:\n{token}",
            record.amount.0
        );
        let dm = inner
            .publisher
            .seal_dm(merchant, to, crate::outbound::Scheme::Nip17, &text)
            .await?;
        let encoded = inner.payouts.encode(&record)?;
        let queued = inner.outbox.stage(&dm)?;
        (inner.payouts.raw(), inner.outbox.raw())
            .transaction(|(payouts, outbox)| {
                payouts.insert(operation.as_bytes(), encoded.clone())?;
                queued.insert(outbox)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        inner.outbox.deliver(&dm).await?;
        Ok(())
    }

    /// The fee a melt paid, from the wallet's record of the completed payment; `None` when
    /// the wallet has none (the melt finished elsewhere than in this wallet's own flow).
    ///
    /// A melt finished before a crash (or by the wallet's recovery at start) got its change
    /// back into the wallet: counting the whole fee reserve as spent would leave that change
    /// in the wallet and in nobody's books.
    pub(super) async fn paid_melt_fee(&self, quote_id: &str) -> Option<Sats> {
        use cdk_common::wallet::{TransactionDirection, TransactionStatus};
        let transactions = match self
            .inner
            .wallet
            .list_transactions(Some(TransactionDirection::Outgoing))
            .await
        {
            Ok(transactions) => transactions,
            Err(e) => {
                tracing::warn!(error = %e, "the wallet's payments cannot be read; the fee reserve counts as spent");
                return None;
            }
        };
        transactions
            .into_iter()
            .find(|t| {
                t.quote_id.as_deref() == Some(quote_id) && t.status == TransactionStatus::Completed
            })
            .map(|t| Sats::from(t.fee))
    }

    /// The payout recorded under `key` (its melt quote id, or its send operation id for a
    /// token), in whatever state it is.
    pub fn payout(&self, key: &str) -> Result<Option<PayoutRecord>, EscrowError> {
        Ok(self.inner.payouts.get(key.as_bytes())?)
    }

    /// Settles payouts a crash or an unclear answer left pending.
    pub(super) async fn settle_payouts(&self) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let _payouts = inner.payouts_lock.lock().await;
        let pending: Vec<(sled::IVec, PayoutRecord)> = inner
            .payouts
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, p)| p.state.in_flight())
            .collect();
        for (key, record) in pending {
            let key = String::from_utf8_lossy(&key).into_owned();
            let merchant = record.merchant;
            if record.token_to.is_some() {
                match self.recorded_token(&key).await {
                    Ok(Some(token)) => {
                        self.send_token_payout(&merchant, &key, &token).await?;
                    }
                    Ok(None) => {
                        self.undo_payout(&merchant, &key, PayoutEvent::NoToken)
                            .await?
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot settle a token payout yet"),
                }
                continue;
            }
            match self.melt_state(&key).await {
                Ok(MeltQuoteState::Paid) => {
                    let reserve = record
                        .debited
                        .checked_sub(record.amount)
                        .unwrap_or(Sats::ZERO);
                    let fee = self.paid_melt_fee(&key).await.unwrap_or(reserve);
                    self.finish_payout(&merchant, &key, fee).await?;
                }
                Ok(MeltQuoteState::Unpaid | MeltQuoteState::Failed) => {
                    self.undo_payout(&merchant, &key, PayoutEvent::MintRefused)
                        .await?;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check a pending payout yet"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use nostr_sdk::Keys;

    fn read(json: &str) -> PayoutRecord {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    /// An old record as an earlier soko wrote it: the keys as hex strings it made itself.
    fn old(merchant: &PublicKey, fields: &str) -> String {
        format!(r#"{{"merchant":"{}",{fields}}}"#, merchant.to_hex())
    }

    #[test]
    fn a_record_written_before_the_saga_reads_as_its_state() {
        let (ab, cd) = (Keys::generate().public_key(), Keys::generate().public_key());
        let melt = old(&ab, r#""debited":105,"amount":100,"done":false"#);
        assert_eq!(read(&melt).state, PayoutState::MeltDebited);
        let paid = old(&ab, r#""debited":105,"amount":100,"done":true"#);
        assert_eq!(read(&paid).state, PayoutState::Paid);
        let token_to = format!(r#""token_to":"{}""#, cd.to_hex());
        let token = old(
            &ab,
            &format!(r#""debited":100,"amount":100,"done":false,{token_to}"#),
        );
        assert_eq!(read(&token).state, PayoutState::TokenDebited);
        let sent = old(
            &ab,
            &format!(r#""debited":100,"amount":100,"done":true,{token_to}"#),
        );
        assert_eq!(read(&sent).state, PayoutState::Sent);
    }

    #[test]
    fn a_record_with_hex_keys_reads_as_keys_and_is_written_back_as_the_same_hex() {
        let (merchant, to) = (Keys::generate().public_key(), Keys::generate().public_key());
        let json = format!(
            r#"{{"merchant":"{}","debited":100,"amount":100,"done":false,"token_to":"{}"}}"#,
            merchant.to_hex(),
            to.to_hex()
        );
        let record = read(&json);
        assert_eq!(record.merchant, merchant);
        assert_eq!(record.token_to, Some(to));
        // An older soko reading this one's record finds the hex it wrote.
        let written = serde_json::to_value(&record).unwrap_or_default();
        assert_eq!(written["merchant"], serde_json::json!(merchant.to_hex()));
        assert_eq!(written["token_to"], serde_json::json!(to.to_hex()));
        // A key that is not one is refused, not read as some other merchant.
        assert!(serde_json::from_str::<PayoutRecord>(
            r#"{"merchant":"ab","debited":1,"amount":1,"done":false}"#
        )
        .is_err());
    }

    #[test]
    fn a_record_keeps_its_state_and_says_done_for_an_older_reader() {
        for state in [
            PayoutState::MeltDebited,
            PayoutState::Paid,
            PayoutState::GivenBack,
        ] {
            let record = PayoutRecord {
                merchant: Keys::generate().public_key(),
                debited: Sats(105),
                amount: Sats(100),
                state,
                token_to: None,
            };
            let json = serde_json::to_value(&record).unwrap_or_default();
            assert_eq!(
                json["done"],
                serde_json::json!(!state.in_flight()),
                "{state:?}"
            );
            assert_eq!(read(&json.to_string()), record);
        }
    }
}
