//! Load benchmark for soko's DM path.
//!
//! N concurrent clients, each with its own key and relay connection, ping the bot M times one
//! after another (send, wait for the reply, next), first over NIP-04 and then over NIP-17.
//! The round-trip figures are set against the bare crypto cost the bot pays per message,
//! measured in the same run on one core and on all cores at once (one thread per core, each
//! doing the bot's whole crypto for a message after another).
//!
//! # Lean clients (the default) and nostr-sdk clients (`--sdk-clients`)
//!
//! A nostr-sdk client does about as much crypto per round trip as the bot: it seals the ping
//! (encrypt and sign, or a whole gift wrap), its pool verifies every event it receives, and it
//! opens the reply. When the clients run on the same cores as soko (in-process, or on one
//! machine without a second one at hand), their crypto takes about half of those cores, and
//! soko can never show more than about 0.45 of its two-core ceiling, whatever it does.
//!
//! So by default each client does next to nothing per message while the clock runs:
//! - it seals all its pings for both schemes before any clock starts (signed kind-4 DMs and
//!   gift wraps, serialized to `["EVENT",…]` text);
//! - it talks to the relay over a minimal websocket client (`support::Ws`), subscribed with
//!   one `REQ` for kinds 4 and 1059 tagged to its own key;
//! - per ping it sends the event and reads frames until it has both the relay's `OK` for that
//!   event (a refusal counts as refused) and the next event on its subscription, which it
//!   keeps unparsed with its arrival time. With one ping outstanding per client, that event is
//!   the reply to it.
//!
//! Every reply is still checked, after the clock has stopped: its id and signature are
//! verified, it must come from the bot (the kind 4's author, or the gift wrap's seal once
//! unwrapped), it is decrypted, and its `re` must name the ping, with `ok: true`, in the
//! ping's scheme. A reply that fails any check counts as an error reply; only checked round
//! trips count in the latencies and the rate.
//!
//! `--sdk-clients` runs real nostr-sdk clients instead, doing all of that inside the timed
//! window, as a user's client would.
//!
//! The ceiling is the crypto as nostr does it for one message, each NIP-04 or NIP-44 step
//! deriving its own ECDH. soko keeps the ECDH of each pair of keys
//! (`soko::outbound::conversation`), so from a client's second message on it skips the
//! decrypt's and the encrypt's (NIP-04) or the seal's, in and out (NIP-17): its own crypto
//! per round trip is then below the ceiling's, and the note's "top out" figure is not a bound.
//!
//! ```sh
//! # soko in-process: embedded relay and dev mint on free loopback ports, temp data dir
//! cargo run --release --example bench_dm -- [--clients N] [--pings M] [--sdk-clients] [--idle K]
//! # an already running soko (lean clients need a ws:// URL: the minimal client has no TLS)
//! cargo run --release --example bench_dm -- --relay ws://127.0.0.1:7447 --bot npub1…
//! ```
//!
//! `--idle K` holds K more connections open and silent through the run. The embedded relay
//! (nostr-relay-builder 0.44) wakes every connection for every event it stores, and each
//! wake zero-fills the connection's 128 KiB tungstenite read buffer before it finds nothing
//! to read, so each open connection costs every event; this shows how much.
//!
//! Every wait is bounded. The exit status is non-zero when any ping went unanswered, was
//! refused by the relay or got an error reply.

use std::hint::black_box;
use std::mem;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use nostr_sdk::nips::nip04;
use nostr_sdk::nips::nip59::UnwrappedGift;
use nostr_sdk::{
    Client, Event, EventBuilder, Filter, JsonUtil as _, Keys, Kind, PublicKey,
    RelayPoolNotification, RelayUrl, Tag, ToBech32,
};
use soko::Config;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinSet;

#[path = "support/mod.rs"]
#[allow(dead_code)] // each example uses its own part of it
mod support;

use support::*;

/// A reply as the bot sends it for a ping: `{"v":1,"re":…,"ok":true,"result":{…}}`, used for
/// the crypto measurement so that it works on messages of the real size.
const SAMPLE_REPLY: &str =
    r#"{"v":1,"re":"nip04-c0-p0","ok":true,"result":{"pong":true,"time":1700000000}}"#;

#[derive(Debug, Parser)]
#[command(about = "Benchmark soko's DM round trips over NIP-04 and NIP-17")]
struct Args {
    /// Concurrent clients, each with its own key and relay connection.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,

    /// Pings each client sends per scheme, one after another.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pings: u32,

    /// Relay of an already running soko (requires --bot); without it soko runs in-process.
    #[arg(long, requires = "bot", value_parser = parse_relay_url)]
    relay: Option<RelayUrl>,

    /// The running soko's bot key, npub or hex (requires --relay).
    #[arg(long, requires = "relay", value_parser = parse_public_key)]
    bot: Option<PublicKey>,

    /// Seconds to wait for each reply before counting it lost.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    reply_timeout: u64,

    /// Iterations of each crypto operation in the single-core measurement.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    crypto_iterations: u32,

