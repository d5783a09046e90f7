//! The listing rules: what a stall or product must be before soko saves and publishes it,
//! and when a listing may be deleted. Checked again when an agent's proposal is approved.

use super::*;

impl Merchants {
    /// The checks [`Self::put_stall`] makes of the stall itself, without saving it (an
    /// agent's proposal is checked by the same rules when made and again when approved).
    pub fn validate_stall(&self, stall: &Stall) -> Result<(), MerchantError> {
        Ok(check_stall(stall)?)
    }

    /// The checks [`Self::put_product`] makes, without saving: its stall must be saved
    /// (published) under this merchant.
    pub fn validate_product(
        &self,
        merchant: &PublicKey,
        product: &Product,
    ) -> Result<Stall, MerchantError> {
        let stall = self
            .stall(merchant, &product.stall_id)?
            .ok_or_else(|| MerchantRefusal::StallMissing(product.stall_id.clone()))?;
        check_product(product, &stall)?;
        Ok(stall)
    }

    /// The checks [`Self::delete_listing`] makes, without deleting: the listing exists, and
    /// a stall has no products left (they would be left without a stall).
    pub fn validate_deletion(
        &self,
        merchant: &PublicKey,
        kind: u16,
        id: &str,
    ) -> Result<(), MerchantError> {
        match kind {
            KIND_STALL => {
                if self.stall(merchant, id)?.is_none() {
                    return Err(MerchantRefusal::NoStall(id.to_owned()).into());
                }
                let listed = self.products(merchant)?;
                let hidden = self.hidden_products(merchant)?;
                match listed.iter().chain(&hidden).find(|p| p.stall_id == id) {
                    Some(product) => Err(MerchantRefusal::StallHasProducts {
                        stall: id.to_owned(),
                        product: product.id.clone(),
                    }
                    .into()),
                    None => Ok(()),
                }
            }
            KIND_PRODUCT => {
                let listed = self.product(merchant, id)?.is_some();
                if listed || self.hidden_products(merchant)?.iter().any(|p| p.id == id) {
                    Ok(())
                } else {
                    Err(MerchantRefusal::NoProduct(id.to_owned()).into())
                }
            }
            other => Err(MerchantRefusal::NotAListing(other).into()),
        }
    }
}

fn valid_price(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

fn check_id(what: &'static str, id: &str) -> Result<(), MerchantRefusal> {
    if id.is_empty() || id.len() > 64 {
        return Err(MerchantRefusal::BadId(what));
    }
    Ok(())
}

/// `sat` or a three-letter code.
pub(crate) fn known_currency(currency: &str) -> bool {
    currency.eq_ignore_ascii_case("sat")
        || (currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_alphabetic()))
}

pub(super) fn check_stall(stall: &Stall) -> Result<(), MerchantRefusal> {
    check_id("stall", &stall.id)?;
    if stall.name.trim().is_empty() {
        return Err(MerchantRefusal::StallWithoutName);
    }
    let currency = &stall.currency;
    if !known_currency(currency) {
        return Err(MerchantRefusal::UnknownCurrency(currency.clone()));
    }
    for zone in &stall.shipping {
        check_id("shipping zone", &zone.id)?;
        if !valid_price(zone.cost) {
            return Err(MerchantRefusal::BadZoneCost(zone.id.clone()));
        }
    }
    Ok(())
}

fn check_product(product: &Product, stall: &Stall) -> Result<(), MerchantRefusal> {
    check_id("product", &product.id)?;
    if product.name.trim().is_empty() {
        return Err(MerchantRefusal::ProductWithoutName);
    }
    if !product.currency.eq_ignore_ascii_case(&stall.currency) {
        return Err(MerchantRefusal::CurrencyMismatch {
            product: product.currency.clone(),
            stall: stall.currency.clone(),
        });
    }
    if !valid_price(product.price) {
        return Err(MerchantRefusal::BadPrice);
    }
    for extra in &product.shipping {
        if !stall.shipping.iter().any(|zone| zone.id == extra.id) {
            return Err(MerchantRefusal::UnknownZone(extra.id.clone()));
        }
        if !valid_price(extra.cost) {
            return Err(MerchantRefusal::BadShippingCost(extra.id.clone()));
        }
    }
    Ok(())
}
