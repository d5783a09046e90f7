//! The bot: one nostr-sdk client on the embedded and external relays, subscribed to DMs for
//! every identity soko holds and to NIP-15 listings, handing each event to a [`Handler`].

use crate::failpoint;
mod handle;
pub mod ingest;
mod nodb;

use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use self::handle::{handled, Handler, Outcome, SeenState};
use self::nodb::NoDatabase;
use crate::market::catalog::Ingested;
use crate::market::Catalog;
use crate::outbound::{Keyring, Outbox};
use crate::store::StoreError;
use crate::util::unix_now;

/// Events handled at once; enough to keep both cores busy with crypto, few enough to bound
/// memory when a relay floods us.
const MAX_IN_FLIGHT: usize = 256;
/// How often the outbox is retried.
const OUTBOX_RETRY: Duration = Duration::from_secs(10);
/// Slack below the checkpoint when resubscribing, for senders' clock skew and late relays.
const RESUBSCRIBE_SLACK: u64 = 3600;
/// The DM subscriptions ask for this many stored events, meaning all of them: without a
/// `limit` a relay sends only its default (nostr-relay-builder's is 500, the newest), and a
/// crash that left more DMs unanswered than that lost the older ones for good. soko's own
/// relay holds far fewer (`max_stored_events`); other relays cap it at their own maximum.
const BACKLOG_LIMIT: usize = 1_000_000;
/// NIP-59 wraps are backdated by up to two days.
const GIFT_WRAP_BACKDATE: u64 = crate::relay::GIFT_WRAP_BACKDATE;
/// How often `seen` and `replies` are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// `seen` keeps this much more than the replay window (see `prune`): it covers an event
/// that passed the age check just before a pruning pass and has not claimed its `seen`
/// entry yet. The check is made right before the claim (after the wait for a handler), so
/// that gap is a few sled operations; the rest is for the clock stepping back.
pub const PRUNE_MARGIN_SECS: u64 = 60;

pub use crate::proto::nip15::LISTING_KINDS;

/// Failures starting the bot.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The relay client failed.
    #[error("nostr client: {0}")]
    Client(#[from] nostr_sdk::client::Error),
}

/// The running bot.
#[derive(Debug)]
pub struct Bot {
    client: Client,
    outbox: Outbox,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Bot {
    /// The relay client soko publishes and listens through, connected to `relays`. It
    /// keeps no events: the handler's sled trees are what soko remembers.
    pub async fn connect(keyring: &Keyring, relays: &[RelayUrl]) -> Result<Client, BotError> {
        let client = Client::builder()
            .signer(keyring.bot().clone())
            .database(NoDatabase)
            .build();
        for url in relays {
            client.add_relay(url.clone()).await?;
        }
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(5)).await;
        Ok(client)
    }

    /// Recovers what a previous run left, announces the bot and starts handling what the
    /// relays send: DMs to soko's identities through `handler`, listings into `catalog`.
    /// Inbound events older than `window` are not handled, which lets `seen` and `replies`
    /// forget them.
    pub async fn start(
        handler: Handler,
        catalog: Catalog,
        relays: &[RelayUrl],
        window: ReplayWindow,
    ) -> Result<Self, BotError> {
        let keyring = handler.keyring().clone();
        let outbox = handler.outbox().clone();
        let client = outbox.client().clone();
        let interrupted = handler.interrupted()?;
        let released = handler.recover()?;
        if released > 0 {
            tracing::warn!(
                released,
                "events interrupted by a crash will be handled again"
            );
        }
        let resent = outbox.flush().await?;
        if resent > 0 {
            tracing::info!(resent, "resent replies left in the outbox");
        }
        announce(&outbox, &keyring, relays).await?;

        let since = handler
            .checkpoint()?
            .unwrap_or_else(unix_now)
            .saturating_sub(RESUBSCRIBE_SLACK);
        // Listen before subscribing: the relays answer the REQs at once with the stored
        // events (those a crash left unanswered among them), and the pool drops what it
        // notifies while nobody listens. A receiver taken later, in the spawned loop, lost
        // them whenever the loop started late, and only another start would see them.
        let notifications = client.notifications();
        // The embedded relay's new events come in-process; the pool asks it only for what
        // it stored before (see `subscribe`), and the other relays for everything.
        let local = outbox.local().and_then(|local| {
            local.feed().map(|feed| Local {
                url: local.url().clone(),
                feed,
            })
        });
        let local_url = local.as_ref().map(|local| local.url.clone());
        subscribe(
            &client,
            &subscriptions(&keyring.public_keys(), since),
            local_url.as_ref(),
        )
        .await?;

        let (stop, stopped) = watch::channel(false);
        let resume = tokio::spawn(resume(handler.clone(), interrupted, window));
        let prune = tokio::spawn(prune(handler.clone(), window, stopped.clone()));
        let event_loop = tokio::spawn(run(
            client.clone(),
            Inputs {
                notifications,
                local,
            },
            handler,
            catalog,
            keyring,
            Window {
                since,
                replay: window,
            },
            stopped.clone(),
        ));
        let retry = tokio::spawn(retry_outbox(outbox.clone(), stopped));
        Ok(Self {
            client,
            outbox,
            stop,
            tasks: vec![event_loop, retry, resume, prune],
        })
    }

