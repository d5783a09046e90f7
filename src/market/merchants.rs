//! Merchants whose Nostr identities soko manages, and their stalls and products.
//!
//! Trees:
//! - `merchants`: merchant pubkey (32 bytes) → [`StoredMerchant`] (secret key and phone sealed
//!   by the [`Vault`]).
//! - `listings`: merchant pubkey ‖ kind (u16 BE) ‖ `d` identifier → content JSON of the
//!   merchant's latest stall (30017) or product (30018).

use nostr_sdk::{Keys, PublicKey, SecretKey, ToBech32};
use serde::{Deserialize, Serialize};

use crate::proto::nip15::{Product, Stall};
use crate::store::{Store, StoreError, Typed};
use crate::util::unix_now;
use crate::vault::{Vault, VaultError};

/// Longest shop name.
pub const MAX_NAME_LEN: usize = 64;
const KIND_STALL: u16 = 30017;
const KIND_PRODUCT: u16 = 30018;

/// A merchant as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMerchant {
    /// Shop name.
    pub name: String,
    /// Where payouts go, when set.
    pub lightning_address: Option<String>,
    /// The merchant's Nostr secret key, sealed.
    pub key_sealed: String,
    /// Phone number, sealed (personal data).
    pub phone_sealed: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// A merchant, without secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merchant {
    /// Public key (hex).
    pub pubkey: String,
    /// `npub`.
    pub npub: String,
    /// Shop name.
    pub name: String,
    /// Payout Lightning address.
    pub lightning_address: Option<String>,
}

/// Registry failures.
#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    /// Bad input, explained.
    #[error("{0}")]
    Invalid(String),
    /// No such merchant.
    #[error("no merchant {0}")]
    Unknown(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// The registry.
#[derive(Debug, Clone)]
pub struct Merchants {
    records: Typed<StoredMerchant>,
    listings: Typed<serde_json::Value>,
    vault: Vault,
}

impl Merchants {
    /// Opens the trees.
    pub fn open(store: &Store, vault: Vault) -> Result<Self, StoreError> {
        Ok(Self {
            records: store.tree("merchants")?,
            listings: store.tree("listings")?,
            vault,
        })
    }

    /// Creates a merchant with a new managed identity.
    pub fn add(
        &self,
        name: &str,
        lightning_address: Option<&str>,
        phone: Option<&str>,
    ) -> Result<(Merchant, Keys), MerchantError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(MerchantError::Invalid(format!(
                "a shop name has 1 to {MAX_NAME_LEN} characters"
            )));
        }
        if let Some(address) = lightning_address {
            crate::escrow::payout::lnurlp_url(address)
                .map_err(|e| MerchantError::Invalid(e.to_string()))?;
        }
        if let Some(phone) = phone {
            let digits = phone.strip_prefix('+').unwrap_or(phone);
            if digits.len() < 7 || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(MerchantError::Invalid(
                    "a phone number is + and 7 to 15 digits".to_owned(),
                ));
            }
        }
        let keys = Keys::generate();
        let stored = StoredMerchant {
            name: name.to_owned(),
            lightning_address: lightning_address.map(str::to_owned),
            key_sealed: self.vault.seal(&keys.secret_key().to_secret_hex())?,
            phone_sealed: phone.map(|p| self.vault.seal(p)).transpose()?,
            created_at: unix_now(),
        };
        self.records
            .insert(&keys.public_key().to_bytes(), &stored)?;
        Ok((public(&keys.public_key(), &stored), keys))
    }

    /// Every merchant with its keys (to load the keyring at start).
    pub fn all(&self) -> Result<Vec<(Merchant, Keys)>, MerchantError> {
        let mut all = Vec::new();
        for entry in self.records.iter() {
            let (key, stored) = entry?;
            let pubkey = PublicKey::from_slice(&key)
                .map_err(|e| MerchantError::Invalid(format!("stored merchant key: {e}")))?;
            let secret = SecretKey::from_hex(&self.vault.unseal(&stored.key_sealed)?)
                .map_err(|e| MerchantError::Invalid(format!("stored merchant secret: {e}")))?;
            all.push((public(&pubkey, &stored), Keys::new(secret)));
        }
        Ok(all)
    }

    /// One merchant.
    pub fn get(&self, pubkey: &PublicKey) -> Result<Merchant, MerchantError> {
        self.records
            .get(&pubkey.to_bytes())?
            .map(|stored| public(pubkey, &stored))
            .ok_or_else(|| MerchantError::Unknown(pubkey.to_hex()))
    }

    /// Saves a stall after checking it.
    pub fn put_stall(&self, merchant: &PublicKey, stall: &Stall) -> Result<(), MerchantError> {
        self.get(merchant)?;
        check_stall(stall)?;
        self.listings.insert(
            &listing_key(merchant, KIND_STALL, &stall.id),
            &serde_json::to_value(stall).map_err(|e| MerchantError::Invalid(e.to_string()))?,
        )?;
        Ok(())
    }

    /// Saves a product after checking it against its stall.
    pub fn put_product(
        &self,
        merchant: &PublicKey,
        product: &Product,
    ) -> Result<(), MerchantError> {
        let stall = self.stall(merchant, &product.stall_id)?.ok_or_else(|| {
            MerchantError::Invalid(format!(
                "stall {:?} does not exist; add it first",
                product.stall_id
            ))
        })?;
        check_product(product, &stall)?;
        self.listings.insert(
            &listing_key(merchant, KIND_PRODUCT, &product.id),
            &serde_json::to_value(product).map_err(|e| MerchantError::Invalid(e.to_string()))?,
        )?;
        Ok(())
    }

    /// A stall of this merchant.
    pub fn stall(&self, merchant: &PublicKey, id: &str) -> Result<Option<Stall>, MerchantError> {
        self.listing(merchant, KIND_STALL, id)
    }

    /// A product of this merchant.
    pub fn product(
        &self,
        merchant: &PublicKey,
        id: &str,
    ) -> Result<Option<Product>, MerchantError> {
        self.listing(merchant, KIND_PRODUCT, id)
    }

    /// Every product of this merchant.
    pub fn products(&self, merchant: &PublicKey) -> Result<Vec<Product>, MerchantError> {
        let mut prefix = merchant.to_bytes().to_vec();
        prefix.extend_from_slice(&KIND_PRODUCT.to_be_bytes());
        let mut products = Vec::new();
        for entry in self.listings.raw().scan_prefix(&prefix) {
            let (_, bytes) = entry.map_err(StoreError::from)?;
            let value = self.listings.decode(&bytes)?;
            products.push(
                serde_json::from_value(value).map_err(|e| MerchantError::Invalid(e.to_string()))?,
            );
        }
        Ok(products)
    }

    fn listing<T: serde::de::DeserializeOwned>(
        &self,
        merchant: &PublicKey,
        kind: u16,
        id: &str,
    ) -> Result<Option<T>, MerchantError> {
        self.listings
            .get(&listing_key(merchant, kind, id))?
            .map(|value| {
                serde_json::from_value(value).map_err(|e| MerchantError::Invalid(e.to_string()))
            })
            .transpose()
    }
}

