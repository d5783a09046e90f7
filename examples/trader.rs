//! A trader's walkthrough of a private session against a running soko: registration →
//! login → blind auth tokens (BATs) → a session from a fresh key, with ecash in and out.
//!
//! soko must run its embedded dev mint with blind auth on (`[mint] auth = true` in its
//! config; see the README, "Private sessions"):
//!
//! ```sh
//! cargo run --release -- run --config soko-auth.toml [--data-dir DIR]
//! cargo run --release --example trader -- --config soko-auth.toml [--data-dir DIR] [--invite CODE]
//! ```
//!
//! Printing every step and what came back:
//!
//! 1. the trader key (a fresh one, or `--nsec`) asks `whoami`; unless it is a trader's
//!    already, it needs an invite: `--invite`, or else the operator (the key in the data
//!    dir, as for `soko invite create --role trader`) creates a one-use trader invite;
//! 2. it registers: a kind-29470 event signed by its key, carrying the invite, sent with
//!    `register` in a NIP-17 DM (`kinds/agents.md`);
//! 3. it logs in at the mint's OIDC issuer, found through the mint's `/v1/info` (NUT-21) and
//!    the issuer's discovery document: a NIP-98 event signed by the registered key, POSTed
//!    to the token endpoint, answered with a clear-auth token (CAT). Its claims are shown;
//!    the token itself never is;
//! 4. cdk's wallet mints BATs with the CAT (`POST /v1/auth/blind/mint`): blind signatures,
//!    so the mint cannot tell later which login a BAT came from. Only their length and a
//!    hash prefix are shown;
//! 5. from a fresh session key, on a connection of its own, it opens a session with one BAT
//!    (`kinds/sessions.md`), shows that the same BAT is refused a second time, asks
//!    `session_status`, deposits a Cashu token minted at the dev mint (its fake Lightning
//!    backend pays the invoice by itself), closes the session and redeems the refund token
//!    soko sends back by DM.

#[path = "walkthrough/mod.rs"]
mod walkthrough;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use cdk::amount::SplitTarget;
use cdk::nuts::{AuthProof, BlindAuthToken, CurrencyUnit, PaymentMethod};
use cdk::wallet::{SendOptions, Wallet, WalletBuilder};
use cdk::{Amount, StreamExt as _};
use clap::Parser;
use nostr_sdk::nips::nip59::UnwrappedGift;
use nostr_sdk::nips::nip98::{HttpData, HttpMethod};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::config::MintConfig;
use soko::proto::agents::REGISTRATION_KIND;

/// How long connecting to the relay may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The grant type of the dev issuer's login by signed Nostr event.
const GRANT_TYPE: &str = soko::devmint::oidc::GRANT_TYPE;
/// The refund DM's first words (`kinds/sessions.md`, "The refund").
const REFUND_PREFIX: &str = "Refund from soko";

#[derive(Debug, Parser)]
#[command(about = "Walk through registration, login, blind auth tokens and a private session")]
struct Args {
    /// The trader invite code (from `soko invite create --role trader`). Without it, the
    /// operator key in the data dir creates a one-use trader invite.
    #[arg(long)]
    invite: Option<String>,

    /// The trader's registered key (nsec or hex); without it a fresh key registers. A key
    /// that is a trader's already skips registration.
    #[arg(long)]
    nsec: Option<String>,

    /// How many BATs to mint (one opens the session; a real client keeps the rest).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50))]
    bats: u64,

    /// Sats to deposit into the session (minted at the dev mint, which pays itself).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    deposit: u64,

    /// The mint's URL; without it, the embedded dev mint's (`[mint] dev_port`).
    #[arg(long)]
    mint: Option<String>,

    /// Config file of the running soko (TOML); without it the defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Data directory of the running soko; overrides [storage] data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,

