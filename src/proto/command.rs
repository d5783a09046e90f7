//! The command envelope every soko-specific DM uses (`kinds/commands.md`).
//!
//! Request: `{"v":1,"id":"<request id>","cmd":"<name>","session":"<id>","args":{…}}` — only
//! `cmd` is required.
//! Reply: `{"v":1,"re":"<request id>","ok":true,"result":{…}}` or
//! `{"v":1,"re":"…","ok":false,"error":{"code":"…","message":"…"}}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The envelope version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest accepted request id; ids are echoed and stored, so they must stay small.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Longest accepted session id (soko's ids are 64 hex characters).
pub const MAX_SESSION_ID_LEN: usize = 64;

/// Largest `result` soko sends, as JSON bytes: a reply must fit one NIP-17 gift wrap under
/// the relays' 64 KiB event limit (the JSON is escaped and sealed twice on the way). Longer
/// lists are cut (`catalog` says `truncated`).
pub const MAX_RESULT_BYTES: usize = 16 * 1024;

/// Longest accepted command name, in bytes: a longer one is refused without being echoed.
pub const MAX_COMMAND_NAME_LEN: usize = 64;

/// A parsed command request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Envelope version.
    #[serde(default = "default_version")]
    pub v: u32,
    /// Client-chosen request id; replaying it returns the first reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Command name.
    pub cmd: String,
    /// The private session this command runs in (`kinds/sessions.md`); the sender must be
    /// the key that opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Command arguments.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub args: Map<String, Value>,
}

fn default_version() -> u32 {
    PROTOCOL_VERSION
}

/// A reply to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Envelope version.
    pub v: u32,
    /// The request id this answers (the request's `id`, or the request event's id).
    pub re: String,
    /// Whether the command succeeded.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A structured error: a stable machine code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// Human explanation.
    pub message: String,
    /// `rate_limited`: seconds until the sender may send again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// Stable error codes. New codes may be added; clients treat unknown ones as failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The DM content is not JSON.
    BadJson,
    /// JSON, but not a valid request envelope or arguments.
    BadRequest,
    /// The envelope version is not supported.
    UnsupportedVersion,
    /// No such command.
    UnknownCommand,
    /// The DM could not be decrypted with the recipient's key.
    DecryptFailed,
    /// The message kind inside a gift wrap is not one soko handles.
    UnsupportedKind,
    /// The sender may not use this command.
    Forbidden,
    /// Something named in the arguments does not exist.
    NotFound,
    /// Well-formed, but not acceptable (e.g. a product without a name).
    Invalid,
    /// Registration: the event's id or signature does not verify.
    BadSignature,
    /// Registration: the event is signed by another key than the DM's sender.
    SignerMismatch,
    /// Registration: the event is not addressed (`p` tag) to this soko.
    WrongRecipient,
    /// Registration: the event is not of the registration kind.
    WrongKind,
    /// Registration: `created_at` is more than 60 seconds from soko's clock.
    Stale,
    /// Registration: this event was already presented.
    Replayed,
    /// Registration: no invite has this code.
    InviteUnknown,
    /// Registration: the invite has no uses left.
    InviteUsed,
    /// Registration: the invite has expired.
    InviteExpired,
    /// Registration: the invite is for another role than the one asked.
    InviteWrongRole,
    /// Registration: the sender already has a role.
    AlreadyRegistered,
    /// An agent command from a sender that is not a registered agent.
    NotAnAgent,
    /// The agent is not linked to the merchant it names (never was, or was unlinked).
    NotLinked,
    /// The agent has no proposal with this id.
    UnknownProposal,
    /// A field, list or message is larger than soko accepts (limits in `kinds/`).
    TooLarge,
    /// A limit on open unpaid orders is reached (per buyer, per product or in total); try
    /// again once some have been paid or expired.
    Busy,
    /// Sessions: the blind auth token is malformed, not this mint's, or does not verify.
    BatInvalid,
    /// Sessions: the blind auth token was already used.
    BatSpent,
    /// Sessions: this soko's mint issues no blind auth tokens, so it opens no sessions.
    AuthUnsupported,
    /// Sessions: the mint could not be asked to check the token; nothing was spent.
    MintUnavailable,
    /// Sessions: no session has this id for the sender.
    SessionUnknown,
    /// Sessions: the session ran out of time.
    SessionExpired,
    /// Sessions: the session was closed.
    SessionClosed,
    /// Sessions: the command runs only inside a session.
    SessionRequired,
    /// Exchange: marking an issue or disputing reveals the registered key; send a reveal
    /// event to go on.
    RevealRequired,
    /// The sender sent more commands than its tier allows in one window; `retry_after`
    /// says when it may send again.
    RateLimited,
    /// Something failed inside soko; details are in its log, not here.
    Internal,
}