    /// Real nostr-sdk clients, sealing, verifying and decrypting inside the timed window,
    /// instead of the lean clients (pings sealed beforehand, replies checked after the clock).
    #[arg(long)]
    sdk_clients: bool,

    /// Connections opened to the relay before the clock and left idle (no subscription,
    /// nothing sent) through both schemes: what each open connection costs the relay per
    /// event it stores.
    #[arg(long, default_value_t = 0)]
    idle: u32,
}

impl Args {
    fn clients_mode(&self) -> ClientsMode {
        if self.sdk_clients {
            ClientsMode::Sdk
        } else {
            ClientsMode::Lean
        }
    }
}

/// Which clients load soko.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientsMode {
    /// Pre-sealed pings over a minimal websocket; replies kept raw and checked after the clock.
    Lean,
    /// nostr-sdk clients doing all their crypto inside the timed window.
    Sdk,
}

fn parse_relay_url(s: &str) -> Result<RelayUrl, String> {
    RelayUrl::parse(s).map_err(|e| e.to_string())
}

fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::parse(s).map_err(|e| e.to_string())
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    // No tracing subscriber: soko's log would drown the figures. Its errors surface here as
    // lost or refused pings.

    let iterations = args.crypto_iterations;
    support::measure_then_run(CryptoCost::measure(iterations), |crypto, cores| {
        run(args, crypto, cores)
    })
}

