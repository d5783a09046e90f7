//! Benchmark of private sessions (`kinds/sessions.md`): how fast soko opens them over NIP-17
//! against the bare crypto cost of one open measured in the same run, how fast one cleanup
//! pass expires and refunds them, and what an idle session costs in memory and on disk.
//!
//! ```sh
//! cargo run --release --example bench_sessions -- [--sessions N] [--clients C] \
//!     [--idle 10000,100000] [--deposit-every 10]
//! ```
//!
//! soko runs in-process with `[mint] auth` on its embedded dev mint: a trader registers (an
//! operator invite, a signed registration event over NIP-17), logs in at the dev OIDC issuer
//! and mints BATs with cdk's own auth wallet, up front and not timed. Then:
//!
//! 1. **opens**: C clients, each on its own relay connection, open N sessions between them
//!    with `open_session` over NIP-17, each from a fresh key, one after another per client;
//! 2. **crypto**: before soko starts, on one core, the bot's crypto for one open (the BAT's
//!    DLEQ, the mint's own signature check, the gift wrap's signature, its unwrap and the
//!    reply's gift wrap), whose sum gives a single-core ceiling to set the rate against;
//! 3. **cleanup**: every k-th session gets a deposit, the clock moves past expiry and one
//!    `cleanup` pass expires, refunds (a token DM each) and deletes them all;
//! 4. **memory**: idle sessions opened through the in-process API (`open_session` with real
//!    BATs, minted in batches), RSS and sled's disk size before and after each step.
//!
//! Phase 4 runs first, on a soko of its own (a fresh data dir), so that its RSS grows from a
//! process that has not yet freed memory it would reuse; 1 and 3 run on another. It only
//! prints: no figure is asserted. The exit status is non-zero when an open failed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use cdk::amount::SplitTarget;
use cdk::nuts::{BlindAuthToken, PaymentMethod, Proof};
use cdk::wallet::SendOptions;
use cdk::{Amount, StreamExt as _};
use clap::Parser;
use nostr_sdk::nips::nip59::UnwrappedGift;
use nostr_sdk::{Client, Event, Filter, Keys, Kind, PublicKey, RelayPoolNotification, RelayUrl};
use serde_json::{json, Value};
use soko::clock::Clock;
use soko::config::DevMintAuth;
use soko::devmint::{AuthSettings, DevMint};
use soko::sessions::Sessions;
use soko::Daemon;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinSet;

#[path = "support/mod.rs"]
#[allow(dead_code)] // each example uses its own part of it
mod support;

use support::*;

/// A reply as the bot sends it for an open, for the crypto measurement.
const SAMPLE_REPLY: &str = r#"{"v":1,"re":"open-c0-s0","ok":true,"result":{"session":"5f0c8e3a4b1d2e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","expires_at":1764417600}}"#;
/// The daemon's own cleanup job waits this long between passes: the benchmark runs its pass.
const NO_CLEANUP_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, Parser)]
#[command(about = "Benchmark soko's private sessions: opens, cleanup, memory per session")]
struct Args {
    /// Sessions opened over NIP-17 (each from a fresh key), then cleaned up.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    sessions: u32,

    /// Concurrent clients opening them, each on its own relay connection.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,

    /// Every k-th session gets a deposit before cleanup, so refunds run (0: none).
    #[arg(long, default_value_t = 10)]
    deposit_every: u32,

    /// Sats in each deposit.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    deposit_sat: u64,

    /// Idle sessions to reach through the in-process API, in steps (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    idle: Vec<u32>,

    /// Seconds the idle-session step may take before it stops where it got to.
    #[arg(long, default_value_t = 300)]
    idle_budget_secs: u64,

    /// Concurrent in-process opens in the idle-session step.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    open_tasks: u32,

    /// BATs minted per request (the mint's `bat_max_mint` is raised to it).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    bat_batch: u64,

    /// Seconds to wait for each reply before counting the open lost.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    reply_timeout: u64,

