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
