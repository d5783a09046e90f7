//! Gamma Markets listings on real parts (issue 15): every stall and product soko publishes
//! for a merchant also goes out as Gamma shipping options (30406) and product listings
//! (30402), and stays in step through a price change, a sale's stock change, hiding, showing
//! and deletion (NIP-09 with `e` ids and `a` coordinates); an order naming the 30402 listing
//! and a published 30406 option is priced and answered; merchants have a DM relay list and a
//! profile saying how to pay; Plebeian Market's public Gamma events are taken by the relay.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::binary::Binary;
use common::bridge::*;
use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::proto::agents::REGISTRATION_KIND;
use soko::proto::gamma_listing::{shipping_option_d, KIND_LISTING, KIND_SHIPPING_OPTION};
use soko::proto::nip15::KIND_PRODUCT;

const PHONE: &str = "+254711000111";
const PIN: &str = "4821";

fn listing_kind() -> Kind {
    Kind::Custom(KIND_LISTING)
}

fn shipping_kind() -> Kind {
    Kind::Custom(KIND_SHIPPING_OPTION)
}

/// The values of the first tag named `name`.
fn values(event: &Event, name: &str) -> Option<Vec<String>> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice().to_vec())
        .find(|t| t.first().map(String::as_str) == Some(name))
        .map(|t| t[1..].to_vec())
}

/// The newest event of `kind` by `author` with `d`, on soko's relay.
async fn newest(soko: &TestSoko, author: PublicKey, kind: Kind, d: &str) -> Option<Event> {
    newest_on(&soko.relay_url(), author, kind, d).await
}

/// The same on the relay at `relay`.
async fn newest_on(relay: &RelayUrl, author: PublicKey, kind: Kind, d: &str) -> Option<Event> {
    let reader = User::connect(std::slice::from_ref(relay)).await;
    let events = reader
        .client
        .fetch_events(
            Filter::new().author(author).kind(kind),
            Duration::from_secs(3),
        )
        .await
        .unwrap_or_default();
    reader.client.shutdown().await;
    events
        .into_iter()
        .filter(|e| e.tags.identifier().unwrap_or_default() == d)
        .max_by_key(|e| e.created_at)
}

/// Waits until the newest `kind`/`d` event of `author` satisfies `check`; returns it.
async fn until(
    soko: &TestSoko,
    author: PublicKey,
    kind: Kind,
    d: &str,
    check: impl Fn(&Event) -> bool,
) -> Event {
    until_on(&soko.relay_url(), author, kind, d, check).await
}

