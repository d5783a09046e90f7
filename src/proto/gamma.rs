//! Gamma Markets order messages (the successor of NIP-15 that Plebeian Market and Shopstr
//! build on): kind-16 rumors inside NIP-17 gift wraps whose data lives in tags
//! (`kinds/gamma.md`). Pure conversions between those tags and soko's types; a tag is a
//! `Vec<String>` here so this module needs no Nostr machinery.

use super::nip15::{clip_echo, Contact, Order, OrderItem};

/// Longest piece of a buyer's tag repeated in an explanation.
const ECHO_BYTES: usize = 80;

/// Kind of order-processing messages.
pub const KIND_ORDER: u16 = 16;
/// Kind of payment receipts (buyer → merchant); soko detects payments itself.
pub const KIND_RECEIPT: u16 = 17;
/// Kind of Gamma (NIP-99 classified) listings.
pub const KIND_LISTING: u16 = 30402;
/// Listing kinds an `item` may point at: NIP-15 products (what soko publishes) and Gamma
/// listings with the same `d` tag.
pub const ITEM_KINDS: [u16; 2] = [super::nip15::KIND_PRODUCT, KIND_LISTING];

/// The `type` tag of a kind-16 message.
pub fn message_type(tags: &[Vec<String>]) -> Option<u8> {
    value(tags, "type").and_then(|t| t.parse().ok())
}

/// The `order` tag.
pub fn order_id(tags: &[Vec<String>]) -> Option<&str> {
    value(tags, "order")
}

/// The `status` tag.
pub fn status(tags: &[Vec<String>]) -> Option<&str> {
    value(tags, "status")
}

fn value<'a>(tags: &'a [Vec<String>], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.first().map(String::as_str) == Some(name))
        .and_then(|t| t.get(1))
        .map(String::as_str)
}

/// A type-1 order as soko reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GammaOrder {
    /// The buyer's order id.
    pub id: String,
    /// The total the buyer's client computed, in sats (informative: soko prices itself).
    pub amount: Option<u64>,
    /// Product `d` tags and quantities.
    pub items: Vec<(String, u64)>,
    /// The shipping option's `d` tag (a NIP-15 zone id for soko's stalls).
    pub shipping: Option<String>,
    /// Buyer's name.
    pub name: Option<String>,
    /// Shipping address.
    pub address: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Free text from the buyer.
    pub message: Option<String>,
}

/// Reads a type-1 order addressed to `merchant` (hex). Every `item` must point at one of
/// the merchant's listings.
pub fn parse_order(
    tags: &[Vec<String>],
    content: &str,
    merchant: &str,
) -> Result<GammaOrder, String> {
    let id = order_id(tags)
        .filter(|id| !id.is_empty())
        .ok_or("the order has no `order` tag")?
        .to_owned();
    let mut items = Vec::new();
    for tag in tags
        .iter()
        .filter(|t| t.first().map(String::as_str) == Some("item"))
    {
        let reference = tag.get(1).ok_or("an `item` tag has no listing")?;
        let d = listing_d(reference, merchant, &ITEM_KINDS)?;
        let quantity = match tag.get(2) {
            None => 1,
            Some(q) => q
                .parse::<u64>()
                .map_err(|_| format!("item {d:?}: quantity {q:?} is not a whole number"))?,
        };
        items.push((d, quantity));
    }
    if items.is_empty() {
        return Err("the order has no `item` tags".to_owned());
    }
    let shipping = match value(tags, "shipping").or_else(|| value(tags, "shipping_option")) {
        None => None,
        Some(reference) => Some(listing_d(reference, merchant, &[30406])?),
    };
    let amount = match value(tags, "amount") {
        None => None,
        Some(a) => Some(a.parse::<u64>().map_err(|_| {
            format!(
                "amount {:?} is not a whole number of sats",
                clip_echo(a, ECHO_BYTES)
            )
        })?),
    };
    let text = |name| value(tags, name).map(str::to_owned);
    Ok(GammaOrder {
        id,
        amount,
        items,
        shipping,
        name: text("name"),
        address: text("address"),
        email: text("email"),
        phone: text("phone"),
        message: Some(content.trim().to_owned()).filter(|c| !c.is_empty()),
    })
}

/// The `d` tag of a `<kind>:<pubkey>:<d>` reference to one of `merchant`'s listings.
fn listing_d(full: &str, merchant: &str, kinds: &[u16]) -> Result<String, String> {
    let reference = clip_echo(full, ECHO_BYTES);
    let mut parts = full.splitn(3, ':');
    let (Some(kind), Some(pubkey), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "{reference:?} is not a <kind>:<pubkey>:<d> reference"
        ));
    };
    if !kind.parse::<u16>().is_ok_and(|k| kinds.contains(&k)) {
        return Err(format!(
            "{reference:?} does not point at a listing kind soko sells"
        ));
    }
    if !pubkey.eq_ignore_ascii_case(merchant) {
        return Err(format!("{reference:?} is another merchant's listing"));
    }
    Ok(d.to_owned())
}

