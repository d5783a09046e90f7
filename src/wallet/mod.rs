//! soko's ecash: cdk wallets whose storage is sled, one namespace per wallet (the bot's now;
//! one per exchange session later), so all state lives in one database.

mod sled_db;

use std::sync::Arc;

use cdk::nuts::CurrencyUnit;
use cdk::wallet::WalletBuilder;

pub use self::sled_db::SledWalletDatabase;
use crate::store::Store;

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
    /// The mint URL is malformed.
    #[error("mint url {url:?}: {reason}")]
    MintUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Opens the sat wallet `namespace` for `mint_url`, stored in sled.
pub fn open(
    store: &Store,
    namespace: &str,
    mint_url: &str,
    seed: &[u8; 64],
) -> Result<Wallet, WalletError> {
    let db = SledWalletDatabase::open(store.db(), namespace)?;
    let mint_url = mint_url
        .parse()
        .map_err(|e: cdk::mint_url::Error| WalletError::MintUrl {
            url: mint_url.to_owned(),
            reason: e.to_string(),
        })?;
    let wallet = WalletBuilder::new()
        .mint_url(mint_url)
        .unit(CurrencyUnit::Sat)
        .localstore(Arc::new(db))
        .seed(*seed)
        .build()?;
    Ok(wallet)
}
