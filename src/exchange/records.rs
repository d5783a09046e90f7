//! What sled keeps about an offer (tree `exchange/offers`). The bill's details and the
//! receipt are sealed with the vault: a copy of sled alone does not show who is paid.

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};

use super::amounts::{Amounts, Leg, Outcome, Side};
use super::ports::Invoice;
use super::state::{IllegalMove, OfferEvent, OfferState};

/// One offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferRecord {
    /// Its public id (the book's `d`).
    pub id: String,
    /// Where it stands.
    pub state: OfferState,
    /// When the maker made it.
    pub created_at: u64,
    /// When the current window ends (`0`: no window).
    pub deadline: u64,
    /// The maker.
    pub maker: Trader,
    /// The current taker, once claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker: Option<Trader>,
    /// What is offered.
    pub terms: Terms,
    /// Escrow, bonds and fees.
    pub amounts: Amounts,
    /// The bill ([`Bill`] as JSON), sealed.
    pub bill: String,
    /// The maker's invoice (`None`: funded from the maker's session as it was, by a
    /// merchant's balance over USSD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maker_invoice: Option<Invoice>,
    /// The current taker's bond invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_invoice: Option<Invoice>,
    /// The receipt ([`Receipt`] as JSON), sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// The issue, once one is marked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<Issue>,
    /// How the money was divided, once it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Money to move, recorded before it moves; each done once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<Transfer>,
    /// Claims so far (each gets its own transfer ids).
    #[serde(default)]
    pub claims: u32,
    /// When it was completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
    /// Invoices whose window passed unpaid but which the mint still honours: a payment
    /// landing late is still minted into its session (given back when the session ends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<LateInvoice>,
    /// Every session this offer ever held (the maker's, each taker's).
    #[serde(default)]
    pub involved: Vec<String>,
}

/// An invoice paid too late to count, watched until the mint stops honouring it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateInvoice {
    /// The session it pays into.
    pub session: String,
    /// The invoice.
    pub invoice: Invoice,
}

impl OfferRecord {
    /// The record after `event`, or why it cannot take it.
    pub fn moved(mut self, event: OfferEvent) -> Result<Self, IllegalMove> {
        self.state = super::state::transition(self.state, event)?;
        Ok(self)
    }

    /// The session on `side`, when that side is there.
    pub fn trader(&self, side: Side) -> Option<&Trader> {
        match side {
            Side::Maker => Some(&self.maker),
            Side::Taker => self.taker.as_ref(),
        }
    }

    /// True while money still has to move (or may still arrive).
    pub fn settling(&self) -> bool {
        self.transfers.iter().any(|t| !t.done) || !self.late.is_empty()
    }

    /// Sessions the offer still needs held: the two sides until it is final, the source of
    /// every transfer not done, the target of every late invoice.
    pub fn needs(&self, session: &str) -> bool {
        let side = !self.state.is_final()
            && (self.maker.session == session
                || self.taker.as_ref().is_some_and(|t| t.session == session));
        side || self.transfers.iter().any(|t| {
            !t.done
                && (t.from_session == session || t.to == Destination::Session(session.to_owned()))
        }) || self.late.iter().any(|l| l.session == session)
    }
}

/// One side of a trade: a private session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trader {
    /// The session id.
    pub session: String,
    /// The session's key (DMs go there).
    pub key: PublicKey,
    /// Reputation tokens staked, and the blinded outputs for their return.
    #[serde(default)]
    pub stake: Stake,
}

/// Reputation staked by one side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stake {
    /// Tokens burned when staking.
    pub staked: u32,
    /// Blinded outputs (`B_` hex) to sign when tokens come back, at most `staked + 1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}

/// The offer's public terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// The bill's amount, as the maker wrote it.
    pub fiat_amount: String,
    /// ISO 4217, upper case.
    pub currency: String,
    /// The provider's id.
    pub provider: String,
    /// The provider's name, for the book.
    pub provider_name: String,
    /// Percent over the rate (0 when the maker named the sats).
    pub premium: i32,
}

/// The bill, private until a taker's bond is paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bill {
    /// What the reference is (`paybill`, `till`, …).
    pub kind: String,
    /// Paybill/till/account/phone number.
    pub reference: String,
    /// An account number or name, a memo to quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The taker's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The confirmation text (e.g. the M-Pesa SMS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A reference to an image (a URL or hash the taker serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When it was submitted.
    pub at: u64,
}

/// An issue marked on an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// Who marked it.
    pub by: Side,
    /// When.
    pub at: u64,
    /// The maker's registered key, once revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maker_key: Option<PublicKey>,
    /// The taker's registered key, once revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_key: Option<PublicKey>,
    /// What each side said, sealed, in order.
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    /// The state the offer was in when the issue was marked.
    pub from: OfferState,
}

impl Issue {
    /// The registered key `side` revealed.
    pub fn key(&self, side: Side) -> Option<PublicKey> {
        match side {
            Side::Maker => self.maker_key,
            Side::Taker => self.taker_key,
        }
    }
}

/// One statement in a dispute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Who said it.
    pub side: Side,
    /// When.
    pub at: u64,
    /// What, sealed.
    pub text: String,
}

/// A movement of ecash, recorded before it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// What moves, from which side, to whom.
    pub leg: Leg,
    /// The session it leaves.
    pub from_session: String,
    /// Where it goes.
    pub to: Destination,
    /// The id the session wallet makes its token under (the same token on every retry).
    pub op: String,
    /// Done.
    pub done: bool,
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// It stays in its own session (given back when the session ends).
    Stays,
    /// Into another session's wallet.
    Session(String),
    /// soko's fee wallet.
    House,
    /// A token locked (NUT-11) to a revealed registered key, sent by DM to a session key.
    Locked {
        /// The key that alone can redeem it.
        key: PublicKey,
        /// The session key the DM goes to.
        dm_to: PublicKey,
    },
}