async fn run(args: Args, crypto: CryptoCost, cores: usize) -> Result<ExitCode> {
    let target = match (&args.relay, args.bot) {
        (Some(relay), Some(bot)) => Target::running(relay.clone(), bot),
        _ => Target::in_process().await?,
    };
    target.describe(&args, cores);
    crypto.print(args.crypto_iterations);

    // Shut soko down however the benchmark ends, then report the benchmark's own failure.
    let outcome = benchmark(&args, &target, &crypto, cores).await;
    target.shutdown().await?;
    let runs = outcome?;

    let problems: u32 = runs.iter().map(|r| r.tally.problems()).sum();
    if problems > 0 {
        println!(
            "\nFAILED: {problems} ping(s) lost, refused by the relay or answered with an error"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn benchmark(
    args: &Args,
    target: &Target,
    crypto: &CryptoCost,
    cores: usize,
) -> Result<Vec<SchemeRun>> {
    // Lean clients seal every ping of both schemes before the first clock starts.
    let mut users = match args.clients_mode() {
        ClientsMode::Lean => LeanUser::prepare_all(args, target.bot).await?,
        ClientsMode::Sdk => Vec::new(),
    };
    let mut idle = Vec::new();
    for _ in 0..args.idle {
        idle.push(Ws::connect_url(target.relay.as_str()).await?);
    }
    if !idle.is_empty() {
        println!("  idle        {} connections open, silent", idle.len());
    }
    let mut runs = Vec::new();
    for scheme in [Scheme::Nip04, Scheme::Nip17] {
        let flushes_before = target.sync_flushes();
        let run = match args.clients_mode() {
            ClientsMode::Lean => SchemeRun::execute_lean(scheme, args, target, &mut users).await?,
            ClientsMode::Sdk => SchemeRun::execute(scheme, args, target).await?,
        };
        run.print(crypto.for_scheme(scheme), target.is_in_process(), cores);
        if let (Some(before), Some(after)) = (flushes_before, target.sync_flushes()) {
            println!(
                "  sled syncs   {} flushes of soko's store for {} replies (a pong reports \
                 nothing stored and does not wait for one; the relay journals the pings and \
                 flushes its own store once a second)",
                after - before,
                run.tally.latencies.len()
            );
        }
        runs.push(run);
    }
    drop(idle);
    Ok(runs)
}

/// The soko being benchmarked.
struct Target {
    relay: RelayUrl,
    bot: PublicKey,
    /// The in-process soko with the temp dir holding its data; `None` for a running soko.
    local: Option<(Soko, tempfile::TempDir)>,
}

impl Target {
    fn running(relay: RelayUrl, bot: PublicKey) -> Self {
        Self {
            relay,
            bot,
            local: None,
        }
    }

    /// Starts soko like the test harness does: embedded relay and dev mint on free loopback
    /// ports, data in a temp dir.
    async fn in_process() -> Result<Self> {
        let dir = tempfile::tempdir().context("creating a temp data dir")?;
        let mut soko = Soko::new(in_process_config(dir.path()));
        soko.start().await?;
        let relay = soko.relay_url()?;
        let bot = soko.daemon()?.bot_public_key();
        Ok(Self {
            relay,
            bot,
            local: Some((soko, dir)),
        })
    }

    fn is_in_process(&self) -> bool {
        self.local.is_some()
    }

    /// Flushes soko's outbox has made so far, when soko runs in this process.
    fn sync_flushes(&self) -> Option<u64> {
        self.local
            .as_ref()
            .and_then(|(soko, _)| soko.daemon().ok())
            .map(|daemon| daemon.store().sync_flushes())
    }

    fn describe(&self, args: &Args, cores: usize) {
        let npub = self.bot.to_bech32().unwrap_or_else(|_| self.bot.to_hex());
        // soko's token bucket allows this many events per pubkey per minute, in bursts of as
        // many: enough for that many pings per client in one run.
        let default_limit = Config::default().relay.rate_limit_per_minute;
        println!("soko DM benchmark");
        if self.is_in_process() {
            println!(
                "  target      in-process soko, relay {}, bot {npub}",
                self.relay
            );
            println!(
                "  rate limit  raised to {IN_PROCESS_RATE_LIMIT}/min per pubkey (the default \
                 {default_limit} would also do for --pings <= {default_limit}: only the clients' \
                 kind-4 DMs count against their keys, gift wraps are signed by one-time keys, the \
                 bot is exempt)"
            );
            println!(
                "  cores       {cores}, shared by the daemon, its relay and all clients in this \
                 process"
            );
        } else {
            println!(
                "  target      running soko, relay {}, bot {npub}",
                self.relay
            );
            println!(
                "  rate limit  the target's per-pubkey limit applies (default \
                 {default_limit}/min): each client sends {} NIP-04 DMs under its own key; gift \
                 wraps use one-time keys. DMs it refuses are counted as refused",
                args.pings
            );
            println!("  cores       {cores} on this machine (the clients' side)");
        }
        println!(
            "  load        {} clients x {} pings per scheme, reply timeout {} s",
            args.clients, args.pings, args.reply_timeout
        );
        match args.clients_mode() {
            ClientsMode::Lean => println!(
                "  clients     lean (the default): pings sealed before the clock, a minimal \
                 websocket, replies kept raw and verified, unwrapped and decrypted after the \
                 clock (--sdk-clients for nostr-sdk clients)"
            ),
            ClientsMode::Sdk => println!(
                "  clients     nostr-sdk (--sdk-clients): each seals its pings, verifies and \
                 decrypts the replies inside the timed window"
            ),
        }
    }

    async fn shutdown(self) -> Result<()> {
        if let Some((mut soko, dir)) = self.local {
            soko.stop().await?;
            dir.close().context("removing the temp data dir")?;
        }
        Ok(())
    }
}

/// One benchmark user: its key, its relay connection and its notification stream.
struct BenchClient {
    index: u32,
    keys: Keys,
    client: Client,
    inbox: broadcast::Receiver<RelayPoolNotification>,
}

impl BenchClient {
    async fn connect(index: u32, relay: RelayUrl) -> Result<Self> {
        let keys = Keys::generate();
        let client = connect_client(&keys, &relay)
            .await
            .with_context(|| format!("client {index}"))?;
        // Listen before subscribing, so that nothing the relay sends can slip past.
        let inbox = client.notifications();
        let to_me = Filter::new()
            .kinds([Kind::EncryptedDirectMessage, Kind::GiftWrap])
            .pubkey(keys.public_key());
        subscribe(&client, to_me)
            .await
            .with_context(|| format!("client {index}"))?;
        Ok(Self {
            index,
            keys,
            client,
            inbox,
        })
    }

    /// Sends `pings` pings one after another, each waiting for its reply, and hands itself
    /// back so the caller can close the connection after the clock has stopped.
    async fn ping_loop(
        mut self,
        bot: PublicKey,
        scheme: Scheme,
        pings: u32,
        reply_timeout: Duration,
    ) -> Result<(Self, Tally)> {
        let mut tally = Tally::default();
        for n in 0..pings {
            let id = format!("{}-c{}-p{n}", scheme.id_prefix(), self.index);
            let request = serde_json::json!({ "id": id, "cmd": "ping" }).to_string();
            let dm = scheme.seal(&self.keys, bot, &request, None).await?;

            let started = Instant::now();
            let deadline = tokio::time::Instant::from_std(started + reply_timeout);
            match tokio::time::timeout_at(deadline, self.client.send_event(&dm)).await {
                Err(_) => {
                    tally.lost += 1;
                    tally.note(format!("{id}: publishing timed out"));
                    continue;
                }
                Ok(Err(e)) => {
                    tally.refused += 1;
                    tally.note(format!("{id}: publishing failed: {e}"));
                    continue;
                }
                Ok(Ok(output)) if output.success.is_empty() => {
                    tally.refused += 1;
                    tally.note(format!(
                        "{id}: the relay refused the DM: {:?}",
                        output.failed
                    ));
                    continue;
                }
                Ok(Ok(_)) => {}
            }

            match self.wait_for_reply(bot, &id, deadline, &mut tally).await {
                None => {
                    tally.lost += 1;
                    tally.note(format!("{id}: no reply within {reply_timeout:?}"));
                }
                Some(reply) if reply.ok && reply.scheme == scheme => {
                    tally.latencies.push(started.elapsed());
                }
                Some(reply) => {
                    tally.error_replies += 1;
                    tally.note(format!(
                        "{id}: unexpected {} reply: {}",
                        reply.scheme.name(),
                        reply.content
                    ));
                }
            }
        }
        Ok((self, tally))
    }

    /// The bot's reply to request `id`, or `None` when none came by `deadline`.
    async fn wait_for_reply(
        &mut self,
        bot: PublicKey,
        id: &str,
        deadline: tokio::time::Instant,
        tally: &mut Tally,
    ) -> Option<Reply> {
        loop {
            let notification = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => return None,
                Ok(Err(RecvError::Lagged(missed))) => {
                    // Our reply may be among the dropped notifications; if so the wait ends in
                    // a timeout and the ping is counted lost.
                    tally.note(format!("client {} lagged, missed {missed}", self.index));
                    continue;
                }
                Ok(Ok(notification)) => notification,
            };
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            let Some(reply) = Reply::open(&self.keys, bot, &event).await else {
                continue;
            };
            if reply.re.as_deref() == Some(id) {
                return Some(reply);
            }
            // A late answer to an earlier ping that was already counted lost.
            tally.stray += 1;
        }
    }
}

impl Participant for BenchClient {
    fn index(&self) -> u32 {
        self.index
    }

    /// Disconnects; a client that does not close in time is simply dropped.
    async fn close(self) {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.client.shutdown()).await;
    }
}

/// A lean client's key and its pings, sealed before any clock starts.
struct LeanUser {
    index: u32,
    keys: Keys,
    /// Per scheme, the pings not sent yet.
    sealed: Vec<(Scheme, Vec<SealedPing>)>,
}

/// A ping ready to go: the request's id, the event's id as the relay's `OK` names it, and the
/// `["EVENT",…]` text.
struct SealedPing {
    request: String,
    event_id: String,
    frame: String,
}

impl LeanUser {
    /// One user per client, each with its pings of both schemes sealed, in index order. The
    /// sealing is spread over the runtime's threads; no clock runs yet.
    async fn prepare_all(args: &Args, bot: PublicKey) -> Result<Vec<Self>> {
        let mut sealing = JoinSet::new();
        for index in 0..args.clients {
            let pings = args.pings;
            sealing.spawn(async move {
                let keys = Keys::generate();
                let mut sealed = Vec::new();
                for scheme in [Scheme::Nip04, Scheme::Nip17] {
                    let mut these = Vec::with_capacity(pings as usize);
                    for n in 0..pings {
                        let request = format!("{}-c{index}-p{n}", scheme.id_prefix());
                        let content = serde_json::json!({ "id": request, "cmd": "ping" });
                        let event = scheme.seal(&keys, bot, &content.to_string(), None).await?;
                        these.push(SealedPing {
                            request,
                            event_id: event.id.to_hex(),
                            frame: format!(r#"["EVENT",{}]"#, event.as_json()),
                        });
                    }
                    sealed.push((scheme, these));
                }
                Ok::<_, anyhow::Error>(Self {
                    index,
                    keys,
                    sealed,
                })
            });
        }
        let mut users = Vec::new();
        while let Some(joined) = sealing.join_next().await {
            users.push(joined??);
        }
        users.sort_by_key(|user| user.index);
        Ok(users)
    }

    /// Its pings of `scheme`, handed over once.
    fn take(&mut self, scheme: Scheme) -> Vec<SealedPing> {
        self.sealed
            .iter_mut()
            .find(|(s, _)| *s == scheme)
            .map(|(_, pings)| mem::take(pings))
            .unwrap_or_default()
    }
}

/// A reply as it came off the wire, kept for the check after the clock.
struct Kept {
    request: String,
    frame: Vec<u8>,
    /// From the ping's send to the reply frame's arrival.
    latency: Duration,
}

/// A lean client: a minimal websocket subscribed to the DMs tagged to its key.
struct LeanClient {
    index: u32,
    keys: Keys,
    ws: Ws,
    pings: Vec<SealedPing>,
}

impl LeanClient {
    /// Connects to `relay`, subscribed to the DMs tagged to `keys`.
    async fn connect(index: u32, keys: Keys, pings: Vec<SealedPing>, relay: &str) -> Result<Self> {
        let ws = Ws::subscribe_dms(relay, keys.public_key())
            .await
            .with_context(|| format!("client {index}"))?;
        Ok(Self {
            index,
            keys,
            ws,
            pings,
        })
    }

    /// Sends its pings one after another, each waiting for the relay's `OK` and the reply
    /// event, which it keeps unopened. After a lost ping it stops: a late reply would be
    /// taken for the next ping's, and the run fails anyway.
    async fn ping_loop(mut self, reply_timeout: Duration) -> Result<(Self, Tally, Vec<Kept>)> {
        let mut tally = Tally::default();
        let pings = mem::take(&mut self.pings);
        let mut kept = Vec::with_capacity(pings.len());
        let count = pings.len();
        let mut more = Vec::new();
        for (n, ping) in pings.into_iter().enumerate() {
            let started = Instant::now();
            let deadline = tokio::time::Instant::from_std(started + reply_timeout);
            let exchange = self
                .ws
                .publish_then_event(&ping.frame, &ping.event_id, deadline, &mut more)
                .await
                .with_context(|| format!("client {}", self.index))?;
            if !more.is_empty() {
                // Two events for one ping: the first is checked as its reply, the others are
                // kept out of the count, but not silent.
                tally.stray += u32::try_from(more.len())?;
                tally.note(format!(
                    "{}: {} more event(s) before the OK",
                    ping.request,
                    more.len()
                ));
                more.clear();
            }
            match exchange {
                Exchange::Answered(reply) => kept.push(Kept {
                    request: ping.request,
                    frame: reply.frame,
                    latency: reply.at - started,
                }),
                Exchange::Refused(reason) => {
                    tally.refused += 1;
                    tally.note(format!(
                        "{}: the relay refused the DM: {reason}",
                        ping.request
                    ));
                }
                lost @ (Exchange::NoOk | Exchange::NoEvent) => {
                    let missing = lost.missing().unwrap_or_default();
                    let unsent = count - n - 1;
                    tally.lost += 1 + u32::try_from(unsent)?;
                    tally.note(format!(
                        "{}: {missing} within {reply_timeout:?}; the client's {unsent} later \
                         pings were not sent (counted lost)",
                        ping.request
                    ));
                    break;
                }
            }
        }
        Ok((self, tally, kept))
    }
}

impl Participant for LeanClient {
    fn index(&self) -> u32 {
        self.index
    }

    /// Drops the connection: nothing waits on a clean close.
    async fn close(self) {}
}

/// Checks, after the clock, the replies one client kept: each must parse, carry a valid id
/// and signature, come from the bot, open with the client's key and answer its ping with
/// `ok: true` in `scheme`. Only those count as round trips.
async fn check_replies(keys: Keys, bot: PublicKey, scheme: Scheme, kept: Vec<Kept>) -> Tally {
    let mut tally = Tally::default();
    for kept in kept {
        match open_frame(&keys, bot, &kept.frame).await {
            Err(e) => {
                tally.error_replies += 1;
                tally.note(format!(
                    "{}: the reply failed its check: {e:#}",
                    kept.request
                ));
            }
            Ok(reply)
                if reply.ok
                    && reply.scheme == scheme
                    && reply.re.as_deref() == Some(kept.request.as_str()) =>
            {
                tally.latencies.push(kept.latency);
            }
            Ok(reply) => {
                tally.error_replies += 1;
                tally.note(format!(
                    "{}: unexpected {} reply: {}",
                    kept.request,
                    reply.scheme.name(),
                    reply.content
                ));
            }
        }
    }
    tally
}

/// The reply in an `["EVENT",sub,event]` frame, verified and decrypted.
async fn open_frame(keys: &Keys, bot: PublicKey, frame: &[u8]) -> Result<Reply> {
    let event = verified_event(frame)?;
    Reply::open(keys, bot, &event)
        .await
        .ok_or_else(|| anyhow::anyhow!("not a DM from the bot that opens with the client's key"))
}

/// A decrypted reply from the bot.
struct Reply {
    scheme: Scheme,
    re: Option<String>,
    ok: bool,
    content: String,
}

impl Reply {
    /// Decrypts `event` if it is a DM from the bot; anything else is `None`.
    async fn open(keys: &Keys, bot: PublicKey, event: &Event) -> Option<Self> {
        let (scheme, content) = match event.kind {
            Kind::EncryptedDirectMessage if event.pubkey == bot => {
                let content = nip04::decrypt(keys.secret_key(), &event.pubkey, &event.content);
                (Scheme::Nip04, content.ok()?)
            }
            Kind::GiftWrap => {
                let gift = UnwrappedGift::from_gift_wrap(keys, event).await.ok()?;
                if gift.sender != bot {
                    return None;
                }
                (Scheme::Nip17, gift.rumor.content)
            }
            _ => return None,
        };
        let json: serde_json::Value = serde_json::from_str(&content).ok()?;
        Some(Self {
            scheme,
            re: json["re"].as_str().map(str::to_owned),
            ok: json["ok"].as_bool() == Some(true),
            content,
        })
    }
}

/// What happened to one client's pings (or, merged, to all of them).
#[derive(Debug, Default)]
struct Tally {
    /// Round-trip time of every ping answered with `ok: true` in the right scheme.
    latencies: Vec<Duration>,
    /// Accepted by the relay (or stuck publishing) but not answered in time.
    lost: u32,
    /// Refused by the relay, or not publishable.
    refused: u32,
    /// Answered, but not with a pong in the request's scheme.
    error_replies: u32,
    /// Replies that matched no waiting request (late answers to lost pings).
    stray: u32,
    /// The first few problems, verbatim, for the report.
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
        self.lost += other.lost;
        self.refused += other.refused;
        self.error_replies += other.error_replies;
        self.stray += other.stray;
        for note in other.notes {
            self.note(note);
        }
    }

    fn problems(&self) -> u32 {
        self.lost + self.refused + self.error_replies
    }
}

/// One scheme's load run.
struct SchemeRun {
    scheme: Scheme,
    mode: ClientsMode,
    clients: u32,
    pings: u32,
    wall: Duration,
    tally: Tally,
    /// Lean clients: replies checked after the clock, and how long checking them took.
    checked_after: Option<(usize, Duration)>,
}

impl SchemeRun {
    /// Connects fresh clients (not timed), lets them all ping at once, and times the lot.
    async fn execute(scheme: Scheme, args: &Args, target: &Target) -> Result<Self> {
        let clients = connect_all(args.clients, |index| {
            BenchClient::connect(index, target.relay.clone())
        })
        .await?;
        let reply_timeout = Duration::from_secs(args.reply_timeout);

        let started = Instant::now();
        let mut pinging = JoinSet::new();
        for client in clients {
            pinging.spawn(client.ping_loop(target.bot, scheme, args.pings, reply_timeout));
        }
        let mut tally = Tally::default();
        let mut finished = Vec::new();
        let mut first_error = None;
        while let Some(joined) = pinging.join_next().await {
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

        for client in finished {
            client.close().await;
        }
        if let Some(e) = first_error {
            return Err(e.context(format!("{} run", scheme.name())));
        }
        tally.latencies.sort_unstable();
        Ok(Self {
            scheme,
            mode: ClientsMode::Sdk,
            clients: args.clients,
            pings: args.pings,
            wall,
            tally,
            checked_after: None,
        })
    }

    /// Connects a lean client for each of `users` (not timed), lets them all send their
    /// pre-sealed pings of `scheme` at once and times the lot; then, with the clock stopped,
    /// checks every reply they kept.
    async fn execute_lean(
        scheme: Scheme,
        args: &Args,
        target: &Target,
        users: &mut [LeanUser],
    ) -> Result<Self> {
        let relay = target.relay.as_str().to_owned();
        let sealed: Vec<(u32, Keys, Vec<SealedPing>)> = users
            .iter_mut()
            .map(|user| (user.index, user.keys.clone(), user.take(scheme)))
            .collect();
        let sealed = std::sync::Mutex::new(sealed.into_iter().map(Some).collect::<Vec<_>>());
        let clients = connect_all(args.clients, |index| {
            let taken = lock(&sealed).get_mut(index as usize).and_then(Option::take);
            let relay = relay.clone();
            async move {
                let (index, keys, pings) =
                    taken.ok_or_else(|| anyhow::anyhow!("no sealed pings for client {index}"))?;
                LeanClient::connect(index, keys, pings, &relay).await
            }
        })
        .await?;
        let reply_timeout = Duration::from_secs(args.reply_timeout);

        let started = Instant::now();
        let mut pinging = JoinSet::new();
        for client in clients {
            pinging.spawn(client.ping_loop(reply_timeout));
        }
        let mut tally = Tally::default();
        let mut finished = Vec::new();
        let mut first_error = None;
        while let Some(joined) = pinging.join_next().await {
            match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok((client, client_tally, kept)) => {
                    tally.merge(client_tally);
                    finished.push((client, kept));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let wall = started.elapsed();
        if let Some(e) = first_error {
            return Err(e.context(format!("{} run", scheme.name())));
        }

        // The clock has stopped: now every kept reply is verified, opened and matched.
        let checking_started = Instant::now();
        let mut checking = JoinSet::new();
        let mut kept_replies = 0;
        for (client, kept) in finished {
            kept_replies += kept.len();
            let keys = client.keys.clone();
            client.close().await;
            checking.spawn(check_replies(keys, target.bot, scheme, kept));
        }
        while let Some(checked) = checking.join_next().await {
            tally.merge(checked?);
        }
        let checking = checking_started.elapsed();
        tally.latencies.sort_unstable();
        Ok(Self {
            scheme,
            mode: ClientsMode::Lean,
            clients: args.clients,
            pings: args.pings,
            wall,
            tally,
            checked_after: Some((kept_replies, checking)),
        })
    }

    fn round_trips_per_second(&self) -> f64 {
        self.tally.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    fn print(&self, cost: &SchemeCost, in_process: bool, cores: usize) {
        let answered = self.tally.latencies.len();
        let rate = self.round_trips_per_second();
        let ceiling = cost.single_core_ceiling();
        println!(
            "\n{} — {} clients x {} pings",
            self.scheme.name(),
            self.clients,
            self.pings
        );
        println!(
            "  round trips  {answered} of {} answered in {:.3} s wall = {rate:.1} round trips/s",
            u64::from(self.clients) * u64::from(self.pings),
            self.wall.as_secs_f64()
        );
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        match (
            percentile(&self.tally.latencies, 50),
            percentile(&self.tally.latencies, 99),
            self.tally.latencies.last(),
        ) {
            (Some(p50), Some(p99), Some(max)) => println!(
                "  latency ms   p50 {:.2}   p99 {:.2}   max {:.2}   ({})",
                ms(p50),
                ms(p99),
                ms(*max),
                match self.mode {
                    ClientsMode::Lean => "publish start -> reply frame in; checked after the clock",
                    ClientsMode::Sdk => "publish start -> reply decrypted",
                }
            ),
            _ => println!("  latency ms   no answered pings"),
        }
        println!(
            "  problems     lost {}, refused by relay {}, error replies {}, stray replies {}",
            self.tally.lost, self.tally.refused, self.tally.error_replies, self.tally.stray
        );
        for note in &self.tally.notes {
            println!("    {note}");
        }
        if let Some((kept, took)) = self.checked_after {
            println!(
                "  checked      after the clock: {kept} replies verified, opened and matched \
                 ({answered} passed, {} failed) in {:.1} ms",
                kept.saturating_sub(answered),
                ms(took)
            );
        }
        println!(
            "  vs crypto    {rate:.1} / {ceiling:.0} single-core ceiling = {:.3}; \
             {rate:.1} / {:.0} {cores}-core ceiling = {:.3}",
            rate / ceiling,
            cost.all_cores,
            rate / cost.all_cores
        );
        if in_process {
            // Each round trip in this process pays one more signature check than the bot's:
            // the relay checks the request (soko's reply reaches the relay in-process,
            // unchecked, and the bot's pool checks the request once, the bot's "verify").
            // nostr-sdk clients also pay the mirror image of the bot's work (seal the request,
            // verify and open the reply) inside the window; lean clients pay it outside.
            let (all_parties, parties) = match self.mode {
                ClientsMode::Sdk => (
                    2.0 * cost.total_micros() + cost.verify_micros(),
                    "2 x bot + 1 verify",
                ),
                ClientsMode::Lean => (
                    cost.total_micros() + cost.verify_micros(),
                    "bot + the relay's verify; the lean clients' crypto is outside the window",
                ),
            };
            let top = cost.all_cores * cost.total_micros() / all_parties;
            println!(
                "  note         in-process, daemon + relay + clients share the {cores} cores; all \
                 parties' crypto in the window is ~{all_parties:.0} µs per round trip \
                 ({parties}), so {cores} cores top out near {top:.0} round trips/s = {:.3} of \
                 the bot's {cores}-core ceiling (less for soko, which keeps each pair's ECDH)",
                top / cost.all_cores
            );
        }
    }
}

/// The bot's crypto per message in one scheme: each operation's µs, in the order it runs.
struct SchemeCost {
    scheme: Scheme,
    ops: Vec<(&'static str, f64)>,
    /// Messages per second with every core doing the same crypto at once.
    all_cores: f64,
}

impl SchemeCost {
    fn total_micros(&self) -> f64 {
        self.ops.iter().map(|(_, us)| us).sum()
    }

    /// The outer event's signature check, the one operation every party repeats.
    fn verify_micros(&self) -> f64 {
        self.ops.first().map_or(0.0, |(_, us)| *us)
    }

    /// Messages per second one core could handle if crypto were all the bot did.
    fn single_core_ceiling(&self) -> f64 {
        1e6 / self.total_micros()
    }
}

/// The bot's crypto per message, measured single-threaded.
struct CryptoCost {
    nip04: SchemeCost,
    nip17: SchemeCost,
    /// Threads the all-cores ceiling ran on.
    cores: usize,
}

impl CryptoCost {
    /// Times, on the current thread, the same nostr-sdk calls soko makes to read a DM and
    /// answer it.
    async fn measure(iterations: u32) -> Result<Self> {
        let bot = Keys::generate();
        let client = Keys::generate();
        let request = r#"{"id":"nip04-c0-p0","cmd":"ping"}"#;

        // NIP-04: verify the kind 4, decrypt it, encrypt the reply, sign the reply event.
        let dm = Scheme::Nip04
            .seal(&client, bot.public_key(), request, None)
            .await?;
        let reply_ciphertext =
            nip04::encrypt(bot.secret_key(), &client.public_key(), SAMPLE_REPLY)?;
        let nip04 = SchemeCost {
            scheme: Scheme::Nip04,
            all_cores: 0.0,
            ops: vec![
                (
                    "verify",
                    per_op_micros(iterations, async || Ok(dm.verify()?)).await?,
                ),
                (
                    "decrypt",
                    per_op_micros(iterations, async || {
                        black_box(nip04::decrypt(
                            bot.secret_key(),
                            &client.public_key(),
                            &dm.content,
                        )?);
                        Ok(())
                    })
                    .await?,
                ),
                (
                    "encrypt",
                    per_op_micros(iterations, async || {
                        black_box(nip04::encrypt(
                            bot.secret_key(),
                            &client.public_key(),
                            SAMPLE_REPLY,
                        )?);
                        Ok(())
                    })
                    .await?,
                ),
                (
                    "sign",
                    per_op_micros(iterations, async || {
                        black_box(
                            EventBuilder::new(
                                Kind::EncryptedDirectMessage,
                                reply_ciphertext.clone(),
                            )
                            .tag(Tag::public_key(client.public_key()))
                            .tag(Tag::event(dm.id))
                            .sign_with_keys(&bot)?,
                        );
                        Ok(())
                    })
                    .await?,
                ),
            ],
        };

        // NIP-17: verify the wrap, unwrap it (two NIP-44 decryptions and the seal's signature
        // check), gift wrap the reply (a throwaway key, two NIP-44 encryptions, two signatures).
        let wrap = Scheme::Nip17
            .seal(&client, bot.public_key(), request, None)
            .await?;
        let rumor_id = UnwrappedGift::from_gift_wrap(&bot, &wrap).await?.rumor.id();
        let nip17 = SchemeCost {
            scheme: Scheme::Nip17,
            all_cores: 0.0,
            ops: vec![
                (
                    "verify wrap",
                    per_op_micros(iterations, async || Ok(wrap.verify()?)).await?,
                ),
                (
                    "unwrap",
                    per_op_micros(iterations, async || {
                        black_box(UnwrappedGift::from_gift_wrap(&bot, &wrap).await?);
                        Ok(())
                    })
                    .await?,
                ),
                (
                    "gift wrap",
                    per_op_micros(iterations, async || {
                        black_box(
                            EventBuilder::private_msg(
                                &bot,
                                client.public_key(),
                                SAMPLE_REPLY,
                                [Tag::event(rumor_id)],
                            )
                            .await?,
                        );
                        Ok(())
                    })
                    .await?,
                ),
            ],
        };
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let all_cores = [Scheme::Nip04, Scheme::Nip17].map(|scheme| {
            let (request, reply) = match scheme {
                Scheme::Nip04 => (&dm, &reply_ciphertext),
                Scheme::Nip17 => (&wrap, &reply_ciphertext),
            };
            all_cores_ceiling(cores, iterations, scheme, &bot, &client, request, reply)
        });
        let [nip04_all, nip17_all] = all_cores;
        Ok(Self {
            nip04: SchemeCost {
                all_cores: nip04_all?,
                ..nip04
            },
            nip17: SchemeCost {
                all_cores: nip17_all?,
                ..nip17
            },
            cores,
        })
    }

    fn for_scheme(&self, scheme: Scheme) -> &SchemeCost {
        match scheme {
            Scheme::Nip04 => &self.nip04,
            Scheme::Nip17 => &self.nip17,
        }
    }

    fn print(&self, iterations: u32) {
        println!("\nBot-side crypto per message, {iterations} iterations per operation");
        println!(
            "  (one core: each operation timed alone; all cores: {} threads at once, each doing \
             a message's whole crypto after another)",
            self.cores
        );
        for cost in [&self.nip04, &self.nip17] {
            let ops: Vec<String> = cost
                .ops
                .iter()
                .map(|(name, us)| format!("{name} {us:.1}"))
                .collect();
            println!(
                "  {}  {} = {:.1} µs per message -> single-core ceiling {:.0} msg/s, {}-core \
                 ceiling {:.0} msg/s ({:.2} x)",
                cost.scheme.name(),
                ops.join(" + "),
                cost.total_micros(),
                cost.single_core_ceiling(),
                self.cores,
                cost.all_cores,
                cost.all_cores / cost.single_core_ceiling()
            );
        }
    }
}

/// Messages per second `threads` threads handle together, each on its own single-threaded
/// runtime doing the bot's whole crypto for `iterations` messages of `scheme` one after
/// another (the ops [`CryptoCost::measure`] times one by one): the ceiling with every core
/// busy, measured rather than assumed to be `threads` x one core's (cores share caches, and
/// a busy machine lends fewer).
fn all_cores_ceiling(
    threads: usize,
    iterations: u32,
    scheme: Scheme,
    bot: &Keys,
    client: &Keys,
    request: &Event,
    reply_ciphertext: &str,
) -> Result<f64> {
    let start = std::sync::Barrier::new(threads);
    let per_thread: Vec<Result<Duration>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                scope.spawn(move || -> Result<Duration> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .context("building a crypto thread's runtime")?;
                    runtime.block_on(async {
                        start.wait();
                        let started = Instant::now();
                        for _ in 0..iterations {
                            one_message(scheme, bot, client, request, reply_ciphertext).await?;
                        }
                        Ok(started.elapsed())
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a crypto thread panicked")))
            })
            .collect()
    });
    let slowest = per_thread
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or_default();
    let messages = threads as f64 * f64::from(iterations);
    Ok(messages / slowest.as_secs_f64().max(f64::MIN_POSITIVE))
}

/// The bot's crypto for one message of `scheme`: check the request, open it, seal the reply.
async fn one_message(
    scheme: Scheme,
    bot: &Keys,
    client: &Keys,
    request: &Event,
    reply_ciphertext: &str,
) -> Result<()> {
    request.verify()?;
    match scheme {
        Scheme::Nip04 => {
            black_box(nip04::decrypt(
                bot.secret_key(),
                &client.public_key(),
                &request.content,
            )?);
            black_box(nip04::encrypt(
                bot.secret_key(),
                &client.public_key(),
                SAMPLE_REPLY,
            )?);
            black_box(
                EventBuilder::new(Kind::EncryptedDirectMessage, reply_ciphertext)
                    .tag(Tag::public_key(client.public_key()))
                    .tag(Tag::event(request.id))
                    .sign_with_keys(bot)?,
            );
        }
        Scheme::Nip17 => {
            let rumor_id = UnwrappedGift::from_gift_wrap(bot, request)
                .await?
                .rumor
                .id();
            black_box(
                EventBuilder::private_msg(
                    bot,
                    client.public_key(),
                    SAMPLE_REPLY,
                    [Tag::event(rumor_id)],
                )
                .await?,
            );
        }
    }
    Ok(())
}
