//! The order escrow state machine: one pure transition function, tested exhaustively.
//!
//! ```text
//! AwaitingPayment ──paid──▶ Paid ──code──▶ Delivered ──payout settled──▶ PaidOut
//!        │                   │  ╲
//!     expired     refund started  dispute / too many wrong codes
//!        ▼                   ▼      ▼
//!     Expired          Refunding ◀─ Disputed ─▶ Delivered (admin releases)
//!                            │
//!                     refund settled
//!                            ▼
//!                        Refunded
//!
//! Paid ──issue marked (past the delivery window)──▶ IssueMarked
//!   IssueMarked ──the other side disputes, or does not answer in time──▶ Disputed
//!   IssueMarked ──the merchant concedes the buyer's issue──▶ Refunding
//!   IssueMarked ──the buyer concedes the merchant's issue──▶ Delivered
//! ```
//! `IssueMarked` holds the money like `Paid` but the code no longer releases it: one side
//! said something is wrong (and revealed its key) and the other side's answer is awaited.
//! An admin's resolution of a `Disputed` order is a refund (`buyer_wins`, `split`: the
//! buyer's part goes out as locked ecash through `Refunding`) or a release (`merchant_wins`).
//! `Refunding` exists because a refund is two steps with the mint or a Lightning service in
//! between: once it starts, the code can no longer release the same money to the merchant.
//! `Expired`, `Refunded` and `PaidOut` are terminal: nothing leaves them, which is what
//! makes a replayed or late command harmless.

use serde::{Deserialize, Serialize};

/// Where an order's money stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscrowState {
    /// Invoice issued, not paid.
    AwaitingPayment,
    /// Paid; the ecash is held by soko.
    Paid,
    /// The merchant presented the buyer's delivery code; payout owed.
    Delivered,
    /// The merchant has been paid. Terminal.
    PaidOut,
    /// The invoice expired unpaid; stock released. Terminal.
    Expired,
    /// A refund is under way (a token being made, or a Lightning payment in flight).
    Refunding,
    /// The buyer got the money back. Terminal.
    Refunded,
    /// Held for an admin's decision.
    Disputed,
    /// A side marked an issue (revealing its key); the other side's answer is awaited.
    IssueMarked,
}

/// Something that happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscrowEvent {
    /// The mint reports the invoice paid and the ecash is minted into escrow.
    PaymentReceived,
    /// The invoice passed its expiry unpaid.
    InvoiceExpired,
    /// The merchant entered the right delivery code.
    CodeAccepted,
    /// Too many wrong codes: lock for review.
    CodeAttemptsExhausted,
    /// Buyer or merchant opened a dispute.
    DisputeOpened,
    /// The payout to the merchant completed.
    PayoutSettled,
    /// A refund to the buyer was decided and recorded.
    RefundStarted,
    /// The refund to the buyer completed.
    RefundSettled,
    /// An admin decided for the merchant (or the buyer conceded the merchant's issue).
    ResolvedForMerchant,
    /// The buyer or the merchant marked an issue with a reveal of its key.
    IssueMarked,
    /// The other side disputed the issue (revealing its own key).
    IssueDisputed,
    /// The other side did not answer the issue in time.
    IssueUnanswered,
}

impl EscrowState {
    /// True when no event can move the order any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::PaidOut | Self::Expired | Self::Refunded)
    }

    /// True while soko holds the buyer's money for this order.
    pub fn holds_funds(self) -> bool {
        matches!(
            self,
            Self::Paid | Self::Delivered | Self::Disputed | Self::Refunding | Self::IssueMarked
        )
    }
}

/// A transition the machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{event:?} is not possible while the order is {from:?}")]
pub struct InvalidTransition {
    /// The state the order was in.
    pub from: EscrowState,
    /// What was attempted.
    pub event: EscrowEvent,
}

