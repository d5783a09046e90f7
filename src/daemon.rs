//! Wires the parts together, lowest layer first: store, keys, embedded relay, dev mint,
//! wallet; the outbound path; the domains (agents, escrow with its paid-order notices, USSD);
//! the commands and the merchant inbox; and last the bot that feeds them what the relays
//! send.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::{PublicKey, RelayUrl, ToBech32};
use tokio::sync::watch;

use crate::agents::Agents;
use crate::bot::{Bot, BotError, Handler};
use crate::clock::Clock;
use crate::commands;
use crate::config::{Config, MintConfig};
use crate::devmint::{DevMint, DevMintError};
use crate::escrow::{EscrowService, Rules};
use crate::exchange::{Exchange, ExchangeParts};
use crate::identity::{self, IdentityError};
use crate::inbox::MerchantInbox;
use crate::market::catalog::Own;
use crate::market::{Catalog, Merchants, Rates};
use crate::metrics::Metrics;
use crate::notices::PaidNotices;
use crate::outbound::{Keyring, Outbox, Publisher};
use crate::ratelimit::{CommandLimits, KeyTiers, Tier, Tiers};
use crate::relay::{EmbeddedRelay, Exempt, RelayError};
use crate::sessions::{
    BatVerifier, ExternalMint, InProcessMint, SessionParts, SessionRules, Sessions,
};
use crate::store::{Store, StoreError};
use crate::ussd::UssdService;
use crate::vault::{Vault, VaultError};
use crate::wallet::{self, Wallet, WalletError};