    /// Iterations of each crypto operation in the single-core measurement.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    crypto_iterations: u32,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    // No tracing subscriber: soko's log would drown the figures.
    // As `support::measure_then_run`, but the single-threaded runtime also runs the
    // standalone mint that issues the BAT to measure with (it needs IO and timers).
    let crypto = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the single-threaded runtime")?
        .block_on(CryptoCost::measure(args.crypto_iterations))?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?
        .block_on(run(args, crypto, cores))
}

async fn run(args: Args, crypto: CryptoCost, cores: usize) -> Result<ExitCode> {
    println!("soko private-session benchmark");
    println!(
        "  target      in-process soko (embedded relay, dev mint with [mint] auth, bat_max_mint \
         {}): a fresh one (new data dir) for the idle sessions, another for opens and cleanup",
        args.bat_batch
    );
    println!(
        "  cores       {cores}, shared by the daemon, its relay, its mint and all clients in \
         this process"
    );
    crypto.print(args.crypto_iterations, cores);

    // Idle sessions first, on a soko of their own: RSS then grows from a process that has
    // not yet freed (and would reuse) the memory of the opens and the cleanup.
    if args.idle.iter().any(|&n| n > 0) {
        let soko = Running::start(&args).await?;
        let outcome = soko.bench(&args).memory().await;
        soko.stop().await?;
        outcome?;
    }
    let soko = Running::start(&args).await?;
    let outcome = soko.bench(&args).opens_and_cleanup(&crypto, cores).await;
    soko.stop().await?;
    outcome
}

/// One in-process soko and its temp data dir.
struct Running {
    daemon: Daemon,
    config: soko::Config,
    clock: Clock,
    relay: RelayUrl,
    dir: tempfile::TempDir,
}

impl Running {
    async fn start(args: &Args) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temp data dir")?;
        let clock = Clock::system();
        let mut config = in_process_config(dir.path());
        config.dev_mint_auth = Some(DevMintAuth {
            bat_max_mint: args.bat_batch,
            issuer_port: 0,
        });
        config.sessions.cleanup_secs = NO_CLEANUP_SECS;
        let daemon = tokio::time::timeout(
            START_TIMEOUT,
            Daemon::start_with_clock(config.clone(), clock.clone()),
        )
        .await
        .context("soko did not start in time")?
        .context("starting soko")?;
        // The operator's CLI path finds the relay by the config's port.
        let relay = daemon
            .relay_url()
            .cloned()
            .context("soko started without its relay")?;
        config.relay.port = port_of(relay.as_str())?;
        Ok(Self {
            daemon,
            config,
            clock,
            relay,
            dir,
        })
    }

    fn bench<'a>(&'a self, args: &'a Args) -> Bench<'a> {
        Bench {
            args,
            daemon: &self.daemon,
            config: &self.config,
            clock: &self.clock,
            relay: self.relay.clone(),
            data_dir: self.dir.path(),
        }
    }

    async fn stop(self) -> Result<()> {
        tokio::time::timeout(SHUTDOWN_TIMEOUT, self.daemon.shutdown())
            .await
            .context("soko did not shut down in time")?
            .context("shutting soko down")?;
        self.dir.close().context("removing the temp data dir")
    }
}

struct Bench<'a> {
    args: &'a Args,
    daemon: &'a Daemon,
    config: &'a soko::Config,
    clock: &'a Clock,
    relay: RelayUrl,
    data_dir: &'a Path,
}

