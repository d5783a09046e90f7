//! Wallets at other mints: one per mint of `[mint] foreign_allow`, each in its own sled
//! namespace like soko's other wallets. A buyer's token of such a mint is melted from here
//! to pay an invoice of soko's own mint (`crate::escrow` takes the order); the melt's change
//! lands here until it goes back to the buyer.

use std::collections::{BTreeMap, HashSet};

use cdk::mint_url::MintUrl;
use nostr_sdk::hashes::{sha256, Hash};

use super::{open_paced, Wallet, WalletError};
use crate::money::Sats;
use crate::store::Store;

/// Requests a minute soko sends one other mint: a pay-first order costs it a handful.
const REQUESTS_PER_MINUTE: u32 = 120;

/// The most fees a buyer's token of another mint may pay there: a percent of its value,
/// never below a floor in sats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeBound {
    /// Percent of the token's value.
    pub percent: u8,
    /// The floor, in sats.
    pub floor: Sats,
}

impl FeeBound {
    /// The most fees a token of `value` sats may pay.
    pub fn limit(&self, value: Sats) -> Sats {
        let share = u128::from(value.0) * u128::from(self.percent) / 100;
        Sats(u64::try_from(share).unwrap_or(u64::MAX).max(self.floor.0))
    }
}

/// The wallets at the mints soko takes ecash of besides its own.
pub struct ForeignMints {
    wallets: BTreeMap<MintUrl, Wallet>,
    bound: FeeBound,
    /// Mints whose wallet has had its interrupted operations settled in this process.
    recovered: tokio::sync::Mutex<HashSet<MintUrl>>,
}

impl std::fmt::Debug for ForeignMints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForeignMints")
            .field("mints", &self.wallets.keys().collect::<Vec<_>>())
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl ForeignMints {
    /// None taken.
    pub fn none() -> Self {
        Self {
            wallets: BTreeMap::new(),
            bound: FeeBound {
                percent: 0,
                floor: Sats::ZERO,
            },
            recovered: Default::default(),
        }
    }

    /// Opens a wallet for each of `urls` (nothing is asked of the mints yet).
    pub fn open(
        store: &Store,
        master_seed: &[u8; 64],
        urls: &[String],
        bound: FeeBound,
    ) -> Result<Self, WalletError> {
        let mut wallets = BTreeMap::new();
        for url in urls {
            let parsed: MintUrl =
                url.parse()
                    .map_err(|e: cdk::mint_url::Error| WalletError::MintUrl {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
            let wallet = open_paced(
                store,
                &namespace(&parsed),
                url,
                master_seed,
                Some(REQUESTS_PER_MINUTE),
            )?;
            wallets.insert(parsed, wallet);
        }
        Ok(Self {
            wallets,
            bound,
            recovered: Default::default(),
        })
    }

    /// True when ecash of `mint` is taken.
    pub fn allows(&self, mint: &MintUrl) -> bool {
        self.wallets.contains_key(mint)
    }

    /// The fee bound.
    pub fn bound(&self) -> FeeBound {
        self.bound
    }

    /// The wallet at `mint`, its operations a stop interrupted settled first (once per
    /// process): a melt cut short is finished or rolled back before it is looked at.
    pub async fn wallet(&self, mint: &MintUrl) -> Result<Option<&Wallet>, cdk::Error> {
        let Some(wallet) = self.wallets.get(mint) else {
            return Ok(None);
        };
        let mut recovered = self.recovered.lock().await;
        if !recovered.contains(mint) {
            super::recover(wallet).await?;
            recovered.insert(mint.clone());
        }
        Ok(Some(wallet))
    }
}

/// The sled namespace of the wallet at `mint`: a digest, since a URL has characters a
/// namespace may not.
fn namespace(mint: &MintUrl) -> String {
    let digest = sha256::Hash::hash(mint.to_string().as_bytes()).to_byte_array();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("foreign:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fee_bound_is_a_percent_with_a_floor() {
        let bound = FeeBound {
            percent: 2,
            floor: Sats(10),
        };
        assert_eq!(bound.limit(Sats(100)), Sats(10));
        assert_eq!(bound.limit(Sats(10_000)), Sats(200));
        assert_eq!(bound.limit(Sats(u64::MAX)).0, u64::MAX / 50);
    }

    #[test]
    fn each_mint_gets_its_own_valid_namespace() {
        let a: MintUrl = "https://a.example"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let b: MintUrl = "https://b.example"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        assert_ne!(namespace(&a), namespace(&b));
        assert_eq!(namespace(&a).len(), "foreign:".len() + 32);
    }
}
