//! What the walkthroughs that talk to a running `soko run` share: finding it from its config
//! and data dir. Included with `#[path = "walkthrough/mod.rs"] mod walkthrough;` (Cargo takes
//! only `examples/*.rs` and `examples/*/main.rs` for examples, so this is not one).

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use nostr_sdk::{PublicKey, RelayUrl};
use soko::Config;

/// The `soko run` a walkthrough talks to.
pub struct RunningSoko {
    /// The config it runs with.
    pub config: Config,
    /// Its bot's key.
    pub bot: PublicKey,
    /// Its embedded relay.
    pub relay: RelayUrl,
}

/// The soko that runs with the config `file` (or the defaults) and `data_dir`, refused with a
/// clear message when that config has no embedded relay or the data dir is not soko's.
pub fn running_soko(file: Option<&Path>, data_dir: Option<&Path>) -> Result<RunningSoko> {
    let config = Config::resolve(file, data_dir).context("the config soko runs with")?;
    let data_dir = &config.storage.data_dir;
    if !config.relay.enabled {
        bail!("this walkthrough talks to soko's embedded relay, but [relay] enabled = false");
    }
    if !soko::identity::is_initialised(data_dir) {
        bail!(
            "{} is not a soko data dir: pass the --data-dir/--config `soko run` uses",
            data_dir.display()
        );
    }
    let bot = soko::identity::bot_keys(data_dir)?.public_key();
    let relay = RelayUrl::parse(&format!("ws://{}:{}", config.relay.bind, config.relay.port))?;
    Ok(RunningSoko { config, bot, relay })
}
