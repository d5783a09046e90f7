//! Why the escrow will not do what was asked, and why a payout was not made: typed, with a
//! message safe to show the asker. `commands/` maps each refusal to one wire code; USSD
//! shows the message.

use super::messages::describe;
use super::state::EscrowState;
use crate::money::Sats;

/// A request the escrow turns down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscrowRefusal {
    /// The merchant has no order with this number.
    #[error("there is no order #{0}")]
    NoSuchOrder(u64),
    /// The buyer has no order with this id at this merchant.
    #[error("you have no order {0:?} with this merchant")]
    NoSuchBuyerOrder(String),
    /// Only a paid order can be delivered.
    #[error("order #{number} cannot be delivered: {}", describe(*state, *number))]
    NotDeliverable {
        /// The order.
        number: u64,
        /// Its state.
        state: EscrowState,
    },
    /// A paid order without its code (an order paid before codes were kept).
    #[error("order #{0} has no code yet")]
    NoCodeYet(u64),
    /// A wrong delivery code.
    #[error("wrong code for order #{number}; {attempts_left} tries left")]
    WrongCode {
        /// The order.
        number: u64,
        /// Tries before the order is locked for review.
        attempts_left: u8,
    },
    /// Too many wrong codes: the order waits for the operator.
    #[error("too many wrong codes: order #{0} is locked for review by soko's operator")]
    CodeLocked(u64),
    /// Only a disputed order is released by an admin.
    #[error("only a disputed order is released by an admin; {}", describe(*state, *number))]
    NotDisputed {
        /// The order.
        number: u64,
        /// Its state.
        state: EscrowState,
    },
    /// Only a paid order can be disputed.
    #[error("order #{number} cannot be disputed: {}", describe(*state, *number))]
    NotDisputable {
        /// The order.
        number: u64,
        /// Its state.
        state: EscrowState,
    },
    /// A paid order within its delivery window that the buyer has not asked to cancel.
    #[error("order #{number} is within its delivery window (until unix time {due}) and the buyer has not asked to cancel; open a dispute if something is wrong")]
    InDeliveryWindow {
        /// The order.
        number: u64,
        /// Unix seconds when the window closes.
        due: u64,
    },
    /// An order in a state that is never refunded.
    #[error("order #{number} cannot be refunded: {}", describe(*state, *number))]
    NotRefundable {
        /// The order.
        number: u64,
        /// Its state.
        state: EscrowState,
    },
    /// An unpaid order expires by itself.
    #[error("order #{0} is not paid: leave the invoice unpaid and the order expires by itself")]
    NotPaidYet(u64),
    /// Delivered, refunded or expired: nothing left to cancel.
    #[error("{}", describe(*state, *number))]
    NotCancellable {
        /// The order.
        number: u64,
        /// Its state.
        state: EscrowState,
    },
    /// The refund address the buyer named is not one soko pays.
    #[error("refund_to: {0}")]
    RefundAddress(String),
    /// The merchant's balance is smaller than what it asked to move out.
    #[error("your balance is {balance}; this needs {needed}")]
    BalanceTooLow {
        /// The balance.
        balance: Sats,
        /// What was asked.
        needed: Sats,
    },
    /// An issue is marked only on a paid order not yet delivered.
    #[error("an issue cannot be marked on order #{number}: {}", describe(*state, *number))]
    NotIssuable {
        /// The order.
        number: u64,
        /// Its state.
        state: EscrowState,
    },
    /// An issue is marked once the delivery window has passed.
    #[error("order #{number} is within its delivery window: an issue can be marked from unix time {from}")]
    IssueTooEarly {
        /// The order.
        number: u64,
        /// Unix seconds when the window closes.
        from: u64,
    },
    /// Marking or disputing an issue reveals the side's key: a reveal event is needed.
    #[error("marking or disputing an issue reveals your key to soko: sign a reveal event (kind 29471, kinds/orders.md) with the key you ordered with and send it as \"reveal\"")]
    RevealRequired,
    /// The reveal event is refused by one of the reveal rules.
    #[error("reveal: {0}")]
    Reveal(String),
    /// The reveal is signed by another key than the side's.
    #[error("the reveal must be signed by the {0}'s own key (the buyer's: the key the order was placed with)")]
    WrongSigner(&'static str),
    /// This reveal event was used already.
    #[error("this reveal event was already used: sign a fresh one")]
    RevealReused,
    /// No issue waits for an answer on the order.
    #[error("order #{number} has no issue waiting for an answer: {}", describe(*state, *number))]
    NoOpenIssue {
        /// The order.
        number: u64,
        /// Its state.
        state: EscrowState,
    },
    /// The side that marked the issue does not answer it.
    #[error("you marked this issue; the {0} answers it")]
    NotYourAnswer(&'static str),
    /// An order with an open issue is settled only by `order_resolve`, which is audited.
    #[error(
        "order #{0} has an open issue: settle it with order_resolve (audited), not order_refund or order_release"
    )]
    IssueOpen(u64),
    /// An order without an issue is settled with `order_refund` or `order_release`.
    #[error("order #{0} has no issue to resolve; use order_refund or order_release")]
    NoIssue(u64),
    /// The other side may still answer.
    #[error("the other side of order #{number} may answer its issue until unix time {until}")]
    AwaitingAnswer {
        /// The order.
        number: u64,
        /// Unix seconds.
        until: u64,
    },
    /// Resolved already, another way.
    #[error("order #{number}'s issue was already settled: {settled:?}")]
    AlreadySettled {
        /// The order.
        number: u64,
        /// How.
        settled: super::records::IssueOutcome,
    },
}

/// Why a payout was not made. The balance is intact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayoutFailure {
    /// The Lightning address or LNURL gave no usable invoice.
    #[error("{0}")]
    Destination(String),
    /// The mint will not pay the invoice.
    #[error("the mint cannot pay that invoice: {0}")]
    MintRefused(String),
    /// The balance is too small to cover the Lightning fee reserve.
    #[error("a balance of {0} does not cover the Lightning fee reserve")]
    BelowFeeReserve(Sats),
    /// The mint tried and the payment failed.
    #[error("the payment failed: {0}")]
    PaymentFailed(String),
    /// The wallet could not make the token.
    #[error("the wallet cannot make the token: {0}")]
    Token(String),
}
