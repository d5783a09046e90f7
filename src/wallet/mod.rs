//! soko's ecash: cdk wallets whose storage is sled, one namespace per wallet (the escrow's,
//! and one per private session), so all state lives in one database.

pub mod foreign;
pub mod nut17;
mod p2pk;
mod replayable;
mod sled_db;
mod tokens;

use std::sync::Arc;

use cdk::nuts::CurrencyUnit;
use cdk::wallet::{MintConnector, WalletBuilder};
use cdk_common::rate_limit::{RateLimitConfig, RateLimiterManager};
use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::sha512;
use nostr_sdk::hashes::{Hash, HashEngine};

pub use self::p2pk::{cashu_key, p2pk_lock, signing_key, P2pkError};
use self::replayable::ReplayableConnector;
pub use self::sled_db::SledWalletDatabase;
pub use self::tokens::{recorded_token, recover, RecordedTokenError};
use crate::store::Store;
use crate::vault::RecordKey;

/// cdk's wallet.
pub type Wallet = cdk::Wallet;

/// Failures opening a wallet.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Its storage failed.
    #[error("wallet storage: {0}")]
    Database(#[from] cdk::cdk_database::Error),
    /// cdk refused.
    #[error("wallet: {0}")]
    Cdk(#[from] cdk::Error),
    /// Its record key could not be made.
    #[error("wallet record key: {0}")]
    Seal(String),
    /// The mint URL is malformed.
    #[error("mint url {url:?}: {reason}")]
    MintUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Opens the sat wallet `namespace` for `mint_url`, stored in sled. Each namespace derives
/// its own seed from `master_seed`: wallets sharing a seed would derive the same NUT-13
/// secrets from their separate counters, and the mint would refuse (or link) them.
pub fn open(
    store: &Store,
    namespace: &str,
    mint_url: &str,
    master_seed: &[u8; 64],
) -> Result<Wallet, WalletError> {
    open_paced(store, namespace, mint_url, master_seed, None)
}

/// How a wallet reaches its mint.
#[derive(Clone, Debug)]
pub enum MintLink {
    /// Over HTTP, paced at `requests_per_minute` (bursts of a tenth of that) when given.
    Http {
        /// The pace, or none.
        requests_per_minute: Option<u32>,
    },
    /// Through this connector (the embedded dev mint's in-process one).
    Direct(Arc<dyn cdk::wallet::MintConnector + Send + Sync>),
}

/// Same as [`open`], pacing requests to the mint at `requests_per_minute` (bursts of a
/// tenth of that) when given, and not at all otherwise.
pub fn open_paced(
    store: &Store,
    namespace: &str,
    mint_url: &str,
    master_seed: &[u8; 64],
    requests_per_minute: Option<u32>,
) -> Result<Wallet, WalletError> {
    open_linked(
        store,
        namespace,
        mint_url,
        master_seed,
        &MintLink::Http {
            requests_per_minute,
        },
    )
}

/// Same as [`open`], reaching the mint by `link`.
pub fn open_linked(
    store: &Store,
    namespace: &str,
    mint_url: &str,
    master_seed: &[u8; 64],
    link: &MintLink,
) -> Result<Wallet, WalletError> {
    let seed = namespace_seed(master_seed, namespace);
    let db = Arc::new(SledWalletDatabase::open(
        store,
        namespace,
        record_key(master_seed, namespace)?,
    )?);
    let mint_url: cdk::mint_url::MintUrl =
        mint_url
            .parse()
            .map_err(|e: cdk::mint_url::Error| WalletError::MintUrl {
                url: mint_url.to_owned(),
                reason: e.to_string(),
            })?;
    let builder = || {
        WalletBuilder::new()
            .mint_url(mint_url.clone())
            .unit(CurrencyUnit::Sat)
            .localstore(Arc::clone(&db) as _)
            .seed(seed)
    };
    let requests_per_minute = match link {
        MintLink::Http {
            requests_per_minute,
        } => *requests_per_minute,
        MintLink::Direct(connector) => {
            return Ok(builder().shared_client(Arc::clone(connector)).build()?);
        }
    };
    let pace = requests_per_minute
        .and_then(|per_minute| RateLimitConfig::try_new((per_minute / 10).max(1), per_minute));
    let http: Arc<dyn MintConnector + Send + Sync> = match pace {
        // The budget is kept in memory, not in the wallet's database: cdk's NUT-17
        // subscription consumer (started when the escrow waits on a melt the mint holds
        // pending) runs a task for the rest of the process holding the wallet's HTTP client,
        // and with a limiter persisting through the database that task held sled open: the
        // store stayed locked after shutdown, and a restart in the same process failed with
        // `Store(Locked)`. A restarted soko starts with a full budget instead.
        // cdk builds its paced client only inside a wallet: this one is built for it.
        Some(pace) => builder()
            .with_rate_limiter(RateLimiterManager::new(pace, None))
            .build()?
            .mint_connector(),
        None => Arc::new(cdk::wallet::HttpClient::new(mint_url.clone(), None)),
    };
    let replayable = ReplayableConnector::new(http, &db);
    Ok(builder().shared_client(Arc::new(replayable)).build()?)
}

/// The state of a melt quote as the mint holds it, once `wallet` has settled what it can of
/// its own record (a paid melt's proofs and change).
///
/// While a melt is in progress, cdk's `check_melt_quote_status` answers from the wallet's
/// record, which still says unpaid although the mint holds the payment pending: giving the
/// debit back on that answer would pay twice once the payment goes through. Only the mint's
/// own answer decides.
pub async fn melt_state(
    wallet: &Wallet,
    quote_id: &str,
) -> Result<cdk::nuts::MeltQuoteState, cdk::Error> {
    let recorded = wallet.check_melt_quote_status(quote_id).await?;
    if recorded.state == cdk::nuts::MeltQuoteState::Paid {
        return Ok(cdk::nuts::MeltQuoteState::Paid);
    }
    let at_mint = wallet
        .mint_connector()
        .get_melt_quote_status(recorded.payment_method.clone(), quote_id)
        .await?;
    Ok(at_mint.state())
}

/// Deletes the wallet `namespace` from sled (a session's, once its ecash went back),
/// returning how many trees it had.
pub fn destroy(store: &Store, namespace: &str) -> Result<usize, WalletError> {
    Ok(SledWalletDatabase::destroy(store.db(), namespace)?)
}

/// The key sealing this wallet's records in sled. It derives from the wallet's seed file
/// (0600, beside `vault.key`, never in sled) rather than from the vault: whoever reads the
/// seed can already restore every proof from the mint (NUT-13), so a second secret would
/// guard nothing more, while a copy of sled alone opens no record.
fn record_key(master_seed: &[u8; 64], namespace: &str) -> Result<RecordKey, WalletError> {
    let mut engine = HmacEngine::<sha512::Hash>::new(master_seed);
    engine.input(b"soko/wallet-records/");
    engine.input(namespace.as_bytes());
    let derived = Hmac::<sha512::Hash>::from_engine(engine).to_byte_array();
    let mut key = [0u8; 32];
    key.copy_from_slice(&derived[..32]);
    RecordKey::new(key).map_err(|e| WalletError::Seal(e.to_string()))
}

/// HMAC-SHA512 of the namespace under the master seed.
fn namespace_seed(master_seed: &[u8; 64], namespace: &str) -> [u8; 64] {
    let mut engine = HmacEngine::<sha512::Hash>::new(master_seed);
    engine.input(b"soko/wallet/");
    engine.input(namespace.as_bytes());
    Hmac::<sha512::Hash>::from_engine(engine).to_byte_array()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_get_distinct_stable_seeds() {
        let master = [9; 64];
        assert_eq!(
            namespace_seed(&master, "bot"),
            namespace_seed(&master, "bot")
        );
        assert_ne!(
            namespace_seed(&master, "bot"),
            namespace_seed(&master, "escrow")
        );
        assert_ne!(
            namespace_seed(&master, "bot"),
            namespace_seed(&[8; 64], "bot")
        );
    }
}