impl Bench<'_> {
    /// The clear-auth token of a freshly registered trader. One login serves a whole
    /// phase: a CAT lives an hour, and two login events signed in the same second are the
    /// same event, which the issuer refuses as a replay.
    async fn trader(&self) -> Result<String> {
        let trader = Keys::generate();
        self.register(&trader).await?;
        login(&self.token_url()?, &trader).await
    }

    async fn opens_and_cleanup(&self, crypto: &CryptoCost, cores: usize) -> Result<ExitCode> {
        let args = self.args;
        let cat = self.trader().await?;
        let minting = Instant::now();
        let bats = mint_many(
            self.daemon.mint_url(),
            &cat,
            u64::from(args.sessions),
            args.bat_batch,
        )
        .await?;
        println!(
            "\nSetup: a registered trader logged in at the dev issuer and minted {} BATs in \
             {:.2} s ({:.0} BATs/s; cdk AuthWallet over HTTP, {} per request; not timed below)",
            bats.len(),
            minting.elapsed().as_secs_f64(),
            bats.len() as f64 / minting.elapsed().as_secs_f64(),
            args.bat_batch
        );

        let opens = self.opens(bats).await?;
        opens.print(args, crypto, cores);
        self.cleanup(&opens.opened).await?;

        if opens.problems() > 0 {
            println!("\nFAILED: {} open(s) lost or refused", opens.problems());
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }

    fn token_url(&self) -> Result<String> {
        Ok(self
            .daemon
            .dev_mint()
            .and_then(DevMint::issuer)
            .context("the dev mint runs no issuer")?
            .token_url())
    }

    fn sessions(&self) -> &Sessions {
        self.daemon.sessions()
    }

    /// Makes `trader` a registered trader, as a user would: an operator invite, then a
    /// signed registration event over NIP-17.
    async fn register(&self, trader: &Keys) -> Result<()> {
        let event = trader_registration(self.config, self.daemon.bot_public_key(), trader).await?;
        let mut client = DmClient::connect(0, &self.relay, [trader.clone()]).await?;
        let request =
            json!({"v": 1, "id": "register", "cmd": "register", "args": {"event": event}});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.args.reply_timeout);
        let reply = client
            .ask(trader, self.daemon.bot_public_key(), &request, deadline)
            .await?;
        client.close().await;
        match reply {
            Some(reply) if reply["result"]["role"] == "trader" => Ok(()),
            other => bail!("registration refused: {other:?}"),
        }
    }

    /// Phase 1: the NIP-17 opens.
    async fn opens(&self, bats: Vec<BlindAuthToken>) -> Result<OpenRun> {
        let args = self.args;
        let mut jobs: Vec<Vec<(Keys, BlindAuthToken)>> =
            (0..args.clients).map(|_| Vec::new()).collect();
        for (n, bat) in bats.into_iter().enumerate() {
            let client = n % jobs.len();
            jobs[client].push((Keys::generate(), bat));
        }
        let relay = self.relay.clone();
        let jobs = Arc::new(std::sync::Mutex::new(jobs));
        let clients = connect_all(args.clients, |index| {
            let relay = relay.clone();
            let mine = std::mem::take(&mut lock(&jobs)[index as usize]);
            async move {
                let keys: Vec<Keys> = mine.iter().map(|(k, _)| k.clone()).collect();
                let mut client = DmClient::connect(index, &relay, keys).await?;
                client.jobs = mine;
                Ok(client)
            }
        })
        .await?;
        let bot = self.daemon.bot_public_key();
        let reply_timeout = Duration::from_secs(args.reply_timeout);
        let flushes_before = self.daemon.store().sync_flushes();

        let started = Instant::now();
        let mut opening = JoinSet::new();
        for client in clients {
            opening.spawn(client.open_loop(bot, reply_timeout));
        }
        let mut tally = Tally::default();
        let mut finished = Vec::new();
        let mut first_error = None;
        while let Some(joined) = opening.join_next().await {
            match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok((client, client_tally)) => {
                    tally.merge(client_tally);
                    finished.push(client);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let wall = started.elapsed();
        let flushes = self.daemon.store().sync_flushes() - flushes_before;
        for client in finished {
            client.close().await;
        }
        if let Some(e) = first_error {
            return Err(e.context("opening sessions"));
        }
        tally.latencies.sort_unstable();
        Ok(OpenRun {
            wall,
            flushes,
            opened: std::mem::take(&mut tally.opened),
            tally,
        })
    }

    /// Phase 3: deposits in every k-th session, the clock past expiry, one cleanup pass.
    async fn cleanup(&self, opened: &[(PublicKey, String)]) -> Result<()> {
        let args = self.args;
        let sessions = self.sessions();
        let depositing: Vec<&(PublicKey, String)> = if args.deposit_every == 0 {
            Vec::new()
        } else {
            opened.iter().step_by(args.deposit_every as usize).collect()
        };
        let sled_dir = self.data_dir.join("sled");
        let footprint = async || -> Result<(u64, Disk)> {
            self.daemon.store().flush().await?;
            Ok((vm_rss()?, dir_size(&sled_dir)?))
        };
        let after_opens = footprint().await?;
        let depositing_started = Instant::now();
        let tokens =
            tokens_from(self.daemon.mint_url(), args.deposit_sat, depositing.len()).await?;
        for ((key, id), token) in depositing.iter().zip(&tokens) {
            let live = sessions.live(key, id)?;
            sessions.deposit(&live, token).await?;
        }
        let depositing_took = depositing_started.elapsed();
        let after_deposits = footprint().await?;

        self.clock.advance(self.config.sessions.ttl_secs + 1);
        let started = Instant::now();
        let report = sessions.cleanup().await?;
        let took = started.elapsed();
        let after_pass = footprint().await?;
        let passed = report.expired + report.held;
        println!(
            "\nCleanup — one pass over {} sessions after the clock moved {} s ahead",
            opened.len(),
            self.config.sessions.ttl_secs + 1
        );
        println!(
            "  deposits     {} sessions got {} sat each (a payer wallet minted at the dev \
             mint, each token swapped into the session's wallet), {:.2} s, not timed below",
            depositing.len(),
            args.deposit_sat,
            depositing_took.as_secs_f64()
        );
        println!(
            "  pass         {:.3} s: expired {}, refunds done {} ({} with ecash, sent back as a \
             token DM), wallets deleted {}, failed {}, held {}",
            took.as_secs_f64(),
            report.expired,
            report.refunded,
            depositing.len(),
            report.deleted,
            report.failed,
            report.held
        );
        println!(
            "  throughput   {:.0} sessions/s (expire + open its wallet + refund if any + delete \
             its trees, one pass, one session at a time)",
            passed as f64 / took.as_secs_f64()
        );
        let show = |(rss, disk): (u64, Disk)| format!("RSS {:.1} MiB, sled {disk}", mib(rss));
        println!(
            "  footprint    after the opens {}; after the deposits {}; after the pass {} (the \
             pass opens each session's wallet, its sled trees, to refund it, then drops them)",
            show(after_opens),
            show(after_deposits),
            show(after_pass)
        );
        Ok(())
    }

    /// Phase 4: idle sessions through the in-process API, RSS and disk at each step.
    async fn memory(&self) -> Result<()> {
        let args = self.args;
        let mut steps = args.idle.clone();
        steps.sort_unstable();
        steps.dedup();
        let Some(&last) = steps.last() else {
            return Ok(());
        };
        if last == 0 {
            return Ok(());
        }
        let cat = self.trader().await?;
        let budget = Duration::from_secs(args.idle_budget_secs);
        let sled_dir = self.data_dir.join("sled");

        self.daemon.store().flush().await?;
        let rss_before = vm_rss()?;
        let disk_before = dir_size(&sled_dir)?;
        let active_before = self.sessions().active();
        println!(
            "\nIdle sessions — opened through the in-process API (Sessions::open_session with \
             real BATs minted in batches of {}, {} at a time), not over NIP-17: that many \
             NIP-17 opens would take too long here",
            args.bat_batch, args.open_tasks
        );
        println!(
            "  before       RSS {:.1} MiB, sled on disk {disk_before}, {} active sessions",
            mib(rss_before),
            active_before
        );
        let started = Instant::now();
        let mut minting = Duration::ZERO;
        let mut created: u64 = 0;
        let mut previous = (0u64, rss_before);
        for step in steps {
            let step = u64::from(step);
            while created < step && started.elapsed() < budget {
                let batch = (step - created).min(args.bat_batch);
                let mint_started = Instant::now();
                let bats = mint_bats(self.daemon.mint_url(), &cat, batch).await?;
                minting += mint_started.elapsed();
                created += self.open_idle(bats).await?;
            }
            self.daemon.store().flush().await?;
            let rss = vm_rss()?;
            let disk = dir_size(&sled_dir)?;
            let added = created.max(1) as f64;
            let per =
                |now: u64, then: u64, sessions: f64| now.saturating_sub(then) as f64 / sessions;
            let elapsed = started.elapsed();
            println!(
                "  {created:>7} idle RSS {:.1} MiB: +{:.1} MiB, {:.0} bytes/session ({:.0} per \
                 session since the step before); sled on disk {disk}: {:.0} bytes/session \
                 ({:.0} allocated); {} active; {:.1} s so far ({:.1} s minting BATs, {:.0} \
                 opens/s in-process)",
                mib(rss),
                mib(rss.saturating_sub(rss_before)),
                per(rss, rss_before, added),
                per(
                    rss,
                    previous.1,
                    created.saturating_sub(previous.0).max(1) as f64
                ),
                per(disk.length, disk_before.length, added),
                per(disk.allocated, disk_before.allocated, added),
                self.sessions().active(),
                elapsed.as_secs_f64(),
                minting.as_secs_f64(),
                created as f64 / (elapsed - minting).as_secs_f64()
            );
            previous = (created, rss);
            if created < step {
                println!(
                    "  stopped      at {created} of {step}: the {} s budget ran out \
                     (--idle-budget-secs)",
                    args.idle_budget_secs
                );
                break;
            }
        }
        println!(
            "  note         RSS is the whole process (daemon, relay, dev mint with its sqlite \
             auth db of spent BATs, the minting wallets); sled caches up to 1 GiB by default, \
             so at these sizes RSS follows the data"
        );
        Ok(())
    }

    /// Opens a session with each of `bats` from a fresh key, `open_tasks` at a time.
    async fn open_idle(&self, bats: Vec<BlindAuthToken>) -> Result<u64> {
        let tasks = self.args.open_tasks as usize;
        let mut shares: Vec<Vec<String>> = (0..tasks).map(|_| Vec::new()).collect();
        for (n, bat) in bats.iter().enumerate() {
            shares[n % tasks].push(bat.to_string());
        }
        let mut opening = JoinSet::new();
        for share in shares {
            let sessions = self.sessions().clone();
            opening.spawn(async move {
                let mut opened = 0u64;
                for bat in share {
                    let key = Keys::generate().public_key();
                    sessions
                        .open_session(key, &bat, None)
                        .await
                        .context("open_session")?;
                    opened += 1;
                }
                Ok::<_, anyhow::Error>(opened)
            });
        }
        let mut opened = 0;
        while let Some(joined) = opening.join_next().await {
            opened += joined??;
        }
        Ok(opened)
    }
}

/// One client of the opens phase: a relay connection, subscribed to gift wraps for its
/// session keys, and the opens it is to make.
struct DmClient {
    index: u32,
    client: Client,
    inbox: broadcast::Receiver<RelayPoolNotification>,
    keys: HashMap<PublicKey, Keys>,
    jobs: Vec<(Keys, BlindAuthToken)>,
}

impl DmClient {
    async fn connect(
        index: u32,
        relay: &RelayUrl,
        keys: impl IntoIterator<Item = Keys>,
    ) -> Result<Self> {
        let keys: HashMap<PublicKey, Keys> =
            keys.into_iter().map(|k| (k.public_key(), k)).collect();
        let client = connect_client(&Keys::generate(), relay)
            .await
            .with_context(|| format!("client {index}"))?;
        // Listen before subscribing, so that nothing the relay sends can slip past.
        let inbox = client.notifications();
        if !keys.is_empty() {
            let to_mine = Filter::new()
                .kind(Kind::GiftWrap)
                .pubkeys(keys.keys().copied());
            subscribe(&client, to_mine)
                .await
                .with_context(|| format!("client {index}"))?;
        }
        Ok(Self {
            index,
            client,
            inbox,
            keys,
            jobs: Vec::new(),
        })
    }

    /// Sends `request` (its `id` names the reply) from `from` over NIP-17; the bot's reply,
    /// or `None` when none came by `deadline`.
    async fn ask(
        &mut self,
        from: &Keys,
        bot: PublicKey,
        request: &Value,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Value>> {
        let id = request["id"].as_str().unwrap_or_default().to_owned();
        let wrap = Scheme::Nip17
            .seal(from, bot, &request.to_string(), None)
            .await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        publish(&self.client, &wrap, left).await?;
        Ok(self.reply(bot, &id, deadline).await)
    }

    async fn reply(
        &mut self,
        bot: PublicKey,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Value> {
        loop {
            let notification = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => return None,
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Ok(notification)) => notification,
            };
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            let Some(reply) = self.open(bot, &event).await else {
                continue;
            };
            if reply["re"].as_str() == Some(id) {
                return Some(reply);
            }
        }
    }

    /// The bot's gift wrap to one of this client's keys, decrypted.
    async fn open(&self, bot: PublicKey, event: &Event) -> Option<Value> {
        if event.kind != Kind::GiftWrap {
            return None;
        }
        let keys = event.tags.public_keys().find_map(|to| self.keys.get(to))?;
        let gift = UnwrappedGift::from_gift_wrap(keys, event).await.ok()?;
        if gift.sender != bot {
            return None;
        }
        serde_json::from_str(&gift.rumor.content).ok()
    }

    /// Opens its sessions one after another; hands itself back so the caller closes the
    /// connection after the clock has stopped.
    async fn open_loop(mut self, bot: PublicKey, reply_timeout: Duration) -> Result<(Self, Tally)> {
        let mut tally = Tally::default();
        let jobs = std::mem::take(&mut self.jobs);
        for (n, (keys, bat)) in jobs.into_iter().enumerate() {
            let id = format!("open-c{}-s{n}", self.index);
            let request =
                json!({"v": 1, "id": id, "cmd": "open_session", "args": {"bat": bat.to_string()}});
            let started = Instant::now();
            let deadline = tokio::time::Instant::from_std(started + reply_timeout);
            match self.ask(&keys, bot, &request, deadline).await {
                Err(e) => {
                    tally.refused += 1;
                    tally.note(format!("{id}: {e:#}"));
                }
                Ok(None) => {
                    tally.lost += 1;
                    tally.note(format!("{id}: no reply within {reply_timeout:?}"));
                }
                Ok(Some(reply)) => match reply["result"]["session"].as_str() {
                    Some(session) if reply["ok"] == true => {
                        tally.latencies.push(started.elapsed());
                        tally.opened.push((keys.public_key(), session.to_owned()));
                    }
                    _ => {
                        tally.error_replies += 1;
                        tally.note(format!("{id}: {reply}"));
                    }
                },
            }
        }
        Ok((self, tally))
    }
}

impl Participant for DmClient {
    fn index(&self) -> u32 {
        self.index
    }

    async fn close(self) {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.client.shutdown()).await;
    }
}

