//! The shared test harness: soko in-process on free loopback ports with a temp data dir, and
//! real nostr-sdk clients as its users. Later domains reuse it.
#![allow(dead_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_relay_builder::{LocalRelay, RelayBuilder};
use nostr_sdk::prelude::*;
use serde_json::json;
use soko::config::MintConfig;
use soko::{Config, Daemon};

pub mod auth;
pub mod binary;
pub mod books;
pub mod bridge;
pub mod exchange;
pub mod gateway;
pub mod sessions;
pub mod shop;
pub mod shopstr;

// Not every test binary uses every fixture.
#[allow(unused_imports)]
pub use books::*;
#[allow(unused_imports)]
pub use shop::*;

/// How long a test waits for a reply that should come.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test listens to be sure that nothing (more) comes.
pub const QUIET_PERIOD: Duration = Duration::from_secs(2);

/// A soko daemon on a temp data dir.
pub struct TestSoko {
    pub daemon: Option<Daemon>,
    pub config: Config,
    /// The services' clock: [`TestSoko::advance`] moves it past a window.
    pub clock: soko::clock::Clock,
    _dir: Option<tempfile::TempDir>,
}

impl TestSoko {
    /// Starts soko with the embedded relay and dev mint on free ports.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts soko after `adjust` edits the test config.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let mut soko = Self {
            daemon: None,
            config,
            clock: soko::clock::Clock::system(),
            _dir: Some(dir),
        };
        soko.boot().await;
        soko
    }

    /// Starts soko on the external mint at `url` (one that outlives soko, or a proxy in
    /// front of one), after `adjust` edits the test config.
    pub async fn start_on_mint(url: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(|c| {
            c.mint = MintConfig::External {
                url: url.to_owned(),
                requests_per_minute: 600,
            };
            adjust(c);
        })
        .await
    }

    async fn boot(&mut self) {
        let daemon = Daemon::start_with_clock(self.config.clone(), self.clock.clone())
            .await
            .expect("soko starts");
        // Pin the ports the first start picked, so a restart comes back at the same URLs.
        if let Some(url) = daemon.relay_url() {
            self.config.relay.port = port_of(url.as_str());
        }
        if let MintConfig::EmbeddedDev { port } = &mut self.config.mint {
            *port = port_of(daemon.mint_url());
        }
        if let (Some(auth), Some(issuer)) = (
            &mut self.config.dev_mint_auth,
            daemon.dev_mint().and_then(|m| m.issuer()),
        ) {
            auth.issuer_port = port_of(issuer.issuer());
        }
        self.daemon = Some(daemon);
    }

    /// Moves soko's clock `secs` ahead: a payment window, a delivery window or a PIN
    /// lockout passes without waiting for it. It stays moved across restarts.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(secs);
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("soko is running")
    }

    /// The embedded relay's URL.
    pub fn relay_url(&self) -> RelayUrl {
        self.daemon().relay_url().expect("embedded relay").clone()
    }

    /// The bot's public key.
    pub fn bot(&self) -> PublicKey {
        self.daemon().bot_public_key()
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.config.storage.data_dir.clone()
    }

    /// Writes a config file `name` in the data dir that points soko's CLI at this soko.
    pub fn cli_config(&self, name: &str) -> PathBuf {
        let config_file = self.data_dir().join(name);
        std::fs::write(
            &config_file,
            format!(
                "[relay]\nport = {}\n[storage]\ndata_dir = {:?}\n",
                self.config.relay.port,
                self.data_dir()
            ),
        )
        .expect("CLI config written");
        config_file
    }

    /// Clean shutdown.
    pub async fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown().await.expect("clean shutdown");
        }
    }

    /// Clean shutdown, then start again on the same data dir and ports.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }
}

/// Runs `soko ARGS --config CONFIG_FILE` off the async threads; its output.
pub fn run_cli(
    config_file: &Path,
    args: &[&str],
) -> impl std::future::Future<Output = std::process::Output> {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_soko"));
    command.args(args).arg("--config").arg(config_file);
    async move {
        tokio::task::spawn_blocking(move || command.output().expect("soko runs"))
            .await
            .expect("the CLI's thread")
    }
}