/// A request soko will not carry out, with the reason to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    /// Stable code.
    pub code: ErrorCode,
    /// Human explanation.
    pub message: String,
}

impl Refusal {
    /// A refusal with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl Request {
    /// Parses DM content into a request, refusing anything that is not a valid envelope.
    pub fn parse(content: &str) -> Result<Self, Refusal> {
        let value: Value = serde_json::from_str(content).map_err(|e| {
            Refusal::new(
                ErrorCode::BadJson,
                format!("message is not JSON ({e}); send {{\"cmd\":\"ping\"}} to test"),
            )
        })?;
        let Value::Object(ref fields) = value else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "expected a JSON object like {\"cmd\":\"ping\"}",
            ));
        };
        if !fields.contains_key("cmd") {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "missing \"cmd\": expected a JSON object like {\"cmd\":\"ping\"}",
            ));
        }
        let request: Request = serde_json::from_value(value)
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("bad request: {e}")))?;
        if request.v != PROTOCOL_VERSION {
            return Err(Refusal::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "envelope version {} is not supported; use {PROTOCOL_VERSION}",
                    request.v
                ),
            ));
        }
        if request.cmd.len() > MAX_COMMAND_NAME_LEN {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("\"cmd\" is longer than {MAX_COMMAND_NAME_LEN} bytes; send {{\"cmd\":\"ping\"}} to test"),
            ));
        }
        if let Some(id) = &request.id {
            if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("\"id\" must be 1 to {MAX_REQUEST_ID_LEN} characters"),
                ));
            }
        }
        if let Some(session) = &request.session {
            if session.is_empty() || session.len() > MAX_SESSION_ID_LEN {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("\"session\" must be 1 to {MAX_SESSION_ID_LEN} characters"),
                ));
            }
        }
        Ok(request)
    }
}

impl Response {
    /// A success.
    pub fn ok(re: String, result: Value) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            re,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn refused(re: String, refusal: Refusal) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            re,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code: refusal.code,
                message: refusal.message,
                retry_after: None,
            }),
        }
    }

    /// A `rate_limited` refusal: the sender may send again in `retry_after` seconds.
    pub fn rate_limited(re: String, message: impl Into<String>, retry_after: u64) -> Self {
        let mut response = Self::refused(re, Refusal::new(ErrorCode::RateLimited, message));
        if let Some(error) = &mut response.error {
            error.retry_after = Some(retry_after);
        }
        response
    }

    /// The JSON text sent in the DM.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to a fixed internal error.
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(r#"{{"v":{PROTOCOL_VERSION},"re":"","ok":false,"error":{{"code":"internal","message":"internal error"}}}}"#)
        })
    }
}

