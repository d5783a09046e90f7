//! A full run logged at TRACE level never shows a secret: the bot's key, the wallet seed, an
//! ecash token or an invite code. (Its own test binary: the log capture is process-global.)
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::Capture;

use cdk::amount::{Amount, SplitTarget};
use cdk::nuts::PaymentMethod;
use cdk::wallet::{ReceiveOptions, SendOptions};
use cdk::StreamExt;
use common::{TestSoko, User};
use nostr_sdk::{Keys, ToBech32};
use soko::config::LogConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    let capture = Capture::default();
    let level = LogConfig {
        level: "trace".into(),
        json: false,
    };
    soko::logging::init_with_writer(&level, capture.clone()).unwrap();

    let mut soko = TestSoko::start().await;
    let mut alice = User::connect(&[soko.relay_url()]).await;
    alice
        .ask_nip04(soko.bot(), r#"{"id":"a","cmd":"ping"}"#)
        .await;
    alice
        .ask_nip17(soko.bot(), r#"{"id":"b","cmd":"ping"}"#)
        .await;

    // An invite code, created and then used to register.
    let invite =
        common::operator(&soko, "invite_create", serde_json::json!({"role":"agent"})).await;
    let invite_code = invite.result.unwrap()["code"].as_str().unwrap().to_owned();
    let registration = nostr_sdk::EventBuilder::new(
        nostr_sdk::Kind::Custom(soko::proto::agents::REGISTRATION_KIND),
        "",
    )
    .tags([
        nostr_sdk::Tag::parse(["invite", invite_code.as_str()]).unwrap(),
        nostr_sdk::Tag::parse(["role", "agent"]).unwrap(),
        nostr_sdk::Tag::public_key(soko.bot()),
    ])
    .sign_with_keys(&alice.keys)
    .unwrap();
    let registered = alice
        .ask_nip17(
            soko.bot(),
            &serde_json::json!({"cmd":"register","args":{"event": registration}}).to_string(),
        )
        .await;
    assert!(
        registered.content.contains("\"agent\""),
        "{}",
        registered.content
    );

    // Move ecash through the bot's wallet: mint, then send a token to another wallet.
    let wallet = soko.daemon().wallet();
    let quote = wallet
        .mint_quote(PaymentMethod::BOLT11, Some(Amount::from(64)), None, None)
        .await
        .unwrap();
    wallet
        .proof_stream(quote, SplitTarget::default(), None)
        .next()
        .await
        .unwrap()
        .unwrap();
    let token = wallet
        .prepare_send(Amount::from(21), SendOptions::default())
        .await
        .unwrap()
        .confirm(None)
        .await
        .unwrap()
        .to_string();
    let store = soko::store::Store::open(&soko.data_dir().join("other")).unwrap();
    let other = soko::wallet::open(&store, "other", soko.daemon().mint_url(), &[7; 64]).unwrap();
    other
        .receive(&token, ReceiveOptions::default())
        .await
        .unwrap();

    let nsec_file = std::fs::read_to_string(soko.data_dir().join("bot.nsec")).unwrap();
    let keys = Keys::parse(nsec_file.trim()).unwrap();
    let seed = std::fs::read_to_string(soko.data_dir().join("wallet.seed")).unwrap();
    soko.stop().await;

    let log = capture.text();
    assert!(log.contains("soko started"), "the capture works");
    assert!(
        log.len() > 10_000,
        "a TRACE run logs plenty ({} bytes)",
        log.len()
    );
    let secrets = [
        ("bot nsec", keys.secret_key().to_bech32().unwrap()),
        ("bot secret hex", keys.secret_key().to_secret_hex()),
        ("wallet seed", seed.trim().to_owned()),
        ("ecash token", token.clone()),
        ("invite code", invite_code.clone()),
        ("invite code without dashes", invite_code.replace('-', "")),
        // The token's body without its `cashuB` prefix, in case something logs it raw.
        ("token body", token.chars().skip(6).take(40).collect()),
    ];
    for (what, secret) in secrets {
        assert!(!log.contains(&secret), "{what} appears in the log");
    }
}