/// The port in `scheme://host:port[/]`.
fn port_of(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("url with a port")
}

/// Test config: everything on loopback with free ports, data in `dir`.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.relay.port = 0;
    config.mint = MintConfig::EmbeddedDev { port: 0 };
    config.storage.data_dir = dir.to_path_buf();
    // The LNURL payees of the tests live on loopback, over http.
    config.lnurl.allow_loopback_http = true;
    config
}

/// A second, plain relay (in memory) on a free loopback port.
pub async fn extra_relay() -> (LocalRelay, RelayUrl) {
    let relay = LocalRelay::new(RelayBuilder::default());
    relay.run().await.expect("extra relay runs");
    let url = relay.url().await;
    (relay, url)
}

/// A client signing with `signer`, connected to `relays` (it waits up to 5 s for them).
pub async fn connect_client(signer: impl IntoNostrSigner, relays: &[RelayUrl]) -> Client {
    let client = Client::builder().signer(signer).build();
    for url in relays {
        client.add_relay(url.clone()).await.expect("add relay");
    }
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    client
}

/// Subscribes `client` to the gift wraps addressed to its signer's key; returns that key and
/// the notifications, opened before the subscription so that none slips past.
pub async fn listen_to_wraps(
    client: &Client,
) -> (
    PublicKey,
    tokio::sync::broadcast::Receiver<RelayPoolNotification>,
) {
    let me = client
        .signer()
        .await
        .expect("a signer")
        .get_public_key()
        .await
        .expect("the signer's key");
    let inbox = client.notifications();
    client
        .subscribe(Filter::new().kind(Kind::GiftWrap).pubkey(me), None)
        .await
        .expect("subscribe");
    (me, inbox)
}

/// A decrypted DM a user received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The outer event's id (the kind 4, or the gift wrap).
    pub event_id: EventId,
    pub from: PublicKey,
    pub nip17: bool,
    pub content: String,
    /// The message's kind (NIP-04's, or the rumor's: NIP-17's, or [`GAMMA_ORDER`]).
    pub kind: Kind,
    /// The message's tags (the rumor's for NIP-17).
    pub tags: Vec<Vec<String>>,
}

impl Received {
    /// The content as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.content).expect("reply is JSON")
    }

    /// The first value of tag `name`.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.first().map(String::as_str) == Some(name))
            .and_then(|t| t.get(1))
            .map(String::as_str)
    }
}

/// A Nostr user with local keys and a real client.
pub struct User {
    pub keys: Keys,
    pub client: Client,
    inbox: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
}

impl User {
    /// Connects a new user to `relays`, listening for DMs addressed to it.
    pub async fn connect(relays: &[RelayUrl]) -> Self {
        Self::with_keys(Keys::generate(), relays).await
    }

    /// Same with given keys.
    pub async fn with_keys(keys: Keys, relays: &[RelayUrl]) -> Self {
        let client = connect_client(keys.clone(), relays).await;
        let inbox = client.notifications();
        let me = keys.public_key();
        client
            .subscribe(
                Filter::new()
                    .kinds([Kind::EncryptedDirectMessage, Kind::GiftWrap])
                    .pubkey(me),
                None,
            )
            .await
            .expect("subscribe");
        Self {
            keys,
            client,
            inbox,
        }
    }