    /// The relay client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops taking events, finishes those in flight, and disconnects.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if !self.outbox.is_empty() {
            tracing::info!(
                waiting = self.outbox.len(),
                "replies stay in the outbox for the next start"
            );
        }
        self.client.shutdown().await;
    }
}

/// Publishes the bot's profile, its NIP-65 relay list and its NIP-17 DM relays.
async fn announce(outbox: &Outbox, keyring: &Keyring, relays: &[RelayUrl]) -> Result<(), BotError> {
    let keys = keyring.bot();
    let metadata = Metadata::new()
        .name("soko")
        .display_name("soko market")
        .about("Marketplace and escrow bot. DM {\"cmd\":\"ping\"} (NIP-04 or NIP-17) to test.");
    let events = [
        EventBuilder::metadata(&metadata),
        EventBuilder::relay_list(relays.iter().map(|url| (url.clone(), None))),
        EventBuilder::new(Kind::InboxRelays, "").tags(
            relays
                .iter()
                .map(|url| Tag::custom(TagKind::Relay, [url.to_string()])),
        ),
    ];
    for builder in events {
        let event = builder
            .sign_with_keys(keys)
            .map_err(nostr_sdk::client::Error::from)?;
        outbox.send(&event).await?;
    }
    Ok(())
}

fn subscriptions(identities: &[PublicKey], since: u64) -> Vec<(SubscriptionId, Filter)> {
    vec![
        (
            SubscriptionId::new("soko-nip04"),
            Filter::new()
                .kind(Kind::EncryptedDirectMessage)
                .pubkeys(identities.iter().copied())
                .since(Timestamp::from(since))
                .limit(BACKLOG_LIMIT),
        ),
        (
            SubscriptionId::new("soko-nip17"),
            Filter::new()
                .kind(Kind::GiftWrap)
                .pubkeys(identities.iter().copied())
                .since(Timestamp::from(since.saturating_sub(GIFT_WRAP_BACKDATE)))
                .limit(BACKLOG_LIMIT),
        ),
        (
            SubscriptionId::new("soko-listings"),
            Filter::new().kinds(LISTING_KINDS),
        ),
        // Deletions of listings for the catalog. Bounded by the checkpoint: those applied
        // before it are remembered in the catalog as tombstones.
        (
            SubscriptionId::new("soko-deletions"),
            Filter::new()
                .kind(Kind::EventDeletion)
                .since(Timestamp::from(since)),
        ),
    ]
}

/// Subscribes to `filters` on every relay of `client`. On `local`, the embedded relay whose
/// new events the bot takes from its feed, each subscription closes once the relay has sent
/// what it stored (EOSE): what arrived before the feed was taken, or while the bot lagged
/// behind it. A copy that comes both ways is handled once (`seen`).
async fn subscribe(
    client: &Client,
    filters: &[(SubscriptionId, Filter)],
    local: Option<&RelayUrl>,
) -> Result<(), BotError> {
    let Some(local) = local else {
        for (id, filter) in filters {
            client
                .subscribe_with_id(id.clone(), filter.clone(), None)
                .await?;
        }
        return Ok(());
    };
    let others: Vec<RelayUrl> = client
        .relays()
        .await
        .into_keys()
        .filter(|url| url != local)
        .collect();
    for (id, filter) in filters {
        if !others.is_empty() {
            client
                .subscribe_with_id_to(others.clone(), id.clone(), filter.clone(), None)
                .await?;
        }
        client
            .subscribe_with_id_to(
                [local.clone()],
                SubscriptionId::new(format!("{id}-stored")),
                filter.clone(),
                Some(SubscribeAutoCloseOptions::default().exit_policy(ReqExitPolicy::ExitOnEOSE)),
            )
            .await?;
    }
    Ok(())
}

