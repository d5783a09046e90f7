//! The exchange on the wire (`kinds/exchange.md`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::reputation::{BlindedRep, RepKeyset, RepSignature, RepToken};

/// Longest fiat amount text (`"150000.00"`).
pub const MAX_FIAT_LEN: usize = 16;
/// Longest offer id (soko's are 32 hex characters).
pub const MAX_OFFER_ID_LEN: usize = 64;
/// Longest bill reference (paybill, till, account or phone number).
pub const MAX_BILL_REF_LEN: usize = 64;
/// Longest bill note (account name, memo).
pub const MAX_BILL_NOTE_LEN: usize = 140;
/// Longest receipt text.
pub const MAX_RECEIPT_TEXT_LEN: usize = 1000;
/// Longest receipt image reference.
pub const MAX_RECEIPT_IMAGE_LEN: usize = 512;
/// Longest statement in a dispute.
pub const MAX_EVIDENCE_LEN: usize = 2000;

/// The bill a maker wants paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillArgs {
    /// What `reference` is: `paybill`, `till`, `bank_transfer`, `qr` or `phone`.
    pub kind: String,
    /// The number to pay to.
    pub reference: String,
    /// An account number or name, a memo to quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `offer_create`: sats for a bill paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferCreateArgs {
    /// The bill's amount in `currency`, decimal (`"1500"`, `"12.50"`).
    pub fiat_amount: String,
    /// ISO 4217; the session's setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// A provider id (`provider_list`).
    pub provider: String,
    /// Where the bill is paid; told to the taker only once the taker's bond is paid.
    pub bill: BillArgs,
    /// The sats offered (escrow); without it, the rate plus `premium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sats: Option<u64>,
    /// Percent over soko's rate when `sats` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub premium: Option<i32>,
    /// Reputation tokens staked (burned now, given back on completion).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stake: Vec<RepToken>,
    /// Blinded outputs for the tokens coming back: at most `stake.len() + 1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<BlindedRep>,
}

/// `offer_claim`: take a listed offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferClaimArgs {
    /// The offer (the book's `d`).
    pub offer: String,
    /// Reputation tokens staked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stake: Vec<RepToken>,
    /// Blinded outputs for the tokens coming back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<BlindedRep>,
}

/// Commands that name one offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferRefArgs {
    /// The offer.
    pub offer: String,
}

/// `receipt_submit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptArgs {
    /// The offer.
    pub offer: String,
    /// The payment's confirmation text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A reference to an image of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// `offer_issue`: something is wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueArgs {
    /// The offer.
    pub offer: String,
    /// A reveal event (kind 29471) signed by the registered key; without it soko answers
    /// `reveal_required` and nothing happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal: Option<Value>,
    /// What is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// How the other side answers an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Concede: the side that marked the issue wins without an admin.
    Forfeit,
    /// Dispute (reveals the key too): an admin decides.
    Dispute,
}

/// `offer_answer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerArgs {
    /// The offer.
    pub offer: String,
    /// Forfeit or dispute.
    pub answer: Answer,
    /// The reveal event (needed to dispute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reveal: Option<Value>,
    /// The answering side's account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// An admin's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The taker did not pay the bill.
    MakerWins,
    /// The bill was paid.
    TakerWins,
    /// Escrow halved, bonds back.
    Split,
    /// Everything back to whoever paid it, no fees.
    Return,
}

/// `dispute_resolve` (admins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveArgs {
    /// The offer.
    pub offer: String,
    /// The decision.
    pub outcome: Resolution,
    /// Why, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `exchange_settings`: read (no arguments) or change a session's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsArgs {
    /// The currency offers default to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// A Lightning address the session's ecash (escrow earned, bonds back) goes to when it
    /// ends; `""` clears it (a Cashu token by DM instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_to: Option<String>,
}

/// The answer to `exchange_settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsView {
    /// The default currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Whether a payout address is set.
    pub payout_set: bool,
}

/// Escrow, bonds and fees of an offer, in sats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountsView {
    /// What the taker earns.
    pub escrow: u64,
    /// The maker's bond.
    pub maker_bond: u64,
    /// The taker's bond.
    pub taker_bond: u64,
    /// The maker's fee.
    pub platform_fee: u64,
    /// The taker's fee.
    pub taker_fee: u64,
}

