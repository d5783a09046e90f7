//! A newcomer's walkthrough of one NIP-15 order with escrow, against a running soko.
//!
//! Start soko in one terminal, then run the walkthrough in another with the same config and
//! data dir (the operator key that creates the demo shop lives in the data dir):
//!
//! ```sh
//! cargo run --release -- run [--config FILE] [--data-dir DIR]
//! cargo run --release --example buyer -- [--config FILE] [--data-dir DIR] [--nip17]
//! ```
//!
//! It plays both sides of a sale and prints every message:
//!
//! 1. as the operator (`soko::operator::call`, the same DMs `soko merchant …` sends), it
//!    creates the merchant "Demo Duka" (or reuses it on later runs), a `sat` stall with one
//!    shipping zone and a product;
//! 2. as a brand-new buyer with its own key and relay connection, it lists the stalls and
//!    products it finds on soko's relay (kinds 30017 / 30018);
//! 3. it DMs a NIP-15 order (type 0) to the merchant's npub, over NIP-04 or, with `--nip17`,
//!    as a gift wrap, and prints the payment request (type 1) with its Lightning invoice; the
//!    embedded dev mint's fake Lightning backend pays it by itself about a second later, and
//!    the buyer gets the "paid" status (type 2) and a separate DM with the delivery code;
//! 4. as the operator on the merchant's behalf, it presents that code with `order_deliver`,
//!    which releases the escrow to the merchant, and prints the buyer's final status and the
//!    merchant's balance.
//!
//! Everything goes over loopback to soko's embedded relay; every wait has a timeout that says
//! what to check.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use nostr_sdk::nips::nip04;
use nostr_sdk::nips::nip59::UnwrappedGift;
use nostr_sdk::{
    Client, Event, EventBuilder, Filter, Keys, Kind, PublicKey, RelayPoolNotification, Tag,
    ToBech32,
};
use serde_json::{json, Value};
use soko::proto::nip15::{Product, Stall};
use soko::Config;
use tokio::sync::broadcast::{self, error::RecvError};

/// The demo shop's name; a merchant of this name is reused instead of created again.
const SHOP_NAME: &str = "Demo Duka";
/// Ids of the demo listings (`d` tags): putting them again replaces them.
const STALL_ID: &str = "demo-duka";
const PRODUCT_ID: &str = "demo-mango";
const ZONE_ID: &str = "town";
/// How many mangoes the walkthrough orders.
const QUANTITY: u64 = 2;
/// How long connecting to the relay may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long fetching the listings may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(about = "Walk through one NIP-15 order with escrow against a running soko")]
struct Args {
    /// Config file of the running soko (TOML); without it the defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Data directory of the running soko; overrides [storage] data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,

    /// Send the order as a NIP-17 gift wrap instead of a NIP-04 DM.
    #[arg(long)]
    nip17: bool,

