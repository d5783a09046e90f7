//! What can go wrong in the escrow, refusals (safe to show) apart from failures.

use super::refusal::EscrowRefusal;
use super::state::InvalidTransition;
use crate::market::MerchantError;
use crate::outbound::PublishError;
use crate::store::StoreError;
use crate::vault::VaultError;

/// Escrow failures that are not refusals.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// Not done, for a reason the asker may read.
    #[error(transparent)]
    Refused(#[from] EscrowRefusal),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mint or the wallet.
    #[error("wallet: {0}")]
    Wallet(#[from] cdk::Error),
    /// Merchant registry.
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    /// Signing a message to a buyer or a merchant.
    #[error("signing: {0}")]
    Sign(#[from] PublishError),
    /// A message that cannot be sent even shortened (over NIP-44's or the relays' limit).
    #[error("a message cannot be sent: {0}")]
    Unsendable(String),
    /// Encoding a message or a listing.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// Sealing or opening a buyer's shipping details.
    #[error("shipping details: {0}")]
    Vault(#[from] VaultError),
    /// An order moved in a way its state machine does not allow: a bug, never ignored.
    #[error(transparent)]
    IllegalMove(#[from] InvalidTransition),
    /// A payout or refund moved in a way its saga does not allow: a bug, never ignored.
    #[error(transparent)]
    IllegalSagaMove(#[from] super::saga::InvalidMove),
    /// soko's own records disagree with themselves or the wallet (a sum out of range, a
    /// stored key that does not read back, a record that vanished).
    #[error("books: {0}")]
    Books(String),
    /// The notices of a paid order to bridges and agents.
    #[error("paid-order notices: {0}")]
    Notice(#[from] super::notify::NoticeError),
}
