//! Benchmark of soko's embedded relay against a bare nostr-relay-builder relay.
//!
//! The same N signed kind-4 events are published from M websocket connections to a bare
//! nostr-relay-builder relay (its memory database, no write policy) and to the embedded
//! relay of an in-process soko started as `soko run` configures it (sled-backed store, each
//! event journaled before its `OK`, write policy, frame guard; only the write budgets are lifted, as in
//! every benchmark). Each connection sends its share one event at a time, waiting for the
//! `OK`, as a client does. The events go in two halves, bare then soko, then soko then bare,
//! so that warm-up and drift of a shared machine weigh on both alike. Then one connection
//! asks each relay for 10,000 stored events in one `REQ`, several times, alternating relays.
//!
//! Both relays are served the same way (TCP_NODELAY, a plain HTTP upgrade) and the clients
//! are minimal websocket clients that neither parse nor verify what they receive, so the
//! figures are the relays' work. Everything shares this machine's cores.
//!
//! ```sh
//! cargo run --release --example bench_relay -- [--events N] [--connections M]
//! ```
//!
//! The exit status is non-zero when either relay refused or lost an event, or a `REQ`
//! returned fewer events than asked.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::prelude::*;
use clap::Parser;
use nostr_database::{MemoryDatabase, MemoryDatabaseOptions};
use nostr_relay_builder::builder::RateLimit;
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use nostr_sdk::hashes::sha1::Hash as Sha1;
use nostr_sdk::hashes::{Hash, HashEngine};
use nostr_sdk::{EventBuilder, JsonUtil as _, Keys, Kind, Tag};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[path = "support/mod.rs"]
#[allow(dead_code)] // each example uses its own part of it
mod support;

use support::*;

/// How long one `OK` or one whole `REQ` may take before the run is abandoned.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(about = "Benchmark soko's embedded relay against a bare nostr-relay-builder relay")]
struct Args {
    /// Events published to each relay (at least --req-events).
    #[arg(long, default_value_t = 16_000)]
    events: u32,

    /// Websocket connections publishing at once; the events are split between them.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,

    /// Events one REQ asks for (its `limit`).
    #[arg(long, default_value_t = 10_000)]
    req_events: u32,

    /// REQs per relay; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    reqs: u32,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if args.events < args.req_events {
        bail!("--events must be at least --req-events");
    }
    support::measure_then_run(async { Ok(()) }, |(), cores| run(args, cores))
}

