//! One ECDH per pair of keys, not one per message.
//!
//! NIP-04 and NIP-44 both start from the x coordinate of the ECDH point of the two keys, and
//! nostr computes it on every encrypt and decrypt: a NIP-04 round trip did it twice (open the
//! request, seal the reply to the same peer) and a NIP-17 one four times (the wrap's one-time
//! key and the seal's author, in and out). The half that repeats, soko's key with the peer's,
//! is kept here, per pair and bounded; gift wraps' one-time keys never come again and are not
//! kept. A flood from fresh keys only turns the cache over: each new key costs the ECDH it
//! cost before.

use std::num::NonZeroUsize;
use std::sync::{Mutex, OnceLock};

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use lru::LruCache;
use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::{sha256, Hash, HashEngine};
use nostr_sdk::nips::nip44::v2::ConversationKey;
use nostr_sdk::nips::{nip04, nip44};
use nostr_sdk::prelude::{BoxedFuture, NostrSigner, SignerBackend, SignerError};
use nostr_sdk::{Event, Keys, PublicKey, UnsignedEvent};

/// Pairs kept: about 150 bytes each, with their two keys.
const MAX_PAIRS: usize = 4096;

/// What two keys share: NIP-04's AES key and NIP-44's conversation key.
#[derive(Clone, Copy)]
struct Shared {
    nip04: [u8; 32],
    nip44: ConversationKey,
}

type Pairs = Mutex<LruCache<(PublicKey, PublicKey), Shared>>;

fn pairs() -> &'static Pairs {
    static PAIRS: OnceLock<Pairs> = OnceLock::new();
    PAIRS.get_or_init(|| {
        Mutex::new(LruCache::new(
            NonZeroUsize::new(MAX_PAIRS).unwrap_or(NonZeroUsize::MIN),
        ))
    })
}

