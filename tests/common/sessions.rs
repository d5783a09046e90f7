//! Private sessions for tests: a registered trader, BATs from soko's own dev mint, a session
//! opened over NIP-17 from a fresh key, and ecash to put in it.

use cdk::amount::SplitTarget;
use cdk::nuts::{BlindAuthToken, PaymentMethod};
use cdk::wallet::SendOptions;
use cdk::Amount;
use cdk::StreamExt;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

use super::{operator, TestSoko, User};

/// The registration event kind (`kinds/agents.md`).
const REGISTRATION_KIND: u16 = 29470;

/// A config edit turning on blind auth on the embedded dev mint (issuer on a free port).
pub fn with_auth(config: &mut soko::Config) {
    config.dev_mint_auth = Some(soko::config::DevMintAuth {
        bat_max_mint: soko::config::DEFAULT_BAT_MAX_MINT,
        issuer_port: 0,
    });
}

/// Registers `user` with soko as a trader (an invite from the operator, a signed
/// registration event over NIP-17).
pub async fn register_trader(soko: &TestSoko, user: &mut User) {
    let created = operator(soko, "invite_create", json!({"role": "trader"})).await;
    assert!(created.ok, "{created:?}");
    let code = created.result.expect("a code")["code"]
        .as_str()
        .expect("a code")
        .to_owned();
    let event = EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
        .tags([
            Tag::parse(["invite", code.as_str()]).expect("tag"),
            Tag::parse(["role", "trader"]).expect("tag"),
            Tag::public_key(soko.bot()),
        ])
        .sign_with_keys(&user.keys)
        .expect("signed");
    let reply = user
        .ask_nip17(
            soko.bot(),
            &json!({"cmd": "register", "args": {"event": event}}).to_string(),
        )
        .await
        .json();
    assert_eq!(reply["result"]["role"], "trader", "{reply}");
}

/// `n` BATs of soko's embedded dev mint for `trader`, who logs in at its dev issuer.
pub async fn embedded_bats(soko: &TestSoko, trader: &Keys, n: u64) -> Vec<BlindAuthToken> {
    let mint = soko.daemon().dev_mint().expect("embedded dev mint");
    let cat = super::auth::login(&super::auth::token_url(mint), trader).await;
    super::auth::bats(mint.url(), &cat, n).await
}

/// Sends `cmd` over NIP-17 from `user`, in `session` when given; the reply.
pub async fn ask(
    soko: &TestSoko,
    user: &mut User,
    session: Option<&str>,
    cmd: &str,
    args: Value,
) -> Value {
    let mut request = json!({"v": 1, "cmd": cmd, "args": args});
    if let Some(id) = session {
        request["session"] = json!(id);
    }
    user.ask_nip17(soko.bot(), &request.to_string())
        .await
        .json()
}

/// `open_session` from `user` with `bat` (a token, or any text): the reply.
pub async fn try_open(soko: &TestSoko, user: &mut User, bat: impl std::fmt::Display) -> Value {
    ask(
        soko,
        user,
        None,
        "open_session",
        json!({"bat": bat.to_string()}),
    )
    .await
}

/// One BAT of a mint of its own (not soko's), minted for `keys`; keep the mint and its dir
/// alive while the BAT is used.
pub async fn foreign_bat(
    keys: &Keys,
) -> (soko::devmint::DevMint, tempfile::TempDir, BlindAuthToken) {
    let (mint, dir) = super::auth::external_auth_mint([keys.public_key()]).await;
    let cat = super::auth::login(&super::auth::token_url(&mint), keys).await;
    let bat = super::auth::bats(mint.url(), &cat, 1).await.remove(0);
    (mint, dir, bat)
}

/// `open_session` from `user` with `bat`, its ecash to go back to `refund_to`: the reply.
pub async fn open_refunding(
    soko: &TestSoko,
    user: &mut User,
    bat: &BlindAuthToken,
    refund_to: &str,
) -> Value {
    let args = json!({"bat": bat.to_string(), "refund_to": refund_to});
    ask(soko, user, None, "open_session", args).await
}