impl GammaOrder {
    /// The same order as a NIP-15 type-0 order, which is what soko's escrow takes.
    /// `zone` is the shipping zone to use when the order named none.
    pub fn to_nip15(&self, buyer_npub: &str, zone: Option<&str>) -> Order {
        Order {
            id: self.id.clone(),
            kind: 0,
            name: self.name.clone(),
            address: self.address.clone(),
            message: self.message.clone(),
            contact: Contact {
                nostr: Some(buyer_npub.to_owned()),
                phone: self.phone.clone(),
                email: self.email.clone(),
            },
            items: self
                .items
                .iter()
                .map(|(d, quantity)| OrderItem {
                    product_id: d.clone(),
                    quantity: i64::try_from(*quantity).unwrap_or(i64::MAX),
                })
                .collect(),
            shipping_id: self
                .shipping
                .clone()
                .or_else(|| zone.map(str::to_owned))
                .unwrap_or_default(),
        }
    }
}

/// Order statuses of type-3 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for payment.
    Pending,
    /// Paid.
    Confirmed,
    /// Being handled (soko: under review, or being refunded).
    Processing,
    /// Delivered and settled.
    Completed,
    /// Refused, expired or refunded.
    Cancelled,
}

impl Status {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A type-2 payment request's tags (merchant → `buyer`, hex).
pub fn payment_request_tags(
    buyer: &str,
    order: &str,
    amount_sats: u64,
    bolt11: &str,
    expires_at: u64,
) -> Vec<Vec<String>> {
    vec![
        tag(&["p", buyer]),
        tag(&["subject", "order-payment"]),
        tag(&["type", "2"]),
        tag(&["order", order]),
        tag(&["amount", &amount_sats.to_string()]),
        tag(&["payment", "lightning", bolt11]),
        tag(&["expiration", &expires_at.to_string()]),
    ]
}

/// A type-3 status update's tags (merchant → `buyer`, hex).
pub fn status_tags(buyer: &str, order: &str, status: Status) -> Vec<Vec<String>> {
    vec![
        tag(&["p", buyer]),
        tag(&["subject", "order-info"]),
        tag(&["type", "3"]),
        tag(&["order", order]),
        tag(&["status", status.as_str()]),
    ]
}

/// A kind-14 message's tags about an order (merchant → `buyer`, hex).
pub fn chat_tags(buyer: &str, order: &str) -> Vec<Vec<String>> {
    vec![tag(&["p", buyer]), tag(&["subject", order])]
}

fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERCHANT: &str = "f916d184100631c6e9096a22bcffcbf991f14e5952e4f36b87a7ee41e9b80b32";

    fn tags(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter().map(|t| tag(t)).collect()
    }

    #[test]
    fn a_plebeian_style_order_reads_and_becomes_nip15() {
        let item = format!("{KIND_LISTING}:{MERCHANT}:mango");
        let shipping = format!("30406:{MERCHANT}:nairobi");
        let order = parse_order(
            &tags(&[
                &["p", MERCHANT],
                &["subject", "order-info"],
                &["type", "1"],
                &["order", "9f1c"],
                &["amount", "1120"],
                &["item", &item, "2"],
                &["shipping", &shipping],
                &["name", "Amina"],
                &["address", "Moi Avenue 12\nNairobi"],
            ]),
            " leave it at the gate ",
            MERCHANT,
        );
        let order = order.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(order.items, vec![("mango".to_owned(), 2)]);
        assert_eq!(order.shipping.as_deref(), Some("nairobi"));
        assert_eq!(order.amount, Some(1120));
        let nip15 = order.to_nip15("npub1buyer", None);
        assert_eq!((nip15.kind, nip15.shipping_id.as_str()), (0, "nairobi"));
        assert_eq!(nip15.items[0].quantity, 2);
        assert_eq!(nip15.message.as_deref(), Some("leave it at the gate"));
    }

    #[test]
    fn bad_orders_say_what_is_wrong() {
        let mine = format!("{}:{MERCHANT}:mango", super::super::nip15::KIND_PRODUCT);
        let theirs = format!("{KIND_LISTING}:{}:mango", "ab".repeat(32));
        let cases: [(Vec<Vec<String>>, &str); 6] = [
            (tags(&[&["type", "1"], &["item", &mine]]), "no `order` tag"),
            (tags(&[&["order", "o"]]), "no `item` tags"),
            (
                tags(&[&["order", "o"], &["item", &theirs]]),
                "another merchant",
            ),
            (tags(&[&["order", "o"], &["item", "mango"]]), "not a <kind>"),
            (
                tags(&[&["order", "o"], &["item", &mine, "-1"]]),
                "whole number",
            ),
            (
                tags(&[&["order", "o"], &["item", &mine], &["amount", "1.5"]]),
                "whole number of sats",
            ),
        ];
        for (tags, expected) in cases {
            let err = parse_order(&tags, "", MERCHANT).err().unwrap_or_default();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
        }
    }

    #[test]
    fn replies_carry_the_tags_clients_read() {
        let request = payment_request_tags("b", "o", 610, "lnbc1", 99);
        assert!(request.contains(&tag(&["type", "2"])));
        assert!(request.contains(&tag(&["payment", "lightning", "lnbc1"])));
        assert!(request.contains(&tag(&["amount", "610"])));
        let status = status_tags("b", "o", Status::Confirmed);
        assert_eq!(message_type(&status), Some(3));
        assert_eq!(super::status(&status), Some("confirmed"));
        assert_eq!(order_id(&status), Some("o"));
    }
}