/// A cryptographic failure, worded for the peer.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// The peer's key is no point on the curve.
    #[error("invalid public key: {0}")]
    Key(String),
    /// NIP-04 content that does not decrypt.
    #[error(transparent)]
    Nip04(#[from] nip04::Error),
    /// NIP-44 content that does not decrypt.
    #[error(transparent)]
    Nip44(#[from] nip44::Error),
}

fn derive(keys: &Keys, peer: &PublicKey) -> Result<Shared, ConversationError> {
    let x = nostr_sdk::util::generate_shared_key(keys.secret_key(), peer)
        .map_err(|e| ConversationError::Key(e.to_string()))?;
    // NIP-44: HKDF-extract with the salt "nip44-v2", which is one HMAC.
    let mut engine = HmacEngine::<sha256::Hash>::new(b"nip44-v2");
    engine.input(&x);
    let nip44 = ConversationKey::new(Hmac::<sha256::Hash>::from_engine(engine).to_byte_array());
    Ok(Shared { nip04: x, nip44 })
}

/// What `keys` shares with `peer`, from the cache or derived once and kept.
fn shared(keys: &Keys, peer: &PublicKey) -> Result<Shared, ConversationError> {
    let pair = (keys.public_key(), *peer);
    if let Some(found) = pairs().lock().ok().and_then(|mut p| p.get(&pair).copied()) {
        return Ok(found);
    }
    let derived = derive(keys, peer)?;
    if let Ok(mut p) = pairs().lock() {
        p.put(pair, derived);
    }
    Ok(derived)
}

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
/// Base64 of NIP-04's 16-byte IV.
const ENCODED_IV_LEN: usize = 24;

/// NIP-04 encryption from `keys` to `peer`.
pub fn nip04_encrypt(
    keys: &Keys,
    peer: &PublicKey,
    content: &str,
) -> Result<String, ConversationError> {
    let key = shared(keys, peer)?.nip04;
    let mut iv = [0u8; 16];
    nostr_sdk::secp256k1::rand::RngCore::fill_bytes(
        &mut nostr_sdk::secp256k1::rand::thread_rng(),
        &mut iv,
    );
    let sealed = Aes256CbcEnc::new(&key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(content.as_bytes());
    Ok(format!(
        "{}?iv={}",
        BASE64.encode(sealed),
        BASE64.encode(iv)
    ))
}

/// NIP-04 decryption of `content` that `peer` sent to `keys`, with nostr's checks: one
/// separator, an IV of the right length, both before any Base64 is decoded.
pub fn nip04_decrypt(
    keys: &Keys,
    peer: &PublicKey,
    content: &str,
) -> Result<String, ConversationError> {
    let (ciphertext, encoded_iv) = content
        .split_once("?iv=")
        .ok_or(nip04::Error::InvalidContentFormat)?;
    if encoded_iv.len() != ENCODED_IV_LEN || encoded_iv.contains("?iv=") {
        return Err(nip04::Error::InvalidIVLen.into());
    }
    let iv: [u8; 16] = BASE64
        .decode(encoded_iv)
        .map_err(|_| nip04::Error::Base64Decode)?
        .try_into()
        .map_err(|_| nip04::Error::InvalidIVLen)?;
    let ciphertext = BASE64
        .decode(ciphertext)
        .map_err(|_| nip04::Error::Base64Decode)?;
    let key = shared(keys, peer)?.nip04;
    let plain = Aes256CbcDec::new(&key.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
        .map_err(|_| nip04::Error::WrongBlockMode)?;
    String::from_utf8(plain).map_err(|_| nip04::Error::Utf8Encode.into())
}

/// `keys` as a signer whose NIP-44 work with a peer reuses the pair's conversation key:
/// for opening (`from_gift_wrap`) and making (`EventBuilder::gift_wrap`) NIP-59 gift
/// wraps. `one_time` names a key not worth keeping (the wrap's author).
#[derive(Debug, Clone)]
pub struct Conversing {
    keys: Keys,
    one_time: Option<PublicKey>,
}

impl Conversing {
    /// For sealing to peers (a wrap's own one-time key is not this signer's business).
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            one_time: None,
        }
    }

    /// For opening `wrap`: its author is a one-time key.
    pub fn opening(keys: Keys, wrap: &Event) -> Self {
        Self {
            keys,
            one_time: Some(wrap.pubkey),
        }
    }

    fn conversation_key(&self, peer: &PublicKey) -> Result<ConversationKey, ConversationError> {
        if self.one_time.as_ref() == Some(peer) {
            return Ok(derive(&self.keys, peer)?.nip44);
        }
        Ok(shared(&self.keys, peer)?.nip44)
    }
}

fn signer_error(e: ConversationError) -> SignerError {
    SignerError::backend(e)
}

impl NostrSigner for Conversing {
    fn backend(&self) -> SignerBackend<'_> {
        SignerBackend::Keys
    }

    fn get_public_key(&self) -> BoxedFuture<'_, Result<PublicKey, SignerError>> {
        self.keys.get_public_key()
    }

    fn sign_event(&self, unsigned: UnsignedEvent) -> BoxedFuture<'_, Result<Event, SignerError>> {
        self.keys.sign_event(unsigned)
    }

    fn nip04_encrypt<'a>(
        &'a self,
        public_key: &'a PublicKey,
        content: &'a str,
    ) -> BoxedFuture<'a, Result<String, SignerError>> {
        Box::pin(
            async move { nip04_encrypt(&self.keys, public_key, content).map_err(signer_error) },
        )
    }

    fn nip04_decrypt<'a>(
        &'a self,
        public_key: &'a PublicKey,
        encrypted_content: &'a str,
    ) -> BoxedFuture<'a, Result<String, SignerError>> {
        Box::pin(async move {
            nip04_decrypt(&self.keys, public_key, encrypted_content).map_err(signer_error)
        })
    }

    fn nip44_encrypt<'a>(
        &'a self,
        public_key: &'a PublicKey,
        content: &'a str,
    ) -> BoxedFuture<'a, Result<String, SignerError>> {
        Box::pin(async move {
            let key = self.conversation_key(public_key).map_err(signer_error)?;
            let payload = nip44::v2::encrypt_to_bytes(&key, content.as_bytes())
                .map_err(|e| signer_error(e.into()))?;
            Ok(BASE64.encode(payload))
        })
    }

    fn nip44_decrypt<'a>(
        &'a self,
        public_key: &'a PublicKey,
        payload: &'a str,
    ) -> BoxedFuture<'a, Result<String, SignerError>> {
        Box::pin(async move {
            let key = self.conversation_key(public_key).map_err(signer_error)?;
            // nip44::decrypt's own bounds, before decoding: a payload nostr would refuse.
            let bytes = nip44_payload(payload).map_err(signer_error)?;
            let plain =
                nip44::v2::decrypt_to_bytes(&key, &bytes).map_err(|e| signer_error(e.into()))?;
            String::from_utf8(plain).map_err(|_| signer_error(nip44::Error::Utf8Encode.into()))
        })
    }
}

/// Largest base64 NIP-44 v2 payload, nostr's bound (65,603 bytes decoded).
const MAX_NIP44_ENCODED: usize = 87_472;

