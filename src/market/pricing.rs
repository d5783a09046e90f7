//! Validating and pricing a NIP-15 order against the merchant's stall and products. Pure.
//!
//! Prices arrive as JSON numbers. They become integers here — sats for `sat` stalls, cents
//! for fiat — and everything after is integer arithmetic. Fiat converts to sats through a
//! rate table of millisats per cent, rounding up so the merchant is never short.

use std::collections::HashMap;

use crate::money::{Msats, Sats};
use crate::proto::nip15::{Order, Product, Stall};

/// Millisats per cent, by upper-case ISO 4217 code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rates(pub HashMap<String, u64>);

/// A priced, valid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// The stall's currency as written there.
    pub currency: String,
    /// Lines in order.
    pub lines: Vec<Line>,
    /// Zone base cost plus the products' extras, in minor units.
    pub shipping: u64,
    /// Items plus shipping, in minor units.
    pub total: u64,
    /// What the buyer pays.
    pub total_sats: Sats,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Product id.
    pub product_id: String,
    /// Units.
    pub quantity: u64,
    /// Unit price in minor units.
    pub unit_price: u64,
}

/// Why an order cannot be accepted; the text goes back to the buyer in a type-2 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRefusal {
    /// No items.
    #[error("the order has no items")]
    NoItems,
    /// A product this merchant does not sell.
    #[error("product {0:?} is not sold here")]
    UnknownProduct(String),
    /// Items from several stalls.
    #[error("all items of one order must come from the same stall")]
    MixedStalls,
    /// Zero or negative quantity.
    #[error("quantity of {product:?} must be at least 1 (got {quantity})")]
    QuantityNotPositive {
        /// Product id.
        product: String,
        /// What was asked.
        quantity: i64,
    },
    /// More than in stock.
    #[error("only {in_stock} of {product:?} in stock, {wanted} ordered")]
    NotEnoughStock {
        /// Product id.
        product: String,
        /// Units ordered.
        wanted: u64,
        /// Units available.
        in_stock: u64,
    },
    /// Unknown shipping zone.
    #[error("shipping zone {0:?} does not exist for this stall")]
    UnknownShipping(String),
    /// A currency soko has no rate for.
    #[error("soko has no exchange rate for {0:?}")]
    UnknownCurrency(String),
    /// A product priced in another currency than its stall.
    #[error("product {0:?} is priced in another currency than its stall")]
    CurrencyMismatch(String),
    /// A malformed price in the listing (the merchant's problem, reported honestly).
    #[error("the listing has an invalid price for {0}")]
    BadPrice(String),
    /// Numbers beyond what soko handles.
    #[error("the order total is too large")]
    TooLarge,
}

