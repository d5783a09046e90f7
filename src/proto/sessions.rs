//! Private sessions on the wire (`kinds/sessions.md`).

use serde::{Deserialize, Serialize};

/// Longest accepted blind auth token (`authA…`, a few hundred characters as mints issue them).
pub const MAX_BAT_LEN: usize = 2048;
/// Longest accepted refund Lightning address.
pub const MAX_REFUND_TO_LEN: usize = 256;
/// Longest accepted deposited Cashu token.
pub const MAX_DEPOSIT_TOKEN_LEN: usize = 32 * 1024;

/// `open_session`: open a private session with one blind auth token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSessionArgs {
    /// The blind auth token (`authA…`), with its DLEQ proof as the mint issued it.
    pub bat: String,
    /// Where the session's ecash goes when it ends: a Lightning address or LNURL-pay link.
    /// Without it, a Cashu token by DM to the session key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_to: Option<String>,
}

/// The answer to `open_session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenSessionResult {
    /// The session id: name it in every command of the session (envelope `session`).
    pub session: String,
    /// When the session runs out (unix seconds).
    pub expires_at: u64,
}

/// `session_deposit`: take a Cashu token into the session's wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDepositArgs {
    /// A Cashu token (`cashuA…`/`cashuB…`) of soko's mint.
    pub token: String,
}

/// The answer to `session_status` and `session_deposit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionStatusResult {
    /// The session id.
    pub session: String,
    /// When the session runs out (unix seconds).
    pub expires_at: u64,
    /// Ecash the session's wallet holds, in sats.
    pub balance_sat: u64,
}

/// How a closed session's ecash is going back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundProgress {
    /// All of it went back (or there was none).
    Done,
    /// A Lightning payment is pending at the mint; soko finishes it.
    Pending,
}

/// The answer to `close_session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseSessionResult {
    /// The session id.
    pub session: String,
    /// Sats returned so far.
    pub returned_sat: u64,
    /// Whether the refund is finished.
    pub refund: RefundProgress,
}
