//! Restarting soko in the middle of each escrow state resumes correctly: soko is stopped
//! between steps and started again on the same data dir (and, in the crash test, the real
//! binary is killed with SIGKILL). Every test checks conservation: what soko holds for orders
//! plus what it owes merchants is its escrow wallet's balance, and the mint's outstanding
//! ecash is that balance plus what left soko (payouts, refunds).
//!
//! A payment landing while soko is down is in `checkout.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::binary::Binary;
use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::escrow::{EscrowState, OrderRecord};
use soko::money::Sats;

/// A user whose DMs are read once: copies re-sent after a reconnect are skipped.
struct Person {
    user: User,
    seen: HashSet<EventId>,
}

impl Person {
    async fn connect(keys: Keys, relays: &[RelayUrl]) -> Self {
        Self {
            user: User::with_keys(keys, relays).await,
            seen: HashSet::new(),
        }
    }

    /// The same keys on a new connection (after a restart), remembering what was read.
    async fn reconnect(self, relays: &[RelayUrl]) -> Self {
        self.user.client.shutdown().await;
        Self {
            user: User::with_keys(self.user.keys.clone(), relays).await,
            seen: self.seen,
        }
    }

    /// The next DM not read before.
    async fn next_new(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let dm = self
                .user
                .next_dm(deadline - tokio::time::Instant::now())
                .await?;
            if self.seen.insert(dm.event_id) {
                return Some(dm);
            }
        }
    }

    /// The first new DM containing `needle`; other new DMs are passed over.
    async fn until(&mut self, needle: &str) -> Received {
        loop {
            let dm = self
                .next_new(REPLY_TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("a DM containing {needle:?}"));
            if dm.content.contains(needle) {
                return dm;
            }
        }
    }

    /// Every new DM within the quiet period.
    async fn drain(&mut self) -> Vec<Received> {
        let mut all = Vec::new();
        while let Some(dm) = self.next_new(QUIET_PERIOD).await {
            all.push(dm);
        }
        all
    }

    /// Sends a command as NIP-17 and returns the answer to its request id.
    async fn command(&mut self, bot: PublicKey, request: Value) -> Value {
        let id = request["id"].as_str().expect("request id").to_owned();
        self.user.send_nip17(bot, &request.to_string()).await;
        loop {
            let reply = self
                .next_new(REPLY_TIMEOUT)
                .await
                .expect("an answer")
                .json();
            if reply["re"] == id {
                return reply;
            }
        }
    }
}

/// Waits for the paid status and the code DM (a relay may send stored DMs in any order)
/// and returns the code.
async fn paid_code(buyer: &mut Person) -> String {
    let (mut paid, mut code) = (false, None);
    while !paid || code.is_none() {
        let dm = buyer
            .next_new(REPLY_TIMEOUT)
            .await
            .expect("the paid status and the code");
        paid |= dm.content.contains("\"paid\":true");
        if dm.content.contains("Delivery code") {
            assert!(code.is_none(), "one code only: {}", dm.content);
            code = Some(code_in(&dm).expect("8 digits in the code DM"));
        }
    }
    code.unwrap()
}

fn order(id: &str, quantity: i64) -> String {
    json!({"id": id, "type": 0, "name": "Amina", "address": "Moi Avenue 12",
           "contact": {"nostr": "npub1x"}, "items": [{"product_id": "mango", "quantity": quantity}],
           "shipping_id": "nairobi"})
    .to_string()
}

fn order_of(soko: &TestSoko, merchant: &PublicKey, number: u64) -> Option<OrderRecord> {
    soko.daemon().escrow().order(merchant, number).unwrap()
}

