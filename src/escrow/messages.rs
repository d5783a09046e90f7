//! What the escrow tells the buyer, in the order's dialect: NIP-15 JSON (type 1 and type 2
//! messages) or Gamma kind-16 messages with tags (`kinds/orders.md`, `kinds/gamma.md`).

use serde::Serialize;

use super::service::{Dialect, OrderRecord};
use super::state::EscrowState;
use crate::outbound::Note;
use crate::proto::gamma::{self, Status};
use crate::proto::nip15::{
    clip_echo, OrderStatus, PaymentOption, PaymentRequest, MAX_ORDER_ID_BYTES,
};
use crate::proto::shopstr;

pub(super) fn payment_request(record: &OrderRecord) -> Note {
    let message = format!(
        "Order #{}: {} sat. Pay this invoice before {} (unix time); soko holds the payment until you confirm delivery with your delivery code.",
        record.number, record.total.0, record.expires_at
    );
    match record.dialect {
        Dialect::Nip15 => Note::Text(to_json(&PaymentRequest {
            id: shown_id(record),
            kind: 1,
            message: Some(message),
            payment_options: vec![PaymentOption {
                kind: "ln".to_owned(),
                link: record.invoice.clone(),
            }],
        })),
        Dialect::Gamma => Note::Tagged {
            kind: gamma::KIND_ORDER,
            tags: gamma::payment_request_tags(
                &record.buyer.to_hex(),
                &shown_id(record),
                record.total.0,
                &record.invoice,
                record.expires_at,
            ),
            content: message,
        },
        // Shopstr orders arrive paid; should one ever wait, the invoice is said in words.
        Dialect::Shopstr => Note::Tagged {
            kind: 14,
            tags: shopstr::info_tags(
                &record.buyer.to_hex(),
                &shown_id(record),
                Some(shopstr::Status::Pending),
            ),
            content: format!("{message}\n{}", record.invoice),
        },
    }
}

pub(super) fn status(record: &OrderRecord, message: &str) -> Note {
    match record.dialect {
        Dialect::Nip15 => Note::Text(to_json(&OrderStatus {
            id: shown_id(record),
            kind: 2,
            message: message.to_owned(),
            paid: record.state.holds_funds() || record.state == EscrowState::PaidOut,
            shipped: matches!(record.state, EscrowState::Delivered | EscrowState::PaidOut),
        })),
        Dialect::Gamma => Note::Tagged {
            kind: gamma::KIND_ORDER,
            tags: gamma::status_tags(
                &record.buyer.to_hex(),
                &shown_id(record),
                gamma_status(record.state),
            ),
            content: message.to_owned(),
        },
        Dialect::Shopstr => Note::Tagged {
            kind: 14,
            tags: shopstr::info_tags(
                &record.buyer.to_hex(),
                &shown_id(record),
                Some(shopstr_status(record.state)),
            ),
            content: message.to_owned(),
        },
    }
}

/// An order refused before it was recorded.
pub(super) fn refusal(dialect: Dialect, buyer: &str, order_id: &str, why: &str) -> Note {
    let message = format!("Order not accepted: {why}");
    match dialect {
        Dialect::Nip15 => Note::Text(to_json(&OrderStatus {
            id: order_id.to_owned(),
            kind: 2,
            message,
            paid: false,
            shipped: false,
        })),
        Dialect::Gamma => Note::Tagged {
            kind: gamma::KIND_ORDER,
            tags: gamma::status_tags(buyer, order_id, Status::Cancelled),
            content: message,
        },
        Dialect::Shopstr => Note::Tagged {
            kind: 14,
            tags: shopstr::info_tags(buyer, order_id, Some(shopstr::Status::Canceled)),
            content: message,
        },
    }
}

/// Plain text about an order (the delivery code, a refund): a DM in NIP-15's dialect, a
/// kind-14 message with the order as its subject in Gamma's.
pub(super) fn text(record: &OrderRecord, text: String) -> Note {
    match record.dialect {
        Dialect::Nip15 => Note::Text(text),
        Dialect::Gamma => Note::Tagged {
            kind: 14,
            tags: gamma::chat_tags(&record.buyer.to_hex(), &shown_id(record)),
            content: text,
        },
        // In `order-info`, with no status: Shopstr's reader would drop another subject, and
        // its orders view counts a message without a status as `pending`, the lowest rank.
        Dialect::Shopstr => Note::Tagged {
            kind: 14,
            tags: shopstr::info_tags(&record.buyer.to_hex(), &shown_id(record), None),
            content: text,
        },
    }
}

/// The message giving the buyer the delivery code of its newly paid order.
pub(super) fn code_note(record: &OrderRecord, code: &super::code::DeliveryCode) -> Note {
    text(
        record,
        format!(
            "Delivery code for order #{} ({}): {}\nQR: {}\nGive it to the merchant only when you have your goods: it releases your payment to them.",
            record.number,
            shown_id(record),
            code.reveal(),
            code.qr_string(&shown_id(record))
        ),
    )
}

/// The buyer's order id as repeated in messages. Bounded at intake, but orders stored by an
/// older soko may carry any length: clipped, so their messages can still be sealed.
pub(super) fn shown_id(record: &OrderRecord) -> String {
    clip_echo(&record.buyer_order_id, MAX_ORDER_ID_BYTES)
}

fn gamma_status(state: EscrowState) -> Status {
    match state {
        EscrowState::AwaitingPayment => Status::Pending,
        EscrowState::Paid => Status::Confirmed,
        EscrowState::Delivered | EscrowState::PaidOut => Status::Completed,
        EscrowState::Disputed | EscrowState::Refunding | EscrowState::IssueMarked => {
            Status::Processing
        }
        EscrowState::Expired | EscrowState::Refunded => Status::Cancelled,
    }
}

/// Shopstr has no status for "held while someone looks at it": the money is still held,
/// which it calls `confirmed`.
fn shopstr_status(state: EscrowState) -> shopstr::Status {
    match state {
        EscrowState::AwaitingPayment => shopstr::Status::Pending,
        EscrowState::Paid
        | EscrowState::Disputed
        | EscrowState::Refunding
        | EscrowState::IssueMarked => shopstr::Status::Confirmed,
        EscrowState::Delivered | EscrowState::PaidOut => shopstr::Status::Completed,
        EscrowState::Expired | EscrowState::Refunded => shopstr::Status::Canceled,
    }
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
        EscrowState::IssueMarked => format!(
            "An issue was marked on order #{number}; the money stays held until it is settled."
        ),
    }
}

pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