/// Validates `order` against the stall and its products (those of the stall's merchant) and
/// prices it. Nothing is reserved here.
pub fn price(
    order: &Order,
    stall: &Stall,
    products: &[Product],
    rates: &Rates,
) -> Result<Priced, OrderRefusal> {
    if order.items.is_empty() {
        return Err(OrderRefusal::NoItems);
    }
    let in_sats = is_sat(&stall.currency);
    let decimals = decimals(&stall.currency);
    let zone = stall
        .shipping
        .iter()
        .find(|z| z.id == order.shipping_id)
        .ok_or_else(|| OrderRefusal::UnknownShipping(order.shipping_id.clone()))?;
    let mut shipping = to_minor(zone.cost, decimals)
        .ok_or_else(|| OrderRefusal::BadPrice(format!("shipping zone {:?}", zone.id)))?;

    // Merge repeated lines of one product, so stock is checked against the whole order.
    let mut wanted: Vec<(&Product, u64)> = Vec::new();
    for item in &order.items {
        let product = products
            .iter()
            .find(|p| p.id == item.product_id)
            .ok_or_else(|| OrderRefusal::UnknownProduct(item.product_id.clone()))?;
        if product.stall_id != stall.id {
            return Err(OrderRefusal::MixedStalls);
        }
        let quantity = u64::try_from(item.quantity)
            .ok()
            .filter(|q| *q > 0)
            .ok_or_else(|| OrderRefusal::QuantityNotPositive {
                product: item.product_id.clone(),
                quantity: item.quantity,
            })?;
        match wanted.iter_mut().find(|(p, _)| p.id == product.id) {
            Some((_, total)) => {
                *total = total.checked_add(quantity).ok_or(OrderRefusal::TooLarge)?
            }
            None => wanted.push((product, quantity)),
        }
    }

    let mut lines = Vec::with_capacity(wanted.len());
    let mut items_total: u64 = 0;
    for (product, quantity) in wanted {
        if !product.currency.eq_ignore_ascii_case(&stall.currency) {
            return Err(OrderRefusal::CurrencyMismatch(product.id.clone()));
        }
        if let Some(in_stock) = product.quantity {
            if quantity > in_stock {
                return Err(OrderRefusal::NotEnoughStock {
                    product: product.id.clone(),
                    wanted: quantity,
                    in_stock,
                });
            }
        }
        let unit_price = to_minor(product.price, decimals)
            .ok_or_else(|| OrderRefusal::BadPrice(format!("product {:?}", product.id)))?;
        let line_total = unit_price
            .checked_mul(quantity)
            .ok_or(OrderRefusal::TooLarge)?;
        items_total = items_total
            .checked_add(line_total)
            .ok_or(OrderRefusal::TooLarge)?;
        if let Some(extra) = product.shipping.iter().find(|s| s.id == zone.id) {
            let extra = to_minor(extra.cost, decimals)
                .ok_or_else(|| OrderRefusal::BadPrice(format!("shipping of {:?}", product.id)))?;
            let extra = extra.checked_mul(quantity).ok_or(OrderRefusal::TooLarge)?;
            shipping = shipping.checked_add(extra).ok_or(OrderRefusal::TooLarge)?;
        }
        lines.push(Line {
            product_id: product.id.clone(),
            quantity,
            unit_price,
        });
    }
    let total = items_total
        .checked_add(shipping)
        .ok_or(OrderRefusal::TooLarge)?;
    let total_sats = if in_sats {
        Sats(total)
    } else {
        let code = stall.currency.to_ascii_uppercase();
        let per_cent = rates
            .0
            .get(&code)
            .ok_or_else(|| OrderRefusal::UnknownCurrency(stall.currency.clone()))?;
        Msats(total.checked_mul(*per_cent).ok_or(OrderRefusal::TooLarge)?).to_sats_ceil()
    };
    Ok(Priced {
        currency: stall.currency.clone(),
        lines,
        shipping,
        total,
        total_sats,
    })
}

fn is_sat(currency: &str) -> bool {
    currency.eq_ignore_ascii_case("sat") || currency.eq_ignore_ascii_case("sats")
}

/// Decimals of a currency's minor unit: none for sats, cents for fiat.
pub(crate) fn decimals(currency: &str) -> i32 {
    if is_sat(currency) {
        0
    } else {
        2
    }
}

/// `value` in minor units with `decimals` decimals, if it is a non-negative number with
/// no more precision than that (within float noise) and small enough to be exact.
pub(crate) fn to_minor(value: f64, decimals: i32) -> Option<u64> {
    const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    let scaled = value * 10f64.powi(decimals);
    if !scaled.is_finite() || !(0.0..EXACT_LIMIT).contains(&scaled) {
        return None;
    }
    let rounded = scaled.round();
    ((scaled - rounded).abs() < 1e-6).then_some(rounded as u64)
}

