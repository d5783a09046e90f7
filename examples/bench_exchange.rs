//! Benchmark of the P2P exchange (`kinds/exchange.md`): whole trades per second with many
//! sessions at once, against the crypto and mint cost of one trade measured in the same run;
//! at the end, conservation of the sats.
//!
//! ```sh
//! cargo run --release --example bench_exchange -- [--trades T] [--traders N] [--sats S]
//! ```
//!
//! soko runs in-process (embedded relay, embedded dev mint with `[mint] auth`, a temp data
//! dir). N traders register (an operator invite, a signed registration event over NIP-17),
//! log in at the dev OIDC issuer and mint BATs; 2·T sessions are opened with them over
//! NIP-17, each from a fresh key (setup, not timed). Then:
//!
//! 1. **crypto**: before soko starts, on one core, what soko's side pays per DM and per book
//!    event (gift wrap, unwrap, signature check, signing);
//! 2. **trades**: T whole trades at once, each maker and taker in a session of its own, every
//!    step a NIP-17 command or notice: `offer_create` → invoice paid (the dev mint's fake
//!    Lightning backend settles every invoice after about a second, and the exchange's pass
//!    that sees it runs every second: a fixed wait twice in every trade, which running the
//!    trades at once overlaps) → `offer_claim` → bond paid → `receipt_submit` →
//!    `receipt_confirm` → both sides told `COMPLETED`. DMs, book events and the mint
//!    operations soko's counters saw are counted per trade; the process's CPU time over
//!    the phase gives the cost of a trade without the waits;
//! 3. **conservation**: once the trades let go of their sessions, every session's balance
//!    plus soko's fee wallet must equal the sum of all invoices paid;
//! 4. **mint**: each mint operation a trade makes, timed one at a time through two session
//!    wallets of the same soko; times the counts of 2 plus the crypto of 1 give the
//!    per-trade cost and the ceiling the rate is set against.
//!
//! It only prints figures, none is asserted; the exit status is non-zero when a trade failed
//! or the sats do not add up.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use cdk::nuts::BlindAuthToken;
use clap::Parser;
use nostr_sdk::nips::nip59::UnwrappedGift;
use nostr_sdk::{
    Client, EventBuilder, Filter, Keys, Kind, PublicKey, RelayPoolNotification, RelayUrl, Tag,
    Timestamp,
};
use serde_json::{json, Value};
use soko::config::DevMintAuth;
use soko::devmint::DevMint;
use soko::money::Sats;
use soko::Daemon;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinSet;

#[path = "support/mod.rs"]
#[allow(dead_code)] // each example uses its own part of it
mod support;

use support::*;

/// The public book's kind (`kinds/book.md`).
const BOOK_KIND: u16 = soko::proto::exchange::KIND_BOOK;
/// A request as a maker sends it, for the crypto measurement.
const SAMPLE_REQUEST: &str = r#"{"v":1,"id":"offer_create-1","cmd":"offer_create","session":"5f0c8e3a4b1d2e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","args":{"fiat_amount":"1500","currency":"KES","provider":"mpesa","bill":{"kind":"paybill","reference":"888880","note":"account 12345"},"sats":10000}}"#;
/// A notice as soko sends it, for the crypto measurement.
const SAMPLE_NOTICE: &str = r#"{"v":1,"notice":"offer","offer":"9c1e5b0a7d3f4e2a8b6c1d0e9f8a7b6c","state":"COMPLETED","text":"the maker confirmed the receipt: the escrow and your bond are in your session","outcome":"completed","you_get_sat":11500,"reputation":{"signatures":[]},"role":"taker","fiat_amount":"1500","currency":"KES","provider":"mpesa","amounts":{"escrow":10000,"maker_bond":1500,"taker_bond":1500,"platform_fee":200,"taker_fee":50}}"#;
/// The kernel reports process CPU times in /proc in units of USER_HZ, 100 on Linux.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Parser)]
#[command(
    about = "Benchmark soko's P2P exchange: whole trades per second, crypto and mint per trade"
)]
struct Args {
    /// Whole trades run at once (2 sessions each).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    trades: u32,

    /// Registered traders the sessions' BATs come from.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    traders: u32,

    /// Sats each offer's escrow holds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1_000..))]
    sats: u64,

    /// Seconds to wait for each reply or notice before the trade counts as failed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,

    /// Iterations of each crypto operation in the single-core measurement.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    crypto_iterations: u32,

    /// Iterations of each mint operation in the mint measurement.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    mint_iterations: u32,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    // soko's log would drown the figures: only with RUST_LOG set (to stderr), to see why a
    // trade failed.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let iterations = args.crypto_iterations;
    measure_then_run(Crypto::measure(iterations), |crypto, cores| {
        run(args, crypto, cores)
    })
}

