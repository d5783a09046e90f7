//! Load benchmark for soko's NIP-15 checkout with escrow.
//!
//! soko runs in-process (embedded relay and dev mint on free loopback ports, temp data dir).
//! One merchant sells a product with unlimited stock; N concurrent buyers, each with its own
//! key and relay connection (lean clients in phase 1, see below; real nostr-sdk clients in
//! phase 2), half of them ordering over NIP-04 and half over NIP-17, each place M orders one
//! after another, twice:
//!
//! 1. **intake**: each buyer sends its M orders back to back, waiting only for each payment
//!    request (type 1), which measures how fast soko takes orders while the dev mint settles
//!    the invoices behind them; then each buyer collects the "paid" status and delivery code
//!    of its orders and has the operator deliver them, so that every order completes;
//! 2. **full cycles**: each buyer runs M complete orders one after another — order → type 1
//!    → paid (type 2) → delivery code DM → `order_deliver` with the code → completion (type 2,
//!    `shipped: true`) — which measures cycle latency and where it goes.
//!
//! `order_deliver` is sent the way a merchant's operator sends it, as a NIP-17 command DM to
//! the bot, but over one long-lived operator connection shared by all buyers (requests told
//! apart by id) rather than `soko::operator::call`, which connects anew for every call and
//! replays two days of the operator's gift wraps each time: that is the CLI's cost, not
//! soko's. `daemon.escrow().deliver(...)` would skip the command path soko really runs.
//!
//! soko does not pace its wallet's requests to the embedded dev mint (it paces an external
//! mint at `[mint] requests_per_minute`), so the mint's speed, not a client-side limit, is
//! what this benchmark sees.
//!
//! Afterwards it checks conservation — the escrow's books (held + owed) against the escrow
//! wallet's balance and the mint's outstanding ecash, and every order completed — and
//! measures sled's growth per order across clean shutdowns. The figures are set against the
//! bot's crypto per order, measured on one core in the same run before soko starts.
//!
//! ```sh
//! cargo run --release --example bench_orders -- [--buyers N] [--orders M] [--sdk-clients] [--catalog P]
//! ```
//!
//! A nostr-sdk buyer does about as much crypto per order as soko (seal the order, verify and
//! open each answer), and in-process it shares soko's cores. So phase 1's buyers are lean by
//! default: each seals all its orders before the clock and talks to the relay over a minimal
//! websocket (`support::Ws`); in the window it sends an order, reads frames until it has the
//! relay's `OK` and the next event to it, keeps that event unopened, and sends the next
//! order. Once every buyer is done, every kept event is verified (id, signature) and opened,
//! each order's type 1 is found among them by its content, and its latency is taken from that
//! type 1's own arrival (the next event can be soko's answer to an earlier order, when its
//! payment was quick: those orders are counted). The orders are then settled and delivered as
//! before, with every later message verified and opened as it comes. `--sdk-clients` runs
//! phase 1 with nostr-sdk buyers, as a user's client would; phase 2 always does.
//!
//! The clients' other crypto (phase 2, settling) still shares soko's cores. To keep it off
//! them, run soko and the clients in two processes (pinned to different cores with `taskset`
//! when the machine has no second one to spare):
//!
//! ```sh
//! # soko: embedded relay and dev mint, temp data dir; prints the clients' command line,
//! # then checks the books and sled's growth when its input closes (Ctrl-D) or on Ctrl-C
//! cargo run --release --example bench_orders -- --serve
//! # the clients, against it
//! cargo run --release --example bench_orders -- --relay ws://127.0.0.1:PORT --bot npub1… \
//!     --operator-key DATA_DIR --merchant npub1… [--buyers N] [--orders M]
//! ```
//!
//! Every wait is bounded; a message that does not come is counted and reported. The exit
//! status is non-zero when any order was lost or refused, or the books do not balance.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use nostr_sdk::nips::nip04;
use nostr_sdk::nips::nip59::UnwrappedGift;
use nostr_sdk::{
    Client, Event, EventBuilder, Filter, JsonUtil as _, Keys, Kind, PublicKey,
    RelayPoolNotification, RelayUrl, ToBech32,
};
use serde_json::{json, Value};
use soko::escrow::EscrowState;
use soko::money::Sats;
use soko::proto::Response;
use soko::Daemon;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

#[path = "support/mod.rs"]
#[allow(dead_code)] // each example uses its own part of it
mod support;

use support::*;

/// The dev mint's fake Lightning backend reports an invoice paid this long after issuing it
/// (`SETTLE_AFTER_SECS` in src/devmint.rs).
const FAKE_SETTLEMENT: Duration = Duration::from_secs(1);
/// soko's pass over unpaid orders runs this often when the mint tells nothing (`PAYMENT_POLL`
/// in src/daemon.rs).
const PAYMENT_POLL: Duration = Duration::from_secs(1);

/// The benchmark shop: one `sat` stall, one zone, one product with unlimited stock, so that
/// every order is valid and costs the same.
const STALL_ID: &str = "bench-stall";
const PRODUCT_ID: &str = "bench-item";
const ZONE_ID: &str = "local";
const PRICE_SAT: u64 = 100;
const ZONE_COST_SAT: u64 = 5;
/// What each one-unit order costs the buyer, and what its delivery credits the merchant.
const ORDER_TOTAL: Sats = Sats(PRICE_SAT + ZONE_COST_SAT);

#[derive(Debug, Parser)]
#[command(about = "Benchmark soko's NIP-15 checkout with escrow, in-process")]
struct Args {
    /// Concurrent buyers, each with its own key and relay connection; even-numbered buyers
    /// order over NIP-04, odd-numbered ones over NIP-17.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    buyers: u32,

    /// Orders each buyer places in each phase, one after another.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    orders: u32,

    /// Seconds to wait for each expected message before counting it lost.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    reply_timeout: u64,

    /// Iterations of each crypto operation in the single-core measurement.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    crypto_iterations: u32,

    /// soko's log filter on stderr, e.g. `warn` or `soko=debug` (default: no log).
    #[arg(long)]
    log: Option<String>,

    /// Afterwards, restart soko with every retention window at a second and run its
    /// footprint pass, then measure sled again (issue 16): what the orders leave once their
    /// windows have passed.
    #[arg(long, conflicts_with_all = ["serve", "relay"])]
    windows_passed: bool,

    /// Run soko only (no clients): print the clients' command line, then check the books
    /// and sled's growth when stdin closes or on Ctrl-C.
    #[arg(long, conflicts_with_all = ["relay", "bot", "operator_key", "merchant"])]
    serve: bool,

    /// Relay of a soko started with `--serve` (requires --bot and --operator-key); without
    /// it soko runs in this process.
    #[arg(long, requires_all = ["bot", "operator_key", "merchant"], value_parser = parse_relay_url)]
    relay: Option<RelayUrl>,

    /// That soko's bot key, npub or hex.
    #[arg(long, requires = "relay", value_parser = parse_public_key)]
    bot: Option<PublicKey>,

    /// That soko's data dir, where its operator key is (the clients send `merchant_add`,
    /// `stall_put`, `product_put` and `order_deliver` as its operator).
    #[arg(long, requires = "relay")]
    operator_key: Option<std::path::PathBuf>,

    /// The benchmark merchant the `--serve` process set up, npub or hex.
    #[arg(long, requires = "relay", value_parser = parse_public_key)]
    merchant: Option<PublicKey>,

    /// Phase 1 with nostr-sdk buyers, sealing and opening inside the timed window, instead of
    /// lean ones (orders sealed beforehand, answers checked after the window).
    #[arg(long, conflicts_with = "serve")]
    sdk_clients: bool,

    /// Products the benchmark merchant lists; every order names the first. A bigger catalog
    /// shows whether an order costs more when its merchant lists more.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "relay")]
    catalog: u32,
}

fn parse_relay_url(s: &str) -> Result<RelayUrl, String> {
    RelayUrl::parse(s).map_err(|e| e.to_string())
}

fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::parse(s).map_err(|e| e.to_string())
}

/// Where the clients send: relay, bot, and the operator's key.
#[derive(Clone)]
struct Target {
    relay: RelayUrl,
    bot: PublicKey,
    operator: Keys,
}

impl Target {
    fn of(soko: &Soko) -> Result<Self> {
        Ok(Self {
            relay: soko.relay_url()?,
            bot: soko.daemon()?.bot_public_key(),
            operator: soko::identity::operator_keys(&soko.config().storage.data_dir)
                .context("reading the operator key")?,
        })
    }
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    // No log by default: soko's would drown the figures, and its failures surface here as
    // lost messages, refused orders or unbalanced books. `--log` is for finding out why.
    if let Some(level) = &args.log {
        let log = soko::config::LogConfig {
            level: level.clone(),
            json: false,
        };
        soko::logging::init(&log).map_err(|e| anyhow!("--log {level:?}: {e}"))?;
    }

    let iterations = args.crypto_iterations;
    support::measure_then_run(
        CryptoCost::measure(iterations),
        |crypto, cores| async move {
            if args.serve {
                serve(cores, args.catalog).await
            } else if let (Some(relay), Some(bot), Some(dir), Some(merchant)) =
                (&args.relay, args.bot, &args.operator_key, args.merchant)
            {
                let target = Target {
                    relay: relay.clone(),
                    bot,
                    operator: soko::identity::operator_keys(dir).with_context(|| {
                        format!("reading the operator key in {}", dir.display())
                    })?,
                };
                let shop = Shop {
                    merchant,
                    npub: merchant.to_bech32()?,
                };
                clients_only(&args, &target, &shop, crypto).await
            } else {
                run(args, crypto, cores).await
            }
        },
    )
}

/// `--serve`: soko alone, until stdin closes or Ctrl-C; then the books and sled's growth.
async fn serve(cores: usize, catalog: u32) -> Result<ExitCode> {
    let dir = tempfile::tempdir().context("creating a temp data dir")?;
    let mut soko = Soko::new(in_process_config(dir.path()));
    // The shop first, then a stop so that sled is flushed and measured without orders.
    soko.start().await?;
    let shop = set_up_shop(&Target::of(&soko)?, Duration::from_secs(30), catalog).await;
    soko.stop().await?;
    let shop = shop?;
    let before = Storage::measure(dir.path())?;
    soko.start().await?;
    let target = Target::of(&soko)?;
    println!("soko serving on {cores} cores; run the clients with:");
    println!(
        "  cargo run --release --example bench_orders -- --relay {} --bot {} --operator-key {} \
         --merchant {}",
        target.relay,
        target.bot.to_bech32()?,
        dir.path().display(),
        shop.npub
    );
    println!("then close this one's input (Ctrl-D) or press Ctrl-C for the books.");
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let books = Books::check(soko.daemon()?, &shop).await;
    soko.stop().await?;
    let books = books?;
    let balanced = books.print();
    let after = Storage::measure(dir.path())?;
    after.print_growth(&before, books.orders);
    dir.close().context("removing the temp data dir")?;
    Ok(if balanced {
        ExitCode::SUCCESS
    } else {
        println!("\nFAILED: the books do not balance or orders did not complete");
        ExitCode::FAILURE
    })
}

