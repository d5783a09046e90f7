//! Crash trials: the real `soko` binary killed with SIGKILL at random moments while buyers
//! order, restarted on the same data dir and ports, and judged only from what the buyers
//! received and from delivering their codes.
//!
//! Each trial starts `soko run` on a fresh temp data dir with free ports (embedded relay and
//! dev mint), sets up a shop through the operator CLI's path (`soko::operator::call`), then
//! runs `--buyers` buyers with fresh keys, half ordering over NIP-04 and half over NIP-17,
//! one order after another for `--window` seconds without waiting for answers. A buyer whose
//! order was not acknowledged by the relay (the kill came first) re-sends it once, as a new
//! event with the same order id, when the relay is back. Meanwhile soko is killed once or
//! twice at seeded random moments and restarted after a short seeded pause. Then the trial
//! waits for every order to settle and checks:
//!
//! - every order that got a payment request got exactly one "paid" status and one delivery
//!   code, or one expiry message; an order the relay acknowledged got an answer (a **skipped**
//!   order is one that got none, a **lost** one got a payment request and then nothing);
//! - no order got two different payment requests, codes or numbers (**double-answered**);
//! - every code releases its order once through `order_deliver` (the command `soko merchant
//!   deliver` sends), a second time it is refused, and Σ released = Σ paid;
//! - no panic in soko's output.
//!
//! ```sh
//! cargo build --release --bin soko --example crash_trials
//! target/release/examples/crash_trials --trials 200 [--seed S] [--buyers 16] [--window 10]
//! ```
//!
//! `--soko PATH` picks the binary (default: `soko` next to this example's directory, i.e. the
//! same build profile). The schedule (kill times, pauses, quantities, order pacing) follows
//! `--seed`; the machine's timing does not, so a seed reproduces the schedule, not the exact
//! interleaving. The data dir and logs of a failed trial are kept and printed. The exit status
//! is non-zero when any trial failed. `tests/crash_trials.rs` runs a short version in CI.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use nostr_sdk::nips::nip04;
use nostr_sdk::nips::nip59::UnwrappedGift;
use nostr_sdk::{
    Client, Event, EventBuilder, Filter, Keys, Kind, PublicKey, RelayOptions,
    RelayPoolNotification, RelayStatus, RelayUrl,
};
use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Value};
use soko::proto::Response;
use soko::Config;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinSet;

#[path = "support/mod.rs"]
#[allow(dead_code)] // each example uses its own part of it
mod support;

use support::{lock, DeliveryCode, Scheme};

/// How long soko may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one publish may wait for the relay's `OK`.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a buyer waits for the relay to come back before its re-send.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an operator command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// After the ordering window: how long the open orders may stay unchanged, beyond the
/// payment window, before those left are judged.
const SETTLE_SLACK: Duration = Duration::from_secs(30);
/// The product: price and shipping, in sat.
const PRICE_SAT: u64 = 500;
const SHIPPING_SAT: u64 = 100;
const PER_UNIT_SHIPPING_SAT: u64 = 10;

/// Command-line arguments.
#[derive(Debug, Clone, Parser)]
#[command(about = "Kill soko at random moments under load and judge it from the buyers' side")]
pub struct Args {
    /// The soko binary (default: `soko` in the parent of this program's directory).
    #[arg(long)]
    pub soko: Option<PathBuf>,
    /// Trials to run.
    #[arg(long, default_value_t = 10)]
    pub trials: u32,
    /// Buyers per trial, half NIP-04, half NIP-17.
    #[arg(long, default_value_t = 16)]
    pub buyers: u32,
    /// Seed of the schedule (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds the buyers order in each trial; the kills fall inside it.
    #[arg(long, default_value_t = 10)]
    pub window: u64,
    /// soko's `[market] payment_window_secs`.
    #[arg(long, default_value_t = 20)]
    pub payment_window: u64,
    /// Largest pause between two orders of one buyer, in milliseconds.
    #[arg(long, default_value_t = 400)]
    pub pause_ms: u64,
    /// Stop at the first failed trial.
    #[arg(long)]
    pub stop_on_failure: bool,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(run(args))?;
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What all trials together found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Trials run.
    pub trials: u32,
    /// Trials that failed.
    pub failed: u32,
    /// Orders placed (distinct order ids).
    pub orders: u64,
    /// Kills.
    pub kills: u64,
    /// Orders with a payment request and no final answer.
    pub lost: u64,
    /// Orders answered with two different payment requests, codes or numbers, or both paid
    /// and expired.
    pub double_answered: u64,
    /// Orders the relay acknowledged and soko never answered.
    pub skipped: u64,
    /// Orders refused with "send it again" (answers, not failures).
    pub refused: u64,
}