/// An offer as one of its two sides sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferView {
    /// The offer id (the book's `d`).
    pub offer: String,
    /// Its state (`CREATED`, …).
    pub state: String,
    /// `maker` or `taker`: which side the asking session is.
    pub role: String,
    /// The bill's amount.
    pub fiat_amount: String,
    /// Its currency.
    pub currency: String,
    /// The provider id.
    pub provider: String,
    /// Percent over the rate.
    pub premium: i32,
    /// Escrow, bonds, fees.
    pub amounts: AmountsView,
    /// The invoice the asking side must pay now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<String>,
    /// Its amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_sat: Option<u64>,
    /// When the current window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// The bill: always for the maker, for the taker once its bond is paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<BillArgs>,
    /// The receipt, once submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptView>,
    /// Reputation tokens this side staked.
    pub staked: u32,
}

/// A submitted receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptView {
    /// Its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Its image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When.
    pub at: u64,
}

/// The answer to `offer_list`: the session's offers and claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferList {
    /// Newest first.
    pub offers: Vec<OfferView>,
}

/// The answer to `reputation_keyset`.
pub type KeysetView = RepKeyset;

/// Reputation tokens coming back (in the completion notice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepReturn {
    /// Blind signatures on the outputs given when staking, in their order.
    pub signatures: Vec<RepSignature>,
}

/// One dispute as admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeView {
    /// The offer.
    pub offer: String,
    /// Its state.
    pub state: String,
    /// `maker` or `taker`: who marked the issue.
    pub marked_by: String,
    /// When.
    pub marked_at: u64,
    /// The maker's revealed registered key (hex), if revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maker_key: Option<String>,
    /// The taker's, if revealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taker_key: Option<String>,
    /// What each side said: `[side, text]`, in order.
    pub evidence: Vec<(String, String)>,
    /// The receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptView>,
    /// The bill (admins see it to check the receipt against it).
    pub bill: BillArgs,
    /// Escrow, bonds, fees.
    pub amounts: AmountsView,
    /// When it goes to an admin unanswered (while `MARKED_WITH_ISSUE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
}

/// The answer to `dispute_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeList {
    /// Open issues and disputes.
    pub disputes: Vec<DisputeView>,
}

/// A notice soko sends a side of an offer (`kinds/exchange.md`, "Notices"): a NIP-17 DM
/// that is not a command reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeNotice {
    /// 1.
    pub v: u32,
    /// `"offer"`.
    pub notice: String,
    /// The offer.
    pub offer: String,
    /// Its new state.
    pub state: String,
    /// A sentence for people.
    pub text: String,
    /// When the new window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// What to pay where (to the taker at `TAKER_BOND_PAID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill: Option<BillArgs>,
    /// The bill's amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fiat_amount: Option<String>,
    /// Its currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The receipt (to the maker at `RECEIPT_SUBMITTED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptView>,
    /// What the side that marked an issue said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<String>>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The sats this side receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub you_get_sat: Option<u64>,
    /// Reputation coming back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation: Option<RepReturn>,
    /// A Cashu token (a dispute's ecash, locked to `locked_to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Sats in `token`, or of a payment that arrived after its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_sat: Option<u64>,
    /// The registered key (hex) that alone redeems `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_to: Option<String>,
}

/// `provider_put` (admins): a fiat provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderArgs {
    /// Short id (`mpesa`).
    pub id: String,
    /// Display name (`M-Pesa`).
    pub name: String,
    /// ISO 4217 codes it pays in.
    pub currencies: Vec<String>,
    /// Bill kinds it takes (`paybill`, `till`, `bank_transfer`, `qr`, `phone`).
    pub kinds: Vec<String>,
}

/// `provider_remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRefArgs {
    /// The provider id.
    pub id: String,
}

/// The public order book: NIP-69 peer-to-peer order events, addressable, authored by soko's
/// bot key (`kinds/book.md`).
pub const KIND_BOOK: u16 = 38383;

/// A dispute's key reveal: an event signed by a party's long-term registered key, sent to
/// soko inside an encrypted DM and never published (`exchange::reveal`). Tags `p` (soko's
/// bot), `offer` and `side` (`maker` or `taker`); the content is the party's statement. In
/// the ephemeral range (beside registration's 29470), so a relay handed one by mistake does
/// not store it.
pub const KIND_REVEAL: u16 = 29471;
