//! Roles, invites and registration (`kinds/agents.md`).

use nostr_sdk::Event;
use serde::{Deserialize, Serialize};

/// Kind of the signed registration event. In the ephemeral range (20000–29999), so a relay
/// that is handed one by mistake forwards it at most and never stores it.
pub const REGISTRATION_KIND: u16 = 29470;

/// Who a sender is to soko.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Listed in soko's config (or the operator key): runs operator commands.
    Admin,
    /// Registered with an agent invite: onboards and promotes merchants.
    Agent,
    /// A merchant (the USSD path).
    Merchant,
    /// Registered with a trader invite: a user of the exchange, who logs in to the mint's
    /// OIDC issuer for blind auth tokens and trades in private sessions (`kinds/sessions.md`).
    Trader,
    /// Not registered.
    Anonymous,
}

impl Role {
    /// The role's name as it appears in messages and tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Merchant => "merchant",
            Role::Trader => "trader",
            Role::Anonymous => "anonymous",
        }
    }

    /// A role by name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Role::Admin,
            Role::Agent,
            Role::Merchant,
            Role::Trader,
            Role::Anonymous,
        ]
        .into_iter()
        .find(|role| role.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `invite_create` arguments (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteCreateArgs {
    /// The role the code grants: `agent` or `trader`.
    pub role: String,
    /// How many registrations it allows (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Seconds from now after which it no longer works (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// `invite_create` result: the only time the code is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCreated {
    /// The code, e.g. `7KQ2-M9XD-4HWA-0RTC`.
    pub code: String,
    /// The role it grants.
    pub role: Role,
    /// Registrations it allows.
    pub uses: u32,
    /// Unix seconds after which it no longer works, if ever.
    pub expires_at: Option<u64>,
}

/// `register` arguments: the signed registration event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterArgs {
    /// A kind [`REGISTRATION_KIND`] event signed by the sender's key.
    pub event: Box<Event>,
}

/// `register` and `whoami` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The sender's role.
    pub role: Role,
    /// The sender's public key (hex).
    pub pubkey: String,
    /// The sender's `npub`.
    pub npub: String,
    /// The name given at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix seconds of the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<u64>,
}

/// `merchant_onboard` arguments (agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnboardArgs {
    /// The merchant's phone: `+` and 7 to 15 digits; the owner completes onboarding by
    /// dialling soko's USSD code from it.
    pub phone: String,
    /// The shop name the owner confirms over USSD.
    pub name: String,
}

/// What `merchant_onboard` did about the link between the agent and the merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Linked: a new merchant, or one the agent was linked to already.
    Linked,
    /// The phone belongs to a merchant already: a link request waits for its approval
    /// over USSD (menu 4).
    Requested,
}

/// `merchant_onboard` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onboarded {
    /// `linked` or `requested`.
    pub link: LinkState,
    /// The merchant, when linked (a request does not reveal whose phone it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<LinkedMerchant>,
    /// The link request's proposal id, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<u64>,
    /// The pending merchant's one-time activation code (12 digits), for its owner to type on
    /// the first USSD dial. Shown once: soko keeps only a hash. Onboarding the same pending
    /// merchant again (same agent) issues a new one and the old one stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_code: Option<String>,
}

/// A merchant an agent is linked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedMerchant {
    /// `npub`.
    pub npub: String,
    /// Public key (hex).
    pub pubkey: String,
    /// Shop name.
    pub name: String,
    /// `pending` until its owner onboards over USSD, then `active`.
    pub status: String,
    /// Unix seconds the link was made.
    pub linked_at: u64,
}

/// `propose_stall` arguments (agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeStallArgs {
    /// A merchant the agent is linked to (npub or hex).
    pub merchant: String,
    /// NIP-15 stall content (kind 30017).
    pub stall: super::nip15::Stall,
}

/// `propose_product` arguments (agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeProductArgs {
    /// A merchant the agent is linked to (npub or hex).
    pub merchant: String,
    /// NIP-15 product content (kind 30018).
    pub product: super::nip15::Product,
    /// Categories, published as `t` tags: normalized and bounded as in `product_put`;
    /// absent keeps the product's current ones, `[]` clears them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

