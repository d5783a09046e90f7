//! What the benchmarks share: an in-process soko, relay clients (nostr-sdk ones and a minimal
//! websocket one), the two DM schemes, and the timing helpers. Every example is a crate of its
//! own, so each includes this module with `#[path = "support/mod.rs"] mod support;`; Cargo
//! takes only `examples/*.rs` and `examples/*/main.rs` for examples, so this directory is not
//! one.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use cdk::nuts::{AuthProof, BlindAuthToken, CurrencyUnit};
use cdk::wallet::WalletBuilder;
use cdk::Amount;
use nostr_sdk::nips::nip98::{HttpData, HttpMethod};
use nostr_sdk::{
    Client, Event, EventBuilder, EventId, Filter, JsonUtil as _, Keys, Kind, PublicKey, RelayUrl,
    Tag, Url,
};
use serde_json::Value;
use soko::config::MintConfig;
use soko::devmint::oidc;
use soko::{Config, Daemon};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long a client may take to connect and subscribe before the run is abandoned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the in-process soko may take to start (it also starts its dev mint).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean shutdown may take: soko finishes in-flight events and flushes sled.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The in-process relay's per-pubkey write limit (events per minute). The default (120, with
/// a burst of as many) caps what one client may send under its own key in a run (gift wraps
/// are signed by one-time keys and never hit it); raised so that larger runs measure soko
/// rather than the policy.
pub const IN_PROCESS_RATE_LIMIT: u32 = 1_000_000;

/// Measures `crypto` first, on this thread alone and before soko or any client exists, so
/// that nothing competes with it for the core; then runs `run` with the result and the
/// number of cores on a multi-threaded runtime.
pub fn measure_then_run<C, R>(
    crypto: impl Future<Output = Result<C>>,
    run: impl FnOnce(C, usize) -> R,
) -> Result<ExitCode>
where
    R: Future<Output = Result<ExitCode>>,
{
    let crypto = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("building the single-threaded runtime")?
        .block_on(crypto)?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?
        .block_on(run(crypto, cores))
}

/// soko as the test harness runs it: embedded relay and dev mint on free loopback ports, the
/// relay's write limits raised to [`IN_PROCESS_RATE_LIMIT`], data in `dir`. The caps that
/// guard a public soko against floods and stock-holding (write budgets per connection and
/// in all, unpaid orders per buyer and in all, commands per sender) are lifted too: a benchmark's load is the
/// flood they refuse, and it measures the work, not the refusals.
pub fn in_process_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.relay.port = 0;
    config.relay.rate_limit_per_minute = IN_PROCESS_RATE_LIMIT;
    config.relay.connection_write_per_minute = IN_PROCESS_RATE_LIMIT;
    config.relay.write_budget_per_minute = IN_PROCESS_RATE_LIMIT;
    config.market.max_unpaid_per_buyer = u32::MAX;
    config.market.max_unpaid_total = u32::MAX;
    config.market.max_held_percent = 100;
    config.limits.anonymous = u32::MAX;
    config.limits.admin = u32::MAX;
    config.mint = MintConfig::EmbeddedDev { port: 0 };
    config.storage.data_dir = dir.to_path_buf();
    config
}

/// The in-process soko, restartable on the same data dir and ports.
pub struct Soko {
    config: Config,
    daemon: Option<Daemon>,
}

impl Soko {
    /// A soko to run with `config` (not started yet).
    pub fn new(config: Config) -> Self {
        Self {
            config,
            daemon: None,
        }
    }

    /// Starts it, within [`START_TIMEOUT`].
    pub async fn start(&mut self) -> Result<()> {
        let daemon = tokio::time::timeout(START_TIMEOUT, Daemon::start(self.config.clone()))
            .await
            .context("soko did not start in time")?
            .context("starting soko")?;
        // Pin the ports the first start picked, so that a restart comes back at the same URLs.
        self.config.relay.port = port_of(relay_url_of(&daemon)?.as_str())?;
        if let MintConfig::EmbeddedDev { port } = &mut self.config.mint {
            *port = port_of(daemon.mint_url())?;
        }
        self.daemon = Some(daemon);
        Ok(())
    }

