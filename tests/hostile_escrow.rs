//! Hostile buyers against the escrow (issue 11, items 1, 5 and the escrow parts of 12): a real
//! soko (embedded relay, in-process dev mint with its fake Lightning backend that pays every
//! invoice, sled in a temp dir) attacked with plain Nostr clients.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use nostr_sdk::prelude::*;
use serde_json::json;
use soko::escrow::{Dialect, EscrowState};
use soko::money::Sats;
use soko::proto::gamma::KIND_LISTING;

/// Mama Duka with `quantity` mangoes at 500 sat, no shipping per mango.
async fn shop(soko: &TestSoko, quantity: u64) -> Shop {
    Mangoes {
        quantity,
        shipping_each: None,
        ..Mangoes::default()
    }
    .open(&soko.config)
    .await
}

fn nip15_order(id: &str, quantity: i64) -> String {
    json!({"id": id, "type": 0, "name": "Amina", "address": "Moi Avenue 12",
           "items": [{"product_id": "mango", "quantity": quantity}],
           "shipping_id": "nairobi"})
    .to_string()
}

/// Waits until order `number` of `shop` reaches `state`, or gives up after `within`.
async fn wait_state(
    soko: &TestSoko,
    shop: &Shop,
    number: u64,
    state: EscrowState,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = soko
            .daemon()
            .escrow()
            .order(&shop.merchant, number)
            .unwrap();
        if now.is_some_and(|r| r.state == state) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 11 item 1, as observed: a Gamma order with a ~28,000-character id, then an ordinary
/// order from someone else. Before the fix the huge id was taken, its delivery-code message
/// could not be sealed, and every later order stayed unpaid for ever. Now the huge id is
/// refused at the door with `too_large`, and the ordinary order is paid and coded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_order_id_is_refused_and_does_not_stop_other_orders() {
    let soko = TestSoko::start().await;
    let shop = shop(&soko, 10).await;
    let mut attacker = User::connect(&[soko.relay_url()]).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let mango = format!("{KIND_LISTING}:{}:mango", shop.merchant.to_hex());

    let huge = "x".repeat(28_000);
    send_gamma(
        &attacker,
        &shop,
        &[
            &["subject", "order-info"],
            &["type", "1"],
            &["order", &huge],
            &["item", &mango, "1"],
        ],
        "",
    )
    .await;
    let refused = attacker.next_dm(REPLY_TIMEOUT).await.expect("an answer");
    assert_eq!(
        (refused.kind, refused.tag("type"), refused.tag("status")),
        (GAMMA_ORDER, Some("3"), Some("cancelled")),
        "{}",
        refused.content
    );
    assert!(refused.content.contains("too_large"), "{}", refused.content);
    // The refusal does not echo the whole id back.
    assert!(refused.tag("order").is_some_and(|id| id.len() <= 200));

    // An ordinary order after it is paid and coded.
    buyer
        .send_nip04(shop.merchant, &nip15_order("fine-1", 1))
        .await;
    let request = buyer.next_dm(REPLY_TIMEOUT).await.expect("payment request");
    assert_eq!(request.json()["type"], 1, "{}", request.content);
    let number = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .map(|r| r.buyer_order_id);
    assert_eq!(
        number.as_deref(),
        Some("fine-1"),
        "the huge order was not recorded"
    );
    let paid = buyer.next_dm(REPLY_TIMEOUT).await.expect("paid status");
    assert_eq!(paid.json()["paid"], true, "{}", paid.content);
    let code = buyer.next_dm(REPLY_TIMEOUT).await.expect("code DM");
    assert!(code_in(&code).is_some(), "{}", code.content);
}

