//! Merchants whose Nostr identities soko manages, and their stalls and products.
//!
//! Trees:
//! - `merchants`: merchant pubkey (32 bytes) → [`StoredMerchant`] (secret key and phone sealed
//!   by the [`Vault`]).
//! - `listings`: merchant pubkey ‖ kind (u16 BE) ‖ `d` identifier → content JSON of the
//!   merchant's latest stall (30017) or product (30018).
//! - `merchant_phones`: HMAC-SHA256 of the phone's digits under the vault's `phone-index`
//!   subkey → merchant pubkey: finds a merchant by the number it dials from (USSD) without
//!   storing the number in clear.
//! - `hidden_listings`: merchant pubkey ‖ product id → a product the merchant hid: kept in
//!   soko, withdrawn from relays (NIP-09 deletion) and from sale, until it is shown again.
//!
//! This file holds the merchants themselves (identity, activation, payout settings);
//! `phones` the phone index, `listings` the listings store and `rules` what a listing must be.

use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::sha256;
use nostr_sdk::hashes::{Hash, HashEngine};
use nostr_sdk::{Keys, Metadata, PublicKey, SecretKey, ToBech32};
use serde::{Deserialize, Serialize};

use sled::Transactional;

use super::activation::{self, ActivationCode};
use crate::proto::nip15::{Product, Stall};
use crate::store::{Store, StoreError, Typed};
use crate::util::unix_now;
use crate::vault::{Vault, VaultError};

mod listings;
mod phones;
mod refusal;
mod rules;

pub use self::phones::phone_digits;
pub use self::refusal::MerchantRefusal;
pub(crate) use self::rules::known_currency;
pub use self::rules::{normalize_categories, MAX_CATEGORIES, MAX_CATEGORY_CHARS};

/// Longest shop name.
pub const MAX_NAME_LEN: usize = 64;
pub use crate::proto::nip15::{KIND_PRODUCT, KIND_STALL};

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
    /// The merchant's own npub that takes payouts as Cashu tokens by DM, when it has no
    /// Lightning address.
    #[serde(default)]
    pub tokens_to: Option<String>,
    /// Pending until its owner onboards over USSD (merchants added with a phone).
    #[serde(default)]
    pub status: MerchantStatus,
    /// The agent (stored as hex) who registered the merchant, if one did: it gets its link
    /// back when a crash came between creating the merchant and linking it.
    #[serde(default)]
    pub onboarded_by: Option<PublicKey>,
    /// HMAC of the one-time activation code its owner types before choosing a first PIN
    /// ([`ActivationCode`]); `None` once used, or before one was issued.
    #[serde(default)]
    pub activation: Option<String>,
}

/// Whether a merchant trades yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    /// Trading: its profile is published and its listings may be.
    #[default]
    Active,
    /// Registered with a phone number; becomes active when its owner dials in over USSD,
    /// sets a PIN and confirms the shop name. No listings until then.
    Pending,
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
    /// Where payouts go as Cashu token DMs instead (npub), when there is no Lightning address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_to: Option<String>,
    /// `active`, or `pending` until its owner onboards over USSD.
    pub status: MerchantStatus,
}

/// The kind-0 profile soko publishes for an active merchant. It says how to pay: through
/// soko, which holds the money until the buyer confirms delivery. No `lud16`: Gamma clients
/// (Plebeian Market, Shopstr) pay a profile's Lightning address directly, around the escrow.
/// `payment_preference` `ecash` is the Gamma spec's and Shopstr's word for paying with a
/// Cashu token in the order (Shopstr's default too). `shopstr_donation` 0: otherwise Shopstr
/// takes 2.1 % out of the buyer's token for itself, and the token falls short of the order.
pub fn profile(merchant: &Merchant) -> Metadata {
    Metadata::new()
        .name(&merchant.name)
        .about(PROFILE_ABOUT)
        .custom_field("payment_preference", "ecash")
        .custom_field("shopstr_donation", 0)
}

/// What a merchant's profile tells buyers.
pub const PROFILE_ABOUT: &str = "A shop on soko. Order with any NIP-15 or Gamma Markets client \
(Plebeian Market, Shopstr, nostrmarket). Pay only what soko asks for in its reply to your order \
(a Lightning invoice), or a Cashu token sent with the order: soko holds the payment in escrow \
and releases it to the shop when you hand over the delivery code it sends you. This shop has \
no Lightning address of its own: do not pay one.";

