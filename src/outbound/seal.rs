//! Sealing a private message in the scheme its reader uses: NIP-04 for today's NIP-15
//! clients, NIP-17 gift wraps (NIP-44, NIP-59) for the rest.

use super::conversation::{self, Conversing};
use nostr_sdk::{Event, EventBuilder, EventId, Keys, Kind, PublicKey, Tag};

/// How a DM was encrypted; replies use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Kind 4, NIP-04 encryption.
    Nip04,
    /// Kind 1059 gift wrap around a kind 14 message (NIP-17, NIP-44, NIP-59).
    Nip17,
}

/// A message to send privately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Content alone: a kind-4 DM or a kind-14 message, as the scheme says.
    Text(String),
    /// A rumor of `kind` with its own tags (Gamma order messages), always gift-wrapped
    /// (NIP-17); the tags carry its `p`.
    Tagged {
        /// Rumor kind.
        kind: u16,
        /// Rumor tags.
        tags: Vec<Vec<String>>,
        /// Human-readable content.
        content: String,
    },
}

impl From<String> for Note {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

/// Gift-wraps a tagged rumor from `keys` to `to` (NIP-59 seal and wrap, as NIP-17 does).
pub async fn wrap_tagged(
    keys: &nostr_sdk::Keys,
    to: PublicKey,
    kind: u16,
    tags: &[Vec<String>],
    content: &str,
) -> Result<nostr_sdk::Event, String> {
    let tags = tags
        .iter()
        .map(|t| Tag::parse(t.iter().map(String::as_str)).map_err(|e| e.to_string()))
        .collect::<Result<Vec<Tag>, String>>()?;
    let rumor = EventBuilder::new(Kind::Custom(kind), content)
        .tags(tags)
        .build(keys.public_key());
    EventBuilder::gift_wrap(&Conversing::new(keys.clone()), &to, rumor, [])
        .await
        .map_err(|e| e.to_string())
}

/// A DM from `keys` to `to` in `scheme`, optionally referring (`e` tag) to a message.
pub async fn seal_dm(
    keys: &Keys,
    to: PublicKey,
    scheme: Scheme,
    content: &str,
    refers_to: Option<EventId>,
) -> Result<Event, String> {
    let refers: Vec<Tag> = refers_to.map(Tag::event).into_iter().collect();
    match scheme {
        Scheme::Nip04 => {
            let ciphertext =
                conversation::nip04_encrypt(keys, &to, content).map_err(|e| e.to_string())?;
            EventBuilder::new(Kind::EncryptedDirectMessage, ciphertext)
                .tag(Tag::public_key(to))
                .tags(refers)
                .sign_with_keys(keys)
                .map_err(|e| e.to_string())
        }
        Scheme::Nip17 => {
            EventBuilder::private_msg(&Conversing::new(keys.clone()), to, content, refers)
                .await
                .map_err(|e| e.to_string())
        }
    }
}
