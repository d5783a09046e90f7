//! The embedded relay's retention window, end to end: DMs and gift wraps (order traffic to
//! and from soko's bot) are gone once the window (`[relay] retention_secs`, gift wraps two
//! days more) has passed, newer ones stay, and public listings (stalls, products) are never
//! pruned, however old.
//!
//! The relay judges other people's timestamps by the world's clock (see src/clock.rs), so
//! these tests age events by their `created_at`, not by moving a clock: written straight
//! into a stopped soko's store with old dates, or given a window of seconds.
#![allow(clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestSoko, User};
use nostr_sdk::prelude::*;
use soko::relay::{Exempt, SledEventStore};
use soko::store::Store;

const DAY: u64 = 24 * 3600;

/// The ids among `ids` that soko's relay serves to a client.
async fn served(soko: &TestSoko, ids: &[EventId]) -> HashSet<EventId> {
    let reader = User::connect(&[soko.relay_url()]).await;
    let events = reader
        .client
        .fetch_events(
            Filter::new().ids(ids.iter().copied()),
            Duration::from_secs(3),
        )
        .await
        .expect("fetch");
    reader.client.shutdown().await;
    events.into_iter().map(|e| e.id).collect()
}

fn dm(from: &Keys, to: PublicKey, created_at: u64) -> Event {
    EventBuilder::new(Kind::EncryptedDirectMessage, "c2VjcmV0?iv=aXY=")
        .tag(Tag::public_key(to))
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(from)
        .expect("sign")
}

fn wrap(to: PublicKey, created_at: u64) -> Event {
    EventBuilder::new(Kind::GiftWrap, "d3JhcA==")
        .tag(Tag::public_key(to))
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(&Keys::generate())
        .expect("sign")
}

fn listing(merchant: &Keys, kind: u16, created_at: u64) -> Event {
    EventBuilder::new(Kind::Custom(kind), r#"{"id":"duka","name":"Duka"}"#)
        .tag(Tag::identifier("duka"))
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(merchant)
        .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_traffic_past_the_window_is_gone_after_a_restart_and_listings_stay() {
    let mut soko = TestSoko::start().await;
    let bot = soko.bot();
    let window = soko.config.relay.retention_secs;
    soko.stop().await;

    let now = Timestamp::now().as_secs();
    let (buyer, merchant) = (Keys::generate(), Keys::generate());
    let old_order = dm(&buyer, bot, now - window - DAY);
    let old_wrap = wrap(bot, now - window - 3 * DAY);
    let old_wrap_to_buyer = wrap(buyer.public_key(), now - window - 3 * DAY);
    // NIP-59 dates wraps up to two days back: within its extra two days, a wrap stays.
    let backdated_wrap = wrap(buyer.public_key(), now - window - DAY);
    let recent_dm = dm(&merchant, buyer.public_key(), now - DAY);
    let stall = listing(&merchant, 30017, now - 90 * DAY);
    let product = listing(&merchant, 30018, now - 60 * DAY);
    {
        // What a soko that ran for months leaves in its relay store.
        let data_dir = soko.data_dir();
        let store = Store::open(&data_dir).expect("store");
        let events = SledEventStore::open(&data_dir, &store, 20_000, None, Exempt::default())
            .await
            .expect("relay store");
        for event in [
            &old_order,
            &old_wrap,
            &old_wrap_to_buyer,
            &backdated_wrap,
            &recent_dm,
            &stall,
            &product,
        ] {
            assert!(events.save_event(event).await.expect("saved").is_success());
        }
    }
    soko.restart().await;

    let ids: Vec<EventId> = [
        &old_order,
        &old_wrap,
        &old_wrap_to_buyer,
        &backdated_wrap,
        &recent_dm,
        &stall,
        &product,
    ]
    .iter()
    .map(|e| e.id)
    .collect();
    let first = served(&soko, &ids).await;
    for (event, kept, what) in [
        (&old_order, false, "an order DM to the bot past the window"),
        (&old_wrap, false, "a gift wrap to the bot past the window"),
        (
            &old_wrap_to_buyer,
            false,
            "a wrap to a buyer past the window",
        ),
        (&backdated_wrap, true, "a wrap within its two extra days"),
        (&recent_dm, true, "a DM within the window"),
        (&stall, true, "a 90-day-old stall"),
        (&product, true, "a 60-day-old product"),
    ] {
        assert_eq!(first.contains(&event.id), kept, "{what}");
    }
    // And gone for good: not brought back by another restart.
    soko.restart().await;
    assert_eq!(served(&soko, &ids).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_relay_prunes_dms_once_their_window_passes_and_keeps_listings() {
    // A window of seconds, so that it passes within the test.
    let soko = TestSoko::start_with(|c| {
        c.relay.retention_secs = 3;
        c.relay.janitor_secs = 1;
    })
    .await;
    let (buyer, merchant) = (
        User::connect(&[soko.relay_url()]).await,
        User::connect(&[soko.relay_url()]).await,
    );
    let order = buyer.send_nip04(merchant.pubkey(), "order").await;
    let now = Timestamp::now().as_secs();
    let stall = listing(&merchant.keys, 30017, now);
    let product = listing(&merchant.keys, 30018, now);
    for event in [&stall, &product] {
        let out = merchant.publish(event).await;
        assert!(
            !out.success.is_empty(),
            "listing accepted: {:?}",
            out.failed
        );
    }
    // Accepted (send_nip04 checks it) means stored: the relay acknowledges after its sync.
    let ids = [order.id, stall.id, product.id];

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut held = served(&soko, &ids).await;
    while held.contains(&order.id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        held = served(&soko, &ids).await;
    }
    assert!(!held.contains(&order.id), "the DM outlived its window");
    assert!(held.contains(&stall.id) && held.contains(&product.id));
    // A copy sent again now is refused as too old: it does not come back either.
    let again = buyer.publish(&order).await;
    assert!(again.success.is_empty(), "an expired DM was taken back");
}
