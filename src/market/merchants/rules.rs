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

    /// The categories a put or proposal of product `id` carries: those `given`, normalized
    /// ([`normalize_categories`]), or, when none are given (an update of other fields by a
    /// client that does not know of categories), those the product has now, listed or
    /// hidden. An empty list given clears them.
    pub fn categories_for(
        &self,
        merchant: &PublicKey,
        id: &str,
        given: Option<&[String]>,
    ) -> Result<Vec<String>, MerchantError> {
        if let Some(given) = given {
            return Ok(normalize_categories(given)?);
        }
        if let Some(product) = self.product(merchant, id)? {
            return Ok(product.categories);
        }
        Ok(self
            .hidden_products(merchant)?
            .into_iter()
            .find(|p| p.id == id)
            .map(|p| p.categories)
            .unwrap_or_default())
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

/// Categories a product may have: enough for a shop's own words (`fruit`, `organic`,
/// `kenya`), few enough to read on a USSD screen.
pub const MAX_CATEGORIES: usize = 10;
/// Characters in one category.
pub const MAX_CATEGORY_CHARS: usize = 32;

/// Categories as soko stores and publishes them (`t` tags): each trimmed and lower-cased
/// (NIP-12 hashtags are lower case, and clients search them so), duplicates merged keeping
/// the first place; then at most [`MAX_CATEGORIES`] of 1 to [`MAX_CATEGORY_CHARS`]
/// characters without control characters, or the first that is not.
pub fn normalize_categories(given: &[String]) -> Result<Vec<String>, MerchantRefusal> {
    let mut kept: Vec<String> = Vec::with_capacity(given.len().min(MAX_CATEGORIES));
    for raw in given {
        let category = raw.trim().to_lowercase();
        let chars = category.chars().count();
        if chars == 0 || chars > MAX_CATEGORY_CHARS || category.chars().any(char::is_control) {
            return Err(MerchantRefusal::BadCategory(raw.clone()));
        }
        if !kept.contains(&category) {
            kept.push(category);
        }
    }
    if kept.len() > MAX_CATEGORIES {
        return Err(MerchantRefusal::TooManyCategories(kept.len()));
    }
    Ok(kept)
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
    // The bounds only: [`Merchants::put_product`] stores them normalized.
    normalize_categories(&product.categories)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn categories_are_trimmed_lower_cased_and_merged() {
        assert_eq!(
            normalize_categories(&strings(&[
                " Fruit ",
                "ORGANIC",
                "fruit",
                "Matunda ya Pwani"
            ])),
            Ok(strings(&["fruit", "organic", "matunda ya pwani"]))
        );
        assert_eq!(normalize_categories(&[]), Ok(Vec::new()));
        // Lower case beyond ASCII, and a limit in characters, not bytes.
        let long = "Ä".repeat(MAX_CATEGORY_CHARS);
        assert_eq!(
            normalize_categories(std::slice::from_ref(&long)),
            Ok(vec!["ä".repeat(MAX_CATEGORY_CHARS)])
        );
    }

    #[test]
    fn categories_out_of_bounds_are_refused_by_name() {
        for bad in ["", "   ", "a\nb", "tab\there"] {
            assert_eq!(
                normalize_categories(&strings(&["fruit", bad])),
                Err(MerchantRefusal::BadCategory(bad.to_owned())),
                "{bad:?}"
            );
        }
        let long = "x".repeat(MAX_CATEGORY_CHARS + 1);
        assert_eq!(
            normalize_categories(std::slice::from_ref(&long)),
            Err(MerchantRefusal::BadCategory(long.clone()))
        );
        let many: Vec<String> = (0..=MAX_CATEGORIES).map(|n| format!("c{n}")).collect();
        assert_eq!(
            normalize_categories(&many),
            Err(MerchantRefusal::TooManyCategories(MAX_CATEGORIES + 1))
        );
        // Duplicates count once: eleven names of which two are the same fit.
        let mut merged = many[..MAX_CATEGORIES].to_vec();
        merged.push("C0".to_owned());
        assert_eq!(
            normalize_categories(&merged).map(|c| c.len()),
            Ok(MAX_CATEGORIES)
        );
    }
}