fn deliver(npub: &str, number: u64, code: &str) -> Value {
    json!({"merchant": npub, "order": number, "code": code})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_expiring_while_soko_is_down_releases_its_stock_on_start() {
    // Invoices that are never paid in time, and a payment window the test passes by moving
    // soko's clock while soko is down.
    let (mint, _mint_dir) = external_dev_mint(3_600).await;
    let url = mint.url().to_owned();
    let mut soko = TestSoko::start_on_mint(&url, |c| {
        c.market.payment_window_secs = 600;
    })
    .await;
    let merchant = mango_shop(&soko).await.merchant;
    let mut buyer = Person::connect(Keys::generate(), &[soko.relay_url()]).await;
    buyer.user.send_nip17(merchant, &order("all-3", 3)).await;
    assert_eq!(buyer.until("\"type\":1").await.json()["id"], "all-3");
    buyer.user.send_nip04(merchant, &order("one-more", 1)).await;
    assert!(buyer.until("one-more").await.content.contains("only 0"));

    // Down while the window passes: the restarted soko keeps the same (moved) clock.
    soko.stop().await;
    soko.advance(601);
    soko.restart().await;
    let mut buyer = buyer.reconnect(&[soko.relay_url()]).await;
    let expired = buyer.until("expired").await;
    assert!(expired.nip17, "told in the order's scheme");
    assert_eq!(expired.json()["id"], "all-3");
    assert_eq!(
        order_of(&soko, &merchant, 1).unwrap().state,
        EscrowState::Expired
    );
    // The three mangoes are back: a late order gets them all.
    buyer.user.send_nip04(merchant, &order("late", 3)).await;
    let late = buyer.until("late").await.json();
    assert_eq!(late["type"], 1, "{late}");
    assert_eq!(
        assert_conserved(&soko, mint.mint(), 0).await,
        (Sats::ZERO, Sats::ZERO)
    );
    soko.stop().await;
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_survives_restarts_ignores_replays_and_is_credited_once() {
    let mut soko = TestSoko::start().await;
    let Shop { merchant, npub } = mango_shop(&soko).await;
    let mut buyer = Person::connect(Keys::generate(), &[soko.relay_url()]).await;
    let order_dm = buyer.user.send_nip04(merchant, &order("o-1", 1)).await;
    buyer.until("\"type\":1").await;
    let code = paid_code(&mut buyer).await;

    // Paid → restart: still paid, the money still held.
    soko.restart().await;
    let mint = embedded_mint(&soko);
    assert_eq!(
        order_of(&soko, &merchant, 1).unwrap().state,
        EscrowState::Paid
    );
    assert_eq!(
        assert_conserved(&soko, &mint, 0).await,
        (Sats(610), Sats::ZERO)
    );

    // The relay sends the order DM to the restarted bot again (it resubscribes from before
    // its checkpoint), and the buyer's client sends it once more: handled once, ever.
    let mut buyer = buyer.reconnect(&[soko.relay_url()]).await;
    buyer.user.publish(&order_dm).await;
    let news = buyer.drain().await;
    assert!(
        news.is_empty(),
        "nothing new for a replayed event: {news:?}"
    );
    // The same order in a new event is the same order: its status, no new invoice.
    buyer.user.send_nip17(merchant, &order("o-1", 1)).await;
    let again = buyer.until("o-1").await.json();
    assert_eq!(
        (again["type"].as_u64(), again["paid"].as_bool()),
        (Some(2), Some(true)),
        "{again}"
    );
    assert!(order_of(&soko, &merchant, 2).is_none(), "one order only");
    assert_eq!(
        assert_conserved(&soko, &mint, 0).await,
        (Sats(610), Sats::ZERO)
    );

    // Deliver with the code from before the restart, with a request id the operator
    // will replay.
    let operator_keys = soko::identity::operator_keys(&soko.data_dir()).unwrap();
    let mut admin = Person::connect(operator_keys, &[soko.relay_url()]).await;
    let request =
        json!({"id": "deliver-1", "cmd": "order_deliver", "args": deliver(&npub, 1, &code)});
    let delivered = admin.command(soko.bot(), request.clone()).await;
    assert_eq!(delivered["ok"], true, "{delivered}");
    assert_eq!(delivered["result"]["released_sat"], 610);
    assert_eq!(delivered["result"]["balance_sat"], 610);
    buyer.until("\"shipped\":true").await;

    // Paid out → restart: the replayed request gets the first answer without running
    // again, and the same delivery in a new request is refused. Nothing is credited twice.
    soko.restart().await;
    let mint = embedded_mint(&soko);
    assert_eq!(
        order_of(&soko, &merchant, 1).unwrap().state,
        EscrowState::PaidOut
    );
    let mut admin = admin.reconnect(&[soko.relay_url()]).await;
    let replayed = admin.command(soko.bot(), request).await;
    assert_eq!(replayed, delivered, "the stored answer");
    let again = operator(&soko, "order_deliver", deliver(&npub, 1, &code)).await;
    assert!(
        again.error.unwrap().message.contains("cannot be delivered"),
        "a second delivery is refused"
    );
    assert_eq!(
        soko.daemon().escrow().balance(&merchant).unwrap(),
        Sats(610)
    );
    assert_eq!(
        assert_conserved(&soko, &mint, 0).await,
        (Sats::ZERO, Sats(610))
    );
    let mut buyer = buyer.reconnect(&[soko.relay_url()]).await;
    let news = buyer.drain().await;
    assert!(news.is_empty(), "no second completion notice: {news:?}");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_order_stays_locked_across_a_restart_and_is_refunded() {
    let mut soko = TestSoko::start().await;
    let Shop { merchant, npub } = mango_shop(&soko).await;
    let mut buyer = Person::connect(Keys::generate(), &[soko.relay_url()]).await;
    buyer.user.send_nip17(merchant, &order("o-l", 1)).await;
    let code = paid_code(&mut buyer).await;
    for _ in 0..5 {
        let wrong = operator(&soko, "order_deliver", deliver(&npub, 1, "11111111")).await;
        assert!(wrong.error.is_some());
    }
    assert_eq!(
        order_of(&soko, &merchant, 1).unwrap().state,
        EscrowState::Disputed
    );

    soko.restart().await;
    let mint = embedded_mint(&soko);
    assert_eq!(
        order_of(&soko, &merchant, 1).unwrap().state,
        EscrowState::Disputed,
        "still locked"
    );
    let right = operator(&soko, "order_deliver", deliver(&npub, 1, &code)).await;
    assert!(
        right.error.is_some(),
        "the right code no longer releases it"
    );
    assert_eq!(
        assert_conserved(&soko, &mint, 0).await,
        (Sats(610), Sats::ZERO)
    );

    let refund = operator(&soko, "order_refund", json!({"merchant": npub, "order": 1})).await;
    assert_eq!(refund.result.unwrap()["refund_sat"], 610);
    let mut buyer = buyer.reconnect(&[soko.relay_url()]).await;
    let token_dm = buyer.until("Refund for order").await;
    let token = token_dm.content.lines().last().unwrap().trim().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let wallet = soko::wallet::open(&store, "buyer", soko.daemon().mint_url(), &[4; 64]).unwrap();
    let received = wallet
        .receive(&token, cdk::wallet::ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 610);
    assert_eq!(
        order_of(&soko, &merchant, 1).unwrap().state,
        EscrowState::Refunded
    );
    assert_eq!(
        assert_conserved(&soko, &mint, 610).await,
        (Sats::ZERO, Sats::ZERO)
    );
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_failed_while_the_lnurl_server_was_down_succeeds_after_a_restart() {
    let mut soko = TestSoko::start().await;
    let mint_url = soko.daemon().mint_url().to_owned();
    // Mama's Lightning address points at a port where nothing listens yet.
    let lnurl_port = free_port();
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp_url_on(lnurl_port)).encode();
    let Shop { merchant, npub } = Mangoes {
        lightning_address: Some(lnurl),
        ..Mangoes::default()
    }
    .open(&soko.config)
    .await;
    let mut buyer = Person::connect(Keys::generate(), &[soko.relay_url()]).await;
    buyer.user.send_nip04(merchant, &order("p-1", 1)).await;
    let code = paid_code(&mut buyer).await;
    let delivered = operator(&soko, "order_deliver", deliver(&npub, 1, &code)).await;
    let result = delivered.result.expect("released");
    assert!(result["payout"]["error"].is_string(), "{result}");
    assert_eq!(result["balance_sat"], 610, "the balance stays in soko");
    let mint = embedded_mint(&soko);
    assert_eq!(
        assert_conserved(&soko, &mint, 0).await,
        (Sats::ZERO, Sats(610))
    );

    // Restart with the service up; the next delivery pays the whole balance out.
    soko.stop().await;
    let mama_dir = tempfile::tempdir().unwrap();
    let (_, mama, server) = lnurl_service_on(lnurl_port, &mint_url, mama_dir.path()).await;
    soko.restart().await;
    let mint = embedded_mint(&soko);
    let mut buyer = buyer.reconnect(&[soko.relay_url()]).await;
    buyer.user.send_nip04(merchant, &order("p-2", 1)).await;
    let code = paid_code(&mut buyer).await;
    let delivered = operator(&soko, "order_deliver", deliver(&npub, 2, &code)).await;
    let result = delivered.result.expect("released");
    let paid = result["payout"]["paid_sat"].as_u64().expect("paid out");
    let fee = result["payout"]["fee_sat"].as_u64().unwrap();
    let left = result["balance_sat"].as_u64().unwrap();
    // Both orders' 610 sat: what was paid, the fee and what is left add up.
    assert_eq!(paid + fee + left, 1220, "{result}");
    assert!(paid > 1200, "all but the fee reserve went out: {result}");
    assert_eq!(
        soko.daemon().escrow().balance(&merchant).unwrap(),
        Sats(left)
    );

    // Mama mints what her invoice was paid.
    assert_eq!(mint_paid_invoice(&mama, paid).await, paid);
    assert_eq!(
        assert_conserved(&soko, &mint, paid).await,
        (Sats::ZERO, Sats(left))
    );
    server.abort();
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_killed_between_steps_pays_the_merchant_exactly_once() {
    // The mint lives in the test, so it outlives every kill and its books can be read.
    // Its invoices settle 3 s after they are issued: the payment lands while soko is dead.
    let (mint, _mint_dir) = external_dev_mint(3).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("data"));
    config.relay.port = free_port();
    let mut soko = Binary::new(
        dir.path(),
        config.relay.port,
        &config.storage.data_dir,
        mint.url(),
        "[lnurl]\nallow_loopback_http = true\n",
    );
    let config = soko.config();
    let relay = RelayUrl::parse(&format!("ws://127.0.0.1:{}", config.relay.port)).unwrap();
    soko.start().await;
    let Shop { merchant, npub } = Mangoes::default().open(&config).await;
    let mut buyer = Person::connect(Keys::generate(), std::slice::from_ref(&relay)).await;
    buyer.user.send_nip04(merchant, &order("k-1", 2)).await;
    let request = buyer.until("\"type\":1").await.json();
    assert!(
        request["message"].as_str().unwrap().contains("1120 sat"),
        "{request}"
    );

    // Killed while the order awaits payment; the payment lands meanwhile.
    soko.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    soko.start().await;
    let mut buyer = buyer.reconnect(std::slice::from_ref(&relay)).await;
    let code = paid_code(&mut buyer).await;

    // Killed right after the buyer got the code.
    soko.kill();
    soko.start().await;
    let delivered = soko::operator::call(&config, "order_deliver", deliver(&npub, 1, &code))
        .await
        .unwrap();
    assert!(delivered.ok, "{delivered:?}");
    let result = delivered.result.unwrap();
    assert_eq!(
        (&result["released_sat"], &result["balance_sat"]),
        (&json!(1120), &json!(1120))
    );
    let again = soko::operator::call(&config, "order_deliver", deliver(&npub, 1, &code))
        .await
        .unwrap();
    assert!(!again.ok, "the code works once: {again:?}");

    // Killed once more; what is on disk is one paid-out order and a balance of its total.
    soko.kill();
    let data = config.storage.data_dir.clone();
    let store = soko::store::Store::open(&data).unwrap();
    let orders: soko::store::Typed<OrderRecord> = store.tree("orders").unwrap();
    let all: Vec<OrderRecord> = orders.iter().map(|e| e.unwrap().1).collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, EscrowState::PaidOut);
    let balances: soko::store::Typed<Sats> = store.tree("balances").unwrap();
    assert_eq!(
        balances.get(&merchant.to_bytes()).unwrap(),
        Some(Sats(1120))
    );
    let seed = soko::identity::wallet_seed(&data).unwrap();
    let wallet = soko::wallet::open(&store, "escrow", mint.url(), &seed).unwrap();
    assert_eq!(u64::from(wallet.total_balance().await.unwrap()), 1120);
    assert_eq!(outstanding_at(mint.mint()).await, 1120, "minted once");
    drop(wallet);
    drop(store);
    mint.shutdown().await;
}

/// The unix second of the newest DM handled, which a restart resubscribes from before
/// (`meta`'s `subscription_checkpoint`, src/store): DMs within one second write it once,
/// and a DM in a later second moves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_follows_the_dms_handled() {
    let mut soko = TestSoko::start().await;
    let meta: soko::store::Typed<u64> = soko
        .daemon()
        .store()
        .tree(soko::store::trees::META)
        .unwrap();
    let checkpoint = || meta.get(b"subscription_checkpoint").unwrap();
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let before = Timestamp::now().as_secs();
    for n in 0..3 {
        let reply = alice
            .ask_nip04(soko.bot(), &format!(r#"{{"id":"c{n}","cmd":"ping"}}"#))
            .await;
        assert_eq!(reply.json()["ok"], true);
    }
    let first = checkpoint().expect("a checkpoint once a DM is handled");
    assert!(
        (before..=Timestamp::now().as_secs()).contains(&first),
        "{first}"
    );
    // The next second: the next DM moves it.
    while Timestamp::now().as_secs() <= first {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = alice
        .ask_nip04(soko.bot(), r#"{"id":"c-later","cmd":"ping"}"#)
        .await;
    assert_eq!(reply.json()["ok"], true);
    assert!(checkpoint().expect("still there") > first);
    soko.stop().await;
}

/// DMs a crash (or a stop) left unanswered are all answered at the next start, even past
/// the 500 a relay sends for a subscription without a `limit`: the bot's own resubscription
/// asks for all of them. Here the relay runs alone on soko's data dir while 600 pings come
/// in, as if the bot had fallen behind and been killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_a_relays_default_limit_is_answered_after_a_restart() {
    const SENDERS: usize = 10;
    const PINGS: usize = 60;
    let mut soko = TestSoko::start().await;
    let bot = soko.bot();
    soko.stop().await;
    let data_dir = soko.data_dir();
    let mut alone = soko.config.relay.clone();
    alone.port = 0;
    let store = soko::store::Store::open(&data_dir).unwrap();
    let relay = soko::relay::EmbeddedRelay::start(
        &alone,
        &data_dir,
        &store,
        soko::relay::Exempt::default(),
        std::sync::Arc::new(|_: &EventId| false),
    )
    .await
    .unwrap();
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let sender = User::connect(&[relay.url().clone()]).await;
        for p in 0..PINGS {
            let ping = sender.nip04(bot, &format!(r#"{{"id":"s{s}-p{p}","cmd":"ping"}}"#));
            let out = sender.publish(&ping).await;
            assert!(!out.success.is_empty(), "stored: {:?}", out.failed);
        }
        sender.client.shutdown().await;
        senders.push(sender.keys.clone());
    }
    relay.shutdown();
    drop(relay);
    drop(store);

    soko.restart().await;
    for (s, keys) in senders.into_iter().enumerate() {
        let mut sender = User::with_keys(keys, &[soko.relay_url()]).await;
        let mut answered = HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while answered.len() < PINGS {
            let Some(dm) = sender.next_dm(deadline - tokio::time::Instant::now()).await else {
                break;
            };
            if let Some(re) = dm.json()["re"].as_str() {
                answered.insert(re.to_owned());
            }
        }
        assert_eq!(
            answered.len(),
            PINGS,
            "sender {s}: {} of {PINGS} answered",
            answered.len()
        );
    }
    soko.stop().await;
}
