//! Secrets at rest: one root secret in the data dir (`vault.key`, mode 0600, never in sled),
//! from which every at-rest key derives by purpose. Sealed values (merchants' Nostr keys,
//! phone numbers) are NIP-44 v2 ciphertexts — authenticated, so tampering is detected —
//! under a key derived for sealing. A copy of sled alone reveals none of them.

use std::path::Path;

use base64::prelude::*;
use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::sha256;
use nostr_sdk::hashes::{Hash, HashEngine};
use nostr_sdk::nips::nip44;
use nostr_sdk::nips::nip44::v2::ConversationKey;
use nostr_sdk::{Keys, SecretKey};

use crate::identity::{self, IdentityError};

/// Sealing or unsealing failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The root secret could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A derived key was unusable (practically impossible).
    #[error("derived key: {0}")]
    Key(String),
    /// A sealed value did not open: wrong vault, or tampered.
    #[error("sealed value does not open: {0}")]
    Open(String),
    /// The system's random source failed.
    #[error("no randomness for a nonce")]
    Random,
}

/// A symmetric key for sealing stored records of any size (NIP-44 caps its plaintext at
/// 64 KiB, and a wallet saga holding many proofs can exceed that): ChaCha20-Poly1305 from
/// `ring` (already in the tree through rustls), a random 96-bit nonce per record. Random
/// nonces stay safe far beyond the number of records one soko ever writes (2^32 per key).
/// Its `Debug` shows nothing.
pub struct RecordKey(ring::aead::LessSafeKey);

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