    /// Shuts it down cleanly, within [`SHUTDOWN_TIMEOUT`]; nothing if it is not running.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(daemon) = self.daemon.take() {
            tokio::time::timeout(SHUTDOWN_TIMEOUT, daemon.shutdown())
                .await
                .context("soko did not shut down in time")?
                .context("shutting soko down")?;
        }
        Ok(())
    }

    /// Its config, with the ports pinned once it has started.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The running daemon.
    pub fn daemon(&self) -> Result<&Daemon> {
        self.daemon
            .as_ref()
            .ok_or_else(|| anyhow!("soko is not running"))
    }

    /// The embedded relay's URL.
    pub fn relay_url(&self) -> Result<RelayUrl> {
        relay_url_of(self.daemon()?)
    }
}

fn relay_url_of(daemon: &Daemon) -> Result<RelayUrl> {
    daemon
        .relay_url()
        .cloned()
        .ok_or_else(|| anyhow!("soko started without its embedded relay"))
}

/// The port in `scheme://host:port[/]`.
pub fn port_of(url: &str) -> Result<u16> {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| anyhow!("no port in {url}"))
}

/// A client with `keys` connected to `relay` within [`CONNECT_TIMEOUT`].
pub async fn connect_client(keys: &Keys, relay: &RelayUrl) -> Result<Client> {
    let client = Client::builder().signer(keys.clone()).build();
    client
        .add_relay(relay.clone())
        .await
        .with_context(|| format!("adding {relay}"))?;
    let connected = client.try_connect(CONNECT_TIMEOUT).await;
    if connected.success.is_empty() {
        bail!("could not connect to {relay}: {:?}", connected.failed);
    }
    Ok(client)
}

/// Subscribes to `filter`, failing unless the relay takes it within [`CONNECT_TIMEOUT`].
pub async fn subscribe(client: &Client, filter: Filter) -> Result<()> {
    let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, client.subscribe(filter, None))
        .await
        .context("subscribing timed out")?
        .context("subscribing")?;
    if subscribed.success.is_empty() {
        bail!(
            "the relay refused the subscription: {:?}",
            subscribed.failed
        );
    }
    Ok(())
}

/// Publishes `event`, failing unless the relay accepts it within `timeout`.
pub async fn publish(client: &Client, event: &Event, timeout: Duration) -> Result<()> {
    let output = tokio::time::timeout(timeout, client.send_event(event))
        .await
        .map_err(|_| anyhow!("publishing timed out"))?
        .context("publishing")?;
    if output.success.is_empty() {
        bail!("the relay refused the event: {:?}", output.failed);
    }
    Ok(())
}

/// A benchmark's client: numbered, and closed again when the run ends.
pub trait Participant: Sized + Send + 'static {
    /// Its number, from 0.
    fn index(&self) -> u32;
    /// Disconnects it.
    fn close(self) -> impl Future<Output = ()>;
}

/// Connects `count` participants at once with `connect(index)`, in index order; on any
/// failure the connected ones are closed again and the first error is returned.
pub async fn connect_all<T, F>(count: u32, connect: impl Fn(u32) -> F) -> Result<Vec<T>>
where
    T: Participant,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let mut connecting = tokio::task::JoinSet::new();
    for index in 0..count {
        connecting.spawn(connect(index));
    }
    let mut connected = Vec::new();
    let mut first_error = None;
    while let Some(joined) = connecting.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(participant) => connected.push(participant),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        for participant in connected {
            participant.close().await;
        }
        return Err(e);
    }
    connected.sort_by_key(Participant::index);
    Ok(connected)
}

/// Reads an HTTP head up to its blank line, a byte at a time: the peer sends nothing more
/// before the answer, and nothing past the head may be consumed.
pub async fn read_head(stream: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            bail!("HTTP head too long");
        }
        head.push(stream.read_u8().await?);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The socket address in a `ws://ip:port[/]` URL.
pub fn addr_of(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("not a ws:// URL: {url}"))?;
    rest.trim_end_matches('/')
        .parse()
        .with_context(|| format!("address of {url}"))
}

/// A minimal websocket client: masked text frames out, whole frames in. It neither parses nor
/// verifies what it receives, so a benchmark's clients cost the relay's cores next to nothing.
pub struct Ws {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    mask: u32,
}

