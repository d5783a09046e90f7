//! Purses: ecash moved in and out of a session's wallet on behalf of soko's own services
//! (the exchange holds escrow and bonds in the wallets of both parties' sessions).
//!
//! Every call is keyed by session id, not by a [`super::Live`] session: the exchange acts on
//! both parties' sessions, and on a session past its expiry while a hold keeps it open.
//! Every call takes the session's stripe lock, as a deposit and each step of the refund saga
//! do: ecash that enters a wallet before its session ends goes back with the refund, and none
//! enters after. A session whose refund has begun takes in and gives out nothing.
//!
//! Money is recorded in sled before it moves, so a retry (after a crash too) repeats nothing:
//! - [`Sessions::collect`] mints a quote through the wallet's own mint saga (resumed after a
//!   crash by cdk) and records what it minted in `sessions/collected`; a quote the wallet
//!   already holds as issued is answered from the wallet, never minted again;
//! - [`Sessions::token`] records the wallet's send operation under the caller's `op` in
//!   `sessions/tokens` before the token is made, then the token itself (sealed with the vault:
//!   it is bearer money) once made. A crash between the two is read back from the wallet
//!   ([`crate::wallet::recorded_token`]). One op, one token, for ever.

use cdk::amount::SplitTarget;
use cdk::nuts::{MintQuoteState, PaymentMethod};
use cdk::wallet::SendOptions;
use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};

use super::{EndReason, SessionError, SessionRecord, SessionRefusal, SessionState, Sessions};
use crate::money::Sats;
use crate::wallet::{RecordedTokenError, Wallet};

/// A Lightning invoice paying into a session's wallet: a NUT-04 mint quote of that wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The mint quote's id, to [`Sessions::collect`] once paid.
    pub quote: String,
    /// The BOLT11 invoice to pay.
    pub bolt11: String,
    /// When the mint stops taking payment for it (unix seconds; 0 when the mint set none).
    pub expires_at: u64,
}

/// What [`Sessions::collect`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// The quote was paid and its ecash is in the session's wallet (now or before).
    Minted(Sats),
    /// Not paid yet, and still payable.
    Unpaid,
    /// Not paid, and past its expiry by soko's clock.
    Expired,
}

/// A purse call that soko cannot carry out as asked (a caller's slip or an operation still
/// settling), as opposed to a refusal for a user.
#[derive(Debug, thiserror::Error)]
pub enum PurseError {
    /// The quote is not one the session's wallet asked for.
    #[error("quote {0} is not one of this session's invoices")]
    UnknownQuote(String),
    /// `op` already made a token, of another amount or lock.
    #[error("operation {op:?} already made a token of {made}, not of {asked} to that lock")]
    OpReused {
        /// The caller's operation name.
        op: String,
        /// What it made.
        made: Sats,
        /// What was asked now.
        asked: Sats,
    },
    /// The token of a recorded send cannot be read back yet.
    #[error(transparent)]
    Recorded(#[from] RecordedTokenError),
    /// The lock key is not one NUT-11 takes.
    #[error(transparent)]
    Lock(#[from] crate::wallet::P2pkError),
}

/// A token leaving a session, as `sessions/tokens` keeps it (keyed by session id and op).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SentRecord {
    /// The wallet's send operation id, recorded before the token is made.
    operation: String,
    /// What the receiver gets.
    amount: Sats,
    /// The key it is locked to (hex), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lock: Option<String>,
    /// The token, sealed with the vault, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// The key of `(id, what)` in the purse trees. Session ids are soko's hex, so the NUL never
/// occurs in one and two pairs never share a key.
fn purse_key(id: &str, what: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 1 + what.len());
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    key.extend_from_slice(what.as_bytes());
    key
}

/// The refusal for a session no longer open.
fn not_open(record: &SessionRecord) -> SessionError {
    match record.ended.map(|e| e.reason) {
        Some(EndReason::Expired) => SessionRefusal::Expired.into(),
        _ => SessionRefusal::Closed.into(),
    }
}

impl Sessions {
    /// A Lightning invoice (a NUT-04 mint quote of the session's wallet) for `amount` into
    /// session `id`. Each call asks the mint for a new one.
    pub async fn invoice(&self, id: &str, amount: Sats) -> Result<Invoice, SessionError> {
        let _session = self.lock(id).await;
        let record = self.stored(id)?;
        if record.state != SessionState::Open {
            return Err(not_open(&record));
        }
        let wallet = self.wallet_created(id, record).await?;
        let quote = wallet
            .mint_quote(PaymentMethod::BOLT11, Some(amount.into()), None, None)
            .await;
        self.inner
            .metrics
            .wallet_op("session_mint_quote", quote.is_ok());
        let quote = quote?;
        Ok(Invoice {
            quote: quote.id,
            bolt11: quote.request,
            expires_at: quote.expiry,
        })
    }