/// The commands soko knows, with their arguments. One handler file each in `src/commands/`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "snake_case")]
pub enum Command {
    /// Liveness check: `{"cmd":"ping"}` → `{"pong":true,"time":<unix seconds>}`.
    Ping(PingArgs),
    /// Anyone: browse the stalls and products soko has seen, from any merchant.
    Catalog(CatalogArgs),
    /// Admin: create a merchant with a managed identity.
    MerchantAdd(MerchantAddArgs),
    /// Admin: list merchants.
    MerchantList(PingArgs),
    /// Admin: create or replace a merchant's stall (and publish it).
    StallPut(StallPutArgs),
    /// Admin: create or replace a merchant's product (and publish it).
    ProductPut(ProductPutArgs),
    /// Admin (for the merchant): present the buyer's delivery code to release the escrow.
    OrderDeliver(OrderDeliverArgs),
    /// Admin: refund an order the buyer asked to cancel, one past its delivery window, or a
    /// disputed one.
    OrderRefund(OrderRefArgs),
    /// Admin: hold a paid order for review (the code no longer releases it).
    OrderDispute(OrderRefArgs),
    /// Admin: decide a disputed order for the merchant (the escrow is released to it).
    OrderRelease(OrderRefArgs),
    /// The buyer: ask to cancel a paid, undelivered order (optionally refunded over Lightning).
    OrderCancel(OrderCancelArgs),
    /// Admin: where a merchant's payouts go (Lightning address, LNURL, or an npub for tokens).
    MerchantPayout(MerchantPayoutArgs),
    /// Bridge: one USSD gateway callback (kinds/ussd.md); only configured bridges.
    UssdHop(super::ussd::UssdHopArgs),
    /// Admin: lift a merchant's USSD PIN lock (and optionally start over with a new
    /// activation code).
    UssdReset(super::ussd::UssdResetArgs),
    /// Admin: create an invite code for a role.
    InviteCreate(super::agents::InviteCreateArgs),
    /// Anyone: register with a signed registration event carrying an invite code.
    Register(super::agents::RegisterArgs),
    /// Anyone: the sender's role.
    Whoami(PingArgs),
    /// Agent: onboard a merchant by phone (or ask to be linked to it).
    MerchantOnboard(super::agents::OnboardArgs),
    /// Agent: its linked merchants and its proposals.
    AgentMerchants(PingArgs),
    /// Agent: propose a stall to a linked merchant.
    ProposeStall(super::agents::ProposeStallArgs),
    /// Agent: propose a product to a linked merchant.
    ProposeProduct(super::agents::ProposeProductArgs),
    /// Agent: propose deleting a stall or product of a linked merchant.
    ProposeDelete(super::agents::ProposeDeleteArgs),
    /// Anyone: open a private session with a blind auth token (`kinds/sessions.md`).
    OpenSession(super::sessions::OpenSessionArgs),
    /// In a session: its expiry and balance.
    SessionStatus(PingArgs),
    /// In a session: take a Cashu token into its wallet.
    SessionDeposit(super::sessions::SessionDepositArgs),
    /// In a session: end it now; its ecash goes back.
    CloseSession(PingArgs),
    /// Agent: withdraw one of its pending proposals.
    ProposalWithdraw(super::agents::ProposalWithdrawArgs),
    /// Admin: operations figures (sessions, BATs, wallet operations, today's orders).
    Metrics(PingArgs),
    /// In a session: offer sats for a fiat bill paid (`kinds/exchange.md`).
    OfferCreate(super::exchange::OfferCreateArgs),
    /// In a session: take a listed offer.
    OfferClaim(super::exchange::OfferClaimArgs),
    /// In a session: the maker withdraws a listed offer.
    OfferCancel(super::exchange::OfferRefArgs),
    /// In a session: one of the session's offers.
    OfferStatus(super::exchange::OfferRefArgs),
    /// In a session: the session's offers and claims.
    OfferList(PingArgs),
    /// In a session: the taker says the bill is paid.
    ReceiptSubmit(super::exchange::ReceiptArgs),
    /// In a session: the maker confirms the receipt; the taker is paid.
    ReceiptConfirm(super::exchange::OfferRefArgs),
    /// In a session: mark an issue (reveals the registered key).
    OfferIssue(super::exchange::IssueArgs),
    /// In a session: answer an issue (forfeit, or dispute revealing the key).
    OfferAnswer(super::exchange::AnswerArgs),
    /// In a session: the session's exchange settings.
    ExchangeSettings(super::exchange::SettingsArgs),
    /// Anyone: the reputation keyset to blind outputs for.
    ReputationKeyset(PingArgs),
    /// Anyone: the fiat providers offers may name.
    ProviderList(PingArgs),
    /// Admin: add or replace a provider.
    ProviderPut(super::exchange::ProviderArgs),
    /// Admin: remove a provider.
    ProviderRemove(super::exchange::ProviderRefArgs),
    /// Admin: open issues and disputes.
    DisputeList(PingArgs),
    /// Admin: one dispute with both sides' evidence (audited).
    DisputeShow(super::exchange::OfferRefArgs),
    /// Admin: decide a dispute (audited).
    DisputeResolve(super::exchange::ResolveArgs),
    /// The buyer: mark an issue on its paid order (reveals its key).
    OrderIssue(super::order_issue::OrderIssueArgs),
    /// The buyer: answer the merchant's issue (concede, or dispute revealing its key).
    OrderAnswer(super::order_issue::OrderAnswerArgs),
    /// Admin (for the merchant): mark an issue on an order (soko signs the merchant's reveal).
    MerchantIssue(super::order_issue::MerchantIssueArgs),
    /// Admin (for the merchant): answer the buyer's issue.
    MerchantAnswer(super::order_issue::MerchantAnswerArgs),
    /// Admin: settle an order's issue (audited; the buyer's part locked to its key).
    OrderResolve(super::order_issue::OrderResolveArgs),
    /// Admin: orders whose issue is not settled yet.
    OrderIssueList(PingArgs),
    /// Admin: one order's issue with both sides' words (audited).
    OrderIssueShow(OrderRefArgs),
}

