//! Gamma Markets listings (`kinds/gamma.md`): soko's stalls and products written as kind-30402
//! product listings and kind-30406 shipping options, the vocabulary Plebeian Market and
//! Shopstr read. Pure conversions from the NIP-15 records soko stores, so one stored listing
//! is the source of both forms; a tag is a `Vec<String>` as in [`super::gamma`].

use nostr_sdk::hashes::{sha256, Hash};

use super::nip15::{Product, ShippingZone, Stall};

/// Kind of a Gamma product listing (NIP-99 classified listing).
pub const KIND_LISTING: u16 = super::gamma::KIND_LISTING;
/// Kind of a Gamma product collection (not published by soko; accepted by its relay).
pub const KIND_COLLECTION: u16 = 30405;
/// Kind of a Gamma shipping option.
pub const KIND_SHIPPING_OPTION: u16 = 30406;

/// The `stock` written for a product soko sells without limit (NIP-15 `quantity: null`).
/// Plebeian Market shows a listing without a `stock` tag as sold out, so "unlimited" needs a
/// number; soko never refuses an order of such a product for stock.
pub const UNLIMITED_STOCK: u64 = 1_000_000;

/// The content and tags (the `d` tag first) of one listing event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingEvent {
    /// Event content.
    pub content: String,
    /// Event tags.
    pub tags: Vec<Vec<String>>,
}

/// The currency code Gamma clients read: NIP-15's `sat` is `SATS` (what Plebeian Market
/// writes and both clients convert 1:1), an ISO 4217 code is upper-cased.
pub fn currency(nip15: &str) -> String {
    if nip15.eq_ignore_ascii_case("sat") || nip15.eq_ignore_ascii_case("sats") {
        "SATS".to_owned()
    } else {
        nip15.to_ascii_uppercase()
    }
}

/// A NIP-15 price (a JSON number soko checked finite and not negative) as the decimal
/// string Gamma tags carry: never an exponent, never more than 8 decimals.
pub fn amount(value: f64) -> String {
    let fixed = format!("{:.8}", value.max(0.0));
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The `d` tag of the shipping option for `zone` of `stall`. Zone ids are unique only within
/// a stall, and clients accept `d` tags of `[A-Za-z0-9_-]` only (Plebeian's coordinate
/// check), so: the zone id with other characters replaced, then 16 hex digits of
/// SHA-256(stall id ‖ 0 ‖ zone id), which tell two stalls' zones of the same name apart.
pub fn shipping_option_d(stall_id: &str, zone_id: &str) -> String {
    let readable: String = zone_id
        .chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut input = Vec::with_capacity(stall_id.len() + zone_id.len() + 1);
    input.extend_from_slice(stall_id.as_bytes());
    input.push(0);
    input.extend_from_slice(zone_id.as_bytes());
    let digest = sha256::Hash::hash(&input).to_string();
    format!("{readable}-{}", &digest[..16])
}

/// The zone of `stall` a Gamma order's shipping `d` names: the `d` soko publishes for it
/// ([`shipping_option_d`]) or, as before soko published shipping options, the zone id.
pub fn resolve_zone<'a>(stall: &'a Stall, d: &str) -> Option<&'a ShippingZone> {
    stall.shipping.iter().find(|zone| zone.id == d).or_else(|| {
        stall
            .shipping
            .iter()
            .find(|zone| shipping_option_d(&stall.id, &zone.id) == d)
    })
}

/// The kind-30406 shipping option for `zone` of `stall`.
pub fn shipping_option(stall: &Stall, zone: &ShippingZone) -> ListingEvent {
    let title = zone
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| zone.id.clone());
    let mut tags = vec![
        tag(&["d", &shipping_option_d(&stall.id, &zone.id)]),
        tag(&["title", &title]),
        tag(&["price", &amount(zone.cost), &currency(&stall.currency)]),
    ];
    // Gamma wants ISO 3166-1 codes; NIP-15 regions are free text. The codes among them
    // become the `country` tag, all of them are named in the content.
    let countries: Vec<String> = zone
        .regions
        .iter()
        .filter(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(|r| r.to_ascii_uppercase())
        .collect();
    if !countries.is_empty() {
        let mut country = vec!["country".to_owned()];
        country.extend(countries);
        tags.push(country);
    }
    tags.push(tag(&["service", "standard"]));
    let mut content = format!("{} ({}), shipped by {}", title, zone.id, stall.name);
    if !zone.regions.is_empty() {
        content.push_str(": ");
        content.push_str(&zone.regions.join(", "));
    }
    ListingEvent { content, tags }
}