impl RecordKey {
    /// A record key from 32 secret bytes (derive them for one purpose only).
    pub fn new(key: [u8; 32]) -> Result<Self, VaultError> {
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key)
            .map_err(|_| VaultError::Key("record key".to_owned()))?;
        Ok(Self(ring::aead::LessSafeKey::new(unbound)))
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plaintext`, bound to `context` (e.g. the record kind),
    /// so a sealed record moved to another kind does not open.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        use ring::rand::SecureRandom;
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| VaultError::Random)?;
        let mut out = Vec::with_capacity(nonce.len() + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (_, body) = out.split_at_mut(nonce.len());
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(context),
                body,
            )
            .map_err(|_| VaultError::Key("sealing a record".to_owned()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a value made by [`RecordKey::seal`] under the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        let (nonce, body) = sealed
            .split_at_checked(ring::aead::NONCE_LEN)
            .ok_or_else(|| VaultError::Open("record too short".to_owned()))?;
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| VaultError::Open("bad nonce".to_owned()))?;
        let mut body = body.to_vec();
        let plain_len = self
            .0
            .open_in_place(nonce, ring::aead::Aad::from(context), &mut body)
            .map_err(|_| VaultError::Open("wrong key, or tampered".to_owned()))?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

/// The first byte of a NIP-44 v2 payload.
const NIP44_V2: u8 = 2;

/// The vault. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct Vault {
    root: [u8; 32],
    /// The NIP-44 conversation key of the sealing key with itself. Derived once: deriving
    /// it is an ECDH, which `nip44::encrypt` did on every seal and open (a twentieth of
    /// soko's CPU per DM, for the reply it keeps for replays).
    sealing: ConversationKey,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// Loads (or creates) the root secret in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, VaultError> {
        Self::from_root(identity::vault_key(data_dir)?)
    }

    /// A vault over a given root secret.
    pub fn from_root(root: [u8; 32]) -> Result<Self, VaultError> {
        let sealing = Keys::new(
            SecretKey::from_slice(&derive(&root, "seal"))
                .map_err(|e| VaultError::Key(e.to_string()))?,
        );
        let sealing = ConversationKey::derive(sealing.secret_key(), &sealing.public_key())
            .map_err(|e| VaultError::Key(e.to_string()))?;
        Ok(Self { root, sealing })
    }

    /// A 32-byte key for one purpose (e.g. `"delivery-code"`); purposes never share keys.
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        derive(&self.root, purpose)
    }

    /// Encrypts `plaintext` for storage: a NIP-44 v2 payload, base64 as NIP-44 has it.
    pub fn seal(&self, plaintext: &str) -> Result<String, VaultError> {
        let payload = nip44::v2::encrypt_to_bytes(&self.sealing, plaintext.as_bytes())
            .map_err(|e| VaultError::Key(e.to_string()))?;
        Ok(BASE64_STANDARD.encode(payload))
    }

    /// Decrypts a value made by [`Vault::seal`].
    pub fn unseal(&self, sealed: &str) -> Result<String, VaultError> {
        let open = |why: String| VaultError::Open(why);
        let payload = BASE64_STANDARD
            .decode(sealed)
            .map_err(|e| open(e.to_string()))?;
        if payload.first() != Some(&NIP44_V2) {
            return Err(open("not a NIP-44 v2 payload".to_owned()));
        }
        let plain = nip44::v2::decrypt_to_bytes(&self.sealing, &payload)
            .map_err(|e| open(e.to_string()))?;
        String::from_utf8(plain).map_err(|e| open(e.to_string()))
    }
}

fn derive(root: &[u8; 32], purpose: &str) -> [u8; 32] {
    let mut engine = HmacEngine::<sha256::Hash>::new(root);
    engine.input(b"soko/vault/");
    engine.input(purpose.as_bytes());
    Hmac::<sha256::Hash>::from_engine(engine).to_byte_array()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_vault() -> Result<(), VaultError> {
        let vault = Vault::from_root([1; 32])?;
        let sealed = vault.seal("nsec1secret")?;
        assert!(!sealed.contains("nsec1secret"));
        assert_eq!(vault.unseal(&sealed)?, "nsec1secret");
        assert!(Vault::from_root([2; 32])?.unseal(&sealed).is_err());
        let mut tampered = sealed.into_bytes();
        tampered[10] ^= 1;
        assert!(vault.unseal(&String::from_utf8_lossy(&tampered)).is_err());
        assert_ne!(vault.subkey("a"), vault.subkey("b"));
        assert!(!format!("{vault:?}").contains('1'));
        Ok(())
    }

    #[test]
    fn values_sealed_before_the_key_was_kept_still_open() -> Result<(), Box<dyn std::error::Error>>
    {
        // What earlier builds did: nip44::encrypt from the sealing key to itself.
        let root = [5; 32];
        let keys = Keys::new(SecretKey::from_slice(&derive(&root, "seal"))?);
        let (sk, pk) = (keys.secret_key(), keys.public_key());
        let old = nip44::encrypt(sk, &pk, "merchant key", nip44::Version::V2)?;
        let vault = Vault::from_root(root)?;
        assert_eq!(vault.unseal(&old)?, "merchant key");
        assert_eq!(nip44::decrypt(sk, &pk, vault.seal("phone")?)?, "phone");
        assert!(vault.unseal("not base64!").is_err());
        assert!(vault.unseal(&BASE64_STANDARD.encode([1u8; 99])).is_err());
        Ok(())
    }

    #[test]
    fn sealed_records_open_only_with_their_key_and_context() -> Result<(), VaultError> {
        let key = RecordKey::new([3; 32])?;
        let big = vec![b'x'; 200_000];
        let sealed = key.seal(b"proof", &big)?;
        assert!(!sealed.windows(64).any(|w| w == &big[..64]));
        assert_eq!(key.open(b"proof", &sealed)?, big);
        assert_ne!(key.seal(b"proof", b"")?, key.seal(b"proof", b"")?);
        assert!(key.open(b"saga", &sealed).is_err());
        assert!(RecordKey::new([4; 32])?.open(b"proof", &sealed).is_err());
        let mut tampered = sealed;
        tampered[20] ^= 1;
        assert!(key.open(b"proof", &tampered).is_err());
        assert!(key.open(b"proof", &[1, 2, 3]).is_err());
        Ok(())
    }
}
