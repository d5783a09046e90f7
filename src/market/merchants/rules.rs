//! The listing rules: what a stall or product must be before soko saves and publishes it,
//! and when a listing may be deleted. Checked again when an agent's proposal is approved.

use super::*;

impl Merchants {
    /// The checks [`Self::put_stall`] makes of the stall itself, without saving it (an
    /// agent's proposal is checked by the same rules when made and again when approved).
    pub fn validate_stall(&self, stall: &Stall) -> Result<(), MerchantError> {
        check_stall(stall)
    }

    /// The checks [`Self::put_product`] makes, without saving: its stall must be saved
    /// (published) under this merchant.
    pub fn validate_product(
        &self,
        merchant: &PublicKey,
        product: &Product,
    ) -> Result<Stall, MerchantError> {
        let stall = self.stall(merchant, &product.stall_id)?.ok_or_else(|| {
            MerchantError::Invalid(format!(
                "stall {:?} does not exist; add it first",
                product.stall_id
            ))
        })?;
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
                    return Err(MerchantError::Invalid(format!("no stall {id:?}")));
                }
                let listed = self.products(merchant)?;
                let hidden = self.hidden_products(merchant)?;
                match listed.iter().chain(&hidden).find(|p| p.stall_id == id) {
                    Some(product) => Err(MerchantError::Invalid(format!(
                        "stall {id:?} still has products (e.g. {:?}); delete them first",
                        product.id
                    ))),
                    None => Ok(()),
                }
            }
            KIND_PRODUCT => {
                let listed = self.product(merchant, id)?.is_some();
                if listed || self.hidden_products(merchant)?.iter().any(|p| p.id == id) {
                    Ok(())
                } else {
                    Err(MerchantError::Invalid(format!("no product {id:?}")))
                }
            }
            other => Err(MerchantError::Invalid(format!(
                "kind {other} is not a listing: 30017 (stall) or 30018 (product)"
            ))),
        }
    }
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

pub(super) fn check_stall(stall: &Stall) -> Result<(), MerchantError> {
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
