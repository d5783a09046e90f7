//! Issues on marketplace orders (`kinds/orders.md`, "Issues and disputes"): the arguments of
//! `order_issue`, `order_answer` (the buyer), `merchant_issue`, `merchant_answer` (the
//! operator for a merchant) and `order_resolve` (an admin).

use serde::{Deserialize, Serialize};

/// `order_issue`: the buyer marks an issue on its order, revealing the key it ordered with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderIssueArgs {
    /// The merchant the order went to (npub or hex).
    pub merchant: String,
    /// The buyer's order id (the `id` of the NIP-15 order).
    pub order_id: String,
    /// The reveal event (kind 29471), signed by the buyer's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal: Option<serde_json::Value>,
    /// What went wrong, in the buyer's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// The answer to an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueAnswerArg {
    /// The issue is right.
    Concede,
    /// The issue is wrong: an admin decides.
    Dispute,
}

/// `order_answer`: the buyer answers the merchant's issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderAnswerArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// The buyer's order id.
    pub order_id: String,
    /// `concede` or `dispute`.
    pub answer: IssueAnswerArg,
    /// The reveal event, to dispute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal: Option<serde_json::Value>,
    /// The buyer's side of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// `merchant_issue`: the operator marks an issue for the merchant (soko signs its reveal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantIssueArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// soko's order number for that merchant.
    pub order: u64,
    /// The merchant's statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// `merchant_answer`: the operator answers the buyer's issue for the merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantAnswerArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// soko's order number for that merchant.
    pub order: u64,
    /// `concede` or `dispute`.
    pub answer: IssueAnswerArg,
    /// The merchant's statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// How an admin settles an order's issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderOutcomeArg {
    /// The total to the buyer, as ecash locked to its revealed key.
    BuyerWins,
    /// The total to the merchant's balance.
    MerchantWins,
    /// Half to each.
    Split,
}

/// `order_resolve`: an admin settles a disputed (or unanswered) issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderResolveArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// soko's order number for that merchant.
    pub order: u64,
    /// `buyer_wins`, `merchant_wins` or `split`.
    pub outcome: OrderOutcomeArg,
    /// The admin's reasons, kept in the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