async fn run(args: Args, crypto: Crypto, cores: usize) -> Result<ExitCode> {
    println!("soko exchange benchmark");
    println!(
        "  target      in-process soko (embedded relay, dev mint with [mint] auth and the fake \
         Lightning backend, temp data dir); {cores} cores shared by the daemon, its relay, its \
         mint and all clients in this process"
    );
    crypto.print(args.crypto_iterations);

    let dir = tempfile::tempdir().context("creating a temp data dir")?;
    let mut config = in_process_config(dir.path());
    let bats_needed = 2 * u64::from(args.trades) + 2;
    config.dev_mint_auth = Some(DevMintAuth {
        bat_max_mint: bats_needed.max(soko::config::DEFAULT_BAT_MAX_MINT),
        issuer_port: 0,
    });
    let mut soko = Soko::new(config);
    soko.start().await?;
    let outcome = Bench {
        args: &args,
        soko: &soko,
        relay: soko.relay_url()?,
        daemon: soko.daemon()?,
    }
    .run(&crypto, cores)
    .await;
    soko.stop().await?;
    dir.close().context("removing the temp data dir")?;
    outcome
}

struct Bench<'a> {
    args: &'a Args,
    soko: &'a Soko,
    relay: RelayUrl,
    daemon: &'a Daemon,
}