/// A NIP-15 price for display: whole numbers without decimals.
pub fn price_text(price: f64, currency: &str) -> String {
    let whole = price.fract() == 0.0 && (0.0..1e15).contains(&price);
    if whole {
        format!("{price:.0} {currency}")
    } else {
        format!("{price:.2} {currency}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_show_without_float_noise() {
        assert_eq!(price_text(500.0, "sat"), "500 sat");
        assert_eq!(price_text(1.5, "USD"), "1.50 USD");
    }
    use crate::proto::nip15::{Contact, OrderItem, ShippingExtra, ShippingZone};

    fn stall(currency: &str) -> Stall {
        Stall {
            id: "s1".into(),
            name: "Duka".into(),
            description: None,
            currency: currency.into(),
            shipping: vec![ShippingZone {
                id: "nairobi".into(),
                name: None,
                cost: if currency == "sat" { 100.0 } else { 2.5 },
                regions: vec![],
            }],
        }
    }

    fn product(id: &str, stall: &str, currency: &str, price: f64, stock: Option<u64>) -> Product {
        Product {
            id: id.into(),
            stall_id: stall.into(),
            name: id.into(),
            description: None,
            images: vec![],
            currency: currency.into(),
            price,
            quantity: stock,
            specs: vec![],
            shipping: vec![ShippingExtra {
                id: "nairobi".into(),
                cost: if currency == "sat" { 10.0 } else { 0.1 },
            }],
            categories: Vec::new(),
        }
    }

    fn order(items: &[(&str, i64)], shipping: &str) -> Order {
        Order {
            id: "o1".into(),
            kind: 0,
            name: None,
            address: None,
            message: None,
            contact: Contact::default(),
            items: items
                .iter()
                .map(|(id, q)| OrderItem {
                    product_id: (*id).into(),
                    quantity: *q,
                })
                .collect(),
            shipping_id: shipping.into(),
        }
    }

    fn catalog() -> Vec<Product> {
        vec![
            product("mango", "s1", "sat", 500.0, Some(3)),
            product("ebook", "s1", "sat", 2_000.0, None),
            product("shoe", "s2", "sat", 9.0, Some(1)),
        ]
    }

    #[test]
    fn sat_total_is_items_plus_zone_plus_per_unit_extras() {
        let priced = price(
            &order(&[("mango", 2), ("ebook", 1)], "nairobi"),
            &stall("sat"),
            &catalog(),
            &Rates::default(),
        );
        // 2×500 + 2000 + zone 100 + extras (2+1)×10
        assert_eq!(
            priced.map(|p| (p.total, p.total_sats)),
            Ok((3_130, Sats(3_130)))
        );
    }

    #[test]
    fn fiat_converts_through_the_rate_rounding_up() {
        let products = vec![product("mango", "s1", "KES", 12.5, None)];
        let rates = Rates([("KES".to_owned(), 67)].into());
        let priced = price(
            &order(&[("mango", 1)], "nairobi"),
            &stall("KES"),
            &products,
            &rates,
        );
        // 1250 + 250 + 10 cents = 1510 cents × 67 msat = 101_170 msat → 102 sat
        assert_eq!(
            priced.map(|p| (p.total, p.total_sats)),
            Ok((1_510, Sats(102)))
        );
        let unknown = price(
            &order(&[("mango", 1)], "nairobi"),
            &stall("KES"),
            &products,
            &Rates::default(),
        );
        assert_eq!(unknown, Err(OrderRefusal::UnknownCurrency("KES".into())));
    }

    #[test]
    fn every_invalid_order_is_explained() {
        let s = stall("sat");
        let c = catalog();
        let r = Rates::default();
        let refuse = |o: Order| price(&o, &s, &c, &r).err();
        assert_eq!(refuse(order(&[], "nairobi")), Some(OrderRefusal::NoItems));
        assert_eq!(
            refuse(order(&[("pear", 1)], "nairobi")),
            Some(OrderRefusal::UnknownProduct("pear".into()))
        );
        assert_eq!(
            refuse(order(&[("shoe", 1)], "nairobi")),
            Some(OrderRefusal::MixedStalls)
        );
        assert!(matches!(
            refuse(order(&[("mango", 0)], "nairobi")),
            Some(OrderRefusal::QuantityNotPositive { quantity: 0, .. })
        ));
        assert!(matches!(
            refuse(order(&[("mango", -2)], "nairobi")),
            Some(OrderRefusal::QuantityNotPositive { quantity: -2, .. })
        ));
        // Two lines of the same product count together against stock.
        assert_eq!(
            refuse(order(&[("mango", 2), ("mango", 2)], "nairobi")),
            Some(OrderRefusal::NotEnoughStock {
                product: "mango".into(),
                wanted: 4,
                in_stock: 3
            })
        );
        assert_eq!(
            refuse(order(&[("mango", 1)], "mars")),
            Some(OrderRefusal::UnknownShipping("mars".into()))
        );
        let fractional_sats = vec![product("mango", "s1", "sat", 1.5, None)];
        assert!(matches!(
            price(&order(&[("mango", 1)], "nairobi"), &s, &fractional_sats, &r),
            Err(OrderRefusal::BadPrice(_))
        ));
        let wrong_currency = vec![product("mango", "s1", "USD", 1.0, None)];
        assert_eq!(
            price(&order(&[("mango", 1)], "nairobi"), &s, &wrong_currency, &r),
            Err(OrderRefusal::CurrencyMismatch("mango".into()))
        );
        assert_eq!(
            refuse(order(&[("ebook", i64::MAX)], "nairobi")),
            Some(OrderRefusal::TooLarge)
        );
    }

    #[test]
    fn prices_become_exact_integers_or_nothing() {
        assert_eq!(to_minor(12.34, 2), Some(1_234));
        assert_eq!(to_minor(0.1 + 0.2, 2), Some(30));
        assert_eq!(to_minor(12.345, 2), None);
        assert_eq!(to_minor(-1.0, 0), None);
        assert_eq!(to_minor(f64::NAN, 0), None);
        assert_eq!(to_minor(1e300, 0), None);
    }
}