/// The next state, or why not.
pub fn transition(from: EscrowState, event: EscrowEvent) -> Result<EscrowState, InvalidTransition> {
    use EscrowEvent as E;
    use EscrowState as S;
    let to = match (from, event) {
        (S::AwaitingPayment, E::PaymentReceived) => S::Paid,
        (S::AwaitingPayment, E::InvoiceExpired) => S::Expired,
        (S::Paid, E::CodeAccepted) => S::Delivered,
        (S::Paid, E::CodeAttemptsExhausted | E::DisputeOpened) => S::Disputed,
        (S::Paid | S::Disputed, E::RefundStarted) => S::Refunding,
        (S::Refunding, E::RefundSettled) => S::Refunded,
        (S::Disputed, E::ResolvedForMerchant) => S::Delivered,
        (S::Delivered, E::PayoutSettled) => S::PaidOut,
        (S::Paid, E::IssueMarked) => S::IssueMarked,
        (S::IssueMarked, E::IssueDisputed | E::IssueUnanswered) => S::Disputed,
        (S::IssueMarked, E::RefundStarted) => S::Refunding,
        (S::IssueMarked, E::ResolvedForMerchant) => S::Delivered,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EscrowEvent as E;
    use EscrowState as S;

    const STATES: [S; 9] = [
        S::AwaitingPayment,
        S::Paid,
        S::Delivered,
        S::PaidOut,
        S::Expired,
        S::Refunding,
        S::Refunded,
        S::Disputed,
        S::IssueMarked,
    ];
    const EVENTS: [E; 12] = [
        E::PaymentReceived,
        E::InvoiceExpired,
        E::CodeAccepted,
        E::CodeAttemptsExhausted,
        E::DisputeOpened,
        E::PayoutSettled,
        E::RefundStarted,
        E::RefundSettled,
        E::ResolvedForMerchant,
        E::IssueMarked,
        E::IssueDisputed,
        E::IssueUnanswered,
    ];

    /// Every allowed transition; anything not listed must be refused.
    const ALLOWED: [(S, E, S); 15] = [
        (S::AwaitingPayment, E::PaymentReceived, S::Paid),
        (S::AwaitingPayment, E::InvoiceExpired, S::Expired),
        (S::Paid, E::CodeAccepted, S::Delivered),
        (S::Paid, E::CodeAttemptsExhausted, S::Disputed),
        (S::Paid, E::DisputeOpened, S::Disputed),
        (S::Paid, E::RefundStarted, S::Refunding),
        (S::Disputed, E::RefundStarted, S::Refunding),
        (S::Refunding, E::RefundSettled, S::Refunded),
        (S::Disputed, E::ResolvedForMerchant, S::Delivered),
        (S::Delivered, E::PayoutSettled, S::PaidOut),
        (S::Paid, E::IssueMarked, S::IssueMarked),
        (S::IssueMarked, E::IssueDisputed, S::Disputed),
        (S::IssueMarked, E::IssueUnanswered, S::Disputed),
        (S::IssueMarked, E::RefundStarted, S::Refunding),
        (S::IssueMarked, E::ResolvedForMerchant, S::Delivered),
    ];

    #[test]
    fn the_table_is_the_whole_machine() {
        crate::util::assert_whole_table(&STATES, &EVENTS, &ALLOWED, transition);
    }

    #[test]
    fn nothing_leaves_a_terminal_state() {
        for from in STATES.into_iter().filter(|s| s.is_terminal()) {
            for event in EVENTS {
                assert_eq!(
                    transition(from, event),
                    Err(InvalidTransition { from, event })
                );
            }
        }
    }

    #[test]
    fn money_is_held_exactly_between_payment_and_settlement() {
        for state in STATES {
            let expected = matches!(
                state,
                S::Paid | S::Delivered | S::Disputed | S::Refunding | S::IssueMarked
            );
            assert_eq!(state.holds_funds(), expected, "{state:?}");
        }
        // Paying twice is refused rather than double-counted.
        assert!(transition(S::Paid, E::PaymentReceived).is_err());
        // An unpaid order cannot be delivered.
        assert!(transition(S::AwaitingPayment, E::CodeAccepted).is_err());
        // Once a refund has started, the code cannot release the same money.
        assert!(transition(S::Refunding, E::CodeAccepted).is_err());
        // Nor can it once an issue is marked, nor is an issue marked twice or on a dispute.
        assert!(transition(S::IssueMarked, E::CodeAccepted).is_err());
        assert!(transition(S::IssueMarked, E::IssueMarked).is_err());
        assert!(transition(S::Disputed, E::IssueMarked).is_err());
    }
}
