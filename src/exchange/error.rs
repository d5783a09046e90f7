//! The exchange's refusals (the user's doing, answered as they are) and failures (soko's).

use super::ports::PurseError;
use super::state::{IllegalMove, OfferState};
use crate::store::StoreError;

/// Why the exchange will not do what a user asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeRefusal {
    /// No such offer, or not one this session may see (the two are not told apart).
    #[error("no such offer")]
    UnknownOffer,
    /// The offer is not in a state that allows this.
    #[error("the offer is {}: {what}", state.name())]
    WrongState {
        /// Where it stands.
        state: OfferState,
        /// What cannot happen.
        what: &'static str,
    },
    /// Only the other side may do this.
    #[error("only the {0} may do this")]
    NotYourPart(&'static str),
    /// The fiat amount is malformed or out of bounds.
    #[error("fiat_amount: {0}")]
    Fiat(String),
    /// The currency is malformed, unknown to the provider, or has no rate.
    #[error("currency: {0}")]
    Currency(String),
    /// The provider or the bill is refused.
    #[error("bill: {0}")]
    Bill(String),
    /// The premium is out of bounds.
    #[error("premium must be between {min} and {max} percent")]
    Premium {
        /// Lowest.
        min: i32,
        /// Highest.
        max: i32,
    },
    /// The sats asked are out of bounds.
    #[error("sats: {0}")]
    Sats(String),
    /// A maker cannot take its own offer.
    #[error("this session made the offer; a taker is someone else")]
    OwnOffer,
    /// The session has as many open offers and claims as allowed.
    #[error("this session has {0} open offers or claims already; finish one first")]
    TooManyOpen(usize),
    /// Marking an issue or disputing needs the registered key revealed.
    #[error("marking an issue or disputing reveals your registered key to soko: sign a reveal event (kind 29471) with it and send it as \"reveal\" to go on")]
    RevealRequired,
    /// The reveal event is not acceptable.
    #[error("reveal: {0}")]
    Reveal(String),
    /// The revealed key never registered.
    #[error("reveal: the key that signed it is not registered with soko")]
    NotRegistered,
    /// The reveal event was used before.
    #[error("reveal: this event was already presented")]
    RevealReused,
    /// Reputation tokens refused.
    #[error("reputation: {0}")]
    Reputation(String),
    /// A receipt needs text or an image reference.
    #[error("a receipt needs \"text\" or \"image\"")]
    EmptyReceipt,
    /// The payout address is refused.
    #[error("{0}")]
    Payout(String),
    /// A provider an admin put is refused.
    #[error("provider: {0}")]
    Provider(String),
}

/// Why an exchange operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The user's doing.
    #[error(transparent)]
    Refused(#[from] ExchangeRefusal),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session wallets.
    #[error(transparent)]
    Purse(#[from] PurseError),
    /// Sealing or publishing.
    #[error("publish: {0}")]
    Publish(String),
    /// The vault.
    #[error("vault: {0}")]
    Vault(String),
    /// A bug: a move the table refuses was attempted.
    #[error(transparent)]
    Illegal(#[from] IllegalMove),
    /// Anything else soko got wrong.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::vault::VaultError> for ExchangeError {
    fn from(e: crate::vault::VaultError) -> Self {
        Self::Vault(e.to_string())
    }
}

impl From<crate::outbound::PublishError> for ExchangeError {
    fn from(e: crate::outbound::PublishError) -> Self {
        Self::Publish(e.to_string())
    }
}
