//! The durable outbox: every outgoing event is written to sled before it is sent and removed
//! once a relay acknowledged it (the embedded relay acknowledges once the event is in its
//! journal, which a crash does not take back); whatever is left is resent periodically and
//! on start.
//!
//! Retries are bounded (issue 11): an event is tried again after a delay doubling from
//! [`FIRST_RETRY`] to [`MAX_RETRY`], at most [`MAX_ATTEMPTS`] times and for at most
//! [`GIVE_UP_AFTER`]; one every relay refuses for good (`invalid:`, `blocked:`, too large…)
//! or larger than [`MAX_EVENT_BYTES`] is dropped at once, with an error in the log.

use std::time::Duration;

use nostr_sdk::{Client, Event, JsonUtil};
use serde::{Deserialize, Serialize};

use crate::relay::LocalPublisher;
use crate::store::{trees, Store, StoreError, Typed};
use crate::util::{json_size_over, unix_now};

/// How long an event is retried before it is given up (and logged as an error).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Most sends of one event before it is given up.
pub const MAX_ATTEMPTS: u32 = 20;
/// Delay before the second send of an event.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// Longest delay between two sends of an event.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Largest event sent, as JSON: what soko's own relay and most public relays accept.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// One event waiting for a relay's `OK`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The signed event, as JSON.
    pub event: String,
    /// Unix seconds when it was queued.
    pub queued_at: u64,
    /// Sends that failed so far.
    #[serde(default)]
    pub attempts: u32,
    /// Unix seconds of the last failed send.
    #[serde(default)]
    pub last_try: u64,
}

/// True for a relay's refusal that a resend cannot change (NIP-01 `OK` prefixes).
fn refused_for_good(reason: &str) -> bool {
    let lower = reason.to_ascii_lowercase();
    // Relays (soko's own included) report rate limits under `blocked:` too.
    if lower.contains("rate limit") || lower.contains("rate-limit") {
        return false;
    }
    ["invalid:", "blocked:", "pow:", "restricted:"]
        .iter()
        .any(|prefix| lower.starts_with(prefix))
        || lower.contains("too large")
}

/// Seconds to wait after `attempts` failed sends.
fn retry_delay(attempts: u32) -> u64 {
    FIRST_RETRY
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_RETRY)
        .as_secs()
}

/// An event encoded for the outbox, not yet queued (see [`Outbox::stage`]).
#[derive(Debug, Clone)]
pub struct Staged {
    id: Vec<u8>,
    entry: Vec<u8>,
}

impl Staged {
    /// Queues the event inside a transaction over [`Outbox::raw`].
    pub fn insert<E>(
        &self,
        outbox: &sled::transaction::TransactionalTree,
    ) -> Result<(), sled::transaction::ConflictableTransactionError<E>> {
        outbox.insert(self.id.as_slice(), self.entry.as_slice())?;
        Ok(())
    }

    /// Queues the event outside a transaction, for a caller that orders its writes itself.
    pub fn insert_now(&self, outbox: &sled::Tree) -> Result<(), StoreError> {
        outbox.insert(self.id.as_slice(), self.entry.as_slice())?;
        Ok(())
    }
}

/// The outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    pending: Typed<Pending>,
    store: Store,
    client: Client,
    /// The embedded relay, published to in-process instead of through `client`.
    local: Option<LocalPublisher>,
}

/// What the relays said to one send.
#[derive(Debug, Default)]
struct Sent {
    /// Some relay took it (or already had it).
    accepted: bool,
    /// (relay, reason) for every relay that refused it.
    refused: Vec<(String, String)>,
    /// Why it could not be sent at all, to the relays the client holds.
    error: Option<String>,
}

impl Outbox {
    /// Opens the outbox tree.
    pub fn open(store: &Store, client: Client) -> Result<Self, StoreError> {
        Ok(Self {
            pending: store.tree(trees::OUTBOX)?,
            store: store.clone(),
            client,
            local: None,
        })
    }

    /// The same outbox, publishing to soko's embedded relay in-process (see
    /// [`LocalPublisher`]) and through the client only to the other relays.
    pub fn with_local(mut self, local: LocalPublisher) -> Self {
        self.local = Some(local);
        self
    }

    /// The relay client it sends through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The embedded relay it publishes into in-process, if any.
    pub fn local(&self) -> Option<&LocalPublisher> {
        self.local.as_ref()
    }

    /// The tree to join in a transaction that stages events ([`Staged::insert`]).
    pub fn raw(&self) -> &sled::Tree {
        self.pending.raw()
    }

