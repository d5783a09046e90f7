//! Shopstr's pay-first checkout (`kinds/gamma.md`, "Shopstr checkout"): the buyer's client
//! sends the merchant kind-14 rumors in NIP-17 gift wraps, their data in tags, and pays in
//! the same message with a Cashu token (`["payment","ecash",<token>]`). Its seal may be
//! signed by a throwaway key, the buyer's own key named in `b`. Pure conversions between
//! those tags and soko's types, as in [`super::gamma`].

use super::gamma::ITEM_KINDS;
use super::nip15::{clip_echo, Contact, Order, OrderItem};

/// The `subject` of the message that carries an order and its payment.
pub const SUBJECT_PAYMENT: &str = "order-payment";
/// The `subject` soko answers in: Shopstr's reader keeps only `listing-inquiry`,
/// `order-payment`, `order-info`, `payment-change`, `order-receipt`, `shipping-info` and
/// `zapsnag-order` messages, and its orders view reads the `status` of `order-info` ones.
pub const SUBJECT_INFO: &str = "order-info";
/// The `subject` of a message returning ecash (change, a refused payment): Shopstr shows a
/// claim button on any message of its reader with a token in its text.
pub const SUBJECT_CHANGE: &str = "payment-change";

/// Longest piece of a buyer's tag repeated in an explanation.
const ECHO_BYTES: usize = 80;
/// Longest text of the buyer's kept with the order (well under the order's own limit).
const MESSAGE_BYTES: usize = 1024;

/// Order statuses, spelled and ranked as Shopstr's orders view reads them (it keeps the
/// highest: `canceled` 5, `completed` 4, `shipped` 3, `confirmed` 2, `pending` 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not paid.
    Pending,
    /// Paid, held by soko.
    Confirmed,
    /// Delivered and settled.
    Completed,
    /// Refused or refunded.
    Canceled,
}

impl Status {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
        }
    }
}

/// What a Shopstr kind-14 message to a merchant is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// An order paid with a Cashu token.
    EcashOrder(EcashOrder),
    /// An order paid some other way (the merchant's Lightning address): soko's escrow never
    /// sees that money.
    OtherPayment(String),
    /// Order traffic soko does not act on (`order-info`, `order-receipt`, …).
    Info,
}

/// A pay-first order as soko reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcashOrder {
    /// The buyer's order id (a UUID in Shopstr).
    pub id: String,
    /// The buyer's own key (`b`), hex, when the message named a valid one.
    pub buyer: Option<String>,
    /// The product's `d` tag and the quantity.
    pub item: (String, u64),
    /// What the buyer's client wrote as the amount, in the listing's currency (informative).
    pub amount: Option<String>,
    /// Shipping address.
    pub address: Option<String>,
    /// Pickup location.
    pub pickup: Option<String>,
    /// The Cashu token.
    pub token: String,
    /// The message's text.
    pub message: Option<String>,
}

/// Reads a kind-14 rumor to `merchant` (hex): `None` when it is not Shopstr order traffic
/// (no `order` tag, or a subject Shopstr does not use for orders).
pub fn read(
    tags: &[Vec<String>],
    content: &str,
    merchant: &str,
) -> Option<Result<Message, String>> {
    let subject = value(tags, "subject")?;
    if !matches!(
        subject,
        SUBJECT_PAYMENT | SUBJECT_INFO | "order-receipt" | SUBJECT_CHANGE
    ) {
        return None;
    }
    let id = value(tags, "order").filter(|id| !id.is_empty())?.to_owned();
    if subject != SUBJECT_PAYMENT {
        return Some(Ok(Message::Info));
    }
    let payment = tags
        .iter()
        .find(|t| t.first().map(String::as_str) == Some("payment"));
    let Some(payment) = payment else {
        return Some(Err("the payment message has no `payment` tag".to_owned()));
    };
    let method = payment.get(1).map(String::as_str).unwrap_or_default();
    if method != "ecash" {
        return Some(Ok(Message::OtherPayment(clip_echo(method, ECHO_BYTES))));
    }
    // Shopstr's own reader takes the proof slot first, then the reference.
    let token = payment
        .get(3)
        .or_else(|| payment.get(2))
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Some(Err("the `payment` tag carries no token".to_owned()));
    };
    Some(order(tags, content, merchant, id, token.clone()).map(Message::EcashOrder))
}

