//! Publishing as any identity in the keyring, through the durable outbox.

use nostr_sdk::{EventBuilder, EventId, PublicKey};

use super::keyring::Keyring;
use super::outbox::Outbox;
use super::seal::{seal_dm, wrap_tagged, Note, Scheme};
use crate::store::StoreError;

/// Failures publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// soko holds no key for the author.
    #[error("no key for {0}")]
    NoKey(PublicKey),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
    /// The outbox failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signs with keyring keys and sends through the outbox.
#[derive(Debug, Clone)]
pub struct Publisher {
    keyring: Keyring,
    outbox: Outbox,
}

impl Publisher {
    /// A publisher over a keyring and an outbox.
    pub fn new(keyring: Keyring, outbox: Outbox) -> Self {
        Self { keyring, outbox }
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The outbox, for callers that stage what they seal in their own transaction.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Signs `builder` as `author` and publishes it durably.
    pub async fn publish_as(
        &self,
        author: &PublicKey,
        builder: EventBuilder,
    ) -> Result<EventId, PublishError> {
        let keys = self
            .keyring
            .get(author)
            .ok_or(PublishError::NoKey(*author))?;
        let event = builder
            .sign_with_keys(&keys)
            .map_err(|e| PublishError::Sign(e.to_string()))?;
        self.outbox.send(&event).await?;
        Ok(event.id)
    }

    /// A DM from soko's identity `from` to `to` in `scheme`, signed but not yet queued, for
    /// callers that queue it in their own transaction.
    pub async fn seal_dm(
        &self,
        from: &PublicKey,
        to: PublicKey,
        scheme: Scheme,
        content: &str,
    ) -> Result<nostr_sdk::Event, PublishError> {
        let keys = self.keyring.get(from).ok_or(PublishError::NoKey(*from))?;
        seal_dm(&keys, to, scheme, content, None)
            .await
            .map_err(PublishError::Sign)
    }

    /// A [`Note`] from soko's identity `from` to `to`, signed but not yet queued.
    pub async fn seal_note(
        &self,
        from: &PublicKey,
        to: PublicKey,
        scheme: Scheme,
        note: &Note,
    ) -> Result<nostr_sdk::Event, PublishError> {
        let keys = self.keyring.get(from).ok_or(PublishError::NoKey(*from))?;
        match note {
            Note::Text(text) => seal_dm(&keys, to, scheme, text, None).await,
            Note::Tagged {
                kind,
                tags,
                content,
            } => wrap_tagged(&keys, to, *kind, tags, content).await,
        }
        .map_err(PublishError::Sign)
    }

    /// Sends a DM from soko's identity `from` to `to` in `scheme`, durably.
    pub async fn send_dm(
        &self,
        from: &PublicKey,
        to: PublicKey,
        scheme: Scheme,
        content: &str,
    ) -> Result<EventId, PublishError> {
        let keys = self.keyring.get(from).ok_or(PublishError::NoKey(*from))?;
        let event = seal_dm(&keys, to, scheme, content, None)
            .await
            .map_err(PublishError::Sign)?;
        self.outbox.send(&event).await?;
        Ok(event.id)
    }
}