/// The same on the relay at `relay`.
async fn until_on(
    relay: &RelayUrl,
    author: PublicKey,
    kind: Kind,
    d: &str,
    check: impl Fn(&Event) -> bool,
) -> Event {
    for _ in 0..100 {
        if let Some(event) = newest_on(relay, author, kind, d).await {
            if check(&event) {
                return event;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{kind}:{d} never reached the expected state");
}

/// Waits until no `kind`/`d` event of `author` is served.
async fn until_gone(soko: &TestSoko, author: PublicKey, kind: Kind, d: &str) {
    for _ in 0..100 {
        if newest(soko, author, kind, d).await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{kind}:{d} is still served");
}

/// The deletion by `author` that names `coordinate` in an `a` tag, when there is one.
async fn deletion_of(soko: &TestSoko, author: PublicKey, coordinate: &str) -> Option<Event> {
    events_of(soko, author, Kind::EventDeletion)
        .await
        .into_iter()
        .find(|e| e.tags.iter().any(|t| t.as_slice() == ["a", coordinate]))
}

fn names_id(deletion: &Event, id: &EventId) -> bool {
    let hex = id.to_hex();
    deletion
        .tags
        .iter()
        .any(|t| t.as_slice() == ["e", hex.as_str()])
}

/// A command to soko's bot over NIP-17; waits for its reply, skipping notices.
async fn ask(user: &mut User, bot: PublicKey, cmd: &str, args: Value) -> Value {
    let id = format!("{cmd}-{}", rand_suffix());
    let request = json!({"v": 1, "id": id, "cmd": cmd, "args": args}).to_string();
    user.send_nip17(bot, &request).await;
    loop {
        let reply = user
            .next_dm(REPLY_TIMEOUT)
            .await
            .expect("soko answers")
            .json();
        if reply["re"] == id.as_str() {
            assert_eq!(reply["ok"], true, "{cmd}: {reply}");
            return reply["result"].clone();
        }
    }
}

fn rand_suffix() -> String {
    Keys::generate().public_key().to_hex()[..8].to_owned()
}

/// Dials in for the first time: activation code, PIN twice, shop name confirmed.
async fn onboard(bridge: &mut Bridge, session: &str, code: &str) {
    bridge.hop(session, PHONE, "").await;
    let mut text = code.to_owned();
    bridge.hop(session, PHONE, &text).await;
    for input in [PIN, PIN, "1"] {
        text.push('*');
        text.push_str(input);
        let shown = bridge.hop(session, PHONE, &text).await;
        if input == "1" {
            assert!(
                shown.screen.starts_with("Your shop is open!"),
                "{}",
                shown.screen
            );
        }
    }
}

/// A USSD session walking `steps` after the PIN; returns the last screen.
async fn menu(bridge: &mut Bridge, session: &str, steps: &[&str]) -> String {
    bridge.hop(session, PHONE, "").await;
    let mut text = PIN.to_owned();
    let mut shown = bridge.hop(session, PHONE, &text).await;
    for step in steps {
        text.push('*');
        text.push_str(step);
        shown = bridge.hop(session, PHONE, &text).await;
    }
    shown.screen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gamma_listings_go_out_with_every_product_and_stay_in_step() {
    let bridge_keys = Keys::generate();
    let soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko).await;

    // An agent registers and onboards Mama Duka; she activates her shop over USSD.
    let mut agent = User::connect(&[soko.relay_url()]).await;
    let invite = operator(&soko, "invite_create", json!({"role": "agent"})).await;
    let invite = invite.result.unwrap()["code"].as_str().unwrap().to_owned();
    let registration = EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
        .tags([
            Tag::parse(["invite", invite.as_str()]).unwrap(),
            Tag::parse(["role", "agent"]).unwrap(),
            Tag::parse(["name", "Juma"]).unwrap(),
            Tag::public_key(soko.bot()),
        ])
        .sign_with_keys(&agent.keys)
        .unwrap();
    ask(
        &mut agent,
        soko.bot(),
        "register",
        json!({ "event": registration }),
    )
    .await;
    let onboarded = ask(
        &mut agent,
        soko.bot(),
        "merchant_onboard",
        json!({"phone": PHONE, "name": "Mama Duka"}),
    )
    .await;
    let npub = onboarded["merchant"]["npub"].as_str().unwrap().to_owned();
    let merchant = PublicKey::parse(&npub).unwrap();
    let code = onboarded["activation_code"]
        .as_str()
        .unwrap()
        .replace(' ', "");
    assert!(events_of(&soko, merchant, Kind::InboxRelays)
        .await
        .is_empty());
    onboard(&mut bridge, "AT-1", &code).await;

    // Activated: a DM relay list naming soko's relay, and a profile saying how to pay.
    let relays = until(&soko, merchant, Kind::InboxRelays, "", |_| true).await;
    assert_eq!(
        values(&relays, "relay"),
        Some(vec![soko.relay_url().to_string()])
    );
    let profile = until(&soko, merchant, Kind::Metadata, "", |_| true).await;
    let metadata: Value = serde_json::from_str(&profile.content).unwrap();
    assert_eq!(metadata["payment_preference"], "ecash", "{metadata}");
    assert!(
        metadata.get("lud16").is_none(),
        "no address around the escrow"
    );
    assert!(metadata["about"].as_str().unwrap().contains("escrow"));

    // The stall and the mangoes: NIP-15 and Gamma forms, from the same records.
    put_listings(&soko, &npub).await;
    let zone = shipping_option_d("duka", "nairobi");
    let option = until(&soko, merchant, shipping_kind(), &zone, |_| true).await;
    assert_eq!(
        values(&option, "price"),
        Some(vec!["100".into(), "SATS".into()])
    );
    assert_eq!(values(&option, "country"), Some(vec!["KE".into()]));
    assert_eq!(values(&option, "service"), Some(vec!["standard".into()]));
    let listing = until(&soko, merchant, listing_kind(), "mango", |_| true).await;
    assert!(listing.verify().is_ok());
    assert_eq!(values(&listing, "title"), Some(vec!["Mango".into()]));
    assert_eq!(
        values(&listing, "price"),
        Some(vec!["500".into(), "SATS".into()])
    );
    assert_eq!(values(&listing, "stock"), Some(vec!["3".into()]));
    assert_eq!(
        values(&listing, "shipping_option"),
        Some(vec![
            format!("{KIND_SHIPPING_OPTION}:{}:{zone}", merchant.to_hex()),
            "10".into()
        ])
    );
    let product = until(&soko, merchant, Kind::SetProduct, "mango", |_| true).await;

    // A new price reaches both forms.
    let mut mango = json!({"id":"mango","stall_id":"duka","name":"Mango","currency":"sat",
                           "price":520,"quantity":3,"shipping":[{"id":"nairobi","cost":10}]});
    let put = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": mango}),
    )
    .await;
    assert!(put.ok, "{put:?}");
    let priced = until(&soko, merchant, listing_kind(), "mango", |e| {
        values(e, "price") == Some(vec!["520".into(), "SATS".into()])
    })
    .await;
    until(&soko, merchant, Kind::SetProduct, "mango", |e| {
        e.content.contains("520")
    })
    .await;
    mango["price"] = json!(500);
    operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": mango}),
    )
    .await;
    until(&soko, merchant, listing_kind(), "mango", |e| {
        values(e, "price") == Some(vec!["500".into(), "SATS".into()])
    })
    .await;

    // A sale takes two mangoes off the stock, in both forms.
    let (_buyer, _code) = paid_order(&soko, merchant, "o-1").await;
    let sold = until(&soko, merchant, listing_kind(), "mango", |e| {
        values(e, "stock") == Some(vec!["1".into()])
    })
    .await;
    let product_sold = until(&soko, merchant, Kind::SetProduct, "mango", |e| {
        serde_json::from_str::<Value>(&e.content).unwrap()["quantity"] == 1
    })
    .await;

    // Hidden over USSD: one deletion of both forms, by coordinate and by id.
    let hidden = menu(&mut bridge, "AT-2", &["3", "1", "3"]).await;
    assert!(hidden.starts_with("Hidden from buyers."), "{hidden}");
    let listing_coordinate = format!("{KIND_LISTING}:{}:mango", merchant.to_hex());
    let product_coordinate = format!("{KIND_PRODUCT}:{}:mango", merchant.to_hex());
    let deletion = deletion_of(&soko, merchant, &listing_coordinate)
        .await
        .expect("a deletion of the 30402 listing");
    assert!(deletion
        .tags
        .iter()
        .any(|t| t.as_slice() == ["a", product_coordinate.as_str()]));
    for version in [&listing, &priced, &sold, &product, &product_sold] {
        assert!(names_id(&deletion, &version.id), "e tag of {}", version.id);
    }
    until_gone(&soko, merchant, listing_kind(), "mango").await;
    until_gone(&soko, merchant, Kind::SetProduct, "mango").await;

    // Shown again: both forms come back.
    let shown = menu(&mut bridge, "AT-3", &["3", "1", "3"]).await;
    assert!(shown.starts_with("Back on sale."), "{shown}");
    let back = until(&soko, merchant, listing_kind(), "mango", |_| true).await;
    assert_eq!(values(&back, "stock"), Some(vec!["1".into()]));
    until(&soko, merchant, Kind::SetProduct, "mango", |_| true).await;

    // Deleted (the agent proposes, the merchant approves), then the stall with its zone.
    for (kind, id) in [(KIND_PRODUCT, "mango"), (30017, "duka")] {
        ask(
            &mut agent,
            soko.bot(),
            "propose_delete",
            json!({"merchant": npub, "kind": kind, "id": id}),
        )
        .await;
        let approved = menu(&mut bridge, &format!("AT-del-{id}"), &["4", "1", "1"]).await;
        assert!(approved.starts_with("Approved"), "{approved}");
    }
    let deleted = deletion_of(&soko, merchant, &listing_coordinate)
        .await
        .expect("deletion");
    assert!(deleted.tags.iter().any(|t| t.as_slice()[0] == "e"));
    let option_coordinate = format!("{KIND_SHIPPING_OPTION}:{}:{zone}", merchant.to_hex());
    let stall_gone = deletion_of(&soko, merchant, &option_coordinate)
        .await
        .expect("a deletion of the shipping option");
    assert!(names_id(&stall_gone, &option.id));
    let stall_coordinate = format!("30017:{}:duka", merchant.to_hex());
    assert!(stall_gone
        .tags
        .iter()
        .any(|t| t.as_slice() == ["a", stall_coordinate.as_str()]));
    until_gone(&soko, merchant, listing_kind(), "mango").await;
    until_gone(&soko, merchant, shipping_kind(), &zone).await;
    until_gone(&soko, merchant, Kind::SetStall, "duka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_naming_the_gamma_listing_and_shipping_option_is_priced() {
    let soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    // The operator's merchant has its DM relay list and profile at once.
    let relays = until(&soko, shop.merchant, Kind::InboxRelays, "", |_| true).await;
    assert_eq!(
        values(&relays, "relay"),
        Some(vec![soko.relay_url().to_string()])
    );
    let listing = until(&soko, shop.merchant, listing_kind(), "mango", |_| true).await;
    let option_ref = values(&listing, "shipping_option").unwrap()[0].clone();
    let item = format!("{KIND_LISTING}:{}:mango", shop.merchant.to_hex());

    let mut buyer = User::connect(&[soko.relay_url()]).await;
    send_gamma(
        &buyer,
        &shop,
        &[
            &["subject", "order-info"],
            &["type", "1"],
            &["order", "pleb-1"],
            &["amount", "1120"],
            &["item", &item, "2"],
            &["shipping", &option_ref],
            &["address", "Moi Avenue 12, Nairobi"],
        ],
        "",
    )
    .await;
    let request = buyer
        .next_dm(REPLY_TIMEOUT)
        .await
        .expect("a payment request");
    assert_eq!(
        (
            request.tag("type"),
            request.tag("order"),
            request.tag("amount")
        ),
        (Some("2"), Some("pleb-1"), Some("1120")),
        "{request:?}"
    );
    let record = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .unwrap();
    assert_eq!(record.lines[0].product_id, "mango");

    // An option of no zone of the stall is refused, nothing reserved.
    let elsewhere = format!(
        "{KIND_SHIPPING_OPTION}:{}:mombasa-0000",
        shop.merchant.to_hex()
    );
    send_gamma(
        &buyer,
        &shop,
        &[
            &["type", "1"],
            &["order", "pleb-2"],
            &["item", &item, "1"],
            &["shipping", &elsewhere],
        ],
        "",
    )
    .await;
    let refused = buyer.next_dm(REPLY_TIMEOUT).await.expect("a refusal");
    assert_eq!(
        (refused.tag("type"), refused.tag("status")),
        (Some("3"), Some("cancelled")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plebeian_markets_public_gamma_events_are_taken_by_the_relay() {
    let soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let buyer = User::connect(&[soko.relay_url()]).await;
    let seller = shop.merchant.to_hex();
    let item = format!("{KIND_LISTING}:{seller}:mango");
    // What Plebeian Market's updateOrderStatus, publishPaymentReceipt and product, shipping,
    // collection and review forms publish, unwrapped.
    let events: Vec<(u16, Vec<Vec<&str>>)> = vec![
        (
            16,
            vec![
                vec!["p", &seller],
                vec!["subject", "order-info"],
                vec!["type", "3"],
                vec!["order", "pleb-9"],
                vec!["status", "cancelled"],
            ],
        ),
        (
            16,
            vec![
                vec!["p", &seller],
                vec!["subject", "order-info"],
                vec!["type", "1"],
                vec!["order", "pleb-9"],
                vec!["amount", "610"],
                vec!["item", &item, "1"],
            ],
        ),
        (
            17,
            vec![
                vec!["p", &seller],
                vec!["subject", "order-receipt"],
                vec!["order", "pleb-9"],
                vec!["payment", "lightning", "unknown", ""],
                vec!["amount", "610.00"],
            ],
        ),
        (
            30402,
            vec![
                vec!["d", "basket"],
                vec!["title", "Basket"],
                vec!["price", "12.50", "USD"],
                vec!["stock", "4"],
            ],
        ),
        (
            30405,
            vec![vec!["d", "crafts"], vec!["title", "Crafts"], vec!["a", &item]],
        ),
        (
            30406,
            vec![
                vec!["d", "pickup"],
                vec!["title", "Pickup"],
                vec!["price", "0", "USD"],
                vec!["country", "KE"],
                vec!["service", "pickup"],
            ],
        ),
        (
            31555,
            vec![
                vec!["d", "a:30402:f916d184100631c6e9096a22bcffcbf991f14e5952e4f36b87a7ee41e9b80b32:mango"],
                vec!["rating", "1", "thumb"],
            ],
        ),
    ];
    for (kind, tags) in events {
        let event = EventBuilder::new(Kind::Custom(kind), "Order status updated")
            .tags(tags.into_iter().map(|t| Tag::parse(t).unwrap()))
            .sign_with_keys(&buyer.keys)
            .unwrap();
        let out = buyer.publish(&event).await;
        assert!(
            !out.success.is_empty(),
            "kind {kind} accepted: {:?}",
            out.failed
        );
    }
    // Public order messages are not orders: soko acts only on gift-wrapped ones.
    let mut buyer = buyer;
    assert!(buyer.all_dms(QUIET_PERIOD).await.is_empty());
    assert!(soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchants_from_before_gamma_listings_get_them_at_start_once() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    until(&soko, shop.merchant, listing_kind(), "mango", |_| true).await;
    // A data dir of an older soko: nothing recorded as published, and a relay that never had
    // the Gamma forms or a DM relay list.
    soko.stop().await;
    {
        let store = soko::store::Store::open(&soko.data_dir()).unwrap();
        store.db().drop_tree("published_listings").unwrap();
        store.db().flush().unwrap();
    }
    // The journal too: a clean stop leaves in it what came after the last checkpoint, and
    // its replay would serve the first run's versions until the new ones replace them.
    for dir in ["relay-events", "relay-journal"] {
        std::fs::remove_dir_all(soko.data_dir().join(dir)).unwrap();
    }
    soko.restart().await; // stopped already: this only starts it
    let listing = until(&soko, shop.merchant, listing_kind(), "mango", |_| true).await;
    let relays = until(&soko, shop.merchant, Kind::InboxRelays, "", |_| true).await;
    until(&soko, shop.merchant, Kind::Metadata, "", |_| true).await;
    until(&soko, shop.merchant, Kind::SetProduct, "mango", |_| true).await;
    until(
        &soko,
        shop.merchant,
        shipping_kind(),
        &shipping_option_d("duka", "nairobi"),
        |_| true,
    )
    .await;
    // Another start changes nothing: the same versions stay.
    soko.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = newest(&soko, shop.merchant, listing_kind(), "mango")
        .await
        .unwrap();
    assert_eq!(again.id, listing.id);
    let relays_again = newest(&soko, shop.merchant, Kind::InboxRelays, "")
        .await
        .unwrap();
    assert_eq!(relays_again.id, relays.id);
}

/// A sale's stock is committed with the paid order; soko crashes before it publishes the
/// product again. The next start publishes both forms with the new stock: the record is the
/// source of truth, and what went out is compared with it at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_change_lost_to_a_crash_goes_out_at_the_next_start() {
    let (mint, _mint_dir) = external_dev_mint(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut soko = Binary::in_dir(dir.path(), mint.url());
    let config = soko.config();
    soko.start().await;
    let shop = Mangoes::default().open(&config).await;
    let relay = soko.relay();
    until_on(&relay, shop.merchant, listing_kind(), "mango", |e| {
        values(e, "stock") == Some(vec!["3".into()])
    })
    .await;
    soko.kill();

    soko.start_failing_at("listing-republish").await;
    let mut buyer = User::connect(std::slice::from_ref(&relay)).await;
    let request = buyer
        .ask_nip04(shop.merchant, &mango_order("crash-1", 2))
        .await
        .json();
    assert_eq!(request["type"], 1, "{request}");
    // The dev mint settles the invoice; the paid commit takes 2 mangoes off; soko stops.
    soko.crashed().await;
    buyer.client.shutdown().await;

    soko.start().await;
    until_on(&relay, shop.merchant, listing_kind(), "mango", |e| {
        values(e, "stock") == Some(vec!["1".into()])
    })
    .await;
    until_on(&relay, shop.merchant, Kind::SetProduct, "mango", |e| {
        serde_json::from_str::<Value>(&e.content).unwrap()["quantity"] == 1
    })
    .await;
    soko.kill();
    mint.shutdown().await;
}