    pub fn pubkey(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// A signed NIP-04 DM (not sent).
    pub fn nip04(&self, to: PublicKey, content: &str) -> Event {
        let ciphertext = nip04::encrypt(self.keys.secret_key(), &to, content).expect("encrypt");
        EventBuilder::new(Kind::EncryptedDirectMessage, ciphertext)
            .tag(Tag::public_key(to))
            .sign_with_keys(&self.keys)
            .expect("sign")
    }

    /// A NIP-17 gift-wrapped DM (not sent).
    pub async fn nip17(&self, to: PublicKey, content: &str) -> Event {
        EventBuilder::private_msg(&self.keys, to, content, [])
            .await
            .expect("gift wrap")
    }

    /// Publishes an event, returning the relays' verdict.
    pub async fn publish(&self, event: &Event) -> Output<EventId> {
        self.client.send_event(event).await.expect("send")
    }

    /// Sends a NIP-04 DM and returns the event.
    pub async fn send_nip04(&self, to: PublicKey, content: &str) -> Event {
        let event = self.nip04(to, content);
        let out = self.publish(&event).await;
        assert!(!out.success.is_empty(), "DM accepted: {:?}", out.failed);
        event
    }

    /// Sends a NIP-17 DM and returns the wrap.
    pub async fn send_nip17(&self, to: PublicKey, content: &str) -> Event {
        let event = self.nip17(to, content).await;
        let out = self.publish(&event).await;
        assert!(!out.success.is_empty(), "DM accepted: {:?}", out.failed);
        event
    }

    /// The next DM received within `timeout`, decrypted.
    pub async fn next_dm(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notification = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .ok()?
                .ok()?;
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            if let Some(received) = self.open(&event).await {
                return Some(received);
            }
        }
    }

    /// Every DM received within `window`.
    pub async fn all_dms(&mut self, window: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + window;
        let mut all = Vec::new();
        while let Some(dm) = self.next_dm(deadline - tokio::time::Instant::now()).await {
            all.push(dm);
        }
        all
    }

    /// Sends `content` as a NIP-04 DM and waits for the reply.
    pub async fn ask_nip04(&mut self, to: PublicKey, content: &str) -> Received {
        self.send_nip04(to, content).await;
        self.next_dm(REPLY_TIMEOUT).await.expect("a reply")
    }

    /// Sends `content` as a NIP-17 DM and waits for the reply.
    pub async fn ask_nip17(&mut self, to: PublicKey, content: &str) -> Received {
        self.send_nip17(to, content).await;
        self.next_dm(REPLY_TIMEOUT).await.expect("a reply")
    }

    async fn open(&self, event: &Event) -> Option<Received> {
        match event.kind {
            Kind::EncryptedDirectMessage => {
                let content =
                    nip04::decrypt(self.keys.secret_key(), &event.pubkey, &event.content).ok()?;
                Some(Received {
                    event_id: event.id,
                    from: event.pubkey,
                    nip17: false,
                    content,
                    kind: event.kind,
                    tags: event.tags.iter().map(|t| t.as_slice().to_vec()).collect(),
                })
            }
            Kind::GiftWrap => {
                let gift = UnwrappedGift::from_gift_wrap(&self.keys, event)
                    .await
                    .ok()?;
                Some(Received {
                    event_id: event.id,
                    from: gift.sender,
                    nip17: true,
                    kind: gift.rumor.kind,
                    tags: gift
                        .rumor
                        .tags
                        .iter()
                        .map(|t| t.as_slice().to_vec())
                        .collect(),
                    content: gift.rumor.content,
                })
            }
            _ => None,
        }
    }
}

/// After the merchant delivered order #1 over USSD (by the gateway or a Nostr bridge): the
/// order is paid out into a balance of `balance`, and the `buyer` is told it shipped.
pub async fn assert_delivered_over_ussd(
    soko: &TestSoko,
    merchant: PublicKey,
    buyer: &mut User,
    balance: soko::money::Sats,
) {
    let escrow = soko.daemon().escrow();
    assert_eq!(
        escrow
            .order(&merchant, 1)
            .expect("order")
            .expect("order #1")
            .state,
        soko::escrow::EscrowState::PaidOut
    );
    assert_eq!(escrow.balance(&merchant).expect("balance"), balance);
    let told = buyer
        .next_dm(REPLY_TIMEOUT)
        .await
        .expect("buyer told")
        .json();
    assert_eq!(told["shipped"], true, "{told}");
}