/// The kind-30402 listing of `product`, which belongs to `stall`, published by `merchant`
/// (hex): title, price and currency, stock, images, specs, categories (`t`), the stall's
/// shipping options
/// (with the product's extra cost per zone), and Shopstr's own `shipping` tag when the stall
/// has a single zone (Shopstr reads no shipping options).
pub fn product_listing(merchant: &str, product: &Product, stall: &Stall) -> ListingEvent {
    let currency = currency(&product.currency);
    let physical = !stall.shipping.is_empty();
    let mut tags = vec![
        tag(&["d", &product.id]),
        tag(&["title", &product.name]),
        tag(&["price", &amount(product.price), &currency]),
        tag(&[
            "type",
            "simple",
            if physical { "physical" } else { "digital" },
        ]),
        tag(&["visibility", "on-sale"]),
        tag(&[
            "stock",
            &product.quantity.unwrap_or(UNLIMITED_STOCK).to_string(),
        ]),
    ];
    if let Some(summary) = product
        .description
        .as_deref()
        .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
    {
        tags.push(tag(&["summary", &clip(summary, 200)]));
    }
    for (order, url) in product.images.iter().enumerate() {
        tags.push(tag(&["image", url, "", &order.to_string()]));
    }
    for spec in &product.specs {
        if let [key, value] = spec.as_slice() {
            tags.push(tag(&["spec", key, value]));
        }
    }
    for category in &product.categories {
        tags.push(tag(&["t", category]));
    }
    for zone in &stall.shipping {
        let reference = format!(
            "{KIND_SHIPPING_OPTION}:{merchant}:{}",
            shipping_option_d(&stall.id, &zone.id)
        );
        match product.shipping.iter().find(|extra| extra.id == zone.id) {
            Some(extra) => tags.push(tag(&["shipping_option", &reference, &amount(extra.cost)])),
            None => tags.push(tag(&["shipping_option", &reference])),
        }
    }
    if let [only] = stall.shipping.as_slice() {
        let extra = product
            .shipping
            .iter()
            .find(|extra| extra.id == only.id)
            .map_or(0.0, |extra| extra.cost);
        let cost = only.cost + extra;
        let kind = if cost > 0.0 { "Added Cost" } else { "Free" };
        tags.push(tag(&["shipping", kind, &amount(cost), &currency]));
    }
    ListingEvent {
        content: product.description.clone().unwrap_or_default(),
        tags,
    }
}

