//! What the exchange needs from its peers, as small traits the wiring implements: the
//! sessions' wallets (where escrow and bonds are held) and the registry of long-term keys.
//! The exchange never names `sessions` or `agents` (`tests/layers.rs`).

use nostr_sdk::PublicKey;

use crate::money::Sats;

/// A Lightning invoice into a session's wallet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Invoice {
    /// The mint's quote id.
    pub quote: String,
    /// The bolt11 invoice.
    pub bolt11: String,
    /// When the mint stops honouring it.
    pub expires_at: u64,
}

/// What a check of an invoice found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// Paid and minted into the session (answered again on every later check).
    Minted(Sats),
    /// Not paid yet.
    Unpaid,
    /// The mint no longer honours it.
    Expired,
}

/// A failure of the session wallets: retried, never the user's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session wallet: {0}")]
pub struct PurseError(pub String);

/// The session wallets, by session id.
#[async_trait::async_trait]
pub trait Purses: Send + Sync {
    /// A Lightning invoice paying `amount` into session `session`.
    async fn invoice(&self, session: &str, amount: Sats) -> Result<Invoice, PurseError>;
    /// Mints `quote` into `session` if it is paid; idempotent.
    async fn collect(&self, session: &str, quote: &str) -> Result<Collected, PurseError>;
    /// A token of `amount` out of `session`, locked to `lock` when given; the same token for
    /// the same `op` every time.
    async fn token(
        &self,
        session: &str,
        amount: Sats,
        lock: Option<PublicKey>,
        op: &str,
    ) -> Result<String, PurseError>;
    /// Takes a token soko made into `session`; a token already taken is not an error.
    async fn receive(&self, session: &str, token: &str) -> Result<(), PurseError>;
    /// Keeps `session` open past its expiry while `what` needs it.
    fn hold(&self, session: &str, what: &str) -> Result<(), PurseError>;
    /// Lifts the hold `what`.
    fn release(&self, session: &str, what: &str) -> Result<(), PurseError>;
    /// The key that opened `session` (where its DMs go).
    fn key(&self, session: &str) -> Result<Option<PublicKey>, PurseError>;
    /// Sets where `session`'s ecash goes when it ends (a Lightning address), or `None` for a
    /// token by DM. The address is checked; a refusal is the user's.
    fn set_payout(&self, session: &str, address: Option<&str>) -> Result<(), PayoutRefusal>;
}

/// A payout address soko will not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayoutRefusal {
    /// Not an address soko can pay.
    #[error("payout_to: {0}")]
    Address(String),
    /// The wallets failed.
    #[error(transparent)]
    Purse(#[from] PurseError),
}

/// Who registered with soko (a reveal must come from a registered key).
pub trait Registered: Send + Sync {
    /// True when `key` registered (by an invite).
    fn is_registered(&self, key: &PublicKey) -> bool;
}