    /// An event encoded for the outbox, for a caller that queues it inside its own
    /// transaction together with the state the event reports; [`Self::deliver`] sends it
    /// once that transaction is committed.
    pub fn stage(&self, event: &Event) -> Result<Staged, StoreError> {
        Ok(Staged {
            id: event.id.as_bytes().to_vec(),
            entry: self.pending.encode(&Self::entry(event))?,
        })
    }

    /// The stored form of an event about to be queued.
    fn entry(event: &Event) -> Pending {
        Pending {
            event: event.as_json(),
            queued_at: unix_now(),
            attempts: 0,
            last_try: 0,
        }
    }

    /// Queues an event and tries to send it.
    pub async fn send(&self, event: &Event) -> Result<(), StoreError> {
        self.pending
            .insert(event.id.as_bytes(), &Self::entry(event))?;
        self.deliver(event).await
    }

    /// Sends a queued event; it leaves the outbox once any relay accepted it.
    ///
    /// sled first makes everything written so far durable: sled buffers writes for up to
    /// half a second, and an event must not leave the process before the state it reports
    /// (an order, a delivery code's MAC, a credited balance) and its own outbox entry are on
    /// disk. A crash right after sending would otherwise roll that state back, and a buyer
    /// could hold a code soko no longer knows.
    pub async fn deliver(&self, event: &Event) -> Result<(), StoreError> {
        self.store.sync().await?;
        self.deliver_unsynced(event).await
    }

    /// [`Self::deliver`] without waiting for sled's writes to reach the disk first, for an
    /// event that reports nothing a crash could take back: an answer made from its request
    /// alone (a pong, a refusal of what could not be read or was over a rate). Its request
    /// is kept by a relay, and a crash before sled's next flush (within half a second)
    /// only has it answered again. A flush costs far more than its fsync here (see
    /// [`Store::sync`]), so junk and pings do not each pay one.
    pub async fn deliver_unsynced(&self, event: &Event) -> Result<(), StoreError> {
        if let Some(size) = json_size_over(event, MAX_EVENT_BYTES) {
            tracing::error!(event_id = %event.id, kind = %event.kind, size, "event too large for any relay; dropped");
            self.pending.remove(event.id.as_bytes())?;
            return Ok(());
        }
        let sent = self.publish(event).await;
        if sent.accepted {
            self.pending.remove(event.id.as_bytes())?;
        } else if sent.error.is_none()
            && !sent.refused.is_empty()
            && sent.refused.iter().all(|(_, why)| refused_for_good(why))
        {
            let reasons: Vec<String> = sent
                .refused
                .iter()
                .map(|(relay, why)| format!("{relay}: {why}"))
                .collect();
            tracing::error!(event_id = %event.id, kind = %event.kind, ?reasons, "every relay refused the event for good; dropped");
            self.pending.remove(event.id.as_bytes())?;
        } else {
            let reasons: Vec<String> = sent
                .refused
                .iter()
                .map(|(relay, why)| format!("{relay}: {why}"))
                .chain(sent.error)
                .collect();
            tracing::warn!(event_id = %event.id, ?reasons, "no relay accepted the event; kept in the outbox");
            self.count_failure(event)?;
        }
        Ok(())
    }

    /// Sends `event` to the embedded relay in-process, if there is one, and through the
    /// client to every other relay, at once.
    async fn publish(&self, event: &Event) -> Sent {
        let Some(local) = &self.local else {
            return self.send_through_client(event, None).await;
        };
        let others: Vec<_> = self
            .client
            .relays()
            .await
            .into_keys()
            .filter(|url| url != local.url())
            .collect();
        let (here, mut sent) = tokio::join!(local.publish(event), async {
            if others.is_empty() {
                Sent::default()
            } else {
                self.send_through_client(event, Some(others)).await
            }
        });
        match here {
            Ok(()) => sent.accepted = true,
            Err(why) => sent.refused.push((local.url().to_string(), why)),
        }
        sent
    }

    /// Sends `event` through the client, to `to` or else to all its relays.
    async fn send_through_client(
        &self,
        event: &Event,
        to: Option<Vec<nostr_sdk::RelayUrl>>,
    ) -> Sent {
        let output = match to {
            Some(urls) => self.client.send_event_to(urls, event).await,
            None => self.client.send_event(event).await,
        };
        match output {
            // A relay that already has the event counts as one that took it.
            Ok(output) => Sent {
                accepted: !output.success.is_empty()
                    || output
                        .failed
                        .values()
                        .any(|why| why.starts_with("duplicate:")),
                refused: output
                    .failed
                    .into_iter()
                    .map(|(relay, why)| (relay.to_string(), why))
                    .collect(),
                ..Sent::default()
            },
            Err(e) => Sent {
                error: Some(e.to_string()),
                ..Sent::default()
            },
        }
    }

