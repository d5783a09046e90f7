//! The exchange against hostile input from outside: malformed and oversized offers, bills
//! that must never be echoed, too many open offers, commands out of a session, admin
//! commands from users; and what the public sees of a whole trade.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::exchange::{exchange_config, offer_args, whole_trade, Trader};
use common::sessions::code;
use common::{operator, TestSoko, User};
use nostr_sdk::prelude::*;
use serde_json::json;

#[tokio::test]
async fn malformed_offers_are_refused_clearly_and_never_echo_the_bill() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mut maker = Trader::join(&soko).await;
    let secret_ref = "5551234";
    let bill = |kind: &str, reference: &str| json!({"kind": kind, "reference": reference});
    let base = || {
        let mut args = offer_args("1500", 20_000);
        args["bill"] = bill("till", secret_ref);
        args
    };
    let with = |key: &str, value: serde_json::Value| {
        let mut args = base();
        args[key] = value;
        args
    };
    let cases = [
        ("fiat text", with("fiat_amount", json!("abc")), "invalid"),
        (
            "fiat exponent",
            with("fiat_amount", json!("1e9")),
            "invalid",
        ),
        (
            "fiat three decimals",
            with("fiat_amount", json!("1.005")),
            "invalid",
        ),
        (
            "fiat over the most",
            with("fiat_amount", json!("150001")),
            "invalid",
        ),
        (
            "unknown currency",
            with("currency", json!("XXX")),
            "invalid",
        ),
        (
            "unknown provider",
            with("provider", json!("hawala")),
            "invalid",
        ),
        (
            "unknown bill kind",
            with("bill", bill("cheque", secret_ref)),
            "invalid",
        ),
        (
            "letters in a till",
            with("bill", bill("till", "55x1234")),
            "invalid",
        ),
        (
            "a reference too long",
            with("bill", bill("till", &"5".repeat(200))),
            "invalid",
        ),
        (
            "a kind the provider lacks",
            with("bill", bill("bank_transfer", secret_ref)),
            "invalid",
        ),
        ("too few sats", with("sats", json!(1)), "invalid"),
        ("too many sats", with("sats", json!(u64::MAX)), "invalid"),
        (
            "premium out of bounds",
            {
                let mut args = base();
                args.as_object_mut().unwrap().remove("sats");
                args["premium"] = json!(1000);
                args
            },
            "invalid",
        ),
        (
            "garbage stake",
            with("stake", json!([{"secret": "00", "C": "02"}])),
            "invalid",
        ),
        (
            "outputs without a stake",
            with("outputs", json!(["02aa", "02bb"])),
            "invalid",
        ),
        ("unknown field", with("lol", json!(1)), "bad_request"),
    ];
    for (what, args, expected) in cases {
        let reply = maker.ask(&soko, "offer_create", args).await;
        assert_eq!(code(&reply), expected, "{what}: {reply}");
        assert!(
            !reply.to_string().contains(secret_ref),
            "{what} echoed the bill: {reply}"
        );
    }
    let long_id = maker
        .ask(&soko, "offer_status", json!({"offer": "f".repeat(500)}))
        .await;
    assert_eq!(code(&long_id), "too_large");

    // Outside a session: refused before anything else.
    let mut outsider = User::connect(&[soko.relay_url()]).await;
    let reply = outsider
        .ask_nip17(
            soko.bot(),
            &json!({"cmd": "offer_create", "args": base()}).to_string(),
        )
        .await
        .json();
    assert_eq!(code(&reply), "session_required");
    // Admin commands from a trader.
    for (cmd, args) in [
        ("dispute_list", json!({})),
        (
            "dispute_resolve",
            json!({"offer": "00", "outcome": "split"}),
        ),
        (
            "provider_put",
            json!({"id": "x", "name": "X", "currencies": ["KES"], "kinds": ["till"]}),
        ),
    ] {
        let reply = maker.ask(&soko, cmd, args).await;
        assert_eq!(code(&reply), "forbidden", "{cmd}: {reply}");
    }

    // At most four open offers per session: the fifth is `busy`.
    for _ in 0..4 {
        maker.ok(&soko, "offer_create", base()).await;
    }
    let fifth = maker.ask(&soko, "offer_create", base()).await;
    assert_eq!(code(&fifth), "busy", "{fifth}");
}

