//! Command handlers: one file per command, dispatched from one `match` on [`Command`].

mod ping;

use nostr_sdk::PublicKey;
use serde_json::Value;

use crate::proto::{Command, Refusal};

/// Why a command did not succeed. Refusals go back to the sender as they are; internal
/// failures are logged and the sender only learns that something went wrong inside.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The sender asked for something soko will not do.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// soko failed.
    #[error("internal: {0}")]
    Internal(String),
}

/// What a command may use. Domains (market, escrow, …) join here as they arrive.
#[derive(Debug, Clone, Default)]
pub struct Context {}

/// Runs one command for `sender`.
pub async fn execute(
    _ctx: &Context,
    _sender: PublicKey,
    command: Command,
) -> Result<Value, CommandError> {
    let result = match command {
        Command::Ping(args) => serde_json::to_value(ping::run(args)),
    };
    result.map_err(|e| CommandError::Internal(format!("result encoding: {e}")))
}
