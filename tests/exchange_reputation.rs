//! Reputation tokens through whole trades: earned blind, staked (burned) on the next offer,
//! given back with one more, refused when reused, lost in a lost dispute.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::exchange::{exchange_config, offer_args, whole_trade, Trader};
use common::sessions::code;
use common::TestSoko;
use serde_json::{json, Value};
use soko::exchange::reputation::client;
use soko::proto::reputation::{RepKeyset, RepSignature, RepToken};

fn signatures(notice: &Value) -> Vec<RepSignature> {
    serde_json::from_value(notice["reputation"]["signatures"].clone()).expect("signatures")
}

/// Unblinds what came back for `pending` (the first as many as were signed).
fn unblind(mut pending: Vec<client::Pending>, notice: &Value, keyset: &RepKeyset) -> Vec<RepToken> {
    let signed = signatures(notice);
    pending.truncate(signed.len());
    client::finish(pending, &signed, keyset).expect("signatures of soko's one key")
}

fn with_reputation(
    mut args: Value,
    stake: &[RepToken],
    outputs: &[soko::proto::reputation::BlindedRep],
) -> Value {
    args["stake"] = serde_json::to_value(stake).unwrap();
    args["outputs"] = serde_json::to_value(outputs).unwrap();
    args
}

#[tokio::test]
async fn reputation_is_earned_staked_burned_and_lost() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;
    let keyset: RepKeyset =
        serde_json::from_value(maker.ok(&soko, "reputation_keyset", json!({})).await).unwrap();

    // 1. Nothing staked: each side earns one token.
    let (maker_pending, maker_outputs) = client::prepare(1);
    let (taker_pending, taker_outputs) = client::prepare(1);
    let (_, to_maker, to_taker) = whole_trade(
        &soko,
        &mut maker,
        &mut taker,
        with_reputation(offer_args("1500", 20_000), &[], &maker_outputs),
        with_reputation(json!({}), &[], &taker_outputs),
    )
    .await;
    let earned = unblind(maker_pending, &to_maker, &keyset);
    assert_eq!(earned.len(), 1);
    assert_eq!(unblind(taker_pending, &to_taker, &keyset).len(), 1);

    // 2. Staked on the next offer (the book shows it), back with one more.
    let (pending, outputs) = client::prepare(2);
    let (offer, to_maker, _) = whole_trade(
        &soko,
        &mut maker,
        &mut taker,
        with_reputation(offer_args("1500", 20_000), &earned, &outputs),
        json!({}),
    )
    .await;
    let record = soko.daemon().exchange().offer(&offer).unwrap().unwrap();
    assert_eq!(record.maker.stake.staked, 1);
    let book = common::events_of(&soko, soko.bot(), nostr_sdk::Kind::Custom(38383))
        .await
        .into_iter()
        .find(|e| e.tags.identifier() == Some(offer.as_str()))
        .expect("listed");
    let staked = book
        .tags
        .iter()
        .find(|t| t.kind().to_string() == "staked")
        .and_then(|t| t.content());
    assert_eq!(staked, Some("1"));
    let two = unblind(pending, &to_maker, &keyset);
    assert_eq!(two.len(), 2);

    // A token is spent once: the first one again is refused, and nothing is created.
    let (_, outputs) = client::prepare(1);
    let reused = maker
        .ask(
            &soko,
            "offer_create",
            with_reputation(offer_args("1500", 20_000), &earned, &outputs),
        )
        .await;
    assert_eq!(code(&reused), "invalid", "{reused}");
    assert!(reused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("reputation"));

    // 3. Staked, then the dispute lost (the maker concedes the taker's issue): up to three
    //    are lost, so both are gone, and they stay spent.
    let (pending, outputs) = client::prepare(3);
    let created = maker
        .ok(
            &soko,
            "offer_create",
            with_reputation(offer_args("1500", 20_000), &two, &outputs),
        )
        .await;
    let offer = created["offer"].as_str().unwrap().to_owned();
    maker.notice(&offer, "INVOICE_PAID").await;
    taker
        .ok(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    taker.notice(&offer, "TAKER_BOND_PAID").await;
    let reveal = taker.reveal(&soko, &offer, "taker", "paid, never confirmed");
    taker
        .ok(
            &soko,
            "offer_issue",
            json!({"offer": offer, "reveal": reveal}),
        )
        .await;
    maker.notice(&offer, "MARKED_WITH_ISSUE").await;
    maker
        .ok(
            &soko,
            "offer_answer",
            json!({"offer": offer, "answer": "forfeit"}),
        )
        .await;
    let lost = maker.notice(&offer, "FORFEIT").await;
    assert!(signatures(&lost).is_empty(), "{lost}");
    assert!(unblind(pending, &lost, &keyset).is_empty());
    let (_, outputs) = client::prepare(1);
    let again = maker
        .ask(
            &soko,
            "offer_create",
            with_reputation(offer_args("1500", 20_000), &two[..1], &outputs),
        )
        .await;
    assert_eq!(code(&again), "invalid");
}