async fn run(args: Args, cores: usize) -> Result<ExitCode> {
    let events = sign_events(&args).await?;
    let bytes: usize = events.iter().flatten().map(String::len).sum();

    let bare = Bare::start().await?;
    let dir = tempfile::tempdir().context("creating a temp data dir")?;
    let mut soko = Soko::new(in_process_config(dir.path()));
    soko.start().await?;
    let soko_addr = addr_of(soko.relay_url()?.as_str())?;

    println!("soko relay benchmark");
    println!(
        "  relays      bare nostr-relay-builder {} (memory database, no policy) and soko's \
         embedded relay {} (sled, write policy; write budgets lifted)",
        bare.addr, soko_addr
    );
    println!(
        "  load        {} kind-4 events ({} bytes of JSON on average) from {} connections, \
         one at a time per connection; REQ of {} events x {} per relay",
        args.events,
        bytes / args.events.max(1) as usize,
        args.connections,
        args.req_events,
        args.reqs
    );
    println!("  cores       {cores}, shared by both relays, soko's daemon and all clients");

    let outcome = async {
        // Every connection's share cut in two: both halves use all M connections.
        let (first, second): (Vec<Vec<String>>, Vec<Vec<String>>) = events
            .iter()
            .map(|share| {
                let (a, b) = share.split_at(share.len() / 2);
                (a.to_vec(), b.to_vec())
            })
            .unzip();
        let mut bare_publish = publish(bare.addr, &first).await?;
        let mut soko_publish = publish(soko_addr, &first).await?;
        soko_publish.add(publish(soko_addr, &second).await?);
        bare_publish.add(publish(bare.addr, &second).await?);
        let mut bare_reqs = Vec::new();
        let mut soko_reqs = Vec::new();
        for _ in 0..args.reqs {
            bare_reqs.push(req(bare.addr, args.req_events).await?);
            soko_reqs.push(req(soko_addr, args.req_events).await?);
        }
        Ok::<_, anyhow::Error>((bare_publish, soko_publish, bare_reqs, soko_reqs))
    }
    .await;
    soko.stop().await?;
    bare.relay.shutdown();
    dir.close().context("removing the temp data dir")?;
    let (bare_publish, soko_publish, bare_reqs, soko_reqs) = outcome?;

    println!(
        "\npublish — {} events, {} connections, in two halves (bare, soko, soko, bare)",
        args.events, args.connections
    );
    bare_publish.print("bare");
    soko_publish.print("soko");
    let ratio = soko_publish.rate() / bare_publish.rate();
    println!(
        "  vs bare     {:.1} / {:.1} events/s = {ratio:.3}",
        soko_publish.rate(),
        bare_publish.rate()
    );

    println!(
        "\nREQ — {} stored events, median of {}",
        args.req_events, args.reqs
    );
    let bare_req = Req::median(bare_reqs);
    let soko_req = Req::median(soko_reqs);
    bare_req.print("bare");
    soko_req.print("soko");
    println!(
        "  vs bare     {:.0} / {:.0} events/s = {:.3}",
        soko_req.rate(),
        bare_req.rate(),
        soko_req.rate() / bare_req.rate()
    );

    let problems = bare_publish.refused
        + soko_publish.refused
        + u32::from(bare_req.received < args.req_events)
        + u32::from(soko_req.received < args.req_events);
    if problems > 0 {
        println!("\nFAILED: events refused, or a REQ returned fewer events than asked");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `["EVENT",…]` messages, one list per connection: each connection its own key, each
/// event addressed to a recipient of its own (as DMs are), unique content.
async fn sign_events(args: &Args) -> Result<Vec<Vec<String>>> {
    let mut signing = JoinSet::new();
    for connection in 0..args.connections {
        let count =
            args.events / args.connections + u32::from(connection < args.events % args.connections);
        signing.spawn_blocking(move || {
            let keys = Keys::generate();
            (0..count)
                .map(|n| {
                    // About the size of a short NIP-04 DM: base64 ciphertext and its IV.
                    let content = format!(
                        "{}?iv={}",
                        BASE64_STANDARD.encode(format!("{connection:04}-{n:06}-").repeat(12)),
                        BASE64_STANDARD.encode([7u8; 16])
                    );
                    let event = EventBuilder::new(Kind::EncryptedDirectMessage, content)
                        .tag(Tag::public_key(Keys::generate().public_key()))
                        .sign_with_keys(&keys)?;
                    Ok(format!(r#"["EVENT",{}]"#, event.as_json()))
                })
                .collect::<Result<Vec<_>>>()
        });
    }
    let mut all = Vec::new();
    while let Some(signed) = signing.join_next().await {
        all.push(signed??);
    }
    Ok(all)
}

/// The bare relay, served like soko's: TCP_NODELAY and a plain upgrade, then the relay.
struct Bare {
    relay: LocalRelay,
    addr: SocketAddr,
}

impl Bare {
    async fn start() -> Result<Self> {
        let database = MemoryDatabase::with_opts(MemoryDatabaseOptions {
            events: true,
            max_events: None,
        });
        let relay = LocalRelay::new(RelayBuilder::default().database(database).rate_limit(
            RateLimit {
                max_reqs: 500,
                notes_per_minute: u32::MAX,
            },
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let serving = relay.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let relay = serving.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = upgrade(stream).await {
                        let _ = relay.take_connection(stream, peer).await;
                    }
                });
            }
        });
        Ok(Self { relay, addr })
    }
}

/// The server's half of the websocket handshake.
async fn upgrade(mut stream: TcpStream) -> Result<TcpStream> {
    stream.set_nodelay(true)?;
    let head = read_head(&mut stream).await?;
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .ok_or_else(|| anyhow!("no Sec-WebSocket-Key"))?;
    let mut engine = Sha1::engine();
    engine.input(key.as_bytes());
    engine.input(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = BASE64_STANDARD.encode(Sha1::from_engine(engine));
    stream
        .write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    Ok(stream)
}

/// One relay's publish run.
struct Publish {
    accepted: u32,
    refused: u32,
    wall: Duration,
    first_refusal: Option<String>,
}

impl Publish {
    fn add(&mut self, other: Self) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.wall += other.wall;
        self.first_refusal = self.first_refusal.take().or(other.first_refusal);
    }

    fn rate(&self) -> f64 {
        f64::from(self.accepted) / self.wall.as_secs_f64()
    }

    fn print(&self, name: &str) {
        println!(
            "  {name:<10}  {} accepted, {} refused in {:.3} s wall = {:.1} events/s",
            self.accepted,
            self.refused,
            self.wall.as_secs_f64(),
            self.rate()
        );
        if let Some(reason) = &self.first_refusal {
            println!("    first refusal: {reason}");
        }
    }
}

/// Connects every connection (not timed), then publishes all shares at once.
async fn publish(addr: SocketAddr, shares: &[Vec<String>]) -> Result<Publish> {
    let mut connections = Vec::new();
    for _ in shares {
        connections.push(Ws::connect(addr).await?);
    }
    let shares: Vec<Arc<Vec<String>>> = shares.iter().cloned().map(Arc::new).collect();
    let started = Instant::now();
    let mut sending = JoinSet::new();
    for (mut ws, share) in connections.into_iter().zip(shares) {
        sending.spawn(async move {
            let (mut accepted, mut refused, mut first_refusal) = (0, 0, None);
            for message in share.iter() {
                ws.send(message).await?;
                let reply = tokio::time::timeout(WAIT, ws.recv())
                    .await
                    .map_err(|_| anyhow!("no OK within {WAIT:?}"))??;
                let reply: serde_json::Value = serde_json::from_slice(&reply)?;
                match (reply.get(0).and_then(|v| v.as_str()), reply.get(2)) {
                    (Some("OK"), Some(serde_json::Value::Bool(true))) => accepted += 1,
                    _ => {
                        refused += 1;
                        first_refusal.get_or_insert_with(|| reply.to_string());
                    }
                }
            }
            Ok::<_, anyhow::Error>((accepted, refused, first_refusal))
        });
    }
    let mut run = Publish {
        accepted: 0,
        refused: 0,
        wall: Duration::ZERO,
        first_refusal: None,
    };
    while let Some(joined) = sending.join_next().await {
        let (accepted, refused, first_refusal) = joined??;
        run.accepted += accepted;
        run.refused += refused;
        if run.first_refusal.is_none() {
            run.first_refusal = first_refusal;
        }
    }
    run.wall = started.elapsed();
    Ok(run)
}

/// One REQ: time from sending it to its `EOSE`.
struct Req {
    received: u32,
    bytes: usize,
    wall: Duration,
}

impl Req {
    fn rate(&self) -> f64 {
        f64::from(self.received) / self.wall.as_secs_f64()
    }

    fn median(mut runs: Vec<Self>) -> Self {
        runs.sort_by_key(|r| r.wall);
        let middle = runs.len() / 2;
        runs.swap_remove(middle)
    }

    fn print(&self, name: &str) {
        println!(
            "  {name:<10}  {} events ({} KiB) in {:.1} ms = {:.0} events/s",
            self.received,
            self.bytes >> 10,
            self.wall.as_secs_f64() * 1e3,
            self.rate()
        );
    }
}

async fn req(addr: SocketAddr, limit: u32) -> Result<Req> {
    let mut ws = Ws::connect(addr).await?;
    let started = Instant::now();
    ws.send(&format!(
        r#"["REQ","bench",{{"kinds":[4],"limit":{limit}}}]"#
    ))
    .await?;
    let (mut received, mut bytes) = (0, 0);
    let collect = async {
        loop {
            let message = ws.recv().await?;
            if message.starts_with(br#"["EVENT""#) {
                received += 1;
                bytes += message.len();
            } else if message.starts_with(br#"["EOSE""#) {
                return Ok::<_, anyhow::Error>(());
            } else {
                bail!("unexpected: {}", String::from_utf8_lossy(&message));
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .map_err(|_| anyhow!("no EOSE within {WAIT:?}"))??;
    let wall = started.elapsed();
    ws.send(r#"["CLOSE","bench"]"#).await?;
    Ok(Req {
        received,
        bytes,
        wall,
    })
}
