//! The operator's side of admin commands: `soko merchant …` runs while the daemon runs (sled
//! is single-process), so it talks to it the way every client does — an encrypted DM to the
//! bot, signed by the operator key in the data dir, answered by DM.

use std::time::Duration;

use nostr_sdk::prelude::*;
use serde_json::Value;

use crate::config::Config;
use crate::identity::{self, IdentityError};
use crate::proto::{Response, PROTOCOL_VERSION};

/// How long the operator waits for the bot's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures of an operator call.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Keys could not be read.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The data dir was never used by soko: calling would only create keys there.
    #[error(
        "{0} is not a soko data dir (no bot key): pass the --data-dir/--config soko runs with"
    )]
    NotADataDir(std::path::PathBuf),
    /// No relay to reach the bot through.
    #[error("no relay to reach soko: the embedded relay is off and no [relays] urls are set")]
    NoRelay,
    /// The relay client failed.
    #[error("relay: {0}")]
    Client(String),
    /// The bot did not answer in time.
    #[error("soko did not answer within {0:?}: is it running (soko run) with this data dir?")]
    NoAnswer(Duration),
}

/// Sends `cmd` with `args` to the soko whose data dir and relay `config` names, and returns
/// its answer.
pub async fn call(config: &Config, cmd: &str, args: Value) -> Result<Response, OperatorError> {
    let data_dir = &config.storage.data_dir;
    if !identity::is_initialised(data_dir) {
        return Err(OperatorError::NotADataDir(data_dir.clone()));
    }
    let operator = identity::operator_keys(data_dir)?;
    let bot = identity::bot_keys(data_dir)?.public_key();
    let mut relays: Vec<String> = config.relays.urls.iter().map(|u| u.to_string()).collect();
    if config.relay.enabled {
        relays.insert(
            0,
            format!("ws://{}:{}", config.relay.bind, config.relay.port),
        );
    }
    if relays.is_empty() {
        return Err(OperatorError::NoRelay);
    }
    let client = Client::new(operator.clone());
    for url in &relays {
        client
            .add_relay(url.as_str())
            .await
            .map_err(|e| OperatorError::Client(e.to_string()))?;
    }
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    let mut notifications = client.notifications();
    // Gift wraps are backdated by up to two days, so the filter reaches back that far; the
    // random request id tells our answer apart from older ones.
    let since = Timestamp::now() - Duration::from_secs(2 * 24 * 3600 + 60);
    client
        .subscribe(
            Filter::new()
                .kind(Kind::GiftWrap)
                .pubkey(operator.public_key())
                .since(since),
            None,
        )
        .await
        .map_err(|e| OperatorError::Client(e.to_string()))?;

    let id = Keys::generate().public_key().to_hex()[..16].to_owned();
    let request = serde_json::json!({ "v": PROTOCOL_VERSION, "id": id, "cmd": cmd, "args": args });
    client
        .send_private_msg(bot, request.to_string(), [])
        .await
        .map_err(|e| OperatorError::Client(e.to_string()))?;

    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Ok(notification) = notifications.recv().await {
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            let Ok(gift) = UnwrappedGift::from_gift_wrap(&operator, &event).await else {
                continue;
            };
            if gift.sender != bot {
                continue;
            }
            if let Ok(response) = serde_json::from_str::<Response>(&gift.rumor.content) {
                if response.re == id {
                    return Some(response);
                }
            }
        }
        None
    })
    .await;
    client.shutdown().await;
    answer
        .ok()
        .flatten()
        .ok_or(OperatorError::NoAnswer(ANSWER_TIMEOUT))
}
