//! What the catalog keeps of a stall or product event (its card), and the limits that make
//! an event unusable rather than kept.

use nostr_sdk::{Event, Kind};
use serde::{Deserialize, Serialize};

use crate::market::merchants::known_currency;
use crate::market::pricing::{decimals, to_minor};
use crate::proto::catalog::{ProductCard, StallCard, ZoneCost};
use crate::proto::nip15::{Product, Stall};

/// Longest id (listing, stall, zone) kept, as soko's own listings allow.
const MAX_ID_BYTES: usize = 64;
/// Names are cut to this many characters: enough to browse, bounded to keep entries small.
const MAX_NAME_CHARS: usize = 128;
/// More zones than this is not a real stall.
const MAX_ZONES: usize = 32;
/// Categories kept per product, and their longest length.
const MAX_CATEGORIES: usize = 16;
const MAX_CATEGORY_CHARS: usize = 64;

/// What the catalog keeps of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Card {
    /// A stall.
    Stall(StallCard),
    /// A product.
    Product(ProductCard),
}

/// The `d` tag and the compact card of a stall or product event, or why it is unusable.
pub(super) fn read_listing(event: &Event) -> Result<(String, Card), String> {
    let d = event
        .tags
        .identifier()
        .ok_or_else(|| "no d tag".to_owned())?
        .to_owned();
    let (id, card) = if event.kind == Kind::SetStall {
        let stall: Stall =
            serde_json::from_str(&event.content).map_err(|e| format!("not a NIP-15 stall: {e}"))?;
        (stall.id.clone(), Card::Stall(stall_card(stall)?))
    } else {
        let product: Product = serde_json::from_str(&event.content)
            .map_err(|e| format!("not a NIP-15 product: {e}"))?;
        let categories = categories(event.tags.hashtags());
        (
            product.id.clone(),
            Card::Product(product_card(product, categories)?),
        )
    };
    if id != d {
        return Err(format!("d tag {d:?} differs from the content's id {id:?}"));
    }
    Ok((d, card))
}

fn stall_card(stall: Stall) -> Result<StallCard, String> {
    check_id("stall", &stall.id)?;
    check_currency(&stall.currency)?;
    if stall.shipping.len() > MAX_ZONES {
        return Err(format!("more than {MAX_ZONES} shipping zones"));
    }
    let places = decimals(&stall.currency);
    let shipping = stall
        .shipping
        .into_iter()
        .map(|zone| {
            check_id("shipping zone", &zone.id)?;
            let cost = to_minor(zone.cost, places)
                .ok_or_else(|| format!("shipping zone {:?} has an invalid cost", zone.id))?;
            Ok(ZoneCost { id: zone.id, cost })
        })
        .collect::<Result<_, String>>()?;
    Ok(StallCard {
        name: name(&stall.name)?,
        id: stall.id,
        currency: stall.currency,
        shipping,
    })
}

fn product_card(product: Product, categories: Vec<String>) -> Result<ProductCard, String> {
    check_id("product", &product.id)?;
    check_id("stall", &product.stall_id)?;
    check_currency(&product.currency)?;
    let price = to_minor(product.price, decimals(&product.currency))
        .ok_or_else(|| "invalid price".to_owned())?;
    Ok(ProductCard {
        name: name(&product.name)?,
        id: product.id,
        stall_id: product.stall_id,
        price,
        currency: product.currency,
        quantity: product.quantity,
        categories,
    })
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!("{what} id must be 1 to {MAX_ID_BYTES} bytes"));
    }
    Ok(())
}

fn check_currency(currency: &str) -> Result<(), String> {
    if known_currency(currency) {
        Ok(())
    } else {
        Err(format!(
            "currency {currency:?} is neither \"sat\" nor a three-letter code"
        ))
    }
}

fn name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("no name".to_owned());
    }
    Ok(name.chars().take(MAX_NAME_CHARS).collect())
}

fn categories<'a>(tags: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for tag in tags {
        let tag = tag.trim();
        if tag.is_empty()
            || tag.chars().count() > MAX_CATEGORY_CHARS
            || kept.iter().any(|k| k == tag)
        {
            continue;
        }
        kept.push(tag.to_owned());
        if kept.len() == MAX_CATEGORIES {
            break;
        }
    }
    kept
}
