//! The P2P exchange on real parts: two registered traders, each in a private session of its
//! own (BATs from soko's embedded dev mint), the embedded relay, the dev mint's fake
//! Lightning backend settling the invoices, sled on a temp dir.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::exchange::{exchange_config, offer_args, session_balance, whole_trade, Trader};
use common::sessions::{code, redeem};
use common::{events_of, TestSoko};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

const BOOK: u16 = 38383;

/// The book event soko published for `offer` once it says `status` (the outbox sends it
/// right after the move that staged it).
async fn book_entry(soko: &TestSoko, offer: &str, status: &str) -> Event {
    let deadline = tokio::time::Instant::now() + common::REPLY_TIMEOUT;
    loop {
        let found = events_of(soko, soko.bot(), Kind::Custom(BOOK))
            .await
            .into_iter()
            .find(|e| e.tags.identifier() == Some(offer) && tag(e, "s") == Some(status));
        if let Some(event) = found {
            return event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status} book event for {offer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn tag<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event
        .tags
        .iter()
        .find(|t| t.kind().to_string() == name)
        .and_then(|t| t.content())
}

/// Nothing in the event names any of `keys`, in any encoding.
fn names_none(event: &Event, keys: &[PublicKey]) {
    let text = event.as_json();
    for key in keys {
        for form in [key.to_hex(), key.to_bech32().unwrap()] {
            assert!(!text.contains(&form), "the book event names {form}: {text}");
        }
    }
}

/// A listed offer of `sats` made by `maker`: its id and the reply to `offer_create`.
async fn listed(soko: &TestSoko, maker: &mut Trader, sats: u64) -> (String, Value) {
    let created = maker
        .ok(soko, "offer_create", offer_args("1500", sats))
        .await;
    let offer = created["offer"].as_str().unwrap().to_owned();
    assert_eq!(created["state"], "CREATED");
    maker.notice(&offer, "INVOICE_PAID").await;
    (offer, created)
}

/// `taker` claims `offer` and its bond gets paid: the notice with the bill.
async fn taken(soko: &TestSoko, taker: &mut Trader, offer: &str) -> Value {
    let claimed = taker.ok(soko, "offer_claim", json!({"offer": offer})).await;
    assert_eq!(claimed["state"], "CLAIMED");
    assert!(
        claimed["invoice"].as_str().unwrap().starts_with("ln"),
        "{claimed}"
    );
    assert!(
        claimed.get("bill").is_none(),
        "the bill before the bond: {claimed}"
    );
    taker.notice(offer, "TAKER_BOND_PAID").await
}

#[tokio::test]
async fn a_whole_trade_pays_the_taker_returns_the_bonds_and_keeps_the_fees() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;

    let (offer, created) = listed(&soko, &mut maker, 100_000).await;
    let amounts = created["amounts"].clone();
    // OpenPleb's defaults: bonds 5 % + 1000, platform fee 1 % + 100, taker fee 50.
    assert_eq!(
        amounts,
        json!({"escrow": 100_000, "maker_bond": 6_000, "taker_bond": 6_000, "platform_fee": 1_100, "taker_fee": 50})
    );
    assert_eq!(created["invoice_sat"], 107_100);
    let book = book_entry(&soko, &offer, "pending").await;
    assert_eq!(tag(&book, "amt"), Some("100000"));
    assert_eq!(tag(&book, "fa"), Some("1500"));
    assert_eq!(tag(&book, "f"), Some("KES"));

    let bond_paid = taken(&soko, &mut taker, &offer).await;
    assert_eq!(bond_paid["bill"]["reference"], "888880", "{bond_paid}");
    maker.notice(&offer, "TAKER_BOND_PAID").await;
    book_entry(&soko, &offer, "in-progress").await;

    let submitted = taker
        .ok(
            &soko,
            "receipt_submit",
            json!({"offer": offer, "text": "Confirmed. KES 1,500 paid to 888880"}),
        )
        .await;
    assert_eq!(submitted["state"], "RECEIPT_SUBMITTED");
    let told = maker.notice(&offer, "RECEIPT_SUBMITTED").await;
    assert_eq!(
        told["receipt"]["text"],
        "Confirmed. KES 1,500 paid to 888880"
    );

    let done = maker
        .ok(&soko, "receipt_confirm", json!({"offer": offer}))
        .await;
    assert_eq!(done["state"], "COMPLETED");
    let paid = taker.notice(&offer, "COMPLETED").await;
    assert_eq!(
        paid["you_get_sat"], 106_000,
        "escrow and the bond back: {paid}"
    );
    maker.notice(&offer, "COMPLETED").await;

    // Mint-side: the maker keeps its bond, the taker has escrow + its bond, soko the fees.
    assert_eq!(session_balance(&soko, &mut maker).await, 6_000);
    assert_eq!(session_balance(&soko, &mut taker).await, 106_000);
    assert_eq!(
        soko.daemon().exchange().house_balance().await.unwrap().0,
        1_150
    );
    let book = book_entry(&soko, &offer, "success").await;
    names_none(
        &book,
        &[
            maker.user.pubkey(),
            maker.registered.pubkey(),
            taker.user.pubkey(),
            taker.registered.pubkey(),
        ],
    );

    // The trade no longer holds the sessions: both close, and their ecash comes back.
    let closed = taker.ok(&soko, "close_session", json!({})).await;
    assert_eq!(closed["returned_sat"], 106_000);
    let refund = taker.text().await;
    assert!(refund.starts_with("Refund from soko"), "{refund}");
    let token = refund.lines().last().unwrap().trim().to_owned();
    assert_eq!(redeem(soko.daemon().mint_url(), &token).await, 106_000);
}

#[tokio::test]
async fn a_trade_holds_the_sessions_and_other_sessions_see_nothing_private() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;
    let mut stranger = Trader::join(&soko).await;
    let created = maker
        .ok(&soko, "offer_create", offer_args("1500", 50_000))
        .await;
    let offer = created["offer"].as_str().unwrap().to_owned();
    // Before it is paid nobody else may even learn it exists.
    let early = stranger
        .ask(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    assert_eq!(code(&early), "not_found");
    maker.notice(&offer, "INVOICE_PAID").await;

    // A maker cannot walk off with the escrow by closing its session mid-trade.
    let close = maker.ask(&soko, "close_session", json!({})).await;
    assert_eq!(code(&close), "busy", "{close}");
    let own = maker
        .ask(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    assert_eq!(code(&own), "invalid");

    taken(&soko, &mut taker, &offer).await;
    // Claiming again (a client retrying) answers the claim as it stands, and takes nothing.
    let again = taker
        .ok(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    assert_eq!(
        (again["state"].as_str(), again["role"].as_str()),
        (Some("TAKER_BOND_PAID"), Some("taker"))
    );
    for (cmd, args) in [
        ("offer_status", json!({"offer": offer})),
        ("receipt_submit", json!({"offer": offer, "text": "paid"})),
        ("receipt_confirm", json!({"offer": offer})),
        ("offer_cancel", json!({"offer": offer})),
        ("offer_claim", json!({"offer": offer})),
    ] {
        let reply = stranger.ask(&soko, cmd, args).await;
        assert!(
            ["not_found", "invalid"].contains(&code(&reply)),
            "{cmd} by a third session: {reply}"
        );
        assert!(
            !reply.to_string().contains("888880"),
            "{cmd} leaked the bill: {reply}"
        );
    }
    // The taker may not confirm its own receipt.
    taker
        .ok(
            &soko,
            "receipt_submit",
            json!({"offer": offer, "text": "paid"}),
        )
        .await;
    let confirm = taker
        .ask(&soko, "receipt_confirm", json!({"offer": offer}))
        .await;
    assert_eq!(code(&confirm), "forbidden");
}

/// soko sends a trade's notices as it commits the move they report, not at the outbox's
/// retry pass (every 10 s): with that pass, of two steps in a row at most one can be told
/// within 4 s, since the second is staged just after the pass that sent the first.
#[tokio::test]
async fn notices_go_out_with_the_move_not_at_the_outbox_retry() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;
    let (offer, _) = listed(&soko, &mut maker, 50_000).await;
    taken(&soko, &mut taker, &offer).await;
    let prompt = std::time::Duration::from_secs(4);

    taker
        .ok(
            &soko,
            "receipt_submit",
            json!({"offer": offer, "text": "paid"}),
        )
        .await;
    tokio::time::timeout(prompt, maker.notice(&offer, "RECEIPT_SUBMITTED"))
        .await
        .expect("the maker told of the receipt within 4 s of the reply");
    maker
        .ok(&soko, "receipt_confirm", json!({"offer": offer}))
        .await;
    tokio::time::timeout(prompt, taker.notice(&offer, "COMPLETED"))
        .await
        .expect("the taker told of its payout within 4 s of the reply");
}

/// Many trades at once on two workers, as `soko run` has on two cores. The dev mint's SQLite
/// calls block the thread they run on; while it shared soko's runtime, writers waiting for its
/// lock stopped both workers and the one holding it could not commit: "database is locked",
/// and bench_exchange completed none of 40 trades at once. Every trade completes, and the
/// sessions plus the fee wallet hold exactly what was paid in.
///
/// Ignored in the suite: the fix makes the lock-up rare, not impossible. Beside the suite's
/// other tests on two cores, one run in two saw a reply take over 10 s (cdk writes from tasks
/// the dev mint cannot pace). Run it alone: `cargo test --test exchange -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test, run alone: on two cores beside the suite's other tests a reply can take over 10 s"]
async fn thirty_trades_at_once_all_complete() {
    const TRADES: usize = 30;
    let soko = Arc::new(
        TestSoko::start_with(|config| {
            exchange_config(config);
            // The load is the point here, not the budgets that would refuse it.
            config.relay.rate_limit_per_minute = 100_000;
            config.relay.connection_write_per_minute = 100_000;
            config.relay.write_budget_per_minute = 100_000;
            config.limits.anonymous = 100_000;
            config.limits.session = 100_000;
        })
        .await,
    );
    let mut pairs = Vec::new();
    for _ in 0..TRADES {
        pairs.push((Trader::join(&soko).await, Trader::join(&soko).await));
    }
    let mut trades = tokio::task::JoinSet::new();
    for (mut maker, mut taker) in pairs {
        let soko = Arc::clone(&soko);
        trades.spawn(async move {
            let (_, to_maker, to_taker) = whole_trade(
                &soko,
                &mut maker,
                &mut taker,
                offer_args("1500", 10_000),
                json!({}),
            )
            .await;
            assert_eq!(to_maker["outcome"], "completed", "{to_maker}");
            assert_eq!(to_taker["outcome"], "completed", "{to_taker}");
            let held =
                session_balance(&soko, &mut maker).await + session_balance(&soko, &mut taker).await;
            held
        });
    }
    let mut held = 0;
    while let Some(trade) = trades.join_next().await {
        held += trade.expect("every trade completes");
    }
    // Per trade: escrow 10000 + maker bond 1500 + platform fee 200 paid by the maker, taker
    // bond 1500 + taker fee 50 by the taker; the fees went to soko's fee wallet.
    let fees = TRADES as u64 * (200 + 50);
    assert_eq!(
        held,
        TRADES as u64 * (10_000 + 1_500 + 200 + 1_500 + 50) - fees
    );
}