    /// Mints quote `quote` into session `id` if it is paid. Idempotent: a quote already
    /// minted answers `Minted` with its amount again, also when a crash came between the
    /// mint and its record here; it is never minted twice (cdk's mint saga reserves the
    /// quote, and the mint signs a quote once). A paid quote is minted even past its expiry.
    pub async fn collect(&self, id: &str, quote: &str) -> Result<Collected, SessionError> {
        let _session = self.lock(id).await;
        let record = self.stored(id)?;
        let key = purse_key(id, quote);
        if let Some(amount) = self.inner.collected.get(&key)? {
            return Ok(Collected::Minted(amount));
        }
        if record.state != SessionState::Open {
            return Err(not_open(&record));
        }
        if !record.has_wallet {
            return Err(PurseError::UnknownQuote(quote.to_owned()).into());
        }
        let wallet = self.wallet(id).await?;
        let known = wallet.localstore.get_mint_quote(quote).await;
        if known.map_err(cdk::Error::from)?.is_none() {
            return Err(PurseError::UnknownQuote(quote.to_owned()).into());
        }
        let before = Sats::from(wallet.total_balance().await?);
        // Asks the mint, and finishes a mint of this quote a crash interrupted.
        let checked = wallet.check_mint_quote_status(quote).await?;
        let amount = Sats::from(checked.amount.unwrap_or(checked.amount_issued));
        match checked.state {
            MintQuoteState::Issued => {}
            MintQuoteState::Paid => {
                let minted = wallet.mint(quote, SplitTarget::default(), None).await;
                self.inner.metrics.wallet_op("session_mint", minted.is_ok());
                minted?;
            }
            MintQuoteState::Unpaid => {
                return Ok(
                    if checked.expiry != 0 && self.inner.clock.now() >= checked.expiry {
                        Collected::Expired
                    } else {
                        Collected::Unpaid
                    },
                )
            }
        }
        self.inner.collected.insert(&key, &amount)?;
        let after = Sats::from(wallet.total_balance().await?);
        // What entered in this call: a mint finished before a crash was counted by the
        // cleanup pass's sum since.
        if let Some(entered) = after.checked_sub(before) {
            self.move_held(entered, true);
        }
        tracing::info!(sats = amount.0, "a session invoice was collected");
        Ok(Collected::Minted(amount))
    }