/// Failures starting or stopping the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data dir could not be created.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Keys.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Embedded relay.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// Dev mint.
    #[error(transparent)]
    DevMint(#[from] DevMintError),
    /// Wallet.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// Bot.
    #[error(transparent)]
    Bot(#[from] BotError),
    /// The vault.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The merchant registry could not be loaded.
    #[error("merchants: {0}")]
    Merchants(String),
    /// The exchange could not be opened.
    #[error("exchange: {0}")]
    Exchange(String),
    /// The client that checks blind auth tokens at the mint could not be made.
    #[error("sessions: {0}")]
    Sessions(String),
    /// Nothing to connect to.
    #[error("no relay: enable [relay] or list [relays] urls")]
    NoRelay,
    /// The embedded dev mint where others can reach soko (see `Config::dev_mint_refusal`).
    #[error("{0}")]
    DevMintExposed(String),
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint {listen}: {source}")]
    Metrics {
        /// The configured address.
        listen: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// soko's registered users (those an invite registered): whom the dev OIDC issuer lets in,
/// and whose keys a dispute may reveal.
pub struct RegisteredUsers(pub crate::agents::Users);

impl crate::devmint::oidc::Registry for RegisteredUsers {
    fn is_registered(&self, key: &PublicKey) -> bool {
        match self.0.get(key) {
            Ok(user) => user.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "dev OIDC issuer: cannot read the users; refusing the login");
                false
            }
        }
    }
}

/// Rate tiers: admin keys first, then a live session of the sender's, else anonymous.
struct SessionTiers {
    keys: KeyTiers,
    sessions: Sessions,
}

impl Tiers for SessionTiers {
    fn tier(&self, sender: &PublicKey, session: Option<&str>) -> Tier {
        match self.keys.tier(sender, session) {
            Tier::Anonymous if session.is_some_and(|id| self.sessions.is_live(sender, id)) => {
                Tier::Session
            }
            tier => tier,
        }
    }
}

/// The exchange holds escrow and bonds in the sessions' wallets.
pub struct SessionPurses(pub Sessions);

fn purse_error(e: crate::sessions::SessionError) -> crate::exchange::PurseError {
    crate::exchange::PurseError(e.to_string())
}

#[async_trait::async_trait]
impl crate::exchange::Purses for SessionPurses {
    async fn invoice(
        &self,
        session: &str,
        amount: crate::money::Sats,
    ) -> Result<crate::exchange::Invoice, crate::exchange::PurseError> {
        let invoice = self.0.invoice(session, amount).await.map_err(purse_error)?;
        Ok(crate::exchange::Invoice {
            quote: invoice.quote,
            bolt11: invoice.bolt11,
            expires_at: invoice.expires_at,
        })
    }

    async fn collect(
        &self,
        session: &str,
        quote: &str,
    ) -> Result<crate::exchange::Collected, crate::exchange::PurseError> {
        use crate::exchange::Collected;
        Ok(
            match self.0.collect(session, quote).await.map_err(purse_error)? {
                crate::sessions::Collected::Minted(sats) => Collected::Minted(sats),
                crate::sessions::Collected::Unpaid => Collected::Unpaid,
                crate::sessions::Collected::Expired => Collected::Expired,
            },
        )
    }

    async fn token(
        &self,
        session: &str,
        amount: crate::money::Sats,
        lock: Option<PublicKey>,
        op: &str,
    ) -> Result<String, crate::exchange::PurseError> {
        self.0
            .token(session, amount, lock, op)
            .await
            .map_err(purse_error)
    }

    async fn receive(&self, session: &str, token: &str) -> Result<(), crate::exchange::PurseError> {
        self.0.receive(session, token).await.map_err(purse_error)
    }

    fn hold(&self, session: &str, what: &str) -> Result<(), crate::exchange::PurseError> {
        self.0.hold(session, what).map_err(purse_error)
    }

    fn release(&self, session: &str, what: &str) -> Result<(), crate::exchange::PurseError> {
        self.0.release(session, what).map_err(purse_error)
    }

    fn key(&self, session: &str) -> Result<Option<PublicKey>, crate::exchange::PurseError> {
        self.0.session_key(session).map_err(purse_error)
    }

    fn set_payout(
        &self,
        session: &str,
        address: Option<&str>,
    ) -> Result<(), crate::exchange::PayoutRefusal> {
        use crate::exchange::PayoutRefusal;
        use crate::sessions::{SessionError, SessionRefusal};
        self.0.set_refund_to(session, address).map_err(|e| match e {
            SessionError::Refused(SessionRefusal::RefundAddress(why)) => {
                PayoutRefusal::Address(why)
            }
            other => PayoutRefusal::Purse(purse_error(other)),
        })
    }
}

impl crate::exchange::Registered for RegisteredUsers {
    fn is_registered(&self, key: &PublicKey) -> bool {
        crate::devmint::oidc::Registry::is_registered(self, key)
    }
}

/// The exchange's figures from config.
fn exchange_rules(config: &Config) -> crate::exchange::ExchangeRules {
    use crate::exchange::amounts::{Fee, Schedule};
    use crate::money::Sats;
    let x = &config.exchange;
    let fee = |[flat, bp]: [u64; 2]| Fee {
        flat: Sats(flat),
        bp: u32::try_from(bp).unwrap_or(10_000),
    };
    crate::exchange::ExchangeRules {
        schedule: Schedule {
            maker_bond: fee(x.maker_bond),
            taker_bond: fee(x.taker_bond),
            platform_fee: fee(x.platform_fee),
            taker_fee: fee(x.taker_fee),
        },
        windows: crate::exchange::Windows {
            pay: x.pay_secs,
            listing: x.listing_secs,
            claim: x.claim_secs,
            receipt: x.receipt_secs,
            confirm: x.confirm_secs,
            issue: x.issue_secs,
        },
        max_fiat: x.max_fiat.clone().into_iter().collect(),
        max_sats: Sats(x.max_sats),
        min_sats: Sats(x.min_sats),
        rates: Rates(config.rates.clone().into_iter().collect()),
        // The dev mint's sats are worthless: its offers must not read as mainnet ones.
        network: match config.mint {
            MintConfig::EmbeddedDev { .. } => "regtest".to_owned(),
            MintConfig::External { .. } => x.network.clone(),
        },
        instance: x.instance.clone(),
        max_open_per_session: x.max_open_per_session,
        alert_bp: x.alert_bp,
        alert_min_offers: x.alert_min_offers,
    }
}

/// A running soko.
#[derive(Debug)]
pub struct Daemon {
    bot_key: PublicKey,
    relay: Option<EmbeddedRelay>,
    dev_mint: Option<DevMint>,
    mint_url: String,
    wallet: Wallet,
    catalog: Catalog,
    escrow: EscrowService,
    bot: Bot,
    /// Stops the payment watch.
    stop: watch::Sender<bool>,
    payments: tokio::task::JoinHandle<()>,
    sessions: Sessions,
    cleanup: tokio::task::JoinHandle<()>,
    exchange: Exchange,
    trades: tokio::task::JoinHandle<()>,
    bills: tokio::task::JoinHandle<()>,
    store: Store,
    metrics: Metrics,
    /// The Prometheus endpoint's address and task, when `[metrics] listen` is set.
    metrics_endpoint: Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>,
}

impl Daemon {
    /// Starts everything the config asks for.
    pub async fn start(config: Config) -> Result<Self, DaemonError> {
        Self::start_with_clock(config, Clock::system()).await
    }

    /// Starts with the services keeping their windows on `clock` (tests move it ahead).
    pub async fn start_with_clock(config: Config, clock: Clock) -> Result<Self, DaemonError> {
        // Checked here too, not only when a file is parsed: a config built in code gets
        // the same refusal.
        if let Some(why) = config.dev_mint_refusal() {
            return Err(DaemonError::DevMintExposed(why));
        }
        let data_dir = config.storage.data_dir.clone();
        // Before anything writes to it: it holds keys, seeds and the escrow's ecash.
        let tightened =
            crate::store::make_private_dir(&data_dir).map_err(|source| DaemonError::DataDir {
                path: data_dir.clone(),
                source,
            })?;
        if tightened > 0 {
            tracing::warn!(data_dir = %data_dir.display(), tightened, "data dir was readable by others; set it to 0700 and its files to 0600");
        }
        // Issue 16: rewritten first when its files have outgrown its data.
        let (store, compacted) = Store::open_compacted(&data_dir)?;
        if let Some(done) = compacted {
            tracing::info!(?done, "soko's state Db rewritten at start");
        }
        let bot_keys = identity::bot_keys(&data_dir)?;
        let exempt = Exempt::default();
        let keyring = Keyring::new(bot_keys.clone(), exempt.clone());
        // Before the relay opens its store: the events of these keys are exempt from its bound.
        let vault = Vault::open(&data_dir)?;
        let merchants = Merchants::open(&store, vault.clone())?;
        for (_, keys) in merchants
            .all()
            .map_err(|e| DaemonError::Merchants(e.to_string()))?
        {
            keyring.add(keys);
        }

        let relay = if config.relay.enabled {
            let handled = crate::bot::handled(&store)?;
            Some(EmbeddedRelay::start(&config.relay, &data_dir, &store, exempt, handled).await?)
        } else {
            None
        };
        let mut relays: Vec<RelayUrl> = relay.iter().map(|r| r.url().clone()).collect();
        relays.extend(config.relays.urls.iter().cloned());
        if relays.is_empty() {
            return Err(DaemonError::NoRelay);
        }

        // The embedded dev mint is ours and on loopback: no reason to pace requests to it.
        let (dev_mint, mint_url, pace) = match &config.mint {
            MintConfig::EmbeddedDev { port } => {
                let mint = match &config.dev_mint_auth {
                    // The issuer judges login events, other people's timestamps, by the
                    // world's time, not the services' clock tests move ahead.
                    Some(auth) => {
                        let users = crate::agents::Users::open(&store, Arc::default())?;
                        let settings = crate::devmint::AuthSettings {
                            registry: Arc::new(RegisteredUsers(users)),
                            bat_max_mint: auth.bat_max_mint,
                            issuer_port: auth.issuer_port,
                            clock: Clock::system(),
                            // soko checks its own dev mint's tokens in-process.
                            blind_protected: Vec::new(),
                        };
                        DevMint::start_with_auth(&data_dir, *port, settings).await?
                    }
                    None => DevMint::start(&data_dir, *port).await?,
                };
                let url = mint.url().to_owned();
                (Some(mint), url, None)
            }
            MintConfig::External {
                url,
                requests_per_minute,
            } => (None, url.clone(), Some(*requests_per_minute)),
        };
        let seed = identity::wallet_seed(&data_dir)?;
        // soko's own wallets reach its embedded dev mint in-process, not over loopback HTTP.
        let link = match &dev_mint {
            Some(mint) => wallet::MintLink::Direct(Arc::new(mint.connector()?)),
            None => wallet::MintLink::Http {
                requests_per_minute: pace,
            },
        };
        let wallet = wallet::open_linked(&store, "escrow", &mint_url, &seed, &link)?;

        let own = merchants.clone();
        let catalog = Catalog::open_protecting(
            &store,
            config.market.catalog_max_entries,
            Own::new(move |key| own.get(key).is_ok()),
        )?;
        let operator = identity::operator_keys(&data_dir)?;
        let admins: Arc<HashSet<PublicKey>> = Arc::new(
            [operator.public_key()]
                .into_iter()
                .chain(config.admins.iter().copied())
                .collect(),
        );
        let metrics = Metrics::new(clock.clone());
        let rules = Rules {
            rates: Rates(config.rates.clone().into_iter().collect()),
            payment_window_secs: config.market.payment_window_secs,
            delivery_window_secs: config.market.delivery_window_secs,
            issue_answer_secs: config.market.issue_answer_secs,
            lnurl: crate::lnurl::Policy {
                allow_loopback_http: config.lnurl.allow_loopback_http,
            },
            poll: crate::escrow::watch::PollRules {
                max_interval: Duration::from_secs(config.market.quote_poll_max_secs),
                checks_per_minute: config.market.quote_checks_per_minute,
                pushed_interval: Duration::from_secs(config.market.quote_push_check_secs),
            },
            caps: crate::escrow::Caps {
                per_buyer: config.market.max_unpaid_per_buyer,
                total: config.market.max_unpaid_total,
                held_percent: config.market.max_held_percent,
            },
            clock: clock.clone(),
            metrics: metrics.clone(),
            footprint: crate::escrow::Footprint {
                order_retention_secs: config.market.order_retention_secs,
                consolidate_above: config.market.consolidate_proofs_above,
            },
        };
        let rates = rules.rates.clone();

        let client = Bot::connect(&keyring, &relays).await?;
        let mut outbox = Outbox::open(&store, client)?;
        if let Some(relay) = &relay {
            outbox = outbox.with_local(relay.local_publisher());
        }
        let publisher = Publisher::new(keyring.clone(), outbox.clone());
        let agents = Agents::open(
            &store,
            &vault,
            admins.clone(),
            bot_keys.public_key(),
            clock.clone(),
        )?;
        let notices = PaidNotices::new(
            config.ussd.bridges.clone(),
            agents.links.clone(),
            merchants.clone(),
            publisher.clone(),
        );
        let escrow = EscrowService::open(
            &store,
            wallet.clone(),
            merchants.clone(),
            publisher.clone(),
            &vault,
            rules,
            Arc::new(notices),
        )?;
        escrow.take_foreign_mints(wallet::foreign::ForeignMints::open(
            &store,
            &seed,
            &config.foreign_mints.allow,
            wallet::foreign::FeeBound {
                percent: config.foreign_mints.max_fee_percent,
                floor: crate::money::Sats(config.foreign_mints.min_fee_sats),
            },
        )?);
        if let Some(mint) = &dev_mint {
            escrow.follow_in_process(mint.mint().clone(), mint.handle());
        }
        let desk = agents.desk(merchants.clone(), publisher.clone(), rates);
        let verifier: Option<Arc<dyn BatVerifier>> = match &dev_mint {
            Some(mint) => Some(Arc::new(InProcessMint::new(
                mint.mint().clone(),
                mint.handle(),
            ))),
            None => Some(Arc::new(
                ExternalMint::new(&mint_url).map_err(|e| DaemonError::Sessions(e.to_string()))?,
            )),
        };
        let sessions = Sessions::open(
            &store,
            SessionParts {
                verifier,
                mint_url: mint_url.clone(),
                link: link.clone(),
                seed,
                publisher: publisher.clone(),
                bot: bot_keys.public_key(),
                vault: vault.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
            },
            SessionRules {
                ttl_secs: config.sessions.ttl_secs,
                tombstone_secs: config.sessions.tombstone_secs,
                open_wallets: NonZeroUsize::new(config.sessions.open_wallets)
                    .unwrap_or(NonZeroUsize::MIN),
                lnurl: crate::lnurl::Policy {
                    allow_loopback_http: config.lnurl.allow_loopback_http,
                },
            },
        )?;
        let exchange = Exchange::open(
            &store,
            ExchangeParts {
                purses: Arc::new(SessionPurses(sessions.clone())),
                registered: Arc::new(RegisteredUsers(crate::agents::Users::open(
                    &store,
                    Arc::default(),
                )?)),
                house: wallet::open_linked(&store, "exchange", &mint_url, &seed, &link)?,
                publisher: publisher.clone(),
                bot: bot_keys.public_key(),
                vault: vault.clone(),
                seed,
                clock: clock.clone(),
                metrics: metrics.clone(),
                admins: admins.iter().copied().collect(),
            },
            exchange_rules(&config),
        )
        .map_err(|e| DaemonError::Exchange(e.to_string()))?;
        let ussd = UssdService::open(
            &store,
            &vault,
            merchants.clone(),
            escrow.clone(),
            publisher.clone(),
            desk.clone(),
            exchange.clone(),
            sessions.clone(),
            config.ussd.clone(),
        )?;
        let ussd_bills = ussd.clone();
        let inbox = MerchantInbox::new(escrow.clone(), merchants.clone());
        let tiers = Arc::new(SessionTiers {
            // Bridges speak for many phone users at once.
            keys: KeyTiers::new(admins.iter().chain(&config.ussd.bridges).copied()),
            sessions: sessions.clone(),
        });
        let limits = CommandLimits::new(&config.limits, tiers, clock.clone());
        // Profiles, DM relay lists and both forms of every listing, for merchants that lack
        // them (issue 15); nothing is sent when all are in step.
        let (listing_merchants, listing_publisher) = (merchants.clone(), publisher.clone());
        let context = commands::Context {
            admins,
            merchants,
            publisher,
            escrow: escrow.clone(),
            ussd: ussd.clone(),
            catalog: catalog.clone(),
            agents,
            desk,
            clock,
            sessions: sessions.clone(),
            metrics: metrics.clone(),
            exchange: exchange.clone(),
        };
        let handler = Handler::new(&store, keyring, outbox, context, inbox, limits)?;
        let bot = Bot::start(
            handler,
            catalog.clone(),
            &relays,
            crate::bot::ReplayWindow {
                secs: config.relay.retention_secs,
                wrap_backdate_secs: config.relay.gift_wrap_backdate_secs,
            },
        )
        .await?;
        crate::market::listing::sync_all(&listing_merchants, &listing_publisher).await;
        let (stop, stopped) = watch::channel(false);
        let metrics_endpoint = match config.metrics.listen {
            Some(listen) => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|source| DaemonError::Metrics { listen, source })?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| DaemonError::Metrics { listen, source })?;
                if !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "the metrics endpoint listens beyond loopback (allow_public): keep it behind a firewall");
                }
                tracing::info!(%addr, "metrics at http://{addr}/metrics");
                let task = tokio::spawn(crate::metrics::serve(
                    metrics.clone(),
                    listener,
                    stopped.clone(),
                ));
                Some((addr, task))
            }
            None => None,
        };
        let payments = tokio::spawn(watch_payments(escrow.clone(), stopped.clone()));
        let cleanup = tokio::spawn(clean_sessions(
            sessions.clone(),
            Duration::from_secs(config.sessions.cleanup_secs),
            stopped.clone(),
        ));
        let trades = tokio::spawn(watch_trades(exchange.clone(), stopped.clone()));
        // Bills merchants pay from sales: swept back once their offer ends.
        let bills = tokio::spawn(watch_bills(ussd_bills, stopped));
        let daemon = Self {
            bot_key: bot_keys.public_key(),
            relay,
            dev_mint,
            mint_url,
            wallet,
            catalog,
            escrow,
            bot,
            stop,
            payments,
            sessions,
            cleanup,
            exchange,
            trades,
            bills,
            store,
            metrics,
            metrics_endpoint,
        };
        tracing::info!(
            npub = %daemon.npub(),
            relay = ?daemon.relay_url().map(|u| u.to_string()),
            mint = %daemon.mint_url,
            "soko started"
        );
        Ok(daemon)
    }

    /// The bot's public key.
    pub fn bot_public_key(&self) -> PublicKey {
        self.bot_key
    }

    /// The bot's `npub`.
    pub fn npub(&self) -> String {
        self.bot_key
            .to_bech32()
            .unwrap_or_else(|_| self.bot_key.to_hex())
    }

    /// The relay client soko publishes and listens through: its connections to the relays,
    /// and their statistics.
    pub fn relay_client(&self) -> &nostr_sdk::Client {
        self.bot.client()
    }

    /// The embedded relay's URL, when it runs.
    pub fn relay_url(&self) -> Option<&RelayUrl> {
        self.relay.as_ref().map(|r| r.url())
    }

    /// The mint the wallet uses.
    pub fn mint_url(&self) -> &str {
        &self.mint_url
    }

    /// True when the mint is the embedded development mint.
    pub fn is_dev_mint(&self) -> bool {
        self.dev_mint.is_some()
    }

    /// The embedded dev mint, when it runs.
    pub fn dev_mint(&self) -> Option<&DevMint> {
        self.dev_mint.as_ref()
    }

    /// The wallet holding escrowed funds and merchants' balances.
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    /// The catalog of every merchant's listings seen on the relays.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The sled database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Private sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The P2P exchange.
    pub fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// The escrow service.
    pub fn escrow(&self) -> &EscrowService {
        &self.escrow
    }

    /// soko's operations figures (what `metrics` and the Prometheus endpoint show).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where the Prometheus endpoint listens, when it runs.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_endpoint.as_ref().map(|(addr, _)| *addr)
    }

    /// Stops in order: stop taking events, finish in-flight ones, close relays, stop the
    /// mint, flush sled.
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        let _ = self.stop.send(true);
        let _ = self.payments.await;
        let _ = self.cleanup.await;
        let _ = self.trades.await;
        let _ = self.bills.await;
        if let Some((_, endpoint)) = self.metrics_endpoint {
            let _ = endpoint.await;
        }
        self.bot.shutdown().await;
        if let Some(relay) = &self.relay {
            relay.shutdown();
        }
        drop(self.relay);
        if let Some(mint) = self.dev_mint {
            mint.shutdown().await;
        }
        drop(self.wallet);
        self.store.flush().await?;
        tracing::info!("soko stopped");
        Ok(())
    }
}

