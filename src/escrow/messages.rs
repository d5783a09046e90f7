//! The NIP-15 messages the escrow sends the buyer.

use serde::Serialize;

use super::service::OrderRecord;
use super::state::EscrowState;
use crate::proto::nip15::{OrderStatus, PaymentOption, PaymentRequest};

pub(super) fn payment_request(record: &OrderRecord) -> String {
    to_json(&PaymentRequest {
        id: record.buyer_order_id.clone(),
        kind: 1,
        message: Some(format!(
            "Order #{}: {} sat. Pay this invoice before {} (unix time); soko holds the payment until you confirm delivery with your delivery code.",
            record.number, record.total.0, record.expires_at
        )),
        payment_options: vec![PaymentOption {
            kind: "ln".to_owned(),
            link: record.invoice.clone(),
        }],
    })
}

pub(super) fn status(record: &OrderRecord, message: &str) -> String {
    to_json(&OrderStatus {
        id: record.buyer_order_id.clone(),
        kind: 2,
        message: message.to_owned(),
        paid: record.state.holds_funds() || record.state == EscrowState::PaidOut,
        shipped: matches!(record.state, EscrowState::Delivered | EscrowState::PaidOut),
    })
}

pub(super) fn describe(state: EscrowState, number: u64) -> String {
    match state {
        EscrowState::AwaitingPayment => format!("Order #{number} is waiting for payment."),
        EscrowState::Paid => format!(
            "Payment received for order #{number}; soko holds it. Your delivery code follows in a separate message."
        ),
        EscrowState::Delivered | EscrowState::PaidOut => {
            format!("Order #{number} delivered and completed. Thank you!")
        }
        EscrowState::Expired => format!("Order #{number} expired unpaid and was cancelled."),
        EscrowState::Refunding => format!("Order #{number} is being refunded."),
        EscrowState::Refunded => format!("Order #{number} was refunded."),
        EscrowState::Disputed => format!("Order #{number} is under review by soko's operator."),
    }
}

pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
