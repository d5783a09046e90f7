//! The identities soko holds keys for: the bot, and (later) the merchants it manages.
//! DMs addressed to any of them are opened with its key and answered under it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use nostr_sdk::{Keys, PublicKey};
use tokio::sync::watch;

use crate::relay::Exempt;

/// Keys by public key. Cloning shares the same ring.
#[derive(Debug, Clone)]
pub struct Keyring {
    bot: Keys,
    keys: Arc<RwLock<HashMap<PublicKey, Keys>>>,
    exempt: Exempt,
    /// Bumped on every addition, so the bot can widen its DM subscription.
    changes: Arc<watch::Sender<usize>>,
}

impl Keyring {
    /// A ring holding the bot's keys; `exempt` mirrors its members for the relay's rate
    /// limit and store bound.
    pub fn new(bot: Keys, exempt: Exempt) -> Self {
        let ring = Self {
            bot: bot.clone(),
            keys: Arc::default(),
            exempt,
            changes: Arc::new(watch::channel(0).0),
        };
        ring.add(bot);
        ring
    }

    /// The bot's own keys.
    pub fn bot(&self) -> &Keys {
        &self.bot
    }

    /// Adds an identity soko manages.
    pub fn add(&self, keys: Keys) {
        if let Ok(mut exempt) = self.exempt.write() {
            exempt.insert(keys.public_key());
        }
        if let Ok(mut map) = self.keys.write() {
            map.insert(keys.public_key(), keys);
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// Notified whenever an identity is added.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.changes.subscribe()
    }

    /// The keys for `pubkey`, if soko holds them.
    pub fn get(&self, pubkey: &PublicKey) -> Option<Keys> {
        self.keys.read().ok()?.get(pubkey).cloned()
    }

    /// Every public key in the ring.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys
            .read()
            .map(|map| map.keys().copied().collect())
            .unwrap_or_default()
    }
}
