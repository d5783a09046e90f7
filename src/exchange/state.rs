//! An offer's life as a pure state machine: every move the exchange makes is one
//! [`transition`], tested here over the whole table. State names are OpenPleb's, so its users
//! recognise them.

use serde::{Deserialize, Serialize};

/// Where an offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfferState {
    /// The maker's invoice (escrow + bond + fee) is out; only the maker sees the offer.
    Created,
    /// Paid: on the public book, waiting for a taker.
    InvoicePaid,
    /// A taker claimed it; the taker's bond invoice is out.
    Claimed,
    /// The taker's bond is paid; the taker has the bill's details and pays it.
    TakerBondPaid,
    /// The taker says the bill is paid; the maker checks.
    ReceiptSubmitted,
    /// The maker confirmed (or let the window pass): escrow to the taker, bonds back.
    Completed,
    /// Cancelled by the maker before any claim: everything back to the maker.
    Canceled,
    /// Not paid in time, or not taken in time (everything back to the maker).
    Expired,
    /// A party said something is wrong (and revealed its registered key).
    MarkedWithIssue,
    /// The other party conceded.
    Forfeit,
    /// The other party disputed too (or did not answer in time): an admin decides.
    Disputed,
    /// An admin decided.
    Resolved,
    /// soko could not go on with it (the mint refused the invoice).
    Error,
}

impl OfferState {
    /// True once nothing more can happen to the offer.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::Canceled
                | Self::Expired
                | Self::Forfeit
                | Self::Resolved
                | Self::Error
        )
    }

    /// Every state, for tables and metrics.
    pub const ALL: [OfferState; 13] = [
        Self::Created,
        Self::InvoicePaid,
        Self::Claimed,
        Self::TakerBondPaid,
        Self::ReceiptSubmitted,
        Self::Completed,
        Self::Canceled,
        Self::Expired,
        Self::MarkedWithIssue,
        Self::Forfeit,
        Self::Disputed,
        Self::Resolved,
        Self::Error,
    ];

    /// The wire name (`kinds/exchange.md`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::InvoicePaid => "INVOICE_PAID",
            Self::Claimed => "CLAIMED",
            Self::TakerBondPaid => "TAKER_BOND_PAID",
            Self::ReceiptSubmitted => "RECEIPT_SUBMITTED",
            Self::Completed => "COMPLETED",
            Self::Canceled => "CANCELED",
            Self::Expired => "EXPIRED",
            Self::MarkedWithIssue => "MARKED_WITH_ISSUE",
            Self::Forfeit => "FORFEIT",
            Self::Disputed => "DISPUTED",
            Self::Resolved => "RESOLVED",
            Self::Error => "ERROR",
        }
    }
}

/// What happens to an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferEvent {
    /// The maker's invoice was paid and minted into the maker's session.
    MakerPaid,
    /// The maker's invoice window passed unpaid.
    PayWindowOut,
    /// The maker withdrew a listed offer.
    Cancel,
    /// A listed offer found no taker in its window.
    ListingOut,
    /// A taker claimed it.
    Claim,
    /// The taker's bond invoice window passed unpaid: back on the book.
    ClaimOut,
    /// The taker's bond was paid.
    BondPaid,
    /// The taker did not submit a receipt in its window: the taker's bond is forfeited to the
    /// maker and the offer goes back on the book.
    ReceiptOut,
    /// The taker submitted a receipt.
    Receipt,
    /// The maker confirmed the receipt.
    Confirm,
    /// The maker did not answer the receipt in its window: the taker is paid (OpenPleb's rule).
    ConfirmOut,
    /// A party marked an issue.
    MarkIssue,
    /// The other party conceded.
    Concede,
    /// The other party disputed.
    Counter,
    /// Nobody answered the issue in its window: an admin decides.
    IssueOut,
    /// An admin resolved the dispute.
    Resolve,
    /// The mint would not issue an invoice.
    Fail,
}

/// A move the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an offer that is {} cannot take {event:?}", from.name())]
pub struct IllegalMove {
    /// The state it was in.
    pub from: OfferState,
    /// What was asked.
    pub event: OfferEvent,
}

