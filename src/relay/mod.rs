//! The embedded Nostr relay (nostr-relay-builder), persisted in sled.

mod events_db;
mod policy;

use std::sync::Arc;

use nostr_relay_builder::builder::{PolicyResult, RateLimit, WritePolicy};
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, RelayUrl};

pub use self::events_db::SledEventStore;
pub use self::policy::{Exempt, SokoWritePolicy};
use crate::config::RelayConfig;
use crate::store::{Store, StoreError};

/// Failures starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Its store could not be opened.
    #[error("embedded relay store: {0}")]
    Store(#[from] StoreError),
    /// It could not listen.
    #[error("embedded relay cannot listen on {addr}: {reason} (change [relay] port)")]
    Listen {
        /// Address it tried.
        addr: String,
        /// Why not.
        reason: String,
    },
}

/// A running embedded relay; it stops when dropped or shut down.
#[derive(Debug)]
pub struct EmbeddedRelay {
    relay: LocalRelay,
    url: RelayUrl,
    janitor: tokio::task::JoinHandle<()>,
}

impl EmbeddedRelay {
    /// Opens the store and starts listening.
    pub async fn start(
        config: &RelayConfig,
        store: &Store,
        exempt: Exempt,
    ) -> Result<Self, RelayError> {
        let policy = Arc::new(SokoWritePolicy::new(config, exempt));
        let mut builder = RelayBuilder::default()
            .addr(config.bind)
            .database(SledEventStore::open(store).await?)
            .write_policy(Shared(policy.clone()))
            // Rate limits are per pubkey (in the policy): the per-connection limit would
            // throttle the bot, which publishes every reply over one connection.
            .rate_limit(RateLimit {
                max_reqs: 500,
                notes_per_minute: u32::MAX,
            });
        if config.port != 0 {
            builder = builder.port(config.port);
        }
        let relay = LocalRelay::new(builder);
        relay.run().await.map_err(|e| RelayError::Listen {
            addr: format!("{}:{}", config.bind, config.port),
            reason: e.to_string(),
        })?;
        let url = relay.url().await;
        let janitor = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                policy.forget_idle();
            }
        });
        Ok(Self {
            relay,
            url,
            janitor,
        })
    }

    /// The `ws://` URL clients connect to.
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// Stops listening and closes connections.
    pub fn shutdown(&self) {
        self.janitor.abort();
        self.relay.shutdown();
    }
}

impl Drop for EmbeddedRelay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The relay builder owns its policies; this lets the janitor share ours.
#[derive(Debug)]
struct Shared(Arc<SokoWritePolicy>);

impl WritePolicy for Shared {
    fn admit_event<'a>(
        &'a self,
        event: &'a Event,
        addr: &'a std::net::SocketAddr,
    ) -> BoxedFuture<'a, PolicyResult> {
        self.0.admit_event(event, addr)
    }
}