impl Ws {
    /// Connects to the relay at `url` (`ws://host:port`; no TLS), resolving its host.
    pub async fn connect_url(url: &str) -> Result<Self> {
        let host_port = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("not a ws:// URL (the minimal client has no TLS): {url}"))?
            .trim_end_matches('/');
        let addr = tokio::net::lookup_host(host_port)
            .await
            .with_context(|| format!("resolving {url}"))?
            .next()
            .ok_or_else(|| anyhow!("{url} resolves to no address"))?;
        Self::connect(addr).await
    }

    /// Connects to `addr` and upgrades the connection (TCP_NODELAY).
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream
            .write_all(
                format!(
                    "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
                     Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let head = read_head(&mut stream).await?;
        if !head.starts_with("HTTP/1.1 101") {
            bail!("no upgrade: {}", head.lines().next().unwrap_or_default());
        }
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(read),
            writer,
            mask: 0x5eed_1234,
        })
    }

    /// Sends `text` as one masked text frame.
    pub async fn send(&mut self, text: &str) -> Result<()> {
        let payload = text.as_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x81);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.mask = self
            .mask
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let mask = self.mask.to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.writer.write_all(&frame).await?;
        Ok(())
    }

    /// The next text message (pings and other control frames are skipped).
    pub async fn recv(&mut self) -> Result<Vec<u8>> {
        let mut message = Vec::new();
        loop {
            let first = self.reader.read_u8().await?;
            let second = self.reader.read_u8().await?;
            let len = match second & 0x7f {
                126 => u64::from(self.reader.read_u16().await?),
                127 => self.reader.read_u64().await?,
                n => u64::from(n),
            };
            let mut payload = vec![0; usize::try_from(len)?];
            self.reader.read_exact(&mut payload).await?;
            match first & 0x0f {
                0x8 => bail!("the relay closed the connection"),
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if first & 0x80 != 0 {
                        return Ok(message);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The subscription id of a lean client's one `REQ`.
pub const DM_SUBSCRIPTION: &str = "dms";

/// A frame as it came off the wire, unparsed, and when it arrived.
pub struct Received {
    /// The frame's text.
    pub frame: Vec<u8>,
    /// When it was read.
    pub at: Instant,
}

/// How one published event went, seen by a lean client inside a timed window.
pub enum Exchange {
    /// The relay took the event and the next event on the subscription came in.
    Answered(Received),
    /// The relay refused the event, with its reason.
    Refused(String),
    /// The deadline passed without the relay's `OK`.
    NoOk,
    /// The deadline passed after the `OK`, without an event on the subscription.
    NoEvent,
}

impl Exchange {
    /// What was missing, for a lost exchange.
    pub fn missing(&self) -> Option<&'static str> {
        match self {
            Exchange::NoOk => Some("no OK from the relay"),
            Exchange::NoEvent => Some("no event on the subscription"),
            Exchange::Answered(_) | Exchange::Refused(_) => None,
        }
    }
}

impl Ws {
    /// Connects to the relay at `url` and subscribes ([`DM_SUBSCRIPTION`]) to kinds 4 and
    /// 1059 tagged to `to`, within [`CONNECT_TIMEOUT`]. It waits for the relay's `EOSE`, so
    /// that nothing sent after it returns can slip past. `limit` 0 asks for new events only:
    /// a `since` would drop gift wraps, whose `created_at` NIP-59 moves into the past.
    pub async fn subscribe_dms(url: &str, to: PublicKey) -> Result<Self> {
        let subscribe = async {
            let mut ws = Self::connect_url(url).await?;
            let filter = serde_json::json!({
                "kinds": [
                    nostr_sdk::Kind::EncryptedDirectMessage.as_u16(),
                    nostr_sdk::Kind::GiftWrap.as_u16()
                ],
                "#p": [to.to_hex()],
                "limit": 0,
            });
            ws.send(&serde_json::json!(["REQ", DM_SUBSCRIPTION, filter]).to_string())
                .await?;
            loop {
                let frame = ws.recv().await?;
                if frame.starts_with(br#"["EOSE""#) {
                    return Ok::<_, anyhow::Error>(ws);
                }
                if frame.starts_with(br#"["CLOSED""#) {
                    bail!(
                        "the relay refused the subscription: {}",
                        String::from_utf8_lossy(&frame)
                    );
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, subscribe)
            .await
            .context("connecting and subscribing timed out")?
    }

    /// Sends `frame`, an `["EVENT",…]` of the event `event_id` (hex), and reads frames until
    /// both the relay's `OK` for it and the next event on the subscription are in, or
    /// `deadline`. Only the frames' first bytes are looked at, and the `OK`s parsed: nothing
    /// is verified or decrypted. Events that come after the first one and before the `OK`
    /// go to `more`.
    pub async fn publish_then_event(
        &mut self,
        frame: &str,
        event_id: &str,
        deadline: tokio::time::Instant,
        more: &mut Vec<Received>,
    ) -> Result<Exchange> {
        self.send(frame).await?;
        let mut accepted = false;
        let mut first = None;
        loop {
            if accepted {
                if let Some(received) = first.take() {
                    return Ok(Exchange::Answered(received));
                }
            }
            let frame = match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) if !accepted => return Ok(Exchange::NoOk),
                Err(_) => return Ok(Exchange::NoEvent),
                Ok(frame) => frame?,
            };
            if frame.starts_with(br#"["EVENT""#) {
                let received = Received {
                    frame,
                    at: Instant::now(),
                };
                if first.is_none() {
                    first = Some(received);
                } else {
                    more.push(received);
                }
            } else if frame.starts_with(br#"["OK""#) {
                let (_, id, ok, message): (String, String, bool, String) =
                    serde_json::from_slice(&frame).context("an OK frame")?;
                if id != event_id {
                    continue;
                }
                if !ok {
                    return Ok(Exchange::Refused(message));
                }
                accepted = true;
            } else if frame.starts_with(br#"["CLOSED""#) {
                bail!(
                    "the relay closed the subscription: {}",
                    String::from_utf8_lossy(&frame)
                );
            }
        }
    }
}

/// The event in an `["EVENT",sub,event]` frame on [`DM_SUBSCRIPTION`], its id and signature
/// verified (what a nostr-sdk client's pool checks before handing an event over).
pub fn verified_event(frame: &[u8]) -> Result<Event> {
    let (_, subscription, event): (String, String, Event) =
        serde_json::from_slice(frame).context("not an EVENT frame")?;
    if subscription != DM_SUBSCRIPTION {
        bail!("on subscription {subscription}");
    }
    event.verify().context("bad id or signature")?;
    Ok(event)
}

/// Locks a mutex whose data stays valid even if a holder panicked (a map of senders).
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the DMs are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Kind 4.
    Nip04,
    /// Kind 1059 gift wrap around a kind 14 message.
    Nip17,
}

impl Scheme {
    /// How the NIPs name it.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Nip04 => "NIP-04",
            Scheme::Nip17 => "NIP-17",
        }
    }

    /// Prefix of request ids, so that a stray reply from the other scheme can never match.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Scheme::Nip04 => "nip04",
            Scheme::Nip17 => "nip17",
        }
    }

    /// A DM from `from` to `to`, optionally referring (`e` tag) to the message it answers,
    /// shaped as soko shapes its replies but built with nostr's own functions, each deriving
    /// its ECDH: the crypto ceilings count that cost, not soko's, which keeps each pair's
    /// (`soko::outbound::conversation`).
    pub async fn seal(
        self,
        from: &Keys,
        to: PublicKey,
        content: &str,
        refers_to: Option<EventId>,
    ) -> Result<Event> {
        let refers: Vec<Tag> = refers_to.map(Tag::event).into_iter().collect();
        Ok(match self {
            Scheme::Nip04 => {
                let ciphertext = nostr_sdk::nips::nip04::encrypt(from.secret_key(), &to, content)?;
                EventBuilder::new(Kind::EncryptedDirectMessage, ciphertext)
                    .tag(Tag::public_key(to))
                    .tags(refers)
                    .sign_with_keys(from)?
            }
            Scheme::Nip17 => EventBuilder::private_msg(from, to, content, refers).await?,
        })
    }
}