fn order(
    tags: &[Vec<String>],
    content: &str,
    merchant: &str,
    id: String,
    token: String,
) -> Result<EcashOrder, String> {
    let mut items = tags
        .iter()
        .filter(|t| t.first().map(String::as_str) == Some("item"));
    let item = items.next().ok_or("the order has no `item` tag")?;
    if items.next().is_some() {
        return Err("a Shopstr payment pays for one `item`; this one names several".to_owned());
    }
    let reference = item.get(1).ok_or("the `item` tag has no listing")?;
    let d = listing_d(reference, merchant)?;
    let quantity = match item.get(2) {
        None => 1,
        Some(q) => q
            .parse::<u64>()
            .ok()
            .filter(|q| *q > 0)
            .ok_or_else(|| format!("quantity {:?} is not a whole number", clip_echo(q, 20)))?,
    };
    // `b` is only where to answer: a wrong one costs its sender the answers, not money.
    let buyer = value(tags, "b")
        .filter(|b| b.len() == 64 && b.bytes().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase);
    let text = |name| value(tags, name).map(str::to_owned);
    Ok(EcashOrder {
        id,
        buyer,
        item: (d, quantity),
        amount: text("amount"),
        address: text("address"),
        pickup: text("pickup"),
        // Shopstr's text repeats the token (kilobytes with its DLEQ proofs): kept without it,
        // and cut, as a note for the merchant.
        message: Some(clip_echo(content.replace(&token, "").trim(), MESSAGE_BYTES))
            .filter(|c| !c.is_empty()),
        token,
    })
}

/// The `d` tag of a `<kind>:<pubkey>:<d>` reference to one of `merchant`'s listings.
fn listing_d(full: &str, merchant: &str) -> Result<String, String> {
    let reference = clip_echo(full, ECHO_BYTES);
    let mut parts = full.splitn(3, ':');
    let (Some(kind), Some(pubkey), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "{reference:?} is not a <kind>:<pubkey>:<d> reference"
        ));
    };
    if !kind.parse::<u16>().is_ok_and(|k| ITEM_KINDS.contains(&k)) {
        return Err(format!(
            "{reference:?} does not point at a listing kind soko sells"
        ));
    }
    if !pubkey.eq_ignore_ascii_case(merchant) {
        return Err(format!("{reference:?} is another merchant's listing"));
    }
    Ok(d.to_owned())
}

fn value<'a>(tags: &'a [Vec<String>], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.first().map(String::as_str) == Some(name))
        .and_then(|t| t.get(1))
        .map(String::as_str)
}

impl EcashOrder {
    /// The same order as a NIP-15 type-0 order, which is what soko's escrow prices.
    /// `zone` is the stall's shipping zone (Shopstr names none).
    pub fn to_nip15(&self, buyer_npub: &str, zone: Option<&str>) -> Order {
        let (d, quantity) = &self.item;
        let message = match (&self.pickup, &self.message) {
            (Some(pickup), Some(text)) => Some(format!("Pickup: {pickup}\n{text}")),
            (Some(pickup), None) => Some(format!("Pickup: {pickup}")),
            (None, text) => text.clone(),
        };
        Order {
            id: self.id.clone(),
            kind: 0,
            name: None,
            address: self.address.clone(),
            message,
            contact: Contact {
                nostr: Some(buyer_npub.to_owned()),
                phone: None,
                email: None,
            },
            items: vec![OrderItem {
                product_id: d.clone(),
                quantity: i64::try_from(*quantity).unwrap_or(i64::MAX),
            }],
            shipping_id: zone.unwrap_or_default().to_owned(),
        }
    }
}

/// The tags of a message about an order (merchant → `buyer`, hex), with its status when
/// it reports one.
pub fn info_tags(buyer: &str, order: &str, status: Option<Status>) -> Vec<Vec<String>> {
    let mut tags = vec![
        tag(&["p", buyer]),
        tag(&["subject", SUBJECT_INFO]),
        tag(&["order", order]),
    ];
    if let Some(status) = status {
        tags.push(tag(&["status", status.as_str()]));
    }
    tags
}

/// The tags of a message giving ecash back (merchant → `buyer`, hex).
pub fn change_tags(buyer: &str, order: &str, token: &str) -> Vec<Vec<String>> {
    vec![
        tag(&["p", buyer]),
        tag(&["subject", SUBJECT_CHANGE]),
        tag(&["order", order]),
        tag(&["payment", "ecash", token]),
    ]
}

fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERCHANT: &str = "f916d184100631c6e9096a22bcffcbf991f14e5952e4f36b87a7ee41e9b80b32";
    const BUYER: &str = "a37118a4888e02d28e8767c08caaf73b49abdac391ad7ff18a304891e416dc33";

    fn tags(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter().map(|t| tag(t)).collect()
    }

    fn shopstr(extra: &[&[&str]]) -> Vec<Vec<String>> {
        let item = format!("30402:{MERCHANT}:mango");
        let mut all = tags(&[
            &["p", MERCHANT, "wss://relay.example"],
            &["subject", "order-payment"],
            &["order", "5d7c"],
            &["b", BUYER],
            &["amount", "12.5"],
            &["payment", "ecash", "cashuBtoken"],
            &["address", "Amina, Moi Avenue 12, Nairobi"],
            &["item", &item, "2"],
        ]);
        all.extend(tags(extra));
        all
    }

    #[test]
    fn a_shopstr_ecash_payment_reads_as_an_order() {
        let Some(Ok(Message::EcashOrder(order))) =
            read(&shopstr(&[]), " thanks cashuBtoken ", MERCHANT)
        else {
            panic!("an ecash order");
        };
        assert_eq!(order.buyer.as_deref(), Some(BUYER));
        assert_eq!(order.item, ("mango".to_owned(), 2));
        assert_eq!(order.token, "cashuBtoken");
        // A fiat amount is kept as written, never parsed as sats.
        assert_eq!(order.amount.as_deref(), Some("12.5"));
        let nip15 = order.to_nip15("npub1buyer", Some("nairobi"));
        assert_eq!(nip15.shipping_id, "nairobi");
        assert_eq!(nip15.items[0].quantity, 2);
        assert_eq!(nip15.message.as_deref(), Some("thanks"));
    }

    #[test]
    fn other_traffic_is_told_apart() {
        let lightning = tags(&[
            &["subject", "order-payment"],
            &["order", "o"],
            &["payment", "lightning", "mama@example.com"],
        ]);
        assert_eq!(
            read(&lightning, "", MERCHANT),
            Some(Ok(Message::OtherPayment("lightning".to_owned())))
        );
        let info = tags(&[&["subject", "order-info"], &["order", "o"]]);
        assert_eq!(read(&info, "", MERCHANT), Some(Ok(Message::Info)));
        // Not order traffic at all: the command path answers it.
        assert_eq!(
            read(&tags(&[&["subject", "listing-inquiry"]]), "", MERCHANT),
            None
        );
        assert_eq!(
            read(&tags(&[&["subject", "order-payment"]]), "", MERCHANT),
            None
        );
        assert_eq!(read(&[], "{\"v\":1}", MERCHANT), None);
    }

    #[test]
    fn bad_orders_say_what_is_wrong() {
        let theirs = format!("30402:{BUYER}:mango");
        let cases: [(Vec<Vec<String>>, &str); 4] = [
            (
                tags(&[&["subject", "order-payment"], &["order", "o"]]),
                "no `payment` tag",
            ),
            (
                tags(&[
                    &["subject", "order-payment"],
                    &["order", "o"],
                    &["payment", "ecash", "cashuB"],
                ]),
                "no `item` tag",
            ),
            (
                tags(&[
                    &["subject", "order-payment"],
                    &["order", "o"],
                    &["payment", "ecash", "cashuB"],
                    &["item", &theirs],
                ]),
                "another merchant",
            ),
            (
                tags(&[
                    &["subject", "order-payment"],
                    &["order", "o"],
                    &["payment", "ecash"],
                ]),
                "no token",
            ),
        ];
        for (tags, expected) in cases {
            let err = match read(&tags, "", MERCHANT) {
                Some(Err(e)) => e,
                other => panic!("{other:?}"),
            };
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
        }
    }

    #[test]
    fn a_bad_b_tag_is_left_out() {
        let Some(Ok(Message::EcashOrder(order))) = read(
            &shopstr(&[])
                .into_iter()
                .filter(|t| t[0] != "b")
                .chain([tag(&["b", "npub1x"])])
                .collect::<Vec<_>>(),
            "",
            MERCHANT,
        ) else {
            panic!("an ecash order");
        };
        assert_eq!(order.buyer, None);
    }

    #[test]
    fn replies_carry_what_shopstr_reads() {
        let info = info_tags(BUYER, "5d7c", Some(Status::Canceled));
        assert!(info.contains(&tag(&["subject", "order-info"])));
        assert!(info.contains(&tag(&["status", "canceled"])));
        let change = change_tags(BUYER, "5d7c", "cashuB1");
        assert!(change.contains(&tag(&["payment", "ecash", "cashuB1"])));
    }
}
