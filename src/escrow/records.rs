//! What the escrow keeps in sled about an order: the record, the buyer's dialect and cancel
//! request, the refund plan, and the ledger entries written before every mint call. Their
//! JSON is the stored format: change it only with a default or a conversion on read.

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};

use super::code::StoredCode;
use super::state::EscrowState;
use crate::money::Sats;
use crate::outbound::Scheme;

/// One order and its escrow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// soko's number for the order, per merchant (short, for phones).
    pub number: u64,
    /// The buyer's own order id.
    pub buyer_order_id: String,
    /// The buyer's key (hex on disk, as it always was).
    pub buyer: PublicKey,
    /// How the buyer talks to us; every message to them uses it.
    pub scheme: Scheme,
    /// The stall.
    pub stall_id: String,
    /// What was ordered, at what unit price.
    pub lines: Vec<StoredLine>,
    /// What the buyer pays.
    pub total: Sats,
    /// The mint quote paying for it.
    pub quote_id: String,
    /// The BOLT11 invoice.
    pub invoice: String,
    /// Unix seconds after which an unpaid order expires.
    pub expires_at: u64,
    /// Escrow state.
    pub state: EscrowState,
    /// The delivery code's MAC, once paid.
    pub code: Option<StoredCode>,
    /// Unix seconds.
    pub created_at: u64,
    /// The buyer's shipping details from the NIP-15 order, sealed (personal data); see
    /// [`super::query::Shipping`]. Absent on orders stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_sealed: Option<String>,
    /// Unix seconds the payment arrived.
    #[serde(default)]
    pub paid_at: Option<u64>,
    /// The buyer asked to cancel (before delivery).
    #[serde(default)]
    pub cancel: Option<CancelRequest>,
    /// How the money goes back to the buyer, once a refund started.
    #[serde(default)]
    pub refund: Option<RefundPlan>,
    /// The order messages the buyer's client speaks.
    #[serde(default)]
    pub dialect: Dialect,
    /// An issue marked on the order by its buyer or merchant, and how it was settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<OrderIssue>,
    /// Unix seconds the finished order was shrunk to what accounting and disputes need
    /// ([`OrderRecord::shrunk`]); absent while it is whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrunk_at: Option<u64>,
}

impl OrderRecord {
    /// What soko holds for this order while [`EscrowState::holds_funds`]: its total, less a
    /// merchant's part of a split already credited to the merchant's balance.
    pub fn held(&self) -> Sats {
        let credited = self
            .issue
            .as_ref()
            .map_or(Sats::ZERO, |issue| issue.merchant_part);
        self.total.checked_sub(credited).unwrap_or(Sats::ZERO)
    }

    /// True when the order may be shrunk at `now` (unix seconds): it is finished (nothing can
    /// move it again), no issue on it is left open, it was placed at least `retention_secs`
    /// ago, and it is still whole.
    ///
    /// The window counts from the order's creation because a record has no time of
    /// finishing; the default window (30 days) outlasts the delivery and issue windows an
    /// order finishes within.
    pub fn shrinkable(&self, now: u64, retention_secs: u64) -> bool {
        self.state.is_terminal()
            && self.issue.as_ref().is_none_or(|i| i.outcome.is_some())
            && self.created_at.saturating_add(retention_secs) <= now
            && self.shrunk_at.is_none()
    }

    /// What a finished order keeps once shrunk at `at`: its amounts, ids (the order's, the
    /// buyer's key, the mint quote's), times, state, lines (product ids, units and prices:
    /// the totals' detail, which the merchant's menus list), the refund plan (the payout
    /// reference), the cancel request's time and the issue with its sealed words (disputes
    /// and audit). What goes: the buyer's sealed shipping details (personal data), the
    /// invoice, the delivery code's MAC (nothing can be delivered any more) and the refund
    /// address of a cancel request.
    pub fn shrunk(&self, at: u64) -> Self {
        Self {
            invoice: String::new(),
            code: None,
            shipping_sealed: None,
            cancel: self.cancel.as_ref().map(|c| CancelRequest {
                at: c.at,
                refund_to: None,
            }),
            shrunk_at: Some(at),
            ..self.clone()
        }
    }