/// How often unpaid orders are checked against the mint.
const PAYMENT_POLL: Duration = Duration::from_secs(1);

/// Payment detection and expiry: the escrow's pass over unpaid orders, every second. It
/// follows the mint's NUT-17 push where the mint offers one and polls otherwise; a check of
/// each order at start also catches payments that completed while soko was down.
async fn watch_payments(escrow: EscrowService, stopped: watch::Receiver<bool>) {
    // Before any order moves: the wallet finishes (or rolls back) what a stop interrupted.
    if let Err(e) = escrow.recover().await {
        tracing::error!(error = %e, "the escrow wallet could not recover interrupted operations");
    }
    let wake = escrow.payment_wake();
    let escrow = &escrow;
    every_or_woken(PAYMENT_POLL, &wake, stopped, || async move {
        if let Err(e) = escrow.tick().await {
            tracing::error!(error = %e, "payment check failed; retrying");
        }
    })
    .await;
}

/// Session cleanup: a pass at start (it resumes refunds a stop interrupted) and one every
/// `every`. Each step of a pass is recorded before the next, so shutdown may cut it anywhere.
async fn clean_sessions(sessions: Sessions, period: Duration, stopped: watch::Receiver<bool>) {
    let sessions = &sessions;
    every(period, stopped, || async move {
        match sessions.cleanup().await {
            Ok(report) => tracing::info!(?report, "session cleanup pass"),
            Err(e) => tracing::error!(error = %e, "session cleanup failed; retried next pass"),
        }
    })
    .await;
}

