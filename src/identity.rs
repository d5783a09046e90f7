//! Secrets that live as files in the data dir: the bot's Nostr key and the wallet seed.
//!
//! Each is created on first start with mode 0600 and reused afterwards; a file that others can
//! read is tightened back to 0600 with a warning rather than trusted silently.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nostr_sdk::{Keys, ToBech32};

/// File holding the bot's secret key (bech32 `nsec`).
pub const BOT_KEY_FILE: &str = "bot.nsec";
/// File holding the operator's secret key (bech32 `nsec`): the admin identity the
/// `soko merchant …` commands use to talk to a running soko over Nostr.
pub const OPERATOR_KEY_FILE: &str = "operator.nsec";
/// File holding the USSD bridge's secret key (bech32 `nsec`), in the bridge's own data dir.
pub const BRIDGE_KEY_FILE: &str = "bridge.nsec";
/// File holding the wallet seed (hex).
pub const WALLET_SEED_FILE: &str = "wallet.seed";
/// File holding the dev mint's seed (hex).
pub const DEV_MINT_SEED_FILE: &str = "dev-mint.seed";
/// File holding the vault's root secret (hex), from which at-rest encryption keys derive.
pub const VAULT_KEY_FILE: &str = "vault.key";
/// File holding the dev OIDC issuer's P-256 signing key (hex of its PKCS#8 document).
pub const DEV_OIDC_KEY_FILE: &str = "dev-oidc.key";

/// Failures reading or creating a secret file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists but does not hold what it should.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content itself).
        reason: String,
    },
}

/// True once soko has started with this data dir (its bot key exists).
pub fn is_initialised(data_dir: &Path) -> bool {
    data_dir.join(BOT_KEY_FILE).is_file()
}

/// Loads the bot's keys, generating and saving them on first start.
pub fn bot_keys(data_dir: &Path) -> Result<Keys, IdentityError> {
    nostr_keys(&data_dir.join(BOT_KEY_FILE))
}

/// Loads the operator's keys, generating and saving them on first use.
pub fn operator_keys(data_dir: &Path) -> Result<Keys, IdentityError> {
    nostr_keys(&data_dir.join(OPERATOR_KEY_FILE))
}

/// Loads the USSD bridge's keys (`soko-ussd`), generating and saving them on first start.
pub fn bridge_keys(data_dir: &Path) -> Result<Keys, IdentityError> {
    nostr_keys(&data_dir.join(BRIDGE_KEY_FILE))
}

fn nostr_keys(path: &Path) -> Result<Keys, IdentityError> {
    let path = path.to_owned();
    let text = read_or_create(&path, || {
        Keys::generate()
            .secret_key()
            .to_bech32()
            .map_err(|e| e.to_string())
    })?;
    Keys::parse(text.trim()).map_err(|e| IdentityError::Malformed {
        path,
        reason: format!("not a Nostr secret key ({e})"),
    })
}

/// Loads the 64-byte wallet seed, generating and saving it on first start.
pub fn wallet_seed(data_dir: &Path) -> Result<[u8; 64], IdentityError> {
    seed(&data_dir.join(WALLET_SEED_FILE))
}

/// Loads the 64-byte dev mint seed, generating and saving it on first start.
pub fn dev_mint_seed(data_dir: &Path) -> Result<[u8; 64], IdentityError> {
    seed(&data_dir.join(DEV_MINT_SEED_FILE))
}

/// Loads the dev OIDC issuer's P-256 signing key (a PKCS#8 document), generating and saving
/// it on first start, so the tokens it signed stay valid across restarts.
pub fn dev_oidc_key(data_dir: &Path) -> Result<Vec<u8>, IdentityError> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let path = data_dir.join(DEV_OIDC_KEY_FILE);
    let text = read_or_create(&path, || {
        let rng = ring::rand::SystemRandom::new();
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|doc| hex_encode(doc.as_ref()))
            .map_err(|_| "cannot generate a P-256 key".to_owned())
    })?;
    hex_decode(text.trim()).ok_or_else(|| IdentityError::Malformed {
        path,
        reason: "not hex".to_owned(),
    })
}

/// Loads the 32-byte vault root secret, generating and saving it on first start.
pub fn vault_key(data_dir: &Path) -> Result<[u8; 32], IdentityError> {
    let path = data_dir.join(VAULT_KEY_FILE);
    let text = read_or_create(&path, || {
        let key: [u8; 32] = std::array::from_fn(|_| rand_byte());
        Ok(hex_encode(&key))
    })?;
    hex_decode(text.trim())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| IdentityError::Malformed {
            path,
            reason: "a vault key is 32 bytes of hex".to_owned(),
        })
}

fn seed(path: &Path) -> Result<[u8; 64], IdentityError> {
    let path = path.to_owned();
    let text = read_or_create(&path, || {
        let seed: [u8; 64] = std::array::from_fn(|_| rand_byte());
        Ok(hex_encode(&seed))
    })?;
    let malformed = |reason: &str| IdentityError::Malformed {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    let bytes = hex_decode(text.trim()).ok_or_else(|| malformed("not hex"))?;
    bytes
        .try_into()
        .map_err(|_| malformed("a wallet seed is 64 bytes"))
}

fn read_or_create(
    path: &Path,
    generate: impl FnOnce() -> Result<String, String>,
) -> Result<String, IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "secret file was readable by others; setting mode 0600");
                fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
            }
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = generate().map_err(|reason| IdentityError::Malformed {
                path: path.to_owned(),
                reason,
            })?;
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io)?;
            }
            // create_new: two processes racing on first start must not both write a key.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(file = %path.display(), "created secret file");
            Ok(text)
        }
        Err(e) => Err(io(e)),
    }
}

fn rand_byte() -> u8 {
    use nostr_sdk::secp256k1::rand::RngCore;
    let mut b = [0u8; 1];
    nostr_sdk::secp256k1::rand::rngs::OsRng.fill_bytes(&mut b);
    b[0]
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_private_and_reused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = bot_keys(dir.path())?;
        let mode = fs::metadata(dir.path().join(BOT_KEY_FILE))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(bot_keys(dir.path())?.public_key(), first.public_key());
        assert_eq!(wallet_seed(dir.path())?, wallet_seed(dir.path())?);
        Ok(())
    }

    #[test]
    fn loose_permissions_are_tightened() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        bot_keys(dir.path())?;
        let path = dir.path().join(BOT_KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        bot_keys(dir.path())?;
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_a_new_identity() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(BOT_KEY_FILE), "garbage")?;
        assert!(matches!(
            bot_keys(dir.path()),
            Err(IdentityError::Malformed { .. })
        ));
        Ok(())
    }
}