/// A new client on `relay` asks soko's bot `ping` over NIP-04 and is answered: soko still
/// serves.
pub async fn assert_serves(soko: &TestSoko, relay: RelayUrl) {
    let mut buyer = User::connect(&[relay]).await;
    let reply = buyer.ask_nip04(soko.bot(), r#"{"cmd":"ping"}"#).await;
    assert!(reply.content.contains("\"ok\":true"), "{}", reply.content);
}

/// Gamma's order-processing messages (rust-nostr has no name for the kind).
pub const GAMMA_ORDER: Kind = Kind::Custom(soko::proto::gamma::KIND_ORDER);

/// The events of `kind` by `author` on soko's relay.
pub async fn events_of(soko: &TestSoko, author: PublicKey, kind: Kind) -> Vec<Event> {
    let reader = User::connect(&[soko.relay_url()]).await;
    reader
        .client
        .fetch_events(
            Filter::new().author(author).kind(kind),
            Duration::from_secs(3),
        )
        .await
        .expect("fetch events")
        .into_iter()
        .collect()
}

/// Sends an operator command to `soko` the way `soko merchant …` does.
pub async fn operator(
    soko: &TestSoko,
    cmd: &str,
    args: serde_json::Value,
) -> soko::proto::Response {
    soko::operator::call(&soko.config, cmd, args)
        .await
        .expect("soko answers")
}

/// The error code of a refused operator command.
pub fn refusal_code(response: &soko::proto::Response) -> String {
    assert!(!response.ok, "{response:?}");
    serde_json::to_value(response.error.as_ref().expect("an error").code)
        .expect("a code")
        .as_str()
        .expect("a string")
        .to_owned()
}

/// Ecash the mint has issued and not yet redeemed: what all wallets together hold.
pub async fn outstanding_at(mint: &cdk::Mint) -> u64 {
    let sum = |amounts: std::collections::HashMap<_, cdk::Amount>| -> u64 {
        amounts.values().map(|a| u64::from(*a)).sum()
    };
    let issued = sum(mint.total_issued().await.expect("issued"));
    let redeemed = sum(mint.total_redeemed().await.expect("redeemed"));
    issued - redeemed
}

/// A dev mint of its own (outside any soko), on a free port, whose invoices settle
/// `settle_after_secs` after they are issued. Keep the dir alive as long as the mint.
pub async fn external_dev_mint(
    settle_after_secs: u64,
) -> (soko::devmint::DevMint, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mint = soko::devmint::DevMint::start_settling_after(dir.path(), 0, settle_after_secs)
        .await
        .expect("external dev mint starts");
    (mint, dir)
}

/// A free loopback port: bound, then released, for a server that must come back on the same
/// port (an LNURL service down at first, a restarted binary).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The LNURL-pay URL [`lnurl_service_on`] serves on `port`.
pub fn lnurlp_url_on(port: u16) -> String {
    format!("http://127.0.0.1:{port}/.well-known/lnurlp/mama")
}

/// A loopback LNURL-pay service for "mama" on `port` (0 picks one): its invoices are mint
/// quotes of mama's own wallet (kept in `store_dir`) at `mint_url`, so what soko pays out
/// shows up as ecash mama can mint. Returns the LNURL-pay URL, mama's wallet and the server
/// task (abort it to take the service down).
pub async fn lnurl_service_on(
    port: u16,
    mint_url: &str,
    store_dir: &Path,
) -> (String, soko::wallet::Wallet, tokio::task::JoinHandle<()>) {
    lnurl_service_slow(port, mint_url, store_dir, Duration::ZERO).await
}

/// [`lnurl_service_on`] whose invoice callback answers only after `delay`: a payee that
/// makes soko slow.
pub async fn lnurl_service_slow(
    port: u16,
    mint_url: &str,
    store_dir: &Path,
    delay: Duration,
) -> (String, soko::wallet::Wallet, tokio::task::JoinHandle<()>) {
    use axum::extract::{Query, State};
    use axum::routing::get;
    let store = soko::store::Store::open(store_dir).expect("mama's store");
    let wallet = soko::wallet::open(&store, "mama", mint_url, &[5; 64]).expect("mama's wallet");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("LNURL service listens");
    let port = listener.local_addr().expect("bound").port();
    let base = format!("http://127.0.0.1:{port}");
    let pay_request = serde_json::json!({
        "callback": format!("{base}/lnurlp/mama/callback"),
        "minSendable": 1_000, "maxSendable": 100_000_000, "tag": "payRequest",
        "metadata": "[[\"text/plain\",\"Mama Duka payouts\"]]",
    });
    let app = axum::Router::new()
        .route(
            "/.well-known/lnurlp/mama",
            get(move || {
                let body = pay_request.clone();
                async move { axum::Json(body) }
            }),
        )
        .route(
            "/lnurlp/mama/callback",
            get(
                move |State(wallet): State<soko::wallet::Wallet>,
                      Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    tokio::time::sleep(delay).await;
                    let msat: u64 = q
                        .get("amount")
                        .and_then(|a| a.parse().ok())
                        .expect("amount in msat");
                    let quote = wallet
                        .mint_quote(
                            cdk::nuts::PaymentMethod::BOLT11,
                            Some((msat / 1000).into()),
                            None,
                            None,
                        )
                        .await
                        .expect("mama's invoice");
                    axum::Json(serde_json::json!({"pr": quote.request, "routes": []}))
                },
            ),
        )
        .with_state(wallet.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("LNURL service runs");
    });
    (lnurlp_url_on(port), wallet, server)
}