/// The next state, or why there is none.
pub fn transition(from: OfferState, event: OfferEvent) -> Result<OfferState, IllegalMove> {
    use OfferEvent as E;
    use OfferState as S;
    let to = match (from, event) {
        (S::Created, E::MakerPaid) => S::InvoicePaid,
        (S::Created, E::PayWindowOut) => S::Expired,
        (S::Created, E::Fail) => S::Error,
        (S::InvoicePaid, E::Cancel) => S::Canceled,
        (S::InvoicePaid, E::ListingOut) => S::Expired,
        (S::InvoicePaid, E::Claim) => S::Claimed,
        (S::Claimed, E::ClaimOut) => S::InvoicePaid,
        (S::Claimed, E::BondPaid) => S::TakerBondPaid,
        (S::TakerBondPaid, E::Receipt) => S::ReceiptSubmitted,
        (S::TakerBondPaid, E::ReceiptOut) => S::InvoicePaid,
        (S::ReceiptSubmitted, E::Confirm | E::ConfirmOut) => S::Completed,
        (S::TakerBondPaid | S::ReceiptSubmitted, E::MarkIssue) => S::MarkedWithIssue,
        (S::MarkedWithIssue, E::Concede) => S::Forfeit,
        (S::MarkedWithIssue, E::Counter | E::IssueOut) => S::Disputed,
        (S::Disputed, E::Resolve) => S::Resolved,
        _ => return Err(IllegalMove { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OfferEvent as E;
    use OfferState as S;

    const EVENTS: [OfferEvent; 17] = [
        E::MakerPaid,
        E::PayWindowOut,
        E::Cancel,
        E::ListingOut,
        E::Claim,
        E::ClaimOut,
        E::BondPaid,
        E::ReceiptOut,
        E::Receipt,
        E::Confirm,
        E::ConfirmOut,
        E::MarkIssue,
        E::Concede,
        E::Counter,
        E::IssueOut,
        E::Resolve,
        E::Fail,
    ];

    /// Every allowed move, written out: any other pair must be refused.
    const ALLOWED: [(OfferState, OfferEvent, OfferState); 18] = [
        (S::Created, E::MakerPaid, S::InvoicePaid),
        (S::Created, E::PayWindowOut, S::Expired),
        (S::Created, E::Fail, S::Error),
        (S::InvoicePaid, E::Cancel, S::Canceled),
        (S::InvoicePaid, E::ListingOut, S::Expired),
        (S::InvoicePaid, E::Claim, S::Claimed),
        (S::Claimed, E::ClaimOut, S::InvoicePaid),
        (S::Claimed, E::BondPaid, S::TakerBondPaid),
        (S::TakerBondPaid, E::Receipt, S::ReceiptSubmitted),
        (S::TakerBondPaid, E::ReceiptOut, S::InvoicePaid),
        (S::TakerBondPaid, E::MarkIssue, S::MarkedWithIssue),
        (S::ReceiptSubmitted, E::Confirm, S::Completed),
        (S::ReceiptSubmitted, E::ConfirmOut, S::Completed),
        (S::ReceiptSubmitted, E::MarkIssue, S::MarkedWithIssue),
        (S::MarkedWithIssue, E::Concede, S::Forfeit),
        (S::MarkedWithIssue, E::Counter, S::Disputed),
        (S::MarkedWithIssue, E::IssueOut, S::Disputed),
        (S::Disputed, E::Resolve, S::Resolved),
    ];

    #[test]
    fn the_whole_table() {
        for from in OfferState::ALL {
            for event in EVENTS {
                let expected = ALLOWED
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (transition(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} + {event:?}"),
                    (Err(_), None) => {}
                    (got, want) => panic!("{from:?} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn final_states_take_nothing() {
        for from in OfferState::ALL.into_iter().filter(|s| s.is_final()) {
            for event in EVENTS {
                assert!(transition(from, event).is_err(), "{from:?} + {event:?}");
            }
        }
    }

    #[test]
    fn names_are_the_wire_names() {
        for state in OfferState::ALL {
            let json = serde_json::to_string(&state).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", state.name()));
        }
    }
}