    /// Seconds to wait for each answer (soko, the mint, the issuer).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the async runtime")
        .and_then(|runtime| runtime.block_on(walkthrough(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ntrader: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn walkthrough(args: Args) -> Result<()> {
    let walkthrough::RunningSoko { config, bot, relay } =
        walkthrough::running_soko(args.config.as_deref(), args.data_dir.as_deref())?;
    let mint_url = match (&args.mint, &config.mint) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, MintConfig::EmbeddedDev { port: 0 }) => bail!(
            "[mint] dev_port = 0 picks a free port at each start: pass --mint with the URL \
             `soko run` printed"
        ),
        (None, MintConfig::EmbeddedDev { port }) => format!("http://127.0.0.1:{port}"),
        (None, MintConfig::External { .. }) => bail!(
            "soko uses an external mint: this walkthrough logs in at the embedded dev mint's \
             issuer (`[mint] embedded_dev = true` and `auth = true`)"
        ),
    };
    if args.mint.is_none() && config.dev_mint_auth.is_none() {
        bail!(
            "blind auth is off in this config: add `auth = true` under [mint] and restart \
             `soko run` with it"
        );
    }
    let timeout = Duration::from_secs(args.timeout);
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("building the HTTP client")?;
    println!(
        "soko trader walkthrough — relay {relay}, mint {mint_url}, soko {}",
        npub(&bot)
    );

    // 1. The trader key, and an invite unless it is a trader's already.
    let trader_keys = match &args.nsec {
        Some(secret) => Keys::parse(secret).context("--nsec is not a Nostr secret key")?,
        None => Keys::generate(),
    };
    println!("\n1. The trader key, and what soko knows of it");
    println!(
        "   trader npub  {}{}",
        npub(&trader_keys.public_key()),
        if args.nsec.is_none() { " (fresh)" } else { "" }
    );
    let mut trader = Dm::connect(trader_keys.clone(), &relay, bot).await?;
    let answer = trader.ask("whoami", json!({}), None, timeout).await?;
    println!("   ← {}", shown(&answer));
    if answer["result"]["role"] == "trader" {
        println!("\n2. Already a trader: no invite, no registration needed");
    } else {
        let code = match &args.invite {
            Some(code) => {
                println!("   Using the trader invite code given with --invite");
                code.clone()
            }
            None => {
                println!("   No --invite given: the operator creates a one-use trader invite");
                println!(
                    "   (what `soko invite create --role trader` does: an admin's DM to soko)"
                );
                let answer = soko::operator::call(
                    &config,
                    "invite_create",
                    json!({"role": "trader", "uses": 1}),
                )
                .await
                .context("asking soko for an invite as its operator")?;
                let result = answer
                    .result
                    .filter(|_| answer.ok)
                    .ok_or_else(|| anyhow!("soko refused the invite: {:?}", answer.error))?;
                println!("   invite_create ← {result}");
                result["code"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no code in the answer"))?
                    .to_owned()
            }
        };

        // 2. Registration.
        println!("\n2. Registering the trader key with the invite, over NIP-17");
        let event = EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
            .tags([
                Tag::parse(["invite", code.as_str()])?,
                Tag::parse(["role", "trader"])?,
                Tag::public_key(bot),
            ])
            .sign_with_keys(&trader_keys)?;
        println!(
            "   registration event (kind {REGISTRATION_KIND}, signed by the trader key, good \
             for 60 s and once):"
        );
        println!("   {}", event.as_json());
        let answer = trader
            .ask("register", json!({ "event": event }), None, timeout)
            .await?;
        println!("   ← {}", shown(&answer));
        if answer["ok"] != true {
            bail!("soko refused the registration: {}", answer["error"]);
        }
        let answer = trader.ask("whoami", json!({}), None, timeout).await?;
        println!("   ← {}", shown(&answer));
    }
    trader.close().await;

    // 3. Login: NUT-21 clear auth.
    println!("\n3. Logging in at the mint's OIDC issuer (NUT-21 clear auth)");
    let info = get_json(&http, &format!("{mint_url}/v1/info")).await?;
    let nut21 = &info["nuts"]["21"];
    let nut22 = &info["nuts"]["22"];
    if nut21.is_null() || nut22.is_null() {
        bail!(
            "the mint at {mint_url} does no blind auth (no NUT-21/22 in /v1/info): set \
             `auth = true` under [mint] and restart `soko run`"
        );
    }
    println!("   GET {mint_url}/v1/info");
    println!("   ← nuts[\"21\"] {nut21}");
    println!("   ← nuts[\"22\"] {nut22}");
    let discovery_url = nut21["openid_discovery"]
        .as_str()
        .ok_or_else(|| anyhow!("NUT-21 names no openid_discovery"))?;
    let client_id = nut21["client_id"].as_str().unwrap_or_default();
    let discovery = get_json(&http, discovery_url).await?;
    let token_url = discovery["token_endpoint"]
        .as_str()
        .ok_or_else(|| anyhow!("the discovery document names no token_endpoint"))?;
    println!("   GET {discovery_url}");
    println!(
        "   ← issuer {}, token_endpoint {token_url}, grant_types_supported {}",
        discovery["issuer"], discovery["grant_types_supported"]
    );
    let login_event = EventBuilder::http_auth(HttpData::new(
        Url::parse(token_url).context("the token endpoint is not a URL")?,
        HttpMethod::POST,
    ))
    .sign_with_keys(&trader_keys)?;
    println!(
        "   NIP-98 login event: kind {}, tags {}, signed by the trader key",
        login_event.kind,
        serde_json::to_string(&login_event.tags)?
    );
    println!("   POST {token_url}  grant_type={GRANT_TYPE}&client_id={client_id}");
    println!("        Authorization: Nostr <base64 of the login event>");
    let response = http
        .post(token_url)
        .header(
            "Authorization",
            format!("Nostr {}", STANDARD.encode(login_event.as_json())),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type={}&client_id={}",
            form_urlencoded::byte_serialize(GRANT_TYPE.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .with_context(|| format!("POST {token_url}"))?;
    let status = response.status();
    let answer: Value = serde_json::from_str(&response.text().await?)
        .with_context(|| format!("the token endpoint's answer ({status}) is not JSON"))?;
    if !status.is_success() {
        bail!("the issuer refused the login ({status}): {answer}");
    }
    let cat = answer["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("no access_token in the issuer's answer"))?
        .to_owned();
    println!(
        "   ← {status}: token_type {}, expires_in {} s, access_token = the CAT, {}",
        answer["token_type"],
        answer["expires_in"],
        fingerprint(&cat)
    );
    let (header, claims) = jwt_parts(&cat)?;
    println!("   CAT header {header}");
    println!("   CAT claims {claims}");
    println!(
        "   (sub is the trader's registered key: the mint knows who logs in; the blind \
         signatures below keep it from knowing which BAT opens which session)"
    );

    // 4. BATs: NUT-22 blind auth.
    println!(
        "\n4. Minting {} BAT(s) with the CAT through cdk's wallet (POST /v1/auth/blind/mint)",
        args.bats
    );
    let bat_dir = tempfile::tempdir().context("a temp dir for the BAT wallet")?;
    let bats = mint_bats(bat_dir.path(), &mint_url, &cat, args.bats).await?;
    for (n, bat) in bats.iter().enumerate() {
        println!(
            "   BAT {}: keyset {}, amount 1, DLEQ proof {}, {}",
            n + 1,
            bat.auth_proof.keyset_id,
            if bat.auth_proof.dleq.is_some() {
                "present"
            } else {
                "MISSING"
            },
            fingerprint(&bat.to_string())
        );
    }
    println!("   The mint signed blinded secrets: it cannot tell which login a BAT came from.");
    let bat = bats
        .first()
        .ok_or_else(|| anyhow!("the mint returned no BAT"))?
        .to_string();

    // 5. The session, from a fresh key on a connection of its own.
    let session_keys = Keys::generate();
    println!("\n5. Opening a session over NIP-17 from a fresh key, with one BAT");
    println!(
        "   session npub {} (fresh; nothing links it to the trader key)",
        npub(&session_keys.public_key())
    );
    let mut session = Dm::connect(session_keys, &relay, bot).await?;
    let answer = session
        .ask("open_session", json!({ "bat": bat }), None, timeout)
        .await?;
    println!("   ← {}", shown(&answer));
    let session_id = ok_result(&answer, "open_session")?["session"]
        .as_str()
        .ok_or_else(|| anyhow!("no session id in {answer}"))?
        .to_owned();

    println!("\n   The same BAT again (a BAT is good once):");
    let answer = session
        .ask("open_session", json!({ "bat": bat }), None, timeout)
        .await?;
    println!("   ← {}", shown(&answer));

    println!("\n   session_status");
    let answer = session
        .ask("session_status", json!({}), Some(&session_id), timeout)
        .await?;
    println!("   ← {}", shown(&answer));

    println!(
        "\n   Minting {} sat at the dev mint for the deposit (a wallet of its own)",
        args.deposit
    );
    let payer_dir = tempfile::tempdir().context("a temp dir for the payer wallet")?;
    let token = mint_token(payer_dir.path(), &mint_url, args.deposit, timeout).await?;
    println!("   token {}", fingerprint(&token));

    println!("\n   session_deposit");
    let answer = session
        .ask(
            "session_deposit",
            json!({ "token": token }),
            Some(&session_id),
            timeout,
        )
        .await?;
    println!("   ← {}", shown(&answer));
    ok_result(&answer, "session_deposit")?;

    println!("\n   session_status");
    let answer = session
        .ask("session_status", json!({}), Some(&session_id), timeout)
        .await?;
    println!("   ← {}", shown(&answer));

    println!("\n   close_session (the balance comes back as a Cashu token by DM)");
    let answer = session
        .ask("close_session", json!({}), Some(&session_id), timeout)
        .await?;
    println!("   ← {}", shown(&answer));
    let returned = ok_result(&answer, "close_session")?["returned_sat"]
        .as_u64()
        .unwrap_or_default();

    let refund = session
        .next_text(timeout, |text| text.starts_with(REFUND_PREFIX))
        .await
        .context("waiting for the refund DM")?;
    let refund_token = refund
        .lines()
        .last()
        .map(str::trim)
        .filter(|line| line.starts_with("cashu"))
        .ok_or_else(|| anyhow!("no token on the refund DM's last line"))?
        .to_owned();
    println!(
        "   refund DM ← {}",
        refund.lines().next().unwrap_or_default()
    );
    println!("               {}", fingerprint(&refund_token));
    let payee_dir = tempfile::tempdir().context("a temp dir for the payee wallet")?;
    let payee = soko::wallet::open(
        &soko::store::Store::open(payee_dir.path())?,
        "payee",
        &mint_url,
        &fresh_seed(),
    )?;
    let redeemed = u64::from(
        payee
            .receive(&refund_token, Default::default())
            .await
            .context("redeeming the refund token at the mint")?,
    );
    println!(
        "   redeemed at the mint: {redeemed} sat (deposited {}, soko returned {returned})",
        args.deposit
    );
    session.close().await;

    println!(
        "\nDone: {} BAT(s) left unused in this walkthrough's temporary wallet (a real client \
         keeps them for later sessions; each opens one).",
        bats.len().saturating_sub(1)
    );
    Ok(())
}

/// BATs minted by cdk's wallet: it fetches the mint's info and auth keyset, posts blinded
/// outputs with the CAT in `Clear-auth`, and checks each signature's DLEQ proof.
async fn mint_bats(
    dir: &std::path::Path,
    mint_url: &str,
    cat: &str,
    n: u64,
) -> Result<Vec<BlindAuthToken>> {
    let store = soko::store::Store::open(dir)?;
    let key = soko::vault::RecordKey::new(fresh_seed()[..32].try_into()?)?;
    let db = soko::wallet::SledWalletDatabase::open(&store, "bats", key)?;
    let wallet = WalletBuilder::new()
        .mint_url(mint_url.parse()?)
        .unit(CurrencyUnit::Sat)
        .localstore(Arc::new(db))
        .seed(fresh_seed())
        .set_auth_cat(cat.to_owned())?
        .build()?;
    wallet
        .fetch_mint_info()
        .await
        .context("reading the mint's info")?;
    let proofs = wallet
        .mint_blind_auth(Amount::from(n))
        .await
        .context("minting BATs")?;
    proofs
        .into_iter()
        .map(|proof| {
            AuthProof::try_from(proof)
                .map(BlindAuthToken::new)
                .map_err(|e| anyhow!("the mint returned a proof that is no BAT: {e}"))
        })
        .collect()
}

/// A Cashu token of `amount` sat: a mint quote, whose invoice the dev mint's fake Lightning
/// backend pays by itself, then the minted proofs sent as a token.
async fn mint_token(
    dir: &std::path::Path,
    mint_url: &str,
    amount: u64,
    timeout: Duration,
) -> Result<String> {
    let store = soko::store::Store::open(dir)?;
    let wallet: Wallet = soko::wallet::open(&store, "payer", mint_url, &fresh_seed())?;
    let quote = wallet
        .mint_quote(
            PaymentMethod::BOLT11,
            Some(Amount::from(amount)),
            None,
            None,
        )
        .await
        .context("asking the mint for a quote")?;
    println!(
        "   mint quote {} → invoice {}… (the fake Lightning backend pays it by itself)",
        quote.id,
        quote.request.chars().take(24).collect::<String>()
    );
    let proofs = tokio::time::timeout(
        timeout,
        wallet
            .proof_stream(quote, SplitTarget::default(), None)
            .next(),
    )
    .await
    .map_err(|_| anyhow!("the invoice was not paid within {} s", timeout.as_secs()))?
    .ok_or_else(|| anyhow!("the mint stream ended without proofs"))?
    .context("minting")?;
    let minted: u64 = proofs.iter().map(|p| u64::from(p.amount)).sum();
    println!("   minted {minted} sat in {} proofs", proofs.len());
    Ok(wallet
        .prepare_send(Amount::from(amount), SendOptions::default())
        .await
        .context("preparing the token")?
        .confirm(None)
        .await
        .context("making the token")?
        .to_string())
}

/// A seed of its own for each throwaway wallet: wallets sharing one derive the same NUT-13
/// secrets, and the mint would refuse the second.
fn fresh_seed() -> [u8; 64] {
    let mut seed = [0u8; 64];
    for chunk in seed.chunks_mut(32) {
        chunk.copy_from_slice(&Keys::generate().secret_key().to_secret_bytes());
    }
    seed
}

/// GET `url` and parse its JSON.
async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}: is `soko run` running with auth on?"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON"))
}

/// The header and claims of a JWT (not verified here: the mint verifies it).
fn jwt_parts(jwt: &str) -> Result<(Value, Value)> {
    let mut parts = jwt.split('.');
    let mut decode = |what: &str| -> Result<Value> {
        let part = parts
            .next()
            .ok_or_else(|| anyhow!("the CAT is not a JWT (no {what})"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .with_context(|| format!("the CAT's {what} is not base64url"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("the CAT's {what} is not JSON"))
    };
    Ok((decode("header")?, decode("claims")?))
}

/// What the walkthrough shows of a secret (a CAT, a BAT, an ecash token): its length and
/// the start of its SHA-256, enough to tell two apart, never enough to use one.
fn fingerprint(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let hex: String = digest
        .as_ref()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{} chars, sha256 {hex}…", secret.len())
}

/// `value` for printing: BATs and tokens as fingerprints, session ids shortened.
fn shown(value: &Value) -> Value {
    match value {
        Value::String(s) if s.starts_with("authA") || s.starts_with("cashu") => {
            Value::String(format!("<{}…, {}>", &s[..5], fingerprint(s)))
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("session", Value::String(id)) => {
                        (k.clone(), Value::String(format!("{}…", short(id))))
                    }
                    _ => (k.clone(), shown(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(shown).collect()),
        other => other.clone(),
    }
}

/// The first 8 characters of `s`.
fn short(s: &str) -> &str {
    s.get(..8).unwrap_or(s)
}

fn ok_result<'a>(answer: &'a Value, cmd: &str) -> Result<&'a Value> {
    if answer["ok"] != true {
        bail!("soko refused {cmd}: {}", answer["error"]);
    }
    Ok(&answer["result"])
}

fn npub(key: &PublicKey) -> String {
    key.to_bech32().unwrap_or_else(|_| key.to_hex())
}

/// One key's NIP-17 conversation with soko, on a relay connection of its own.
struct Dm {
    keys: Keys,
    bot: PublicKey,
    client: Client,
    inbox: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    /// Messages from soko that came while waiting for another.
    unread: Vec<String>,
    /// This run's prefix of request ids, and how many were sent.
    run: String,
    sent: u32,
}

impl Dm {
    async fn connect(keys: Keys, relay: &RelayUrl, bot: PublicKey) -> Result<Self> {
        let client = Client::builder().signer(keys.clone()).build();
        client.add_relay(relay.clone()).await?;
        let connected = client.try_connect(CONNECT_TIMEOUT).await;
        if connected.success.is_empty() {
            bail!(
                "cannot reach soko's relay at {relay} within {} s: is `soko run` running with \
                 this config? ({:?})",
                CONNECT_TIMEOUT.as_secs(),
                connected.failed
            );
        }
        // Listen before subscribing, so that no answer can slip past; only new gift wraps
        // (they are backdated at random, so `since` cannot tell old from new).
        let inbox = client.notifications();
        client
            .subscribe(
                Filter::new()
                    .kind(Kind::GiftWrap)
                    .pubkey(keys.public_key())
                    .limit(0),
                None,
            )
            .await
            .context("subscribing to soko's answers")?;
        Ok(Self {
            keys,
            bot,
            client,
            inbox,
            unread: Vec::new(),
            run: Keys::generate().public_key().to_hex()[..6].to_owned(),
            sent: 0,
        })
    }

    /// Sends one command in a NIP-17 DM (in `session` when given) and returns soko's answer.
    async fn ask(
        &mut self,
        cmd: &str,
        args: Value,
        session: Option<&str>,
        timeout: Duration,
    ) -> Result<Value> {
        // Request ids must be new: soko answers a repeated id (from the same key) with its
        // first answer, so a fixed id would replay an earlier run's.
        self.sent += 1;
        let id = format!("{}-{}", self.run, self.sent);
        let mut request = json!({"v": 1, "id": id, "cmd": cmd, "args": args});
        if let Some(session) = session {
            request["session"] = json!(session);
        }
        println!("   → {}", shown(&request));
        let wrap = EventBuilder::private_msg(&self.keys, self.bot, request.to_string(), []).await?;
        let sent = self
            .client
            .send_event(&wrap)
            .await
            .context("publishing the DM")?;
        if sent.success.is_empty() {
            bail!("the relay refused the DM: {:?}", sent.failed);
        }
        let is_answer =
            |text: &str| serde_json::from_str::<Value>(text).is_ok_and(|v| v["re"] == id);
        let text = self.next_text(timeout, is_answer).await.with_context(|| {
            format!("no answer to {cmd}: is `soko run` running with this data dir?")
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The next message from soko that `wanted` accepts, within `timeout`.
    async fn next_text(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<String> {
        if let Some(at) = self.unread.iter().position(|text| wanted(text)) {
            return Ok(self.unread.remove(at));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notification = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Err(_) => bail!("nothing within {} s", timeout.as_secs()),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(e)) => bail!("the relay connection closed: {e}"),
                Ok(Ok(notification)) => notification,
            };
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            if event.kind != Kind::GiftWrap {
                continue;
            }
            let Ok(gift) = UnwrappedGift::from_gift_wrap(&self.keys, &event).await else {
                continue;
            };
            if gift.sender != self.bot {
                continue;
            }
            if wanted(&gift.rumor.content) {
                return Ok(gift.rumor.content);
            }
            self.unread.push(gift.rumor.content);
        }
    }

    async fn close(self) {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.client.shutdown()).await;
    }
}