/// What happened to the opens.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// The sessions opened: their key and id.
    opened: Vec<(PublicKey, String)>,
    lost: u32,
    refused: u32,
    error_replies: u32,
    notes: Vec<String>,
}

impl Tally {
    const MAX_NOTES: usize = 5;

    fn note(&mut self, what: String) {
        if self.notes.len() < Self::MAX_NOTES {
            self.notes.push(what);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.opened.extend(other.opened);
        self.lost += other.lost;
        self.refused += other.refused;
        self.error_replies += other.error_replies;
        for note in other.notes {
            self.note(note);
        }
    }
}

struct OpenRun {
    wall: Duration,
    flushes: u64,
    opened: Vec<(PublicKey, String)>,
    tally: Tally,
}

impl OpenRun {
    fn problems(&self) -> u32 {
        self.tally.lost + self.tally.refused + self.tally.error_replies
    }

    fn print(&self, args: &Args, crypto: &CryptoCost, cores: usize) {
        let opened = self.tally.latencies.len();
        let rate = opened as f64 / self.wall.as_secs_f64();
        let ceiling = crypto.single_core_ceiling();
        println!(
            "\nOpens over NIP-17 — {} clients, {} sessions, each from a fresh key",
            args.clients, args.sessions
        );
        println!(
            "  opens        {opened} of {} in {:.3} s wall = {rate:.1} opens/s",
            args.sessions,
            self.wall.as_secs_f64()
        );
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        match (
            percentile(&self.tally.latencies, 50),
            percentile(&self.tally.latencies, 99),
            self.tally.latencies.last(),
        ) {
            (Some(p50), Some(p99), Some(max)) => println!(
                "  latency ms   p50 {:.2}   p99 {:.2}   max {:.2}   (publish start -> reply \
                 decrypted)",
                ms(p50),
                ms(p99),
                ms(*max)
            ),
            _ => println!("  latency ms   no session opened"),
        }
        println!(
            "  problems     lost {}, refused {}, error replies {}",
            self.tally.lost, self.tally.refused, self.tally.error_replies
        );
        for note in &self.tally.notes {
            println!("    {note}");
        }
        println!(
            "  sled syncs   {} flushes for {opened} replies (each reply waits until sled is on \
             disk; concurrent ones share a flush)",
            self.flushes
        );
        println!(
            "  vs crypto    {rate:.1} / {ceiling:.0} single-core ceiling = {:.3}",
            rate / ceiling
        );
        // Each open in this process also pays the client's side (gift wrap the request,
        // verify and unwrap the reply) and the relay's signature checks of both wraps.
        let client_side = crypto.nostr_micros() + crypto.verify_micros();
        let all_parties = crypto.total_micros() + client_side + 2.0 * crypto.verify_micros();
        println!(
            "  note         in-process: daemon, relay, mint and clients share the {cores} cores; \
             all parties' crypto is ~{all_parties:.0} µs per open (bot + client + 2 relay \
             verifies), so {cores} cores top out near {:.0} opens/s; the mint's sqlite burn \
             and sled writes are not crypto and not in the ceiling",
            cores as f64 * 1e6 / all_parties
        );
    }
}

/// The bot's crypto per open, measured single-threaded: each operation's µs, in order.
struct CryptoCost {
    ops: Vec<(&'static str, f64)>,
}

impl CryptoCost {
    /// Starts a standalone auth-enabled dev mint (the same code as soko's embedded one),
    /// mints one BAT, and times the calls soko makes to check it and to read and answer the
    /// `open_session` DM carrying it.
    async fn measure(iterations: u32) -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temp dir for the mint")?;
        let trader = Keys::generate();
        let registry: HashSet<PublicKey> = [trader.public_key()].into_iter().collect();
        let mint = DevMint::start_with_auth(
            dir.path(),
            0,
            AuthSettings {
                registry: Arc::new(registry),
                bat_max_mint: 10,
                issuer_port: 0,
                clock: Clock::system(),
                blind_protected: Vec::new(),
            },
        )
        .await
        .context("starting a dev mint with auth")?;
        let measured = Self::measure_with(&mint, &trader, iterations).await;
        mint.shutdown().await;
        measured
    }

