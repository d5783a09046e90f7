//! Blind auth (NUT-21/22) on the dev mint, on real parts over loopback: the dev OIDC issuer's
//! token endpoint (login by a signed NIP-98 event of a registered key), cdk's wallet minting
//! BATs with the clear-auth token it gets, the mint's NUT-21/22 settings and protected
//! endpoint, and soko's escrow wallet working against a mint with auth on.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::str::FromStr;

use cdk::nuts::{BlindAuthToken, KeysResponse, Proof};
use common::auth::*;
use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::config::{DevMintAuth, DEFAULT_BAT_MAX_MINT};
use soko::money::Sats;

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_json(url: &str, headers: &[(&str, String)], body: &Value) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

/// One blinded output of 1 sat on the mint's sat keyset, with a random point: enough for a
/// restore request, which then has nothing to return.
async fn random_output(mint_url: &str) -> Value {
    let (_, keysets) = get_json(&format!("{mint_url}/v1/keysets")).await;
    let id = keysets["keysets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["unit"] == "sat" && k["active"] == true)
        .expect("an active sat keyset")["id"]
        .clone();
    let point = cdk::nuts::SecretKey::generate().public_key().to_hex();
    json!({"amount": 1, "id": id, "B_": point})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_key_logs_in_and_mints_bats_whose_dleq_verifies() {
    let user = Keys::generate();
    let (mint, _dir) = external_auth_mint([user.public_key()]).await;
    let cat = login(&token_url(&mint), &user).await;
    let tokens = bats(mint.url(), &cat, 5).await;
    assert_eq!(tokens.len(), 5);

    // Offline, the way a verifier that only has the mint's URL checks one: the DLEQ against
    // the auth keyset's public key for amount 1.
    for bat in &tokens {
        let text = bat.to_string();
        assert!(text.starts_with("authA"), "{text}");
        let parsed = BlindAuthToken::from_str(&text).unwrap();
        assert_eq!(&parsed, bat, "the string form round-trips");
        let id = bat.auth_proof.keyset_id;
        let (status, keys) = get_json(&format!("{}/v1/auth/blind/keys/{id}", mint.url())).await;
        assert_eq!(status, 200, "{keys}");
        let keys: KeysResponse = serde_json::from_value(keys).unwrap();
        let key = keys.keysets[0]
            .keys
            .amount_key(1.into())
            .expect("a key for 1");
        let proof = Proof::from(bat.auth_proof.clone());
        proof.verify_dleq(key).expect("the DLEQ verifies");
        // A DLEQ checked against another key fails: the check above could fail.
        let other = cdk::nuts::SecretKey::generate().public_key();
        assert!(proof.verify_dleq(other).is_err());
    }

    // In-process, the mint knows its own BATs and burns each once.
    let inner = mint.mint();
    inner.verify_blind_auth(&tokens[0]).await.unwrap();
    inner
        .check_blind_auth_proof_spendable(tokens[0].auth_proof.clone())
        .await
        .unwrap();
    assert!(matches!(
        inner
            .check_blind_auth_proof_spendable(tokens[0].auth_proof.clone())
            .await,
        Err(cdk::Error::TokenAlreadySpent)
    ));
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_that_are_not_a_fresh_signed_event_of_a_registered_key_are_refused() {
    let user = Keys::generate();
    let clock = soko::clock::Clock::system();
    let (mint, _dir) = external_auth_mint_on([user.public_key()], clock.clone()).await;
    let url = token_url(&mint);
    let refused = |(status, json): (u16, Value), want_status: u16, words: &str| {
        assert_eq!(status, want_status, "{json}");
        assert!(json.get("access_token").is_none(), "{json}");
        let description = json["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(words), "{words:?} not in {json}");
        json["error"].as_str().unwrap().to_owned()
    };

    // Not registered.
    let stranger = Keys::generate();
    let error = refused(
        post_login(&url, &login_header(&url, &stranger, Timestamp::now())).await,
        403,
        "not a registered",
    );
    assert_eq!(error, "invalid_grant");

    // Stale: signed two minutes ago.
    let old = Timestamp::from(Timestamp::now().as_secs() - 120);
    refused(
        post_login(&url, &login_header(&url, &user, old)).await,
        400,
        "created_at",
    );

    // Replayed: the same event twice.
    let header = login_header(&url, &user, Timestamp::now());
    assert_eq!(post_login(&url, &header).await.0, 200);
    refused(post_login(&url, &header).await, 400, "already used");

    // For another URL (a login event meant for another service).
    let elsewhere = "http://127.0.0.1:9/token";
    refused(
        post_login(&url, &login_header(elsewhere, &user, Timestamp::now())).await,
        400,
        "`u` tag",
    );

    // A bad signature: the user's event carrying another event's signature.
    let event = EventBuilder::http_auth(nostr_sdk::nips::nip98::HttpData::new(
        Url::parse(&url).unwrap(),
        nostr_sdk::nips::nip98::HttpMethod::POST,
    ))
    .sign_with_keys(&user)
    .unwrap();
    let other = EventBuilder::text_note("x").sign_with_keys(&user).unwrap();
    let mut forged: Value = serde_json::from_str(&event.as_json()).unwrap();
    forged["sig"] = json!(other.sig.to_string());
    let forged = format!(
        "Nostr {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            forged.to_string()
        )
    );
    refused(post_login(&url, &forged).await, 400, "signature");

    // Not NIP-98 at all.
    refused(post_login(&url, "Bearer abc").await, 401, "Authorization");

    // A body past the bound, with a genuine fresh login event: refused before it is read.
    let response = reqwest::Client::new()
        .post(&url)
        .header("Authorization", login_header(&url, &user, Timestamp::now()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type={}&pad={}",
            soko::devmint::oidc::GRANT_TYPE,
            "x".repeat(8_000)
        ))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    refused((status, body), 413, "at most");

    // The issuer's clock moved: an event fresh by the world's time is stale by it.
    clock.advance(120);
    refused(
        post_login(&url, &login_header(&url, &user, Timestamp::now())).await,
        400,
        "created_at",
    );
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mint_mints_bats_only_for_a_token_of_its_own_issuer() {
    let user = Keys::generate();
    let (mint, _dir) = external_auth_mint([user.public_key()]).await;
    let (other, _other_dir) = external_auth_mint([user.public_key()]).await;
    let blind_mint = format!("{}/v1/auth/blind/mint", mint.url());
    let (_, keysets) = get_json(&format!("{}/v1/auth/blind/keysets", mint.url())).await;
    let id = keysets["keysets"][0]["id"].clone();
    let point = cdk::nuts::SecretKey::generate().public_key().to_hex();
    let request = json!({"outputs": [{"amount": 1, "id": id, "B_": point}]});

    // No clear-auth token.
    let (status, body) = post_json(&blind_mint, &[], &request).await;
    assert!(status >= 400, "{status} {body}");
    assert!(!body.contains("signatures"), "{body}");
    // A made-up one.
    let (status, body) = post_json(
        &blind_mint,
        &[("Clear-auth", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA".to_owned())],
        &request,
    )
    .await;
    assert!(status >= 400, "{status} {body}");
    // A genuine token of another issuer (another mint's), signed by another key.
    let foreign = login(&token_url(&other), &user).await;
    let (status, body) = post_json(&blind_mint, &[("Clear-auth", foreign.clone())], &request).await;
    assert!(status >= 400, "{status} {body}");
    assert!(try_bats(mint.url(), &foreign, 1).await.is_err());

    // Its own issuer's token works, up to bat_max_mint at once.
    let cat = login(&token_url(&mint), &user).await;
    let (status, body) = post_json(&blind_mint, &[("Clear-auth", cat.clone())], &request).await;
    assert_eq!(status, 200, "{body}");
    assert!(try_bats(mint.url(), &cat, DEFAULT_BAT_MAX_MINT + 1)
        .await
        .is_err());
    assert_eq!(
        bats(mint.url(), &cat, DEFAULT_BAT_MAX_MINT).await.len() as u64,
        DEFAULT_BAT_MAX_MINT
    );
    mint.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mint_advertises_nut21_and_nut22_and_restore_takes_a_bat_once() {
    let user = Keys::generate();
    let (mint, _dir) = external_auth_mint([user.public_key()]).await;
    let issuer = mint.issuer().unwrap();

    let (_, info) = get_json(&format!("{}/v1/info", mint.url())).await;
    let nut21 = &info["nuts"]["21"];
    assert_eq!(nut21["openid_discovery"], issuer.discovery_url(), "{info}");
    assert_eq!(nut21["client_id"], issuer.client_id());
    assert_eq!(
        nut21["protected_endpoints"],
        json!([{"method": "POST", "path": "/v1/auth/blind/mint"}])
    );
    let nut22 = &info["nuts"]["22"];
    assert_eq!(nut22["bat_max_mint"], DEFAULT_BAT_MAX_MINT, "{info}");
    assert_eq!(
        nut22["protected_endpoints"],
        json!([{"method": "POST", "path": "/v1/restore"}])
    );

    // The discovery document has what cdk requires, and the device endpoint says honestly
    // how to log in instead.
    let (status, discovery) = get_json(&issuer.discovery_url()).await;
    assert_eq!(status, 200);
    assert_eq!(discovery["issuer"], issuer.issuer());
    assert_eq!(discovery["token_endpoint"], issuer.token_url());
    let (status, jwks) = get_json(discovery["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"][0]["crv"], "P-256", "{jwks}");
    let device = discovery["device_authorization_endpoint"].as_str().unwrap();
    let (status, refusal) = post_json(device, &[], &json!({})).await;
    assert_eq!(status, 400);
    let refusal: Value = serde_json::from_str(&refusal).unwrap();
    assert_eq!(refusal["error"], "unauthorized_client");
    assert!(refusal["error_description"]
        .as_str()
        .unwrap()
        .contains("NIP-98"));

    // Restore, the blind-protected endpoint: refused without a BAT, served with one
    // (stripped of its DLEQ, as wallets send it), refused with the same BAT again.
    let restore = format!("{}/v1/restore", mint.url());
    let request = json!({"outputs": [random_output(mint.url()).await]});
    let (status, body) = post_json(&restore, &[], &request).await;
    assert!(status >= 400, "{status} {body}");
    let cat = login(&issuer.token_url(), &user).await;
    let bat = bats(mint.url(), &cat, 1).await.remove(0);
    let header = [("Blind-auth", bat.without_dleq().to_string())];
    let (status, body) = post_json(&restore, &header, &request).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_json(&restore, &header, &request).await;
    assert!(status >= 400, "{status} {body}");
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_outlive_a_restart_of_the_issuer_on_its_port() {
    let user = Keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let issuer_port = free_port();
    let start = || async {
        soko::devmint::DevMint::start_with_auth(
            dir.path(),
            0,
            soko::devmint::AuthSettings {
                registry: std::sync::Arc::new(
                    [user.public_key()]
                        .into_iter()
                        .collect::<std::collections::HashSet<_>>(),
                ),
                bat_max_mint: DEFAULT_BAT_MAX_MINT,
                issuer_port,
                clock: soko::clock::Clock::system(),
                blind_protected: soko::devmint::blind_protected_endpoints(),
            },
        )
        .await
        .unwrap()
    };
    let mint = start().await;
    let cat = login(&token_url(&mint), &user).await;
    mint.shutdown().await;
    let key_file = dir.path().join(soko::identity::DEV_OIDC_KEY_FILE);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let mint = start().await;
    assert_eq!(
        bats(mint.url(), &cat, 2).await.len(),
        2,
        "the old token still works"
    );
    mint.shutdown().await;
}

fn auth_on(config: &mut soko::Config) {
    config.dev_mint_auth = Some(DevMintAuth {
        bat_max_mint: DEFAULT_BAT_MAX_MINT,
        issuer_port: 0,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sokos_issuer_lets_in_its_registered_users_only_and_keeps_its_url_across_a_restart() {
    let mut soko = TestSoko::start_with(auth_on).await;
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let url = soko
        .daemon()
        .dev_mint()
        .unwrap()
        .issuer()
        .unwrap()
        .token_url();
    let (status, refused) =
        post_login(&url, &login_header(&url, &alice.keys, Timestamp::now())).await;
    assert_eq!(status, 403, "not registered yet: {refused}");

    // Registered by an invite, the way users register.
    let invite = operator(&soko, "invite_create", json!({"role": "agent"})).await;
    let code = invite.result.unwrap()["code"].as_str().unwrap().to_owned();
    let registration = EventBuilder::new(Kind::Custom(29470), "")
        .tags([
            Tag::parse(["invite", code.as_str()]).unwrap(),
            Tag::parse(["role", "agent"]).unwrap(),
            Tag::public_key(soko.bot()),
        ])
        .sign_with_keys(&alice.keys)
        .unwrap();
    let registered = alice
        .ask_nip17(
            soko.bot(),
            &json!({"cmd": "register", "args": {"event": registration}}).to_string(),
        )
        .await;
    assert!(
        registered.content.contains("\"agent\""),
        "{}",
        registered.content
    );
    let cat = login(&url, &alice.keys).await;
    assert_eq!(bats(soko.daemon().mint_url(), &cat, 3).await.len(), 3);

    // Same issuer URL after a restart, and the token it gave still mints.
    soko.restart().await;
    let again = soko
        .daemon()
        .dev_mint()
        .unwrap()
        .issuer()
        .unwrap()
        .token_url();
    assert_eq!(again, url);
    assert_eq!(bats(soko.daemon().mint_url(), &cat, 1).await.len(), 1);
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_escrow_wallet_works_against_its_dev_mint_with_auth_on() {
    let soko = TestSoko::start_with(auth_on).await;
    let info = get_json(&format!("{}/v1/info", soko.daemon().mint_url()))
        .await
        .1;
    assert!(info["nuts"]["22"].is_object(), "auth is on: {info}");

    // A merchant paid by token: the order's invoice is minted into escrow, the delivery
    // releases it, and the payout is a swap into a token the merchant redeems.
    let shop = mango_shop(&soko).await;
    let mut mama = User::connect(&[soko.relay_url()]).await;
    let mama_npub = mama.pubkey().to_bech32().unwrap();
    let set = operator(
        &soko,
        "merchant_payout",
        json!({"merchant": shop.npub, "to": mama_npub}),
    )
    .await;
    assert_eq!(set.result.unwrap()["tokens_to"], mama_npub);
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let order = json!({"id": "a-1", "type": 0, "name": "Amina", "address": "Moi Avenue 12",
        "contact": {"nostr": "npub1x"}, "items": [{"product_id": "mango", "quantity": 1}],
        "shipping_id": "nairobi"})
    .to_string();
    buyer.ask_nip17(shop.merchant, &order).await;
    let paid = buyer.next_dm(REPLY_TIMEOUT).await.expect("paid").json();
    assert_eq!(paid["paid"], true, "{paid}");
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the code DM");
    let code = code_in(&dm).expect("a code");
    let delivered = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": code}),
    )
    .await;
    let delivered = delivered.result.expect("delivered");
    assert_eq!(delivered["payout"]["token_sat"], 610, "{delivered}");

    let dm = mama.next_dm(REPLY_TIMEOUT).await.expect("the payout DM");
    let token = dm.content.lines().last().unwrap().trim().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let wallet = soko::wallet::open(&store, "mama", soko.daemon().mint_url(), &[6; 64]).unwrap();
    let received = wallet
        .receive(&token, cdk::wallet::ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 610);
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats::ZERO)
    );
    let mut soko = soko;
    soko.stop().await;
}