    /// The key a payout to the buyer out of a settled issue is locked to (NUT-11): the
    /// buyer's revealed key, which is the key it ordered with (`kinds/orders.md`).
    pub fn buyer_lock(&self) -> Option<PublicKey> {
        let issue = self.issue.as_ref()?;
        issue.outcome?;
        Some(issue.buyer_key.unwrap_or(self.buyer))
    }
}

/// A side of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderSide {
    /// Whoever ordered and paid.
    Buyer,
    /// The shop.
    Merchant,
}

impl OrderSide {
    /// The name in reveals and replies.
    pub fn name(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Merchant => "merchant",
        }
    }

    /// The other side.
    pub fn other(self) -> Self {
        match self {
            Self::Buyer => Self::Merchant,
            Self::Merchant => Self::Buyer,
        }
    }
}

/// How an issue was settled: conceded by a side, or decided by an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueOutcome {
    /// The whole total to the buyer, as ecash locked to its key.
    BuyerWins,
    /// The whole total to the merchant's balance.
    MerchantWins,
    /// Half to each (the merchant's half rounded down).
    Split,
}

/// One issue on an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderIssue {
    /// Who marked it.
    pub by: OrderSide,
    /// Unix seconds it was marked.
    pub at: u64,
    /// Unix seconds until which the other side may answer.
    pub answer_by: u64,
    /// The buyer's revealed key, once it revealed.
    pub buyer_key: Option<PublicKey>,
    /// The merchant's revealed key (its shop identity), once it revealed.
    pub merchant_key: Option<PublicKey>,
    /// What each side said (the reveal's statement, then its evidence), sealed.
    pub evidence: Vec<(OrderSide, String)>,
    /// How it was settled, once it was.
    pub outcome: Option<IssueOutcome>,
    /// What the settlement credited to the merchant's balance.
    #[serde(default)]
    pub merchant_part: Sats,
}

impl OrderIssue {
    /// `side`'s revealed key.
    pub fn key(&self, side: OrderSide) -> Option<PublicKey> {
        match side {
            OrderSide::Buyer => self.buyer_key,
            OrderSide::Merchant => self.merchant_key,
        }
    }
}

/// Which order messages a buyer's client speaks; every message about the order uses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// NIP-15 JSON messages (type 0/1/2) in kind-4 or kind-14 DMs.
    #[default]
    Nip15,
    /// Gamma Markets kind-16 messages with tags, gift-wrapped.
    Gamma,
    /// Shopstr's kind-14 messages with tags, gift-wrapped; the order came paid with ecash
    /// (`kinds/gamma.md`, "Shopstr checkout").
    Shopstr,
}

/// A buyer's request to cancel a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Unix seconds.
    pub at: u64,
    /// A Lightning address or LNURL-pay link for the refund; a Cashu token DM otherwise.
    pub refund_to: Option<String>,
}

/// A refund's route and how far it got: enough to finish it after a crash without paying
/// twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum RefundPlan {
    /// A Cashu token DM'd to the buyer.
    Token {
        /// The wallet's send operation, recorded before the token is made.
        operation: Option<String>,
        /// Why a Lightning refund fell back to a token, told to the buyer.
        #[serde(default)]
        note: Option<String>,
    },
    /// A payment to the buyer's Lightning address.
    Lightning {
        /// Lightning address or LNURL.
        destination: String,
        /// The melt quote, recorded before the melt.
        quote: Option<String>,
        /// What the invoice pays (the total minus the mint's fee reserve).
        amount: Sats,
    },
}

/// One stored order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLine {
    /// Product id.
    pub product_id: String,
    /// Units.
    pub quantity: u64,
    /// Unit price in the stall's minor unit.
    pub unit_price: u64,
}