    async fn measure_with(mint: &DevMint, trader: &Keys, iterations: u32) -> Result<Self> {
        let token_url = mint.issuer().context("auth is on")?.token_url();
        let cat = login(&token_url, trader).await?;
        let bat = mint_bats(mint.url(), &cat, 1)
            .await?
            .pop()
            .context("one BAT")?;
        let keys = mint.mint().auth_pubkeys()?;
        let key = keys
            .keysets
            .iter()
            .find(|k| k.id == bat.auth_proof.keyset_id)
            .and_then(|k| k.keys.amount_key(1.into()))
            .context("the auth keyset's key for 1")?;

        let bot = Keys::generate();
        let user = Keys::generate();
        let request = json!({"v": 1, "id": "open-c0-s0", "cmd": "open_session", "args": {"bat": bat.to_string()}})
            .to_string();
        let wrap = Scheme::Nip17
            .seal(&user, bot.public_key(), &request, None)
            .await?;
        let rumor_id = UnwrappedGift::from_gift_wrap(&bot, &wrap).await?.rumor.id();
        let ops = vec![
            (
                "BAT DLEQ",
                per_op_micros(iterations, async || {
                    Proof::from(bat.auth_proof.clone()).verify_dleq(key)?;
                    Ok(())
                })
                .await?,
            ),
            (
                "mint verify_blind_auth",
                per_op_micros(iterations, async || {
                    mint.mint().verify_blind_auth(&bat).await?;
                    Ok(())
                })
                .await?,
            ),
            (
                "verify wrap",
                per_op_micros(iterations, async || Ok(wrap.verify()?)).await?,
            ),
            (
                "unwrap",
                per_op_micros(iterations, async || {
                    std::hint::black_box(UnwrappedGift::from_gift_wrap(&bot, &wrap).await?);
                    Ok(())
                })
                .await?,
            ),
            (
                "gift wrap reply",
                per_op_micros(iterations, async || {
                    std::hint::black_box(
                        Scheme::Nip17
                            .seal(&bot, user.public_key(), SAMPLE_REPLY, Some(rumor_id))
                            .await?,
                    );
                    Ok(())
                })
                .await?,
            ),
        ];
        Ok(Self { ops })
    }