/// A base64 NIP-44 payload decoded, refused before decoding when too long, and after when
/// not version 2.
fn nip44_payload(payload: &str) -> Result<Vec<u8>, ConversationError> {
    if payload.len() > MAX_NIP44_ENCODED {
        return Err(nip44::Error::MessageTooLong.into());
    }
    let bytes = BASE64.decode(payload).map_err(nip44::Error::Base64Decode)?;
    match bytes.first() {
        Some(2) => Ok(bytes),
        Some(other) => Err(nip44::Error::UnknownVersion(*other).into()),
        None => Err(nip44::Error::VersionNotFound.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use nostr_sdk::nips::nip59::UnwrappedGift;
    use nostr_sdk::{EventBuilder, Kind};

    use super::*;

    #[test]
    fn the_kept_keys_are_the_ones_nostr_derives() {
        let (ours, theirs) = (Keys::generate(), Keys::generate());
        let kept = shared(&ours, &theirs.public_key()).unwrap();
        let derived = ConversationKey::derive(ours.secret_key(), &theirs.public_key()).unwrap();
        assert_eq!(kept.nip44.as_bytes(), derived.as_bytes());
        assert_eq!(
            kept.nip04,
            nostr_sdk::util::generate_shared_key(ours.secret_key(), &theirs.public_key()).unwrap()
        );
    }

    #[test]
    fn nip04_both_ways_with_nostrs_own() {
        let (bot, alice) = (Keys::generate(), Keys::generate());
        let from_alice = nip04::encrypt(alice.secret_key(), &bot.public_key(), "hello 🌍").unwrap();
        assert_eq!(
            nip04_decrypt(&bot, &alice.public_key(), &from_alice).unwrap(),
            "hello 🌍"
        );
        let to_alice = nip04_encrypt(&bot, &alice.public_key(), "jambo").unwrap();
        assert_eq!(
            nip04::decrypt(alice.secret_key(), &bot.public_key(), &to_alice).unwrap(),
            "jambo"
        );
        // Twice from the cache, the IV still fresh each time.
        assert_ne!(
            to_alice,
            nip04_encrypt(&bot, &alice.public_key(), "jambo").unwrap()
        );
    }

    #[test]
    fn bad_nip04_content_is_refused_like_nostr_refuses_it() {
        let (bot, alice) = (Keys::generate(), Keys::generate());
        let good = nip04::encrypt(alice.secret_key(), &bot.public_key(), "hi").unwrap();
        let (body, iv) = good.split_once("?iv=").unwrap();
        let carol = Keys::generate();
        for bad in [
            "no separator".to_owned(),
            format!("{body}?iv={iv}?iv={iv}"),
            format!("{body}?iv=AAAA"),
            format!("{body}?iv={}", "!".repeat(24)),
            format!("***?iv={iv}"),
            format!("{}?iv={iv}", &body[..body.len() - 4]),
        ] {
            assert!(
                nip04_decrypt(&bot, &alice.public_key(), &bad).is_err(),
                "{bad}"
            );
            assert!(
                nip04::decrypt(bot.secret_key(), &alice.public_key(), &bad).is_err(),
                "{bad}"
            );
        }
        // From someone else, it does not open (or opens to garbage that is not this).
        assert_ne!(
            nip04_decrypt(&bot, &carol.public_key(), &good)
                .ok()
                .as_deref(),
            Some("hi")
        );
    }

    #[tokio::test]
    async fn gift_wraps_open_and_seal_like_nostrs_own() {
        let (bot, alice) = (Keys::generate(), Keys::generate());
        let rumor =
            EventBuilder::private_msg_rumor(bot.public_key(), "habari").build(alice.public_key());
        let wrap = EventBuilder::gift_wrap(&alice, &bot.public_key(), rumor, [])
            .await
            .unwrap();
        let opened = UnwrappedGift::from_gift_wrap(&Conversing::opening(bot.clone(), &wrap), &wrap)
            .await
            .unwrap();
        assert_eq!(
            (opened.sender, opened.rumor.content.as_str()),
            (alice.public_key(), "habari")
        );
        // The wrap's one-time key was not kept.
        let kept = |peer: PublicKey| pairs().lock().unwrap().contains(&(bot.public_key(), peer));
        assert!(!kept(wrap.pubkey));
        assert!(kept(alice.public_key()));

        let reply =
            EventBuilder::private_msg_rumor(alice.public_key(), "safi").build(bot.public_key());
        let sealed = EventBuilder::gift_wrap(
            &Conversing::new(bot.clone()),
            &alice.public_key(),
            reply,
            [],
        )
        .await
        .unwrap();
        assert_eq!(sealed.kind, Kind::GiftWrap);
        let read = UnwrappedGift::from_gift_wrap(&alice, &sealed)
            .await
            .unwrap();
        assert_eq!(
            (read.sender, read.rumor.content.as_str()),
            (bot.public_key(), "safi")
        );
    }

    #[test]
    fn a_flood_from_fresh_keys_keeps_the_cache_bounded() {
        let bot = Keys::generate();
        for _ in 0..MAX_PAIRS + 64 {
            nip04_encrypt(&bot, &Keys::generate().public_key(), "x").unwrap();
        }
        assert!(pairs().lock().unwrap().len() <= MAX_PAIRS);
    }

    #[tokio::test]
    async fn a_forged_seal_does_not_open() {
        let (bot, alice, mallory) = (Keys::generate(), Keys::generate(), Keys::generate());
        // Mallory's rumor claims to be Alice's.
        let rumor =
            EventBuilder::private_msg_rumor(bot.public_key(), "pay me").build(alice.public_key());
        let wrap = EventBuilder::gift_wrap(&mallory, &bot.public_key(), rumor, [])
            .await
            .unwrap();
        assert!(
            UnwrappedGift::from_gift_wrap(&Conversing::opening(bot.clone(), &wrap), &wrap)
                .await
                .is_err()
        );
        let signer = Conversing::new(bot);
        for junk in [
            "",
            "Ag==",
            "#nope",
            "AQAA",
            &"A".repeat(MAX_NIP44_ENCODED + 4),
        ] {
            let opened = signer.nip44_decrypt(&alice.public_key(), junk).await;
            assert!(opened.is_err(), "{junk:.10}");
        }
    }
}