/// An order stored with a huge id (by an older soko, before ids were bounded) must not stop the
/// watcher: its code message falls back to one without the id, and the order after it is paid
/// too, across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_stored_with_a_huge_id_does_not_stop_the_watcher() {
    let mut soko = TestSoko::start().await;
    let shop = shop(&soko, 10).await;
    let mut attacker = User::connect(&[soko.relay_url()]).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;

    // What an older soko took in: straight into the escrow, past today's intake bounds.
    let huge = soko::proto::nip15::Order {
        id: "y".repeat(28_000),
        kind: 0,
        name: None,
        address: None,
        message: None,
        contact: Default::default(),
        items: vec![soko::proto::nip15::OrderItem {
            product_id: "mango".into(),
            quantity: 1,
        }],
        shipping_id: "nairobi".into(),
    };
    soko.daemon()
        .escrow()
        .place(
            shop.merchant,
            attacker.pubkey(),
            soko::outbound::Scheme::Nip17,
            Dialect::Gamma,
            huge,
        )
        .await
        .expect("placed");
    buyer
        .send_nip04(shop.merchant, &nip15_order("fine-2", 1))
        .await;
    assert!(
        wait_state(&soko, &shop, 2, EscrowState::Paid, Duration::from_secs(20)).await,
        "the ordinary order after the poisoned one was never marked paid"
    );
    assert!(
        wait_state(&soko, &shop, 1, EscrowState::Paid, Duration::from_secs(20)).await,
        "the poisoned order is paid too (its messages fall back to short ones)"
    );
    let dms = attacker.all_dms(QUIET_PERIOD).await;
    assert!(
        dms.iter().any(|dm| code_in(dm).is_some()),
        "the huge-id buyer still gets a code: {:?}",
        dms.iter().map(|d| d.content.clone()).collect::<Vec<_>>()
    );
    let dms = buyer.all_dms(QUIET_PERIOD).await;
    assert!(dms.iter().any(|dm| code_in(dm).is_some()));

    // A third order after a restart flows as well.
    soko.restart().await;
    // A fresh connection, as the other restart tests make: the old client's reconnect
    // backoff is not what this test is about.
    let buyer = User::with_keys(buyer.keys.clone(), &[soko.relay_url()]).await;
    buyer
        .send_nip04(shop.merchant, &nip15_order("fine-3", 1))
        .await;
    assert!(
        wait_state(&soko, &shop, 3, EscrowState::Paid, Duration::from_secs(20)).await,
        "after a restart"
    );
    let (held, owed) = soko.daemon().escrow().books().unwrap();
    let wallet = Sats::from(soko.daemon().wallet().total_balance().await.unwrap());
    assert_eq!(held.checked_add(owed).unwrap(), wallet);
}

/// soko against a dev mint of its own whose invoices are never paid during the test.
async fn soko_with_unpaid_invoices(
    adjust: impl FnOnce(&mut soko::Config),
) -> (TestSoko, soko::devmint::DevMint, tempfile::TempDir) {
    let (mint, dir) = external_dev_mint(3_600).await;
    let url = mint.url().to_owned();
    let soko = TestSoko::start_on_mint(&url, |c| {
        adjust(c);
    })
    .await;
    (soko, mint, dir)
}

/// Units of the mango held by unpaid orders, from the first `orders` order numbers.
fn held_units(soko: &TestSoko, shop: &Shop, orders: u64) -> u64 {
    (1..=orders)
        .filter_map(|n| soko.daemon().escrow().order(&shop.merchant, n).unwrap())
        .filter(|r| r.state == EscrowState::AwaitingPayment)
        .map(|r| r.lines.iter().map(|l| l.quantity).sum::<u64>())
        .sum()
}

