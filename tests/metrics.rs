//! Issue 13, operations: the admin `metrics` command and the Prometheus endpoint show the
//! same figures, counted where things happen (orders, the escrow wallet's operations,
//! rate-limit refusals); the endpoint is off by default and refused beyond loopback.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{mango_shop, operator, paid_order, TestSoko, User};
use serde_json::{json, Value};

/// `GET /metrics` over plain HTTP.
async fn scrape(soko: &TestSoko) -> String {
    let addr = soko.daemon().metrics_addr().expect("the endpoint runs");
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    response.text().await.unwrap()
}

/// The value of the sample `name` (with its labels) in the text.
fn sample(text: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("{name} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_and_the_endpoint_show_the_same_figures() {
    let soko = TestSoko::start_with(|config| {
        config.metrics.listen = Some(([127, 0, 0, 1], 0).into());
        config.limits.anonymous = 1;
    })
    .await;
    let shop = mango_shop(&soko).await;
    let (_buyer, code) = paid_order(&soko, shop.merchant, "o1").await;
    let delivered = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    assert!(delivered.ok, "{delivered:?}");
    // One anonymous command too many.
    let mut alice = User::connect(&[soko.relay_url()]).await;
    alice.ask_nip04(soko.bot(), r#"{"cmd":"ping"}"#).await;
    let refused = alice
        .ask_nip04(soko.bot(), r#"{"cmd":"whoami"}"#)
        .await
        .json();
    assert_eq!(refused["error"]["code"], json!("rate_limited"), "{refused}");

    let answer = operator(&soko, "metrics", json!({})).await;
    assert!(answer.ok, "{answer:?}");
    let figures: Value = answer.result.unwrap();
    let text = scrape(&soko).await;

    let today = &figures["orders_today"];
    assert_eq!(
        (
            today["created"].as_u64(),
            today["paid"].as_u64(),
            today["completed"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{figures}"
    );
    for event in ["created", "paid", "completed"] {
        let name = format!("soko_orders_today{{event=\"{event}\"}}");
        assert_eq!(
            sample(&text, &name),
            today[event].as_u64().unwrap(),
            "{name}"
        );
        let name = format!("soko_orders_total{{event=\"{event}\"}}");
        assert_eq!(sample(&text, &name), 1, "{name}");
    }
    // The order's invoice and its minting, at least.
    let operations = figures["wallet"]["operations"].as_u64().unwrap();
    assert!(operations >= 2, "{figures}");
    let scraped: u64 = text
        .lines()
        .filter(|l| l.starts_with("soko_wallet_operations_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(scraped, operations, "{text}");
    assert_eq!(
        sample(
            &text,
            "soko_wallet_operations_total{op=\"mint_quote\",outcome=\"ok\"}"
        ),
        1
    );
    assert_eq!(
        sample(
            &text,
            "soko_wallet_operations_total{op=\"mint\",outcome=\"ok\"}"
        ),
        1
    );
    assert_eq!(figures["rate_limited"]["anonymous"], json!(1), "{figures}");
    assert_eq!(
        sample(
            &text,
            "soko_commands_rate_limited_total{tier=\"anonymous\"}"
        ),
        1
    );
    // The session figures are there from the start, at zero until sessions count.
    assert_eq!(figures["sessions"]["active"], json!(0), "{figures}");
    assert_eq!(figures["bat"]["ok"], json!(0), "{figures}");
    for name in [
        "soko_sessions_active",
        "soko_sessions_opened_total",
        "soko_session_duration_seconds_count",
        "soko_session_wallets_open",
        "soko_session_ecash_sats",
        "soko_session_cleanup_runs_total{outcome=\"failed\"}",
        "soko_bat_verifications_total{outcome=\"refused\"}",
        "soko_bat_verification_seconds_count",
    ] {
        assert_eq!(sample(&text, name), 0, "{name}");
    }

    // The exchange's figures are there too, at zero before the first offer: the command's
    // rolling hour and the text's series.
    let exchange = &figures["exchange"];
    let hour = &exchange["last_hour"];
    for field in ["created", "taken", "completed", "disputed", "average_secs"] {
        assert_eq!(hour[field], json!(0), "{field}: {figures}");
    }
    assert_eq!(hour["dispute_rate_bp"], Value::Null, "{figures}");
    assert!(hour["since"].as_u64().unwrap() > 0, "{figures}");
    for state in [
        "completed",
        "expired",
        "canceled",
        "forfeit",
        "resolved",
        "error",
    ] {
        assert_eq!(exchange["ended"][state], json!(0), "{state}: {figures}");
        let name = format!("soko_offers_ended_total{{state=\"{state}\"}}");
        assert_eq!(sample(&text, &name), 0, "{name}");
    }
    for state in [
        "invoice_paid",
        "taker_bond_paid",
        "receipt_submitted",
        "disputed",
    ] {
        assert_eq!(exchange["ecash_sat"][state], json!(0), "{state}: {figures}");
        let name = format!("soko_offer_ecash_sats{{state=\"{state}\"}}");
        assert_eq!(sample(&text, &name), 0, "{name}");
    }
    for event in ["created", "taken", "completed", "disputed"] {
        for name in [
            format!("soko_offers_total{{event=\"{event}\"}}"),
            format!("soko_offers_last_hour{{event=\"{event}\"}}"),
        ] {
            assert_eq!(sample(&text, &name), 0, "{name}");
        }
    }
    assert_eq!(sample(&text, "soko_offer_completion_seconds_count"), 0);

    // Only admins may read them over DMs.
    let mut bob = User::connect(&[soko.relay_url()]).await;
    let forbidden = bob
        .ask_nip17(soko.bot(), r#"{"cmd":"metrics"}"#)
        .await
        .json();
    assert_eq!(
        forbidden["error"]["code"],
        json!("forbidden"),
        "{forbidden}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_is_off_by_default_and_stops_with_soko() {
    let mut soko = TestSoko::start().await;
    assert_eq!(soko.daemon().metrics_addr(), None);
    soko.stop().await;

    let mut soko = TestSoko::start_with(|config| {
        config.metrics.listen = Some(([127, 0, 0, 1], 0).into());
    })
    .await;
    let addr = soko.daemon().metrics_addr().unwrap();
    assert!(scrape(&soko).await.contains("# EOF"));
    soko.stop().await;
    assert!(
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .is_err(),
        "the endpoint closed with soko"
    );
}
