//! The embedded Nostr relay (nostr-relay-builder), persisted in sled.

mod events_db;
mod listener;
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
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EmbeddedRelay {
    /// Opens the store and starts listening.
    pub async fn start(
        config: &RelayConfig,
        store: &Store,
        exempt: Exempt,
    ) -> Result<Self, RelayError> {
        let policy = Arc::new(SokoWritePolicy::new(config, exempt));
        let builder = RelayBuilder::default()
            .database(SledEventStore::open(store).await?)
            .write_policy(Shared(policy.clone()))
            // Rate limits are per pubkey (in the policy): the per-connection limit would
            // throttle the bot, which publishes every reply over one connection.
            .rate_limit(RateLimit {
                max_reqs: 500,
                notes_per_minute: u32::MAX,
            });
        let relay = LocalRelay::new(builder);
        let listen_error = |reason: String| RelayError::Listen {
            addr: format!("{}:{}", config.bind, config.port),
            reason,
        };
        let listener = tokio::net::TcpListener::bind((config.bind, config.port))
            .await
            .map_err(|e| listen_error(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| listen_error(e.to_string()))?;
        let url =
            RelayUrl::parse(&format!("ws://{addr}")).map_err(|e| listen_error(e.to_string()))?;
        let info = relay_information(config);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(listener::serve(
            listener,
            relay.clone(),
            info,
            stopped.clone(),
        ));
        let janitor = tokio::spawn(async move {
            let mut stopped = stopped;
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => policy.forget_idle(),
                }
            }
        });
        Ok(Self {
            relay,
            url,
            stop,
            tasks: vec![server, janitor],
        })
    }

    /// The `ws://` URL clients connect to.
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// Stops listening and closes connections.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
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

/// The NIP-11 relay information document.
fn relay_information(config: &RelayConfig) -> String {
    serde_json::json!({
        "name": "soko",
        "description": "soko's embedded marketplace relay",
        "software": "soko",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": [1, 4, 9, 11, 15, 17, 44, 59],
        "limitation": {
            "max_message_length": config.max_event_bytes,
        },
    })
    .to_string()
}