/// Issue 11 item 5: twelve fresh keys each order every unit. Before the fix the first took
/// the whole stock for the payment window at no cost; now unpaid orders together hold at
/// most half of it, each refused buyer is told `busy`, and one key cannot keep more than
/// three unpaid orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_cannot_hold_the_whole_stock() {
    let (soko, _mint, _dir) = soko_with_unpaid_invoices(|_| {}).await;
    let shop = shop(&soko, 50).await;
    let mut refusals = Vec::new();
    for i in 0..12 {
        let mut key = User::connect(&[soko.relay_url()]).await;
        for (j, units) in [50, 25].into_iter().enumerate() {
            let answer = key
                .ask_nip04(shop.merchant, &nip15_order(&format!("grab-{i}-{j}"), units))
                .await
                .json();
            if answer["type"] == 2 {
                refusals.push(answer["message"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    let held = held_units(&soko, &shop, 30);
    println!("stock 50: units held by unpaid orders of 12 fresh keys = {held}");
    assert!(held <= 25, "unpaid orders hold {held} of 50 units");
    assert!(refusals.iter().any(|r| r.contains("busy")), "{refusals:?}");

    // One key, many small orders: the fourth waits.
    let mut greedy = User::connect(&[soko.relay_url()]).await;
    let shop2 = {
        // Another product with unlimited stock, so only the per-buyer cap can refuse.
        let pear = json!({"id":"pear","stall_id":"duka","name":"Pear","currency":"sat",
                          "price":100,"quantity":null});
        assert!(
            operator(
                &soko,
                "product_put",
                json!({"merchant": shop.npub, "product": pear})
            )
            .await
            .ok
        );
        &shop
    };
    let mut answers = Vec::new();
    for n in 0..4 {
        let order = json!({"id": format!("pear-{n}"), "type": 0,
                           "items": [{"product_id": "pear", "quantity": 1}],
                           "shipping_id": "nairobi"})
        .to_string();
        answers.push(greedy.ask_nip04(shop2.merchant, &order).await.json());
    }
    assert!(answers[..3].iter().all(|a| a["type"] == 1), "{answers:?}");
    assert_eq!(answers[3]["type"], 2);
    assert!(
        answers[3]["message"].as_str().unwrap().contains("busy"),
        "{}",
        answers[3]
    );
}

/// The total cap: past `max_unpaid_total` open orders, new ones are refused with `busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_unpaid_orders_are_capped_in_total() {
    let (soko, _mint, _dir) = soko_with_unpaid_invoices(|c| c.market.max_unpaid_total = 3).await;
    let shop = shop(&soko, 100).await;
    let mut kinds = Vec::new();
    for i in 0..4 {
        let mut key = User::connect(&[soko.relay_url()]).await;
        let answer = key
            .ask_nip04(shop.merchant, &nip15_order(&format!("t-{i}"), 1))
            .await
            .json();
        kinds.push((answer["type"].clone(), answer["message"].clone()));
    }
    assert!(kinds[..3].iter().all(|(t, _)| *t == 1), "{kinds:?}");
    assert_eq!(kinds[3].0, 2);
    assert!(kinds[3].1.as_str().unwrap().contains("busy"), "{kinds:?}");
}

/// Issue 16: the caps are counted in memory (sled counts a tree by walking it, and counting a
/// buyer's unpaid orders read every unpaid order: quadratic under load). The counts must
/// survive a restart, as the `awaiting` tree does, and follow payments: a greedy key at its
/// cap stays refused after a restart, and is served again once one of its orders is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unpaid_caps_hold_across_a_restart_and_free_up_when_paid() {
    let (mut soko, mint, _dir) = soko_with_unpaid_invoices(|c| c.market.max_unpaid_total = 4).await;
    let shop = shop(&soko, 100).await;
    let mut greedy = User::connect(&[soko.relay_url()]).await;
    let mut other = User::connect(&[soko.relay_url()]).await;
    let mut late = User::connect(&[soko.relay_url()]).await;
    async fn order(user: &mut User, shop: &Shop, id: &str) -> serde_json::Value {
        user.ask_nip04(shop.merchant, &nip15_order(id, 1))
            .await
            .json()
    }
    fn busy(answer: &serde_json::Value, why: &str) -> bool {
        answer["type"] == 2 && answer["message"].as_str().is_some_and(|m| m.contains(why))
    }
    for n in 0..3 {
        let answer = order(&mut greedy, &shop, &format!("g-{n}")).await;
        assert_eq!(answer["type"], 1, "{answer}");
    }
    let answer = order(&mut greedy, &shop, "g-3").await;
    assert!(busy(&answer, "you have 3 orders"), "{answer}");
    let answer = order(&mut other, &shop, "o-0").await;
    assert_eq!(answer["type"], 1, "{answer}");
    let answer = order(&mut late, &shop, "l-0").await;
    assert!(busy(&answer, "soko has 4 orders"), "{answer}");

    soko.restart().await;
    let relays = [soko.relay_url()];
    greedy = User::with_keys(greedy.keys.clone(), &relays).await;
    late = User::with_keys(late.keys.clone(), &relays).await;
    // The answers from before the restart come again first, from the relay's store.
    greedy.all_dms(QUIET_PERIOD).await;
    late.all_dms(QUIET_PERIOD).await;
    let answer = order(&mut late, &shop, "l-1").await;
    assert!(
        busy(&answer, "soko has 4 orders"),
        "after a restart: {answer}"
    );

    // Order 4 is the other key's: paid, it no longer counts in all.
    pay_and_wait(&soko, mint.mint(), &shop, 4, Duration::from_secs(20))
        .await
        .expect("the payment is seen");
    let answer = order(&mut greedy, &shop, "g-4").await;
    assert!(
        busy(&answer, "you have 3 orders"),
        "after a restart: {answer}"
    );
    let answer = order(&mut late, &shop, "l-2").await;
    assert_eq!(answer["type"], 1, "a paid order frees its place: {answer}");

    // Order 1 is the greedy key's first: paid, the key may order again.
    pay_and_wait(&soko, mint.mint(), &shop, 1, Duration::from_secs(20))
        .await
        .expect("the payment is seen");
    greedy.all_dms(QUIET_PERIOD).await;
    let answer = order(&mut greedy, &shop, "g-5").await;
    assert_eq!(
        answer["type"], 1,
        "a paid order frees its buyer's place: {answer}"
    );
    let answer = order(&mut late, &shop, "l-3").await;
    assert!(busy(&answer, "soko has 4 orders"), "{answer}");
}

/// A TCP proxy in front of the mint counting invoice-status requests
/// (`GET /v1/mint/quote/bolt11/<id>`). Sending on the returned channel cuts every open
/// connection (HTTP and the NUT-17 websocket alike), as a network failure would.
async fn counting_proxy(
    upstream: String,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    tokio::sync::watch::Sender<u64>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let (cut, cuts) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counter = counter.clone();
            let mut cuts = cuts.clone();
            // Only a cut after this connection opened closes it.
            cuts.borrow_and_update();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buf[..n]);
                        let hits = text.matches("GET /v1/mint/quote/bolt11/").count();
                        counter.fetch_add(hits as u64, Ordering::Relaxed);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                let cut = async {
                    if cuts.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = async { tokio::join!(up, down) } => {}
                    () = cut => {}
                }
            });
        }
    });
    (url, count, cut)
}

