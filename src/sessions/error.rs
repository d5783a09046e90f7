//! What the sessions domain answers when it will not, or cannot, do something.

use super::bat::{BatRefusal, MintUnavailable};
use super::state::IllegalMove;
use crate::store::StoreError;

/// Why soko will not open, use or close a session. Each has a stable wire code
/// (`kinds/sessions.md`), given by the one mapping in `commands/`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    /// The token is not usable: malformed, from another mint, or a DLEQ or signature that
    /// does not verify.
    #[error("{0}")]
    BadToken(String),
    /// The token was already used.
    #[error("this blind auth token was already used; take a fresh one")]
    TokenSpent,
    /// soko's mint issues no blind auth tokens (or protects nothing soko can burn one on).
    #[error("{0}")]
    AuthUnsupported(String),
    /// The mint could not be asked; nothing was spent.
    #[error("{0}; nothing was spent, try again")]
    MintUnavailable(String),
    /// No session has this id for the sender (another key's session is not told apart).
    #[error("no such session for this key")]
    Unknown,
    /// The session ran out of time.
    #[error("this session has expired; open a new one")]
    Expired,
    /// The session was closed.
    #[error("this session is closed; open a new one")]
    Closed,
    /// The command runs only inside a session (envelope field `session`).
    #[error("this command runs inside a session: name it in the envelope's \"session\"")]
    Required,
    /// The refund Lightning address is not one soko can pay.
    #[error("refund_to: {0}")]
    RefundAddress(String),
    /// A deposited token was not taken.
    #[error("deposit: {0}")]
    Deposit(String),
    /// An open trade holds the session's ecash.
    #[error(
        "an open trade or dispute holds this session's ecash: it can be closed once that ends"
    )]
    Held,
}

impl From<BatRefusal> for SessionRefusal {
    fn from(refusal: BatRefusal) -> Self {
        match refusal {
            BatRefusal::Invalid(why) => Self::BadToken(why),
            BatRefusal::Spent => Self::TokenSpent,
            BatRefusal::Unsupported(why) => Self::AuthUnsupported(why),
        }
    }
}

impl From<MintUnavailable> for SessionRefusal {
    fn from(e: MintUnavailable) -> Self {
        Self::MintUnavailable(e.to_string())
    }
}

/// Failures of the sessions domain: a refusal for the sender, or soko failing.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The sender asked for something soko will not do.
    #[error(transparent)]
    Refused(#[from] SessionRefusal),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A session wallet (cdk) failed.
    #[error("session wallet: {0}")]
    Wallet(#[from] cdk::Error),
    /// A session wallet could not be opened or deleted.
    #[error(transparent)]
    WalletStore(#[from] crate::wallet::WalletError),
    /// A refund DM could not be sealed or queued.
    #[error(transparent)]
    Publish(#[from] crate::outbound::PublishError),
    /// A stored secret (refund address) could not be sealed or opened.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    /// The stored state does not allow the move: a bug or a second runner.
    #[error(transparent)]
    Illegal(#[from] IllegalMove),
    /// A purse call (the exchange's money in a session) that cannot be carried out as asked.
    #[error(transparent)]
    Purse(#[from] super::purse::PurseError),
}

impl From<BatRefusal> for SessionError {
    fn from(refusal: BatRefusal) -> Self {
        Self::Refused(refusal.into())
    }
}
