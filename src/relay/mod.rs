//! The embedded Nostr relay (nostr-relay-builder), persisted in sled.

mod codec;
mod events_db;
mod frames;
mod generations;
mod journal;
mod listener;
mod policy;

use std::sync::Arc;

use nostr_database::NostrDatabase as _;
use nostr_relay_builder::builder::{PolicyResult, RateLimit, WritePolicy};
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, EventId, Kind, PublicKey, RelayUrl, Timestamp};

pub use self::events_db::{Compaction, EventsError, SledEventStore, EVENTS_DIR};
pub use self::policy::{
    expires, oldest_kept, oldest_kept_with, Exempt, SokoWritePolicy, GIFT_WRAP_BACKDATE,
};
use crate::config::RelayConfig;
use crate::store::{Store, StoreError};

/// Failures starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Its store could not be opened.
    #[error("embedded relay store: {0}")]
    Store(#[from] StoreError),
    /// Its events' own store could not be opened.
    #[error("embedded relay store: {0}")]
    Events(#[from] EventsError),
    /// It could not listen.
    #[error("embedded relay cannot listen on {addr}: {reason} (change [relay] port)")]
    Listen {
        /// Address it tried.
        addr: String,
        /// Why not.
        reason: String,
    },
}

/// Tells whether soko has handled (answered or dropped for good) an inbound event: the bot
/// knows, the relay asks. Handled DMs to soko's keys need not be kept.
pub type Handled = Arc<dyn Fn(&EventId) -> bool + Send + Sync>;

/// Regular kinds the retention pass expires when `[relay] allowed_kinds` is empty (any kind
/// accepted): other regular kinds are then bounded by `max_stored_events` alone.
const KNOWN_REGULAR_KINDS: [u16; 8] = [1, 4, 5, 7, 14, 16, 17, 1059];

/// Retention removals after which the index is rebuilt (see `SledEventStore::compact_after`):
/// about 10 MB of remembered ids.
const COMPACT_AFTER: usize = 200_000;

/// Most events one retention pass deletes: its work is bounded, whatever backlog a burst
/// or a long stop left (a backlog present at start is left out when the store is loaded).
/// At the default `janitor_secs` (60) that is about 330 deletions a second, far above what
/// the write budgets let outsiders write.
pub const PRUNE_PER_PASS: usize = 20_000;

/// How often the relay checkpoints its journal (see [`journal`]): the most a power cut can
/// take of what it acknowledged, give or take a flush.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A running embedded relay; it stops when dropped or shut down.
#[derive(Debug)]
pub struct EmbeddedRelay {
    relay: LocalRelay,
    url: RelayUrl,
    local: LocalPublisher,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EmbeddedRelay {
    /// Opens the store (its own Db under `data_dir`; events an older soko kept in `store`,
    /// the main Db, are moved there) and starts listening. `exempt` holds soko's own keys;
    /// `handled` says which inbound events the bot is done with.
    pub async fn start(
        config: &RelayConfig,
        data_dir: &std::path::Path,
        store: &Store,
        exempt: Exempt,
        handled: Handled,
    ) -> Result<Self, RelayError> {
        let events = SledEventStore::open(
            data_dir,
            store,
            config.max_stored_events,
            Some(config.retention_secs),
            exempt.clone(),
        )
        .await?;
        let policy = Arc::new(SokoWritePolicy::new(
            config,
            exempt.clone(),
            Some(events.clone()),
        ));
        let builder = RelayBuilder::default()
            .database(events.clone())
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
        let limits = listener::Limits {
            max_message: max_message_bytes(config),
            connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
            policy: policy.clone(),
        };
        let server = tokio::spawn(listener::serve(
            listener,
            relay.clone(),
            info,
            limits,
            stopped.clone(),
        ));
        let local = LocalPublisher {
            url: url.clone(),
            open: Arc::new(std::sync::RwLock::new(Some(LocalParts {
                relay: relay.clone(),
                events: events.clone(),
                policy: policy.clone(),
            }))),
        };
        let checkpoints = tokio::spawn(checkpoints(events.clone(), stopped.clone()));
        let retention = Retention::new(config, events, exempt, handled);
        let period = std::time::Duration::from_secs(config.janitor_secs.max(1));
        let janitor = tokio::spawn(async move {
            let mut stopped = stopped;
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {
                        policy.forget_idle();
                        retention.apply(Timestamp::now().as_secs()).await;
                    }
                }
            }
        });
        Ok(Self {
            relay,
            url,
            local,
            stop,
            tasks: vec![server, janitor, checkpoints],
        })
    }

    /// The `ws://` URL clients connect to.
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// Publishes soko's own events into this relay without a websocket (see
    /// [`LocalPublisher`]).
    pub fn local_publisher(&self) -> LocalPublisher {
        self.local.clone()
    }

    /// Stops listening and closes connections.
    pub fn shutdown(&self) {
        self.local.close();
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

/// soko's way into its own relay: its outbox stores an event and hands it to the relay's
/// subscribers directly, as the relay does for an `EVENT` it accepts from a connection.
///
/// Over a websocket every reply went through one connection, which the relay serves one
/// message at a time, each waiting for its fsync before the next (and before any DM could be
/// forwarded to the bot on that connection): under load the bot's replies queued behind one
/// another's disk syncs. Here each publisher writes on its own task, and an event is kept
/// once it is journaled, as one from a connection is. Neither signature checks nor the outsiders' budgets
/// apply to what soko signed itself; size and kind do (see `SokoWritePolicy::judge_own`).
#[derive(Debug, Clone)]
pub struct LocalPublisher {
    url: RelayUrl,
    /// `None` once the relay is shut down: a clone kept by a late task then neither writes
    /// nor keeps the relay's store open.
    open: Arc<std::sync::RwLock<Option<LocalParts>>>,
}

#[derive(Debug, Clone)]
struct LocalParts {
    relay: LocalRelay,
    events: SledEventStore,
    policy: Arc<SokoWritePolicy>,
}

impl LocalPublisher {
    /// The relay's URL (the one soko's relay client also connects to).
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// Stores `event` and hands it to the subscribers; or says why the relay did not take
    /// it, worded like a NIP-01 `OK` message (`blocked: …`, `error: …`). An event the
    /// relay already holds counts as taken. A stored event survives a crash once this
    /// returns (see [`journal`]).
    pub async fn publish(&self, event: &Event) -> Result<(), String> {
        let parts = self.parts()?;
        parts
            .policy
            .judge_own(event)
            .map_err(|why| format!("blocked: {why}"))?;
        if event.kind.is_ephemeral() {
            // Passed on, never stored: as the relay does with one from a connection.
            parts.relay.notify_event(event.clone());
            return Ok(());
        }
        match parts.events.check_id(&event.id).await {
            Ok(nostr_database::DatabaseEventStatus::Deleted) => {
                return Err("blocked: this event is deleted".to_owned())
            }
            Ok(_) => {}
            Err(e) => return Err(format!("error: {e}")),
        }
        let relay = parts.relay.clone();
        let status = parts
            .events
            .save(event, |status| {
                if status.is_success() {
                    relay.notify_event(event.clone());
                }
            })
            .await
            .map_err(|e| format!("error: {e}"))?;
        match status {
            nostr_database::SaveEventStatus::Success
            | nostr_database::SaveEventStatus::Rejected(
                nostr_database::RejectedReason::Duplicate,
            ) => Ok(()),
            // Worded as the relay answers a connection ("error:", which the outbox retries),
            // not "blocked:": a version of a listing published within the second of its
            // deletion is refused as deleted (nostr-database compares the deletion with the
            // clock, not with the event's created_at) and is taken a moment later.
            nostr_database::SaveEventStatus::Rejected(reason) => {
                Err(format!("error: not stored ({reason:?})"))
            }
        }
    }

    fn parts(&self) -> Result<LocalParts, String> {
        self.open
            .read()
            .map(|open| open.clone())
            .unwrap_or_default()
            .ok_or_else(|| "error: the embedded relay is shut down".to_owned())
    }

    /// Every event the relay stores from now on, once journaled (see
    /// [`SledEventStore::feed`]); `None` once the relay is shut down.
    pub fn feed(&self) -> Option<tokio::sync::broadcast::Receiver<Event>> {
        let open = self.open.read().ok()?;
        open.as_ref().map(|parts| parts.events.feed())
    }

    fn close(&self) {
        if let Ok(mut open) = self.open.write() {
            open.take();
        }
    }
}

/// Checkpoints the journal every [`CHECKPOINT_EVERY`] until the relay stops. A failed one
/// is logged and tried again: the journal keeps its files until one succeeds.
async fn checkpoints(events: SledEventStore, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {
                if let Err(e) = events.checkpoint().await {
                    tracing::warn!(error = %e, "embedded relay journal checkpoint failed");
                }
            }
        }
    }
}