/// Mama Duka's stall (sat, zone "nairobi" at 100) and 3 mangoes at 500 sat (+10 shipping).
pub async fn put_listings(soko: &TestSoko, npub: &str) {
    Mangoes::default().list(&soko.config, npub).await;
}

/// A NIP-15 type-0 order for `quantity` mangoes, with the buyer's name, address and phone.
pub fn mango_order(id: &str, quantity: i64) -> String {
    json!({"id": id, "type": 0, "name": "Amina", "address": "Moi Avenue 12",
           "message": "Leave it at the gate",
           "contact": {"nostr": "npub1x", "phone": "+254722000333"},
           "items": [{"product_id": "mango", "quantity": quantity}],
           "shipping_id": "nairobi"})
    .to_string()
}

/// A buyer orders 2 mangoes (1120 sat) over NIP-04 and the dev mint settles the invoice;
/// returns the buyer and the 8-digit delivery code.
pub async fn paid_order(soko: &TestSoko, merchant: PublicKey, id: &str) -> (User, String) {
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let request = buyer.ask_nip04(merchant, &mango_order(id, 2)).await.json();
    assert_eq!(request["type"], 1, "{request}");
    let paid = buyer.next_dm(REPLY_TIMEOUT).await.expect("paid").json();
    assert_eq!(paid["paid"], true, "{paid}");
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the code DM");
    let code = code_in(&dm).expect("8 digits");
    (buyer, code)
}

/// Mints the payee's paid invoice of `amount` sat, if there is one; returns its balance.
/// Only that invoice: soko asks for an invoice of the whole balance first and, when the fee
/// reserve does not fit, for a smaller one, and the dev mint's fake Lightning settles every
/// invoice by itself after a second, the unused one too.
pub async fn mint_paid_invoice(payee: &soko::wallet::Wallet, amount: u64) -> u64 {
    for quote in payee.check_all_mint_quotes().await.expect("payee wallet") {
        if quote.state == cdk::nuts::MintQuoteState::Paid && quote.amount == Some(amount.into()) {
            payee
                .mint(&quote.id, cdk::amount::SplitTarget::default(), None)
                .await
                .expect("payee wallet");
        }
    }
    u64::from(payee.total_balance().await.expect("payee wallet"))
}

/// Log lines, captured process-wide (give it to `soko::logging::init_with_writer`).
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Waits until `check` holds (polled every 100 ms, for at most 20 s).
pub async fn eventually<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the condition never held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