fn clip(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::nip15::ShippingExtra;

    const MERCHANT: &str = "f916d184100631c6e9096a22bcffcbf991f14e5952e4f36b87a7ee41e9b80b32";

    fn stall(zones: &[(&str, f64)]) -> Stall {
        Stall {
            id: "duka".into(),
            name: "Mama Duka".into(),
            description: None,
            currency: "sat".into(),
            shipping: zones
                .iter()
                .map(|(id, cost)| ShippingZone {
                    id: (*id).into(),
                    name: None,
                    cost: *cost,
                    regions: vec!["KE".into(), "Nairobi".into()],
                })
                .collect(),
        }
    }

    fn mango(quantity: Option<u64>) -> Product {
        Product {
            id: "mango".into(),
            stall_id: "duka".into(),
            name: "Mango".into(),
            description: Some("\nRipe Kent mangoes\nfrom Makueni".into()),
            images: vec!["https://example.com/m.jpg".into()],
            currency: "sat".into(),
            price: 500.0,
            quantity,
            specs: vec![vec!["origin".into(), "Makueni".into()]],
            shipping: vec![ShippingExtra {
                id: "nairobi".into(),
                cost: 10.0,
            }],
            categories: Vec::new(),
        }
    }

    fn value<'a>(tags: &'a [Vec<String>], name: &str) -> Option<&'a [String]> {
        tags.iter()
            .find(|t| t.first().map(String::as_str) == Some(name))
            .map(|t| &t[1..])
    }

    #[test]
    fn a_product_reads_as_the_gamma_clients_expect() {
        let stall = stall(&[("nairobi", 100.0)]);
        let listing = product_listing(MERCHANT, &mango(Some(3)), &stall);
        let tags = &listing.tags;
        assert_eq!(tags[0], tag(&["d", "mango"]));
        assert_eq!(value(tags, "title"), Some(&tag(&["Mango"])[..]));
        assert_eq!(value(tags, "price"), Some(&tag(&["500", "SATS"])[..]));
        assert_eq!(value(tags, "stock"), Some(&tag(&["3"])[..]));
        assert_eq!(
            value(tags, "summary"),
            Some(&tag(&["Ripe Kent mangoes"])[..])
        );
        assert_eq!(value(tags, "type"), Some(&tag(&["simple", "physical"])[..]));
        assert_eq!(
            value(tags, "image"),
            Some(&tag(&["https://example.com/m.jpg", "", "0"])[..])
        );
        assert_eq!(value(tags, "spec"), Some(&tag(&["origin", "Makueni"])[..]));
        let option = format!("30406:{MERCHANT}:{}", shipping_option_d("duka", "nairobi"));
        assert_eq!(
            value(tags, "shipping_option"),
            Some(&tag(&[&option, "10"])[..])
        );
        // Shopstr's single shipping cost: the zone's 100 and the product's 10.
        assert_eq!(
            value(tags, "shipping"),
            Some(&tag(&["Added Cost", "110", "SATS"])[..])
        );
        assert!(listing.content.contains("Makueni"));
        assert!(value(tags, "t").is_none());

        // Categories are `t` tags, one each, in the product's order.
        let mut sorted = mango(Some(3));
        sorted.categories = vec!["fruit".into(), "organic".into()];
        let categories: Vec<Vec<String>> = product_listing(MERCHANT, &sorted, &stall)
            .tags
            .into_iter()
            .filter(|t| t[0] == "t")
            .collect();
        assert_eq!(
            categories,
            vec![tag(&["t", "fruit"]), tag(&["t", "organic"])]
        );

        let unlimited = product_listing(MERCHANT, &mango(None), &stall);
        assert_eq!(
            value(&unlimited.tags, "stock"),
            Some(&tag(&[&UNLIMITED_STOCK.to_string()])[..])
        );
        // Two zones: no single Shopstr cost to state.
        let two = product_listing(
            MERCHANT,
            &mango(Some(1)),
            &self::stall(&[("nairobi", 100.0), ("mombasa", 300.0)]),
        );
        assert_eq!(
            two.tags
                .iter()
                .filter(|t| t[0] == "shipping_option")
                .count(),
            2
        );
        assert_eq!(value(&two.tags, "shipping"), None);
    }

    #[test]
    fn a_zone_becomes_a_shipping_option_and_orders_find_it_again() {
        let stall = stall(&[("nairobi", 100.0), ("upcountry/west", 250.5)]);
        let option = shipping_option(&stall, &stall.shipping[1]);
        let d = &option.tags[0][1];
        assert!(
            d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{d}"
        );
        assert_eq!(
            value(&option.tags, "price"),
            Some(&tag(&["250.5", "SATS"])[..])
        );
        assert_eq!(value(&option.tags, "country"), Some(&tag(&["KE"])[..]));
        assert_eq!(
            value(&option.tags, "service"),
            Some(&tag(&["standard"])[..])
        );
        assert_eq!(
            resolve_zone(&stall, d).map(|z| z.id.as_str()),
            Some("upcountry/west")
        );
        assert_eq!(resolve_zone(&stall, "nairobi").map(|z| z.cost), Some(100.0));
        assert_eq!(resolve_zone(&stall, "mombasa"), None);
        // The same zone id in another stall is another option.
        assert_ne!(
            shipping_option_d("duka", "nairobi"),
            shipping_option_d("kiosk", "nairobi")
        );
    }

    #[test]
    fn amounts_and_currencies_are_written_plainly() {
        assert_eq!(amount(500.0), "500");
        assert_eq!(amount(12.5), "12.5");
        assert_eq!(amount(0.0), "0");
        assert_eq!(amount(1e21), "1000000000000000000000");
        assert_eq!(amount(0.1 + 0.2), "0.3");
        assert_eq!(currency("sat"), "SATS");
        assert_eq!(currency("kes"), "KES");
    }
}