    /// Seconds to wait for each answer from soko.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // soko's own log belongs to `soko run`; this program only prints the walkthrough.
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the async runtime")
        .and_then(|runtime| runtime.block_on(walkthrough(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nbuyer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn walkthrough(args: Args) -> Result<()> {
    let config = Config::resolve(args.config.as_deref(), args.data_dir.as_deref())
        .context("the config soko runs with")?;
    if !config.relay.enabled {
        bail!("this walkthrough talks to soko's embedded relay, but [relay] enabled = false");
    }
    let relay_url = format!("ws://{}:{}", config.relay.bind, config.relay.port);
    let timeout = Duration::from_secs(args.timeout);
    println!(
        "soko buyer walkthrough — relay {relay_url}, data dir {}",
        config.storage.data_dir.display()
    );
    // Without this, a soko that is not running shows up only as an operator call that times
    // out after half a minute.
    let listening = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((config.relay.bind, config.relay.port)),
    )
    .await;
    if !matches!(listening, Ok(Ok(_))) {
        bail!(
            "nothing answers at {relay_url}: is `soko run` running with this config and data dir?"
        );
    }

    println!("\n1. The operator sets up a shop");
    let merchant = set_up_shop(&config).await?;

    println!("\n2. A new buyer looks around the relay");
    let mut buyer = Buyer::connect(&relay_url, merchant.key).await?;
    println!("   buyer npub   {}", npub(&buyer.keys.public_key()));
    list_market(&buyer, merchant.key).await?;

    let scheme = if args.nip17 {
        "NIP-17 gift wrap"
    } else {
        "NIP-04 DM"
    };
    println!("\n3. The buyer orders {QUANTITY} mangoes by {scheme}");
    let order_id = format!("demo-{}", &Keys::generate().public_key().to_hex()[..8]);
    let order = json!({
        "id": order_id,
        "type": 0,
        "name": "Newcomer",
        "address": "Moi Avenue 12, Nairobi",
        "message": "placed by the soko buyer walkthrough",
        "contact": { "nostr": npub(&buyer.keys.public_key()) },
        "items": [{ "product_id": PRODUCT_ID, "quantity": QUANTITY }],
        "shipping_id": ZONE_ID,
    });
    println!("   order (type 0) {}", pretty(&order));
    buyer.send(&order.to_string(), args.nip17).await?;

    let request = buyer
        .next_nip15(&order_id, timeout, |_| true)
        .await
        .map_err(|e| no_answer(e, timeout))?;
    if request["type"] != 1 {
        bail!("soko did not accept the order: {}", pretty(&request));
    }
    println!("   payment request (type 1) {}", pretty(&request));
    let invoice = request["payment_options"]
        .as_array()
        .and_then(|options| options.iter().find(|o| o["type"] == "ln"))
        .and_then(|o| o["link"].as_str())
        .ok_or_else(|| anyhow!("the payment request carries no Lightning invoice"))?;
    println!("   invoice      {invoice}");
    println!("   (the dev mint's fake Lightning backend pays it by itself in about a second)");

    let waiting_since = Instant::now();
    let paid = buyer
        .next_nip15(&order_id, timeout, |status| status["paid"] == true)
        .await
        .map_err(|e| {
            e.context(format!(
                "the invoice was not reported paid within {} s: soko's embedded dev mint settles \
                 invoices by itself; with a real mint ([mint] url) pay the invoice yourself",
                timeout.as_secs()
            ))
        })?;
    println!(
        "   status (type 2) after {:.1} s {}",
        waiting_since.elapsed().as_secs_f64(),
        pretty(&paid)
    );
    let code_dm = buyer
        .next_code(&order_id, timeout)
        .await
        .map_err(|e| e.context("the delivery code DM did not come"))?;
    println!("   delivery code DM:");
    for line in code_dm.text.lines() {
        println!("     | {line}");
    }

    println!("\n4. The goods arrive; the merchant presents the buyer's code");
    let delivered = operator(
        &config,
        "order_deliver",
        json!({ "merchant": merchant.npub, "order": code_dm.number, "code": code_dm.code }),
    )
    .await?;
    println!("   order_deliver -> {}", pretty(&delivered));
    let completed = buyer
        .next_nip15(&order_id, timeout, |status| status["shipped"] == true)
        .await
        .map_err(|e| no_answer(e, timeout))?;
    println!("   status (type 2) {}", pretty(&completed));
    let balance = delivered["balance_sat"]
        .as_u64()
        .ok_or_else(|| anyhow!("order_deliver's result has no balance_sat"))?;
    println!(
        "   {SHOP_NAME}'s balance held by soko: {balance} sat (released {} sat by this order)",
        delivered["released_sat"]
    );

    match listed_stock(&buyer, merchant.key).await {
        Some(stock) => println!(
            "   the listing now shows {stock} mangoes in stock: soko republished it when the \
             order was paid"
        ),
        None => println!("   (the product's listing could not be read back)"),
    }

    buyer.close().await;
    println!(
        "\nDone: order #{} went from DM to escrow to the merchant's balance.",
        code_dm.number
    );
    Ok(())
}

/// The demo merchant.
struct Merchant {
    key: PublicKey,
    npub: String,
}

/// Creates (or finds) the demo merchant and puts its stall and product.
async fn set_up_shop(config: &Config) -> Result<Merchant> {
    let merchants = operator(config, "merchant_list", json!({})).await?;
    let existing = merchants
        .as_array()
        .and_then(|all| all.iter().find(|m| m["name"] == SHOP_NAME))
        .and_then(|m| m["npub"].as_str())
        .map(str::to_owned);
    let npub = match existing {
        Some(npub) => {
            println!("   merchant_add skipped: {SHOP_NAME} exists from an earlier run");
            npub
        }
        None => {
            let added = operator(config, "merchant_add", json!({ "name": SHOP_NAME })).await?;
            println!("   merchant_add -> {}", pretty(&added));
            added["npub"]
                .as_str()
                .ok_or_else(|| anyhow!("merchant_add's result has no npub: {added}"))?
                .to_owned()
        }
    };
    let key = PublicKey::parse(&npub).with_context(|| format!("merchant npub {npub:?}"))?;
    println!("   merchant npub {npub}");
    println!("   (soko holds this identity's key; buyers DM their orders to it)");

    let stall = json!({
        "id": STALL_ID,
        "name": SHOP_NAME,
        "description": "Fresh fruit from the soko walkthrough",
        "currency": "sat",
        "shipping": [{ "id": ZONE_ID, "name": "Town delivery", "cost": 50, "regions": ["KE"] }],
    });
    let put = operator(
        config,
        "stall_put",
        json!({ "merchant": npub, "stall": stall }),
    )
    .await?;
    println!("   stall_put {STALL_ID:?} -> event {}", put["event_id"]);
    let product = json!({
        "id": PRODUCT_ID,
        "stall_id": STALL_ID,
        "name": "Mango",
        "description": "Ripe Apple mango",
        "currency": "sat",
        "price": 200,
        "quantity": 100,
        "shipping": [{ "id": ZONE_ID, "cost": 5 }],
    });
    let put = operator(
        config,
        "product_put",
        json!({ "merchant": npub, "product": product }),
    )
    .await?;
    println!("   product_put {PRODUCT_ID:?} -> event {}", put["event_id"]);
    Ok(Merchant { key, npub })
}

/// Sends an operator command to the running soko and returns its result, or the refusal as
/// an error. `soko::operator::call` bounds the wait and names the likely cause.
async fn operator(config: &Config, cmd: &str, args: Value) -> Result<Value> {
    let response = soko::operator::call(config, cmd, args)
        .await
        .with_context(|| format!("operator command {cmd}"))?;
    match (response.ok, response.result, response.error) {
        (true, Some(result), _) => Ok(result),
        (_, _, Some(error)) => bail!("{cmd} refused ({:?}): {}", error.code, error.message),
        _ => bail!("{cmd}: soko sent a malformed answer"),
    }
}

/// Prints the stalls and products on the relay, the demo merchant's marked.
async fn list_market(buyer: &Buyer, merchant: PublicKey) -> Result<()> {
    let listings = buyer
        .client
        .fetch_events(
            Filter::new().kinds([Kind::SetStall, Kind::SetProduct]),
            FETCH_TIMEOUT,
        )
        .await
        .context("fetching stalls and products from the relay")?;
    let mine = |author: &PublicKey| {
        if *author == merchant {
            "  <- the demo shop"
        } else {
            ""
        }
    };
    let stalls: Vec<(PublicKey, Stall)> = listings
        .iter()
        .filter(|e| e.kind == Kind::SetStall)
        .filter_map(|e| Some((e.pubkey, serde_json::from_str(&e.content).ok()?)))
        .collect();
    let products: Vec<(PublicKey, Product)> = listings
        .iter()
        .filter(|e| e.kind == Kind::SetProduct)
        .filter_map(|e| Some((e.pubkey, serde_json::from_str(&e.content).ok()?)))
        .collect();
    println!("   {} stall(s) on the relay:", stalls.len());
    for (author, stall) in &stalls {
        let zones: Vec<String> = stall
            .shipping
            .iter()
            .map(|z| format!("{} +{} {}", z.id, z.cost, stall.currency))
            .collect();
        println!(
            "     {:<20} {:<4} shipping: {}{}",
            stall.name,
            stall.currency,
            zones.join(", "),
            mine(author)
        );
    }
    println!("   {} product(s) on the relay:", products.len());
    for (author, product) in &products {
        let stock = product
            .quantity
            .map_or_else(|| "unlimited".to_owned(), |q| format!("{q} in stock"));
        println!(
            "     {:<20} {} {} ({stock}, stall {}){}",
            product.name,
            product.price,
            product.currency,
            product.stall_id,
            mine(author)
        );
    }
    if !products
        .iter()
        .any(|(author, p)| *author == merchant && p.id == PRODUCT_ID)
    {
        bail!("the demo product is not on the relay although product_put succeeded");
    }
    Ok(())
}

/// The demo product's stock as its newest listing on the relay says.
async fn listed_stock(buyer: &Buyer, merchant: PublicKey) -> Option<u64> {
    let events = buyer
        .client
        .fetch_events(
            Filter::new()
                .author(merchant)
                .kind(Kind::SetProduct)
                .identifier(PRODUCT_ID),
            FETCH_TIMEOUT,
        )
        .await
        .ok()?;
    let newest = events.iter().max_by_key(|e| e.created_at)?;
    serde_json::from_str::<Product>(&newest.content)
        .ok()?
        .quantity
}

/// A buyer with a fresh key and its own connection to soko's relay.
struct Buyer {
    keys: Keys,
    merchant: PublicKey,
    client: Client,
    inbox: broadcast::Receiver<RelayPoolNotification>,
    /// DMs read while waiting for another one; the next waits look here first.
    unread: Vec<String>,
}

/// The delivery code DM, parsed.
struct CodeDm {
    number: u64,
    code: String,
    text: String,
}

impl Buyer {
    async fn connect(relay_url: &str, merchant: PublicKey) -> Result<Self> {
        let keys = Keys::generate();
        let client = Client::builder().signer(keys.clone()).build();
        client
            .add_relay(relay_url)
            .await
            .with_context(|| format!("relay url {relay_url}"))?;
        let connected = client.try_connect(CONNECT_TIMEOUT).await;
        if connected.success.is_empty() {
            bail!(
                "cannot reach soko's relay at {relay_url} within {} s: is `soko run` running with \
                 this config? ({:?})",
                CONNECT_TIMEOUT.as_secs(),
                connected.failed
            );
        }
        // Listen before subscribing, so that no answer can slip past.
        let inbox = client.notifications();
        client
            .subscribe(
                Filter::new()
                    .kinds([Kind::EncryptedDirectMessage, Kind::GiftWrap])
                    .pubkey(keys.public_key()),
                None,
            )
            .await
            .context("subscribing to the buyer's DMs")?;
        Ok(Self {
            keys,
            merchant,
            client,
            inbox,
            unread: Vec::new(),
        })
    }

    /// Sends `content` to the merchant as a NIP-04 DM or a NIP-17 gift wrap.
    async fn send(&self, content: &str, nip17: bool) -> Result<()> {
        let event: Event = if nip17 {
            EventBuilder::private_msg(&self.keys, self.merchant, content, []).await?
        } else {
            let ciphertext = nip04::encrypt(self.keys.secret_key(), &self.merchant, content)?;
            EventBuilder::new(Kind::EncryptedDirectMessage, ciphertext)
                .tag(Tag::public_key(self.merchant))
                .sign_with_keys(&self.keys)?
        };
        let output = self
            .client
            .send_event(&event)
            .await
            .context("publishing the order")?;
        if output.success.is_empty() {
            bail!("the relay refused the order: {:?}", output.failed);
        }
        Ok(())
    }

    /// The next NIP-15 message about `order_id` that `wanted` accepts.
    async fn next_nip15(
        &mut self,
        order_id: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let matches = |text: &str| {
            serde_json::from_str::<Value>(text)
                .ok()
                .filter(|v| v["id"] == order_id && v["type"].is_u64() && wanted(v))
        };
        let text = self
            .next_dm(timeout, |text| matches(text).is_some())
            .await?;
        matches(&text).ok_or_else(|| anyhow!("a matched DM stopped matching"))
    }

    /// The delivery code DM for `order_id`:
    /// `Delivery code for order #N (ORDER ID): CODE` on its first line (kinds/orders.md).
    async fn next_code(&mut self, order_id: &str, timeout: Duration) -> Result<CodeDm> {
        let marker = format!("({order_id}): ");
        let text = self
            .next_dm(timeout, |text| {
                text.starts_with("Delivery code for order #") && text.contains(&marker)
            })
            .await?;
        let first_line = text.lines().next().unwrap_or_default();
        let number = first_line
            .strip_prefix("Delivery code for order #")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("no order number in the code DM: {first_line}"))?;
        let code = first_line
            .rsplit(' ')
            .next()
            .filter(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| anyhow!("no 8-digit code in the code DM: {first_line}"))?
            .to_owned();
        Ok(CodeDm { number, code, text })
    }

    /// The next DM from the merchant whose plaintext `wanted` accepts, within `timeout`.
    async fn next_dm(
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
                Ok(Err(RecvError::Closed)) => bail!("the relay connection closed"),
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Ok(notification)) => notification,
            };
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            let Some(text) = self.open(&event).await else {
                continue;
            };
            if wanted(&text) {
                return Ok(text);
            }
            self.unread.push(text);
        }
    }

    /// The plaintext of a DM from the merchant; `None` for anything else.
    async fn open(&self, event: &Event) -> Option<String> {
        match event.kind {
            Kind::EncryptedDirectMessage if event.pubkey == self.merchant => {
                nip04::decrypt(self.keys.secret_key(), &event.pubkey, &event.content).ok()
            }
            Kind::GiftWrap => {
                let gift = UnwrappedGift::from_gift_wrap(&self.keys, event)
                    .await
                    .ok()?;
                (gift.sender == self.merchant).then_some(gift.rumor.content)
            }
            _ => None,
        }
    }

    async fn close(self) {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.client.shutdown()).await;
    }
}

/// The error for an answer soko never sent.
fn no_answer(e: anyhow::Error, timeout: Duration) -> anyhow::Error {
    e.context(format!(
        "no answer from soko in {} s: is `soko run` running with this data dir?",
        timeout.as_secs()
    ))
}

fn npub(key: &PublicKey) -> String {
    key.to_bech32().unwrap_or_else(|_| key.to_hex())
}

/// Indented JSON for the walkthrough's output.
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|_| value.to_string())
        .replace('\n', "\n   ")
}
