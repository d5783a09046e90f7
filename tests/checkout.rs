//! NIP-15 checkout with escrow, end to end on real parts: a buyer's order DM to a managed
//! merchant → invoice from the in-process mint (its fake Lightning backend settles it) →
//! paid, funds held, delivery code DM → the merchant presents the code → balance credited.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::escrow::EscrowState;
use soko::money::Sats;

fn order(id: &str, quantity: i64, shipping: &str) -> String {
    json!({"id": id, "type": 0, "name": "Amina", "address": "Moi Avenue 12",
           "contact": {"nostr": "npub1x"}, "items": [{"product_id": "mango", "quantity": quantity}],
           "shipping_id": shipping})
    .to_string()
}

async fn next_json(buyer: &mut User) -> Value {
    buyer.next_dm(REPLY_TIMEOUT).await.expect("a DM").json()
}

/// Waits for the code DM (plain text) and returns the 8 digits.
async fn delivery_code(buyer: &mut User) -> String {
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the code DM");
    let digits: String = dm
        .content
        .split_whitespace()
        .find(|w| w.len() == 8 && w.bytes().all(|b| b.is_ascii_digit()))
        .expect("8 digits in the code DM")
        .to_owned();
    digits
}

async fn full_cycle(nip17: bool) {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;

    let content = order("o-1", 2, "nairobi");
    if nip17 {
        buyer.send_nip17(shop.merchant, &content).await;
    } else {
        buyer.send_nip04(shop.merchant, &content).await;
    }
    let request = buyer.next_dm(REPLY_TIMEOUT).await.unwrap();
    assert_eq!(request.nip17, nip17, "answered in the buyer's scheme");
    assert_eq!(
        request.from, shop.merchant,
        "answered by the merchant's identity"
    );
    let request = request.json();
    assert_eq!(request["type"], 1);
    assert_eq!(request["id"], "o-1");
    // 2 × 500 + zone 100 + 2 × 10
    assert!(
        request["message"].as_str().unwrap().contains("1120 sat"),
        "{request}"
    );
    let invoice = request["payment_options"][0]["link"].as_str().unwrap();
    assert!(invoice.starts_with("lnbc"), "{invoice}");

    // The dev mint's fake backend settles the invoice; soko notices and holds the funds.
    let paid = next_json(&mut buyer).await;
    assert_eq!(
        (
            paid["type"].as_u64(),
            paid["paid"].as_bool(),
            paid["shipped"].as_bool()
        ),
        (Some(2), Some(true), Some(false))
    );
    let code = delivery_code(&mut buyer).await;
    let escrow = soko.daemon().escrow().clone();
    assert_eq!(
        escrow.order(&shop.merchant, 1).unwrap().unwrap().state,
        EscrowState::Paid
    );
    assert_books_balance(&soko).await;
    let (held, _) = escrow.books().unwrap();
    assert_eq!(held, Sats(1120));

    // Stock went down and the product was republished.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = buyer
        .client
        .fetch_events(
            Filter::new()
                .author(shop.merchant)
                .kind(Kind::Custom(30018)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let product: Value = serde_json::from_str(&events.first().unwrap().content).unwrap();
    assert_eq!(product["quantity"], 1);

    // A wrong code is refused; the right one releases the escrow to the merchant.
    let wrong = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": "00000000"}),
    )
    .await;
    let message = wrong.error.unwrap().message;
    assert!(
        message.contains("wrong code") && message.contains("4 tries left"),
        "{message}"
    );
    let right = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    assert!(right.ok, "{right:?}");
    assert_eq!(right.result.unwrap()["balance_sat"], 1120);
    let done = next_json(&mut buyer).await;
    assert_eq!(
        (done["paid"].as_bool(), done["shipped"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(escrow.balance(&shop.merchant).unwrap(), Sats(1120));
    assert_eq!(
        escrow.order(&shop.merchant, 1).unwrap().unwrap().state,
        EscrowState::PaidOut
    );

    // The code works once.
    let again = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    assert!(again.error.unwrap().message.contains("cannot be delivered"));
    assert_books_balance(&soko).await;
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats(1120)));
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_order_over_nip04() {
    full_cycle(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_order_over_nip17() {
    full_cycle(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_orders_are_explained_and_reserve_nothing() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let cases = [
        (order("a", 0, "nairobi"), "at least 1"),
        (order("b", -1, "nairobi"), "at least 1"),
        (order("c", 4, "nairobi"), "only 3"),
        (order("d", 1, "mars"), "mars"),
        (json!({"id":"e","type":0,"items":[{"product_id":"pear","quantity":1}],"shipping_id":"nairobi"}).to_string(), "pear"),
        (json!({"id":"f","type":0,"items":[],"shipping_id":"nairobi"}).to_string(), "no items"),
        (json!({"id":"g","type":0,"items":"lots"}).to_string(), "cannot read"),
    ];
    for (content, expected) in cases {
        let reply = buyer.ask_nip04(shop.merchant, &content).await.json();
        assert_eq!(
            (reply["type"].as_u64(), reply["paid"].as_bool()),
            (Some(2), Some(false)),
            "{reply}"
        );
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expected:?} in {message:?}");
    }
    // Nothing was reserved: all three mangoes can still be ordered.
    let reply = buyer
        .ask_nip17(shop.merchant, &order("h", 3, "nairobi"))
        .await
        .json();
    assert_eq!(reply["type"], 1, "{reply}");
    // …and now they are held: a fourth is refused while the first order is unpaid.
    let other = buyer
        .ask_nip04(shop.merchant, &order("i", 1, "nairobi"))
        .await
        .json();
    assert!(
        other["message"].as_str().unwrap().contains("only 0"),
        "{other}"
    );
    // An order to a key soko does not manage gets no answer from soko.
    let stranger = Keys::generate().public_key();
    buyer.send_nip04(stranger, &order("k", 1, "nairobi")).await;
    let after = buyer.all_dms(QUIET_PERIOD).await;
    assert!(
        after.iter().all(|dm| !dm.content.contains("\"id\":\"k\"")),
        "{after:?}"
    );
    // An order sent to the bot instead of a merchant is not an order.
    let to_bot = buyer
        .ask_nip04(soko.bot(), &order("j", 1, "nairobi"))
        .await
        .json();
    assert_eq!(to_bot["error"]["code"], "bad_request");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_codes_lock_the_order_and_a_resent_order_is_not_a_new_one() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let first = buyer
        .ask_nip04(shop.merchant, &order("o-9", 1, "nairobi"))
        .await
        .json();
    // The same order (same buyer, same id) in a new event: the same invoice, no new order.
    let again = buyer
        .ask_nip04(shop.merchant, &order("o-9", 1, "nairobi"))
        .await
        .json();
    assert_eq!(first["payment_options"], again["payment_options"]);
    next_json(&mut buyer).await; // paid
    let code = delivery_code(&mut buyer).await;
    assert!(
        soko.daemon()
            .escrow()
            .order(&shop.merchant, 2)
            .unwrap()
            .is_none(),
        "one order only"
    );

    for _ in 0..4 {
        let r = operator(
            &soko,
            "order_deliver",
            json!({"merchant": shop.npub, "order": 1, "code": "11111111"}),
        )
        .await;
        assert!(r.error.unwrap().message.contains("wrong code"));
    }
    let locked = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": "11111111"}),
    )
    .await;
    assert!(locked.error.unwrap().message.contains("locked"));
    let right_too_late = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    assert!(right_too_late.error.is_some());
    let order = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .unwrap();
    assert_eq!(order.state, EscrowState::Disputed);
    assert_books_balance(&soko).await;
    let unknown = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 77, "code": code}),
    )
    .await;
    assert!(unknown.error.unwrap().message.contains("no order #77"));

    // The operator reviews the lock and decides for the merchant: the escrow is released
    // once, the buyer is told the order is complete.
    let held = order.total;
    let release = json!({"merchant": shop.npub, "order": 1});
    let released = operator(&soko, "order_release", release.clone()).await;
    let result = released.result.expect("released");
    assert_eq!(result["released_sat"], held.0, "{result}");
    assert_eq!(result["balance_sat"], held.0, "{result}");
    let escrow = soko.daemon().escrow().clone();
    assert_eq!(
        escrow.order(&shop.merchant, 1).unwrap().unwrap().state,
        EscrowState::PaidOut
    );
    let completed = next_json(&mut buyer).await;
    assert_eq!(completed["shipped"], true, "{completed}");
    let twice = operator(&soko, "order_release", release).await;
    assert!(
        twice
            .error
            .unwrap()
            .message
            .contains("only a disputed order"),
        "released once"
    );
    assert_eq!(escrow.balance(&shop.merchant).unwrap(), held);
    assert_books_balance(&soko).await;
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_made_while_soko_was_down_is_picked_up_on_restart() {
    // The mint must outlive soko for a payment to land while soko is down: an external
    // dev mint whose invoices settle 3 s after they are issued.
    let (mint, _mint_dir) = external_dev_mint(3).await;
    let url = mint.url().to_owned();
    let mut soko = TestSoko::start_with(|c| {
        c.mint = soko::config::MintConfig::External {
            url,
            requests_per_minute: 600,
        }
    })
    .await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let request = buyer
        .ask_nip04(shop.merchant, &order("o-r", 1, "nairobi"))
        .await
        .json();
    assert_eq!(request["type"], 1);
    soko.stop().await;
    {
        // Stopped before the payment: the order is still awaiting it.
        let store = soko::store::Store::open(&soko.data_dir()).unwrap();
        let orders: soko::store::Typed<soko::escrow::OrderRecord> = store.tree("orders").unwrap();
        let (_, order) = orders.iter().next().unwrap().unwrap();
        assert_eq!(order.state, EscrowState::AwaitingPayment);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    soko.restart().await;
    let mut buyer = User::with_keys(buyer.keys.clone(), &[soko.relay_url()]).await;
    // The relay still holds the type-1 request; read on to the news.
    let mut paid = false;
    for _ in 0..4 {
        let dm = buyer
            .next_dm(REPLY_TIMEOUT)
            .await
            .expect("DMs after restart");
        if dm.content.contains("\"paid\":true") {
            paid = true;
            break;
        }
    }
    assert!(paid, "the payment was noticed after the restart");
    let code = delivery_code(&mut buyer).await;
    let right = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    assert!(right.ok, "{right:?}");
    let (held, owed) = soko.daemon().escrow().books().unwrap();
    let wallet = Sats::from(soko.daemon().wallet().total_balance().await.unwrap());
    assert_eq!((held, owed, wallet), (Sats::ZERO, Sats(610), Sats(610)));
    soko.stop().await;
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_expires_and_releases_its_stock() {
    // A mint whose invoices are never paid in time, and a 2-second payment window.
    let (mint, _mint_dir) = external_dev_mint(3_600).await;
    let url = mint.url().to_owned();
    let mut soko = TestSoko::start_with(|c| {
        c.mint = soko::config::MintConfig::External {
            url,
            requests_per_minute: 600,
        };
        c.market.payment_window_secs = 2;
    })
    .await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let request = buyer
        .ask_nip17(shop.merchant, &order("x-1", 3, "nairobi"))
        .await
        .json();
    assert_eq!(request["type"], 1, "{request}");
    let held = buyer
        .ask_nip04(shop.merchant, &order("x-2", 1, "nairobi"))
        .await
        .json();
    // An unpaid order cannot be delivered.
    let early = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": "12345678"}),
    )
    .await;
    assert!(
        early.error.unwrap().message.contains("waiting for payment"),
        "delivering before payment is refused"
    );
    assert!(
        held["message"].as_str().unwrap().contains("only 0"),
        "{held}"
    );

    let expired = buyer.next_dm(REPLY_TIMEOUT).await.expect("expiry notice");
    assert!(expired.nip17, "told in the order's scheme");
    let expired = expired.json();
    assert!(
        expired["message"].as_str().unwrap().contains("expired"),
        "{expired}"
    );
    assert_eq!(
        soko.daemon()
            .escrow()
            .order(&shop.merchant, 1)
            .unwrap()
            .unwrap()
            .state,
        EscrowState::Expired
    );
    // The three units are back.
    let again = buyer
        .ask_nip04(shop.merchant, &order("x-3", 3, "nairobi"))
        .await
        .json();
    assert_eq!(again["type"], 1, "{again}");
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats::ZERO)
    );
    soko.stop().await;
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_pays_the_merchant_out_to_its_lightning_address() {
    let mut soko = TestSoko::start().await;
    let mama_dir = tempfile::tempdir().unwrap();
    let (lnurlp, mama_wallet, _server) =
        lnurl_service_on(0, soko.daemon().mint_url(), mama_dir.path()).await;
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp).encode();
    let added = operator(
        &soko,
        "merchant_add",
        json!({"name":"Mama Duka","lightning_address": lnurl}),
    )
    .await;
    assert!(added.ok, "{added:?}");
    let npub = added.result.unwrap()["npub"].as_str().unwrap().to_owned();
    let merchant = PublicKey::parse(&npub).unwrap();
    let stall = json!({"id":"duka","name":"Mama Duka","currency":"sat","shipping":[{"id":"nairobi","cost":100}]});
    assert!(
        operator(
            &soko,
            "stall_put",
            json!({"merchant": npub, "stall": stall})
        )
        .await
        .ok
    );
    let mango = json!({"id":"mango","stall_id":"duka","name":"Mango","currency":"sat","price":500,"quantity":3,
                       "shipping":[{"id":"nairobi","cost":10}]});
    assert!(
        operator(
            &soko,
            "product_put",
            json!({"merchant": npub, "product": mango})
        )
        .await
        .ok
    );

    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let request = buyer
        .ask_nip04(merchant, &order("p-1", 2, "nairobi"))
        .await
        .json();
    assert_eq!(request["type"], 1);
    next_json(&mut buyer).await; // paid
    let code = delivery_code(&mut buyer).await;
    let delivered = operator(
        &soko,
        "order_deliver",
        json!({"merchant": npub, "order": 1, "code": code}),
    )
    .await;
    assert!(delivered.ok, "{delivered:?}");
    let result = delivered.result.unwrap();
    let paid = result["payout"]["paid_sat"].as_u64().expect("paid out");
    let fee = result["payout"]["fee_sat"].as_u64().unwrap();
    // 1120 released; the mint's 1% fee reserve (11) is kept back from the invoice, and what
    // the payment did not use comes back to the balance.
    assert_eq!(paid, 1109, "{result}");
    assert_eq!(result["balance_sat"].as_u64().unwrap(), 1120 - paid - fee);

    // Mama's own wallet can mint what was paid to her invoice.
    assert_eq!(mint_paid_invoice(&mama_wallet, paid).await, paid);

    let (held, owed) = soko.daemon().escrow().books().unwrap();
    let wallet = Sats::from(soko.daemon().wallet().total_balance().await.unwrap());
    assert_eq!((held, owed), (Sats::ZERO, Sats(1120 - paid - fee)));
    assert_eq!(
        owed, wallet,
        "the books match the escrow wallet after the melt"
    );
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_order_is_refunded_to_the_buyer_as_ecash() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip17(shop.merchant, &order("r-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await; // paid
    let code = delivery_code(&mut buyer).await;
    let unpaid_refund = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 9}),
    )
    .await;
    assert!(unpaid_refund.error.unwrap().message.contains("no order #9"));
    // Within the delivery window, and the buyer has not asked: no refund.
    let early = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 1}),
    )
    .await;
    assert!(
        early.error.unwrap().message.contains("delivery window"),
        "refused early"
    );
    // Only the buyer can cancel their own order.
    let stranger = User::connect(&[soko.relay_url()]).await;
    let mut stranger = stranger;
    let theirs = stranger
        .ask_nip17(soko.bot(), &cancel_request(&shop, "r-1", None))
        .await
        .json();
    assert_eq!(theirs["ok"], false, "{theirs}");
    let cancel = buyer
        .ask_nip17(soko.bot(), &cancel_request(&shop, "r-1", None))
        .await
        .json();
    assert_eq!(cancel["result"]["cancel_requested"], true, "{cancel}");

    let refund = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 1}),
    )
    .await;
    let refund = refund.result.unwrap();
    assert_eq!(refund["refund_sat"], 610);
    assert_eq!(refund["state"], "refunded");
    assert_eq!(refund["via"], "token");
    let status = next_json(&mut buyer).await;
    assert!(
        status["message"].as_str().unwrap().contains("refunded"),
        "{status}"
    );
    let token_dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the token DM");
    assert!(token_dm.nip17);
    let token = token_dm.content.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("cashu"), "{token}");

    // The buyer redeems it at the mint.
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let wallet = soko::wallet::open(&store, "buyer", soko.daemon().mint_url(), &[4; 64]).unwrap();
    let received = wallet
        .receive(&token, cdk::wallet::ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 610);

    // Refunded is final: no delivery, no second refund.
    let deliver = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    assert!(deliver.error.unwrap().message.contains("refunded"));
    let again = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 1}),
    )
    .await;
    assert!(again.error.unwrap().message.contains("cannot be refunded"));
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats::ZERO)
    );
    assert_eq!(
        u64::from(soko.daemon().wallet().total_balance().await.unwrap()),
        0
    );
    // At the mint, the only ecash outstanding is the buyer's refund.
    let mint = soko.daemon().dev_mint().unwrap().mint().clone();
    assert_eq!(
        outstanding_at(&mint).await,
        u64::from(wallet.total_balance().await.unwrap())
    );
    soko.stop().await;
}

