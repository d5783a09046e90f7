//! Ecash locked to a Nostr key (NUT-11 P2PK), the way NIP-61 (nutzaps) locks it.
//!
//! A Nostr key is x-only (BIP-340); NUT-11 names a compressed key. The lock uses the `02`
//! prefix, the even-y point of that x. The owner's Nostr secret key redeems it whatever the
//! parity of its own point: NUT-11 signatures are BIP-340 Schnorr signatures, which cdk (the
//! mint's check, and the wallet's choice of signing key) matches on the x-only key alone, and
//! BIP-340 signing negates an odd-y secret itself. `tests/purses.rs` redeems with an even-y
//! and an odd-y key.

use cdk::nuts::{PublicKey as CashuPublicKey, SecretKey as CashuSecretKey, SpendingConditions};

/// A Nostr key that NUT-11 cannot take (never for a key `nostr_sdk` parsed: every x-only key
/// has its even-y point).
#[derive(Debug, thiserror::Error)]
#[error("not a key NUT-11 can lock to: {0}")]
pub struct P2pkError(#[from] cdk::nuts::nut01::Error);

/// The NUT-11 spending condition "signed by the holder of `key`": no locktime, no refund
/// key, one signature.
pub fn p2pk_lock(key: &nostr_sdk::PublicKey) -> Result<SpendingConditions, P2pkError> {
    Ok(SpendingConditions::new_p2pk(cashu_key(key)?, None))
}

/// `key` as NUT-11 names it: `02` and its x coordinate.
pub fn cashu_key(key: &nostr_sdk::PublicKey) -> Result<CashuPublicKey, P2pkError> {
    let mut compressed = [0u8; 33];
    compressed[0] = 0x02;
    compressed[1..].copy_from_slice(&key.to_bytes());
    Ok(CashuPublicKey::from_slice(&compressed)?)
}

/// A Nostr secret key as cdk's, to sign for ecash locked with [`p2pk_lock`]
/// (`ReceiveOptions::p2pk_signing_keys`).
pub fn signing_key(secret: &nostr_sdk::SecretKey) -> Result<CashuSecretKey, P2pkError> {
    Ok(CashuSecretKey::from_slice(&secret.to_secret_bytes())?)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use nostr_sdk::Keys;

    #[test]
    fn the_lock_names_the_even_point_of_the_nostr_key() {
        for _ in 0..8 {
            let keys = Keys::generate();
            let lock = cashu_key(&keys.public_key()).expect("a key");
            assert_eq!(lock.to_bytes()[0], 0x02);
            assert_eq!(
                lock.x_only_public_key().serialize(),
                keys.public_key().to_bytes()
            );
            let signer = signing_key(keys.secret_key()).expect("a key");
            assert_eq!(
                signer.public_key().x_only_public_key(),
                lock.x_only_public_key()
            );
            match p2pk_lock(&keys.public_key()).expect("a lock") {
                SpendingConditions::P2PKConditions { data, conditions } => {
                    assert_eq!(data, lock);
                    assert!(conditions.is_none());
                }
                other => panic!("not a P2PK lock: {other:?}"),
            }
        }
    }
}