/// soko's delivery-code DM to a buyer: `Delivery code for order #N (ORDER ID): CODE` on its
/// first line (kinds/orders.md).
pub struct DeliveryCode {
    /// The buyer's order id.
    pub order_id: String,
    /// The order's number at the merchant.
    pub number: u64,
    /// The 8 digits.
    pub code: String,
}

impl DeliveryCode {
    /// The code in `text`, if `text` is a delivery-code DM.
    pub fn read(text: &str) -> Option<Self> {
        let line = text.lines().next()?;
        let rest = line.strip_prefix("Delivery code for order #")?;
        let (number, rest) = rest.split_once(" (")?;
        let (order_id, code) = rest.rsplit_once("): ")?;
        Some(Self {
            order_id: order_id.to_owned(),
            number: number.parse().ok()?,
            code: code.trim().to_owned(),
        })
    }
}

/// The `pct` percentile (nearest rank) of sorted durations.
pub fn percentile(sorted: &[Duration], pct: usize) -> Option<Duration> {
    let rank = (sorted.len() * pct).div_ceil(100);
    sorted.get(rank.saturating_sub(1)).copied()
}

/// Mean µs of `op` over `iterations` runs, after a short warm-up (lazy contexts, caches).
pub async fn per_op_micros(
    iterations: u32,
    mut op: impl AsyncFnMut() -> Result<()>,
) -> Result<f64> {
    for _ in 0..(iterations / 10).max(1) {
        op().await?;
    }
    let started = Instant::now();
    for _ in 0..iterations {
        op().await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations))
}

