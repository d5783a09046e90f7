//! The catalog of other merchants' stalls and products, on real parts: soko with its embedded
//! relay and a second plain relay, an outside merchant as a plain nostr-sdk client with its
//! own keys, and a buyer browsing with the public `catalog` command.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use nostr_sdk::nips::nip01::Coordinate;
use nostr_sdk::nips::nip09::EventDeletionRequest;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::market::catalog::Query;
use soko::proto::catalog::CatalogResult;

/// A merchant soko knows nothing about, publishing with its own keys.
struct Outsider {
    keys: Keys,
    client: Client,
}

impl Outsider {
    async fn connect(relays: &[RelayUrl]) -> Self {
        let keys = Keys::generate();
        let client = connect_client(keys.clone(), relays).await;
        Self { keys, client }
    }

    fn hex(&self) -> String {
        self.keys.public_key().to_hex()
    }

    fn listing(&self, kind: Kind, d: &str, content: &str, created_at: u64) -> Event {
        EventBuilder::new(kind, content)
            .tag(Tag::identifier(d))
            .tag(Tag::hashtag("fruit"))
            .custom_created_at(Timestamp::from(created_at))
            .sign_with_keys(&self.keys)
            .unwrap()
    }

    fn stall(&self, id: &str, name: &str, created_at: u64) -> Event {
        let content = json!({"id": id, "name": name, "currency": "USD", "description": "long text",
            "shipping": [{"id": "nairobi", "name": "Nairobi", "cost": 2.5, "regions": ["KE"]}]});
        self.listing(Kind::SetStall, id, &content.to_string(), created_at)
    }

    fn product(&self, id: &str, stall: &str, name: &str, created_at: u64) -> Event {
        let content = json!({"id": id, "stall_id": stall, "name": name, "currency": "USD",
            "price": 12.5, "quantity": 7, "images": ["https://img.example/m.png"],
            "specs": [["origin", "Kenya"]], "shipping": [{"id": "nairobi", "cost": 0.5}]});
        self.listing(Kind::SetProduct, id, &content.to_string(), created_at)
    }

    /// Publishes to every relay it is connected to.
    async fn publish(&self, event: &Event) {
        let out = self.client.send_event(event).await.unwrap();
        assert!(!out.success.is_empty(), "accepted: {:?}", out.failed);
    }

    /// Publishes to one relay only.
    async fn publish_to(&self, relay: &RelayUrl, event: &Event) {
        let out = self
            .client
            .send_event_to([relay.clone()], event)
            .await
            .unwrap();
        assert!(!out.success.is_empty(), "accepted: {:?}", out.failed);
    }

    /// A kind-5 deletion request, to one relay.
    async fn delete(&self, relay: &RelayUrl, request: EventDeletionRequest) {
        let event = EventBuilder::delete(request)
            .sign_with_keys(&self.keys)
            .unwrap();
        self.publish_to(relay, &event).await;
    }
}

fn now() -> u64 {
    Timestamp::now().as_secs()
}

fn everything() -> Query {
    Query {
        merchant: None,
        stall: None,
        limit: 200,
    }
}

/// Waits until soko's catalog satisfies `done`, and returns it.
async fn until(
    soko: &TestSoko,
    what: &str,
    done: impl Fn(&CatalogResult) -> bool,
) -> CatalogResult {
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let found = soko.daemon().catalog().query(&everything()).unwrap();
        if done(&found) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "catalog never got to: {what}; it has {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn product_names(found: &CatalogResult) -> Vec<String> {
    found
        .products
        .iter()
        .map(|p| p.product.name.clone())
        .collect()
}

fn has_product(found: &CatalogResult, name: &str) -> bool {
    product_names(found).iter().any(|n| n == name)
}