/// Issue 11 item 5, measured: invoice-status requests to the mint in one minute with ten
/// open unpaid orders. Printed, not asserted on timing (run with `--ignored --nocapture`).
/// The dev mint now pushes invoice states (NUT-17), so this measures the push; the
/// twenty-order measurement below runs both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a one-minute measurement"]
async fn measure_mint_requests_with_ten_unpaid_orders() {
    let (mint, _dir) = external_dev_mint(3_600).await;
    let (proxy, count, _cut) = counting_proxy(mint.url().to_owned()).await;
    let soko = TestSoko::start_on_mint(&proxy, |_| {}).await;
    let shop = shop(&soko, 100).await;
    for i in 0..10 {
        let mut key = User::connect(&[soko.relay_url()]).await;
        let answer = key
            .ask_nip04(shop.merchant, &nip15_order(&format!("m-{i}"), 1))
            .await
            .json();
        assert_eq!(answer["type"], 1, "{answer}");
    }
    let start = count.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let used = count.load(std::sync::atomic::Ordering::Relaxed) - start;
    println!("10 open unpaid orders: {used} invoice-status requests to the mint in 60 s");
}

/// Issue 11 item 12: the paid units leave the listed stock in the same transaction as the
/// paid state. Read together (one sled transaction), an order is never seen paid with its
/// units still on sale; before, the stock was saved after the buyer's DMs went out, and a
/// crash (or a concurrent order) in between sold the same units twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_leaves_the_listing_with_the_paid_commit() {
    use sled::Transactional;
    let soko = TestSoko::start().await;
    let shop = shop(&soko, 10).await;
    let buyer = User::connect(&[soko.relay_url()]).await;
    let store = soko.daemon().store();
    let orders: sled::Tree = store
        .tree::<soko::escrow::OrderRecord>("orders")
        .unwrap()
        .raw()
        .clone();
    let listings: sled::Tree = store
        .tree::<serde_json::Value>("listings")
        .unwrap()
        .raw()
        .clone();
    let listing_key = soko::market::Merchants::product_key(&shop.merchant, "mango");
    let mut order_key = shop.merchant.to_bytes().to_vec();
    order_key.extend_from_slice(&1u64.to_be_bytes());

    buyer
        .send_nip04(shop.merchant, &nip15_order("atomic-1", 2))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (state, stock) = loop {
        let seen = (&orders, &listings)
            .transaction(|(o, l)| {
                let record = o.get(&order_key)?;
                let listing = l.get(&listing_key)?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>((record, listing))
            })
            .unwrap();
        let record = seen
            .0
            .map(|bytes| soko::store::decode::<soko::escrow::OrderRecord>(&bytes).unwrap());
        let stock = seen
            .1
            .map(|bytes| soko::store::decode::<serde_json::Value>(&bytes).unwrap())
            .and_then(|v| v["quantity"].as_u64());
        if record
            .as_ref()
            .is_some_and(|r| r.state == EscrowState::Paid)
        {
            break (EscrowState::Paid, stock);
        }
        assert!(tokio::time::Instant::now() < deadline, "never paid");
        tokio::task::yield_now().await;
    };
    assert_eq!((state, stock), (EscrowState::Paid, Some(8)));
}