/// A fund movement, recorded before it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Amount moved.
    pub amount: Sats,
    /// False until the movement is confirmed.
    pub done: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(state: EscrowState) -> OrderRecord {
        OrderRecord {
            number: 7,
            buyer_order_id: "b-7".to_owned(),
            buyer: nostr_sdk::Keys::generate().public_key(),
            scheme: Scheme::Nip17,
            stall_id: "stall".to_owned(),
            lines: vec![StoredLine {
                product_id: "p".to_owned(),
                quantity: 2,
                unit_price: 50,
            }],
            total: Sats(105),
            quote_id: "quote-7".to_owned(),
            invoice: "lnbc1050n1invoice".to_owned(),
            expires_at: 1_300,
            state,
            code: Some(StoredCode {
                mac: [3; 32],
                wrong_attempts: 0,
            }),
            created_at: 1_000,
            shipping_sealed: Some("sealed address".to_owned()),
            paid_at: Some(1_010),
            cancel: Some(CancelRequest {
                at: 1_020,
                refund_to: Some("buyer@example.com".to_owned()),
            }),
            refund: Some(RefundPlan::Token {
                operation: Some("op".to_owned()),
                note: None,
            }),
            dialect: Dialect::Nip15,
            issue: None,
            shrunk_at: None,
        }
    }

    fn issue(outcome: Option<IssueOutcome>) -> OrderIssue {
        OrderIssue {
            by: OrderSide::Buyer,
            at: 1_100,
            answer_by: 1_200,
            buyer_key: None,
            merchant_key: None,
            evidence: vec![(OrderSide::Buyer, "sealed words".to_owned())],
            outcome,
            merchant_part: Sats(52),
        }
    }

    #[test]
    fn only_finished_orders_past_the_window_without_an_open_issue_shrink() {
        let window = 100;
        for state in [
            EscrowState::PaidOut,
            EscrowState::Refunded,
            EscrowState::Expired,
        ] {
            let order = finished(state);
            assert!(order.shrinkable(1_100, window), "{state:?}");
            assert!(
                !order.shrinkable(1_099, window),
                "{state:?} inside the window"
            );
            assert!(
                !order.shrunk(1_100).shrinkable(5_000, window),
                "{state:?} shrunk twice"
            );
        }
        for state in [
            EscrowState::AwaitingPayment,
            EscrowState::Paid,
            EscrowState::Delivered,
            EscrowState::Refunding,
            EscrowState::Disputed,
            EscrowState::IssueMarked,
        ] {
            assert!(!finished(state).shrinkable(u64::MAX, window), "{state:?}");
        }
        let mut open = finished(EscrowState::Refunded);
        open.issue = Some(issue(None));
        assert!(!open.shrinkable(u64::MAX, window), "an open issue");
        open.issue = Some(issue(Some(IssueOutcome::Split)));
        assert!(open.shrinkable(1_100, window), "a settled issue");
        // A window reaching past the end of time never passes.
        assert!(!finished(EscrowState::PaidOut).shrinkable(u64::MAX - 1, u64::MAX));
    }

    #[test]
    fn a_shrunk_order_keeps_what_accounting_and_disputes_need() {
        let mut order = finished(EscrowState::Refunded);
        order.issue = Some(issue(Some(IssueOutcome::Split)));
        let shrunk = order.shrunk(2_000);
        // Gone: personal data, the invoice, the code, the refund address.
        assert_eq!(shrunk.shipping_sealed, None);
        assert_eq!(shrunk.invoice, "");
        assert_eq!(shrunk.code, None);
        assert_eq!(
            shrunk.cancel,
            Some(CancelRequest {
                at: 1_020,
                refund_to: None
            })
        );
        assert_eq!(shrunk.shrunk_at, Some(2_000));
        // Kept: everything else, unchanged.
        let restored = OrderRecord {
            invoice: order.invoice.clone(),
            code: order.code.clone(),
            shipping_sealed: order.shipping_sealed.clone(),
            cancel: order.cancel.clone(),
            shrunk_at: None,
            ..shrunk.clone()
        };
        assert_eq!(restored, order);
        assert_eq!(shrunk.held(), order.held());
        assert_eq!(shrunk.buyer_lock(), order.buyer_lock());
        // And it is smaller on disk.
        let size = |o: &OrderRecord| crate::store::encode(o).map(|b| b.len());
        assert!(size(&shrunk) < size(&order));
    }
}
