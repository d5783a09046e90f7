//! Opening inbound events: which identity they address, in which scheme, and their plaintext.

use nostr_sdk::nips::nip59::UnwrappedGift;
use nostr_sdk::{Event, EventId, Kind, PublicKey, TagKind};

use crate::outbound::conversation::{self, Conversing};
use crate::outbound::{Keyring, Scheme};
use crate::proto::{ErrorCode, Refusal};

/// A DM opened for one of soko's identities.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Its author (for NIP-17, the seal's author, not the throwaway wrap key).
    pub sender: PublicKey,
    /// The soko identity it was addressed to.
    pub recipient: PublicKey,
    /// How it was encrypted.
    pub scheme: Scheme,
    /// The id a reply refers to: the kind-4 event, or the kind-14 rumor inside the wrap.
    pub refers_to: EventId,
    /// The plaintext, or why it could not be read (which is answered, not dropped).
    pub body: Result<String, Refusal>,
    /// The message's kind: 4, or the rumor's (14, or 16/17 for Gamma order messages).
    pub kind: u16,
    /// The message's tags (the rumor's, for NIP-17): Gamma order messages carry their data
    /// there.
    pub tags: Vec<Vec<String>>,
}

/// Why an event gets no answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// Not a DM kind.
    #[error("not a direct message")]
    NotADm,
    /// None of its `p` tags is an identity soko holds.
    #[error("not addressed to any identity soko holds")]
    NotForUs,
    /// Sent by one of soko's own identities; answering could loop.
    #[error("sent by one of soko's own identities")]
    FromOurselves,
    /// A gift wrap that does not open: its real sender is unknowable, so no reply can go back.
    #[error("gift wrap does not open: {0}")]
    Unopenable(String),
}

/// Opens a DM addressed to an identity in the keyring.
pub async fn open(keyring: &Keyring, event: &Event) -> Result<Inbound, Ignored> {
    if event.kind != Kind::EncryptedDirectMessage && event.kind != Kind::GiftWrap {
        return Err(Ignored::NotADm);
    }
    let (recipient, keys) = event
        .tags
        .filter(TagKind::p())
        .filter_map(|tag| tag.content())
        .filter_map(|hex| PublicKey::parse(hex).ok())
        .find_map(|pk| keyring.get(&pk).map(|keys| (pk, keys)))
        .ok_or(Ignored::NotForUs)?;

    if event.kind == Kind::EncryptedDirectMessage {
        if keyring.get(&event.pubkey).is_some() {
            return Err(Ignored::FromOurselves);
        }
        let body = conversation::nip04_decrypt(&keys, &event.pubkey, &event.content).map_err(|e| {
            Refusal::new(
                ErrorCode::DecryptFailed,
                format!("could not decrypt this NIP-04 message for this recipient ({e})"),
            )
        });
        return Ok(Inbound {
            sender: event.pubkey,
            recipient,
            scheme: Scheme::Nip04,
            refers_to: event.id,
            body,
            kind: event.kind.as_u16(),
            tags: tag_lists(&event.tags),
        });
    }

    let gift = UnwrappedGift::from_gift_wrap(&Conversing::opening(keys, event), event)
        .await
        .map_err(|e| Ignored::Unopenable(e.to_string()))?;
    if keyring.get(&gift.sender).is_some() {
        return Err(Ignored::FromOurselves);
    }
    let mut rumor = gift.rumor;
    let refers_to = rumor.id();
    let kind = rumor.kind.as_u16();
    let body = if READABLE_RUMOR_KINDS.contains(&kind) {
        Ok(rumor.content)
    } else {
        Err(Refusal::new(
            ErrorCode::UnsupportedKind,
            format!(
                "soko reads kind 14 messages (and Gamma kind 16/17 order messages) inside gift wraps, not kind {kind}"
            ),
        ))
    };
    Ok(Inbound {
        sender: gift.sender,
        recipient,
        scheme: Scheme::Nip17,
        refers_to,
        body,
        kind,
        tags: tag_lists(&rumor.tags),
    })
}

/// Rumor kinds soko reads: private messages and Gamma order messages and receipts.
const READABLE_RUMOR_KINDS: [u16; 3] = [
    14,
    crate::proto::gamma::KIND_ORDER,
    crate::proto::gamma::KIND_RECEIPT,
];

fn tag_lists(tags: &nostr_sdk::Tags) -> Vec<Vec<String>> {
    tags.iter().map(|t| t.as_slice().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use nostr_sdk::nips::nip04;
    use nostr_sdk::{EventBuilder, Keys, Tag};

    use super::*;

    fn ring() -> (Keyring, Keys) {
        let bot = Keys::generate();
        (Keyring::new(bot.clone(), Default::default()), bot)
    }

    #[tokio::test]
    async fn nip04_and_nip17_open_for_the_bot() -> Result<(), Box<dyn std::error::Error>> {
        let (ring, bot) = ring();
        let alice = Keys::generate();
        let ct = nip04::encrypt(alice.secret_key(), &bot.public_key(), "hi")?;
        let dm = EventBuilder::new(Kind::EncryptedDirectMessage, ct)
            .tag(Tag::public_key(bot.public_key()))
            .sign_with_keys(&alice)?;
        let inbound = open(&ring, &dm).await?;
        assert_eq!(
            (inbound.scheme, inbound.sender),
            (Scheme::Nip04, alice.public_key())
        );
        assert_eq!(inbound.body, Ok("hi".to_owned()));

        let wrap = EventBuilder::private_msg(&alice, bot.public_key(), "yo", []).await?;
        let inbound = open(&ring, &wrap).await?;
        assert_eq!(
            (inbound.scheme, inbound.sender),
            (Scheme::Nip17, alice.public_key())
        );
        assert_eq!(inbound.body, Ok("yo".to_owned()));
        Ok(())
    }

    #[tokio::test]
    async fn strangers_and_garbage_are_told_apart() -> Result<(), Box<dyn std::error::Error>> {
        let (ring, bot) = ring();
        let alice = Keys::generate();
        let carol = Keys::generate();
        // Encrypted for carol but tagged to the bot: answered with decrypt_failed.
        let ct = nip04::encrypt(alice.secret_key(), &carol.public_key(), "hi")?;
        let dm = EventBuilder::new(Kind::EncryptedDirectMessage, ct.clone())
            .tag(Tag::public_key(bot.public_key()))
            .sign_with_keys(&alice)?;
        let inbound = open(&ring, &dm).await?;
        assert_eq!(
            inbound.body.map_err(|r| r.code),
            Err(ErrorCode::DecryptFailed)
        );
        // Addressed to carol only: not ours.
        let dm = EventBuilder::new(Kind::EncryptedDirectMessage, ct)
            .tag(Tag::public_key(carol.public_key()))
            .sign_with_keys(&alice)?;
        assert_eq!(open(&ring, &dm).await.err(), Some(Ignored::NotForUs));
        // A gift wrap for carol re-tagged to the bot cannot be opened.
        let wrap = EventBuilder::private_msg(&alice, carol.public_key(), "x", []).await?;
        let forged = EventBuilder::new(Kind::GiftWrap, wrap.content.clone())
            .tag(Tag::public_key(bot.public_key()))
            .sign_with_keys(&Keys::generate())?;
        assert!(matches!(
            open(&ring, &forged).await,
            Err(Ignored::Unopenable(_))
        ));
        Ok(())
    }
}