/// Issue 11 item 12: a total above what the mint takes in one invoice is refused with a
/// reason (`too_large`), not "internal error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_total_above_the_mint_maximum_is_refused_clearly() {
    let soko = TestSoko::start().await;
    let shop = shop(&soko, 10).await;
    let gold = json!({"id":"gold","stall_id":"duka","name":"Gold bar","currency":"sat",
                      "price":6_000_000,"quantity":10});
    assert!(
        operator(
            &soko,
            "product_put",
            json!({"merchant": shop.npub, "product": gold})
        )
        .await
        .ok
    );
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let order = json!({"id": "rich-1", "type": 0,
                       "items": [{"product_id": "gold", "quantity": 2}],
                       "shipping_id": "nairobi"})
    .to_string();
    let answer = buyer.ask_nip04(shop.merchant, &order).await.json();
    assert_eq!(answer["type"], 2, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("too_large"), "{message}");
    assert!(!message.contains("internal"), "{message}");
    // One bar is within the mint's limit.
    let order = order
        .replace("rich-1", "rich-2")
        .replace("\"quantity\":2", "\"quantity\":1");
    let answer = buyer.ask_nip04(shop.merchant, &order).await.json();
    assert_eq!(answer["type"], 1, "{answer}");
}

/// Issue 11 item 12: the books are reconciled against the wallet: after orders are paid and
/// one delivered, nothing drifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_reconcile_with_the_wallet() {
    let soko = TestSoko::start().await;
    let shop = shop(&soko, 10).await;
    let buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .send_nip04(shop.merchant, &nip15_order("b-1", 1))
        .await;
    buyer
        .send_nip04(shop.merchant, &nip15_order("b-2", 2))
        .await;
    assert!(wait_state(&soko, &shop, 2, EscrowState::Paid, Duration::from_secs(20)).await);
    assert!(wait_state(&soko, &shop, 1, EscrowState::Paid, Duration::from_secs(20)).await);
    let books = reconciled(&soko).await;
    assert_eq!(books.drift(), 0, "{books:?}");
    assert_eq!(books.held, Sats(600 + 1_100));
    assert_eq!(books.wallet, Sats(1_700));
}

/// Issue 11 item 1 (replies): a command name of 45,000 characters used to be echoed in the
/// `unknown_command` refusal, a reply larger than relays take, retried every 10 s for a day
/// and never received. Now the name is refused (`too_large`) without the echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_command_name_gets_a_short_refusal() {
    let soko = TestSoko::start().await;
    let mut user = User::connect(&[soko.relay_url()]).await;
    let request = json!({"cmd": "z".repeat(45_000)}).to_string();
    let reply = user.ask_nip04(soko.bot(), &request).await;
    assert!(reply.content.len() < 1_000, "{} bytes", reply.content.len());
    let reply = reply.json();
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "too_large", "{reply}");
    // The bot still answers.
    let pong = user.ask_nip04(soko.bot(), r#"{"cmd":"ping"}"#).await.json();
    assert_eq!(pong["ok"], true);
    assert_eq!(soko.daemon().escrow().watch_failures(), 0);
}

/// Issue 11 item 12: NUT-02 input fees the escrow wallet pays are booked, so the books still
/// balance against the wallet after a payout from a mint that charges them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_balance_after_input_fees() {
    let mint_dir = tempfile::tempdir().unwrap();
    let mint = soko::devmint::DevMint::start_with_input_fee(mint_dir.path(), 0, 1, 400)
        .await
        .unwrap();
    let url = mint.url().to_owned();
    let soko = TestSoko::start_on_mint(&url, |_| {}).await;
    let mama_dir = tempfile::tempdir().unwrap();
    let (lnurlp, _mama_wallet, _server) = lnurl_service_on(0, &url, mama_dir.path()).await;
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp).encode();
    let Shop { merchant, npub } = Mangoes {
        quantity: 10,
        shipping_each: None,
        lightning_address: Some(lnurl),
    }
    .open(&soko.config)
    .await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let mut code = None;
    for (id, units) in [("f-1", 2), ("f-2", 1)] {
        buyer.send_nip04(merchant, &nip15_order(id, units)).await;
        for _ in 0..3 {
            let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("a DM");
            if code.is_none() {
                code = code_in(&dm);
            }
        }
    }
    let delivered = operator(
        &soko,
        "order_deliver",
        json!({"merchant": npub, "order": 1, "code": code.expect("the first code")}),
    )
    .await;
    assert!(delivered.ok, "{delivered:?}");
    let result = delivered.result.unwrap();
    assert!(result["payout"]["paid_sat"].as_u64().is_some(), "{result}");
    let books = reconciled(&soko).await;
    println!("{books:?}");
    assert!(books.input_fees > Sats::ZERO, "{books:?}");
    assert_eq!(books.drift(), 0, "{books:?}");
    assert_eq!(books.held, Sats(600));
}