/// The pass over bills merchants pay from sales: each carried on (swept back into the
/// balance once its offer ended), every few seconds.
async fn watch_bills(ussd: UssdService, stopped: watch::Receiver<bool>) {
    let ussd = &ussd;
    every(BILLS_POLL, stopped, || async move {
        if let Err(e) = ussd.tick_bills().await {
            tracing::error!(error = %e, "bills pass failed; retrying");
        }
    })
    .await;
}

/// How often [`watch_bills`] runs.
const BILLS_POLL: Duration = Duration::from_secs(5);

/// The exchange's timer pass, every second: payments seen, windows run out, transfers a
/// crash interrupted carried on.
async fn watch_trades(exchange: Exchange, stopped: watch::Receiver<bool>) {
    exchange.recover().await;
    let exchange = &exchange;
    every(PAYMENT_POLL, stopped, || async move {
        if let Err(e) = exchange.tick().await {
            tracing::error!(error = %e, "exchange pass failed; retrying");
        }
    })
    .await;
}

/// [`every`], also running `pass` as soon as `wake` is notified (a payment the mint told):
/// a notification during a pass makes the next one start right after it.
async fn every_or_woken<F, Fut>(
    period: Duration,
    wake: &tokio::sync::Notify,
    mut stopped: watch::Receiver<bool>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {}
            () = wake.notified() => {}
        }
        tokio::select! {
            _ = stopped.changed() => break,
            () = pass() => {}
        }
    }
}

/// Runs `pass` every `period` until `stopped`. A pass may be cut short by shutdown: every
/// pass here is crash-safe step by step, so stopping mid-way is like a crash, resumed on start.
async fn every<F, Fut>(period: Duration, stopped: watch::Receiver<bool>, pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    every_or_woken(period, &tokio::sync::Notify::new(), stopped, pass).await
}