/// Asks the bot for the catalog as any buyer would, returning the result.
async fn browse(soko: &TestSoko, buyer: &mut User, args: Value) -> Value {
    let reply = buyer
        .ask_nip04(
            soko.bot(),
            &json!({"cmd": "catalog", "args": args}).to_string(),
        )
        .await
        .json();
    assert_eq!(reply["ok"], true, "{reply}");
    let result = reply["result"].clone();
    // The answer is exactly the protocol type.
    serde_json::from_value::<CatalogResult>(result.clone()).unwrap();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_listings_are_indexed_replaced_deleted_and_kept_across_a_restart() {
    let (_extra, extra_url) = extra_relay().await;
    let extra = extra_url.clone();
    let mut soko = TestSoko::start_with(|c| c.relays.urls = vec![extra]).await;
    let relays = [soko.relay_url(), extra_url.clone()];
    let shop = Outsider::connect(&relays).await;
    let other = Outsider::connect(&relays).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let t = now() - 1_000;

    // An outside stall and product, published to the embedded relay.
    let stall = shop.stall("duka", "Duka", t);
    shop.publish_to(&soko.relay_url(), &stall).await;
    shop.publish_to(
        &soko.relay_url(),
        &shop.product("mango", "duka", "Mango", t),
    )
    .await;
    until(&soko, "the outside stall and product", |c| {
        c.stalls.len() == 1 && c.products.len() == 1
    })
    .await;
    let all = browse(&soko, &mut buyer, json!({})).await;
    let s = &all["stalls"][0];
    assert_eq!(
        (&s["merchant"], &s["id"], &s["name"], &s["currency"]),
        (
            &json!(shop.hex()),
            &json!("duka"),
            &json!("Duka"),
            &json!("USD")
        )
    );
    assert_eq!(
        s["shipping"],
        json!([{"id": "nairobi", "cost": 250}]),
        "cents"
    );
    assert_eq!(s["event_id"], stall.id.to_hex());
    assert_eq!(s["created_at"], t);
    assert!(s.get("description").is_none(), "kept compact: {s}");
    let p = &all["products"][0];
    assert_eq!(
        (
            &p["stall_id"],
            &p["price"],
            &p["quantity"],
            &p["categories"]
        ),
        (&json!("duka"), &json!(1250), &json!(7), &json!(["fruit"]))
    );
    assert!(p.get("images").is_none() && p.get("specs").is_none(), "{p}");

    // A newer version replaces it.
    shop.publish_to(
        &soko.relay_url(),
        &shop.product("mango", "duka", "Mango v2", t + 20),
    )
    .await;
    until(&soko, "the newer product", |c| has_product(c, "Mango v2")).await;

    // An older version, through a relay that has not seen the newer one, is ignored; so are
    // listings whose content is not NIP-15. The last event on that relay marks the point
    // where all of them have been handled.
    shop.publish_to(
        &extra_url,
        &shop.product("mango", "duka", "Mango old", t + 10),
    )
    .await;
    shop.publish_to(
        &extra_url,
        &shop.listing(Kind::SetProduct, "junk", "not json", t),
    )
    .await;
    let bad_stall = json!({"id": "bad", "name": "Bad", "currency": "dollars"}).to_string();
    shop.publish_to(
        &extra_url,
        &shop.listing(Kind::SetStall, "bad", &bad_stall, t),
    )
    .await;
    let wrong_d = json!({"id": "pear", "stall_id": "duka", "name": "Pear", "currency": "USD",
        "price": 1})
    .to_string();
    shop.publish_to(
        &extra_url,
        &shop.listing(Kind::SetProduct, "not-pear", &wrong_d, t),
    )
    .await;
    shop.publish_to(&extra_url, &shop.product("marker", "duka", "Marker", t))
        .await;
    let found = until(&soko, "the marker", |c| has_product(c, "Marker")).await;
    assert_eq!(product_names(&found), ["Mango v2", "Marker"]);
    assert_eq!(found.stalls.len(), 1, "the malformed stall is not indexed");

    // Another merchant's listings; filters by merchant and by stall.
    other
        .publish(&other.stall("kibanda", "Kibanda", t + 30))
        .await;
    other
        .publish(&other.product("chai", "kibanda", "Chai", t + 30))
        .await;
    until(&soko, "the second merchant", |c| has_product(c, "Chai")).await;
    let mine = browse(
        &soko,
        &mut buyer,
        json!({"merchant": shop.keys.public_key().to_bech32().unwrap()}),
    )
    .await;
    assert_eq!(mine["stalls"].as_array().unwrap().len(), 1);
    assert_eq!(mine["products"].as_array().unwrap().len(), 2);
    assert!(mine["products"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["merchant"] == shop.hex()));
    let kibanda = browse(&soko, &mut buyer, json!({"stall": "kibanda"})).await;
    assert_eq!(kibanda["stalls"][0]["name"], "Kibanda");
    assert_eq!(kibanda["products"].as_array().unwrap().len(), 1);
    assert_eq!(kibanda["products"][0]["name"], "Chai");
    let newest = browse(&soko, &mut buyer, json!({"limit": 1})).await;
    assert_eq!(newest["products"][0]["name"], "Chai", "newest first");
    assert_eq!(newest["products"].as_array().unwrap().len(), 1);
    let refused = buyer
        .ask_nip04(soko.bot(), r#"{"cmd":"catalog","args":{"limit":500}}"#)
        .await
        .json();
    assert_eq!(refused["error"]["code"], "bad_request", "{refused}");

    // Deletions by the author, through the embedded relay only: the product by its
    // coordinate, the stall by its event id. (Someone else's deletion never gets past a
    // relay; the unit tests show the catalog ignores it too.)
    let coordinate = Coordinate::new(Kind::SetProduct, shop.keys.public_key()).identifier("mango");
    let embedded = soko.relay_url();
    shop.delete(
        &embedded,
        EventDeletionRequest::new().coordinate(coordinate),
    )
    .await;
    shop.delete(&embedded, EventDeletionRequest::new().id(stall.id))
        .await;
    let found = until(&soko, "the deletions", |c| {
        !has_product(c, "Mango v2") && c.stalls.iter().all(|s| s.stall.id != "duka")
    })
    .await;
    assert_eq!(product_names(&found), ["Chai", "Marker"]);
    // A copy of the deleted product from a relay that missed the deletion (it held the
    // older version) stays deleted.
    shop.publish_to(
        &extra_url,
        &shop.product("mango", "duka", "Mango v2", t + 20),
    )
    .await;
    shop.publish_to(
        &extra_url,
        &shop.product("marker", "duka", "Marker 2", t + 40),
    )
    .await;
    let found = until(&soko, "the second marker", |c| has_product(c, "Marker 2")).await;
    assert_eq!(product_names(&found), ["Marker 2", "Chai"]);

    // All of it survives a restart, deletions included.
    let before = soko.daemon().catalog().query(&everything()).unwrap();
    soko.restart().await;
    assert_eq!(
        soko.daemon().catalog().query(&everything()).unwrap(),
        before
    );
    // The relays send everything again after the restart; nothing changes.
    tokio::time::sleep(QUIET_PERIOD).await;
    assert_eq!(
        soko.daemon().catalog().query(&everything()).unwrap(),
        before
    );
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let after = browse(&soko, &mut buyer, json!({})).await;
    assert_eq!(after, serde_json::to_value(&before).unwrap());
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_catalog_evicts_its_oldest_listings() {
    let mut soko = TestSoko::start_with(|c| c.market.catalog_max_entries = 3).await;
    let shop = Outsider::connect(&[soko.relay_url()]).await;
    let t = now() - 1_000;
    for (i, name) in ["A", "B", "C"].into_iter().enumerate() {
        let at = t + 10 * i as u64;
        shop.publish(&shop.product(&name.to_lowercase(), "duka", name, at))
            .await;
    }
    until(&soko, "three products", |c| c.products.len() == 3).await;
    // A fourth, newer, takes the place of the oldest.
    shop.publish(&shop.product("d", "duka", "D", t + 30)).await;
    until(&soko, "D in, A out", |c| {
        has_product(c, "D") && !has_product(c, "A")
    })
    .await;
    // One older than everything kept is not admitted; a newer version of a kept one
    // replaces it without evicting anything, and marks where the old one was handled.
    shop.publish(&shop.product("old", "duka", "Old", t - 100))
        .await;
    shop.publish(&shop.product("b", "duka", "B2", t + 40)).await;
    let found = until(&soko, "B2", |c| has_product(c, "B2")).await;
    assert_eq!(product_names(&found), ["B2", "D", "C"]);
    assert_eq!(soko.daemon().catalog().len(), 3);

    // The bound holds after a restart, when the relay sends all of it again.
    soko.restart().await;
    tokio::time::sleep(QUIET_PERIOD).await;
    let found = soko.daemon().catalog().query(&everything()).unwrap();
    assert_eq!(product_names(&found), ["B2", "D", "C"]);
    soko.stop().await;
}