/// Marks the mint quote `quote_id` paid at the mint, as its Lightning backend does when the
/// invoice is paid (the dev mint's own invoices settle only after an hour in these tests).
async fn pay_invoice(mint: &cdk::Mint, quote_id: &str) {
    let quote = mint
        .mint_quotes()
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.id.to_string() == quote_id)
        .expect("the mint knows the quote");
    mint.pay_mint_quote_for_request_id(cdk::cdk_payment::WaitPaymentResponse {
        payment_id: quote.request_lookup_id.to_string(),
        payment_identifier: quote.request_lookup_id.clone(),
        payment_amount: quote.amount.clone().expect("an amount"),
    })
    .await
    .expect("paid at the mint");
}

/// Places `orders` one-mango orders from fresh keys; returns the buyers in order-number order.
async fn unpaid_orders(soko: &TestSoko, shop: &Shop, orders: usize, tag: &str) -> Vec<User> {
    let mut buyers = Vec::new();
    for i in 0..orders {
        let mut buyer = User::connect(&[soko.relay_url()]).await;
        let answer = buyer
            .ask_nip04(shop.merchant, &nip15_order(&format!("{tag}-{i}"), 1))
            .await
            .json();
        assert_eq!(answer["type"], 1, "{answer}");
        buyers.push(buyer);
    }
    buyers
}

/// Pays order `number` at the mint and waits for soko to see it: how long it took.
async fn pay_and_wait(
    soko: &TestSoko,
    mint: &cdk::Mint,
    shop: &Shop,
    number: u64,
    within: Duration,
) -> Option<Duration> {
    let record = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, number)
        .unwrap()
        .unwrap();
    let start = tokio::time::Instant::now();
    pay_invoice(mint, &record.quote_id).await;
    wait_state(soko, shop, number, EscrowState::Paid, within)
        .await
        .then(|| start.elapsed())
}

