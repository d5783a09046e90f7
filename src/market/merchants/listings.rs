//! The listings store: each merchant's latest stall and product contents, the hidden
//! products, and the changes to them (after the listing rules).

use std::convert::Infallible;

use super::rules::check_stall;
use super::*;

impl Merchants {
    /// Deletes a stall (30017) or product (30018, listed or hidden) from soko's records,
    /// after [`Self::validate_deletion`]; the caller publishes the NIP-09 deletion.
    pub fn delete_listing(
        &self,
        merchant: &PublicKey,
        kind: u16,
        id: &str,
    ) -> Result<(), MerchantError> {
        self.validate_deletion(merchant, kind, id)?;
        if kind == KIND_STALL {
            self.listings
                .remove(&listing_key(merchant, KIND_STALL, id))?;
            return Ok(());
        }
        let key = listing_key(merchant, KIND_PRODUCT, id);
        let hidden_key = hidden_key(merchant, id);
        (self.listings.raw(), self.hidden.raw())
            .transaction(|(listings, hidden)| {
                listings.remove(key.as_slice())?;
                hidden.remove(hidden_key.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<Infallible>>(())
            })
            .map_err(listing_tx_error)?;
        Ok(())
    }

    /// Saves a stall after checking it.
    pub fn put_stall(&self, merchant: &PublicKey, stall: &Stall) -> Result<(), MerchantError> {
        refuse_pending(&self.get(merchant)?)?;
        check_stall(stall)?;
        self.listings.insert(
            &listing_key(merchant, KIND_STALL, &stall.id),
            &serde_json::to_value(stall)?,
        )?;
        Ok(())
    }

    /// Saves a product after checking it against its stall.
    pub fn put_product(
        &self,
        merchant: &PublicKey,
        product: &Product,
    ) -> Result<(), MerchantError> {
        refuse_pending(&self.get(merchant)?)?;
        self.validate_product(merchant, product)?;
        let mut product = product.clone();
        product.categories = normalize_categories(&product.categories)?;
        let value = serde_json::to_value(&product)?;
        let listed = self.listings.encode(&value)?;
        let key = listing_key(merchant, KIND_PRODUCT, &product.id);
        let hidden_key = hidden_key(merchant, &product.id);
        // Putting a product lists it: a hidden copy of it is gone.
        (self.listings.raw(), self.hidden.raw())
            .transaction(|(listings, hidden)| {
                listings.insert(key.as_slice(), listed.clone())?;
                hidden.remove(hidden_key.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<Infallible>>(())
            })
            .map_err(listing_tx_error)?;
        Ok(())
    }

    /// Takes a product off sale: it leaves the listings (orders for it are refused as for an
    /// unknown product) and is kept among the hidden ones. Returns it.
    pub fn hide_product(&self, merchant: &PublicKey, id: &str) -> Result<Product, MerchantError> {
        let product = self
            .product(merchant, id)?
            .ok_or_else(|| MerchantRefusal::NotListed(id.to_owned()))?;
        let key = listing_key(merchant, KIND_PRODUCT, id);
        let hidden_key = hidden_key(merchant, id);
        let value = self.hidden.encode(&serde_json::to_value(&product)?)?;
        (self.listings.raw(), self.hidden.raw())
            .transaction(|(listings, hidden)| {
                listings.remove(key.as_slice())?;
                hidden.insert(hidden_key.as_slice(), value.clone())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<Infallible>>(())
            })
            .map_err(listing_tx_error)?;
        Ok(product)
    }

    /// Puts a hidden product back on sale (checked again, like any put). Returns it.
    pub fn show_product(&self, merchant: &PublicKey, id: &str) -> Result<Product, MerchantError> {
        let product = self
            .hidden_products(merchant)?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| MerchantRefusal::NotHidden(id.to_owned()))?;
        self.put_product(merchant, &product)?;
        Ok(product)
    }

    /// The products this merchant hid.
    pub fn hidden_products(&self, merchant: &PublicKey) -> Result<Vec<Product>, MerchantError> {
        let mut products = Vec::new();
        for entry in self.hidden.raw().scan_prefix(merchant.to_bytes()) {
            let (_, bytes) = entry.map_err(StoreError::from)?;
            let value = self.hidden.decode(&bytes)?;
            products.push(serde_json::from_value(value)?);
        }
        Ok(products)
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

    /// The listings tree, for the escrow's paid commit: it takes the sold units off the
    /// stock in the same transaction as the paid state (issue 11).
    pub fn listings_tree(&self) -> &sled::Tree {
        self.listings.raw()
    }

    /// The key of a product's listing in [`Merchants::listings_tree`].
    pub fn product_key(merchant: &PublicKey, id: &str) -> Vec<u8> {
        listing_key(merchant, KIND_PRODUCT, id)
    }

    /// Every stall of this merchant.
    pub fn stalls(&self, merchant: &PublicKey) -> Result<Vec<Stall>, MerchantError> {
        let mut prefix = merchant.to_bytes().to_vec();
        prefix.extend_from_slice(&KIND_STALL.to_be_bytes());
        let mut stalls = Vec::new();
        for entry in self.listings.raw().scan_prefix(&prefix) {
            let (_, bytes) = entry.map_err(StoreError::from)?;
            let value = self.listings.decode(&bytes)?;
            stalls.push(serde_json::from_value(value)?);
        }
        Ok(stalls)
    }

    /// Every product of this merchant.
    pub fn products(&self, merchant: &PublicKey) -> Result<Vec<Product>, MerchantError> {
        let mut prefix = merchant.to_bytes().to_vec();
        prefix.extend_from_slice(&KIND_PRODUCT.to_be_bytes());
        let mut products = Vec::new();
        for entry in self.listings.raw().scan_prefix(&prefix) {
            let (_, bytes) = entry.map_err(StoreError::from)?;
            let value = self.listings.decode(&bytes)?;
            products.push(serde_json::from_value(value)?);
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
            .map(|value| serde_json::from_value(value).map_err(MerchantError::from))
            .transpose()
    }
}

fn hidden_key(merchant: &PublicKey, id: &str) -> Vec<u8> {
    let mut key = merchant.to_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// The listing transactions never abort: only storage fails them.
fn listing_tx_error(e: sled::transaction::TransactionError<Infallible>) -> MerchantError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::from(e).into(),
        sled::transaction::TransactionError::Abort(never) => match never {},
    }
}

fn listing_key(merchant: &PublicKey, kind: u16, id: &str) -> Vec<u8> {
    let mut key = merchant.to_bytes().to_vec();
    key.extend_from_slice(&kind.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}
