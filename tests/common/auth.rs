//! Blind auth (NUT-21/22) for tests: a login at the dev OIDC issuer through its real HTTP
//! token endpoint, BATs minted through cdk's own wallet code (clear auth → blind auth), and a
//! standalone auth-enabled dev mint on loopback ("an external auth mint").

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use cdk::nuts::{AuthProof, BlindAuthToken, CurrencyUnit};
use cdk::wallet::WalletBuilder;
use cdk::Amount;
use nostr_sdk::nips::nip98::{HttpData, HttpMethod};
use nostr_sdk::prelude::*;
use soko::config::DEFAULT_BAT_MAX_MINT;
use soko::devmint::{oidc, AuthSettings, DevMint};

/// The `Authorization` header value of a login: a NIP-98 event (kind 27235, `u` = `url`,
/// method POST) signed by `keys`, dated `created_at`.
pub fn login_header(url: &str, keys: &Keys, created_at: Timestamp) -> String {
    let url = Url::parse(url).expect("token url");
    let event = EventBuilder::http_auth(HttpData::new(url, HttpMethod::POST))
        .custom_created_at(created_at)
        .sign_with_keys(keys)
        .expect("sign");
    header_of(&event)
}

/// The `Authorization` header value carrying `event`.
pub fn header_of(event: &Event) -> String {
    format!(
        "Nostr {}",
        base64::engine::general_purpose::STANDARD.encode(event.as_json())
    )
}

/// POSTs a login with `authorization` to `token_url`: the status and the JSON answer.
pub async fn post_login(token_url: &str, authorization: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(token_url)
        .header("Authorization", authorization)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type={}&client_id={}",
            form_urlencoded::byte_serialize(oidc::GRANT_TYPE.as_bytes()).collect::<String>(),
            oidc::CLIENT_ID
        ))
        .send()
        .await
        .expect("token endpoint answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("token response body");
    let json = serde_json::from_str(&text).expect("token endpoint answers JSON");
    (status, json)
}

/// Logs `keys` in at the issuer's `token_url` with a fresh signed event: the clear-auth
/// token (CAT).
pub async fn login(token_url: &str, keys: &Keys) -> String {
    let (status, json) =
        post_login(token_url, &login_header(token_url, keys, Timestamp::now())).await;
    assert_eq!(status, 200, "login refused: {json}");
    json["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// Mints `n` BATs at `mint_url` with the clear-auth token `cat`, through cdk's wallet (its
/// auth wallet fetches the mint's auth keyset, checks the CAT against the issuer, posts to
/// `/v1/auth/blind/mint` with it and checks each signature's DLEQ). Each BAT keeps its DLEQ.
pub async fn bats(mint_url: &str, cat: &str, n: u64) -> Vec<BlindAuthToken> {
    try_bats(mint_url, cat, n).await.expect("BATs minted")
}

/// Same, with cdk's refusal as it comes.
pub async fn try_bats(
    mint_url: &str,
    cat: &str,
    n: u64,
) -> Result<Vec<BlindAuthToken>, cdk::Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = soko::store::Store::open(dir.path()).expect("store");
    let key = soko::vault::RecordKey::new([7; 32]).expect("record key");
    let db = soko::wallet::SledWalletDatabase::open(&store, "bats", key).expect("wallet db");
    let seed: [u8; 64] = std::array::from_fn(|i| i as u8 ^ 0x5a);
    let wallet = WalletBuilder::new()
        .mint_url(mint_url.parse().expect("mint url"))
        .unit(CurrencyUnit::Sat)
        .localstore(Arc::new(db))
        .seed(seed)
        .set_auth_cat(cat.to_owned())?
        .build()?;
    // Learns the mint's protected endpoints and its OIDC discovery URL.
    wallet.fetch_mint_info().await?;
    let proofs = wallet.mint_blind_auth(Amount::from(n)).await?;
    Ok(proofs
        .into_iter()
        .map(|proof| BlindAuthToken::new(AuthProof::try_from(proof).expect("an auth proof")))
        .collect())
}

/// A standalone auth-enabled dev mint and its issuer on free loopback ports, letting in
/// `registered`. Keep the dir alive as long as the mint.
pub async fn external_auth_mint(
    registered: impl IntoIterator<Item = PublicKey>,
) -> (DevMint, tempfile::TempDir) {
    external_auth_mint_on(registered, soko::clock::Clock::system()).await
}

/// Same, its issuer judging login events by `clock`.
pub async fn external_auth_mint_on(
    registered: impl IntoIterator<Item = PublicKey>,
    clock: soko::clock::Clock,
) -> (DevMint, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mint = DevMint::start_with_auth(dir.path(), 0, auth_settings(registered, clock))
        .await
        .expect("auth dev mint starts");
    (mint, dir)
}

/// An auth mint whose invoices settle `settle_after_secs` after they are issued, letting in
/// whoever `registry` says is registered.
pub async fn slow_auth_mint(
    registry: Arc<dyn soko::devmint::oidc::Registry>,
    settle_after_secs: u64,
) -> (DevMint, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = AuthSettings {
        registry,
        bat_max_mint: DEFAULT_BAT_MAX_MINT,
        issuer_port: 0,
        clock: soko::clock::Clock::system(),
        blind_protected: soko::devmint::blind_protected_endpoints(),
    };
    let mint = DevMint::start_with_auth_settling_after(dir.path(), 0, settings, settle_after_secs)
        .await
        .expect("auth dev mint starts");
    (mint, dir)
}

fn auth_settings(
    registered: impl IntoIterator<Item = PublicKey>,
    clock: soko::clock::Clock,
) -> AuthSettings {
    let registry: HashSet<PublicKey> = registered.into_iter().collect();
    AuthSettings {
        registry: Arc::new(registry),
        bat_max_mint: DEFAULT_BAT_MAX_MINT,
        issuer_port: 0,
        clock,
        blind_protected: soko::devmint::blind_protected_endpoints(),
    }
}

/// The token endpoint of `mint`'s issuer.
pub fn token_url(mint: &DevMint) -> String {
    mint.issuer().expect("auth is on").token_url()
}