/// Waits until the mint pushes the state of `orders` open orders.
async fn wait_pushed(soko: &TestSoko, orders: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pushed = soko.daemon().escrow().pushed_orders();
        if pushed == orders {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pushed} of {orders} orders pushed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 11 item 5, NUT-17: with a mint that pushes invoice states (the dev mint, real cdk
/// behind cdk-axum, advertises them), 20 open unpaid orders cost the mint almost no
/// invoice-status requests, and a payment is still seen at once: the buyer gets the code.
/// Before, soko polled each order after 1, 2, 4… s and then every 15 s whatever the mint
/// offered: 59 requests in these 30 s on the code before. A dropped websocket is reopened and every
/// open invoice subscribed again, and a payment after that is pushed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushing_mint_is_not_polled_for_every_open_order() {
    let (mint, _dir) = external_dev_mint(3_600).await;
    let (proxy, count, cut) = counting_proxy(mint.url().to_owned()).await;
    let soko = TestSoko::start_on_mint(&proxy, |_| {}).await;
    let shop = shop(&soko, 100).await;
    let mut buyers = unpaid_orders(&soko, &shop, 20, "push").await;
    wait_pushed(&soko, 20).await;

    let start = count.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let used = count.load(std::sync::atomic::Ordering::Relaxed) - start;
    println!("20 open unpaid orders, pushing mint: {used} invoice-status requests in 30 s");
    assert!(
        used <= 10,
        "{used} invoice-status requests in 30 s for 20 orders the mint pushes"
    );

    let took = pay_and_wait(&soko, mint.mint(), &shop, 1, Duration::from_secs(10))
        .await
        .expect("a pushed payment is seen");
    println!("pushed payment seen after {took:?}");
    let dms = buyers[0].all_dms(QUIET_PERIOD).await;
    assert!(
        dms.iter().any(|dm| code_in(dm).is_some()),
        "the buyer gets the delivery code"
    );

    // The websocket (and every HTTP connection) dropped: soko reconnects and subscribes the
    // 19 open invoices again; a payment then is pushed as before.
    cut.send_replace(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while soko.daemon().escrow().push_connections() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the websocket was not reopened"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_pushed(&soko, 19).await;
    let took = pay_and_wait(&soko, mint.mint(), &shop, 2, Duration::from_secs(10))
        .await
        .expect("a payment after the reconnection is seen");
    println!("pushed payment after a reconnection seen after {took:?}");
    assert_eq!(soko.daemon().escrow().missed_pushes(), 0);
    let dms = buyers[1].all_dms(QUIET_PERIOD).await;
    assert!(dms.iter().any(|dm| code_in(dm).is_some()));
    assert_eq!(soko.daemon().escrow().watch_failures(), 0);
}

/// A mint whose info does not advertise NUT-17 is polled as before: its paid orders are
/// found by the paced checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_without_push_is_polled() {
    let dir = tempfile::tempdir().unwrap();
    let mint = soko::devmint::DevMint::start_without_push(dir.path(), 0, 3_600)
        .await
        .unwrap();
    let (proxy, count, _cut) = counting_proxy(mint.url().to_owned()).await;
    let soko = TestSoko::start_on_mint(&proxy, |_| {}).await;
    let shop = shop(&soko, 100).await;
    let mut buyers = unpaid_orders(&soko, &shop, 3, "poll").await;
    let start = count.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let used = count.load(std::sync::atomic::Ordering::Relaxed) - start;
    println!("3 open unpaid orders, mint without push: {used} invoice-status requests in 20 s");
    assert!(used >= 3, "the orders are polled: {used}");
    assert_eq!(soko.daemon().escrow().push_connections(), 0);
    assert_eq!(soko.daemon().escrow().pushed_orders(), 0);
    // Polled every 15 s at most by now.
    pay_and_wait(&soko, mint.mint(), &shop, 3, Duration::from_secs(25))
        .await
        .expect("a polled payment is seen");
    let dms = buyers[2].all_dms(QUIET_PERIOD).await;
    assert!(dms.iter().any(|dm| code_in(dm).is_some()));
}

/// Issue 11 item 5, measured for the notes: invoice-status requests to the mint in the
/// minute after 20 unpaid orders were placed, with a mint that pushes invoice states and
/// with one that does not (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a two-minute measurement"]
async fn measure_mint_requests_with_twenty_unpaid_orders() {
    for push in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mint = if push {
            soko::devmint::DevMint::start_settling_after(dir.path(), 0, 3_600).await
        } else {
            soko::devmint::DevMint::start_without_push(dir.path(), 0, 3_600).await
        }
        .unwrap();
        let (proxy, count, _cut) = counting_proxy(mint.url().to_owned()).await;
        let soko = TestSoko::start_on_mint(&proxy, |_| {}).await;
        let shop = shop(&soko, 100).await;
        let before = count.load(std::sync::atomic::Ordering::Relaxed);
        unpaid_orders(&soko, &shop, 20, "m").await;
        let placed = count.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let minute = count.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let second = count.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "push={push}: invoice-status requests while placing 20 orders {}, first minute after {}, second minute {}",
            placed - before,
            minute - placed,
            second - minute
        );
    }
}

/// Issue 16: an order reads only the products it names; it used to read the merchant's
/// whole catalog, twice, so an order cost as much as the merchant lists (bench_orders
/// `--catalog`). It also means one unreadable listing, however it got there, refuses only
/// the orders that name it, not every order of the shop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_listing_refuses_only_the_orders_that_name_it() {
    let soko = TestSoko::start().await;
    let shop = shop(&soko, 10).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let listings: sled::Tree = soko
        .daemon()
        .store()
        .tree::<serde_json::Value>("listings")
        .unwrap()
        .raw()
        .clone();
    listings
        .insert(
            soko::market::Merchants::product_key(&shop.merchant, "broken"),
            b"\xffnot a listing".to_vec(),
        )
        .unwrap();

    let reply = buyer
        .ask_nip04(shop.merchant, &nip15_order("beside-the-broken-one", 1))
        .await
        .json();
    assert_eq!(reply["type"], 1, "{reply}");
}