impl Bench<'_> {
    async fn run(&self, crypto: &Crypto, cores: usize) -> Result<ExitCode> {
        let args = self.args;
        let setup = Instant::now();
        let mut bats = self.bats(2 * u64::from(args.trades) + 2).await?;
        let spare: Vec<BlindAuthToken> = bats.split_off(2 * args.trades as usize);
        let desks = self.open_sessions(bats).await?;
        println!(
            "\nSetup: {} traders registered and logged in, {} BATs minted, {} sessions opened \
             over NIP-17 (each from a fresh key, one relay connection per trade) in {:.2} s, \
             not timed below",
            args.traders,
            2 * args.trades + 2,
            2 * args.trades,
            setup.elapsed().as_secs_f64()
        );

        let run = self.trades(desks).await?;
        let conserved = self.conservation(&run).await?;
        let mint = self.mint_costs(spare).await?;
        run.print(args, crypto, &mint, cores);

        let failed = run.failed.len();
        if failed > 0 || !conserved {
            println!(
                "\nFAILED: {failed} trade(s) failed{}",
                if conserved {
                    ""
                } else {
                    "; the sats do not add up"
                }
            );
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }

    fn bot(&self) -> PublicKey {
        self.daemon.bot_public_key()
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(self.args.timeout)
    }

    /// `total` BATs, minted by `traders` registered traders in turn.
    async fn bats(&self, total: u64) -> Result<Vec<BlindAuthToken>> {
        let token_url = self
            .daemon
            .dev_mint()
            .and_then(DevMint::issuer)
            .context("the dev mint runs no issuer")?
            .token_url();
        let traders = u64::from(self.args.traders);
        let mut bats = Vec::new();
        for n in 0..traders {
            let share = total / traders + u64::from(n < total % traders);
            if share == 0 {
                continue;
            }
            let trader = Keys::generate();
            self.register(&trader).await?;
            let cat = login(&token_url, &trader).await?;
            bats.extend(mint_bats(self.daemon.mint_url(), &cat, share).await?);
        }
        Ok(bats)
    }

    /// Makes `trader` a registered trader, as a user would: an operator invite, then a
    /// signed registration event over NIP-17.
    async fn register(&self, trader: &Keys) -> Result<()> {
        let event = trader_registration(self.soko.config(), self.bot(), trader).await?;
        let mut desk = Desk::connect(&self.relay, vec![trader.clone()], self.bot()).await?;
        let reply = desk
            .ask(
                trader,
                None,
                "register",
                json!({"event": event}),
                self.deadline(),
            )
            .await;
        desk.close().await;
        match reply? {
            reply if reply["result"]["role"] == "trader" => Ok(()),
            other => bail!("registration refused: {other}"),
        }
    }

    /// One desk per trade: a relay connection for its maker's and taker's fresh keys, each
    /// with a session opened over NIP-17 with one of `bats`.
    async fn open_sessions(&self, bats: Vec<BlindAuthToken>) -> Result<Vec<Desk>> {
        let mut opening = JoinSet::new();
        let mut bats = bats.into_iter();
        while let (Some(maker_bat), Some(taker_bat)) = (bats.next(), bats.next()) {
            let relay = self.relay.clone();
            let bot = self.bot();
            let deadline = self.deadline();
            opening.spawn(async move {
                let maker = Keys::generate();
                let taker = Keys::generate();
                let mut desk =
                    Desk::connect(&relay, vec![maker.clone(), taker.clone()], bot).await?;
                let mut sessions = Vec::new();
                for (keys, bat) in [(&maker, maker_bat), (&taker, taker_bat)] {
                    let opened = desk
                        .ok(
                            keys,
                            None,
                            "open_session",
                            json!({"bat": bat.to_string()}),
                            deadline,
                        )
                        .await?;
                    let session = opened["session"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no session id: {opened}"))?;
                    sessions.push(Side {
                        keys: keys.clone(),
                        session: session.to_owned(),
                    });
                }
                let taker = sessions.pop().context("a taker session")?;
                let maker = sessions.pop().context("a maker session")?;
                desk.sides = Some((maker, taker));
                desk.received = 0;
                desk.sent = 0;
                Ok::<_, anyhow::Error>(desk)
            });
        }
        let mut desks = Vec::new();
        let mut first_error = None;
        while let Some(joined) = opening.join_next().await {
            match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(desk) => desks.push(desk),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            for desk in desks {
                desk.close().await;
            }
            return Err(e.context("opening the sessions"));
        }
        Ok(desks)
    }

    /// Phase 2: every desk runs its whole trade at once.
    async fn trades(&self, desks: Vec<Desk>) -> Result<TradeRun> {
        let args = self.args;
        // Counts the book events soko publishes meanwhile.
        let watcher = connect_client(&Keys::generate(), &self.relay).await?;
        let mut book_inbox = watcher.notifications();
        subscribe(
            &watcher,
            Filter::new()
                .kind(Kind::Custom(BOOK_KIND))
                .author(self.bot())
                .since(Timestamp::now()),
        )
        .await?;
        let seen = Arc::new(AtomicU64::new(0));
        let books = tokio::spawn({
            let seen = seen.clone();
            async move {
                loop {
                    match book_inbox.recv().await {
                        Ok(RelayPoolNotification::Event { event, .. })
                            if event.kind == Kind::Custom(BOOK_KIND) =>
                        {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    }
                }
            }
        });

        let ops_before = wallet_ops(&self.daemon.metrics().encode());
        let cpu_before = process_cpu()?;
        let started = Instant::now();
        let mut trading = JoinSet::new();
        for desk in desks {
            let offer = offer_args(args.sats);
            let timeout = Duration::from_secs(args.timeout);
            trading.spawn(async move {
                let mut desk = desk;
                let outcome = desk.trade(offer, timeout).await;
                (desk, outcome)
            });
        }
        let mut run = TradeRun::default();
        let mut finished = Vec::new();
        while let Some(joined) = trading.join_next().await {
            let (desk, outcome) = joined.context("a trade task")?;
            run.invoiced = run
                .invoiced
                .checked_add(outcome.invoiced)
                .context("sats overflow")?;
            match outcome.result {
                Ok(done) => run.done.push(done),
                Err(e) => run.failed.push(format!("{e:#}")),
            }
            run.dms_in += desk.sent;
            run.dms_out += desk.received;
            finished.push(desk);
        }
        run.wall = started.elapsed();
        run.cpu = process_cpu()? - cpu_before;
        let ops_after = wallet_ops(&self.daemon.metrics().encode());
        run.mint_ops = ops_after
            .iter()
            .map(|(op, n)| (op.clone(), n - ops_before.get(op).copied().unwrap_or(0)))
            .collect();
        // Book events still in flight land before the watcher goes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        run.book_events = seen.load(Ordering::Relaxed);
        books.abort();
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, watcher.shutdown()).await;
        run.sessions = finished
            .iter()
            .filter_map(|d| d.sides.as_ref())
            .flat_map(|(m, t)| {
                [
                    (m.keys.public_key(), m.session.clone()),
                    (t.keys.public_key(), t.session.clone()),
                ]
            })
            .collect();
        for desk in finished {
            desk.close().await;
        }
        Ok(run)
    }

    /// Phase 3: once no trade holds a session (the transfers after `COMPLETED` are done),
    /// every session's balance plus the fee wallet must be what the invoices brought in.
    async fn conservation(&self, run: &TradeRun) -> Result<bool> {
        let sessions = self.daemon.sessions();
        let settle_deadline = Instant::now() + Duration::from_secs(self.args.timeout);
        let mut still_held = run.sessions.len();
        while Instant::now() < settle_deadline {
            still_held = 0;
            for (_, id) in &run.sessions {
                if sessions.is_held(id)? {
                    still_held += 1;
                }
            }
            if still_held == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut held = Sats::ZERO;
        for (key, id) in &run.sessions {
            let live = sessions.live(key, id)?;
            held = held
                .checked_add(sessions.balance(&live).await?)
                .context("sats overflow")?;
        }
        let house = self.daemon.exchange().house_balance().await?;
        let total = held.checked_add(house).context("sats overflow")?;
        let conserved = total == run.invoiced;
        println!(
            "\nConservation — after the trades let go of their sessions ({still_held} still \
             held)"
        );
        println!(
            "  {} sessions hold {} sat + soko's fee wallet {} sat = {} sat; invoices paid {} sat: \
             {}",
            run.sessions.len(),
            held.0,
            house.0,
            total.0,
            run.invoiced.0,
            if conserved { "equal" } else { "NOT EQUAL" }
        );
        Ok(conserved)
    }

    /// Phase 4: each mint operation of a trade, one at a time, through two session wallets
    /// opened in-process with the two spare BATs.
    async fn mint_costs(&self, spare: Vec<BlindAuthToken>) -> Result<MintCost> {
        let sessions = self.daemon.sessions();
        let iterations = self.args.mint_iterations;
        let mut ids = Vec::new();
        for bat in spare.iter().take(2) {
            let opened = sessions
                .open_session(Keys::generate().public_key(), &bat.to_string(), None)
                .await
                .context("opening a measuring session")?;
            ids.push(opened.id);
        }
        let [from, to] = ids.as_slice() else {
            bail!("two spare BATs were minted, {} came", ids.len());
        };
        let invoice = Sats(maker_invoice_guess(self.args.sats));
        // Each operation's wall time, and the process's CPU time over its loop: the daemon
        // is otherwise idle, so that CPU is the operation's (wallet, mint and sled together).
        let mut quote = Op::default();
        let mut quotes = Vec::new();
        let cpu = process_cpu()?;
        for _ in 0..iterations {
            let made = quote.time(sessions.invoice(from, invoice)).await?;
            quotes.push(made.quote);
        }
        quote.cpu = process_cpu()? - cpu;
        // One more quote, checked at once and again while it is not paid yet: what the
        // exchange's pass does each second for every unpaid invoice.
        let unpaid = sessions.invoice(from, invoice).await?.quote;
        let mut check = Op::default();
        let cpu = process_cpu()?;
        for _ in 0..iterations {
            let t = Instant::now();
            if sessions.collect(from, &unpaid).await? != soko::sessions::Collected::Unpaid {
                break;
            }
            check.wall.push(micros(t));
        }
        check.cpu = process_cpu()? - cpu;
        // The fake backend settles each invoice about a second after it was made.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let mut mint = Op::default();
        let cpu = process_cpu()?;
        for id in &quotes {
            let deadline = Instant::now() + Duration::from_secs(self.args.timeout);
            loop {
                let t = Instant::now();
                match sessions.collect(from, id).await? {
                    soko::sessions::Collected::Minted(_) => {
                        mint.wall.push(micros(t));
                        break;
                    }
                    _ if Instant::now() > deadline => bail!("quote {id} was never paid"),
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        mint.cpu = process_cpu()? - cpu;
        let mut send = Op::default();
        let mut tokens = Vec::new();
        let cpu = process_cpu()?;
        for n in 0..iterations {
            let op = format!("bench:{n}");
            tokens.push(
                send.time(sessions.token(from, Sats(self.args.sats), None, &op))
                    .await?,
            );
        }
        send.cpu = process_cpu()? - cpu;
        let mut receive = Op::default();
        let cpu = process_cpu()?;
        for token in &tokens {
            receive.time(sessions.receive(to, token)).await?;
        }
        receive.cpu = process_cpu()? - cpu;
        Ok(MintCost {
            iterations,
            quote,
            check,
            mint,
            send,
            receive,
        })
    }
}

/// The maker's invoice for an escrow of `sats` under the default schedule (bond 5 % + 1000,
/// platform fee 1 % + 100): only sizes the measuring quotes like a trade's.
fn maker_invoice_guess(sats: u64) -> u64 {
    sats + (sats * 5 / 100 + 1_000) + (sats / 100 + 100)
}

/// A bill on M-Pesa for `sats`.
fn offer_args(sats: u64) -> Value {
    json!({
        "fiat_amount": "1500",
        "currency": "KES",
        "provider": "mpesa",
        "bill": {"kind": "paybill", "reference": "888880", "note": "account 12345"},
        "sats": sats,
    })
}

/// One side of a trade: its fresh key and its session.
struct Side {
    keys: Keys,
    session: String,
}

/// One trade's relay connection, subscribed to gift wraps for its maker's and taker's keys.
struct Desk {
    client: Client,
    inbox: broadcast::Receiver<RelayPoolNotification>,
    keys: HashMap<PublicKey, Keys>,
    bot: PublicKey,
    /// Decrypted DMs not yet asked for: (to which key, content).
    pending: Vec<(PublicKey, Value)>,
    /// DMs sent to soko (gift wraps) since the sessions were opened.
    sent: u64,
    /// DMs received from soko since the sessions were opened.
    received: u64,
    next_id: u64,
    /// Maker, taker, once their sessions are open.
    sides: Option<(Side, Side)>,
}

/// What one trade did.
struct TradeOutcome {
    /// What its invoices asked for (each is paid by the fake backend once made).
    invoiced: Sats,
    result: Result<Done>,
}

/// A completed trade's times.
struct Done {
    latency: Duration,
    /// Invoice out → paid notice, for the maker's invoice and the taker's bond.
    waits: Duration,
}

impl Desk {
    async fn connect(relay: &RelayUrl, keys: Vec<Keys>, bot: PublicKey) -> Result<Self> {
        let keys: HashMap<PublicKey, Keys> =
            keys.into_iter().map(|k| (k.public_key(), k)).collect();
        let client = connect_client(&Keys::generate(), relay).await?;
        // Listen before subscribing, so that nothing the relay sends can slip past.
        let inbox = client.notifications();
        subscribe(
            &client,
            Filter::new()
                .kind(Kind::GiftWrap)
                .pubkeys(keys.keys().copied()),
        )
        .await?;
        Ok(Self {
            client,
            inbox,
            keys,
            bot,
            pending: Vec::new(),
            sent: 0,
            received: 0,
            next_id: 0,
            sides: None,
        })
    }

    async fn close(self) {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.client.shutdown()).await;
    }

    /// The next DM from soko to one of this desk's keys, decrypted; `None` by `deadline`.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Result<Option<(PublicKey, Value)>> {
        loop {
            let notification = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Err(_) => return Ok(None),
                Ok(Err(RecvError::Closed)) => bail!("the relay connection closed"),
                Ok(Err(RecvError::Lagged(n))) => bail!("{n} relay messages were dropped"),
                Ok(Ok(notification)) => notification,
            };
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            if event.kind != Kind::GiftWrap {
                continue;
            }
            let Some((to, keys)) = event
                .tags
                .public_keys()
                .find_map(|to| self.keys.get_key_value(to))
            else {
                continue;
            };
            let Ok(gift) = UnwrappedGift::from_gift_wrap(keys, &event).await else {
                continue;
            };
            if gift.sender != self.bot {
                continue;
            }
            self.received += 1;
            // Plain-text DMs (a session's refund) are not part of a trade.
            if let Ok(value) = serde_json::from_str::<Value>(&gift.rumor.content) {
                return Ok(Some((*to, value)));
            }
        }
    }

    /// Sends `cmd` from `from` (in `session` when given) over NIP-17: soko's reply. DMs
    /// arriving meanwhile are kept for [`Desk::notice`].
    async fn ask(
        &mut self,
        from: &Keys,
        session: Option<&str>,
        cmd: &str,
        args: Value,
        deadline: tokio::time::Instant,
    ) -> Result<Value> {
        self.next_id += 1;
        let id = format!("{cmd}-{}", self.next_id);
        let mut request = json!({"v": 1, "id": id, "cmd": cmd, "args": args});
        if let Some(session) = session {
            request["session"] = json!(session);
        }
        let wrap = Scheme::Nip17
            .seal(from, self.bot, &request.to_string(), None)
            .await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        publish(&self.client, &wrap, left).await?;
        self.sent += 1;
        loop {
            let Some((to, value)) = self.next(deadline).await? else {
                bail!("no reply to {cmd} in time");
            };
            if value["re"].as_str() == Some(id.as_str()) {
                return Ok(value);
            }
            self.pending.push((to, value));
        }
    }

    /// [`Desk::ask`], which must succeed: its result.
    async fn ok(
        &mut self,
        from: &Keys,
        session: Option<&str>,
        cmd: &str,
        args: Value,
        deadline: tokio::time::Instant,
    ) -> Result<Value> {
        let reply = self.ask(from, session, cmd, args, deadline).await?;
        if reply["ok"] != true {
            bail!("{cmd} refused: {reply}");
        }
        Ok(reply["result"].clone())
    }

    /// The notice to `to` that `offer` reached `state`.
    async fn notice(
        &mut self,
        to: PublicKey,
        offer: &str,
        state: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Value> {
        let wanted = |key: &PublicKey, n: &Value| {
            *key == to && n.get("notice").is_some() && n["offer"] == offer && n["state"] == state
        };
        if let Some(i) = self.pending.iter().position(|(k, n)| wanted(k, n)) {
            return Ok(self.pending.swap_remove(i).1);
        }
        loop {
            let Some((key, value)) = self.next(deadline).await? else {
                bail!("no {state} notice for {offer} in time");
            };
            if wanted(&key, &value) {
                return Ok(value);
            }
            self.pending.push((key, value));
        }
    }

    /// One whole trade between its maker and taker.
    async fn trade(&mut self, offer: Value, timeout: Duration) -> TradeOutcome {
        let mut invoiced = Sats::ZERO;
        let result = self.trade_steps(offer, timeout, &mut invoiced).await;
        TradeOutcome { invoiced, result }
    }

    async fn trade_steps(
        &mut self,
        offer: Value,
        timeout: Duration,
        invoiced: &mut Sats,
    ) -> Result<Done> {
        let (maker, taker) = self.sides.take().context("the sessions are not open")?;
        let outcome = self
            .trade_between(&maker, &taker, offer, timeout, invoiced)
            .await;
        self.sides = Some((maker, taker));
        outcome
    }

    async fn trade_between(
        &mut self,
        maker: &Side,
        taker: &Side,
        offer: Value,
        timeout: Duration,
        invoiced: &mut Sats,
    ) -> Result<Done> {
        let deadline = || tokio::time::Instant::now() + timeout;
        let (m, t) = (maker.keys.public_key(), taker.keys.public_key());
        let started = Instant::now();
        let created = self
            .ok(
                &maker.keys,
                Some(&maker.session),
                "offer_create",
                offer,
                deadline(),
            )
            .await?;
        let id = created["offer"]
            .as_str()
            .ok_or_else(|| anyhow!("no offer id: {created}"))?
            .to_owned();
        *invoiced = invoiced
            .checked_add(Sats(invoice_sat(&created)?))
            .context("sats overflow")?;
        let waiting = Instant::now();
        self.notice(m, &id, "INVOICE_PAID", deadline()).await?;
        let mut waits = waiting.elapsed();

        let claimed = self
            .ok(
                &taker.keys,
                Some(&taker.session),
                "offer_claim",
                json!({"offer": id}),
                deadline(),
            )
            .await?;
        *invoiced = invoiced
            .checked_add(Sats(invoice_sat(&claimed)?))
            .context("sats overflow")?;
        let waiting = Instant::now();
        self.notice(t, &id, "TAKER_BOND_PAID", deadline()).await?;
        waits += waiting.elapsed();

        self.ok(
            &taker.keys,
            Some(&taker.session),
            "receipt_submit",
            json!({"offer": id, "text": "Confirmed. KES 1,500 paid to 888880"}),
            deadline(),
        )
        .await?;
        self.notice(m, &id, "RECEIPT_SUBMITTED", deadline()).await?;
        self.ok(
            &maker.keys,
            Some(&maker.session),
            "receipt_confirm",
            json!({"offer": id}),
            deadline(),
        )
        .await?;
        self.notice(m, &id, "COMPLETED", deadline()).await?;
        self.notice(t, &id, "COMPLETED", deadline()).await?;
        Ok(Done {
            latency: started.elapsed(),
            waits,
        })
    }
}

/// The `invoice_sat` of an `offer_create` or `offer_claim` result.
fn invoice_sat(result: &Value) -> Result<u64> {
    result["invoice_sat"]
        .as_u64()
        .ok_or_else(|| anyhow!("no invoice_sat: {result}"))
}

/// What the trades phase measured.
#[derive(Default)]
struct TradeRun {
    wall: Duration,
    /// Process CPU seconds (all threads: daemon, relay, mint, clients) over the phase.
    cpu: f64,
    done: Vec<Done>,
    failed: Vec<String>,
    invoiced: Sats,
    dms_in: u64,
    dms_out: u64,
    book_events: u64,
    /// soko's wallet operations counter over the phase, by operation.
    mint_ops: HashMap<String, u64>,
    /// Every trade session: its key and id.
    sessions: Vec<(PublicKey, String)>,
}

impl TradeRun {
    fn print(&self, args: &Args, crypto: &Crypto, mint: &MintCost, cores: usize) {
        let done = self.done.len();
        let per = |n: u64| n as f64 / done.max(1) as f64;
        let rate = done as f64 / self.wall.as_secs_f64();
        mint.print();

        println!(
            "\nTrades — {} whole trades at once, {} sessions, escrow {} sat each (offer_create \
             → invoice paid → offer_claim → bond paid → receipt_submit → receipt_confirm → \
             both told COMPLETED)",
            args.trades,
            2 * args.trades,
            args.sats
        );
        println!(
            "  trades       {done} of {} completed in {:.3} s wall = {rate:.2} trades/s",
            args.trades,
            self.wall.as_secs_f64()
        );
        let mut latencies: Vec<Duration> = self.done.iter().map(|d| d.latency).collect();
        let mut without: Vec<Duration> = self
            .done
            .iter()
            .map(|d| d.latency.saturating_sub(d.waits))
            .collect();
        let mut waits: Vec<Duration> = self.done.iter().map(|d| d.waits).collect();
        latencies.sort_unstable();
        without.sort_unstable();
        waits.sort_unstable();
        let show = |sorted: &[Duration]| match (
            percentile(sorted, 50),
            percentile(sorted, 95),
            sorted.last(),
        ) {
            (Some(p50), Some(p95), Some(max)) => format!(
                "median {:.3} s   p95 {:.3} s   max {:.3} s",
                p50.as_secs_f64(),
                p95.as_secs_f64(),
                max.as_secs_f64()
            ),
            _ => "no trade completed".to_owned(),
        };
        println!(
            "  latency      {}   (offer_create sent → both COMPLETED notices in)",
            show(&latencies)
        );
        println!(
            "  of which     {}   waiting for the two invoices to be paid (the fake backend's ~1 s \
             and the exchange's 1 s pass, each)",
            show(&waits)
        );
        println!("  the rest     {}", show(&without));
        for failure in self.failed.iter().take(5) {
            println!("  failed       {failure}");
        }

        // Per trade, as counted in this run.
        let quotes = per(self.op("session_mint_quote"));
        let mints = per(self.op("session_mint"));
        let sends = per(self.op("session_send"));
        // The fee wallet's receives are not in soko's wallet counters: one per fee leg
        // (the platform fee and the taker fee).
        let house_receives = 2.0;
        let receives = per(self.op("session_receive")) + house_receives;
        let dms_in = per(self.dms_in);
        let dms_out = per(self.dms_out);
        let books = per(self.book_events);
        println!(
            "  per trade    DMs in {dms_in:.1}, DMs out {dms_out:.1} (gift wraps), book events \
             {books:.1}; mint: quotes {quotes:.1}, mints {mints:.1}, sends {sends:.1}, \
             receives {receives:.1} (of which {house_receives:.0} into the fee wallet) — from \
             the clients' counts, a relay subscription to kind {BOOK_KIND} and soko's wallet \
             counters"
        );

        // soko's side: each DM in is checked by the relay and by the bot's client, then
        // unwrapped; each DM out is wrapped and checked by the relay; each book event is
        // signed and checked by the relay.
        let c = |name| crypto.op(name);
        let dm_in_us = 2.0 * c("verify event") + c("unwrap");
        let dm_out_us = c("gift wrap") + c("verify event");
        let book_us = c("sign event") + c("verify event");
        let crypto_us = dms_in * dm_in_us + dms_out * dm_out_us + books * book_us;
        let mint_of = |cost: fn(&Op) -> f64| {
            quotes * cost(&mint.quote)
                + mints * cost(&mint.mint)
                + sends * cost(&mint.send)
                + receives * cost(&mint.receive)
        };
        let mint_wall_us = mint_of(Op::wall_us);
        let mint_cpu_us = mint_of(Op::cpu_us);
        println!(
            "  crypto       {dms_in:.1} × {dm_in_us:.0} µs (DM in: relay verify + bot verify + \
             unwrap) + {dms_out:.1} × {dm_out_us:.0} µs (DM out: gift wrap + relay verify) + \
             {books:.1} × {book_us:.0} µs (book: sign + relay verify) = {:.2} ms CPU",
            crypto_us / 1e3
        );
        println!(
            "  mint         {quotes:.1} quotes + {mints:.1} mints + {sends:.1} sends + \
             {receives:.1} receives = {:.2} ms CPU ({:.2} ms wall one at a time)",
            mint_cpu_us / 1e3,
            mint_wall_us / 1e3
        );
        let cost_ms = (crypto_us + mint_cpu_us) / 1e3;
        let ceiling = cores as f64 * 1e3 / cost_ms;
        println!(
            "  ceiling      {cost_ms:.2} ms CPU of crypto + mint per trade: {:.1} trades/s per \
             core, {ceiling:.1} on {cores} cores; done one after another (wall) {:.1} trades/s",
            1e3 / cost_ms,
            1e6 / (crypto_us + mint_wall_us)
        );
        if !mint.check.wall.is_empty() {
            // The exchange's pass asks the mint about each unpaid invoice every second.
            let polls: f64 =
                self.done.iter().map(|d| d.waits.as_secs_f64()).sum::<f64>() / done.max(1) as f64;
            println!(
                "  polling      not in the ceiling: the exchange's pass checks each unpaid \
                 invoice once a second, ~{polls:.1} checks per trade here × {:.2} ms CPU",
                mint.check.cpu_us() / 1e3
            );
        }
        let cpu_ms = self.cpu * 1e3 / done.max(1) as f64;
        let client_us = dms_in * c("gift wrap") + dms_out * (c("verify event") + c("unwrap"));
        println!(
            "  CPU          {:.2} s of process CPU over the phase = {cpu_ms:.1} ms per trade \
             (all parties: daemon, relay, mint, clients; the clients' crypto is ~{:.1} ms of \
             it; /proc, {USER_HZ} Hz ticks): {cores} cores top out near {:.1} trades/s; the \
             payment waits cost no CPU",
            self.cpu,
            client_us / 1e3,
            cores as f64 * 1e3 / cpu_ms
        );
        let p50 = percentile(&latencies, 50).map_or(0.0, |p| p.as_secs_f64());
        println!(
            "  result       achieved {rate:.2} trades/s against a ceiling of {ceiling:.1} \
             trades/s from crypto + mint per trade ({:.3} of it); {} trades at once with a \
             median latency of {p50:.2} s allow at most {:.1} trades/s",
            rate / ceiling,
            args.trades,
            args.trades as f64 / p50.max(f64::EPSILON)
        );
    }

    fn op(&self, name: &str) -> u64 {
        self.mint_ops.get(name).copied().unwrap_or(0)
    }
}

/// One kind of mint operation, measured one at a time: each call's wall time, and the
/// process's CPU seconds over the loop that made them.
#[derive(Default)]
struct Op {
    wall: Vec<f64>,
    cpu: f64,
}

impl Op {
    /// Runs `call`, noting its wall time.
    async fn time<T, E>(
        &mut self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let t = Instant::now();
        let out = call.await?;
        self.wall.push(micros(t));
        Ok(out)
    }

    /// Mean wall µs per call.
    fn wall_us(&self) -> f64 {
        mean(&self.wall)
    }

    /// Mean CPU µs per call (all threads: wallet, mint, sled).
    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.wall.len().max(1) as f64
    }
}

/// Each mint operation a trade makes.
struct MintCost {
    iterations: u32,
    quote: Op,
    /// A check of an unpaid quote (what the exchange's pass does each second).
    check: Op,
    /// The collect of a paid quote: its status check and the mint.
    mint: Op,
    send: Op,
    receive: Op,
}

impl MintCost {
    fn print(&self) {
        println!(
            "\nMint operations — through two session wallets of this soko against its dev \
             mint over loopback HTTP, one at a time after the trades, {} of each (wallet, \
             HTTP, the mint's signing and sqlite and soko's sled records all included); wall \
             and process CPU per operation",
            self.iterations
        );
        let show = |op: &Op| {
            format!(
                "{:.2} ms ({:.2} ms CPU)",
                op.wall_us() / 1e3,
                op.cpu_us() / 1e3
            )
        };
        println!(
            "  mint quote {}; mint (status check + mint) {}; send (swap to a token) {}; \
             receive (swap) {}; unpaid quote check {}",
            show(&self.quote),
            show(&self.mint),
            show(&self.send),
            show(&self.receive),
            if self.check.wall.is_empty() {
                "not seen (paid at once)".to_owned()
            } else {
                show(&self.check)
            }
        );
    }
}

/// soko's side of the crypto per DM and per book event, measured single-threaded: each
/// operation's µs.
struct Crypto {
    ops: Vec<(&'static str, f64)>,
}

impl Crypto {
    async fn measure(iterations: u32) -> Result<Self> {
        let bot = Keys::generate();
        let user = Keys::generate();
        let request = Scheme::Nip17
            .seal(&user, bot.public_key(), SAMPLE_REQUEST, None)
            .await?;
        let book = || {
            EventBuilder::new(Kind::Custom(BOOK_KIND), "")
                .tags([
                    Tag::identifier("9c1e5b0a7d3f4e2a8b6c1d0e9f8a7b6c"),
                    Tag::parse(["k", "buy"])?,
                    Tag::parse(["f", "KES"])?,
                    Tag::parse(["s", "pending"])?,
                    Tag::parse(["amt", "10000"])?,
                    Tag::parse(["fa", "1500"])?,
                    Tag::parse(["pm", "mpesa"])?,
                    Tag::parse(["premium", "0"])?,
                    Tag::parse(["network", "mainnet"])?,
                    Tag::parse(["layer", "lightning"])?,
                    Tag::parse(["y", "soko"])?,
                    Tag::parse(["z", "order"])?,
                ])
                .sign_with_keys(&bot)
                .map_err(anyhow::Error::from)
        };
        let ops = vec![
            (
                "gift wrap",
                per_op_micros(iterations, async || {
                    std::hint::black_box(
                        Scheme::Nip17
                            .seal(&bot, user.public_key(), SAMPLE_NOTICE, None)
                            .await?,
                    );
                    Ok(())
                })
                .await?,
            ),
            (
                "unwrap",
                per_op_micros(iterations, async || {
                    std::hint::black_box(UnwrappedGift::from_gift_wrap(&bot, &request).await?);
                    Ok(())
                })
                .await?,
            ),
            (
                "verify event",
                per_op_micros(iterations, async || Ok(request.verify()?)).await?,
            ),
            (
                "sign event",
                per_op_micros(iterations, async || {
                    std::hint::black_box(book()?);
                    Ok(())
                })
                .await?,
            ),
        ];
        Ok(Self { ops })
    }

    fn op(&self, name: &str) -> f64 {
        self.ops
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, us)| *us)
    }

    fn print(&self, iterations: u32) {
        let ops: Vec<String> = self
            .ops
            .iter()
            .map(|(name, us)| format!("{name} {us:.1} µs"))
            .collect();
        println!(
            "\nCrypto — one core, before soko starts, {iterations} iterations each: {}",
            ops.join(", ")
        );
    }
}

/// soko's wallet operation counters (`soko_wallet_operations_total`), the successful ones,
/// by operation, from the metrics text.
fn wallet_ops(metrics: &str) -> HashMap<String, u64> {
    let mut ops = HashMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("soko_wallet_operations_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.contains("outcome=\"ok\"") {
            continue;
        }
        let op = labels
            .split(',')
            .find_map(|l| l.strip_prefix("op=\""))
            .and_then(|l| l.strip_suffix('"'));
        if let (Some(op), Ok(n)) = (op, value.trim().parse::<u64>()) {
            ops.insert(op.to_owned(), n);
        }
    }
    ops
}

/// This process's CPU time so far (user + system, all threads), in seconds.
fn process_cpu() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("/proc/self/stat")?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .context("no command name in /proc/self/stat")?;
    // utime and stime are fields 14 and 15; field 3 (the state) is the first after it.
    let ticks = |n: usize| -> Result<f64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64)
            .with_context(|| format!("no field {n} in /proc/self/stat"))
    };
    Ok((ticks(14)? + ticks(15)?) / USER_HZ)
}

fn micros(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e6
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}