/// `propose_delete` arguments (agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeDeleteArgs {
    /// A merchant the agent is linked to (npub or hex).
    pub merchant: String,
    /// 30017 (stall) or 30018 (product).
    pub kind: u16,
    /// The listing's id (its `d` tag).
    pub id: String,
}

/// `proposal_withdraw` arguments (agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalWithdrawArgs {
    /// The proposal id.
    pub proposal: u64,
}

/// What a proposal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// Link the agent to the merchant.
    Link,
    /// Create or replace a stall.
    Stall,
    /// Create or replace a product.
    Product,
    /// Delete a stall or product.
    Delete,
}

/// Where a proposal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    /// Waiting for the merchant.
    Pending,
    /// Approved by the merchant (and published).
    Approved,
    /// Rejected by the merchant.
    Rejected,
    /// Withdrawn by the agent, or because the merchant unlinked the agent.
    Withdrawn,
}

impl ProposalStatus {
    /// The status's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Withdrawn => "withdrawn",
        }
    }
}

/// A proposal as its agent sees it (`propose_*` results and `agent_merchants`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalView {
    /// Its id.
    pub proposal: u64,
    /// What it asks.
    pub kind: ProposalKind,
    /// The merchant (npub); absent on a link request the merchant has not approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// The listing it is about (stall, product or deleted id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where it is.
    pub status: ProposalStatus,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the decision, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    /// The event published on approval (30017, 30018 or 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// A product proposal's categories, as they will be (or were) published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

/// `agent_merchants` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMerchants {
    /// Merchants linked to the sender.
    pub merchants: Vec<LinkedMerchant>,
    /// The sender's proposals to those merchants, and its link requests, newest first.
    pub proposals: Vec<ProposalView>,
}

/// A message soko sends an agent unasked (NIP-17, from the bot key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNotice {
    /// Protocol version, 1.
    pub v: u32,
    /// The notice.
    #[serde(flatten)]
    pub body: AgentNoticeBody,
}

/// The notices an agent gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", content = "args", rename_all = "snake_case")]
pub enum AgentNoticeBody {
    /// The merchant approved or rejected one of the agent's proposals.
    Proposal(ProposalDecided),
    /// A linked merchant's order was paid.
    OrderPaid(OrderPaidNotice),
    /// The merchant unlinked the agent over USSD.
    Unlinked(UnlinkedNotice),
    /// A linked merchant's owner finished onboarding: the shop is active.
    MerchantActive(MerchantActiveNotice),
}

/// The merchant ended the link: the agent can no longer act for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlinkedNotice {
    /// The merchant (npub).
    pub merchant: String,
    /// The agent's proposals that were pending and are now withdrawn.
    pub withdrawn: Vec<u64>,
}

/// A linked merchant became active: its owner dialled in with the activation code, chose a
/// PIN and confirmed the shop name. Stalls and products can be approved from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantActiveNotice {
    /// The merchant (npub).
    pub merchant: String,
    /// Its shop name, as confirmed.
    pub shop: String,
}

/// A decided proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalDecided {
    /// Proposal id.
    pub proposal: u64,
    /// What it asked.
    pub kind: ProposalKind,
    /// The merchant (npub).
    pub merchant: String,
    /// The listing it was about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `approved` or `rejected`.
    pub status: ProposalStatus,
    /// The event published on approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// A paid order of a linked merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaidNotice {
    /// The merchant (npub).
    pub merchant: String,
    /// Shop name.
    pub shop: String,
    /// soko's order number for the merchant.
    pub order: u64,
    /// Total paid, sats.
    pub amount_sat: u64,
    /// What was ordered.
    pub items: Vec<NoticeItem>,
    /// The buyer's shipping details: only when the merchant shares them with its agents
    /// (USSD settings; off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer: Option<super::nip15::Shipping>,
}

/// One line of a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeItem {
    /// Product id.
    pub product_id: String,
    /// Product name, when still listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Units.
    pub quantity: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_have_one_name_each() {
        for role in [
            Role::Admin,
            Role::Agent,
            Role::Merchant,
            Role::Trader,
            Role::Anonymous,
        ] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_value(role).ok(),
                Some(serde_json::Value::String(role.to_string()))
            );
        }
        assert_eq!(Role::parse("Agent"), None);
        assert_eq!(Role::parse("king"), None);
    }
}