    fn total_micros(&self) -> f64 {
        self.ops.iter().map(|(_, us)| us).sum()
    }

    fn op(&self, name: &str) -> f64 {
        self.ops
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, us)| *us)
    }

    /// The wrap's signature check, which the relay repeats for each wrap.
    fn verify_micros(&self) -> f64 {
        self.op("verify wrap")
    }

    /// One unwrap and one gift wrap: what a client pays per open too.
    fn nostr_micros(&self) -> f64 {
        self.op("unwrap") + self.op("gift wrap reply")
    }

    fn single_core_ceiling(&self) -> f64 {
        1e6 / self.total_micros()
    }

    fn print(&self, iterations: u32, cores: usize) {
        println!("\nBot-side crypto per open, one core, {iterations} iterations per operation");
        println!(
            "  (measured opens/s / single-core ceiling can reach ~{cores} with {cores} cores, \
             if crypto were all the work and the bot had the cores to itself)"
        );
        let ops: Vec<String> = self
            .ops
            .iter()
            .map(|(name, us)| format!("{name} {us:.1}"))
            .collect();
        println!(
            "  {} = {:.1} µs per open -> single-core ceiling {:.0} opens/s",
            ops.join(" + "),
            self.total_micros(),
            self.single_core_ceiling()
        );
    }
}

