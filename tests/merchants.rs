//! Managed merchants: operator commands over DMs, listings published under the merchant's
//! key, refusals, keys sealed at rest, and the merchant identity answering its own DMs.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

fn stall() -> Value {
    json!({"id":"duka","name":"Mama Duka","currency":"sat",
           "shipping":[{"id":"nairobi","name":"Nairobi","cost":100,"regions":["KE"]}]})
}

fn product(id: &str, currency: &str) -> Value {
    json!({"id":id,"stall_id":"duka","name":"Mango","currency":currency,"price":500,
           "quantity":10,"shipping":[{"id":"nairobi","cost":10}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_creates_a_merchant_whose_listings_are_published_under_its_key() {
    let mut soko = TestSoko::start().await;
    // Without a phone, a merchant is active at once.
    let added = operator(&soko, "merchant_add", json!({"name":"Mama Duka"})).await;
    assert!(added.ok, "{added:?}");
    assert_eq!(added.result.as_ref().unwrap()["status"], "active");
    let npub = added.result.as_ref().unwrap()["npub"]
        .as_str()
        .unwrap()
        .to_owned();
    let merchant = PublicKey::parse(&npub).unwrap();
    // With a phone, it is pending until its owner onboards over USSD (tests/ussd_menus.rs):
    // no profile and no listings until then.
    let pending = operator(
        &soko,
        "merchant_add",
        json!({"name":"Baba Duka","phone":"+254700000001"}),
    )
    .await;
    let pending = pending.result.unwrap();
    assert_eq!(pending["status"], "pending", "{pending}");
    let pending_npub = pending["npub"].as_str().unwrap().to_owned();
    let refused = operator(
        &soko,
        "stall_put",
        json!({"merchant": pending_npub, "stall": stall()}),
    )
    .await;
    assert_eq!(refusal_code(&refused), "invalid");
    assert!(refused.error.unwrap().message.contains("pending"));
    // The same phone cannot belong to two merchants.
    let twice = operator(
        &soko,
        "merchant_add",
        json!({"name":"Other","phone":"+254700000001"}),
    )
    .await;
    assert_eq!(refusal_code(&twice), "invalid");

    assert!(
        operator(
            &soko,
            "stall_put",
            json!({"merchant": npub, "stall": stall()})
        )
        .await
        .ok
    );
    let put = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": product("mango", "sat")}),
    )
    .await;
    assert!(put.ok, "{put:?}");

    let reader = User::connect(&[soko.relay_url()]).await;
    let events = reader
        .client
        .fetch_events(Filter::new().author(merchant), Duration::from_secs(5))
        .await
        .unwrap();
    let kinds: Vec<Kind> = events.iter().map(|e| e.kind).collect();
    for kind in [Kind::Metadata, Kind::SetStall, Kind::SetProduct] {
        assert!(
            kinds.contains(&kind),
            "kind {kind} published by the merchant: {kinds:?}"
        );
    }
    let pending_key = PublicKey::parse(&pending_npub).unwrap();
    let unpublished = reader
        .client
        .fetch_events(Filter::new().author(pending_key), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        unpublished.is_empty(),
        "a pending merchant publishes nothing"
    );
    let product_event = events.iter().find(|e| e.kind == Kind::SetProduct).unwrap();
    assert!(product_event.verify().is_ok());
    assert_eq!(product_event.tags.identifier(), Some("mango"));
    let content: soko::proto::nip15::Product =
        serde_json::from_str(&product_event.content).unwrap();
    assert_eq!((content.stall_id.as_str(), content.price), ("duka", 500.0));

    // The merchant identity reads and answers its own DMs, right after creation…
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let reply = alice.ask_nip04(merchant, r#"{"cmd":"ping"}"#).await;
    assert_eq!(reply.from, merchant, "answered under the merchant's key");
    // …and after a restart.
    soko.restart().await;
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let reply = alice.ask_nip17(merchant, r#"{"cmd":"ping"}"#).await;
    assert_eq!(reply.from, merchant);
    let listed = operator(&soko, "merchant_list", json!({})).await;
    let listed = listed.result.unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Mama Duka") && names.contains(&"Baba Duka"));

    // At rest, the merchant's secret key and phone are sealed: not in sled's files.
    soko.stop().await;
    let store = soko::store::Store::open(&soko.data_dir()).unwrap();
    let vault = soko::vault::Vault::open(&soko.data_dir()).unwrap();
    let merchants = soko::market::Merchants::open(&store, vault).unwrap();
    let keys = merchants
        .all()
        .unwrap()
        .into_iter()
        .map(|(_, keys)| keys)
        .find(|keys| keys.public_key() == merchant)
        .unwrap();
    assert_eq!(
        merchants.by_phone("+254700000001").unwrap(),
        Some(pending_key),
        "found by phone through the HMAC index"
    );
    drop((merchants, store));
    let secret = keys.secret_key().to_secret_hex();
    for entry in std::fs::read_dir(soko.data_dir().join("sled")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&secret),
                "merchant secret in {}",
                path.display()
            );
            assert!(
                !text.contains("254700000001"),
                "phone in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_merchant_commands_are_refused_with_reasons() {
    let mut soko = TestSoko::start().await;
    // Not the operator: forbidden.
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let reply = alice
        .ask_nip17(soko.bot(), r#"{"cmd":"merchant_add","args":{"name":"x"}}"#)
        .await;
    assert_eq!(reply.json()["error"]["code"], "forbidden");

    assert_eq!(
        refusal_code(&operator(&soko, "merchant_add", json!({"name":""})).await),
        "invalid"
    );
    let bad_ln = operator(
        &soko,
        "merchant_add",
        json!({"name":"A","lightning_address":"nope"}),
    )
    .await;
    assert_eq!(refusal_code(&bad_ln), "invalid");
    let added = operator(&soko, "merchant_add", json!({"name":"A"})).await;
    let npub = added.result.unwrap()["npub"].as_str().unwrap().to_owned();

    let stranger = Keys::generate().public_key().to_bech32().unwrap();
    let unknown = operator(
        &soko,
        "stall_put",
        json!({"merchant": stranger, "stall": stall()}),
    )
    .await;
    assert_eq!(refusal_code(&unknown), "not_found");
    let no_stall = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": product("p", "sat")}),
    )
    .await;
    assert_eq!(refusal_code(&no_stall), "invalid");
    assert!(no_stall.error.unwrap().message.contains("stall"));
    assert!(
        operator(
            &soko,
            "stall_put",
            json!({"merchant": npub, "stall": stall()})
        )
        .await
        .ok
    );
    let mismatch = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": product("p", "USD")}),
    )
    .await;
    assert!(mismatch.error.unwrap().message.contains("currency"));
    let mut bad_zone = product("p", "sat");
    bad_zone["shipping"] = json!([{"id":"mars","cost":1}]);
    let bad_zone = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": bad_zone}),
    )
    .await;
    assert!(bad_zone.error.unwrap().message.contains("mars"));
    let mut negative = product("p", "sat");
    negative["price"] = json!(-1);
    assert_eq!(
        refusal_code(
            &operator(
                &soko,
                "product_put",
                json!({"merchant": npub, "product": negative})
            )
            .await
        ),
        "invalid"
    );
    let bad_args = operator(&soko, "product_put", json!({"merchant": npub})).await;
    assert_eq!(refusal_code(&bad_args), "bad_request");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_running_soko() {
    let mut soko = TestSoko::start().await;
    let config_file = soko.cli_config("test.toml");
    let run = |args: &[&str]| run_cli(&config_file, args);
    let out = run(&["merchant", "add", "--name", "Duka CLI"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    let npub = added["npub"].as_str().unwrap().to_owned();

    let stall_file = soko.data_dir().join("stall.json");
    std::fs::write(&stall_file, stall().to_string()).unwrap();
    let out = run(&[
        "merchant",
        "stall",
        "--merchant",
        &npub,
        stall_file.to_str().unwrap(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = soko.data_dir().join("bad.json");
    std::fs::write(&bad, product("x", "sat").to_string()).unwrap();
    std::fs::write(
        &bad,
        r#"{"id":"x","stall_id":"nope","name":"X","currency":"sat","price":1}"#,
    )
    .unwrap();
    let out = run(&[
        "merchant",
        "product",
        "--merchant",
        &npub,
        bad.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid"));

    let out = run(&["merchant", "list"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("Duka CLI"));
    let out = run(&[
        "merchant",
        "deliver",
        "--merchant",
        &npub,
        "--order",
        "5",
        "--code",
        "12345678",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no order #5"));
    let out = run(&["merchant", "refund", "--merchant", &npub, "--order", "5"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("no order #5"));
    let out = run(&[
        "merchant",
        "payout",
        "--merchant",
        &npub,
        "--to",
        "mama@ln.example",
    ])
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("mama@ln.example"));

    // Pointed at a directory soko never used, the CLI says so at once and leaves it empty.
    let elsewhere = tempfile::tempdir().unwrap();
    let wrong = elsewhere.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        format!(
            "[storage]\ndata_dir = {:?}\n",
            elsewhere.path().join("data")
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
            .args(["merchant", "list", "--config"])
            .arg(&wrong)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a soko data dir"));
    assert!(!elsewhere.path().join("data").join("operator.nsec").exists());
    soko.stop().await;
}