fn print_load(args: &Args) {
    println!(
        "  load        {} buyers ({} NIP-04, {} NIP-17) x {} orders, per phase; reply timeout {} s",
        args.buyers,
        args.buyers.div_ceil(2),
        args.buyers / 2,
        args.orders,
        args.reply_timeout
    );
    if args.catalog > 1 {
        println!(
            "  catalog     the merchant lists {} products; every order names one",
            args.catalog
        );
    }
    if args.sdk_clients {
        println!(
            "  buyers      nostr-sdk in both phases (--sdk-clients): each seals its orders and \
             verifies and opens soko's answers inside the timed window"
        );
    } else {
        println!(
            "  buyers      phase 1 lean (the default): orders sealed before the clock, a minimal \
             websocket, answers kept raw and verified and opened after the window \
             (--sdk-clients for nostr-sdk buyers); phase 2 nostr-sdk"
        );
    }
}

/// The clients against a soko in another process: both phases; the books are checked there.
async fn clients_only(
    args: &Args,
    target: &Target,
    shop: &Shop,
    crypto: CryptoCost,
) -> Result<ExitCode> {
    let timeout = Duration::from_secs(args.reply_timeout);
    println!("soko order benchmark, clients only");
    print_load(args);
    println!(
        "  soko        relay {}, bot {}: another process (its cores are its own when pinned apart)",
        target.relay,
        target.bot.to_bech32()?
    );
    crypto.print(args.crypto_iterations);
    let (intake, cycles) = benchmark(args, target, shop, timeout).await?;
    intake.print(&crypto);
    cycles.print(&crypto, args.buyers);
    let problems = intake.tally.problems() + cycles.tally.problems();
    println!("\nThe books and sled's growth are printed by the --serve process when it stops.");
    Ok(if problems > 0 {
        println!("\nFAILED: {problems} order(s) lost a message or were refused");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn run(args: Args, crypto: CryptoCost, cores: usize) -> Result<ExitCode> {
    let dir = tempfile::tempdir().context("creating a temp data dir")?;
    let mut soko = Soko::new(in_process_config(dir.path()));
    let timeout = Duration::from_secs(args.reply_timeout);

    println!("soko order benchmark");
    print_load(&args);
    println!(
        "  soko        in-process, relay rate limit raised to {IN_PROCESS_RATE_LIMIT}/min per \
         pubkey; {cores} cores shared by the daemon, its relay and mint, and all clients"
    );
    crypto.print(args.crypto_iterations);

    // Set the shop up, then stop soko so that sled is flushed and measured without orders.
    soko.start().await?;
    let shop = match set_up_shop(&Target::of(&soko)?, timeout, args.catalog).await {
        Ok(shop) => shop,
        Err(e) => {
            soko.stop().await?;
            return Err(e);
        }
    };
    soko.stop().await?;
    let before = Storage::measure(dir.path())?;

    soko.start().await?;
    // Whatever happens, soko is stopped before the benchmark's own failure is reported.
    let measured = async {
        let (intake, cycles) = benchmark(&args, &Target::of(&soko)?, &shop, timeout).await?;
        let books = Books::check(soko.daemon()?, &shop).await?;
        Ok::<_, anyhow::Error>((intake, cycles, books))
    }
    .await;
    let (intake, cycles, books) = match measured {
        Ok(measured) => measured,
        Err(e) => {
            soko.stop().await?;
            return Err(e);
        }
    };
    intake.print(&crypto);
    cycles.print(&crypto, args.buyers);
    let balanced = books.print();

    soko.stop().await?;
    let after = Storage::measure(dir.path())?;
    after.print_growth(&before, books.orders);
    if args.windows_passed {
        let passed = windows_passed(&soko, dir.path()).await?;
        println!(
            "\nOnce the windows passed (soko restarted with each at a second, footprint pass run)"
        );
        passed.storage.print_growth(&before, books.orders);
        let baseline = empty_baseline(timeout, args.catalog).await?;
        passed.print_footprint(&baseline, books.orders, soko.config());
    }

    let problems = intake.tally.problems() + cycles.tally.problems();
    let mut failed = false;
    if problems > 0 {
        println!("\nFAILED: {problems} order(s) lost a message or were refused");
        failed = true;
    }
    if !balanced {
        println!("\nFAILED: the books do not balance or orders did not complete");
        failed = true;
    }
    dir.close().context("removing the temp data dir")?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs both phases with the same buyers and operator connection.
async fn benchmark(
    args: &Args,
    target: &Target,
    shop: &Shop,
    timeout: Duration,
) -> Result<(IntakeRun, CycleRun)> {
    let relay = target.relay.clone();
    let operator = Operator::connect(target).await?;
    // Lean buyers seal all their orders before they connect, and well before the clock.
    let lean_buyers = if args.sdk_clients {
        None
    } else {
        Some(connect_lean_buyers(args, target, shop).await?)
    };
    let buyers = connect_all(args.buyers, |index| {
        Buyer::connect(index, relay.clone(), shop.merchant)
    })
    .await?;
    let context = Arc::new(RunContext {
        operator,
        merchant_npub: shop.npub.clone(),
        orders: args.orders,
        timeout,
        intake_window: tokio::sync::Barrier::new(args.buyers as usize),
    });

    let started = Instant::now();
    let lean = lean_buyers.is_some();
    let (buyers, results) = match lean_buyers {
        Some(lean_buyers) => {
            let (lean_buyers, results) = run_buyers(lean_buyers, &context, Phase::Intake).await?;
            for buyer in lean_buyers {
                buyer.close().await;
            }
            (buyers, results)
        }
        None => run_buyers(buyers, &context, Phase::Intake).await?,
    };
    let intake = IntakeRun::collect(started, results, lean);

    let started = Instant::now();
    let (buyers, results) = run_buyers(buyers, &context, Phase::Cycles).await?;
    let cycles = CycleRun::collect(started, results);

    for buyer in buyers {
        buyer.close().await;
    }
    if let Ok(context) = Arc::try_unwrap(context) {
        context.operator.close().await;
    }
    Ok((intake, cycles))
}

/// The benchmark's merchant.
struct Shop {
    merchant: PublicKey,
    npub: String,
}

/// Creates the merchant, its stall and its `catalog` products through operator commands.
async fn set_up_shop(target: &Target, timeout: Duration, catalog: u32) -> Result<Shop> {
    let operator = Operator::connect(target).await?;
    let shop = async {
        let added = operator
            .expect_ok("merchant_add", json!({"name": "Bench Duka"}), timeout)
            .await?;
        let npub = added["npub"]
            .as_str()
            .ok_or_else(|| anyhow!("merchant_add's result has no npub: {added}"))?
            .to_owned();
        let stall = json!({"id": STALL_ID, "name": "Bench Duka", "currency": "sat",
                           "shipping": [{"id": ZONE_ID, "cost": ZONE_COST_SAT}]});
        operator
            .expect_ok(
                "stall_put",
                json!({"merchant": npub, "stall": stall}),
                timeout,
            )
            .await?;
        // `quantity: null` is unlimited stock: no order is refused, and a paid order does not
        // republish the product (which it would to lower a finite stock).
        for index in 0..catalog {
            let id = match index {
                0 => PRODUCT_ID.to_owned(),
                n => format!("{PRODUCT_ID}-{n}"),
            };
            let product = json!({"id": id, "stall_id": STALL_ID, "name": "Bench item",
                                 "currency": "sat", "price": PRICE_SAT, "quantity": null,
                                 "shipping": [{"id": ZONE_ID, "cost": 0}]});
            operator
                .expect_ok(
                    "product_put",
                    json!({"merchant": npub, "product": product}),
                    timeout,
                )
                .await?;
        }
        let merchant = PublicKey::parse(&npub).context("the merchant's npub")?;
        Ok(Shop { merchant, npub })
    }
    .await;
    operator.close().await;
    shop
}

/// The operator's side of admin commands over one long-lived connection: NIP-17 command DMs
/// to the bot, answers routed back to their callers by request id.
struct Operator {
    keys: Keys,
    bot: PublicKey,
    client: Client,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>,
    /// Request ids are `{id_prefix}-{n}`. soko answers a request id it has seen from the
    /// operator with its first answer, without running the command again, so every
    /// connection needs its own prefix.
    id_prefix: String,
    next_id: AtomicU64,
    router: tokio::task::JoinHandle<()>,
}

impl Operator {
    async fn connect(target: &Target) -> Result<Self> {
        let keys = target.operator.clone();
        let client = connect_client(&keys, &target.relay).await?;
        let notifications = client.notifications();
        // `limit 0`: only answers from now on, not the gift wraps stored from earlier runs.
        let answers = Filter::new()
            .kind(Kind::GiftWrap)
            .pubkey(keys.public_key())
            .limit(0);
        subscribe(&client, answers).await?;
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        let router = tokio::spawn(route_answers(
            keys.clone(),
            target.bot,
            notifications,
            waiting.clone(),
        ));
        Ok(Self {
            keys,
            bot: target.bot,
            client,
            waiting,
            id_prefix: Keys::generate().public_key().to_hex()[..8].to_owned(),
            next_id: AtomicU64::new(1),
            router,
        })
    }

    /// Sends `cmd` and waits up to `timeout` for its answer.
    async fn call(&self, cmd: &str, args: Value, timeout: Duration) -> Result<Response> {
        let id = format!(
            "{}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (answer, answered) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), answer);
        let outcome = async {
            let request = json!({"v": 1, "id": id, "cmd": cmd, "args": args}).to_string();
            let wrap = EventBuilder::private_msg(&self.keys, self.bot, request, []).await?;
            publish(&self.client, &wrap, timeout).await?;
            tokio::time::timeout(timeout, answered)
                .await
                .map_err(|_| anyhow!("no answer to {cmd} within {timeout:?}"))?
                .map_err(|_| anyhow!("the operator connection closed"))
        }
        .await;
        lock(&self.waiting).remove(&id);
        outcome
    }

    /// `call`, with a refusal turned into an error.
    async fn expect_ok(&self, cmd: &str, args: Value, timeout: Duration) -> Result<Value> {
        let response = self.call(cmd, args, timeout).await?;
        match (response.ok, response.result, response.error) {
            (true, Some(result), _) => Ok(result),
            (_, _, Some(error)) => bail!("{cmd} refused ({:?}): {}", error.code, error.message),
            _ => bail!("{cmd}: malformed answer"),
        }
    }

    async fn close(self) {
        self.router.abort();
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.client.shutdown()).await;
    }
}

/// Hands each of the bot's answers to the caller waiting for its request id.
async fn route_answers(
    keys: Keys,
    bot: PublicKey,
    mut notifications: broadcast::Receiver<RelayPoolNotification>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>,
) {
    loop {
        let notification = match notifications.recv().await {
            Ok(notification) => notification,
            // Dropped answers leave their callers to time out, which is counted.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => break,
        };
        let event = match notification {
            RelayPoolNotification::Event { event, .. } => event,
            RelayPoolNotification::Shutdown => break,
            _ => continue,
        };
        let Ok(gift) = UnwrappedGift::from_gift_wrap(&keys, &event).await else {
            continue;
        };
        if gift.sender != bot {
            continue;
        }
        let Ok(response) = serde_json::from_str::<Response>(&gift.rumor.content) else {
            continue;
        };
        if let Some(caller) = lock(&waiting).remove(&response.re) {
            let _ = caller.send(response);
        }
    }
}

/// A message the merchant sent a buyer, decrypted and read.
#[derive(Debug)]
struct Mail {
    /// When the buyer had it decrypted.
    at: Instant,
    scheme: Scheme,
    what: MailKind,
}

#[derive(Debug)]
enum MailKind {
    /// A NIP-15 message (type 1 or 2) about an order.
    Nip15 {
        order_id: String,
        kind: u64,
        paid: bool,
        shipped: bool,
        message: String,
    },
    /// `Delivery code for order #N (ORDER ID): CODE` (kinds/orders.md).
    Code {
        order_id: String,
        number: u64,
        code: String,
    },
    /// Anything else, kept for the report.
    Other(String),
}

impl MailKind {
    fn read(text: &str) -> Self {
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            if let (Some(order_id), Some(kind)) = (value["id"].as_str(), value["type"].as_u64()) {
                return MailKind::Nip15 {
                    order_id: order_id.to_owned(),
                    kind,
                    paid: value["paid"] == true,
                    shipped: value["shipped"] == true,
                    message: value["message"].as_str().unwrap_or_default().to_owned(),
                };
            }
        }
        Self::read_code(text).unwrap_or_else(|| MailKind::Other(text.to_owned()))
    }

    /// A short description for the report.
    fn summary(&self) -> String {
        match self {
            MailKind::Nip15 { order_id, kind, .. } => format!("type {kind} about {order_id}"),
            MailKind::Code { order_id, .. } => format!("delivery code for {order_id}"),
            MailKind::Other(text) => format!("{:?}", text.chars().take(80).collect::<String>()),
        }
    }

    fn read_code(text: &str) -> Option<Self> {
        let DeliveryCode {
            order_id,
            number,
            code,
        } = DeliveryCode::read(text)?;
        Some(MailKind::Code {
            order_id,
            number,
            code,
        })
    }
}

/// Why an order did not complete.
enum Problem {
    /// Publishing the order failed or the relay refused it.
    NotSent(String),
    /// A type 2 with `paid: false` instead of the payment request.
    Refused(String),
    /// An expected message did not come in time.
    Lost(&'static str),
    /// `order_deliver` was refused or unanswered.
    NotDelivered(String),
    /// A reply in the other scheme than the order's.
    WrongScheme(&'static str),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::NotSent(why) => write!(f, "not sent: {why}"),
            Problem::Refused(why) => write!(f, "refused: {why}"),
            Problem::Lost(what) => write!(f, "lost: no {what} in time"),
            Problem::NotDelivered(why) => write!(f, "not delivered: {why}"),
            Problem::WrongScheme(what) => write!(f, "{what} came in the other scheme"),
        }
    }
}

/// Where a buyer's mail comes from.
enum Inbox {
    /// A nostr-sdk client, whose pool verifies each event before handing it over.
    Sdk {
        /// Boxed: a client is much larger than a websocket.
        client: Box<Client>,
        notifications: broadcast::Receiver<RelayPoolNotification>,
    },
    /// A lean buyer's websocket: raw frames, each verified here when it is opened.
    Lean(Ws),
}

/// An order sealed before the clock: its id, its event's id as the relay's `OK` names it,
/// and the `["EVENT",…]` text.
struct SealedOrder {
    order_id: String,
    event_id: String,
    frame: String,
}

/// One benchmark buyer: its key, its relay connection, its scheme and its unread mail.
struct Buyer {
    index: u32,
    scheme: Scheme,
    keys: Keys,
    merchant: PublicKey,
    inbox: Inbox,
    /// A lean buyer's orders, sealed before the clock; empty for a nostr-sdk buyer.
    sealed: Vec<SealedOrder>,
    /// Mail read while waiting for other mail, looked at first by the next waits.
    unread: Vec<Mail>,
    /// Why frames a lean buyer received failed their check, for the report.
    rejected: Vec<String>,
}

/// Even-numbered buyers order over NIP-04, odd-numbered ones over NIP-17.
fn scheme_of(index: u32) -> Scheme {
    if index % 2 == 0 {
        Scheme::Nip04
    } else {
        Scheme::Nip17
    }
}

/// A one-unit order `order_id` from `buyer` (NIP-15 type 0).
fn order_text(buyer: &Keys, order_id: &str) -> String {
    json!({
        "id": order_id, "type": 0, "name": "Bench buyer", "address": "Moi Avenue 12",
        "contact": {"nostr": buyer.public_key().to_hex()},
        "items": [{"product_id": PRODUCT_ID, "quantity": 1}], "shipping_id": ZONE_ID,
    })
    .to_string()
}

/// The lean buyers, each with its phase-1 orders sealed (spread over the runtime's threads)
/// and its websocket subscribed; in index order. No clock runs yet.
async fn connect_lean_buyers(args: &Args, target: &Target, shop: &Shop) -> Result<Vec<Buyer>> {
    let mut sealing = JoinSet::new();
    for index in 0..args.buyers {
        let (orders, merchant) = (args.orders, shop.merchant);
        sealing.spawn(async move {
            let keys = Keys::generate();
            let scheme = scheme_of(index);
            let mut sealed = Vec::with_capacity(orders as usize);
            for n in 0..orders {
                let order_id = format!("in-{index}-{n}");
                let event = scheme
                    .seal(&keys, merchant, &order_text(&keys, &order_id), None)
                    .await?;
                sealed.push(SealedOrder {
                    order_id,
                    event_id: event.id.to_hex(),
                    frame: format!(r#"["EVENT",{}]"#, event.as_json()),
                });
            }
            Ok::<_, anyhow::Error>((index, keys, sealed))
        });
    }
    let mut prepared = Vec::new();
    while let Some(joined) = sealing.join_next().await {
        prepared.push(joined??);
    }
    prepared.sort_by_key(|(index, _, _)| *index);
    let mut buyers = Vec::new();
    for (index, keys, sealed) in prepared {
        let ws = Ws::subscribe_dms(target.relay.as_str(), keys.public_key())
            .await
            .with_context(|| format!("lean buyer {index}"))?;
        buyers.push(Buyer {
            index,
            scheme: scheme_of(index),
            keys,
            merchant: shop.merchant,
            inbox: Inbox::Lean(ws),
            sealed,
            unread: Vec::new(),
            rejected: Vec::new(),
        });
    }
    Ok(buyers)
}

impl Buyer {
    async fn connect(index: u32, relay: RelayUrl, merchant: PublicKey) -> Result<Self> {
        let keys = Keys::generate();
        let client = connect_client(&keys, &relay)
            .await
            .with_context(|| format!("buyer {index}"))?;
        // Listen before subscribing, so that nothing the relay sends can slip past.
        let notifications = client.notifications();
        let to_me = Filter::new()
            .kinds([Kind::EncryptedDirectMessage, Kind::GiftWrap])
            .pubkey(keys.public_key());
        subscribe(&client, to_me)
            .await
            .with_context(|| format!("buyer {index}"))?;
        Ok(Self {
            index,
            scheme: scheme_of(index),
            keys,
            merchant,
            inbox: Inbox::Sdk {
                client: Box::new(client),
                notifications,
            },
            sealed: Vec::new(),
            unread: Vec::new(),
            rejected: Vec::new(),
        })
    }

    /// Seals order `order_id` (one unit), sends it and waits for its payment request.
    /// Returns when the type 1 arrived. A lean buyer sends only its pre-sealed orders
    /// ([`intake_lean`]).
    async fn place(&mut self, order_id: &str, timeout: Duration) -> Result<Instant, Problem> {
        let Inbox::Sdk { client, .. } = &self.inbox else {
            return Err(Problem::NotSent(format!(
                "{order_id}: a lean buyer sends only the orders it sealed before the clock"
            )));
        };
        let dm = self
            .scheme
            .seal(
                &self.keys,
                self.merchant,
                &order_text(&self.keys, order_id),
                None,
            )
            .await
            .map_err(|e| Problem::NotSent(format!("{order_id}: sealing: {e}")))?;
        publish(client, &dm, timeout)
            .await
            .map_err(|e| Problem::NotSent(format!("{order_id}: {e}")))?;
        self.payment_request(order_id, timeout).await
    }

    /// Waits for the payment request (type 1) of `order_id`; returns when it arrived. A
    /// type 2 with `paid: false` is soko refusing the order.
    async fn payment_request(
        &mut self,
        order_id: &str,
        timeout: Duration,
    ) -> Result<Instant, Problem> {
        let answer = self
            .wait(timeout, |what| {
                matches!(what, MailKind::Nip15 { order_id: id, kind, paid, .. }
                    if id == order_id && (*kind == 1 || (*kind == 2 && !paid)))
            })
            .await
            .ok_or(Problem::Lost("payment request (type 1)"))?;
        self.check_scheme(&answer, "payment request")?;
        match answer.what {
            MailKind::Nip15 { kind: 1, .. } => Ok(answer.at),
            MailKind::Nip15 { message, .. } => {
                Err(Problem::Refused(format!("{order_id}: {message}")))
            }
            _ => Err(Problem::Lost("payment request (type 1)")),
        }
    }

    /// Waits for the "paid" status and the delivery code of `order_id`, in either order.
    async fn settle(&mut self, order_id: &str, timeout: Duration) -> Result<Settled, Problem> {
        let paid = self
            .wait(timeout, |what| {
                matches!(what, MailKind::Nip15 { order_id: id, kind: 2, paid: true, shipped: false, .. }
                    if id == order_id)
            })
            .await
            .ok_or(Problem::Lost("paid status (type 2)"))?;
        self.check_scheme(&paid, "paid status")?;
        let code = self
            .wait(
                timeout,
                |what| matches!(what, MailKind::Code { order_id: id, .. } if id == order_id),
            )
            .await
            .ok_or(Problem::Lost("delivery code DM"))?;
        self.check_scheme(&code, "delivery code")?;
        match code.what {
            MailKind::Code {
                number,
                code: digits,
                ..
            } => Ok(Settled {
                paid_at: paid.at,
                code_at: code.at,
                number,
                code: digits,
            }),
            _ => Err(Problem::Lost("delivery code DM")),
        }
    }

    /// Waits for the completion status (`shipped: true`) of `order_id`.
    async fn completion(&mut self, order_id: &str, timeout: Duration) -> Result<Instant, Problem> {
        let done = self
            .wait(timeout, |what| {
                matches!(what, MailKind::Nip15 { order_id: id, kind: 2, shipped: true, .. }
                    if id == order_id)
            })
            .await
            .ok_or(Problem::Lost("completion status (type 2)"))?;
        self.check_scheme(&done, "completion status")?;
        Ok(done.at)
    }

    fn check_scheme(&self, mail: &Mail, what: &'static str) -> Result<(), Problem> {
        if mail.scheme == self.scheme {
            Ok(())
        } else {
            Err(Problem::WrongScheme(what))
        }
    }

    /// The first mail (unread, then new) that `wanted` accepts, within `timeout`.
    async fn wait(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&MailKind) -> bool,
    ) -> Option<Mail> {
        if let Some(at) = self.unread.iter().position(|mail| wanted(&mail.what)) {
            return Some(self.unread.remove(at));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = self.next_event(deadline).await?;
            let Some(mail) = self.open(&event).await else {
                continue;
            };
            if wanted(&mail.what) {
                return Some(mail);
            }
            self.unread.push(mail);
        }
    }

    /// The next event addressed to the buyer, verified, or `None` at `deadline` (or when
    /// the connection is gone).
    async fn next_event(&mut self, deadline: tokio::time::Instant) -> Option<Event> {
        loop {
            match &mut self.inbox {
                Inbox::Sdk { notifications, .. } => {
                    match tokio::time::timeout_at(deadline, notifications.recv()).await {
                        Err(_) | Ok(Err(RecvError::Closed)) => return None,
                        // Dropped mail makes its wait time out, which is counted.
                        Ok(Err(RecvError::Lagged(_))) => continue,
                        Ok(Ok(RelayPoolNotification::Event { event, .. })) => return Some(*event),
                        Ok(Ok(_)) => continue,
                    }
                }
                Inbox::Lean(ws) => {
                    let frame = tokio::time::timeout_at(deadline, ws.recv())
                        .await
                        .ok()?
                        .ok()?;
                    if !frame.starts_with(br#"["EVENT""#) {
                        continue;
                    }
                    match verified_event(&frame) {
                        Ok(event) => return Some(event),
                        Err(e) => self.rejected.push(format!("{e:#}")),
                    }
                }
            }
        }
    }

    /// Decrypts a DM from the merchant; `None` for anything else.
    async fn open(&self, event: &Event) -> Option<Mail> {
        let (scheme, text) = match event.kind {
            Kind::EncryptedDirectMessage if event.pubkey == self.merchant => {
                let text = nip04::decrypt(self.keys.secret_key(), &event.pubkey, &event.content);
                (Scheme::Nip04, text.ok()?)
            }
            Kind::GiftWrap => {
                let gift = UnwrappedGift::from_gift_wrap(&self.keys, event)
                    .await
                    .ok()?;
                if gift.sender != self.merchant {
                    return None;
                }
                (Scheme::Nip17, gift.rumor.content)
            }
            _ => return None,
        };
        Some(Mail {
            at: Instant::now(),
            scheme,
            what: MailKind::read(&text),
        })
    }

    /// The mail left unread at the end of a phase: answers nobody waited for, such as the
    /// late answer to an order already counted lost.
    fn take_stray(&mut self) -> Vec<Mail> {
        std::mem::take(&mut self.unread)
    }
}

impl Participant for Buyer {
    fn index(&self) -> u32 {
        self.index
    }

    /// Disconnects; a client that does not close in time is simply dropped, and so is a
    /// lean buyer's websocket.
    async fn close(self) {
        if let Inbox::Sdk { client, .. } = self.inbox {
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, client.shutdown()).await;
        }
    }
}

/// A paid order: when the buyer heard of it, and the code to deliver it with.
struct Settled {
    paid_at: Instant,
    code_at: Instant,
    number: u64,
    code: String,
}

/// What every buyer task shares.
struct RunContext {
    operator: Operator,
    merchant_npub: String,
    orders: u32,
    timeout: Duration,
    /// Every lean buyer waits here after its last order, so that none opens its answers
    /// (crypto) while another is still ordering.
    intake_window: tokio::sync::Barrier,
}

impl RunContext {
    /// Presents `settled`'s code with `order_deliver`; returns when soko answered.
    async fn deliver(&self, settled: &Settled) -> Result<Instant, Problem> {
        let args = json!({"merchant": self.merchant_npub, "order": settled.number,
                          "code": settled.code});
        match self
            .operator
            .call("order_deliver", args, self.timeout)
            .await
        {
            Ok(response) if response.ok => Ok(Instant::now()),
            Ok(response) => Err(Problem::NotDelivered(format!(
                "order #{}: {:?}",
                settled.number, response.error
            ))),
            Err(e) => Err(Problem::NotDelivered(format!(
                "order #{}: {e}",
                settled.number
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Intake,
    Cycles,
}

/// Runs one phase for every buyer at once and hands the buyers back.
async fn run_buyers(
    buyers: Vec<Buyer>,
    context: &Arc<RunContext>,
    phase: Phase,
) -> Result<(Vec<Buyer>, Vec<BuyerResult>)> {
    let mut running = JoinSet::new();
    for buyer in buyers {
        let context = context.clone();
        running.spawn(async move {
            match phase {
                Phase::Intake if matches!(buyer.inbox, Inbox::Lean(_)) => {
                    intake_lean(buyer, &context).await
                }
                Phase::Intake => intake(buyer, &context).await,
                Phase::Cycles => cycles(buyer, &context).await,
            }
        });
    }
    let mut buyers = Vec::new();
    let mut results = Vec::new();
    while let Some(joined) = running.join_next().await {
        let (mut buyer, mut result) = joined.context("a buyer task failed")?;
        for why in std::mem::take(&mut buyer.rejected) {
            result.tally.stray += 1;
            result.tally.note(format!(
                "buyer {}: a frame failed its check: {why}",
                buyer.index
            ));
        }
        for mail in buyer.take_stray() {
            result.tally.stray += 1;
            result.tally.note(format!(
                "buyer {}: stray {} message, {}",
                buyer.index,
                mail.scheme.name(),
                mail.what.summary()
            ));
        }
        buyers.push(buyer);
        results.push(result);
    }
    buyers.sort_by_key(|b| b.index);
    Ok((buyers, results))
}

/// What one buyer saw in one phase.
#[derive(Default)]
struct BuyerResult {
    scheme: Option<Scheme>,
    /// Order published → type 1 decrypted, per order.
    to_payment_request: Vec<Duration>,
    /// When the buyer's last type 1 came (intake).
    last_payment_request: Option<Instant>,
    /// When the buyer's last order completed.
    last_completion: Option<Instant>,
    /// Full cycles (phase 2).
    cycles: Vec<CycleTimes>,
    /// Lean buyers: events kept in the window and opened after it.
    opened_after: usize,
    /// Lean buyers: orders whose next event in the window was not their own type 1 (soko's
    /// answer to an earlier order); their latency is still taken from their own type 1.
    paced_by_other: u32,
    tally: Tally,
}

/// Phase 1: all orders back to back, then settle and deliver them all.
async fn intake(mut buyer: Buyer, context: &RunContext) -> (Buyer, BuyerResult) {
    let mut result = BuyerResult {
        scheme: Some(buyer.scheme),
        ..Default::default()
    };
    let mut placed = Vec::new();
    for n in 0..context.orders {
        let order_id = format!("in-{}-{n}", buyer.index);
        let sent = Instant::now();
        match buyer.place(&order_id, context.timeout).await {
            Ok(at) => {
                result.to_payment_request.push(at - sent);
                result.last_payment_request = Some(at);
                placed.push(order_id);
            }
            Err(problem) => result.tally.record(problem),
        }
    }
    settle_all(&mut buyer, placed, context, &mut result).await;
    (buyer, result)
}

/// Phase 1 for a lean buyer. In the window it sends its pre-sealed orders back to back, each
/// once the relay's `OK` and the next event to it are in, and keeps those events unopened.
/// Once every buyer is done (the window is over), it verifies and opens them all and finds
/// each order's type 1 among them, with the time it arrived: the next event is soko's answer
/// to an earlier order when a payment was quicker. Then it settles and delivers them all.
async fn intake_lean(mut buyer: Buyer, context: &RunContext) -> (Buyer, BuyerResult) {
    let mut result = BuyerResult {
        scheme: Some(buyer.scheme),
        ..Default::default()
    };
    let mut received = Vec::new();
    // Each order sent, when, and when the event that paced it arrived.
    let mut sent = Vec::new();
    if let Inbox::Lean(ws) = &mut buyer.inbox {
        for order in std::mem::take(&mut buyer.sealed) {
            let at = Instant::now();
            let deadline = tokio::time::Instant::from_std(at + context.timeout);
            let exchange = ws
                .publish_then_event(&order.frame, &order.event_id, deadline, &mut received)
                .await;
            match exchange {
                Ok(Exchange::Answered(next)) => {
                    sent.push((order.order_id, at, Some(next.at)));
                    received.push(next);
                }
                // soko may still answer: its type 1 is looked for after the window.
                Ok(Exchange::NoEvent) => sent.push((order.order_id, at, None)),
                Ok(Exchange::Refused(why)) => result.tally.record(Problem::NotSent(format!(
                    "{}: the relay refused it: {why}",
                    order.order_id
                ))),
                Ok(Exchange::NoOk) => result.tally.record(Problem::NotSent(format!(
                    "{}: no OK from the relay in time",
                    order.order_id
                ))),
                Err(e) => {
                    result
                        .tally
                        .record(Problem::NotSent(format!("{}: {e:#}", order.order_id)));
                    break;
                }
            }
        }
    }
    context.intake_window.wait().await;

    result.opened_after = received.len();
    for event in received {
        match verified_event(&event.frame) {
            Ok(verified) => {
                if let Some(mut mail) = buyer.open(&verified).await {
                    mail.at = event.at;
                    buyer.unread.push(mail);
                }
            }
            Err(e) => buyer.rejected.push(format!("{e:#}")),
        }
    }
    let mut placed = Vec::new();
    for (order_id, at, paced_at) in sent {
        match buyer.payment_request(&order_id, context.timeout).await {
            Ok(type_1_at) => {
                result.to_payment_request.push(type_1_at - at);
                result.last_payment_request = result.last_payment_request.max(Some(type_1_at));
                result.paced_by_other += u32::from(paced_at != Some(type_1_at));
                placed.push(order_id);
            }
            Err(problem) => result.tally.record(problem),
        }
    }
    settle_all(&mut buyer, placed, context, &mut result).await;
    (buyer, result)
}

/// Waits for each placed order's "paid" status and delivery code, delivers it and waits for
/// its completion.
async fn settle_all(
    buyer: &mut Buyer,
    placed: Vec<String>,
    context: &RunContext,
    result: &mut BuyerResult,
) {
    for order_id in placed {
        let done = async {
            let settled = buyer.settle(&order_id, context.timeout).await?;
            context.deliver(&settled).await?;
            buyer.completion(&order_id, context.timeout).await
        }
        .await;
        match done {
            Ok(at) => {
                result.last_completion = Some(at);
                result.tally.completed += 1;
            }
            Err(problem) => result.tally.record(problem),
        }
    }
}

/// Where one full cycle's time went, each mark measured from the order's publication.
#[derive(Debug, Clone, Copy)]
struct CycleTimes {
    payment_request: Duration,
    paid: Duration,
    code: Duration,
    delivered: Duration,
    completed: Duration,
}

/// Phase 2: each order runs to completion before the next.
async fn cycles(mut buyer: Buyer, context: &RunContext) -> (Buyer, BuyerResult) {
    let mut result = BuyerResult {
        scheme: Some(buyer.scheme),
        ..Default::default()
    };
    for n in 0..context.orders {
        let order_id = format!("cy-{}-{n}", buyer.index);
        let sent = Instant::now();
        let cycle = async {
            let payment_request = buyer.place(&order_id, context.timeout).await?;
            let settled = buyer.settle(&order_id, context.timeout).await?;
            let delivered = context.deliver(&settled).await?;
            let completed = buyer.completion(&order_id, context.timeout).await?;
            Ok::<_, Problem>(CycleTimes {
                payment_request: payment_request - sent,
                paid: settled.paid_at - sent,
                code: settled.code_at - sent,
                delivered: delivered - sent,
                // soko sends the completion before it answers the operator: the cycle ends
                // when both are in.
                completed: completed.max(delivered) - sent,
            })
        }
        .await;
        match cycle {
            Ok(times) => {
                result.to_payment_request.push(times.payment_request);
                result.cycles.push(times);
                result.last_completion = Some(sent + times.completed);
                result.tally.completed += 1;
            }
            Err(problem) => result.tally.record(problem),
        }
    }
    (buyer, result)
}

/// What happened to the orders of a phase.
#[derive(Debug, Default)]
struct Tally {
    completed: u32,
    not_sent: u32,
    refused: u32,
    /// Lost messages by what was expected.
    lost: BTreeMap<&'static str, u32>,
    not_delivered: u32,
    wrong_scheme: u32,
    /// Messages nobody waited for (late answers to orders already counted lost).
    stray: u32,
    /// The first few problems, verbatim.
    notes: Vec<String>,
}

impl Tally {
    const MAX_NOTES: usize = 5;

    fn note(&mut self, note: String) {
        if self.notes.len() < Self::MAX_NOTES {
            self.notes.push(note);
        }
    }

    fn record(&mut self, problem: Problem) {
        self.note(problem.to_string());
        match problem {
            Problem::NotSent(_) => self.not_sent += 1,
            Problem::Refused(_) => self.refused += 1,
            Problem::Lost(what) => *self.lost.entry(what).or_default() += 1,
            Problem::NotDelivered(_) => self.not_delivered += 1,
            Problem::WrongScheme(_) => self.wrong_scheme += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.not_sent += other.not_sent;
        self.refused += other.refused;
        for (what, count) in other.lost {
            *self.lost.entry(what).or_default() += count;
        }
        self.not_delivered += other.not_delivered;
        self.wrong_scheme += other.wrong_scheme;
        self.stray += other.stray;
        for note in other.notes {
            self.note(note);
        }
    }

    fn problems(&self) -> u32 {
        self.not_sent
            + self.refused
            + self.lost.values().sum::<u32>()
            + self.not_delivered
            + self.wrong_scheme
    }

    fn print(&self) {
        let lost: Vec<String> = self
            .lost
            .iter()
            .map(|(what, count)| format!("{count} {what}"))
            .collect();
        println!(
            "  problems     not sent {}, refused {}, lost [{}], not delivered {}, wrong scheme {}, \
             stray messages {}",
            self.not_sent,
            self.refused,
            lost.join(", "),
            self.not_delivered,
            self.wrong_scheme,
            self.stray
        );
        for note in &self.notes {
            println!("    {note}");
        }
    }
}

/// Phase 1's figures.
struct IntakeRun {
    /// First order sent → last type 1 received.
    intake_wall: Duration,
    /// First order sent → last completion received.
    completion_wall: Duration,
    all: Vec<Duration>,
    by_scheme: BTreeMap<&'static str, Vec<Duration>>,
    tally: Tally,
    /// Lean buyers: events opened after the window, and orders paced by another event than
    /// their own type 1.
    lean: Option<(usize, u32)>,
}

impl IntakeRun {
    fn collect(started: Instant, results: Vec<BuyerResult>, lean: bool) -> Self {
        let last_request = results.iter().filter_map(|r| r.last_payment_request).max();
        let last_completion = results.iter().filter_map(|r| r.last_completion).max();
        let mut run = Self {
            intake_wall: last_request.map_or(Duration::ZERO, |at| at - started),
            completion_wall: last_completion.map_or(Duration::ZERO, |at| at - started),
            all: Vec::new(),
            by_scheme: BTreeMap::new(),
            tally: Tally::default(),
            lean: lean.then_some((0, 0)),
        };
        for result in results {
            if let Some((opened, paced)) = &mut run.lean {
                *opened += result.opened_after;
                *paced += result.paced_by_other;
            }
            if let Some(scheme) = result.scheme {
                run.by_scheme
                    .entry(scheme.name())
                    .or_default()
                    .extend(&result.to_payment_request);
            }
            run.all.extend(result.to_payment_request);
            run.tally.merge(result.tally);
        }
        run.all.sort_unstable();
        for latencies in run.by_scheme.values_mut() {
            latencies.sort_unstable();
        }
        run
    }

    fn rate(&self) -> f64 {
        per_second(self.all.len(), self.intake_wall)
    }

    fn print(&self, crypto: &CryptoCost) {
        let rate = self.rate();
        println!(
            "\nPhase 1 — intake: orders back to back, each buyer waiting only for its type 1, then \
             settling and delivering them all"
        );
        let type_1_in = if self.lean.is_some() {
            "type 1 frame in; verified and opened after the window"
        } else {
            "type 1 decrypted"
        };
        println!(
            "  buyers       {}",
            if self.lean.is_some() {
                "lean (orders sealed before the clock, answers opened after the window)"
            } else {
                "nostr-sdk (--sdk-clients)"
            }
        );
        println!(
            "  type 1       {} payment requests in {:.3} s = {rate:.1} orders/s \
             (first order sent -> last {type_1_in})",
            self.all.len(),
            self.intake_wall.as_secs_f64()
        );
        println!(
            "  latency ms   {}   (order published -> {type_1_in})",
            spread(&self.all)
        );
        for (scheme, latencies) in &self.by_scheme {
            println!("    {scheme}     {}", spread(latencies));
        }
        if let Some((opened, paced)) = self.lean {
            println!(
                "  checked      after the window: {opened} events kept raw, verified and opened; \
                 {} type 1s among them; {paced} orders were paced by soko's answer to an \
                 earlier order (their latency is their own type 1's)",
                self.all.len()
            );
        }
        let completed = usize::try_from(self.tally.completed).unwrap_or(usize::MAX);
        let end_to_end = per_second(completed, self.completion_wall);
        println!(
            "  completed    {completed} orders paid, delivered and completed {:.3} s after the first \
             was sent = {end_to_end:.1} orders/s end to end",
            self.completion_wall.as_secs_f64()
        );
        self.tally.print();
        let intake_limit = crypto.intake_limit();
        let cycle_limit = crypto.cycle_limit();
        println!(
            "  vs crypto    intake {rate:.1} / {intake_limit:.0} orders/s single-core limit (verify, \
             open, seal the type 1) = {:.3}; end to end {end_to_end:.1} / {cycle_limit:.0} = {:.3}",
            rate / intake_limit,
            end_to_end / cycle_limit
        );
    }
}

/// One span of a cycle, read from its marks.
type Step = fn(&CycleTimes) -> Duration;

/// Phase 2's figures.
struct CycleRun {
    wall: Duration,
    cycles: Vec<CycleTimes>,
    tally: Tally,
}

impl CycleRun {
    fn collect(started: Instant, results: Vec<BuyerResult>) -> Self {
        let last = results.iter().filter_map(|r| r.last_completion).max();
        let mut run = Self {
            wall: last.map_or(Duration::ZERO, |at| at - started),
            cycles: Vec::new(),
            tally: Tally::default(),
        };
        for result in results {
            run.cycles.extend(result.cycles);
            run.tally.merge(result.tally);
        }
        run
    }

    fn print(&self, crypto: &CryptoCost, buyers: u32) {
        let rate = per_second(self.cycles.len(), self.wall);
        println!(
            "\nPhase 2 — full cycles: each buyer runs each order to completion before the next"
        );
        println!(
            "  cycles       {} completed in {:.3} s = {rate:.2} cycles/s",
            self.cycles.len(),
            self.wall.as_secs_f64()
        );
        let sorted = |mark: Step| {
            let mut marks: Vec<Duration> = self.cycles.iter().map(mark).collect();
            marks.sort_unstable();
            marks
        };
        let total = sorted(|c| c.completed);
        println!(
            "  cycle ms     {}   (order published -> completion and operator answer in)",
            spread(&total)
        );
        let mean = mean_of(&total);
        println!(
            "  bound        {buyers} buyers / mean cycle {:.3} s = {:.2} cycles/s: the cycle's \
             waits, not the CPU, set this rate",
            mean.as_secs_f64(),
            f64::from(buyers) / mean.as_secs_f64().max(f64::MIN_POSITIVE)
        );
        // Each step's share, as the mean gap between consecutive marks.
        let steps: [(&str, Step); 5] = [
            ("order -> type 1", |c| c.payment_request),
            ("type 1 -> paid (type 2)", |c| {
                c.paid.saturating_sub(c.payment_request)
            }),
            ("paid -> delivery code", |c| c.code.saturating_sub(c.paid)),
            ("code -> order_deliver answered", |c| {
                c.delivered.saturating_sub(c.code)
            }),
            ("answered -> completion in", |c| {
                c.completed.saturating_sub(c.delivered)
            }),
        ];
        println!("  where the cycle goes (ms; mean, p50, p99 of each step):");
        for (name, step) in steps {
            let gaps = sorted(step);
            println!(
                "    {name:<32} mean {:>8.1}  p50 {:>8.1}  p99 {:>8.1}",
                ms(mean_of(&gaps)),
                ms(percentile(&gaps, 50).unwrap_or_default()),
                ms(percentile(&gaps, 99).unwrap_or_default())
            );
        }
        let settle_share =
            FAKE_SETTLEMENT.as_secs_f64() / mean.as_secs_f64().max(f64::MIN_POSITIVE);
        let p50 = percentile(&total, 50).unwrap_or_default();
        println!(
            "  settlement   the fake backend settles {:.0} s after the invoice is issued: {:.0}% of \
             the mean cycle; the cycle's p50 is {:.1} ms past it (the mint tells soko of the \
             payment, in-process or over NUT-17; the {:.0} s payment poll is the fallback)",
            FAKE_SETTLEMENT.as_secs_f64(),
            settle_share * 100.0,
            ms(p50.saturating_sub(FAKE_SETTLEMENT)),
            PAYMENT_POLL.as_secs_f64()
        );
        self.tally.print();
        let limit = crypto.cycle_limit();
        println!(
            "  vs crypto    {rate:.2} / {limit:.0} cycles/s single-core crypto limit = {:.4}",
            rate / limit
        );
    }
}

/// `p50 … p99 … max …` in ms, or a note when empty.
fn spread(sorted: &[Duration]) -> String {
    match (
        percentile(sorted, 50),
        percentile(sorted, 99),
        sorted.last(),
    ) {
        (Some(p50), Some(p99), Some(max)) => format!(
            "p50 {:.2}   p99 {:.2}   max {:.2}",
            ms(p50),
            ms(p99),
            ms(*max)
        ),
        _ => "no samples".to_owned(),
    }
}

fn mean_of(samples: &[Duration]) -> Duration {
    let count = u32::try_from(samples.len()).unwrap_or(u32::MAX).max(1);
    samples.iter().sum::<Duration>() / count
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_second(count: usize, wall: Duration) -> f64 {
    count as f64 / wall.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The money check at the end, while soko still runs.
struct Books {
    held: Sats,
    owed: Sats,
    merchant_balance: Sats,
    wallet: Sats,
    /// The dev mint's issued minus redeemed ecash: what is out there, all of it soko's.
    mint_outstanding: u64,
    /// Orders in sled by state.
    states: BTreeMap<String, u64>,
    orders: u64,
    completed: u64,
}

impl Books {
    async fn check(daemon: &Daemon, shop: &Shop) -> Result<Self> {
        let escrow = daemon.escrow();
        let (held, owed) = escrow.books().context("reading the books")?;
        let merchant_balance = escrow.balance(&shop.merchant)?;
        let wallet = Sats::from(
            daemon
                .wallet()
                .total_balance()
                .await
                .context("reading the escrow wallet's balance")?,
        );
        let mint = daemon
            .dev_mint()
            .ok_or_else(|| anyhow!("the benchmark runs the embedded dev mint"))?
            .mint();
        let sum =
            |amounts: HashMap<_, cdk::Amount>| amounts.values().map(|a| u64::from(*a)).sum::<u64>();
        let issued = sum(mint
            .total_issued()
            .await
            .context("the mint's issued total")?);
        let redeemed = sum(mint
            .total_redeemed()
            .await
            .context("the mint's redeemed total")?);

        // soko numbers a merchant's orders 1, 2, …: walk them all.
        let mut states = BTreeMap::new();
        let mut orders = 0;
        let mut completed = 0;
        while let Some(order) = escrow.order(&shop.merchant, orders + 1)? {
            orders += 1;
            *states.entry(format!("{:?}", order.state)).or_default() += 1;
            if matches!(order.state, EscrowState::Delivered | EscrowState::PaidOut) {
                completed += 1;
            }
        }
        Ok(Self {
            held,
            owed,
            merchant_balance,
            wallet,
            mint_outstanding: issued.saturating_sub(redeemed),
            states,
            orders,
            completed,
        })
    }

    /// Prints the check; true when everything balances and every order completed.
    fn print(&self) -> bool {
        let books = self.held.checked_add(self.owed).ok();
        let expected_owed = self.completed.checked_mul(ORDER_TOTAL.0).map(Sats);
        let checks = [
            (
                "held + owed = escrow wallet",
                books == Some(self.wallet),
                format!(
                    "{} + {} = {:?}; wallet {}",
                    self.held, self.owed, books, self.wallet
                ),
            ),
            (
                "mint's outstanding ecash = escrow wallet",
                self.mint_outstanding == self.wallet.0,
                format!(
                    "{} sat outstanding; wallet {}",
                    self.mint_outstanding, self.wallet
                ),
            ),
            (
                "owed = completed orders x order total",
                expected_owed == Some(self.owed) && self.merchant_balance == self.owed,
                format!(
                    "{} x {} = {:?}; owed {}, merchant balance {}",
                    self.completed, ORDER_TOTAL, expected_owed, self.owed, self.merchant_balance
                ),
            ),
            (
                "every order completed",
                self.completed == self.orders,
                format!(
                    "{} of {} orders in sled: {:?}",
                    self.completed, self.orders, self.states
                ),
            ),
        ];
        println!("\nConservation");
        let mut all_hold = true;
        for (name, holds, detail) in checks {
            println!(
                "  {:<4} {name:<42} {detail}",
                if holds { "ok" } else { "FAIL" }
            );
            all_hold &= holds;
        }
        all_hold
    }
}

/// Sizes on disk of the data dir after a clean shutdown, and sled's logical size per tree.
struct Storage {
    /// soko's state and the relay's events.
    sled_bytes: u64,
    /// The relay's events alone.
    relay_bytes: u64,
    mint_db_bytes: u64,
    /// Tree name → (entries, key + value bytes).
    trees: BTreeMap<String, (u64, u64)>,
}

impl Storage {
    fn measure(data_dir: &Path) -> Result<Self> {
        let sled_bytes = dir_size(&data_dir.join("sled"))?;
        let mut mint_db_bytes = 0;
        for entry in std::fs::read_dir(data_dir).context("listing the data dir")? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(soko::devmint::DB_FILE)
            {
                mint_db_bytes += entry.metadata()?.len();
            }
        }
        // The embedded relay's events have a sled Db of their own (issue 16 counts it).
        let relay_root = data_dir.join(soko::relay::EVENTS_DIR);
        let relay_bytes = if relay_root.is_dir() {
            dir_size(&relay_root)?
        } else {
            0
        };
        // Opened after the file sizes were read, so that opening cannot change them.
        let mut trees = BTreeMap::new();
        let store = soko::store::Store::open(data_dir).context("opening sled to count trees")?;
        count_trees(store.db(), "", &mut trees)?;
        drop(store);
        let generation = std::fs::read_to_string(relay_root.join("CURRENT")).ok();
        if let Some(generation) = generation.as_deref().map(str::trim) {
            let events = soko::store::Store::open(&relay_root.join(format!("gen-{generation}")))
                .context("opening the relay's events to count them")?;
            count_trees(events.db(), RELAY_TREES, &mut trees)?;
        }
        Ok(Self {
            sled_bytes: sled_bytes + relay_bytes,
            relay_bytes,
            mint_db_bytes,
            trees,
        })
    }

    fn print_growth(&self, before: &Self, orders: u64) {
        let per_10k = |grown: u64| grown as f64 * 10_000.0 / (orders.max(1) as f64);
        let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
        let sled_growth = self.sled_bytes.saturating_sub(before.sled_bytes);
        println!("\nStorage ({orders} orders, sizes after clean shutdowns)");
        println!(
            "  sled on disk {:.2} MiB before, {:.2} MiB after: +{:.2} MiB = {:.1} MiB per 10k orders",
            mib(before.sled_bytes as f64),
            mib(self.sled_bytes as f64),
            mib(sled_growth as f64),
            mib(per_10k(sled_growth))
        );
        let relay_growth = self.relay_bytes.saturating_sub(before.relay_bytes);
        println!(
            "    of which the relay's events Db +{:.2} MiB = {:.1} MiB per 10k orders, soko's state +{:.1} MiB per 10k orders",
            mib(relay_growth as f64),
            mib(per_10k(relay_growth)),
            mib(per_10k(sled_growth.saturating_sub(relay_growth)))
        );
        let logical_before: u64 = before.trees.values().map(|(_, b)| b).sum();
        let logical_after: u64 = self.trees.values().map(|(_, b)| b).sum();
        let logical_growth = logical_after.saturating_sub(logical_before);
        println!(
            "  sled data    keys + values +{:.2} MiB = {:.1} MiB per 10k orders; by tree, per 10k orders:",
            mib(logical_growth as f64),
            mib(per_10k(logical_growth))
        );
        let mut growth: Vec<(&String, u64, u64)> = self
            .trees
            .iter()
            .map(|(name, (entries, bytes))| {
                let (entries_before, bytes_before) =
                    before.trees.get(name).copied().unwrap_or_default();
                (
                    name,
                    entries.saturating_sub(entries_before),
                    bytes.saturating_sub(bytes_before),
                )
            })
            .filter(|(_, _, bytes)| *bytes > 0)
            .collect();
        growth.sort_by_key(|(_, _, bytes)| std::cmp::Reverse(*bytes));
        // Trees that gained only a few entries (the mint's keyset, the merchant's balance)
        // did so once, not per order: scaling them to 10k orders would mislead.
        let (per_order, once): (Vec<_>, Vec<_>) = growth
            .into_iter()
            .partition(|(_, entries, _)| *entries * 10 >= orders);
        for (name, entries, bytes) in per_order {
            println!(
                "    {name:<34} {:>8.2} MiB  {:>7.0} entries",
                mib(per_10k(bytes)),
                per_10k(entries)
            );
        }
        if !once.is_empty() {
            let names: Vec<&str> = once.iter().map(|(name, _, _)| name.as_str()).collect();
            let bytes: u64 = once.iter().map(|(_, _, bytes)| bytes).sum();
            println!(
                "    + {} KiB once, not per order, in {}",
                bytes.div_ceil(1024),
                names.join(", ")
            );
        }
        println!(
            "  dev mint     its SQLite grew {:.2} MiB = {:.1} MiB per 10k orders (the mint's, not \
             soko's: an external mint in production)",
            mib(self.mint_db_bytes.saturating_sub(before.mint_db_bytes) as f64),
            mib(per_10k(
                self.mint_db_bytes.saturating_sub(before.mint_db_bytes)
            ))
        );
    }
}

/// Files on disk, in blocks ([`soko::util::size_on_disk`]), of soko's two sled Dbs.
#[derive(Debug, Clone, Copy)]
struct Files {
    /// `sled/`: orders, escrow, wallet, the bot's memory.
    state: u64,
    /// `relay-events/`: the embedded relay's events.
    relay: u64,
}

impl Files {
    fn measure(data_dir: &Path) -> Self {
        Self {
            state: soko::util::size_on_disk(&data_dir.join("sled")),
            relay: soko::util::size_on_disk(&data_dir.join(soko::relay::EVENTS_DIR)),
        }
    }

    fn total(&self) -> u64 {
        self.state + self.relay
    }
}

/// What [`windows_passed`] measured after soko's last start and stop.
struct Passed {
    /// Files before the last start, which rewrites the state Db when it is due.
    before_start: Files,
    /// Files after it.
    files: Files,
    /// Keys and values, by tree.
    storage: Storage,
}

impl Passed {
    /// Keys and values of the state Db and of the relay's.
    fn data(&self) -> (u64, u64) {
        let mut data = (0, 0);
        for (name, (_, bytes)) in &self.storage.trees {
            if name.starts_with(RELAY_TREES) {
                data.1 += bytes;
            } else {
                data.0 += bytes;
            }
        }
        data
    }

    /// Files and data once the windows passed, raw and less `baseline` (a soko with the
    /// shop and no orders, through the same restarts), per 10k orders; and the windows
    /// these figures stand for in a soko run with `config`.
    fn print_footprint(&self, baseline: &Self, orders: u64, config: &soko::config::Config) {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let per_10k = |bytes: u64| mib(bytes) * 10_000.0 / (orders.max(1) as f64);
        let less = |a: u64, b: u64| a.saturating_sub(b);
        let (state_data, relay_data) = self.data();
        let (base_state_data, base_relay_data) = baseline.data();
        let days = |secs: u64| secs as f64 / 86_400.0;
        let relay = &config.relay;
        println!(
            "\nFootprint once the windows passed ({orders} orders; after the last start and stop)"
        );
        println!(
            "  windows     with this soko's settings, the state below is reached {:.0} days after \
             the last order:",
            days(
                config
                    .market
                    .order_retention_secs
                    .max(relay.retention_secs + relay.gift_wrap_backdate_secs)
            )
        );
        println!(
            "              orders shrink {:.0} d after placed (order_retention_secs); the relay \
             keeps regular events {:.0} d (retention_secs), gift wraps {:.0} d more \
             (gift_wrap_backdate_secs), DMs to soko {} s after handling (handled_keep_secs); \
             the bot forgets what it handled by the relay's windows, {} s later",
            days(config.market.order_retention_secs),
            days(relay.retention_secs),
            days(relay.gift_wrap_backdate_secs),
            relay.handled_keep_secs,
            soko::bot::PRUNE_MARGIN_SECS
        );
        println!(
            "  files       state Db {:.2} MiB before the last start, {:.2} MiB after; relay Db \
             {:.2} MiB, {:.2} MiB after",
            mib(self.before_start.state),
            mib(self.files.state),
            mib(self.before_start.relay),
            mib(self.files.relay)
        );
        println!(
            "  baseline    a fresh soko with the shop and no orders, through the same restarts: \
             state Db {:.2} MiB, relay Db {:.2} MiB on disk; keys + values {:.1} KiB, {:.1} KiB",
            mib(baseline.files.state),
            mib(baseline.files.relay),
            base_state_data as f64 / 1024.0,
            base_relay_data as f64 / 1024.0
        );
        let goal = |per: f64| if per <= 40.0 { "within" } else { "OVER" };
        let raw = per_10k(self.files.total());
        let net = per_10k(less(self.files.total(), baseline.files.total()));
        println!("  per 10k orders, MiB              state Db   relay Db    total  (goal: 40)");
        println!(
            "    files, raw                     {:>8.1}   {:>8.1}   {:>6.1}  {}",
            per_10k(self.files.state),
            per_10k(self.files.relay),
            raw,
            goal(raw)
        );
        println!(
            "    files less the baseline        {:>8.1}   {:>8.1}   {:>6.1}  {}",
            per_10k(less(self.files.state, baseline.files.state)),
            per_10k(less(self.files.relay, baseline.files.relay)),
            net,
            goal(net)
        );
        println!(
            "    keys + values, raw             {:>8.1}   {:>8.1}   {:>6.1}",
            per_10k(state_data),
            per_10k(relay_data),
            per_10k(state_data + relay_data)
        );
        println!(
            "    keys + values less baseline    {:>8.1}   {:>8.1}   {:>6.1}",
            per_10k(less(state_data, base_state_data)),
            per_10k(less(relay_data, base_relay_data)),
            per_10k(less(
                state_data + relay_data,
                base_state_data + base_relay_data
            ))
        );
        let unpassed: u64 = BOT_WINDOW_TREES
            .iter()
            .filter_map(|name| self.storage.trees.get(*name))
            .map(|(_, bytes)| bytes)
            .sum();
        println!(
            "    of the keys + values, the bot's {}: {:.1} MiB",
            BOT_WINDOW_TREES.join(", "),
            per_10k(unpassed)
        );
        println!(
            "  (raw scales the baseline by 10k / {orders} too: at 10k orders it would count once)"
        );
    }
}

/// The bot's records of what it handled, kept a minute past the relay's windows (see
/// [`Passed::print_footprint`]).
const BOT_WINDOW_TREES: [&str; 3] = ["replies", "seen", "seen/at"];

/// Tree names of the relay's events Db in [`Storage::trees`].
const RELAY_TREES: &str = "relay-events: ";

/// A soko with the benchmark's shop and no orders, through [`windows_passed`]: what the
/// figures per order leave out.
async fn empty_baseline(timeout: Duration, catalog: u32) -> Result<Passed> {
    let dir = tempfile::tempdir().context("creating a temp data dir for the baseline")?;
    let mut soko = Soko::new(in_process_config(dir.path()));
    soko.start().await?;
    let shop = set_up_shop(&Target::of(&soko)?, timeout, catalog).await;
    soko.stop().await?;
    shop?;
    println!("\nBaseline: a fresh soko with the shop, no orders");
    let passed = windows_passed(&soko, dir.path()).await?;
    dir.close().context("removing the baseline's data dir")?;
    Ok(passed)
}

/// Restarts soko on `data_dir` with every retention window at a second (the relay's regular
/// events, gift wraps and DMs to soko, finished orders), runs the escrow's footprint pass
/// until it has nothing left to do and lets the relay's janitor run (it compacts the events'
/// Db when due), stops, starts and stops once more (the start rewrites the state Db when
/// due), and measures.
async fn windows_passed(soko: &Soko, data_dir: &Path) -> Result<Passed> {
    let mut config = soko.config().clone();
    config.relay.retention_secs = 1;
    // NIP-59 backdates a gift wrap's created_at by up to two days, so the relay keeps wraps
    // that much past retention_secs, which no benchmark can wait for. Of the two ways to
    // pass that time, moving the relay's clock would move everything the transport judges
    // by the world's time (what it refuses, the bot's replay window; see soko::clock), and
    // src/relay reads the system clock. Setting the backdate to 0 instead ages every wrap
    // by its created_at alone, which is where two more days would have taken the default
    // rule: after retention_secs + 2 days the 2 days have passed for every wrap. The config
    // check refuses this setting in a real soko (a fresh wrap would be refused); here no
    // wrap arrives any more.
    config.relay.gift_wrap_backdate_secs = 0;
    config.relay.handled_keep_secs = 1;
    config.relay.janitor_secs = 1;
    config.market.order_retention_secs = 1;
    // The bot forgets handled DMs past its window plus a margin (its first pruning pass runs
    // at start): wait that margin out too.
    tokio::time::sleep(Duration::from_secs(2 + soko::bot::PRUNE_MARGIN_SECS)).await;
    let mut later = Soko::new(config);
    later.start().await?;
    let tidied = async {
        // soko runs its own pass in its first second; this one then starts from what it left.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let escrow = later.daemon()?.escrow();
        let mut passes = Vec::new();
        let above = later.config().market.consolidate_proofs_above;
        for _ in 0..60 {
            let pass = escrow.tidy().await?;
            // soko's own pass may still hold the wallet: done only once nothing is left.
            let unspent = later.daemon()?.wallet().get_unspent_proofs().await?.len();
            let idle = pass.consolidated.is_none()
                && pass.spent_pruned == 0
                && pass.orders_shrunk == 0
                && unspent <= above;
            passes.push(pass);
            if idle {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Two janitor passes of the relay.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, anyhow::Error>(passes)
    }
    .await;
    later.stop().await?;
    let tidied = tidied?;
    println!(
        "  {} footprint passes run by the benchmark; those that did something:",
        tidied.len()
    );
    for pass in tidied
        .iter()
        .filter(|p| **p != soko::escrow::Tidied::default())
    {
        println!("    {pass:?}");
    }
    let before_start = Files::measure(data_dir);
    // One more start: soko rewrites its state Db at start once its files outgrew its data
    // (and the relay's events Db past its own floor), which is what the pass just did.
    later.start().await?;
    later.stop().await?;
    Ok(Passed {
        before_start,
        files: Files::measure(data_dir),
        storage: Storage::measure(data_dir)?,
    })
}

/// Adds each tree of `db` to `trees` as (entries, key + value bytes), named after `prefix`;
/// a relay's `events` tree is split by event kind.
fn count_trees(
    db: &sled::Db,
    prefix: &str,
    trees: &mut BTreeMap<String, (u64, u64)>,
) -> Result<()> {
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let tree_name = format!("{prefix}{}", String::from_utf8_lossy(&name));
        let by_kind = !prefix.is_empty() && &name[..] == b"events";
        for entry in tree.iter() {
            let (key, value) = entry?;
            let label = if by_kind {
                // A version byte, then the event's JSON (as a JSON string, or as it is).
                let body = value.get(1..).unwrap_or_default();
                let event = serde_json::from_slice::<String>(body)
                    .ok()
                    .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                    .or_else(|| serde_json::from_slice::<Value>(body).ok());
                let kind = event.and_then(|v| v["kind"].as_u64());
                format!(
                    "{tree_name} kind {}",
                    kind.map_or("?".to_owned(), |k| k.to_string())
                )
            } else {
                tree_name.clone()
            };
            let counted = trees.entry(label).or_default();
            counted.0 += 1;
            counted.1 += (key.len() + value.len()) as u64;
        }
    }
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() {
            dir_size(&entry.path())?
        } else {
            metadata.len()
        };
    }
    Ok(total)
}

/// The bot's crypto per order, measured single-threaded: every DM it opens or seals for one
/// order, in each scheme, and the operator's `order_deliver` command and its answer.
struct CryptoCost {
    nip04: Vec<(&'static str, f64)>,
    nip17: Vec<(&'static str, f64)>,
    operator: Vec<(&'static str, f64)>,
    /// One signature check, which the embedded relay also does for every event it accepts.
    verify: f64,
    /// The escrow wallet's NUT-20 key for one mint quote, derived as cdk 0.18.3 does.
    quote_key: f64,
    /// One public key from a secret key, to compare it with.
    public_key: f64,
}

/// Events the embedded relay verifies per order: the order and the operator command coming
/// in; type 1, paid, code, completion and the command's answer going out.
const RELAY_VERIFIES_PER_ORDER: f64 = 7.0;

impl CryptoCost {
    /// Times the same nostr-sdk calls soko makes for one order, on messages of the real size.
    async fn measure(iterations: u32) -> Result<Self> {
        // A third of a second of signing first, so that the first operation measured does not
        // pay for the core waking up to full speed.
        let warm_up = Instant::now();
        let keys = Keys::generate();
        while warm_up.elapsed() < Duration::from_millis(300) {
            black_box(EventBuilder::text_note("warm-up").sign_with_keys(&keys)?);
        }

        let merchant = Keys::generate();
        let buyer = Keys::generate();
        let bot = Keys::generate();
        let operator = Keys::generate();
        let order = json!({"id": "cy-7-3", "type": 0, "name": "Bench buyer",
            "address": "Moi Avenue 12", "contact": {"nostr": buyer.public_key().to_hex()},
            "items": [{"product_id": PRODUCT_ID, "quantity": 1}], "shipping_id": ZONE_ID})
        .to_string();
        // A dev-mint BOLT11 invoice is about 330 characters.
        let invoice = format!("lnbc1050n1{}", "q".repeat(320));
        let payment_request = json!({"id": "cy-7-3", "type": 1,
            "message": "Order #1234: 105 sat. Pay this invoice before 1795435071 (unix time); soko holds the payment until you confirm delivery with your delivery code.",
            "payment_options": [{"type": "ln", "link": invoice}]})
        .to_string();
        let paid = json!({"id": "cy-7-3", "type": 2,
            "message": "Payment received for order #1234; soko holds it. Your delivery code follows in a separate message.",
            "paid": true, "shipped": false})
        .to_string();
        let code = "Delivery code for order #1234 (cy-7-3): 53162358\nQR: SOKO:CY-7-3:53162358\nGive it to the merchant only when you have your goods: it releases your payment to them.";
        let completion = json!({"id": "cy-7-3", "type": 2,
            "message": "Order #1234 delivered and completed. Thank you!", "paid": true, "shipped": true})
        .to_string();
        let command = json!({"v": 1, "id": "op-1234", "cmd": "order_deliver",
            "args": {"merchant": merchant.public_key().to_bech32()?, "order": 1234, "code": "53162358"}})
        .to_string();
        let answer = r#"{"v":1,"re":"op-1234","ok":true,"result":{"order":1234,"released_sat":105,"payout":null,"balance_sat":21000}}"#;

        let to_merchant = merchant.public_key();
        let to_buyer = buyer.public_key();
        let mut cost = Self {
            nip04: Vec::new(),
            nip17: Vec::new(),
            operator: Vec::new(),
            verify: 0.0,
            quote_key: 0.0,
            public_key: 0.0,
        };
        for scheme in [Scheme::Nip04, Scheme::Nip17] {
            let dm = scheme.seal(&buyer, to_merchant, &order, None).await?;
            let refers = Some(dm.id);
            let mut ops = vec![
                (
                    "verify",
                    per_op_micros(iterations, async || Ok(dm.verify()?)).await?,
                ),
                (
                    "open",
                    per_op_micros(iterations, async || {
                        match scheme {
                            Scheme::Nip04 => {
                                black_box(nip04::decrypt(
                                    merchant.secret_key(),
                                    &dm.pubkey,
                                    &dm.content,
                                )?);
                            }
                            Scheme::Nip17 => {
                                black_box(UnwrappedGift::from_gift_wrap(&merchant, &dm).await?);
                            }
                        }
                        Ok(())
                    })
                    .await?,
                ),
            ];
            for (name, content, refers) in [
                ("type 1", payment_request.as_str(), refers),
                ("paid", paid.as_str(), None),
                ("code", code, None),
                ("completion", completion.as_str(), None),
            ] {
                let micros = per_op_micros(iterations, async || {
                    black_box(scheme.seal(&merchant, to_buyer, content, refers).await?);
                    Ok(())
                })
                .await?;
                ops.push((name, micros));
            }
            match scheme {
                Scheme::Nip04 => cost.nip04 = ops,
                Scheme::Nip17 => cost.nip17 = ops,
            }
        }
        cost.verify = cost.nip04.first().map_or(0.0, |(_, us)| *us);

        let wrap = Scheme::Nip17
            .seal(&operator, bot.public_key(), &command, None)
            .await?;
        let rumor = UnwrappedGift::from_gift_wrap(&bot, &wrap).await?.rumor.id();
        cost.operator = vec![
            (
                "verify",
                per_op_micros(iterations, async || Ok(wrap.verify()?)).await?,
            ),
            (
                "open",
                per_op_micros(iterations, async || {
                    black_box(UnwrappedGift::from_gift_wrap(&bot, &wrap).await?);
                    Ok(())
                })
                .await?,
            ),
            (
                "answer",
                per_op_micros(iterations, async || {
                    black_box(
                        Scheme::Nip17
                            .seal(&bot, operator.public_key(), answer, Some(rumor))
                            .await?,
                    );
                    Ok(())
                })
                .await?,
            ),
        ];

        // cdk's wallet derives each quote's key from the seed down the whole NUT-20 path
        // (master key, four hardened steps, the counter's), every step computing its
        // parent's public key, then the key's own public key for the request.
        let seed = [7u8; 64];
        let mut counter = 0u32;
        cost.quote_key = per_op_micros(iterations, async || {
            counter = counter.wrapping_add(1) % (1 << 31);
            let key = cdk::nuts::nut20::derive_quote_locking_key(&seed, counter)?;
            black_box(key.public_key());
            Ok(())
        })
        .await?;
        let secret = cdk::nuts::SecretKey::generate();
        cost.public_key = per_op_micros(iterations, async || {
            black_box(secret.public_key());
            Ok(())
        })
        .await?;
        Ok(cost)
    }

    fn sum(ops: &[(&str, f64)]) -> f64 {
        ops.iter().map(|(_, us)| us).sum()
    }

    /// µs per order over a half-NIP-04, half-NIP-17 mix, with its `order_deliver`.
    fn per_order_micros(&self) -> f64 {
        (Self::sum(&self.nip04) + Self::sum(&self.nip17)) / 2.0 + Self::sum(&self.operator)
    }

    /// Full cycles per second one core could do if crypto were all the bot did.
    fn cycle_limit(&self) -> f64 {
        1e6 / self.per_order_micros()
    }

    /// Orders taken (opened and answered with a type 1) per second on one core, same mix.
    fn intake_limit(&self) -> f64 {
        let intake = |ops: &[(&str, f64)]| Self::sum(ops.get(..3).unwrap_or(ops));
        1e6 / ((intake(&self.nip04) + intake(&self.nip17)) / 2.0)
    }

    fn print(&self, iterations: u32) {
        println!(
            "\nBot-side crypto per order, one core, {iterations} iterations per operation (µs)"
        );
        let line = |ops: &[(&str, f64)]| {
            ops.iter()
                .map(|(name, us)| format!("{name} {us:.1}"))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        println!(
            "  NIP-04 order   {} = {:.1}",
            line(&self.nip04),
            Self::sum(&self.nip04)
        );
        println!(
            "  NIP-17 order   {} = {:.1}",
            line(&self.nip17),
            Self::sum(&self.nip17)
        );
        println!(
            "  order_deliver  {} = {:.1}   (the operator's NIP-17 command)",
            line(&self.operator),
            Self::sum(&self.operator)
        );
        println!(
            "  per order      {:.1} µs (half NIP-04, half NIP-17, with its order_deliver) -> {:.0} \
             full cycles/s on one core; intake alone (verify + open + type 1) -> {:.0} orders/s",
            self.per_order_micros(),
            self.cycle_limit(),
            self.intake_limit()
        );
        println!(
            "  not counted    the embedded relay's check of the {RELAY_VERIFIES_PER_ORDER:.0} events \
             per order (+{:.0} µs), the mint's blind signatures, and the clients' own crypto, \
             all on the same cores in this process",
            RELAY_VERIFIES_PER_ORDER * self.verify
        );
        println!(
            "                 and the escrow wallet's NUT-20 key for the order's mint quote \
             (+{:.0} µs = {:.1} public keys of {:.1} µs: cdk 0.18.3 derives it from the seed each time)",
            self.quote_key,
            self.quote_key / self.public_key,
            self.public_key
        );
    }
}