/// The embedded relay, heard in-process.
struct Local {
    url: RelayUrl,
    feed: tokio::sync::broadcast::Receiver<Event>,
}

/// Where the event loop hears events: the relay pool and, when soko runs its own relay,
/// that relay's feed.
struct Inputs {
    notifications: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    local: Option<Local>,
}

/// What the event loop heard next.
enum Heard {
    Event(Box<Event>),
    Nothing,
    /// Events were dropped before the loop read them: ask the relays again.
    Missed(u64),
    Closed,
}

impl Inputs {
    /// The next event from either source. The feed's events match any of `filters`, as the
    /// relays' do (the relay checked their signatures, or signed them: soko's own).
    async fn next(&mut self, filters: &[(SubscriptionId, Filter)]) -> Heard {
        use tokio::sync::broadcast::error::RecvError;
        enum Source {
            Pool(Result<RelayPoolNotification, RecvError>),
            Feed(Result<Event, RecvError>),
        }
        let from = {
            let Self {
                notifications,
                local,
            } = self;
            tokio::select! {
                n = notifications.recv() => Source::Pool(n),
                f = async {
                    match local {
                        Some(local) => local.feed.recv().await,
                        None => std::future::pending().await,
                    }
                } => Source::Feed(f),
            }
        };
        match from {
            Source::Pool(Ok(RelayPoolNotification::Event { event, .. })) => Heard::Event(event),
            Source::Pool(Ok(RelayPoolNotification::Shutdown) | Err(RecvError::Closed)) => {
                Heard::Closed
            }
            Source::Pool(Ok(_)) => Heard::Nothing,
            Source::Pool(Err(RecvError::Lagged(missed)))
            | Source::Feed(Err(RecvError::Lagged(missed))) => Heard::Missed(missed),
            Source::Feed(Ok(event))
                if filters
                    .iter()
                    .any(|(_, f)| f.match_event(&event, MatchEventOptions::new())) =>
            {
                Heard::Event(Box::new(event))
            }
            Source::Feed(Ok(_)) => Heard::Nothing,
            // The relay shut down: soko is stopping.
            Source::Feed(Err(RecvError::Closed)) => {
                self.local = None;
                Heard::Nothing
            }
        }
    }

    fn local_url(&self) -> Option<&RelayUrl> {
        self.local.as_ref().map(|local| &local.url)
    }
}

/// How far back inbound events are handled: the relay's own window (`[relay]
/// retention_secs`), gift wraps `[relay] gift_wrap_backdate_secs` more, since NIP-59 dates
/// them up to two days into the past. The bot forgets what it handled by the same rule as
/// the relay forgets the events.
#[derive(Debug, Clone, Copy)]
pub struct ReplayWindow {
    /// Seconds.
    pub secs: u64,
    /// Seconds more for gift wraps.
    pub wrap_backdate_secs: u64,
}

/// The subscriptions' start and the replay window.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: u64,
    replay: ReplayWindow,
}

/// The oldest `created_at` of an inbound event of `kind` handled at `now`. `seen` remembers
/// events back to [`oldest_handled_any`] only, so anything older must be dropped unhandled:
/// it could be one whose `seen` entry is gone.
fn oldest_handled(kind: Kind, window: ReplayWindow, now: u64) -> u64 {
    crate::relay::oldest_kept_with(kind, window.secs, window.wrap_backdate_secs, now)
}

/// The oldest `created_at` handled of any kind: where `seen` may be pruned.
fn oldest_handled_any(window: ReplayWindow, now: u64) -> u64 {
    oldest_handled(Kind::GiftWrap, window, now)
}

/// True for an inbound event too old to handle (see [`oldest_handled`]).
fn too_old(event: &Event, window: ReplayWindow) -> bool {
    event.created_at.as_secs() < oldest_handled(event.kind, window, unix_now())
}

/// Handles again the events a crash interrupted (kept whole when claimed).
async fn resume(handler: Handler, interrupted: Vec<Event>, window: ReplayWindow) {
    for event in interrupted {
        if too_old(&event, window) {
            tracing::info!(event_id = %event.id, "an interrupted event is past the replay window; dropped");
            continue;
        }
        match handler.handle(&event).await {
            Ok(outcome) => {
                tracing::info!(event_id = %event.id, ?outcome, "interrupted event handled again")
            }
            Err(e) => {
                tracing::error!(event_id = %event.id, error = %e, "interrupted event failed again; kept for the next start")
            }
        }
    }
}

