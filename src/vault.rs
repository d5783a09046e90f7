//! Secrets at rest: one root secret in the data dir (`vault.key`, mode 0600, never in sled),
//! from which every at-rest key derives by purpose. Sealed values (merchants' Nostr keys,
//! phone numbers) are NIP-44 v2 ciphertexts — authenticated, so tampering is detected —
//! under a key derived for sealing. A copy of sled alone reveals none of them.

use std::path::Path;

use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::sha256;
use nostr_sdk::hashes::{Hash, HashEngine};
use nostr_sdk::nips::nip44;
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
}

/// The vault. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct Vault {
    root: [u8; 32],
    sealing: Keys,
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
        let sealing = SecretKey::from_slice(&derive(&root, "seal"))
            .map_err(|e| VaultError::Key(e.to_string()))?;
        Ok(Self {
            root,
            sealing: Keys::new(sealing),
        })
    }

    /// A 32-byte key for one purpose (e.g. `"delivery-code"`); purposes never share keys.
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        derive(&self.root, purpose)
    }

    /// Encrypts `plaintext` for storage.
    pub fn seal(&self, plaintext: &str) -> Result<String, VaultError> {
        nip44::encrypt(
            self.sealing.secret_key(),
            &self.sealing.public_key(),
            plaintext,
            nip44::Version::V2,
        )
        .map_err(|e| VaultError::Key(e.to_string()))
    }

    /// Decrypts a value made by [`Vault::seal`].
    pub fn unseal(&self, sealed: &str) -> Result<String, VaultError> {
        nip44::decrypt(
            self.sealing.secret_key(),
            &self.sealing.public_key(),
            sealed,
        )
        .map_err(|e| VaultError::Open(e.to_string()))
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
}