    /// A Cashu token of exactly `amount` out of session `id`'s wallet, P2PK-locked (NUT-11,
    /// see [`crate::wallet::p2pk_lock`]) to `lock` when given. Idempotent per `(id, op)`:
    /// the first call records the wallet's send operation under `op` before making the
    /// token, and every later call (after a crash too) returns that same token, even once
    /// the session has ended. An `op` asked again with another amount or lock is refused.
    ///
    /// Fees: the receiver gets exactly `amount`. The session's wallet pays the swap that
    /// makes the token's proofs (always one for a locked token) and, through cdk's
    /// `include_fee`, the input fee the receiver's mint charges to redeem them (NUT-02);
    /// soko's dev mint charges neither.
    pub async fn token(
        &self,
        id: &str,
        amount: Sats,
        lock: Option<PublicKey>,
        op: &str,
    ) -> Result<String, SessionError> {
        let _session = self.lock(id).await;
        let record = self.stored(id)?;
        let key = purse_key(id, op);
        let lock_hex = lock.map(|key| key.to_hex());
        let recorded = self.inner.sent.get(&key)?;
        if let Some(sent) = &recorded {
            if sent.amount != amount || sent.lock != lock_hex {
                return Err(PurseError::OpReused {
                    op: op.to_owned(),
                    made: sent.amount,
                    asked: amount,
                }
                .into());
            }
            if let Some(sealed) = &sent.token {
                return Ok(self.inner.vault.unseal(sealed)?);
            }
        }
        if let Some(mut sent) = recorded {
            // Recorded, and no token stored: the send made one before a crash, or never did.
            // Only a wallet still there can tell (a refunded session's is deleted, and
            // opening it would make its trees again).
            let wallet_there = matches!(
                record.state,
                SessionState::Open | SessionState::Closing | SessionState::Melting
            );
            if record.has_wallet && wallet_there {
                let wallet = self.wallet(id).await?;
                match crate::wallet::recorded_token(&wallet, &sent.operation)
                    .await
                    .map_err(PurseError::from)?
                {
                    Some(token) => {
                        sent.token = Some(self.inner.vault.seal(&token)?);
                        self.inner.sent.insert(&key, &sent)?;
                        return Ok(token);
                    }
                    // That send never made a token: nothing left the wallet.
                    None => self.inner.sent.remove(&key)?,
                }
            } else if record.state == SessionState::Open {
                self.inner.sent.remove(&key)?;
            }
        }
        if record.state != SessionState::Open {
            return Err(not_open(&record));
        }
        if !record.has_wallet {
            return Err(cdk::Error::InsufficientFunds.into());
        }
        let wallet = self.wallet(id).await?;
        let conditions = lock
            .as_ref()
            .map(crate::wallet::p2pk_lock)
            .transpose()
            .map_err(PurseError::from)?;
        let before = Sats::from(wallet.total_balance().await?);
        let options = SendOptions {
            conditions,
            include_fee: true,
            ..Default::default()
        };
        let prepared = wallet.prepare_send(amount.into(), options).await?;
        let mut sent = SentRecord {
            operation: prepared.operation_id().to_string(),
            amount,
            lock: lock_hex,
            token: None,
        };
        if let Err(e) = self.inner.sent.insert(&key, &sent) {
            if let Err(e) = prepared.cancel().await {
                tracing::warn!(error = %e, "could not release a prepared token; released at next start");
            }
            return Err(e.into());
        }
        let swapped = !prepared.proofs_to_swap().is_empty();
        let made = prepared.confirm(None).await;
        self.inner.metrics.wallet_op("session_send", made.is_ok());
        let token = made?.to_string();
        if swapped {
            crate::failpoint::crash("session-swapped-token-made", self.inner.sent.raw());
        }
        sent.token = Some(self.inner.vault.seal(&token)?);
        self.inner.sent.insert(&key, &sent)?;
        let after = Sats::from(wallet.total_balance().await?);
        if let Some(left) = before.checked_sub(after) {
            self.move_held(left, false);
        }
        tracing::info!(
            sats = amount.0,
            locked = lock.is_some(),
            "a token left a session"
        );
        Ok(token)
    }

    /// The key that opened session `id` (DMs to it go there), whatever its state; `None`
    /// once the session is forgotten (its tombstone pruned) or for an id never opened.
    pub fn session_key(&self, id: &str) -> Result<Option<PublicKey>, SessionError> {
        Ok(self.inner.records.get(id.as_bytes())?.map(|r| r.key))
    }

    /// Session `id`'s wallet, recording first that it has one (so its trees are deleted
    /// with the session).
    async fn wallet_created(
        &self,
        id: &str,
        mut record: SessionRecord,
    ) -> Result<Wallet, SessionError> {
        if !record.has_wallet {
            record.has_wallet = true;
            self.inner.records.insert(id.as_bytes(), &record)?;
        }
        self.wallet(id).await
    }

    /// Forgets the purse records of session `id` (its tombstone is pruned).
    pub(super) fn forget_purse(&self, id: &str) -> Result<(), SessionError> {
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(0);
        for tree in [self.inner.collected.raw(), self.inner.sent.raw()] {
            for key in tree.scan_prefix(&prefix).keys() {
                let key = key.map_err(crate::store::StoreError::from)?;
                tree.remove(key).map_err(crate::store::StoreError::from)?;
            }
        }
        Ok(())
    }
}
