//! A Shopstr buyer's pay-first order, as Shopstr's `cart-invoice-card.tsx` sends it, and
//! the parts of soko's answers Shopstr reads.

use nostr_sdk::prelude::*;

use super::{Received, TestSoko, User};

/// The Shopstr buyer: its own key (where answers must arrive) and a fresh throwaway key
/// per message, as Shopstr makes one for each order's messages.
pub async fn shopstr_pays(
    buyer: &User,
    merchant: PublicKey,
    order_id: &str,
    quantity: u64,
    token: &str,
) -> Keys {
    let throwaway = Keys::generate();
    let item = format!("30402:{}:mango", merchant.to_hex());
    let tags: Vec<Vec<String>> = [
        vec!["p", &merchant.to_hex(), "ws://127.0.0.1:1"],
        vec!["subject", "order-payment"],
        vec!["order", order_id],
        vec!["b", &buyer.pubkey().to_hex()],
        // Shopstr writes the amount in the listing's currency: informative only.
        vec!["amount", "12.5"],
        vec!["payment", "ecash", token],
        vec!["address", "Amina, Moi Avenue 12, Nairobi, KE"],
        vec!["item", &item, &quantity.to_string()],
    ]
    .iter()
    .map(|t| t.iter().map(|s| (*s).to_owned()).collect())
    .collect();
    let content = format!(
        "This is a Cashu token payment from {} for Mango: {token}",
        buyer.pubkey().to_bech32().expect("npub")
    );
    let wrap = soko::outbound::wrap_tagged(&throwaway, merchant, 14, &tags, &content)
        .await
        .expect("wrapped");
    let out = buyer.publish(&wrap).await;
    assert!(!out.success.is_empty(), "wrap accepted: {:?}", out.failed);
    throwaway
}

/// The `status` and content of a Shopstr `order-info` answer, asserting what Shopstr reads.
pub fn order_info<'a>(dm: &'a Received, order_id: &str) -> (Option<&'a str>, &'a str) {
    assert!(dm.nip17, "a gift wrap");
    assert_eq!(dm.kind, Kind::PrivateDirectMessage, "{dm:?}");
    assert_eq!(dm.tag("subject"), Some("order-info"), "{dm:?}");
    assert_eq!(dm.tag("order"), Some(order_id), "{dm:?}");
    (dm.tag("status"), dm.content.as_str())
}

/// A wallet of the buyer's, to take back tokens soko returns.
pub fn buyer_wallet(soko: &TestSoko, dir: &std::path::Path) -> soko::wallet::Wallet {
    let store = soko::store::Store::open(dir).expect("store");
    soko::wallet::open(&store, "buyer", soko.daemon().mint_url(), &[11; 64]).expect("wallet")
}

/// The Cashu token in a message's text.
pub fn token_in(text: &str) -> &str {
    let at = text.find("cashu").expect("a token in the text");
    text[at..].split_whitespace().next().expect("a token")
}

/// Order 1 is released with `code` and there is no order 2: the pay-first order was taken
/// exactly once, however often soko was stopped on the way.
pub async fn only_order_one_delivers(
    config: &soko::config::Config,
    merchant: PublicKey,
    code: &str,
) {
    let deliver = |order: u64| {
        soko::operator::call(
            config,
            "order_deliver",
            serde_json::json!({"merchant": merchant.to_bech32().expect("npub"), "order": order, "code": code}),
        )
    };
    let delivered = deliver(1).await.expect("order_deliver");
    assert!(delivered.ok, "{delivered:?}");
    let second = deliver(2).await.expect("order_deliver");
    assert!(!second.ok, "no second order: {second:?}");
}