/// Runs the trials and prints each and the summary.
pub async fn run(args: Args) -> Result<Summary> {
    let soko = match &args.soko {
        Some(path) => path.clone(),
        None => default_binary()?,
    };
    if !soko.is_file() {
        bail!(
            "no soko binary at {} (build it, or pass --soko PATH)",
            soko.display()
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!(
        "crash trials: {} trials, {} buyers, {} s ordering window, payment window {} s, seed {seed}, binary {}",
        args.trials,
        args.buyers,
        args.window,
        args.payment_window,
        soko.display()
    );
    let started = Instant::now();
    let mut summary = Summary::default();
    for trial in 1..=args.trials {
        let began = Instant::now();
        let outcome = Trial::run(&args, &soko, seed, trial).await;
        let took = began.elapsed();
        summary.trials += 1;
        match outcome {
            Ok(report) => {
                summary.orders += report.orders;
                summary.kills += report.kills;
                summary.lost += report.lost;
                summary.double_answered += report.double_answered;
                summary.skipped += report.skipped;
                summary.refused += report.refused;
                let verdict = if report.failures.is_empty() {
                    "PASS"
                } else {
                    summary.failed += 1;
                    "FAIL"
                };
                println!(
                    "trial {trial}: {verdict} in {:.1} s: {}",
                    took.as_secs_f64(),
                    report.line()
                );
                for note in &report.notes {
                    println!("  · {note}");
                }
                for failure in &report.failures {
                    println!("  - {failure}");
                }
                if !report.failures.is_empty() {
                    println!("  data dir and logs kept in {}", report.dir.display());
                }
            }
            Err(e) => {
                summary.failed += 1;
                println!("trial {trial}: FAIL in {:.1} s: {e:#}", took.as_secs_f64());
            }
        }
        if summary.failed > 0 && args.stop_on_failure {
            break;
        }
    }
    let wall = started.elapsed();
    println!(
        "summary: trials {}, failed {}, orders {}, kills {}, lost {}, double-answered {}, skipped {}, refused {}; {:.1} s in all, {:.1} s per trial (seed {seed})",
        summary.trials,
        summary.failed,
        summary.orders,
        summary.kills,
        summary.lost,
        summary.double_answered,
        summary.skipped,
        summary.refused,
        wall.as_secs_f64(),
        wall.as_secs_f64() / f64::from(summary.trials.max(1)),
    );
    Ok(summary)
}

/// `soko` in the parent of the directory of this program (`target/<profile>/examples/..`).
fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this program")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot tell the build directory of {}", exe.display()))?;
    Ok(profile_dir.join("soko"))
}

/// A seeded random sequence: the schedule of a trial follows from `--seed` alone.
struct Rng(TestRng);

impl Rng {
    fn new(seed: u64, trial: u32, stream: u32) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..12].copy_from_slice(&trial.to_le_bytes());
        bytes[12..16].copy_from_slice(&stream.to_le_bytes());
        Self(TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.next_u64() % n
        }
    }
}

/// `soko run` as a child process, restarted on the same config.
struct Soko {
    binary: PathBuf,
    dir: PathBuf,
    config_file: PathBuf,
    starts: u32,
    child: Option<Child>,
}

impl Soko {
    fn new(binary: &Path, dir: &Path, payment_window: u64) -> Result<Self> {
        let toml = format!(
            // A load test of crash safety, not of the limits on outsiders: the write budgets
            // and the caps on unpaid orders would refuse most of the buyers' orders, and the
            // dev mint needs no pacing of invoice checks.
            "[relay]\nport = {}\nrate_limit_per_minute = 1000000\n\
             connection_write_per_minute = 1000000\nwrite_budget_per_minute = 1000000\n\
             [mint]\nembedded_dev = true\ndev_port = {}\n\
             [storage]\ndata_dir = \"{}\"\n\
             [log]\nlevel = \"info\"\n\
             [market]\npayment_window_secs = {payment_window}\n\
             max_unpaid_per_buyer = 1000000\nmax_unpaid_total = 1000000\nmax_held_percent = 100\n\
             quote_poll_max_secs = 1\nquote_checks_per_minute = 1000000\n\
             [limits]\nanonymous = 1000000\nadmin = 1000000\n",
            free_port()?,
            free_port()?,
            dir.join("data").display()
        );
        let config_file = dir.join("soko.toml");
        std::fs::write(&config_file, toml).context("writing soko.toml")?;
        Ok(Self {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            config_file,
            starts: 0,
            child: None,
        })
    }