/// Logs `keys` in at the dev issuer's `token_url` with a signed NIP-98 event: the clear-auth
/// token (CAT).
pub async fn login(token_url: &str, keys: &Keys) -> Result<String> {
    let url = Url::parse(token_url)?;
    let event =
        EventBuilder::http_auth(HttpData::new(url, HttpMethod::POST)).sign_with_keys(keys)?;
    let authorization = format!(
        "Nostr {}",
        base64::engine::general_purpose::STANDARD.encode(event.as_json())
    );
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
        .context("the token endpoint")?;
    let status = response.status();
    let text = response
        .text()
        .await
        .context("the token endpoint's answer")?;
    if !status.is_success() {
        bail!("login refused ({status}): {text}");
    }
    let json: Value = serde_json::from_str(&text).context("the token endpoint's answer")?;
    json["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no access token in {text}"))
}

/// `n` BATs at `mint_url` with the clear-auth token `cat`, through cdk's wallet. The wallet
/// keeps its proofs in a temporary sled of its own, gone with it.
pub async fn mint_bats(mint_url: &str, cat: &str, n: u64) -> Result<Vec<BlindAuthToken>> {
    let db = soko::store::Store::from_db(
        sled::Config::new()
            .temporary(true)
            .open()
            .context("a temporary sled for the minting wallet")?,
    );
    let key = soko::vault::RecordKey::new([7; 32])?;
    let localstore = soko::wallet::SledWalletDatabase::open(&db, "bats", key)?;
    let wallet = WalletBuilder::new()
        .mint_url(mint_url.parse()?)
        .unit(CurrencyUnit::Sat)
        .localstore(Arc::new(localstore))
        .seed(fresh_seed())
        .set_auth_cat(cat.to_owned())?
        .build()?;
    // Learns the mint's protected endpoints and its OIDC discovery URL.
    wallet.fetch_mint_info().await?;
    let proofs = wallet.mint_blind_auth(Amount::from(n)).await?;
    proofs
        .into_iter()
        .map(|proof| {
            AuthProof::try_from(proof)
                .map(BlindAuthToken::new)
                .map_err(|e| anyhow!("not an auth proof: {e}"))
        })
        .collect()
}

/// A seed of its own for each throwaway wallet: wallets sharing one derive the same NUT-13
/// secrets, and the mint refuses the second.
pub fn fresh_seed() -> [u8; 64] {
    let mut seed = [0u8; 64];
    for chunk in seed.chunks_mut(32) {
        chunk.copy_from_slice(&Keys::generate().secret_key().to_secret_bytes());
    }
    seed
}

/// A signed registration event making `trader` a registered trader of the soko run by
/// `config` (bot key `bot`), with a fresh operator invite: what a user sends as `register`.
pub async fn trader_registration(
    config: &soko::Config,
    bot: PublicKey,
    trader: &Keys,
) -> Result<Event> {
    let created = soko::operator::call(
        config,
        "invite_create",
        serde_json::json!({"role": "trader"}),
    )
    .await
    .context("operator: invite_create")?;
    let code = created
        .result
        .as_ref()
        .and_then(|r| r["code"].as_str())
        .ok_or_else(|| anyhow!("no invite code: {created:?}"))?
        .to_owned();
    Ok(EventBuilder::new(
        nostr_sdk::Kind::Custom(soko::proto::agents::REGISTRATION_KIND),
        "",
    )
    .tags([
        nostr_sdk::Tag::parse(["invite", code.as_str()])?,
        nostr_sdk::Tag::parse(["role", "trader"])?,
        nostr_sdk::Tag::public_key(bot),
    ])
    .sign_with_keys(trader)?)
}