/// Names accepted in `cmd`, for the unknown-command message.
pub const COMMAND_NAMES: &[&str] = &[
    "ping",
    "catalog",
    "merchant_add",
    "merchant_list",
    "stall_put",
    "product_put",
    "order_deliver",
    "order_refund",
    "order_dispute",
    "order_release",
    "order_cancel",
    "merchant_payout",
    "ussd_hop",
    "ussd_reset",
    "invite_create",
    "register",
    "whoami",
    "merchant_onboard",
    "agent_merchants",
    "propose_stall",
    "propose_product",
    "propose_delete",
    "proposal_withdraw",
    "open_session",
    "session_status",
    "session_deposit",
    "close_session",
    "metrics",
    "offer_create",
    "offer_claim",
    "offer_cancel",
    "offer_status",
    "offer_list",
    "receipt_submit",
    "receipt_confirm",
    "offer_issue",
    "offer_answer",
    "exchange_settings",
    "reputation_keyset",
    "provider_list",
    "provider_put",
    "provider_remove",
    "dispute_list",
    "dispute_show",
    "dispute_resolve",
    "order_issue",
    "order_answer",
    "merchant_issue",
    "merchant_answer",
    "order_resolve",
    "order_issue_list",
    "order_issue_show",
];

/// Most entries of each list one `catalog` answer carries.
pub const CATALOG_MAX_LIMIT: u32 = 200;
/// Entries of each list when `limit` is not given.
pub const CATALOG_DEFAULT_LIMIT: u32 = 50;

/// `catalog` arguments; all optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogArgs {
    /// Only this merchant's listings (npub or hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// Only stalls with this id and products of a stall with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<String>,
    /// Entries of each list, 1 to [`CATALOG_MAX_LIMIT`]; [`CATALOG_DEFAULT_LIMIT`] if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Arguments naming one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRefArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// soko's order number for that merchant.
    pub order: u64,
}

/// `order_cancel` arguments: the buyer names the order by its own id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelArgs {
    /// The merchant the order went to (npub or hex).
    pub merchant: String,
    /// The buyer's order id (the `id` of the NIP-15 order).
    pub order_id: String,
    /// A Lightning address or LNURL-pay link for the refund; a Cashu token DM without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_to: Option<String>,
}

/// `merchant_payout` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantPayoutArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// A Lightning address or LNURL-pay link, or an npub that takes Cashu token DMs.
    pub to: String,
}

/// `order_deliver` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderDeliverArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// soko's order number for that merchant.
    pub order: u64,
    /// The code the buyer gave (digits, or the QR string).
    pub code: String,
}