/// Prunes `seen` and `replies` now and then (see [`Handler::prune`]).
async fn prune(handler: Handler, window: ReplayWindow, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {}
        }
        // The margin covers events that passed the age check just before this pass and are
        // still waiting for a handler.
        let floor = oldest_handled_any(window, unix_now()).saturating_sub(PRUNE_MARGIN_SECS);
        let handler = handler.clone();
        match tokio::task::spawn_blocking(move || handler.prune(floor)).await {
            Ok(Ok((seen, replies))) if seen + replies > 0 => {
                tracing::debug!(seen, replies, "pruned seen events and stored replies");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning seen events failed"),
            Err(e) => tracing::warn!(error = %e, "pruning task failed"),
        }
    }
}

async fn run(
    client: Client,
    mut inputs: Inputs,
    handler: Handler,
    catalog: Catalog,
    keyring: Keyring,
    window: Window,
    mut stopped: watch::Receiver<bool>,
) {
    failpoint::slow_event_loop().await;
    let since = window.since;
    let mut identities = keyring.watch();
    let mut filters = subscriptions(&keyring.public_keys(), since);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    loop {
        let heard = tokio::select! {
            _ = stopped.changed() => break,
            Ok(()) = identities.changed() => {
                // A new managed identity: widen the DM subscriptions to include it.
                filters = subscriptions(&keyring.public_keys(), since);
                if let Err(e) = subscribe(&client, &filters, inputs.local_url()).await {
                    tracing::error!(error = %e, "resubscribe for new identity failed");
                }
                continue;
            }
            heard = inputs.next(&filters) => heard,
        };
        match heard {
            Heard::Event(event) => {
                if LISTING_KINDS.contains(&event.kind) || event.kind == Kind::EventDeletion {
                    // In order, in the loop: a few sled reads and writes, and a deletion must
                    // not overtake the listing it deletes.
                    index(&catalog, &event);
                    continue;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let handler = handler.clone();
                let replay = window.replay;
                tasks.spawn(async move {
                    let _permit = permit;
                    // Checked after the wait for a handler, right before the claim: `seen`
                    // may have been pruned below its floor while this event waited.
                    if too_old(&event, replay) {
                        tracing::debug!(event_id = %event.id, "older than the replay window; dropped");
                        return;
                    }
                    match handler.handle_verified(&event).await {
                        Ok(outcome) => tracing::debug!(event_id = %event.id, ?outcome, "handled"),
                        Err(e) => tracing::error!(event_id = %event.id, error = %e, "handling failed; will retry on redelivery"),
                    }
                });
            }
            Heard::Nothing => {}
            Heard::Missed(missed) => {
                // Notifications were dropped; resubscribing makes relays send them again
                // and the persistent dedupe skips what was already handled.
                tracing::warn!(missed, "event loop lagged; resubscribing");
                if let Err(e) = subscribe(&client, &filters, inputs.local_url()).await {
                    tracing::error!(error = %e, "resubscribe failed");
                }
            }
            Heard::Closed => break,
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Offers a listing or deletion to the catalog; what it does not keep is only logged.
fn index(catalog: &Catalog, event: &Event) {
    match catalog.ingest(event) {
        Ok(Ingested::Invalid(why)) => {
            tracing::debug!(event_id = %event.id, kind = %event.kind, reason = %why, "listing not indexed");
        }
        Ok(outcome) => tracing::trace!(event_id = %event.id, ?outcome, "catalog"),
        Err(e) => tracing::warn!(event_id = %event.id, error = %e, "catalog write failed"),
    }
}

async fn retry_outbox(outbox: Outbox, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(OUTBOX_RETRY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {}
        }
        if outbox.is_empty() {
            continue;
        }
        if let Err(e) = outbox.flush().await {
            tracing::error!(error = %e, "outbox retry failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `seen` is pruned below `oldest_handled_any`; every kind's handling floor must lie at
    /// or above it, or a pruned event could be handled twice.
    #[test]
    fn no_kind_is_handled_below_the_pruning_floor() {
        let now = 1_800_000_000;
        for wrap_backdate_secs in [0, 3600, GIFT_WRAP_BACKDATE] {
            let window = ReplayWindow {
                secs: 7 * 24 * 3600,
                wrap_backdate_secs,
            };
            let prune_floor = oldest_handled_any(window, now);
            for kind in [
                Kind::EncryptedDirectMessage,
                Kind::GiftWrap,
                Kind::Custom(16),
                Kind::Custom(14),
            ] {
                assert!(oldest_handled(kind, window, now) >= prune_floor, "{kind}");
            }
        }
    }
}