    fn config(&self) -> Result<Config> {
        Config::load(&self.config_file).map_err(|e| anyhow!("{e}"))
    }

    fn relay(&self) -> Result<RelayUrl> {
        Ok(RelayUrl::parse(&format!(
            "ws://127.0.0.1:{}",
            self.config()?.relay.port
        ))?)
    }

    /// Starts `soko run` and waits until it says it runs.
    async fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let out = self.dir.join(format!("run-{}.out", self.starts));
        let err = self.dir.join(format!("run-{}.err", self.starts));
        let mut child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(&self.config_file)
            .env_remove("SOKO_FAILPOINT")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("soko is running")
        {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "soko exited at start {} ({status}): {}",
                    self.starts,
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("soko did not start within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Lines of soko's output that report a panic.
    fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        for run in 1..=self.starts {
            for ext in ["out", "err"] {
                let path = self.dir.join(format!("run-{run}.{ext}"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                found.extend(
                    text.lines()
                        .filter(|line| line.contains("panicked"))
                        .map(|line| format!("run {run}: {line}")),
                );
            }
        }
        found
    }
}

impl Drop for Soko {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A client that reconnects quickly after soko comes back.
async fn client(keys: &Keys, relay: &RelayUrl) -> Result<Client> {
    let client = Client::builder().signer(keys.clone()).build();
    let opts = RelayOptions::default()
        .reconnect(true)
        .retry_interval(Duration::from_millis(500))
        .adjust_retry_interval(false);
    client.pool().add_relay(relay.clone(), opts).await?;
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(10)).await;
    Ok(client)
}

async fn connected(client: &Client, relay: &RelayUrl, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(r) = client.relay(relay).await {
            if r.status() == RelayStatus::Connected {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// One attempt to send an order.
#[derive(Debug, Clone)]
struct Send {
    acked: bool,
    error: Option<String>,
}

/// What one buyer did and received.
#[derive(Debug, Default)]
struct BuyerBook {
    /// Order id → (units, sends).
    orders: BTreeMap<String, (u64, Vec<Send>)>,
    /// Messages from the merchant, by event id (copies after a reconnect are dropped).
    mail: HashMap<nostr_sdk::EventId, Mail>,
}

/// A message from the merchant about an order.
#[derive(Debug, Clone)]
enum Mail {
    Invoice {
        order_id: String,
        link: String,
        sats: Option<u64>,
    },
    Paid {
        order_id: String,
    },
    Expired {
        order_id: String,
    },
    Refused {
        order_id: String,
        message: String,
    },
    Code {
        order_id: String,
        number: u64,
        code: String,
    },
    Other(String),
}

impl Mail {
    fn read(text: &str) -> Self {
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            if let (Some(order_id), Some(kind)) = (value["id"].as_str(), value["type"].as_u64()) {
                let order_id = order_id.to_owned();
                let message = value["message"].as_str().unwrap_or_default().to_owned();
                return match (kind, value["paid"] == true) {
                    (1, _) => Mail::Invoice {
                        order_id,
                        link: value["payment_options"][0]["link"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        sats: total_sats(&message),
                    },
                    (2, true) if value["shipped"] == true => Mail::Other(text.to_owned()),
                    (2, true) => Mail::Paid { order_id },
                    (2, false) if message.contains("expired") => Mail::Expired { order_id },
                    _ => Mail::Refused { order_id, message },
                };
            }
        }
        match DeliveryCode::read(text) {
            Some(DeliveryCode {
                order_id,
                number,
                code,
            }) => Mail::Code {
                order_id,
                number,
                code,
            },
            None => Mail::Other(text.chars().take(120).collect()),
        }
    }

    fn order_id(&self) -> Option<&str> {
        match self {
            Mail::Invoice { order_id, .. }
            | Mail::Paid { order_id }
            | Mail::Expired { order_id }
            | Mail::Refused { order_id, .. }
            | Mail::Code { order_id, .. } => Some(order_id),
            Mail::Other(_) => None,
        }
    }
}

/// "Order #12: 1120 sat. Pay …" → 1120.
fn total_sats(message: &str) -> Option<u64> {
    let rest = message.strip_prefix("Order #")?;
    let (_, rest) = rest.split_once(": ")?;
    rest.split_once(" sat")?.0.parse().ok()
}

/// One buyer: orders until `until`, reading its mail all along.
struct Buyer {
    index: u32,
    scheme: Scheme,
    keys: Keys,
    client: Client,
    relay: RelayUrl,
    merchant: PublicKey,
    book: Arc<Mutex<BuyerBook>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Buyer {
    async fn connect(index: u32, relay: &RelayUrl, merchant: PublicKey) -> Result<Self> {
        let keys = Keys::generate();
        let client = client(&keys, relay).await?;
        // Listen before subscribing, so that nothing the relay sends can slip past. No
        // `since`: after a reconnect the relay replays everything, and copies are dropped.
        let notifications = client.notifications();
        client
            .subscribe(
                Filter::new()
                    .kinds([Kind::EncryptedDirectMessage, Kind::GiftWrap])
                    .pubkey(keys.public_key()),
                None,
            )
            .await
            .with_context(|| format!("buyer {index} subscribing"))?;
        let book = Arc::new(Mutex::new(BuyerBook::default()));
        let reader = tokio::spawn(read_mail(
            keys.clone(),
            merchant,
            notifications,
            book.clone(),
        ));
        Ok(Self {
            index,
            scheme: if index % 2 == 0 {
                Scheme::Nip04
            } else {
                Scheme::Nip17
            },
            keys,
            client,
            relay: relay.clone(),
            merchant,
            book,
            reader,
        })
    }

    async fn order_until(&self, trial: u32, mut rng: Rng, until: Instant, pause_ms: u64) {
        let mut n = 0u32;
        while Instant::now() < until {
            n += 1;
            let order_id = format!("ct{trial}-b{}-{n}", self.index);
            let units = 1 + rng.below(3);
            let body = json!({
                "id": order_id, "type": 0, "name": "Crash trial buyer", "address": "Moi Avenue 12",
                "contact": {"nostr": self.keys.public_key().to_hex()},
                "items": [{"product_id": "mango", "quantity": units}], "shipping_id": "nairobi",
            })
            .to_string();
            let first = self.send(&body).await;
            let acked = first.acked;
            lock(&self.book)
                .orders
                .insert(order_id.clone(), (units, vec![first]));
            if !acked {
                // The kill came first: once the relay is back, send it again (a new event,
                // the same order id), as a buyer's client would.
                connected(&self.client, &self.relay, RECONNECT_TIMEOUT).await;
                let again = self.send(&body).await;
                if let Some((_, sends)) = lock(&self.book).orders.get_mut(&order_id) {
                    sends.push(again);
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.below(pause_ms + 1))).await;
        }
    }

    async fn send(&self, body: &str) -> Send {
        let event = match self
            .scheme
            .seal(&self.keys, self.merchant, body, None)
            .await
        {
            Ok(event) => event,
            Err(e) => {
                return Send {
                    acked: false,
                    error: Some(format!("sealing: {e}")),
                }
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, self.client.send_event(&event)).await {
            Ok(Ok(output)) if !output.success.is_empty() => Send {
                acked: true,
                error: None,
            },
            Ok(Ok(output)) => Send {
                acked: false,
                error: Some(format!("refused: {:?}", output.failed)),
            },
            Ok(Err(e)) => Send {
                acked: false,
                error: Some(e.to_string()),
            },
            Err(_) => Send {
                acked: false,
                error: Some("no OK in time".to_owned()),
            },
        }
    }

    async fn close(self) -> BuyerBook {
        self.reader.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.shutdown()).await;
        std::mem::take(&mut *lock(&self.book))
    }
}

async fn read_mail(
    keys: Keys,
    merchant: PublicKey,
    mut notifications: broadcast::Receiver<RelayPoolNotification>,
    book: Arc<Mutex<BuyerBook>>,
) {
    loop {
        let event = match notifications.recv().await {
            Ok(RelayPoolNotification::Event { event, .. }) => event,
            Ok(RelayPoolNotification::Shutdown) | Err(broadcast::error::RecvError::Closed) => break,
            // Dropped copies come again with the next reconnect's replay; a message lost
            // for good shows as a missing answer.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
        };
        if lock(&book).mail.contains_key(&event.id) {
            continue;
        }
        if let Some(mail) = open(&keys, merchant, &event).await {
            lock(&book).mail.insert(event.id, mail);
        }
    }
}

async fn open(keys: &Keys, merchant: PublicKey, event: &Event) -> Option<Mail> {
    let text = match event.kind {
        Kind::EncryptedDirectMessage if event.pubkey == merchant => {
            nip04::decrypt(keys.secret_key(), &event.pubkey, &event.content).ok()?
        }
        Kind::GiftWrap => {
            let gift = UnwrappedGift::from_gift_wrap(keys, event).await.ok()?;
            if gift.sender != merchant {
                return None;
            }
            gift.rumor.content
        }
        _ => return None,
    };
    Some(Mail::read(&text))
}

/// The operator's commands over one long-lived connection (NIP-17 command DMs to the bot,
/// answers routed by request id): `soko::operator::call` connects anew for each call.
struct Operator {
    keys: Keys,
    bot: PublicKey,
    client: Client,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>,
    prefix: String,
    next: AtomicU64,
    router: tokio::task::JoinHandle<()>,
}

impl Operator {
    async fn connect(relay: &RelayUrl, data_dir: &Path) -> Result<Self> {
        let keys = soko::identity::operator_keys(data_dir).context("the operator key")?;
        let bot = soko::identity::bot_keys(data_dir)
            .context("the bot key")?
            .public_key();
        let client = client(&keys, relay).await?;
        let mut notifications = client.notifications();
        client
            .subscribe(
                Filter::new()
                    .kind(Kind::GiftWrap)
                    .pubkey(keys.public_key())
                    .limit(0),
                None,
            )
            .await?;
        let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>> = Arc::default();
        let routes = waiting.clone();
        let me = keys.clone();
        let router = tokio::spawn(async move {
            loop {
                let event = match notifications.recv().await {
                    Ok(RelayPoolNotification::Event { event, .. }) => event,
                    Ok(RelayPoolNotification::Shutdown)
                    | Err(broadcast::error::RecvError::Closed) => break,
                    _ => continue,
                };
                let Ok(gift) = UnwrappedGift::from_gift_wrap(&me, &event).await else {
                    continue;
                };
                if gift.sender != bot {
                    continue;
                }
                let Ok(response) = serde_json::from_str::<Response>(&gift.rumor.content) else {
                    continue;
                };
                if let Some(caller) = lock(&routes).remove(&response.re) {
                    let _ = caller.send(response);
                }
            }
        });
        Ok(Self {
            keys,
            bot,
            client,
            waiting,
            prefix: Keys::generate().public_key().to_hex()[..8].to_owned(),
            next: AtomicU64::new(1),
            router,
        })
    }

    async fn call(&self, cmd: &str, args: Value) -> Result<Response> {
        let id = format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (answer, answered) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), answer);
        let outcome = async {
            let request = json!({"v": 1, "id": id, "cmd": cmd, "args": args}).to_string();
            let wrap = EventBuilder::private_msg(&self.keys, self.bot, request, []).await?;
            let sent = tokio::time::timeout(COMMAND_TIMEOUT, self.client.send_event(&wrap))
                .await
                .map_err(|_| anyhow!("{cmd}: no OK in time"))??;
            if sent.success.is_empty() {
                bail!("{cmd}: refused by the relay: {:?}", sent.failed);
            }
            tokio::time::timeout(COMMAND_TIMEOUT, answered)
                .await
                .map_err(|_| anyhow!("no answer to {cmd} within {COMMAND_TIMEOUT:?}"))?
                .map_err(|_| anyhow!("the operator connection closed"))
        }
        .await;
        lock(&self.waiting).remove(&id);
        outcome
    }

    async fn close(self) {
        self.router.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.shutdown()).await;
    }
}

/// Sets up the shop through the operator CLI's path; returns the merchant's key and npub.
async fn set_up_shop(config: &Config) -> Result<(PublicKey, String)> {
    let call = |cmd: &'static str, args: Value| async move {
        let answer = soko::operator::call(config, cmd, args)
            .await
            .map_err(|e| anyhow!("{cmd}: {e}"))?;
        if !answer.ok {
            bail!("{cmd} refused: {:?}", answer.error);
        }
        answer.result.ok_or_else(|| anyhow!("{cmd}: no result"))
    };
    let added = call("merchant_add", json!({"name": "Crash Duka"})).await?;
    let npub = added["npub"]
        .as_str()
        .ok_or_else(|| anyhow!("merchant_add gave no npub: {added}"))?
        .to_owned();
    let stall = json!({"id": "duka", "name": "Crash Duka", "currency": "sat",
                       "shipping": [{"id": "nairobi", "cost": SHIPPING_SAT}]});
    call("stall_put", json!({"merchant": npub, "stall": stall})).await?;
    // Unlimited stock: no order is refused for stock, so every refusal is a finding.
    let mango = json!({"id": "mango", "stall_id": "duka", "name": "Mango", "currency": "sat",
                       "price": PRICE_SAT, "quantity": null,
                       "shipping": [{"id": "nairobi", "cost": PER_UNIT_SHIPPING_SAT}]});
    call("product_put", json!({"merchant": npub, "product": mango})).await?;
    Ok((PublicKey::parse(&npub)?, npub))
}

/// One order as the buyers saw it.
#[derive(Debug, Default)]
struct Seen {
    units: u64,
    acked: bool,
    sends: usize,
    errors: Vec<String>,
    invoices: HashSet<String>,
    invoice_sats: Option<u64>,
    paid: usize,
    expired: usize,
    refused: Vec<String>,
    codes: HashSet<(u64, String)>,
}

/// One trial's findings.
struct Report {
    dir: PathBuf,
    orders: u64,
    acked: u64,
    invoiced: u64,
    paid: u64,
    expired: u64,
    kills: u64,
    starts: u32,
    lost: u64,
    double_answered: u64,
    skipped: u64,
    released: u64,
    sum_paid: u64,
    sum_released: u64,
    /// Orders refused (soko told the buyer to send again): answers, shown but not failed.
    refused: u64,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn line(&self) -> String {
        format!(
            "orders {} (acked {}), refused {}, invoiced {}, paid {}, expired {}, kills {}, starts {}, lost {}, double-answered {}, skipped {}, released {} (Σ {} sat = Σ paid {} sat)",
            self.orders,
            self.acked,
            self.refused,
            self.invoiced,
            self.paid,
            self.expired,
            self.kills,
            self.starts,
            self.lost,
            self.double_answered,
            self.skipped,
            self.released,
            self.sum_released,
            self.sum_paid
        )
    }
}

struct Trial;

impl Trial {
    async fn run(args: &Args, binary: &Path, seed: u64, trial: u32) -> Result<Report> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("soko-crash-trial-{trial}-"))
            .tempdir()?;
        let mut soko = Soko::new(binary, dir.path(), args.payment_window)?;
        let result = Self::run_in(args, &mut soko, seed, trial).await;
        let _ = soko.kill();
        let keep = !matches!(&result, Ok(report) if report.failures.is_empty());
        let path = if keep {
            dir.keep()
        } else {
            dir.path().to_path_buf()
        };
        result.map(|mut report| {
            report.dir = path;
            report
        })
    }

    async fn run_in(args: &Args, soko: &mut Soko, seed: u64, trial: u32) -> Result<Report> {
        let mut schedule = Rng::new(seed, trial, u32::MAX);
        soko.start().await?;
        let config = soko.config()?;
        let relay = soko.relay()?;
        let (merchant, npub) = set_up_shop(&config).await?;

        let mut buyers = Vec::new();
        for index in 0..args.buyers {
            buyers.push(Arc::new(Buyer::connect(index, &relay, merchant).await?));
        }
        let window = Duration::from_secs(args.window);
        let begin = Instant::now();
        let until = begin + window;
        let mut ordering = JoinSet::new();
        for buyer in &buyers {
            let buyer = buyer.clone();
            let rng = Rng::new(seed, trial, buyer.index);
            let pause = args.pause_ms;
            ordering.spawn(async move { buyer.order_until(trial, rng, until, pause).await });
        }

        // One kill, or (one trial in four) two; each at a seeded moment of the window, the
        // restart after a seeded pause of up to 800 ms.
        let kills = if schedule.below(4) == 0 { 2 } else { 1 };
        let window_ms = window.as_millis() as u64;
        let mut at: Vec<u64> = (0..kills)
            .map(|_| window_ms / 10 + schedule.below(window_ms * 8 / 10))
            .collect();
        at.sort_unstable();
        for kill_at in at {
            tokio::time::sleep_until((begin + Duration::from_millis(kill_at)).into()).await;
            soko.kill()?;
            tokio::time::sleep(Duration::from_millis(schedule.below(800))).await;
            soko.start().await?;
        }
        while ordering.join_next().await.is_some() {}

        // Settle: wait until every acknowledged order is answered and final. A loaded
        // machine pays a backlog slowly, which is not silence: the wait ends only when
        // nothing moved for the payment window plus a slack.
        let still = Duration::from_secs(args.payment_window) + SETTLE_SLACK;
        let mut last = (usize::MAX, Instant::now());
        loop {
            let open = buyers
                .iter()
                .map(|b| Self::unsettled(&lock(&b.book)))
                .sum::<usize>();
            if open == 0 || last.1.elapsed() > still {
                break;
            }
            if open < last.0 {
                last = (open, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        let mut books = Vec::new();
        for buyer in buyers {
            let buyer = Arc::try_unwrap(buyer)
                .map_err(|_| anyhow!("a buyer is still in use after its orders"))?;
            books.push(buyer.close().await);
        }
        let mut report = Self::judge(&books, kills, soko.starts);
        Self::deliver(&relay, &config, &npub, &books, &mut report).await?;
        report.failures.extend(soko.panics());
        Ok(report)
    }

    /// Acknowledged orders of a buyer not yet answered finally.
    fn unsettled(book: &BuyerBook) -> usize {
        let seen = Self::collect(book);
        seen.values()
            .filter(|s| s.acked || !s.invoices.is_empty())
            .filter(|s| {
                let paid_with_code = s.paid > 0 && !s.codes.is_empty();
                !(paid_with_code || s.expired > 0 || !s.refused.is_empty())
            })
            .count()
    }

    fn collect(book: &BuyerBook) -> BTreeMap<String, Seen> {
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        for (id, (units, sends)) in &book.orders {
            let entry = seen.entry(id.clone()).or_default();
            entry.units = *units;
            entry.sends = sends.len();
            entry.acked = sends.iter().any(|s| s.acked);
            entry.errors = sends.iter().filter_map(|s| s.error.clone()).collect();
        }
        for mail in book.mail.values() {
            let Some(id) = mail.order_id() else { continue };
            let entry = seen.entry(id.to_owned()).or_default();
            match mail {
                Mail::Invoice { link, sats, .. } => {
                    entry.invoices.insert(link.clone());
                    entry.invoice_sats = entry.invoice_sats.or(*sats);
                }
                Mail::Paid { .. } => entry.paid += 1,
                Mail::Expired { .. } => entry.expired += 1,
                Mail::Refused { message, .. } => entry.refused.push(message.clone()),
                Mail::Code { number, code, .. } => {
                    entry.codes.insert((*number, code.clone()));
                }
                Mail::Other(_) => {}
            }
        }
        seen
    }

    fn judge(books: &[BuyerBook], kills: u64, starts: u32) -> Report {
        let mut report = Report {
            dir: PathBuf::new(),
            orders: 0,
            acked: 0,
            invoiced: 0,
            paid: 0,
            expired: 0,
            kills,
            starts,
            lost: 0,
            double_answered: 0,
            skipped: 0,
            released: 0,
            sum_paid: 0,
            sum_released: 0,
            refused: 0,
            notes: Vec::new(),
            failures: Vec::new(),
        };
        for book in books {
            for mail in book.mail.values() {
                if let Mail::Other(text) = mail {
                    report
                        .failures
                        .push(format!("unexpected message: {text:?}"));
                }
            }
            for (id, s) in Self::collect(book) {
                report.orders += 1;
                report.acked += u64::from(s.acked);
                let expected = s.units * (PRICE_SAT + PER_UNIT_SHIPPING_SAT) + SHIPPING_SAT;
                if !s.refused.is_empty() {
                    // An answer, not silence: counted and shown, not failed.
                    report.refused += 1;
                    report.notes.push(format!("{id}: refused: {:?}", s.refused));
                }
                if s.invoices.is_empty() {
                    if s.acked && s.refused.is_empty() {
                        report.skipped += 1;
                        report.failures.push(format!(
                            "{id}: skipped: the relay acknowledged it ({} send(s), errors {:?}) and soko never answered",
                            s.sends, s.errors
                        ));
                    }
                    if s.paid + s.expired + s.codes.len() > 0 {
                        report
                            .failures
                            .push(format!("{id}: a status or code without a payment request"));
                    }
                    continue;
                }
                report.invoiced += 1;
                if s.invoice_sats != Some(expected) {
                    report.failures.push(format!(
                        "{id}: payment request for {:?} sat, {expected} expected",
                        s.invoice_sats
                    ));
                }
                let numbers: HashSet<u64> = s.codes.iter().map(|(n, _)| *n).collect();
                if s.invoices.len() > 1
                    || s.codes.len() > 1
                    || numbers.len() > 1
                    || (s.paid > 0 && s.expired > 0)
                {
                    report.double_answered += 1;
                    report.failures.push(format!(
                        "{id}: double-answered: {} payment requests, {} codes, paid {}, expired {}",
                        s.invoices.len(),
                        s.codes.len(),
                        s.paid,
                        s.expired
                    ));
                }
                if s.paid > 0 && !s.codes.is_empty() {
                    report.paid += 1;
                    report.sum_paid += expected;
                } else if s.expired > 0 && s.paid == 0 && s.codes.is_empty() {
                    report.expired += 1;
                } else {
                    report.lost += 1;
                    report.failures.push(format!(
                        "{id}: lost: a payment request, then paid {} / codes {} / expired {}",
                        s.paid,
                        s.codes.len(),
                        s.expired
                    ));
                }
            }
        }
        report
    }

    /// Presents every code once (it must release its order's total) and again (it must be
    /// refused).
    async fn deliver(
        relay: &RelayUrl,
        config: &Config,
        npub: &str,
        books: &[BuyerBook],
        report: &mut Report,
    ) -> Result<()> {
        let mut codes = Vec::new();
        for book in books {
            for (id, s) in Self::collect(book) {
                if s.paid > 0 && s.codes.len() == 1 {
                    let expected = s.units * (PRICE_SAT + PER_UNIT_SHIPPING_SAT) + SHIPPING_SAT;
                    if let Some((number, code)) = s.codes.into_iter().next() {
                        codes.push((id, number, code, expected));
                    }
                }
            }
        }
        let operator = Arc::new(Operator::connect(relay, &config.storage.data_dir).await?);
        let npub: Arc<str> = npub.into();
        let mut delivering = JoinSet::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(16));
        for (id, number, code, expected) in codes {
            let (operator, npub, limit) = (operator.clone(), npub.clone(), limit.clone());
            delivering.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let args = json!({"merchant": &*npub, "order": number, "code": code});
                let first = operator.call("order_deliver", args.clone()).await;
                let again = operator.call("order_deliver", args).await;
                (id, number, expected, first, again)
            });
        }
        while let Some(joined) = delivering.join_next().await {
            let (id, number, expected, first, again) = joined?;
            match first {
                Ok(r) if r.ok => {
                    let released = r
                        .result
                        .as_ref()
                        .and_then(|v| v["released_sat"].as_u64())
                        .unwrap_or(0);
                    report.released += 1;
                    report.sum_released += released;
                    if released != expected {
                        report.failures.push(format!(
                            "{id} (#{number}): released {released} sat, paid {expected}"
                        ));
                    }
                }
                Ok(r) => report.failures.push(format!(
                    "{id} (#{number}): the code did not release: {:?}",
                    r.error
                )),
                Err(e) => report
                    .failures
                    .push(format!("{id} (#{number}): order_deliver: {e:#}")),
            }
            match again {
                Ok(r) if r.ok => report
                    .failures
                    .push(format!("{id} (#{number}): the code released twice")),
                Ok(_) => {}
                Err(e) => report
                    .failures
                    .push(format!("{id} (#{number}): second order_deliver: {e:#}")),
            }
        }
        if report.sum_released != report.sum_paid {
            report.failures.push(format!(
                "Σ released {} sat ≠ Σ paid {} sat",
                report.sum_released, report.sum_paid
            ));
        }
        if let Ok(operator) = Arc::try_unwrap(operator) {
            operator.close().await;
        }
        Ok(())
    }
}