#[tokio::test]
async fn settings_and_providers() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mut maker = Trader::join(&soko).await;
    let set = maker
        .ok(&soko, "exchange_settings", json!({"currency": "kes"}))
        .await;
    assert_eq!(set, json!({"currency": "KES", "payout_set": false}));
    let mut args = offer_args("1500", 20_000);
    args.as_object_mut().unwrap().remove("currency");
    let created = maker.ok(&soko, "offer_create", args).await;
    assert_eq!(created["currency"], "KES");
    let bad = maker
        .ask(&soko, "exchange_settings", json!({"currency": "ZZZ"}))
        .await;
    assert_eq!(code(&bad), "invalid");
    let bad = maker
        .ask(
            &soko,
            "exchange_settings",
            json!({"payout_to": "not an address"}),
        )
        .await;
    assert_eq!(code(&bad), "invalid");

    // Admins manage the providers; everyone lists them.
    let put = operator(
        &soko,
        "provider_put",
        json!({"id": "equity", "name": "Equity Bank", "currencies": ["KES"], "kinds": ["bank_transfer"]}),
    )
    .await;
    assert!(put.ok, "{put:?}");
    let listed = maker.ok(&soko, "provider_list", json!({})).await;
    assert!(listed.to_string().contains("Equity Bank"), "{listed}");
    let mut args = offer_args("1500", 20_000);
    args["provider"] = json!("equity");
    args["bill"] = json!({"kind": "bank_transfer", "reference": "0150299912", "note": "Acme Ltd"});
    maker.ok(&soko, "offer_create", args.clone()).await;
    let bad = operator(
        &soko,
        "provider_put",
        json!({"id": "Bad Id!", "name": "X", "currencies": ["KES"], "kinds": ["till"]}),
    )
    .await;
    assert!(!bad.ok);
    let removed = operator(&soko, "provider_remove", json!({"id": "equity"})).await;
    assert_eq!(removed.result.unwrap()["removed"], true);
    let gone = maker.ask(&soko, "offer_create", args).await;
    assert_eq!(code(&gone), "invalid");
}

/// Events on soko's relay that name `key` (hex or npub) anywhere.
async fn naming(soko: &TestSoko, key: &PublicKey) -> Vec<Event> {
    let everything = User::connect(&[soko.relay_url()])
        .await
        .client
        .fetch_events(Filter::new(), std::time::Duration::from_secs(3))
        .await
        .unwrap();
    let forms = [key.to_hex(), key.to_bech32().unwrap()];
    everything
        .into_iter()
        .filter(|e| forms.iter().any(|f| e.as_json().contains(f)))
        .collect()
}

/// After a whole trade without a dispute, nothing new on the relay names either trader's
/// registered key: the only event naming one is soko's gift-wrapped answer to its
/// registration, sent before, which says nothing of the trade. The figures count the trade.
#[tokio::test]
async fn the_public_cannot_link_a_trade_to_the_registered_keys() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;
    let keys = [maker.registered.pubkey(), taker.registered.pubkey()];
    let mut before = Vec::new();
    for key in &keys {
        let found = naming(&soko, key).await;
        assert!(
            found.iter().all(|e| e.kind == Kind::GiftWrap),
            "only the registration answer names {key}"
        );
        before.push(found.into_iter().map(|e| e.id).collect::<Vec<_>>());
    }
    let (offer, _, _) = whole_trade(
        &soko,
        &mut maker,
        &mut taker,
        offer_args("1500", 20_000),
        json!({}),
    )
    .await;
    for (key, before) in keys.iter().zip(before) {
        let after: Vec<_> = naming(&soko, key).await.into_iter().map(|e| e.id).collect();
        assert_eq!(after, before, "the trade {offer} added events naming {key}");
    }
    let figures = operator(&soko, "metrics", json!({})).await.result.unwrap();
    let hour = &figures["exchange"]["last_hour"];
    assert_eq!(
        (hour["created"].as_u64(), hour["completed"].as_u64()),
        (Some(1), Some(1)),
        "{figures}"
    );
}

/// Disputes over the threshold: the admins get one DM.
#[tokio::test]
async fn a_dispute_rate_over_the_threshold_alerts_the_admins() {
    let soko = TestSoko::start_with(|config| {
        exchange_config(config);
        config.exchange.alert_bp = 1;
        config.exchange.alert_min_offers = 1;
    })
    .await;
    let operator_keys = soko::identity::operator_keys(&soko.data_dir()).unwrap();
    let mut admin = User::with_keys(operator_keys, &[soko.relay_url()]).await;
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;
    let created = maker
        .ok(&soko, "offer_create", offer_args("1500", 20_000))
        .await;
    let offer = created["offer"].as_str().unwrap().to_owned();
    maker.notice(&offer, "INVOICE_PAID").await;
    taker
        .ok(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    taker.notice(&offer, "TAKER_BOND_PAID").await;
    let reveal = taker.reveal(&soko, &offer, "taker", "wrong paybill");
    taker
        .ok(
            &soko,
            "offer_issue",
            json!({"offer": offer, "reveal": reveal}),
        )
        .await;
    let dms = admin.all_dms(std::time::Duration::from_secs(8)).await;
    let alerts: Vec<_> = dms
        .iter()
        .filter(|dm| dm.content.contains("dispute rate"))
        .collect();
    assert_eq!(
        alerts.len(),
        1,
        "{:?}",
        dms.iter().map(|d| &d.content).collect::<Vec<_>>()
    );
}
