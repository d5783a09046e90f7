//! The real binary crashed at chosen moments of an event's path (`SOKO_FAILPOINT`, see
//! `src/failpoint.rs`) or killed right after its relay acknowledged events: whatever the
//! moment, an event the relay stored (and acknowledged, unless the crash came first) is
//! answered by the next start, once, without waiting for yet another start.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::binary::Binary;
use common::*;
use nostr_sdk::prelude::*;
use serde_json::json;

fn order(id: &str) -> String {
    json!({"id": id, "type": 0, "name": "Amina", "address": "Moi Avenue 12",
           "contact": {"nostr": "npub1x"}, "items": [{"product_id": "mango", "quantity": 1}],
           "shipping_id": "nairobi"})
    .to_string()
}

/// The payment requests (NIP-15 type 1) about `order_id` among `dms`.
fn invoices(dms: &[Received], order_id: &str) -> usize {
    dms.iter()
        .filter(|dm| {
            let reply = dm.json();
            reply["id"] == order_id && reply["type"] == 1
        })
        .count()
}

/// soko crashes at `point` while handling an order; the next start (whose event loop starts
/// late, as on a loaded machine) must answer it with exactly one payment request.
async fn order_answered_after_a_crash_at(point: &str, nip17: bool) {
    order_of_the_last_units_answered_after_a_crash_at(point, nip17, 100).await;
}

/// The same, with `stock` mangoes listed (the order takes one).
async fn order_of_the_last_units_answered_after_a_crash_at(point: &str, nip17: bool, stock: u64) {
    let (mint, _mint_dir) = external_dev_mint(3_600).await;
    let dir = tempfile::tempdir().unwrap();
    let mut soko = Binary::in_dir(dir.path(), mint.url());
    let config = soko.config();
    soko.start().await;
    let merchant = Mangoes::stock(stock).open(&config).await.merchant;
    soko.kill();

    soko.start_failing_at(point).await;
    let keys = Keys::generate();
    let buyer = User::with_keys(keys.clone(), &[soko.relay()]).await;
    let order_id = format!("crash-{point}");
    let dm = if nip17 {
        buyer.nip17(merchant, &order(&order_id)).await
    } else {
        buyer.nip04(merchant, &order(&order_id))
    };
    // The `OK` may not come: the bot takes an event from its relay in-process once it is on
    // disk, which can be before the relay has written `OK` to the buyer, and a crash at
    // "before-claim" then takes the connection down first. Stored is what counts.
    let _ = buyer.client.send_event(&dm).await;
    soko.crashed().await;
    buyer.client.shutdown().await;

    soko.start_failing_at("slow-event-loop").await;
    let mut buyer = User::with_keys(keys, &[soko.relay()]).await;
    let dms = buyer.all_dms(REPLY_TIMEOUT).await;
    assert_eq!(
        invoices(&dms, &order_id),
        1,
        "one payment request after a crash at {point}: {:?}",
        dms.iter().map(|dm| &dm.content).collect::<Vec<_>>()
    );
    soko.kill();
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_acknowledged_but_not_yet_claimed_is_answered_after_the_crash() {
    order_answered_after_a_crash_at("before-claim", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_claimed_but_not_handled_is_answered_after_the_crash() {
    order_answered_after_a_crash_at("claimed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_reply_was_committed_but_not_sent_is_answered_once() {
    order_answered_after_a_crash_at("committed", false).await;
}

/// An order is recorded key by key, its record last. A crash after the stock is held and
/// before the record leaves the last mango held for no order; the next start frees it, so
/// the order, handled again, is not refused for want of stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_held_for_an_order_a_crash_left_unrecorded_is_freed() {
    order_of_the_last_units_answered_after_a_crash_at("order-held", false, 1).await;
}

/// A pong is committed key by key rather than in a transaction, the event's `done` last: a
/// crash right after that commit still sends it at the next start, once, from the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_committed_but_not_sent_is_sent_once_after_the_crash() {
    let (mint, _mint_dir) = external_dev_mint(3_600).await;
    let dir = tempfile::tempdir().unwrap();
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
        .args(["keys", "show", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(shown.status.success());
    let bot = PublicKey::parse(String::from_utf8(shown.stdout).unwrap().trim()).unwrap();
    let mut soko = Binary::in_dir(dir.path(), mint.url());

    soko.start_failing_at("committed").await;
    let keys = Keys::generate();
    let user = User::with_keys(keys.clone(), &[soko.relay()]).await;
    let dm = user.nip04(bot, r#"{"id":"crash-pong","cmd":"ping"}"#);
    let _ = user.client.send_event(&dm).await;
    soko.crashed().await;
    user.client.shutdown().await;

    soko.start_failing_at("slow-event-loop").await;
    let mut user = User::with_keys(keys, &[soko.relay()]).await;
    let dms = user.all_dms(REPLY_TIMEOUT).await;
    let pongs: std::collections::HashSet<EventId> = dms
        .iter()
        .filter(|dm| dm.json()["re"] == "crash-pong" && dm.json()["result"]["pong"] == true)
        .map(|dm| dm.event_id)
        .collect();
    assert_eq!(
        pongs.len(),
        1,
        "one pong after the crash: {:?}",
        dms.iter().map(|dm| &dm.content).collect::<Vec<_>>()
    );
    soko.kill();
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_relay_acknowledged_survive_a_kill_right_after() {
    let (mint, _mint_dir) = external_dev_mint(3_600).await;
    let dir = tempfile::tempdir().unwrap();
    let mut soko = Binary::in_dir(dir.path(), mint.url());
    soko.start().await;
    let sender = User::connect(&[soko.relay()]).await;
    // Addressed to nobody soko knows: stored by its relay, left alone by its bot.
    let stranger = Keys::generate().public_key();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let event = sender.nip04(stranger, &format!("note {i}"));
        let out = sender.publish(&event).await;
        assert!(!out.success.is_empty(), "accepted: {:?}", out.failed);
        acknowledged.push(event.id);
    }
    soko.kill();
    sender.client.shutdown().await;

    soko.start().await;
    let reader = User::connect(&[soko.relay()]).await;
    let stored = reader
        .client
        .fetch_events(
            Filter::new().ids(acknowledged.iter().copied()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.iter().any(|e| e.id == **id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of 20 acknowledged events gone after the kill: {missing:?}",
        missing.len()
    );
    soko.kill();
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mint_invoices_left_unsettled_by_a_stop_settle_after_the_restart() {
    use cdk::mint::MintQuoteRequest;
    use cdk::nuts::{CurrencyUnit, MintQuoteBolt11Request, MintQuoteState};

    let dir = tempfile::tempdir().unwrap();
    // The first run's backend would settle after an hour: the stop comes first.
    let mint = soko::devmint::DevMint::start_settling_after(dir.path(), 0, 3_600)
        .await
        .unwrap();
    let request = MintQuoteRequest::Bolt11(MintQuoteBolt11Request {
        amount: 21.into(),
        unit: CurrencyUnit::Sat,
        description: None,
        pubkey: None,
    });
    let quote = mint.mint().get_mint_quote(request).await.unwrap();
    let id = quote.quote().clone();
    mint.shutdown().await;

    let mint = soko::devmint::DevMint::start_settling_after(dir.path(), 0, 1)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let quotes = mint.mint().mint_quotes().await.unwrap();
        let state = quotes.iter().find(|q| q.id == id).unwrap().state();
        if state == MintQuoteState::Paid {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invoice is still {state:?} after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mint.shutdown().await;
}