    fn count_failure(&self, event: &Event) -> Result<(), StoreError> {
        let key = event.id.as_bytes();
        if let Some(mut pending) = self.pending.get(key)? {
            pending.attempts = pending.attempts.saturating_add(1);
            pending.last_try = unix_now();
            self.pending.insert(key, &pending)?;
        }
        Ok(())
    }

    /// Resends what is due, dropping events tried [`MAX_ATTEMPTS`] times or older than
    /// [`GIVE_UP_AFTER`].
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let entries: Vec<_> = self.pending.iter().collect::<Result<_, _>>()?;
        let now = unix_now();
        let mut sent = 0;
        for (key, pending) in entries {
            let event = match Event::from_json(&pending.event) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable outbox entry dropped");
                    self.pending.remove(&key)?;
                    continue;
                }
            };
            if now.saturating_sub(pending.queued_at) > GIVE_UP_AFTER.as_secs()
                || pending.attempts >= MAX_ATTEMPTS
            {
                tracing::error!(event_id = %event.id, kind = %event.kind, attempts = pending.attempts, "no relay accepted this event; giving up");
                self.pending.remove(&key)?;
                continue;
            }
            if pending.attempts > 0
                && now
                    < pending
                        .last_try
                        .saturating_add(retry_delay(pending.attempts))
            {
                continue;
            }
            self.deliver(&event).await?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_refusals_are_told_from_passing_ones() {
        assert!(refused_for_good(
            "invalid: event too large (70000 bytes, limit 65536)"
        ));
        assert!(refused_for_good("blocked: you are banned"));
        assert!(refused_for_good(
            "event too large (70000 bytes, limit 65536)"
        ));
        assert!(!refused_for_good("rate-limited: slow down"));
        assert!(!refused_for_good(
            "blocked: rate limited: too many events from this pubkey"
        ));
        assert!(!refused_for_good(
            "error: could not connect to the database"
        ));
    }

    /// A reply leaves the outbox once the embedded relay took it (it is in the relay's
    /// journal then); one queued but not sent before a stop is sent at the next start; one
    /// the relay holds already counts as taken.
    #[tokio::test]
    async fn an_event_leaves_the_outbox_once_the_embedded_relay_took_it(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use nostr_sdk::{EventBuilder, Keys, Kind, Tag};

        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let mut config = crate::config::Config::default().relay;
        config.port = 0;
        let start = || {
            crate::relay::EmbeddedRelay::start(
                &config,
                dir.path(),
                &store,
                crate::relay::Exempt::default(),
                std::sync::Arc::new(|_: &nostr_sdk::EventId| false),
            )
        };
        let reply = |to: &Keys| {
            EventBuilder::new(Kind::EncryptedDirectMessage, "sealed")
                .tag(Tag::public_key(to.public_key()))
                .sign_with_keys(&Keys::generate())
        };
        let first = reply(&Keys::generate())?;
        let relay = start().await?;
        let outbox = Outbox::open(&store, Client::default())?.with_local(relay.local_publisher());
        outbox.send(&first).await?;
        assert!(outbox.is_empty());

        // Queued with the state it reports, then a stop before it was sent: sent at the next
        // start.
        let second = reply(&Keys::generate())?;
        outbox.stage(&second)?.insert_now(outbox.raw())?;
        relay.shutdown();
        drop(relay);
        drop(outbox);
        let relay = start().await?;
        let outbox = Outbox::open(&store, Client::default())?.with_local(relay.local_publisher());
        assert_eq!(outbox.len(), 1);
        outbox.flush().await?;
        assert!(outbox.is_empty());
        outbox.send(&first).await?;
        assert!(outbox.is_empty(), "a duplicate counts as taken");
        let reader = Client::default();
        reader.add_relay(relay.url().clone()).await?;
        reader.connect().await;
        let held = reader
            .fetch_events(
                nostr_sdk::Filter::new().ids([first.id, second.id]),
                Duration::from_secs(10),
            )
            .await?;
        assert_eq!(held.len(), 2);
        reader.shutdown().await;
        Ok(())
    }

    #[test]
    fn retries_back_off_and_end() {
        assert_eq!(retry_delay(1), 10);
        assert_eq!(retry_delay(2), 20);
        assert_eq!(retry_delay(30), 3600);
        let total: u64 = (1..MAX_ATTEMPTS).map(retry_delay).sum();
        // Twenty tries spread over about half a day, not 8,640 over a day.
        assert!(total < GIVE_UP_AFTER.as_secs(), "{total}");
    }
}