/// `total` BATs with the clear-auth token `cat`, minted `batch` per request.
async fn mint_many(
    mint_url: &str,
    cat: &str,
    total: u64,
    batch: u64,
) -> Result<Vec<BlindAuthToken>> {
    let mut bats = Vec::new();
    while (bats.len() as u64) < total {
        let n = (total - bats.len() as u64).min(batch);
        bats.extend(mint_bats(mint_url, cat, n).await?);
    }
    Ok(bats)
}

/// `count` Cashu tokens of `amount` sat each from the mint at `mint_url`, minted by a payer
/// wallet of its own (one quote, split into proofs of `amount`, so no send needs a swap).
async fn tokens_from(mint_url: &str, amount: u64, count: usize) -> Result<Vec<String>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let dir = tempfile::tempdir().context("a temp dir for the payer")?;
    let store = soko::store::Store::open(dir.path())?;
    let wallet = soko::wallet::open(&store, "payer", mint_url, &fresh_seed())?;
    let total = amount * count as u64;
    let quote = wallet
        .mint_quote(PaymentMethod::BOLT11, Some(Amount::from(total)), None, None)
        .await?;
    wallet
        .proof_stream(quote, SplitTarget::Value(Amount::from(amount)), None)
        .next()
        .await
        .context("the mint quote was never paid")??;
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        let token = wallet
            .prepare_send(Amount::from(amount), SendOptions::default())
            .await?
            .confirm(None)
            .await?;
        tokens.push(token.to_string());
    }
    Ok(tokens)
}

/// This process's resident set size in bytes (`VmRSS` in /proc/self/status).
fn vm_rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .context("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024)
}

/// The files under `dir`: their length in bytes, and the bytes the file system allocated
/// for them (sled's file can have holes).
fn dir_size(dir: &Path) -> Result<Disk> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = Disk::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let inner = dir_size(&entry.path())?;
            total.length += inner.length;
            total.allocated += inner.allocated;
        } else {
            total.length += meta.len();
            total.allocated += meta.blocks() * 512;
        }
    }
    Ok(total)
}

#[derive(Debug, Clone, Copy, Default)]
struct Disk {
    length: u64,
    allocated: u64,
}

impl std::fmt::Display for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB ({:.1} MiB allocated)",
            mib(self.length),
            mib(self.allocated)
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
