//! A full run logged at TRACE level never shows a secret: the bot's key, the wallet seed, an
//! ecash token, an invite code, or (with blind auth on the dev mint) a login event's
//! signature, a clear-auth token, a BAT, the issuer's key, a session id or its refund token.
//! (Its own test binary: the log capture is process-global.)
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

    let mut soko = TestSoko::start_with(|config| {
        config.dev_mint_auth = Some(soko::config::DevMintAuth {
            bat_max_mint: 10,
            issuer_port: 0,
        });
    })
    .await;
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

    // Alice, now registered, logs in at the dev issuer, mints BATs with the token and spends
    // one to open a private session.
    let issuer = soko.daemon().dev_mint().unwrap().issuer().unwrap();
    let token_url = issuer.token_url();
    let login_header =
        common::auth::login_header(&token_url, &alice.keys, nostr_sdk::Timestamp::now());
    let (status, login) = common::auth::post_login(&token_url, &login_header).await;
    assert_eq!(status, 200, "{login}");
    let cat = login["access_token"].as_str().unwrap().to_owned();
    let bats = common::auth::bats(soko.daemon().mint_url(), &cat, 3).await;
    let bat = bats[0].clone();
    // A private session from a fresh key: opened with a BAT, ecash deposited, closed, and
    // its refund token sent back.
    let mut private = User::connect(&[soko.relay_url()]).await;
    let session = common::sessions::open(&soko, &mut private, &bat).await;
    let deposit = common::sessions::token_from(soko.daemon().mint_url(), 16).await;
    let deposited = common::sessions::ask(
        &soko,
        &mut private,
        Some(&session),
        "session_deposit",
        serde_json::json!({ "token": deposit }),
    )
    .await;
    assert_eq!(deposited["result"]["balance_sat"], 16, "{deposited}");
    private
        .send_nip17(
            soko.bot(),
            &serde_json::json!({"cmd": "close_session", "session": session}).to_string(),
        )
        .await;
    let refund = private
        .all_dms(std::time::Duration::from_secs(4))
        .await
        .into_iter()
        .find(|dm| dm.content.starts_with("Refund"))
        .map(|dm| common::sessions::refund_token(&dm))
        .expect("the refund");
    let login_event = login_header.trim_start_matches("Nostr ").to_owned();
    let login_sig = {
        use base64::Engine;
        let json = base64::engine::general_purpose::STANDARD
            .decode(&login_event)
            .unwrap();
        let event: serde_json::Value = serde_json::from_slice(&json).unwrap();
        event["sig"].as_str().unwrap().to_owned()
    };
    let oidc_key = std::fs::read_to_string(soko.data_dir().join("dev-oidc.key")).unwrap();

    let nsec_file = std::fs::read_to_string(soko.data_dir().join("bot.nsec")).unwrap();
    let keys = Keys::parse(nsec_file.trim()).unwrap();
    let seed = std::fs::read_to_string(soko.data_dir().join("wallet.seed")).unwrap();
    soko.stop().await;

    let log = capture.text();
    assert!(log.contains("soko started"), "the capture works");
    assert!(
        log.contains("DEVELOPMENT OIDC ISSUER") && log.contains("a registered user logged in"),
        "blind auth ran in the captured run"
    );
    assert!(
        log.contains("session opened") && log.contains("session ecash returned as a token"),
        "a session ran in the captured run"
    );
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
        ("login event (base64)", login_event.clone()),
        ("login event signature", login_sig.clone()),
        ("clear-auth token", cat.clone()),
        // A JWT's signature, in case something logs the token cut up.
        (
            "clear-auth token signature",
            cat.rsplit('.').next().unwrap().to_owned(),
        ),
        ("BAT", bat.to_string()),
        ("BAT without DLEQ", bat.without_dleq().to_string()),
        ("another BAT", bats[2].to_string()),
        ("BAT secret", bat.auth_proof.secret.to_string()),
        ("BAT signature", bat.auth_proof.c.to_hex()),
        ("issuer key", oidc_key.trim().to_owned()),
        ("session id", session.clone()),
        ("deposited token", deposit.clone()),
        ("refund token", refund.clone()),
    ];
    for (what, secret) in secrets {
        assert!(!log.contains(&secret), "{what} appears in the log");
    }
}