/// Registry failures: refusals apart from storage, sealing and stored-data failures.
#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    /// Not done, for a reason the asker may read.
    #[error(transparent)]
    Refused(#[from] MerchantRefusal),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealing.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A listing does not encode, or a stored one does not read back.
    #[error("listing: {0}")]
    Listing(#[from] serde_json::Error),
    /// A key soko stored does not read back.
    #[error("stored key: {0}")]
    StoredKey(#[from] nostr_sdk::key::Error),
}

impl MerchantError {
    fn unknown(pubkey: &PublicKey) -> Self {
        MerchantRefusal::UnknownMerchant(*pubkey).into()
    }
}

/// The registry.
#[derive(Debug, Clone)]
pub struct Merchants {
    records: Typed<StoredMerchant>,
    listings: Typed<serde_json::Value>,
    phones: Typed<String>,
    hidden: Typed<serde_json::Value>,
    published: super::published::Published,
    phone_key: [u8; 32],
    activation_key: [u8; 32],
    vault: Vault,
}

impl Merchants {
    /// Opens the trees.
    pub fn open(store: &Store, vault: Vault) -> Result<Self, StoreError> {
        let merchants = Self {
            records: store.tree("merchants")?,
            listings: store.tree("listings")?,
            phones: store.tree("merchant_phones")?,
            hidden: store.tree("hidden_listings")?,
            published: super::published::Published::open(store)?,
            phone_key: vault.subkey("phone-index"),
            activation_key: vault.subkey(activation::VAULT_PURPOSE),
            vault,
        };
        merchants.index_phones()?;
        Ok(merchants)
    }

    /// What soko last published for each merchant ([`super::published`]).
    pub fn published(&self) -> &super::published::Published {
        &self.published
    }

    /// The vault the registry seals with (the command handler seals stored replies with it
    /// too: one vault per daemon).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Creates a merchant with a new managed identity.
    pub fn add(
        &self,
        name: &str,
        lightning_address: Option<&str>,
        phone: Option<&str>,
    ) -> Result<(Merchant, Keys), MerchantError> {
        self.create(name, lightning_address, phone, None)
    }

    /// Creates a pending merchant for `phone` on behalf of `agent`.
    pub fn add_for_agent(
        &self,
        name: &str,
        phone: &str,
        agent: &PublicKey,
    ) -> Result<(Merchant, Keys), MerchantError> {
        self.create(name, None, Some(phone), Some(*agent))
    }

    /// The agent who registered `merchant`, if one did.
    pub fn onboarded_by(&self, merchant: &PublicKey) -> Result<Option<PublicKey>, MerchantError> {
        let stored = self
            .records
            .get(&merchant.to_bytes())?
            .ok_or_else(|| MerchantError::unknown(merchant))?;
        Ok(stored.onboarded_by)
    }

    fn create(
        &self,
        name: &str,
        lightning_address: Option<&str>,
        phone: Option<&str>,
        onboarded_by: Option<PublicKey>,
    ) -> Result<(Merchant, Keys), MerchantError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(MerchantRefusal::BadName.into());
        }
        if let Some(address) = lightning_address {
            crate::lnurl::lnurlp_url(address).map_err(MerchantRefusal::BadAddress)?;
        }
        let tag = match phone {
            None => None,
            Some(phone) => {
                let digits = phone_digits(phone).ok_or(MerchantRefusal::BadPhone)?;
                Some(self.phone_tag(&digits))
            }
        };
        let keys = Keys::generate();
        let stored = StoredMerchant {
            name: name.to_owned(),
            lightning_address: lightning_address.map(str::to_owned),
            key_sealed: self.vault.seal(&keys.secret_key().to_secret_hex())?,
            phone_sealed: phone.map(|p| self.vault.seal(p)).transpose()?,
            created_at: unix_now(),
            tokens_to: None,
            // A merchant with a phone is activated by its owner over USSD.
            status: if phone.is_some() {
                MerchantStatus::Pending
            } else {
                MerchantStatus::Active
            },
            onboarded_by,
            activation: None,
        };
        let key = keys.public_key().to_bytes();
        let record = self.records.encode(&stored)?;
        let owner = self.phones.encode(&keys.public_key().to_hex())?;
        let taken: Result<(), MerchantError> = (self.records.raw(), self.phones.raw())
            .transaction(|(records, phones)| {
                if let Some(tag) = &tag {
                    if phones.get(tag)?.is_some() {
                        return sled::transaction::abort(());
                    }
                    phones.insert(tag.as_slice(), owner.clone())?;
                }
                records.insert(key.as_slice(), record.clone())?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Abort(()) => {
                    MerchantRefusal::PhoneTaken.into()
                }
                sled::transaction::TransactionError::Storage(e) => StoreError::from(e).into(),
            });
        taken?;
        Ok((public(&keys.public_key(), &stored), keys))
    }

    /// A new one-time activation code for a merchant with a phone, replacing any earlier
    /// one. Only its HMAC is kept: the caller shows the code once, to whoever created the
    /// merchant.
    pub fn issue_activation(&self, pubkey: &PublicKey) -> Result<ActivationCode, MerchantError> {
        let code = ActivationCode::generate();
        let tag = code.tag(&self.activation_key);
        self.update(pubkey, |stored| {
            if stored.phone_sealed.is_none() {
                return Err(MerchantRefusal::NoPhone.into());
            }
            stored.activation = Some(tag.clone());
            Ok(())
        })?;
        Ok(code)
    }

    /// Whether the merchant has an unused activation code.
    pub fn has_activation(&self, pubkey: &PublicKey) -> Result<bool, MerchantError> {
        Ok(self
            .records
            .get(&pubkey.to_bytes())?
            .ok_or_else(|| MerchantError::unknown(pubkey))?
            .activation
            .is_some())
    }

    /// True when `typed` is the merchant's unused activation code (nothing changes).
    pub fn check_activation(&self, pubkey: &PublicKey, typed: &str) -> Result<bool, MerchantError> {
        let Some(code) = ActivationCode::parse(typed) else {
            return Ok(false);
        };
        let stored = self
            .records
            .get(&pubkey.to_bytes())?
            .ok_or_else(|| MerchantError::unknown(pubkey))?;
        Ok(stored.activation == Some(code.tag(&self.activation_key)))
    }

    /// Uses up the activation code if `typed` is it; false (and nothing changes) otherwise.
    /// A compare-and-swap: of two sessions presenting the same code, one wins.
    pub fn redeem_activation(
        &self,
        pubkey: &PublicKey,
        typed: &str,
    ) -> Result<bool, MerchantError> {
        let Some(code) = ActivationCode::parse(typed) else {
            return Ok(false);
        };
        let tag = code.tag(&self.activation_key);
        let used = self.update(pubkey, |stored| {
            if stored.activation.as_deref() != Some(tag.as_str()) {
                return Err(MerchantRefusal::WrongActivationCode.into());
            }
            stored.activation = None;
            Ok(())
        });
        match used {
            Ok(_) => Ok(true),
            Err(MerchantError::Refused(MerchantRefusal::WrongActivationCode)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Activates a pending merchant (after onboarding); returns it.
    pub fn activate(&self, pubkey: &PublicKey) -> Result<Merchant, MerchantError> {
        self.update(pubkey, |stored| {
            stored.status = MerchantStatus::Active;
            Ok(())
        })
    }

    /// Activates a pending merchant and, in the same transaction, queues `notices` in the
    /// outbox tree `outbox` ([`crate::outbound::Staged`]): they exist exactly when the
    /// activation does. `None` (and nothing queued) when the merchant was active already,
    /// so that of two activations racing only one tells anyone.
    pub fn activate_with_notices(
        &self,
        pubkey: &PublicKey,
        outbox: &sled::Tree,
        notices: &[crate::outbound::Staged],
    ) -> Result<Option<Merchant>, MerchantError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let key = pubkey.to_bytes();
        let records = &self.records;
        let done = (records.raw(), outbox)
            .transaction(|(tree, queue)| {
                let Some(old) = tree.get(key)? else {
                    return Err(ConflictableTransactionError::Abort(MerchantError::unknown(
                        pubkey,
                    )));
                };
                let mut stored = records
                    .decode(&old)
                    .map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
                if stored.status != MerchantStatus::Pending {
                    return Ok(None);
                }
                stored.status = MerchantStatus::Active;
                let new = records
                    .encode(&stored)
                    .map_err(|e| ConflictableTransactionError::Abort(e.into()))?;
                tree.insert(&key[..], new)?;
                for notice in notices {
                    notice.insert(queue)?;
                }
                Ok(Some(public(pubkey, &stored)))
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::from(e).into(),
            })?;
        Ok(done)
    }

    /// Sets (or, with `None`, clears) where payouts go.
    pub fn set_lightning_address(
        &self,
        pubkey: &PublicKey,
        address: Option<&str>,
    ) -> Result<Merchant, MerchantError> {
        let address = address.map(str::trim);
        if let Some(address) = address {
            crate::lnurl::lnurlp_url(address).map_err(MerchantRefusal::BadAddress)?;
        }
        self.update(pubkey, |stored| {
            stored.lightning_address = address.map(str::to_owned);
            Ok(())
        })
    }

    /// Read-modify-write of one record, retried if it changed meanwhile.
    fn update(
        &self,
        pubkey: &PublicKey,
        change: impl Fn(&mut StoredMerchant) -> Result<(), MerchantError>,
    ) -> Result<Merchant, MerchantError> {
        let key = pubkey.to_bytes();
        loop {
            let old = self
                .records
                .raw()
                .get(key)
                .map_err(StoreError::from)?
                .ok_or_else(|| MerchantError::unknown(pubkey))?;
            let mut stored = self.records.decode(&old)?;
            change(&mut stored)?;
            let new = self.records.encode(&stored)?;
            let swapped = self
                .records
                .raw()
                .compare_and_swap(key, Some(old), Some(new))
                .map_err(StoreError::from)?;
            if swapped.is_ok() {
                return Ok(public(pubkey, &stored));
            }
        }
    }

    /// Every merchant with its keys (to load the keyring at start).
    pub fn all(&self) -> Result<Vec<(Merchant, Keys)>, MerchantError> {
        let mut all = Vec::new();
        for entry in self.records.iter() {
            let (key, stored) = entry?;
            let pubkey = PublicKey::from_slice(&key)?;
            let secret = SecretKey::from_hex(&self.vault.unseal(&stored.key_sealed)?)?;
            all.push((public(&pubkey, &stored), Keys::new(secret)));
        }
        Ok(all)
    }

    /// One merchant.
    pub fn get(&self, pubkey: &PublicKey) -> Result<Merchant, MerchantError> {
        self.records
            .get(&pubkey.to_bytes())?
            .map(|stored| public(pubkey, &stored))
            .ok_or_else(|| MerchantError::unknown(pubkey))
    }

    /// Sets where the merchant's payouts go: a Lightning address or LNURL-pay link, or an
    /// npub that receives them as Cashu tokens by DM. One replaces the other.
    /// Compare-and-swap like every other change of the record: a plain read-then-insert
    /// would undo a concurrent change of another field (an activation, a PIN reset).
    pub fn set_payout(&self, merchant: &PublicKey, to: &str) -> Result<Merchant, MerchantError> {
        let to = to.trim();
        let (tokens_to, lightning_address) = match PublicKey::parse(to) {
            Ok(npub) => (
                Some(npub.to_bech32().unwrap_or_else(|_| npub.to_hex())),
                None,
            ),
            Err(_) => {
                crate::lnurl::lnurlp_url(to).map_err(MerchantRefusal::BadPayout)?;
                (None, Some(to.to_owned()))
            }
        };
        self.update(merchant, |stored| {
            stored.tokens_to.clone_from(&tokens_to);
            stored.lightning_address.clone_from(&lightning_address);
            Ok(())
        })
    }
}

fn public(pubkey: &PublicKey, stored: &StoredMerchant) -> Merchant {
    Merchant {
        pubkey: pubkey.to_hex(),
        npub: pubkey.to_bech32().unwrap_or_else(|_| pubkey.to_hex()),
        name: stored.name.clone(),
        lightning_address: stored.lightning_address.clone(),
        tokens_to: stored.tokens_to.clone(),
        status: stored.status,
    }
}

fn refuse_pending(merchant: &Merchant) -> Result<(), MerchantError> {
    match merchant.status {
        MerchantStatus::Active => Ok(()),
        MerchantStatus::Pending => Err(MerchantRefusal::Pending(merchant.name.clone()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchant_stored_with_its_agent_as_hex_reads_the_agent_back() {
        let agent = Keys::generate().public_key();
        // As an older soko wrote it: every field it had then, the agent's key as hex.
        let old = serde_json::json!({
            "name": "Duka", "lightning_address": null, "key_sealed": "sealed",
            "phone_sealed": "sealed", "created_at": 1, "tokens_to": null,
            "status": "pending", "onboarded_by": agent.to_hex(), "activation": null,
        });
        let stored: StoredMerchant = serde_json::from_value(old.clone())
            .unwrap_or_else(|e| panic!("an old record reads: {e}"));
        assert_eq!(stored.onboarded_by, Some(agent));
        assert_eq!(serde_json::to_value(&stored).ok(), Some(old));
    }
}
