//! The durable outbox: every outgoing event is written to sled before it is sent and removed
//! once a relay acknowledged it; whatever is left is resent periodically and on start.

use std::time::Duration;

use nostr_sdk::{Client, Event, JsonUtil};
use serde::{Deserialize, Serialize};

use crate::store::{trees, Store, StoreError, Typed};
use crate::util::unix_now;

/// How long an event is retried before it is given up (and logged as an error).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One event waiting for a relay's `OK`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    /// The signed event, as JSON.
    pub event: String,
    /// Unix seconds when it was queued.
    pub queued_at: u64,
}

/// The outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    pending: Typed<Pending>,
    store: Store,
    client: Client,
}

impl Outbox {
    /// Opens the outbox tree.
    pub fn open(store: &Store, client: Client) -> Result<Self, StoreError> {
        Ok(Self {
            pending: store.tree(trees::OUTBOX)?,
            store: store.clone(),
            client,
        })
    }

    /// The tree, for callers that queue an event inside their own transaction.
    pub fn tree(&self) -> &Typed<Pending> {
        &self.pending
    }

    /// The stored form of an event about to be queued.
    pub fn entry(event: &Event) -> Pending {
        Pending {
            event: event.as_json(),
            queued_at: unix_now(),
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
        match self.client.send_event(event).await {
            Ok(output) if !output.success.is_empty() => {
                self.pending.remove(event.id.as_bytes())?;
            }
            Ok(output) => {
                let reasons: Vec<String> = output
                    .failed
                    .iter()
                    .map(|(relay, why)| format!("{relay}: {why}"))
                    .collect();
                tracing::warn!(event_id = %event.id, ?reasons, "no relay accepted the event; kept in the outbox");
            }
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e, "sending failed; kept in the outbox");
            }
        }
        Ok(())
    }

    /// Resends everything queued, dropping events older than [`GIVE_UP_AFTER`].
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
            if now.saturating_sub(pending.queued_at) > GIVE_UP_AFTER.as_secs() {
                tracing::error!(event_id = %event.id, kind = %event.kind, "no relay accepted this event for 24 h; giving up");
                self.pending.remove(&key)?;
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