fn public(pubkey: &PublicKey, stored: &StoredMerchant) -> Merchant {
    Merchant {
        pubkey: pubkey.to_hex(),
        npub: pubkey.to_bech32().unwrap_or_else(|_| pubkey.to_hex()),
        name: stored.name.clone(),
        lightning_address: stored.lightning_address.clone(),
    }
}

fn listing_key(merchant: &PublicKey, kind: u16, id: &str) -> Vec<u8> {
    let mut key = merchant.to_bytes().to_vec();
    key.extend_from_slice(&kind.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

fn valid_price(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

fn check_id(what: &str, id: &str) -> Result<(), MerchantError> {
    if id.is_empty() || id.len() > 64 {
        return Err(MerchantError::Invalid(format!(
            "{what} id must be 1 to 64 characters"
        )));
    }
    Ok(())
}

/// `sat` or a three-letter code.
pub(crate) fn known_currency(currency: &str) -> bool {
    currency.eq_ignore_ascii_case("sat")
        || (currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic()))
}

fn check_stall(stall: &Stall) -> Result<(), MerchantError> {
    check_id("stall", &stall.id)?;
    if stall.name.trim().is_empty() {
        return Err(MerchantError::Invalid("a stall needs a name".to_owned()));
    }
    let currency = &stall.currency;
    if !known_currency(currency) {
        return Err(MerchantError::Invalid(format!(
            "currency {currency:?} is neither \"sat\" nor a three-letter code"
        )));
    }
    for zone in &stall.shipping {
        check_id("shipping zone", &zone.id)?;
        if !valid_price(zone.cost) {
            return Err(MerchantError::Invalid(format!(
                "shipping zone {:?} has an invalid cost",
                zone.id
            )));
        }
    }
    Ok(())
}

fn check_product(product: &Product, stall: &Stall) -> Result<(), MerchantError> {
    check_id("product", &product.id)?;
    if product.name.trim().is_empty() {
        return Err(MerchantError::Invalid("a product needs a name".to_owned()));
    }
    if !product.currency.eq_ignore_ascii_case(&stall.currency) {
        return Err(MerchantError::Invalid(format!(
            "product currency {:?} differs from the stall's {:?}",
            product.currency, stall.currency
        )));
    }
    if !valid_price(product.price) {
        return Err(MerchantError::Invalid(
            "price must be a number ≥ 0".to_owned(),
        ));
    }
    for extra in &product.shipping {
        if !stall.shipping.iter().any(|zone| zone.id == extra.id) {
            return Err(MerchantError::Invalid(format!(
                "shipping zone {:?} is not one of the stall's zones",
                extra.id
            )));
        }
        if !valid_price(extra.cost) {
            return Err(MerchantError::Invalid(format!(
                "shipping cost for {:?} is invalid",
                extra.id
            )));
        }
    }
    Ok(())
}