/// `merchant_add` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantAddArgs {
    /// Shop name.
    pub name: String,
    /// Payout Lightning address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightning_address: Option<String>,
    /// Phone number (for USSD); stored sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// `stall_put` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StallPutArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// NIP-15 stall content.
    pub stall: super::nip15::Stall,
}

/// `product_put` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductPutArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// NIP-15 product content.
    pub product: super::nip15::Product,
    /// Categories, published as `t` tags: at most 10, each trimmed, lower-cased and 1 to 32
    /// characters. Absent keeps the product's current ones; `[]` clears them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

/// `ping` takes no arguments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingArgs {}

/// `ping`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResult {
    /// Always true.
    pub pong: bool,
    /// soko's clock, unix seconds.
    pub time: u64,
}

impl Request {
    /// The typed command this request names.
    pub fn command(&self) -> Result<Command, Refusal> {
        if !COMMAND_NAMES.contains(&self.cmd.as_str()) {
            return Err(Refusal::new(
                ErrorCode::UnknownCommand,
                format!(
                    "unknown command {:?}; known commands: {}",
                    self.cmd,
                    COMMAND_NAMES.join(", ")
                ),
            ));
        }
        let tagged = serde_json::json!({ "cmd": self.cmd, "args": self.args });
        serde_json::from_value(tagged).map_err(|e| {
            Refusal::new(
                ErrorCode::BadRequest,
                format!("bad arguments for {:?}: {e}", self.cmd),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(content: &str) -> Option<ErrorCode> {
        Request::parse(content).err().map(|r| r.code)
    }

    #[test]
    fn minimal_and_full_requests_parse() {
        assert_eq!(
            Request::parse(r#"{"cmd":"ping"}"#).map(|r| (r.v, r.id, r.cmd)),
            Ok((1, None, "ping".to_owned()))
        );
        let full = Request::parse(r#"{"v":1,"id":"a1","cmd":"ping","args":{}}"#);
        assert_eq!(full.map(|r| r.id), Ok(Some("a1".to_owned())));
    }

    #[test]
    fn bad_envelopes_get_their_codes() {
        assert_eq!(code("hello"), Some(ErrorCode::BadJson));
        assert_eq!(code("[1]"), Some(ErrorCode::BadRequest));
        assert_eq!(code(r#"{"type":0}"#), Some(ErrorCode::BadRequest));
        assert_eq!(code(r#"{"cmd":5}"#), Some(ErrorCode::BadRequest));
        assert_eq!(
            code(r#"{"cmd":"ping","extra":1}"#),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"cmd":"ping","v":2}"#),
            Some(ErrorCode::UnsupportedVersion)
        );
        assert_eq!(
            code(r#"{"cmd":"ping","id":""}"#),
            Some(ErrorCode::BadRequest)
        );
        let long = format!(r#"{{"cmd":"ping","id":"{}"}}"#, "x".repeat(65));
        assert_eq!(code(&long), Some(ErrorCode::BadRequest));
    }

    #[test]
    fn commands_are_typed() {
        let cmd = |s: &str| Request::parse(s).and_then(|r| r.command());
        assert_eq!(cmd(r#"{"cmd":"ping"}"#), Ok(Command::Ping(PingArgs {})));
        assert_eq!(
            cmd(r#"{"cmd":"fly"}"#).map_err(|r| r.code),
            Err(ErrorCode::UnknownCommand)
        );
        assert_eq!(
            cmd(r#"{"cmd":"ping","args":{"x":1}}"#).map_err(|r| r.code),
            Err(ErrorCode::BadRequest)
        );
    }

    #[test]
    fn responses_serialise_as_specified() {
        let ok = Response::ok("a1".into(), serde_json::json!({"pong": true}));
        assert_eq!(
            ok.to_json(),
            r#"{"v":1,"re":"a1","ok":true,"result":{"pong":true}}"#
        );
        let err = Response::refused("a1".into(), Refusal::new(ErrorCode::UnknownCommand, "no"));
        assert_eq!(
            err.to_json(),
            r#"{"v":1,"re":"a1","ok":false,"error":{"code":"unknown_command","message":"no"}}"#
        );
    }
}