/// Mints `amount` sat at soko's mint and deposits them into session `id`: the reply.
pub async fn deposit(soko: &TestSoko, user: &mut User, id: &str, amount: u64) -> Value {
    let token = token_from(soko.daemon().mint_url(), amount).await;
    ask(
        soko,
        user,
        Some(id),
        "session_deposit",
        json!({ "token": token }),
    )
    .await
}

/// Opens a session from `user` with `bat`; its id.
pub async fn open(soko: &TestSoko, user: &mut User, bat: &BlindAuthToken) -> String {
    let reply = try_open(soko, user, bat).await;
    assert_eq!(reply["ok"], true, "{reply}");
    reply["result"]["session"]
        .as_str()
        .expect("a session id")
        .to_owned()
}

/// The error code of a refused reply.
pub fn code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"]["code"].as_str().expect("a code")
}

/// A Cashu token of `amount` sat from the mint at `mint_url`, minted by a wallet of its own.
pub async fn token_from(mint_url: &str, amount: u64) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = soko::store::Store::open(dir.path()).expect("store");
    let wallet = soko::wallet::open(&store, "payer", mint_url, &fresh_seed()).expect("wallet");
    let quote = wallet
        .mint_quote(
            PaymentMethod::BOLT11,
            Some(Amount::from(amount)),
            None,
            None,
        )
        .await
        .expect("mint quote");
    wallet
        .proof_stream(quote, SplitTarget::default(), None)
        .next()
        .await
        .expect("minted")
        .expect("minted");
    wallet
        .prepare_send(Amount::from(amount), SendOptions::default())
        .await
        .expect("send prepared")
        .confirm(None)
        .await
        .expect("token")
        .to_string()
}

/// A seed of its own for each throwaway wallet: wallets sharing one derive the same
/// NUT-13 secrets, and the mint refuses the second.
fn fresh_seed() -> [u8; 64] {
    let mut seed = [0u8; 64];
    for chunk in seed.chunks_mut(32) {
        chunk.copy_from_slice(&Keys::generate().secret_key().to_secret_bytes());
    }
    seed
}

/// Redeems `token` into a fresh wallet at `mint_url`: the sats received.
pub async fn redeem(mint_url: &str, token: &str) -> u64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = soko::store::Store::open(dir.path()).expect("store");
    let wallet = soko::wallet::open(&store, "payee", mint_url, &fresh_seed()).expect("wallet");
    u64::from(
        wallet
            .receive(token, Default::default())
            .await
            .expect("the refund token redeems"),
    )
}

/// The Cashu token in a refund DM (its last line).
pub fn refund_token(dm: &super::Received) -> String {
    assert!(dm.content.starts_with("Refund from soko"), "{}", dm.content);
    dm.content
        .lines()
        .last()
        .expect("a token line")
        .trim()
        .to_owned()
}

/// Names of sled trees of session `id`'s wallet still in `store`.
pub fn session_trees(db: &sled::Db, id: &str) -> Vec<String> {
    let prefix = format!("wallet/session:{id}/");
    db.tree_names()
        .into_iter()
        .map(|name| String::from_utf8_lossy(&name).into_owned())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// Redeems `token` into a fresh wallet at `mint_url` signing with `key`: the sats, or the
/// mint's refusal.
pub async fn redeem_with(mint_url: &str, token: &str, key: Option<&Keys>) -> Result<u64, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = soko::store::Store::open(dir.path()).expect("store");
    let wallet = soko::wallet::open(&store, "redeemer", mint_url, &fresh_seed()).expect("wallet");
    let options = cdk::wallet::ReceiveOptions {
        p2pk_signing_keys: key
            .map(|k| cdk::nuts::SecretKey::from_hex(k.secret_key().to_secret_hex()).expect("a key"))
            .into_iter()
            .collect(),
        ..Default::default()
    };
    wallet
        .receive(token, options)
        .await
        .map(u64::from)
        .map_err(|e| e.to_string())
}
