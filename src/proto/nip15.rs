//! NIP-15 marketplace content, as its clients send it (`kinds/orders.md`).
//!
//! Own types rather than `nostr::nips::nip15`: real clients send `product_id` in order items,
//! a `message` in status updates and `null` stock for unlimited products, which those types
//! do not accept. Prices arrive as JSON numbers; [`crate::market::pricing`] turns them into
//! integers at once and never computes with floats.

use nostr_sdk::Kind;
use serde::{Deserialize, Serialize};

/// Kind of a NIP-15 stall (`Kind::SetStall`), as a number for storage keys and wire types.
pub const KIND_STALL: u16 = 30017;
/// Kind of a NIP-15 product (`Kind::SetProduct`), as a number for storage keys and wire types.
pub const KIND_PRODUCT: u16 = 30018;
/// NIP-15 stall and product kinds.
pub const LISTING_KINDS: [Kind; 2] = [Kind::SetStall, Kind::SetProduct];

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
    /// Categories: not part of NIP-15 content but its `t` tags. soko keeps them in the
    /// stored record (absent in records from before they existed) and writes them as `t`
    /// tags on the 30018 and the Gamma 30402, never into the content
    /// ([`Product::content`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
}

impl Product {
    /// The kind-30018 content: the product without its categories (those are `t` tags).
    pub fn content(&self) -> serde_json::Result<String> {
        let mut value = serde_json::to_value(self)?;
        if let Some(fields) = value.as_object_mut() {
            fields.remove("categories");
        }
        serde_json::to_string(&value)
    }
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

/// Longest buyer order id soko takes, in bytes. Ids are stored, indexed and repeated in
/// every message about the order (twice in the delivery code's), so they must stay small;
/// clients use UUIDs or shorter.
pub const MAX_ORDER_ID_BYTES: usize = 128;
/// Longest product id or shipping zone id in an order, in bytes.
pub const MAX_REF_BYTES: usize = 128;
/// Longest buyer name, phone, email or Nostr contact, in bytes.
pub const MAX_CONTACT_BYTES: usize = 256;
/// Longest shipping address, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 1024;
/// Longest note to the merchant, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// Most lines in one order.
pub const MAX_ORDER_ITEMS: usize = 50;

/// A buyer-supplied order field beyond soko's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Oversize {
    /// A text field is longer than its limit.
    #[error("the {field} is too long ({len} bytes; at most {max})")]
    Field {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many order lines.
    #[error("the order has {0} items; at most {MAX_ORDER_ITEMS}")]
    Items(usize),
}

impl Order {
    /// Checks every buyer-supplied field against soko's limits, before anything is stored
    /// or echoed.
    pub fn check_bounds(&self) -> Result<(), Oversize> {
        fn check(field: &'static str, value: Option<&str>, max: usize) -> Result<(), Oversize> {
            match value {
                Some(v) if v.len() > max => Err(Oversize::Field {
                    field,
                    len: v.len(),
                    max,
                }),
                _ => Ok(()),
            }
        }
        if self.items.len() > MAX_ORDER_ITEMS {
            return Err(Oversize::Items(self.items.len()));
        }
        check("order id", Some(&self.id), MAX_ORDER_ID_BYTES)?;
        check("shipping id", Some(&self.shipping_id), MAX_REF_BYTES)?;
        check("name", self.name.as_deref(), MAX_CONTACT_BYTES)?;
        check("address", self.address.as_deref(), MAX_ADDRESS_BYTES)?;
        check("message", self.message.as_deref(), MAX_MESSAGE_BYTES)?;
        check(
            "nostr contact",
            self.contact.nostr.as_deref(),
            MAX_CONTACT_BYTES,
        )?;
        check("phone", self.contact.phone.as_deref(), MAX_CONTACT_BYTES)?;
        check("email", self.contact.email.as_deref(), MAX_CONTACT_BYTES)?;
        for item in &self.items {
            check("product id", Some(&item.product_id), MAX_REF_BYTES)?;
        }
        Ok(())
    }
}

/// At most `max` bytes of `text`, cut on a character boundary, with `…` when cut: for
/// echoing a buyer-supplied value that may be oversized.
pub fn clip_echo(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    fn order() -> Order {
        Order {
            id: "o-1".into(),
            kind: 0,
            name: Some("Amina".into()),
            address: None,
            message: None,
            contact: Contact::default(),
            items: vec![OrderItem {
                product_id: "mango".into(),
                quantity: 1,
            }],
            shipping_id: "nairobi".into(),
        }
    }

    #[test]
    fn every_field_has_a_bound() {
        assert_eq!(order().check_bounds(), Ok(()));
        fn long(n: usize) -> String {
            "é".repeat(n)
        }
        type Spoil = Box<dyn Fn(&mut Order)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|o| o.id = long(65)), "order id"),
            (Box::new(|o| o.shipping_id = long(65)), "shipping id"),
            (Box::new(|o| o.name = Some(long(129))), "name"),
            (Box::new(|o| o.address = Some(long(513))), "address"),
            (Box::new(|o| o.message = Some(long(1025))), "message"),
            (Box::new(|o| o.contact.phone = Some(long(129))), "phone"),
            (Box::new(|o| o.contact.email = Some(long(129))), "email"),
            (
                Box::new(|o| o.contact.nostr = Some(long(129))),
                "nostr contact",
            ),
            (Box::new(|o| o.items[0].product_id = long(65)), "product id"),
        ];
        for (spoil, field) in cases {
            let mut o = order();
            spoil(&mut o);
            let err = o
                .check_bounds()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(field), "{err:?} names {field}");
        }
        let mut many = order();
        many.items = vec![many.items[0].clone(); MAX_ORDER_ITEMS + 1];
        assert_eq!(
            many.check_bounds(),
            Err(Oversize::Items(MAX_ORDER_ITEMS + 1))
        );
    }

    #[test]
    fn kind_numbers_are_rust_nostrs() {
        assert_eq!(KIND_STALL, Kind::SetStall.as_u16());
        assert_eq!(KIND_PRODUCT, Kind::SetProduct.as_u16());
        assert_eq!(
            LISTING_KINDS,
            [Kind::from(KIND_STALL), Kind::from(KIND_PRODUCT)]
        );
    }

    #[test]
    fn echoes_are_clipped_on_a_character_boundary() {
        assert_eq!(clip_echo("short", 10), "short");
        let clipped = clip_echo(&"é".repeat(100), 11);
        assert!(clipped.len() <= 11 && clipped.ends_with('…'), "{clipped}");
    }
}

#[cfg(test)]
mod product_tests {
    use super::*;

    #[test]
    fn categories_are_kept_in_the_record_but_not_in_the_content(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // A record stored before categories existed still loads, with none.
        let old = r#"{"id":"mango","stall_id":"duka","name":"Mango","currency":"sat","price":500,"quantity":3,"shipping":[]}"#;
        let mut product: Product = serde_json::from_str(old)?;
        assert!(product.categories.is_empty());
        assert!(!serde_json::to_string(&product)?.contains("categories"));
        product.categories = vec!["fruit".into()];
        let stored = serde_json::to_string(&product)?;
        let back: Product = serde_json::from_str(&stored)?;
        assert_eq!(back.categories, vec!["fruit".to_owned()]);
        let content: serde_json::Value = serde_json::from_str(&product.content()?)?;
        assert!(content.get("categories").is_none());
        assert_eq!(content["id"], "mango");
        Ok(())
    }
}
