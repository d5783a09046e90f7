//! The `catalog` command's result: the NIP-15 stalls and products soko has seen on its
//! relays, from any merchant, reduced to what a buyer needs to browse (`kinds/commands.md`).
//!
//! Prices and costs are integers in the currency's minor unit: sats for `sat`, cents for a
//! fiat code.

use serde::{Deserialize, Serialize};

/// A stall's shipping zone and its base cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneCost {
    /// Zone id (an order's `shipping_id`).
    pub id: String,
    /// Base cost in minor units.
    pub cost: u64,
}

/// What the catalog keeps of a stall (kind 30017).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallCard {
    /// Stall id (its `d` tag).
    pub id: String,
    /// Display name.
    pub name: String,
    /// `sat` or an ISO 4217 code.
    pub currency: String,
    /// Shipping zones.
    pub shipping: Vec<ZoneCost>,
}

/// What the catalog keeps of a product (kind 30018).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCard {
    /// Product id (its `d` tag).
    pub id: String,
    /// The stall it belongs to.
    pub stall_id: String,
    /// Display name.
    pub name: String,
    /// Unit price in minor units.
    pub price: u64,
    /// `sat` or an ISO 4217 code.
    pub currency: String,
    /// Units in stock; `null` means unlimited.
    pub quantity: Option<u64>,
    /// The event's `t` tags.
    pub categories: Vec<String>,
}

/// Where an indexed listing comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The merchant's public key (hex): the event's author.
    pub merchant: String,
    /// The event's `created_at`.
    pub created_at: u64,
    /// The event's id (hex).
    pub event_id: String,
}

/// A stall in a `catalog` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogStall {
    /// Its source.
    #[serde(flatten)]
    pub origin: Origin,
    /// The stall.
    #[serde(flatten)]
    pub stall: StallCard,
}

/// A product in a `catalog` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogProduct {
    /// Its source.
    #[serde(flatten)]
    pub origin: Origin,
    /// The product.
    #[serde(flatten)]
    pub product: ProductCard,
}

/// `catalog`'s result, newest first in each list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CatalogResult {
    /// Stalls.
    pub stalls: Vec<CatalogStall>,
    /// Products.
    pub products: Vec<CatalogProduct>,
}