fn cancel_request(shop: &Shop, order_id: &str, refund_to: Option<&str>) -> String {
    json!({"v": 1, "cmd": "order_cancel",
           "args": {"merchant": shop.npub, "order_id": order_id, "refund_to": refund_to}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_with_a_lightning_address_is_refunded_over_lightning() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let amina_dir = tempfile::tempdir().unwrap();
    let (amina_lnurl, amina_wallet, _server) =
        lnurl_service_on(0, soko.daemon().mint_url(), amina_dir.path()).await;
    let amina_lnurl = lnurl::lnurl::LnUrl::from_url(amina_lnurl).encode();
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip04(shop.merchant, &order("ln-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await; // paid
    delivery_code(&mut buyer).await;

    let bad = buyer
        .ask_nip04(
            soko.bot(),
            &cancel_request(&shop, "ln-1", Some("not an address")),
        )
        .await
        .json();
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("neither a Lightning address"),
        "{bad}"
    );
    let cancel = buyer
        .ask_nip04(
            soko.bot(),
            &cancel_request(&shop, "ln-1", Some(&amina_lnurl)),
        )
        .await
        .json();
    assert_eq!(cancel["result"]["refund_via"], "lightning", "{cancel}");
    let refund = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 1}),
    )
    .await
    .result
    .unwrap();
    assert_eq!(
        (refund["state"].as_str(), refund["via"].as_str()),
        (Some("refunded"), Some("lightning"))
    );

    let status = next_json(&mut buyer).await;
    assert!(status["message"].as_str().unwrap().contains("refunded"));
    let note = buyer.next_dm(REPLY_TIMEOUT).await.expect("the refund note");
    assert!(!note.nip17, "the buyer ordered over NIP-04");
    assert!(note.content.contains("over Lightning"), "{}", note.content);

    // The buyer's wallet mints what the invoice paid: 610 less the mint's 1% fee reserve.
    let quote = amina_wallet
        .check_all_mint_quotes()
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.state == cdk::nuts::MintQuoteState::Paid)
        .expect("the buyer's invoice is paid");
    amina_wallet
        .mint(&quote.id, cdk::amount::SplitTarget::default(), None)
        .await
        .unwrap();
    let received = u64::from(amina_wallet.total_balance().await.unwrap());
    assert_eq!(received, 610 - 6);
    // The unused fee reserve is booked to soko's fees account; the books still balance.
    let (held, owed) = soko.daemon().escrow().books().unwrap();
    assert_eq!(held, Sats::ZERO);
    assert_eq!(
        owed,
        Sats::from(soko.daemon().wallet().total_balance().await.unwrap())
    );
    assert_eq!(received + owed.0, 610, "nothing lost on the way");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disputed_and_overdue_orders_are_refundable_without_a_cancel() {
    let mut soko = TestSoko::start_with(|c| c.market.delivery_window_secs = 3).await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip17(shop.merchant, &order("d-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await;
    let code = delivery_code(&mut buyer).await;
    buyer
        .ask_nip17(shop.merchant, &order("d-2", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await;
    delivery_code(&mut buyer).await;

    let disputed = operator(
        &soko,
        "order_dispute",
        json!({"merchant": shop.npub, "order": 1}),
    )
    .await;
    assert_eq!(disputed.result.unwrap()["state"], "disputed");
    let status = next_json(&mut buyer).await;
    assert!(status["message"].as_str().unwrap().contains("under review"));
    // The code no longer releases a disputed order.
    let deliver = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    assert!(deliver.error.unwrap().message.contains("under review"));
    let refund = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 1}),
    )
    .await;
    assert_eq!(refund.result.unwrap()["state"], "refunded");

    // Order 2: refused inside its window, refundable once it has passed.
    let early = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 2}),
    )
    .await;
    assert!(early.error.unwrap().message.contains("delivery window"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 2}),
    )
    .await;
    assert_eq!(late.result.unwrap()["refund_sat"], 610);
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats::ZERO)
    );
    assert_eq!(
        u64::from(soko.daemon().wallet().total_balance().await.unwrap()),
        0
    );
    // Outstanding at the mint: the buyer's two refund tokens, not yet redeemed.
    let mint = soko.daemon().dev_mint().unwrap().mint().clone();
    assert_eq!(outstanding_at(&mint).await, 1220);
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_that_takes_tokens_is_paid_by_token_dm() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    // The merchant's own phone wallet, a Nostr client with its own key.
    let mut mama = User::connect(&[soko.relay_url()]).await;
    let mama_npub = mama.pubkey().to_bech32().unwrap();
    let set = operator(
        &soko,
        "merchant_payout",
        json!({"merchant": shop.npub, "to": mama_npub}),
    )
    .await;
    assert_eq!(set.result.unwrap()["tokens_to"], mama_npub);
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip17(shop.merchant, &order("t-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await;
    let code = delivery_code(&mut buyer).await;
    let delivered = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await
    .result
    .unwrap();
    assert_eq!(delivered["payout"]["token_sat"], 610, "{delivered}");
    assert_eq!(delivered["balance_sat"], 0);

    let dm = mama.next_dm(REPLY_TIMEOUT).await.expect("the payout DM");
    assert!(dm.nip17);
    assert_eq!(dm.from, shop.merchant, "sent from the shop's own identity");
    let token = dm.content.lines().last().unwrap().trim().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let wallet = soko::wallet::open(&store, "mama", soko.daemon().mint_url(), &[6; 64]).unwrap();
    let received = wallet
        .receive(&token, cdk::wallet::ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 610);
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats::ZERO)
    );
    assert_eq!(
        u64::from(soko.daemon().wallet().total_balance().await.unwrap()),
        0
    );
    let mint = soko.daemon().dev_mint().unwrap().mint().clone();
    assert_eq!(outstanding_at(&mint).await, 610, "all of it is mama's now");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_token_made_just_before_a_crash_is_the_one_sent_after_restart() {
    let (mint, _mint_dir) = external_dev_mint(1).await;
    let mint_url = mint.url().to_owned();
    let url = mint_url.clone();
    let mut soko = TestSoko::start_with(|c| {
        c.mint = soko::config::MintConfig::External {
            url,
            requests_per_minute: 600,
        }
    })
    .await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip17(shop.merchant, &order("c-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await;
    delivery_code(&mut buyer).await;
    let cancel = buyer
        .ask_nip17(soko.bot(), &cancel_request(&shop, "c-1", None))
        .await
        .json();
    assert_eq!(cancel["result"]["cancel_requested"], true);
    soko.stop().await;

    // Where a crash can land: the refund recorded its send operation, the wallet made the
    // token, and the process died before the token reached the outbox.
    let made = {
        let data_dir = soko.data_dir();
        let store = soko::store::Store::open(&data_dir).unwrap();
        let seed = soko::identity::wallet_seed(&data_dir).unwrap();
        let wallet = soko::wallet::open(&store, "escrow", &mint_url, &seed).unwrap();
        let prepared = wallet
            .prepare_send(610.into(), cdk::wallet::SendOptions::default())
            .await
            .unwrap();
        let operation = prepared.operation_id().to_string();
        let token = prepared.confirm(None).await.unwrap().to_string();
        let orders: soko::store::Typed<soko::escrow::OrderRecord> = store.tree("orders").unwrap();
        let key = [shop.merchant.to_bytes().as_slice(), &1u64.to_be_bytes()].concat();
        let mut record = orders.get(&key).unwrap().unwrap();
        record.state = EscrowState::Refunding;
        record.refund = Some(soko::escrow::RefundPlan::Token {
            operation: Some(operation),
            note: None,
        });
        orders.insert(&key, &record).unwrap();
        let refunding: soko::store::Typed<u64> = store.tree("refunding").unwrap();
        refunding.insert(&key, &0).unwrap();
        store.flush().await.unwrap();
        token
    };

    soko.restart().await;
    let mut buyer = User::with_keys(buyer.keys.clone(), &[soko.relay_url()]).await;
    let mut sent = None;
    for _ in 0..8 {
        let dm = buyer
            .next_dm(REPLY_TIMEOUT)
            .await
            .expect("DMs after restart");
        if dm.content.contains("cashu") {
            sent = dm.content.lines().last().map(|l| l.trim().to_owned());
            break;
        }
    }
    assert_eq!(
        sent.as_deref(),
        Some(made.as_str()),
        "the token made before the crash, not a new one"
    );
    let record = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .unwrap();
    assert_eq!(record.state, EscrowState::Refunded);
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats::ZERO)
    );
    assert_eq!(
        u64::from(soko.daemon().wallet().total_balance().await.unwrap()),
        0,
        "exactly one refund left the wallet"
    );
    soko.stop().await;
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_counts_once_and_an_order_to_the_bot_is_explained() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;

    // An order sent to soko's own npub instead of the merchant's.
    let misdirected = buyer
        .ask_nip04(soko.bot(), &order("w-1", 1, "nairobi"))
        .await
        .json();
    assert_eq!(misdirected["ok"], false);
    assert!(
        misdirected["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a merchant"),
        "{misdirected}"
    );

    buyer
        .ask_nip04(shop.merchant, &order("w-2", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await; // paid
    delivery_code(&mut buyer).await;
    // The watcher sees the paid quote again and again: it is minted and counted once.
    for _ in 0..3 {
        soko.daemon().escrow().tick().await.unwrap();
    }
    let again = buyer
        .ask_nip04(shop.merchant, &order("w-2", 1, "nairobi"))
        .await
        .json();
    assert_eq!(
        (again["type"].as_u64(), again["paid"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats(610), Sats::ZERO)
    );
    assert_books_balance(&soko).await;
    assert!(
        buyer.all_dms(QUIET_PERIOD).await.is_empty(),
        "no second paid message or code"
    );
    soko.stop().await;
}

/// A Gamma kind-16 message from `buyer` to the shop, gift-wrapped as Plebeian Market does.
async fn send_gamma(buyer: &User, shop: &Shop, tags: &[&[&str]], content: &str) {
    let mut all: Vec<Vec<String>> = vec![vec!["p".into(), shop.merchant.to_hex()]];
    all.extend(
        tags.iter()
            .map(|t| t.iter().map(|p| (*p).to_owned()).collect()),
    );
    let wrap = soko::bot::wrap_tagged(&buyer.keys, shop.merchant, 16, &all, content)
        .await
        .unwrap();
    assert!(!buyer.publish(&wrap).await.success.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gamma_order_runs_the_whole_way_in_kind_16_messages() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let mango = format!("30402:{}:mango", shop.merchant.to_hex());

    // Another merchant's listing is refused with a cancelled status saying why.
    let elsewhere = format!("30402:{}:mango", Keys::generate().public_key().to_hex());
    send_gamma(
        &buyer,
        &shop,
        &[
            &["subject", "order-info"],
            &["type", "1"],
            &["order", "g-0"],
            &["item", &elsewhere, "1"],
        ],
        "",
    )
    .await;
    let refused = buyer.next_dm(REPLY_TIMEOUT).await.expect("a refusal");
    assert_eq!(
        (refused.kind, refused.tag("type"), refused.tag("status")),
        (16, Some("3"), Some("cancelled"))
    );
    assert!(
        refused.content.contains("another merchant"),
        "{}",
        refused.content
    );

    // No shipping option named: the stall's only zone is used. 500 + 100 + 10.
    send_gamma(
        &buyer,
        &shop,
        &[
            &["subject", "order-info"],
            &["type", "1"],
            &["order", "g-1"],
            &["amount", "610"],
            &["item", &mango, "1"],
            &["name", "Amina"],
            &["address", "Moi Avenue 12\nNairobi"],
        ],
        "please call on arrival",
    )
    .await;
    let request = buyer
        .next_dm(REPLY_TIMEOUT)
        .await
        .expect("a payment request");
    assert!(request.nip17);
    assert_eq!(request.from, shop.merchant);
    assert_eq!(
        (request.kind, request.tag("type"), request.tag("order")),
        (16, Some("2"), Some("g-1"))
    );
    assert_eq!(request.tag("subject"), Some("order-payment"));
    assert_eq!(request.tag("amount"), Some("610"));
    let payment = request
        .tags
        .iter()
        .find(|t| t[0] == "payment")
        .expect("a payment tag");
    assert_eq!(payment[1], "lightning");
    assert!(payment[2].starts_with("lnbc"), "{payment:?}");

    // The fake backend pays; the order is confirmed and the code comes as a kind-14 message.
    let confirmed = buyer.next_dm(REPLY_TIMEOUT).await.expect("confirmed");
    assert_eq!(
        (
            confirmed.kind,
            confirmed.tag("type"),
            confirmed.tag("status")
        ),
        (16, Some("3"), Some("confirmed"))
    );
    let code_dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the code");
    assert_eq!((code_dm.kind, code_dm.tag("subject")), (14, Some("g-1")));
    let code: String = code_dm
        .content
        .split_whitespace()
        .find(|w| w.len() == 8 && w.bytes().all(|b| b.is_ascii_digit()))
        .expect("8 digits")
        .to_owned();
    let record = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .unwrap();
    assert_eq!(record.dialect, soko::escrow::Dialect::Gamma);

    // A payment receipt from the buyer is not answered: soko saw the payment at the mint.
    send_gamma(&buyer, &shop, &[&["type", "1"]], "").await; // no order tag
    let no_order = buyer.next_dm(REPLY_TIMEOUT).await.expect("a refusal");
    assert!(no_order.content.contains("no `order` tag"));
    let receipt = soko::bot::wrap_tagged(
        &buyer.keys,
        shop.merchant,
        17,
        &[
            vec!["p".into(), shop.merchant.to_hex()],
            vec!["order".into(), "g-1".into()],
        ],
        "",
    )
    .await
    .unwrap();
    buyer.publish(&receipt).await;
    assert!(
        buyer.all_dms(QUIET_PERIOD).await.is_empty(),
        "no reply to a receipt"
    );

    let delivered = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    assert!(delivered.ok, "{delivered:?}");
    let completed = buyer.next_dm(REPLY_TIMEOUT).await.expect("completed");
    assert_eq!(
        (completed.tag("type"), completed.tag("status")),
        (Some("3"), Some("completed"))
    );

    // A second order, cancelled by the buyer with a type-3 message, then refunded.
    send_gamma(
        &buyer,
        &shop,
        &[
            &["type", "1"],
            &["order", "g-2"],
            &["item", &mango, "1"],
            &[
                "shipping",
                &format!("30406:{}:nairobi", shop.merchant.to_hex()),
            ],
        ],
        "",
    )
    .await;
    buyer.next_dm(REPLY_TIMEOUT).await.expect("payment request");
    buyer.next_dm(REPLY_TIMEOUT).await.expect("confirmed");
    buyer.next_dm(REPLY_TIMEOUT).await.expect("code");
    send_gamma(
        &buyer,
        &shop,
        &[
            &["subject", "order-info"],
            &["type", "3"],
            &["order", "g-2"],
            &["status", "cancelled"],
        ],
        "changed my mind",
    )
    .await;
    let noted = buyer.next_dm(REPLY_TIMEOUT).await.expect("cancel noted");
    assert_eq!(noted.kind, 14);
    assert!(noted.content.contains("recorded"), "{}", noted.content);
    let refund = operator(
        &soko,
        "order_refund",
        json!({"merchant": shop.npub, "order": 2}),
    )
    .await;
    assert_eq!(refund.result.unwrap()["state"], "refunded");
    let cancelled = buyer.next_dm(REPLY_TIMEOUT).await.expect("cancelled");
    assert_eq!(cancelled.tag("status"), Some("cancelled"));
    let token = buyer.next_dm(REPLY_TIMEOUT).await.expect("the token");
    assert_eq!((token.kind, token.tag("subject")), (14, Some("g-2")));
    assert!(token.content.contains("cashu"));
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats(610))
    );
    soko.stop().await;
}