/// The retention rules of `kinds/relay.md`, applied by the janitor.
struct Retention {
    events: SledEventStore,
    ours: Exempt,
    handled: Handled,
    retention_secs: u64,
    /// `[relay] gift_wrap_backdate_secs`: how much longer gift wraps are kept.
    wrap_backdate_secs: u64,
    handled_keep_secs: u64,
    /// Regular kinds other than gift wraps (those are kept longer).
    regular: Vec<Kind>,
}

impl Retention {
    fn new(config: &RelayConfig, events: SledEventStore, ours: Exempt, handled: Handled) -> Self {
        let kinds: Vec<u16> = if config.allowed_kinds.is_empty() {
            KNOWN_REGULAR_KINDS.to_vec()
        } else {
            config.allowed_kinds.clone()
        };
        let regular = kinds
            .into_iter()
            .map(Kind::from)
            .filter(|k| expires(*k) && *k != Kind::GiftWrap)
            .collect();
        Self {
            events,
            ours,
            handled,
            retention_secs: config.retention_secs,
            wrap_backdate_secs: config.gift_wrap_backdate_secs,
            handled_keep_secs: config.handled_keep_secs,
            regular,
        }
    }

    /// One pass at unix time `now`, deleting at most [`PRUNE_PER_PASS`] events; failures
    /// are logged and the next pass tries again. Returns how many it deleted.
    async fn apply(&self, now: u64) -> usize {
        let removed = async {
            let mut budget = PRUNE_PER_PASS;
            let mut n = self
                .events
                .expire(
                    &self.regular,
                    Timestamp::from(oldest_kept(Kind::TextNote, self.retention_secs, now)),
                    budget,
                )
                .await?;
            budget -= n;
            let wraps = self
                .events
                .expire(
                    &[Kind::GiftWrap],
                    Timestamp::from(oldest_kept_with(
                        Kind::GiftWrap,
                        self.retention_secs,
                        self.wrap_backdate_secs,
                        now,
                    )),
                    budget,
                )
                .await?;
            budget -= wraps;
            n += wraps;
            let ours: Vec<PublicKey> = self
                .ours
                .read()
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default();
            let handled = self
                .events
                .forget(
                    &[Kind::EncryptedDirectMessage, Kind::GiftWrap],
                    &ours,
                    Timestamp::from(now.saturating_sub(self.handled_keep_secs)),
                    budget,
                    |id| (self.handled)(id),
                )
                .await?;
            Ok::<_, nostr_database::DatabaseError>((n, handled))
        };
        let removed = match removed.await {
            Ok((expired, handled)) => {
                if expired + handled >= PRUNE_PER_PASS {
                    tracing::info!(
                        expired,
                        handled,
                        "embedded relay retention pass hit its limit; the next pass goes on"
                    );
                } else if expired + handled > 0 {
                    tracing::debug!(expired, handled, "embedded relay retention pass");
                }
                expired + handled
            }
            Err(e) => {
                tracing::warn!(error = %e, "embedded relay retention pass failed");
                0
            }
        };
        match self.events.compact_after(COMPACT_AFTER).await {
            Ok(true) => tracing::debug!("embedded relay index rebuilt"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "embedded relay index rebuild failed"),
        }
        // After the retention pass, which is what leaves sled's files larger than their data.
        match self.events.compact_if_needed().await {
            Ok(Some(done)) => events_db::log_compaction(&done),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "embedded relay store compaction failed"),
        }
        removed
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

/// Room for the `["EVENT",…]` envelope around the largest event, and for `REQ` messages
/// whose filters list many keys (the bot's DM filters name every identity it holds, 67
/// bytes each: 64 KiB fits about a thousand).
const ENVELOPE_SLACK: usize = 64 * 1024;

/// The largest websocket message the relay reads; anything bigger closes the connection.
fn max_message_bytes(config: &RelayConfig) -> u64 {
    config.max_event_bytes.saturating_add(ENVELOPE_SLACK) as u64
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
            "max_message_length": max_message_bytes(config),
            "max_content_length": config.max_event_bytes,
        },
    })
    .to_string()
}
