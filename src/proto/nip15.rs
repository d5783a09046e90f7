//! NIP-15 marketplace content, as its clients send it (`kinds/orders.md`).
//!
//! Own types rather than `nostr::nips::nip15`: real clients send `product_id` in order items,
//! a `message` in status updates and `null` stock for unlimited products, which those types
//! do not accept. Prices arrive as JSON numbers; [`crate::market::pricing`] turns them into
//! integers at once and never computes with floats.

use serde::{Deserialize, Serialize};

/// Kind 30017 content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    /// Stall id (also its `d` tag).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Currency of every price in the stall: `sat` or an ISO 4217 code.
    pub currency: String,
    /// Shipping zones.
    #[serde(default)]
    pub shipping: Vec<ShippingZone>,
}

/// A stall's shipping zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippingZone {
    /// Zone id, chosen by the buyer as `shipping_id`.
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Base cost for an order shipped to this zone.
    pub cost: f64,
    /// Regions covered.
    #[serde(default)]
    pub regions: Vec<String>,
}

/// Kind 30018 content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Product id (also its `d` tag).
    pub id: String,
    /// The stall it belongs to.
    pub stall_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Image URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Currency (must equal the stall's).
    pub currency: String,
    /// Unit price.
    pub price: f64,
    /// Units in stock; `null` means unlimited.
    #[serde(default)]
    pub quantity: Option<u64>,
    /// Key/value specs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<Vec<String>>,
    /// Extra shipping cost per unit, by zone id.
    #[serde(default)]
    pub shipping: Vec<ShippingExtra>,
}

/// A product's extra shipping cost for one zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippingExtra {
    /// Zone id.
    pub id: String,
    /// Extra cost per unit.
    pub cost: f64,
}

/// Type 0: the buyer's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Buyer-chosen order id.
    pub id: String,
    /// Always 0.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Buyer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Shipping address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Note to the merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How to reach the buyer.
    #[serde(default)]
    pub contact: Contact,
    /// What is ordered.
    pub items: Vec<OrderItem>,
    /// The chosen shipping zone.
    pub shipping_id: String,
}

/// Buyer contact details (personal data: never logged).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Contact {
    /// Buyer's npub or hex key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nostr: Option<String>,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// One line of an order. `quantity` is signed so that a negative one is explained, not
/// rejected as unreadable JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    /// Product id.
    pub product_id: String,
    /// Units wanted.
    pub quantity: i64,
}

/// Type 1: soko's payment request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// The order id.
    pub id: String,
    /// Always 1.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Human summary (total, expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ways to pay; soko offers one Lightning invoice.
    pub payment_options: Vec<PaymentOption>,
}

/// A way to pay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentOption {
    /// `ln` for a BOLT11 invoice.
    #[serde(rename = "type")]
    pub kind: String,
    /// The invoice.
    pub link: String,
}

/// Type 2: order status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderStatus {
    /// The order id.
    pub id: String,
    /// Always 2.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Human explanation, including why an order was refused.
    pub message: String,
    /// Payment received.
    pub paid: bool,
    /// Delivered (soko sets it when the merchant presented the delivery code).
    pub shipped: bool,
}

/// What the buyer gave for shipping in the NIP-15 order. Personal data: stored sealed,
/// shown only to the order's merchant, never logged.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipping {
    /// The buyer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where to deliver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The buyer's phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The buyer's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The buyer's note to the merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The stall's shipping zone the buyer chose.
    #[serde(default)]
    pub zone: String,
}

impl std::fmt::Debug for Shipping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shipping(..)")
    }
}

impl Shipping {
    /// The shipping details of an order.
    pub fn of(order: &Order) -> Self {
        let given = |v: &Option<String>| v.as_ref().filter(|s| !s.trim().is_empty()).cloned();
        Self {
            name: given(&order.name),
            address: given(&order.address),
            phone: given(&order.contact.phone),
            email: given(&order.contact.email),
            message: given(&order.message),
            zone: order.shipping_id.clone(),
        }
    }
}
