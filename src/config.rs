//! Daemon configuration: `relay-config/soko.toml` documents every key.
//!
//! Parsing walks the TOML table by hand instead of deserialising straight into structs,
//! because `soko config check` must report *every* problem with its key path, while serde
//! stops at the first one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nostr_sdk::{PublicKey, RelayUrl};
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// Default port of the embedded relay (the usual local-relay port, clear of the dev mint's).
pub const DEFAULT_RELAY_PORT: u16 = 7447;
/// Default port of the embedded dev mint (cashu's conventional 3338).
pub const DEFAULT_DEV_MINT_PORT: u16 = 3338;
/// Default port of the dev mint's OIDC issuer, when `[mint] auth` is on. Fixed rather than
/// free: the issuer's URL is the tokens' `iss`, so tokens outlive a restart only on it.
pub const DEFAULT_DEV_ISSUER_PORT: u16 = 3339;
/// The longest a private session may last, and its default length (`[sessions] ttl_secs`).
pub const MAX_SESSION_SECS: u64 = 3600;
/// Default most BATs one blind-auth mint request may ask for.
pub const DEFAULT_BAT_MAX_MINT: u64 = 50;

/// Kinds the embedded relay accepts by default: profiles, NIP-04 DMs, deletions, gift wraps,
/// relay lists, NIP-46 signer traffic, NIP-15 / NIP-99 listings, the exchange's NIP-69 book,
/// and the public kinds of the Gamma Markets spec and its clients: order messages and
/// payment receipts Plebeian Market publishes unwrapped (16, 17), collections and shipping
/// options (30405, 30406), reviews (31555) and app recommendations (31989, 31990).
pub const DEFAULT_ALLOWED_KINDS: &[u16] = &[
    0,
    4,
    5,
    crate::proto::gamma::KIND_ORDER,
    crate::proto::gamma::KIND_RECEIPT,
    1059,
    10002,
    10050,
    24133,
    crate::proto::nip15::KIND_STALL,
    crate::proto::nip15::KIND_PRODUCT,
    crate::proto::gamma_listing::KIND_LISTING,
    crate::proto::gamma_listing::KIND_COLLECTION,
    crate::proto::gamma_listing::KIND_SHIPPING_OPTION,
    31555,
    31989,
    31990,
    crate::proto::exchange::KIND_BOOK,
];

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[relay]`: the embedded relay.
    pub relay: RelayConfig,
    /// `[relays]`: external relays the bot also uses.
    pub relays: ExternalRelays,
    /// `[mint]`: which Cashu mint the wallet uses.
    pub mint: MintConfig,
    /// `[storage]`: where state lives.
    pub storage: StorageConfig,
    /// `[log]`: tracing output.
    pub log: LogConfig,
    /// `[rates]`: millisats per cent, by currency code, for fiat-priced stalls.
    pub rates: std::collections::BTreeMap<String, u64>,
    /// `[market]`: checkout rules.
    pub market: MarketConfig,
    /// `[admins] npubs`: keys with the admin role (operator commands, invites), besides the
    /// operator key in the data dir.
    pub admins: Vec<PublicKey>,
    /// `[ussd]`: the USSD menus for merchants on feature phones.
    pub ussd: UssdConfig,
    /// `[mint] dev_public`: let the embedded dev mint run although soko is reachable beyond
    /// loopback (a public demo). Without it such a config is refused: see
    /// [`Config::dev_mint_refusal`].
    pub dev_mint_public: bool,
    /// `[lnurl]`: requests to Lightning addresses (payouts, refunds).
    pub lnurl: LnurlConfig,
    /// `[sessions]`: private sessions opened with blind auth tokens.
    pub sessions: SessionsConfig,
    /// `[mint] auth = true`: NUT-21/22 blind auth on the embedded dev mint, with its
    /// development OIDC issuer. `None`: off (the default; always with an external mint).
    pub dev_mint_auth: Option<DevMintAuth>,
    /// `[limits]`: commands per sender and window, by tier.
    pub limits: LimitsConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[exchange]`: the P2P exchange's windows, bonds and fees.
    pub exchange: ExchangeConfig,
    /// `[mint] foreign_allow`, `foreign_max_fee_percent`, `foreign_min_fee_sats`: other mints
    /// whose ecash a pay-first order may bring (melted to pay an invoice of soko's mint).
    pub foreign_mints: ForeignMintsConfig,
}

/// Most mints `[mint] foreign_allow` may name: soko keeps one wallet per mint.
pub const MAX_FOREIGN_MINTS: usize = 16;

/// `[mint] foreign_allow` and its fee bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignMintsConfig {
    /// The mints taken, normalised as cdk writes a mint URL (lower-case host, no trailing
    /// slash), so a token's mint compares equal. Empty: only soko's own mint's ecash.
    pub allow: Vec<String>,
    /// Most fees (the other mint's input fee and Lightning fee reserve together) soko lets a
    /// buyer's token pay, as a percent of the token's value…
    pub max_fee_percent: u8,
    /// …but never less than this many sats (a small token's fee reserve is a few sats).
    pub min_fee_sats: u64,
}

impl Default for ForeignMintsConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            max_fee_percent: 2,
            min_fee_sats: 10,
        }
    }
}

/// `[mint] auth`, `bat_max_mint`, `dev_issuer_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevMintAuth {
    /// Most BATs one `POST /v1/auth/blind/mint` may ask for.
    pub bat_max_mint: u64,
    /// Loopback port of the development OIDC issuer; 0 picks a free one.
    pub issuer_port: u16,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsConfig {
    /// Where to serve the Prometheus text (`GET /metrics`); off when absent.
    pub listen: Option<std::net::SocketAddr>,
    /// Let `listen` be an address beyond loopback (the figures say how busy soko is and
    /// how much ecash it holds; put them behind a firewall or proxy).
    pub allow_public: bool,
}

impl Config {
    /// Why this config may not run the embedded dev mint, if it may not. The dev mint's
    /// fake Lightning pays its own invoices: wherever real users can reach soko, buyers
    /// would "pay" with nothing and merchants be credited worthless sats. So it runs only
    /// when everything soko talks to is on loopback (the embedded relay bound to a
    /// loopback address, every `[relays]` URL a loopback host), or when `[mint]
    /// dev_public = true` says, in the file, that this is wanted.
    pub fn dev_mint_refusal(&self) -> Option<String> {
        if !matches!(self.mint, MintConfig::EmbeddedDev { .. }) || self.dev_mint_public {
            return None;
        }
        let mut reachable = Vec::new();
        if self.relay.enabled && !self.relay.bind.is_loopback() {
            reachable.push(format!("the embedded relay listens on {}", self.relay.bind));
        }
        for url in &self.relays.urls {
            let loopback = url.host().is_some_and(|host| {
                let host = host.to_string();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            if !loopback {
                reachable.push(format!("[relays] has {url}"));
            }
        }
        if reachable.is_empty() {
            return None;
        }
        Some(format!(
            "refusing the embedded DEV mint (fake Lightning: its invoices pay themselves, its sats are worthless) where others can reach soko: {}. Set [mint] url to a real mint; for a public demo with worthless sats only, set [mint] dev_public = true",
            reachable.join("; ")
        ))
    }
}

/// `[lnurl]`
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LnurlConfig {
    /// Development only: Lightning addresses and LNURLs served on loopback may be called,
    /// over plain http too. Off, soko calls only https services on public addresses.
    pub allow_loopback_http: bool,
}

/// `[sessions]`
#[derive(Debug, Clone, PartialEq)]
pub struct SessionsConfig {
    /// Seconds a session lasts, at most 3600 (the default).
    pub ttl_secs: u64,
    /// Seconds between cleanup passes (expiry, refunds, deleting wallets).
    pub cleanup_secs: u64,
    /// Seconds an ended session still answers `session_closed` / `session_expired`.
    pub tombstone_secs: u64,
    /// Session wallets kept open in memory (the rest reopen on demand).
    pub open_wallets: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            ttl_secs: MAX_SESSION_SECS,
            cleanup_secs: 3600,
            tombstone_secs: 24 * 3600,
            open_wallets: 256,
        }
    }
}

/// `[exchange]`: windows in seconds, bonds and fees as `flat` sats + `bp` basis points
/// (1 bp = 0.01 %) of the escrow; defaults are OpenPleb's.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeConfig {
    /// Seconds to pay the maker's invoice.
    pub pay_secs: u64,
    /// Seconds on the book without a taker.
    pub listing_secs: u64,
    /// Seconds to pay the taker's bond.
    pub claim_secs: u64,
    /// Seconds to submit a receipt.
    pub receipt_secs: u64,
    /// Seconds for the maker to confirm a receipt (then the taker is paid).
    pub confirm_secs: u64,
    /// Seconds added for the other side to answer an issue.
    pub issue_secs: u64,
    /// Each bond and fee: `[flat sats, basis points]`.
    pub maker_bond: [u64; 2],
    /// The taker's bond.
    pub taker_bond: [u64; 2],
    /// The maker's fee to soko.
    pub platform_fee: [u64; 2],
    /// The taker's fee to soko.
    pub taker_fee: [u64; 2],
    /// Smallest escrow, sats.
    pub min_sats: u64,
    /// Largest escrow, sats.
    pub max_sats: u64,
    /// Largest bill per currency, whole units (`KES = 150000`).
    pub max_fiat: std::collections::BTreeMap<String, u64>,
    /// Open offers and claims per session.
    pub max_open_per_session: usize,
    /// The book's `network` tag.
    pub network: String,
    /// The book's instance name.
    pub instance: Option<String>,
    /// Dispute rate (basis points) above which admins get a DM.
    pub alert_bp: u32,
    /// Offers that reached a taker in the day before the rate counts.
    pub alert_min_offers: u64,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            pay_secs: 120,
            listing_secs: 300,
            claim_secs: 300,
            receipt_secs: 300,
            confirm_secs: 500,
            issue_secs: 250,
            maker_bond: [1000, 500],
            taker_bond: [1000, 500],
            platform_fee: [100, 100],
            taker_fee: [50, 0],
            min_sats: 1_000,
            max_sats: 5_000_000,
            max_fiat: [
                ("KES", 150_000),
                ("UGX", 4_000_000),
                ("TZS", 3_000_000),
                ("USD", 1_000),
                ("EUR", 1_000),
            ]
            .into_iter()
            .map(|(c, n)| (c.to_owned(), n))
            .collect(),
            max_open_per_session: 4,
            network: "mainnet".to_owned(),
            instance: None,
            alert_bp: 1_000,
            alert_min_offers: 10,
        }
    }
}

/// `[limits]`: how many commands one sender may send per window, by tier
/// ([`crate::ratelimit::Tier`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Seconds of one sender's window, counted from its first command in it.
    pub window_secs: u64,
    /// Commands per window without a session.
    pub anonymous: u32,
    /// Commands per window inside a live session.
    pub session: u32,
    /// Commands per window for admins (and the configured USSD bridges).
    pub admin: u32,
    /// Most (tier, sender) windows kept in memory; past it the least recently seen is
    /// forgotten (it only gets a fresh window, as a new key would).
    pub max_tracked_senders: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            window_secs: 15 * 60,
            anonymous: 100,
            session: 1_000,
            admin: 5_000,
            max_tracked_senders: 100_000,
        }
    }
}

/// `[ussd]`
#[derive(Debug, Clone, PartialEq)]
pub struct UssdConfig {
    /// Public keys of the USSD bridges soko trusts with `ussd_hop` (and sends SMS notices to).
    pub bridges: Vec<PublicKey>,
    /// Seconds a USSD session lives after its last hop.
    pub session_secs: u64,
    /// Wrong PINs in a row before the merchant's USSD access locks.
    pub pin_tries: u32,
    /// Seconds the USSD access stays locked after too many wrong PINs, the first time; each
    /// later lock lasts four times longer.
    pub lockout_secs: u64,
    /// Timed locks before one that lasts until the operator's `ussd_reset`.
    pub timed_lockouts: u32,
}

impl Default for UssdConfig {
    fn default() -> Self {
        Self {
            bridges: Vec::new(),
            session_secs: 180,
            pin_tries: 3,
            lockout_secs: 900,
            timed_lockouts: 3,
        }
    }
}

/// `[market]`
#[derive(Debug, Clone, PartialEq)]
pub struct MarketConfig {
    /// Seconds a buyer has to pay an invoice before the order expires.
    pub payment_window_secs: u64,
    /// Seconds after payment by which the merchant should have delivered; past it the order
    /// may be refunded without the buyer asking.
    pub delivery_window_secs: u64,
    /// Seconds the other side of an order has to answer an issue marked on it (concede or
    /// dispute); past it an admin may decide alone.
    pub issue_answer_secs: u64,
    /// Most stalls and products (of any merchant, deletions included) the catalog keeps;
    /// past it the oldest by `created_at` are dropped.
    pub catalog_max_entries: usize,
    /// Issue 11: the most orders one buyer key may have waiting for payment at once.
    pub max_unpaid_per_buyer: u32,
    /// Issue 11: the most orders waiting for payment at once, all buyers together.
    pub max_unpaid_total: u32,
    /// Issue 11: the largest share (percent) of a product's listed stock that unpaid orders
    /// may hold together.
    pub max_held_percent: u8,
    /// Issue 11: longest interval, in seconds, between two mint checks of one unpaid order
    /// (the first checks come after 1, 2, 4… seconds).
    pub quote_poll_max_secs: u64,
    /// Issue 11: most mint checks of unpaid orders per minute, all together.
    pub quote_checks_per_minute: u32,
    /// Issue 11: with a mint that pushes invoice states (NUT-17), seconds between two
    /// checks of one unpaid order whose state it pushes (a safety net for a lost push).
    pub quote_push_check_secs: u64,
    /// Issue 16: seconds after an order was placed from which, once finished (paid out,
    /// delivered, refunded or expired, with no open issue), it is shrunk to what accounting
    /// and disputes need, and its wallet records (mint quote, history) are dropped.
    pub order_retention_secs: u64,
    /// Issue 16: the escrow wallet swaps its smallest proofs into few once it holds more
    /// than this many unspent ones.
    pub consolidate_proofs_above: usize,
}

/// Default of `[market] order_retention_secs`: 30 days, past the delivery window (14 days)
/// and an issue's answer window (3 days), so that an order finished in the normal course is
/// shrunk only once nothing can reopen it.
pub const DEFAULT_ORDER_RETENTION_SECS: u64 = 30 * 24 * 3600;

/// Default of `[market] consolidate_proofs_above`.
pub const DEFAULT_CONSOLIDATE_PROOFS_ABOVE: usize = 200;

/// Least `[market] consolidate_proofs_above`: a swap of a handful of proofs saves nothing.
pub const MIN_CONSOLIDATE_PROOFS_ABOVE: usize = 10;

/// Default bound of the catalog of stalls and products soko has seen.
pub const DEFAULT_CATALOG_MAX_ENTRIES: usize = 10_000;

/// `[relay]`
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Run the embedded relay at all.
    pub enabled: bool,
    /// Address to bind (loopback by default).
    pub bind: IpAddr,
    /// Port; 0 picks a free one (tests).
    pub port: u16,
    /// Largest accepted event, as its JSON length in bytes.
    pub max_event_bytes: usize,
    /// Kinds accepted for writing; empty accepts every kind.
    pub allowed_kinds: Vec<u16>,
    /// Events one pubkey may write per minute (the bot and its managed keys are exempt);
    /// ephemeral events (NIP-46 traffic), which the relay does not keep, only meet the
    /// per-connection and overall budgets.
    pub rate_limit_per_minute: u32,
    /// Events one connection may write per minute (connections soko itself writes through
    /// are exempt): gift wraps come from a fresh key each, which the per-pubkey limit cannot see.
    pub connection_write_per_minute: u32,
    /// Events all other writers together may write per minute.
    pub write_budget_per_minute: u32,
    /// Open connections at most (HTTP and websocket); more are closed on accept.
    pub max_connections: usize,
    /// Events of other authors than soko's own keys the relay holds at most, on disk and in
    /// its in-memory index; past it the first of them to arrive are dropped. soko's own
    /// events are exempt (never dropped, not counted).
    pub max_stored_events: usize,
    /// Seconds a regular (not replaceable) event is kept, by its `created_at`; gift wraps
    /// [`Self::gift_wrap_backdate_secs`] more. Older ones are deleted and refused.
    pub retention_secs: u64,
    /// Seconds gift wraps are kept (and accepted) past `retention_secs`, because NIP-59
    /// backdates their `created_at` by up to two days: with the default (two days) a wrap
    /// stays at least `retention_secs` after it was sent. `retention_secs` plus this must
    /// reach two days, or fresh wraps would be refused.
    pub gift_wrap_backdate_secs: u64,
    /// DMs and gift wraps addressed to soko's own keys are deleted once soko handled them
    /// and their `created_at` is this many seconds old.
    pub handled_keep_secs: u64,
    /// Seconds between retention passes.
    pub janitor_secs: u64,
    /// NIP-13 proof of work (leading zero bits of the id) required of events from keys other
    /// than soko's own; 0 turns it off.
    pub min_pow_unknown: u8,
}

/// `[relays]`
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExternalRelays {
    /// Relay URLs (`ws://` or `wss://`).
    pub urls: Vec<RelayUrl>,
}

/// `[mint]`
#[derive(Debug, Clone, PartialEq)]
pub enum MintConfig {
    /// Run a development mint in-process with a fake Lightning backend.
    EmbeddedDev {
        /// Loopback port it serves on; 0 picks a free one.
        port: u16,
    },
    /// Use an external mint.
    External {
        /// The mint's URL.
        url: String,
        /// Requests per minute soko's wallet may send it (cdk's client-side pacing).
        requests_per_minute: u32,
    },
}

/// Default pacing of requests to an external mint: cdk's own default (20 per minute) would
/// stall a shop at a handful of orders a minute, each order costing several requests.
pub const DEFAULT_MINT_REQUESTS_PER_MINUTE: u32 = 600;

/// `[storage]`
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// Directory for keys, sled and the dev mint's database.
    pub data_dir: PathBuf,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// An `EnvFilter` directive such as `info` or `soko=debug,warn`.
    pub level: String,
    /// JSON lines instead of human-readable output.
    pub json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            relay: RelayConfig {
                enabled: true,
                bind: IpAddr::from([127, 0, 0, 1]),
                port: DEFAULT_RELAY_PORT,
                max_event_bytes: 64 * 1024,
                allowed_kinds: DEFAULT_ALLOWED_KINDS.to_vec(),
                rate_limit_per_minute: 120,
                connection_write_per_minute: 600,
                write_budget_per_minute: 1_200,
                max_connections: 512,
                max_stored_events: 20_000,
                retention_secs: 7 * 24 * 3600,
                gift_wrap_backdate_secs: NIP59_BACKDATE_SECS,
                handled_keep_secs: 600,
                janitor_secs: 60,
                min_pow_unknown: 0,
            },
            relays: ExternalRelays::default(),
            mint: MintConfig::EmbeddedDev {
                port: DEFAULT_DEV_MINT_PORT,
            },
            storage: StorageConfig {
                data_dir: PathBuf::from("soko-data"),
            },
            log: LogConfig {
                level: "info".to_owned(),
                json: false,
            },
            rates: Default::default(),
            market: MarketConfig {
                payment_window_secs: 300,
                delivery_window_secs: 14 * 24 * 3600,
                issue_answer_secs: 3 * 24 * 3600,
                catalog_max_entries: DEFAULT_CATALOG_MAX_ENTRIES,
                max_unpaid_per_buyer: 3,
                max_unpaid_total: 500,
                max_held_percent: 50,
                quote_poll_max_secs: 15,
                quote_checks_per_minute: 120,
                quote_push_check_secs: 60,
                order_retention_secs: DEFAULT_ORDER_RETENTION_SECS,
                consolidate_proofs_above: DEFAULT_CONSOLIDATE_PROOFS_ABOVE,
            },
            admins: Vec::new(),
            ussd: UssdConfig::default(),
            dev_mint_public: false,
            lnurl: LnurlConfig::default(),
            sessions: SessionsConfig::default(),
            exchange: ExchangeConfig::default(),
            dev_mint_auth: None,
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            foreign_mints: ForeignMintsConfig::default(),
        }
    }
}

/// One problem in a config file, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `relay.port`; empty for a syntax error.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but has problems.
    #[error("{} problem(s) in config:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(ConfigError::Invalid)
    }

    /// The config `soko run [--config FILE] [--data-dir DIR]` runs with: the file (or the
    /// defaults) with the data dir overridden. The CLI and the walkthroughs that talk to a
    /// running soko find it the same way.
    pub fn resolve(file: Option<&Path>, data_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::load(path)?,
            None => Self::default(),
        };
        if let Some(dir) = data_dir {
            config.storage.data_dir = dir.to_path_buf();
        }
        Ok(config)
    }

    /// Validates config text, returning every problem found.
    pub fn parse(text: &str) -> Result<Self, Vec<ConfigProblem>> {
        let root: Table = text.parse().map_err(|e: toml::de::Error| {
            vec![ConfigProblem {
                key: String::new(),
                message: format!("not valid TOML: {}", e.message().trim()),
            }]
        })?;
        let mut check = Checker::default();
        let defaults = Config::default();
        check.unknown_keys(
            &root,
            "",
            &[
                "relay", "relays", "mint", "storage", "log", "rates", "market", "ussd", "admins",
                "lnurl", "sessions", "lnurl", "limits", "metrics", "exchange",
            ],
        );

        let relay = relay(&mut check, &root, &defaults.relay);
        let relays = relays(&mut check, &root);
        let (mint, dev_mint_public) = mint(&mut check, &root, &defaults.mint);
        let dev_mint_auth = mint_auth(&mut check, &root, &mint);
        let foreign_mints = foreign_mints(&mut check, &root);
        let storage = storage(&mut check, &root, &defaults.storage);
        let log = log(&mut check, &root, &defaults.log);
        let market = market(&mut check, &root, &defaults.market);
        let ussd = ussd(&mut check, &root, &defaults.ussd);
        let admins = admins(&mut check, &root);
        let lnurl = lnurl(&mut check, &root, &defaults.lnurl);
        let sessions = sessions(&mut check, &root, &defaults.sessions);
        let limits = limits(&mut check, &root, &defaults.limits);
        let metrics = metrics(&mut check, &root);
        let rates = rates(&mut check, &root);
        let exchange = exchange(&mut check, &root, &defaults.exchange);

        if check.problems.is_empty() {
            let config = Config {
                relay,
                relays,
                mint,
                storage,
                log,
                rates,
                market,
                admins,
                ussd,
                dev_mint_public,
                lnurl,
                sessions,
                dev_mint_auth,
                limits,
                metrics,
                exchange,
                foreign_mints,
            };
            match config.dev_mint_refusal() {
                Some(why) => Err(vec![ConfigProblem {
                    key: "mint.dev_public".to_owned(),
                    message: why,
                }]),
                None => Ok(config),
            }
        } else {
            Err(check.problems)
        }
    }
}

/// How far NIP-59 may backdate a gift wrap's `created_at`: two days.
const NIP59_BACKDATE_SECS: u64 = 2 * 24 * 3600;

/// `[relay]`: the embedded relay.
fn relay(check: &mut Checker, root: &Table, d: &RelayConfig) -> RelayConfig {
    let relay_keys = [
        "enabled",
        "bind",
        "port",
        "max_event_bytes",
        "allowed_kinds",
        "rate_limit_per_minute",
        "connection_write_per_minute",
        "write_budget_per_minute",
        "max_connections",
        "max_stored_events",
        "retention_secs",
        "gift_wrap_backdate_secs",
        "handled_keep_secs",
        "janitor_secs",
        "min_pow_unknown",
    ];
    let relay = check.section(root, "relay", &relay_keys);
    let bind: String = check.field(relay, "relay", "bind", d.bind.to_string());
    let retention_secs = check.positive(relay, "relay", "retention_secs", d.retention_secs);
    let gift_wrap_backdate_secs = check.field(
        relay,
        "relay",
        "gift_wrap_backdate_secs",
        d.gift_wrap_backdate_secs,
    );
    if retention_secs.saturating_add(gift_wrap_backdate_secs) < NIP59_BACKDATE_SECS {
        check.problem(
            "relay.gift_wrap_backdate_secs",
            format!(
                "retention_secs + gift_wrap_backdate_secs must be at least {NIP59_BACKDATE_SECS} \
                 (two days): NIP-59 backdates gift wraps that much, and younger ones would be \
                 refused"
            ),
        );
    }
    RelayConfig {
        enabled: check.field(relay, "relay", "enabled", d.enabled),
        bind: bind.parse().unwrap_or_else(|_| {
            check.problem("relay.bind", format!("{bind:?} is not an IP address"));
            d.bind
        }),
        port: check.field(relay, "relay", "port", d.port),
        max_event_bytes: check.positive(relay, "relay", "max_event_bytes", d.max_event_bytes),
        allowed_kinds: check.field(relay, "relay", "allowed_kinds", d.allowed_kinds.clone()),
        rate_limit_per_minute: check.positive(
            relay,
            "relay",
            "rate_limit_per_minute",
            d.rate_limit_per_minute,
        ),
        connection_write_per_minute: check.positive(
            relay,
            "relay",
            "connection_write_per_minute",
            d.connection_write_per_minute,
        ),
        write_budget_per_minute: check.positive(
            relay,
            "relay",
            "write_budget_per_minute",
            d.write_budget_per_minute,
        ),
        max_connections: check.positive(relay, "relay", "max_connections", d.max_connections),
        max_stored_events: check.positive(relay, "relay", "max_stored_events", d.max_stored_events),
        retention_secs,
        gift_wrap_backdate_secs,
        handled_keep_secs: check.field(relay, "relay", "handled_keep_secs", d.handled_keep_secs),
        janitor_secs: check.positive(relay, "relay", "janitor_secs", d.janitor_secs),
        min_pow_unknown: check.field(relay, "relay", "min_pow_unknown", d.min_pow_unknown),
    }
}

/// `[relays]`: the external relays soko also uses.
fn relays(check: &mut Checker, root: &Table) -> ExternalRelays {
    let relays = check.section(root, "relays", &["urls"]);
    let urls: Vec<String> = check.field(relays, "relays", "urls", Vec::new());
    let mut relay_urls = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        match RelayUrl::parse(url) {
            Ok(u) => relay_urls.push(u),
            Err(e) => check.problem(&format!("relays.urls[{i}]"), format!("{url:?}: {e}")),
        }
    }
    ExternalRelays { urls: relay_urls }
}

/// `[mint]`: which mint, and whether the embedded dev mint may face the network (the
/// second value, `dev_public`).
fn mint(check: &mut Checker, root: &Table, default: &MintConfig) -> (MintConfig, bool) {
    let mint = check.section(
        root,
        "mint",
        &[
            "embedded_dev",
            "url",
            "dev_port",
            "requests_per_minute",
            "dev_public",
            "auth",
            "bat_max_mint",
            "dev_issuer_port",
            "foreign_allow",
            "foreign_max_fee_percent",
            "foreign_min_fee_sats",
        ],
    );
    let dev_mint_public: bool = check.field(mint, "mint", "dev_public", false);
    let embedded: Option<bool> = check.field(mint, "mint", "embedded_dev", None);
    let url: Option<String> = check.field(mint, "mint", "url", None);
    let dev_port: u16 = check.field(mint, "mint", "dev_port", DEFAULT_DEV_MINT_PORT);
    let requests_per_minute = check.positive(
        mint,
        "mint",
        "requests_per_minute",
        DEFAULT_MINT_REQUESTS_PER_MINUTE,
    );
    let mint = match (embedded, url) {
        (Some(true), Some(_)) => {
            check.problem(
                "mint.url",
                "set either `embedded_dev = true` or `url`, not both".to_owned(),
            );
            default.clone()
        }
        (Some(false), None) => {
            check.problem(
                "mint.url",
                "`embedded_dev = false` needs the URL of a mint".to_owned(),
            );
            default.clone()
        }
        (_, Some(url)) => {
            let valid = url.starts_with("http://") || url.starts_with("https://");
            if !valid {
                check.problem("mint.url", format!("{url:?} is not an http(s) URL"));
            }
            MintConfig::External {
                url,
                requests_per_minute,
            }
        }
        (_, None) => MintConfig::EmbeddedDev { port: dev_port },
    };
    (mint, dev_mint_public)
}

/// `[mint] foreign_allow`, `foreign_max_fee_percent`, `foreign_min_fee_sats`.
fn foreign_mints(check: &mut Checker, root: &Table) -> ForeignMintsConfig {
    let d = ForeignMintsConfig::default();
    let table = root.get("mint").and_then(Value::as_table);
    let urls: Vec<String> = check.field(table, "mint", "foreign_allow", Vec::new());
    if urls.len() > MAX_FOREIGN_MINTS {
        check.problem(
            "mint.foreign_allow",
            format!(
                "{} mints; at most {MAX_FOREIGN_MINTS} (soko keeps a wallet for each)",
                urls.len()
            ),
        );
    }
    let mut allow: Vec<String> = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let key = format!("mint.foreign_allow[{i}]");
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            check.problem(&key, format!("{url:?} is not an http(s) URL"));
            continue;
        }
        match url.parse::<cdk::mint_url::MintUrl>() {
            Ok(parsed) if allow.contains(&parsed.to_string()) => {
                check.problem(&key, format!("{url:?} is listed twice"));
            }
            Ok(parsed) => allow.push(parsed.to_string()),
            Err(e) => check.problem(&key, format!("{url:?}: {e}")),
        }
    }
    let max_fee_percent: u8 =
        check.field(table, "mint", "foreign_max_fee_percent", d.max_fee_percent);
    if max_fee_percent > 50 {
        check.problem(
            "mint.foreign_max_fee_percent",
            format!("{max_fee_percent} is more than 50 (percent of the buyer's token)"),
        );
    }
    ForeignMintsConfig {
        allow,
        max_fee_percent: max_fee_percent.min(50),
        min_fee_sats: check.field(table, "mint", "foreign_min_fee_sats", d.min_fee_sats),
    }
}

/// `[mint] auth`, `bat_max_mint`, `dev_issuer_port`: blind auth on the embedded dev mint.
/// An external mint's auth is the mint's own business, so these keys beside `url` are an
/// error rather than silently ignored.
fn mint_auth(check: &mut Checker, root: &Table, mint: &MintConfig) -> Option<DevMintAuth> {
    let table = root.get("mint").and_then(Value::as_table);
    let auth: Option<bool> = check.field(table, "mint", "auth", None);
    let max: Option<u64> = check.field(table, "mint", "bat_max_mint", None);
    let port: Option<u16> = check.field(table, "mint", "dev_issuer_port", None);
    if matches!(mint, MintConfig::External { .. }) {
        for (key, set) in [
            ("auth", auth.is_some()),
            ("bat_max_mint", max.is_some()),
            ("dev_issuer_port", port.is_some()),
        ] {
            if set {
                check.problem(
                    &format!("mint.{key}"),
                    "blind auth settings apply to the embedded dev mint only; an external [mint] url has its own (remove this key)".to_owned(),
                );
            }
        }
        return None;
    }
    if max == Some(0) {
        check.problem("mint.bat_max_mint", "must be at least 1".to_owned());
    }
    auth.unwrap_or(false).then(|| DevMintAuth {
        bat_max_mint: max.unwrap_or(DEFAULT_BAT_MAX_MINT),
        issuer_port: port.unwrap_or(DEFAULT_DEV_ISSUER_PORT),
    })
}

/// `[storage]`.
fn storage(check: &mut Checker, root: &Table, d: &StorageConfig) -> StorageConfig {
    let storage = check.section(root, "storage", &["data_dir"]);
    let data_dir: PathBuf = check.field(storage, "storage", "data_dir", d.data_dir.clone());
    StorageConfig { data_dir }
}

/// `[log]`.
fn log(check: &mut Checker, root: &Table, d: &LogConfig) -> LogConfig {
    let log = check.section(root, "log", &["level", "json"]);
    let level: String = check.field(log, "log", "level", d.level.clone());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        check.problem("log.level", format!("{level:?} is not a log filter: {e}"));
    }
    let json = check.field(log, "log", "json", d.json);
    LogConfig { level, json }
}

/// `[market]`: windows, bounds and quote polling.
fn market(check: &mut Checker, root: &Table, dm: &MarketConfig) -> MarketConfig {
    let market = check.section(
        root,
        "market",
        &[
            "payment_window_secs",
            "delivery_window_secs",
            "issue_answer_secs",
            "catalog_max_entries",
            "max_unpaid_per_buyer",
            "max_unpaid_total",
            "max_held_percent",
            "quote_poll_max_secs",
            "quote_checks_per_minute",
            "quote_push_check_secs",
            "order_retention_secs",
            "consolidate_proofs_above",
        ],
    );
    let payment_window_secs = check.positive(
        market,
        "market",
        "payment_window_secs",
        dm.payment_window_secs,
    );
    let delivery_window_secs = check.positive(
        market,
        "market",
        "delivery_window_secs",
        dm.delivery_window_secs,
    );
    let issue_answer_secs =
        check.positive(market, "market", "issue_answer_secs", dm.issue_answer_secs);
    let catalog_max_entries = check.positive(
        market,
        "market",
        "catalog_max_entries",
        dm.catalog_max_entries,
    );
    let max_unpaid_per_buyer = check.positive(
        market,
        "market",
        "max_unpaid_per_buyer",
        dm.max_unpaid_per_buyer,
    );
    let max_unpaid_total =
        check.positive(market, "market", "max_unpaid_total", dm.max_unpaid_total);
    let max_held_percent =
        check.positive(market, "market", "max_held_percent", dm.max_held_percent);
    if max_held_percent > 100 {
        check.problem("market.max_held_percent", "must be at most 100".to_owned());
    }
    let quote_poll_max_secs = check.positive(
        market,
        "market",
        "quote_poll_max_secs",
        dm.quote_poll_max_secs,
    );
    let quote_checks_per_minute = check.positive(
        market,
        "market",
        "quote_checks_per_minute",
        dm.quote_checks_per_minute,
    );
    let quote_push_check_secs = check.positive(
        market,
        "market",
        "quote_push_check_secs",
        dm.quote_push_check_secs,
    );
    let order_retention_secs = check.positive(
        market,
        "market",
        "order_retention_secs",
        dm.order_retention_secs,
    );
    let consolidate_proofs_above = check.positive(
        market,
        "market",
        "consolidate_proofs_above",
        dm.consolidate_proofs_above,
    );
    if consolidate_proofs_above < MIN_CONSOLIDATE_PROOFS_ABOVE {
        check.problem(
            "market.consolidate_proofs_above",
            format!("must be at least {MIN_CONSOLIDATE_PROOFS_ABOVE}"),
        );
    }
    MarketConfig {
        order_retention_secs,
        consolidate_proofs_above,
        payment_window_secs,
        delivery_window_secs,
        issue_answer_secs,
        catalog_max_entries,
        max_unpaid_per_buyer,
        max_unpaid_total,
        max_held_percent,
        quote_poll_max_secs,
        quote_checks_per_minute,
        quote_push_check_secs,
    }
}

/// `[ussd]`: the bridges soko trusts and the session and PIN limits.
fn ussd(check: &mut Checker, root: &Table, d: &UssdConfig) -> UssdConfig {
    let ussd = check.section(
        root,
        "ussd",
        &[
            "bridges",
            "session_secs",
            "pin_tries",
            "lockout_secs",
            "timed_lockouts",
        ],
    );
    let bridge_keys: Vec<String> = check.field(ussd, "ussd", "bridges", Vec::new());
    let mut bridges = Vec::new();
    for (i, key) in bridge_keys.iter().enumerate() {
        match PublicKey::parse(key) {
            Ok(pubkey) => bridges.push(pubkey),
            Err(_) => check.problem(
                &format!("ussd.bridges[{i}]"),
                format!("{key:?} is not an npub or hex public key"),
            ),
        }
    }
    UssdConfig {
        bridges,
        session_secs: check.positive(ussd, "ussd", "session_secs", d.session_secs),
        pin_tries: check.positive(ussd, "ussd", "pin_tries", d.pin_tries),
        lockout_secs: check.positive(ussd, "ussd", "lockout_secs", d.lockout_secs),
        timed_lockouts: check.positive(ussd, "ussd", "timed_lockouts", d.timed_lockouts),
    }
}

/// `[admins]`: the operators' public keys.
fn admins(check: &mut Checker, root: &Table) -> Vec<PublicKey> {
    let admins_section = check.section(root, "admins", &["npubs"]);
    let npubs: Vec<String> = check.field(admins_section, "admins", "npubs", Vec::new());
    let mut admins = Vec::new();
    for (i, npub) in npubs.iter().enumerate() {
        match PublicKey::parse(npub) {
            Ok(key) => admins.push(key),
            Err(_) => check.problem(
                &format!("admins.npubs[{i}]"),
                format!("{npub:?} is not an npub or hex public key"),
            ),
        }
    }
    admins
}

/// `[lnurl]`.
fn lnurl(check: &mut Checker, root: &Table, d: &LnurlConfig) -> LnurlConfig {
    let lnurl_section = check.section(root, "lnurl", &["allow_loopback_http"]);
    LnurlConfig {
        allow_loopback_http: check.field(
            lnurl_section,
            "lnurl",
            "allow_loopback_http",
            d.allow_loopback_http,
        ),
    }
}

/// `[sessions]`.
fn sessions(check: &mut Checker, root: &Table, d: &SessionsConfig) -> SessionsConfig {
    let section = check.section(
        root,
        "sessions",
        &["ttl_secs", "cleanup_secs", "tombstone_secs", "open_wallets"],
    );
    let ttl_secs = check.positive(section, "sessions", "ttl_secs", d.ttl_secs);
    let ttl_secs = if ttl_secs > MAX_SESSION_SECS {
        check.problem(
            "sessions.ttl_secs",
            format!("at most {} seconds", MAX_SESSION_SECS),
        );
        d.ttl_secs
    } else {
        ttl_secs
    };
    SessionsConfig {
        ttl_secs,
        cleanup_secs: check.positive(section, "sessions", "cleanup_secs", d.cleanup_secs),
        tombstone_secs: check.field(section, "sessions", "tombstone_secs", d.tombstone_secs),
        open_wallets: check.positive(section, "sessions", "open_wallets", d.open_wallets),
    }
}

/// `[limits]`: commands per sender and window.
fn limits(check: &mut Checker, root: &Table, d: &LimitsConfig) -> LimitsConfig {
    let section = check.section(
        root,
        "limits",
        &[
            "window_secs",
            "anonymous",
            "session",
            "admin",
            "max_tracked_senders",
        ],
    );
    LimitsConfig {
        window_secs: check.positive(section, "limits", "window_secs", d.window_secs),
        anonymous: check.positive(section, "limits", "anonymous", d.anonymous),
        session: check.positive(section, "limits", "session", d.session),
        admin: check.positive(section, "limits", "admin", d.admin),
        max_tracked_senders: check.positive(
            section,
            "limits",
            "max_tracked_senders",
            d.max_tracked_senders,
        ),
    }
}

/// `[metrics]`: an address on loopback unless `allow_public` says otherwise.
fn metrics(check: &mut Checker, root: &Table) -> MetricsConfig {
    let section = check.section(root, "metrics", &["listen", "allow_public"]);
    let allow_public = check.field(section, "metrics", "allow_public", false);
    let text: Option<String> = check.field(section, "metrics", "listen", None);
    let listen = text.and_then(|text| match text.parse::<std::net::SocketAddr>() {
        Ok(addr) if !addr.ip().is_loopback() && !allow_public => {
            check.problem(
                "metrics.listen",
                format!("{addr} is not loopback: the figures would be public; use 127.0.0.1, or set allow_public = true behind a firewall"),
            );
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            check.problem(
                "metrics.listen",
                format!("{text:?} is not an address:port such as \"127.0.0.1:9464\""),
            );
            None
        }
    });
    MetricsConfig {
        listen,
        allow_public,
    }
}

/// `[exchange]`.
fn exchange(check: &mut Checker, root: &Table, d: &ExchangeConfig) -> ExchangeConfig {
    const S: &str = "exchange";
    let section = check.section(
        root,
        S,
        &[
            "pay_secs",
            "listing_secs",
            "claim_secs",
            "receipt_secs",
            "confirm_secs",
            "issue_secs",
            "maker_bond",
            "taker_bond",
            "platform_fee",
            "taker_fee",
            "min_sats",
            "max_sats",
            "max_fiat",
            "max_open_per_session",
            "network",
            "instance",
            "alert_bp",
            "alert_min_offers",
        ],
    );
    let fee = |check: &mut Checker, key: &str, default: [u64; 2]| {
        let [flat, bp] = check.field(section, S, key, default);
        if bp > 10_000 {
            check.problem(
                &format!("{S}.{key}"),
                "basis points at most 10000 (100 %)".into(),
            );
            return default;
        }
        [flat, bp]
    };
    let maker_bond = fee(check, "maker_bond", d.maker_bond);
    let taker_bond = fee(check, "taker_bond", d.taker_bond);
    let platform_fee = fee(check, "platform_fee", d.platform_fee);
    let taker_fee = fee(check, "taker_fee", d.taker_fee);
    let min_sats = check.positive(section, S, "min_sats", d.min_sats);
    let max_sats = check.positive(section, S, "max_sats", d.max_sats);
    if min_sats > max_sats {
        check.problem("exchange.min_sats", "must not exceed max_sats".into());
    }
    let max_fiat: std::collections::BTreeMap<String, u64> =
        check.field(section, S, "max_fiat", d.max_fiat.clone());
    let max_fiat = max_fiat
        .into_iter()
        .filter_map(|(currency, max)| {
            if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) && max > 0 {
                Some((currency, max))
            } else {
                check.problem(
                    &format!("exchange.max_fiat.{currency}"),
                    "an ISO 4217 code in capitals = a positive whole amount".into(),
                );
                None
            }
        })
        .collect();
    let network: String = check.field(section, S, "network", d.network.clone());
    if !["mainnet", "testnet", "signet", "regtest"].contains(&network.as_str()) {
        check.problem(
            "exchange.network",
            "one of mainnet, testnet, signet, regtest".into(),
        );
    }
    let instance: Option<String> = check.field(section, S, "instance", d.instance.clone());
    if instance
        .as_ref()
        .is_some_and(|i| i.is_empty() || i.len() > 64)
    {
        check.problem("exchange.instance", "1 to 64 characters".into());
    }
    let alert_bp = check.positive(section, S, "alert_bp", d.alert_bp);
    ExchangeConfig {
        pay_secs: check.positive(section, S, "pay_secs", d.pay_secs),
        listing_secs: check.positive(section, S, "listing_secs", d.listing_secs),
        claim_secs: check.positive(section, S, "claim_secs", d.claim_secs),
        receipt_secs: check.positive(section, S, "receipt_secs", d.receipt_secs),
        confirm_secs: check.positive(section, S, "confirm_secs", d.confirm_secs),
        issue_secs: check.positive(section, S, "issue_secs", d.issue_secs),
        maker_bond,
        taker_bond,
        platform_fee,
        taker_fee,
        min_sats,
        max_sats,
        max_fiat,
        max_open_per_session: check.positive(
            section,
            S,
            "max_open_per_session",
            d.max_open_per_session,
        ),
        network,
        instance,
        alert_bp,
        alert_min_offers: check.positive(section, S, "alert_min_offers", d.alert_min_offers),
    }
}

/// `[rates]`: currency code = millisats per cent.
fn rates(check: &mut Checker, root: &Table) -> std::collections::BTreeMap<String, u64> {
    let mut rates = std::collections::BTreeMap::new();
    match root.get("rates") {
        None => {}
        Some(Value::Table(table)) => {
            for (code, value) in table {
                let valid_code = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
                match value.as_integer().and_then(|v| u64::try_from(v).ok()) {
                    Some(rate) if rate > 0 && valid_code => {
                        rates.insert(code.clone(), rate);
                    }
                    _ => check.problem(
                        &format!("rates.{code}"),
                        "expected an upper-case ISO 4217 code = millisats per cent (integer > 0)"
                            .to_owned(),
                    ),
                }
            }
        }
        Some(other) => check.problem(
            "rates",
            format!("expected a section, found {}", other.type_str()),
        ),
    }
    rates
}

/// Collects problems while reading values, so one pass reports them all.
#[derive(Default)]
struct Checker {
    problems: Vec<ConfigProblem>,
}

impl Checker {
    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(ConfigProblem {
            key: key.to_owned(),
            message,
        });
    }

    fn unknown_keys(&mut self, table: &Table, prefix: &str, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                self.problem(
                    &path,
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
    }

    fn section<'a>(&mut self, root: &'a Table, name: &str, known: &[&str]) -> Option<&'a Table> {
        match root.get(name)? {
            Value::Table(table) => {
                self.unknown_keys(table, name, known);
                Some(table)
            }
            other => {
                self.problem(
                    name,
                    format!("expected a section, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn field<T: DeserializeOwned>(
        &mut self,
        table: Option<&Table>,
        section: &str,
        key: &str,
        default: T,
    ) -> T {
        let Some(value) = table.and_then(|t| t.get(key)) else {
            return default;
        };
        match T::deserialize(value.clone()) {
            Ok(v) => v,
            Err(e) => {
                self.problem(&format!("{section}.{key}"), e.message().trim().to_owned());
                default
            }
        }
    }

    fn positive<T>(&mut self, table: Option<&Table>, section: &str, key: &str, default: T) -> T
    where
        T: DeserializeOwned + Default + PartialEq + Copy,
    {
        let value = self.field(table, section, key, default);
        if value == T::default() {
            self.problem(
                &format!("{section}.{key}"),
                "must be greater than 0".to_owned(),
            );
            return default;
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse(""), Ok(Config::default()));
    }

    #[test]
    fn foreign_mints_are_normalised_bounded_and_checked() {
        let foreign = Config::parse(
            "[mint]\nforeign_allow = [\"https://Mint.Example.com/\", \"http://127.0.0.1:3339\"]\nforeign_max_fee_percent = 3",
        )
        .map(|c| c.foreign_mints);
        assert_eq!(
            foreign,
            Ok(ForeignMintsConfig {
                allow: vec![
                    "https://mint.example.com".to_owned(),
                    "http://127.0.0.1:3339".to_owned()
                ],
                max_fee_percent: 3,
                min_fee_sats: 10,
            })
        );
        assert_eq!(
            keys("[mint]\nforeign_allow = [\"https://a.example\", \"https://A.example/\"]"),
            vec!["mint.foreign_allow[1]"]
        );
        assert_eq!(
            keys("[mint]\nforeign_allow = [\"ftp://a.example\"]"),
            vec!["mint.foreign_allow[0]"]
        );
        assert_eq!(
            keys("[mint]\nforeign_max_fee_percent = 60"),
            vec!["mint.foreign_max_fee_percent"]
        );
        let many: Vec<String> = (0..=MAX_FOREIGN_MINTS)
            .map(|i| format!("\"https://m{i}.example\""))
            .collect();
        assert_eq!(
            keys(&format!("[mint]\nforeign_allow = [{}]", many.join(", "))),
            vec!["mint.foreign_allow"]
        );
    }

    #[test]
    fn shipped_default_config_parses_to_the_defaults() {
        let text = include_str!("../relay-config/soko.toml");
        assert_eq!(Config::parse(text), Ok(Config::default()));
    }

    #[test]
    fn the_dev_mint_runs_only_on_loopback_or_when_the_file_says_so() {
        assert_eq!(keys("[relay]\nbind = \"::1\"\n[relays]\nurls = [\"ws://localhost:7001\", \"ws://127.0.0.2:7002\"]"), Vec::<String>::new());
        assert_eq!(keys("[relay]\nbind = \"0.0.0.0\""), ["mint.dev_public"]);
        assert_eq!(
            keys("[mint]\nembedded_dev = true\n[relays]\nurls = [\"wss://relay.example\"]"),
            ["mint.dev_public"]
        );
        assert_eq!(
            keys("[relay]\nbind = \"0.0.0.0\"\n[mint]\ndev_public = true"),
            Vec::<String>::new()
        );
        assert_eq!(
            keys("[relay]\nbind = \"0.0.0.0\"\n[mint]\nurl = \"https://mint.example\""),
            Vec::<String>::new()
        );
        let why = Config::parse("[relay]\nbind = \"0.0.0.0\"")
            .err()
            .map(|p| p[0].message.clone());
        assert!(why.is_some_and(|w| w.contains("0.0.0.0") && w.contains("[mint] url")));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            colour = "blue"
            [relay]
            port = "seven"
            bogus = 1
            bind = "localhost-ish"
            max_event_bytes = 0
            [relays]
            urls = ["http://not-a-relay", "wss://ok.example"]
            [mint]
            embedded_dev = true
            url = "https://mint.example"
            [log]
            level = "loud=="
            json = "yes"
            [market]
            catalog_max_entries = -5
            [rates]
            KES = 70
            usd = 1
            EUR = -3
            [ussd]
            bridges = ["npub1nope"]
            pin_tries = 0
            [admins]
            npubs = ["npub1nope"]
        "#;
        let mut found = keys(text);
        found.sort();
        assert_eq!(
            found,
            [
                "admins.npubs[0]",
                "colour",
                "log.json",
                "log.level",
                "market.catalog_max_entries",
                "mint.url",
                "rates.EUR",
                "rates.usd",
                "relay.bind",
                "relay.bogus",
                "relay.max_event_bytes",
                "relay.port",
                "relays.urls[0]",
                "ussd.bridges[0]",
                "ussd.pin_tries",
            ]
        );
    }

    #[test]
    fn ussd_bridges_take_npubs_and_hex() {
        let hex = "f916d184100631c6e9096a22bcffcbf991f14e5952e4f36b87a7ee41e9b80b32";
        let npub = "npub1lytdrpqsqccud6gfdg3tel7tlxglznje2tj0x6u85lhyr6dcpveqpjakwk";
        let text = format!("[ussd]\nbridges = [{hex:?}, {npub:?}]\nsession_secs = 60");
        let ussd = Config::parse(&text).map(|c| c.ussd);
        let key = nostr_sdk::PublicKey::parse(hex).ok();
        assert_eq!(
            ussd.as_ref()
                .map(|u| (u.bridges.first().copied(), u.bridges.get(1).copied())),
            Ok((key, key))
        );
        assert_eq!(ussd.map(|u| (u.session_secs, u.pin_tries)), Ok((60, 3)));
    }

    #[test]
    fn the_catalog_bound_is_set_and_checked() {
        assert_eq!(
            keys("[market]\nmax_held_percent = 101\nmax_unpaid_per_buyer = 0"),
            ["market.max_unpaid_per_buyer", "market.max_held_percent"]
        );
        let cfg = Config::parse("[market]\ncatalog_max_entries = 3").map(|c| c.market);
        assert_eq!(cfg.map(|m| m.catalog_max_entries), Ok(3));
        assert_eq!(
            keys("[market]\ncatalog_max_entries = 0"),
            ["market.catalog_max_entries"]
        );
    }

    #[test]
    fn the_footprint_settings_are_set_and_checked() {
        let defaults = Config::parse("").map(|c| c.market);
        assert_eq!(
            defaults.map(|m| (m.order_retention_secs, m.consolidate_proofs_above)),
            Ok((30 * 24 * 3600, 200))
        );
        let cfg =
            Config::parse("[market]\norder_retention_secs = 60\nconsolidate_proofs_above = 10")
                .map(|c| c.market);
        assert_eq!(
            cfg.map(|m| (m.order_retention_secs, m.consolidate_proofs_above)),
            Ok((60, 10))
        );
        assert_eq!(
            keys("[market]\norder_retention_secs = 0\nconsolidate_proofs_above = 9"),
            [
                "market.order_retention_secs",
                "market.consolidate_proofs_above"
            ]
        );
    }

    #[test]
    fn the_gift_wrap_backdate_cannot_refuse_fresh_wraps() {
        let relay = |text: &str| Config::parse(text).map(|c| c.relay);
        assert_eq!(
            relay("").map(|r| r.gift_wrap_backdate_secs),
            Ok(2 * 24 * 3600)
        );
        let shorter = relay("[relay]\nretention_secs = 172800\ngift_wrap_backdate_secs = 0");
        assert_eq!(shorter.map(|r| r.gift_wrap_backdate_secs), Ok(0));
        assert_eq!(
            keys("[relay]\nretention_secs = 3600\ngift_wrap_backdate_secs = 86400"),
            ["relay.gift_wrap_backdate_secs"]
        );
    }

    #[test]
    fn admins_are_npubs_or_hex() {
        let key = nostr_sdk::Keys::generate().public_key();
        let npub = nostr_sdk::ToBech32::to_bech32(&key).unwrap_or_default();
        let text = format!("[admins]\nnpubs = [\"{npub}\", \"{}\"]", key.to_hex());
        assert_eq!(Config::parse(&text).map(|c| c.admins), Ok(vec![key, key]));
        assert_eq!(keys("[admins]\nnpubs = [\"bob\"]"), ["admins.npubs[0]"]);
    }

    #[test]
    fn loopback_lnurl_is_off_unless_asked() {
        assert!(!Config::default().lnurl.allow_loopback_http);
        let cfg = Config::parse("[lnurl]\nallow_loopback_http = true").map(|c| c.lnurl);
        assert_eq!(cfg.map(|l| l.allow_loopback_http), Ok(true));
        assert_eq!(
            keys("[lnurl]\nallow_loopback_http = \"yes\""),
            ["lnurl.allow_loopback_http"]
        );
    }

    #[test]
    fn limits_default_to_the_issue_and_must_be_positive() {
        let d = Config::default().limits;
        assert_eq!(
            (d.window_secs, d.anonymous, d.session, d.admin),
            (900, 100, 1000, 5000)
        );
        let cfg = Config::parse("[limits]\nanonymous = 5\nwindow_secs = 60").map(|c| c.limits);
        assert_eq!(
            cfg.map(|l| (l.anonymous, l.window_secs, l.session)),
            Ok((5, 60, 1000))
        );
        assert_eq!(
            keys("[limits]\nadmin = 0\nmax_tracked_senders = -1\nburst = 3"),
            ["limits.burst", "limits.admin", "limits.max_tracked_senders"]
        );
    }

    #[test]
    fn the_metrics_endpoint_is_off_and_on_loopback_unless_said() {
        assert_eq!(Config::default().metrics.listen, None);
        let on = Config::parse("[metrics]\nlisten = \"127.0.0.1:9464\"").map(|c| c.metrics.listen);
        assert_eq!(on, Ok(Some(([127, 0, 0, 1], 9464).into())));
        assert_eq!(
            keys("[metrics]\nlisten = \"0.0.0.0:9464\""),
            ["metrics.listen"]
        );
        assert_eq!(keys("[metrics]\nlisten = \"9464\""), ["metrics.listen"]);
        assert_eq!(
            keys("[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_public = true"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn syntax_error_is_one_problem() {
        assert_eq!(keys("[relay\nport = 1"), [""]);
    }

    #[test]
    fn external_mint_needs_a_url() {
        assert_eq!(keys("[mint]\nembedded_dev = false"), ["mint.url"]);
        let cfg = Config::parse("[mint]\nurl = \"https://mint.example\"").map(|c| c.mint);
        assert_eq!(
            cfg,
            Ok(MintConfig::External {
                url: "https://mint.example".into(),
                requests_per_minute: DEFAULT_MINT_REQUESTS_PER_MINUTE,
            })
        );
        assert_eq!(
            keys("[mint]\nurl = \"https://m.example\"\nrequests_per_minute = 0"),
            ["mint.requests_per_minute"]
        );
    }
    #[test]
    fn exchange_bounds_are_checked() {
        let x = Config::default().exchange;
        assert_eq!(
            (x.pay_secs, x.confirm_secs, x.maker_bond),
            (120, 500, [1000, 500])
        );
        assert_eq!(
            keys("[exchange]\nmaker_bond = [1000, 10001]"),
            ["exchange.maker_bond"]
        );
        assert_eq!(keys("[exchange]\nnetwork = \"moon\""), ["exchange.network"]);
        assert_eq!(
            keys("[exchange]\nmax_fiat = { kes = 5 }"),
            ["exchange.max_fiat.kes"]
        );
        assert_eq!(
            keys("[exchange]\nmin_sats = 10\nmax_sats = 5"),
            ["exchange.min_sats"]
        );
        assert_eq!(keys("[exchange]\npay_secs = 0"), ["exchange.pay_secs"]);
        assert_eq!(keys("[exchange]\nbond = 1"), ["exchange.bond"]);
        assert_eq!(
            Config::parse("[exchange]\ninstance = \"nairobi\"").map(|c| c.exchange.instance),
            Ok(Some("nairobi".to_owned()))
        );
    }

    #[test]
    fn sessions_last_at_most_an_hour() {
        assert_eq!(Config::default().sessions.ttl_secs, MAX_SESSION_SECS);
        assert_eq!(
            Config::parse("[sessions]\nttl_secs = 600").map(|c| c.sessions.ttl_secs),
            Ok(600)
        );
        assert_eq!(keys("[sessions]\nttl_secs = 3601"), ["sessions.ttl_secs"]);
        assert_eq!(keys("[sessions]\nttl_secs = 0"), ["sessions.ttl_secs"]);
        assert_eq!(
            keys("[sessions]\nopen_wallets = 0"),
            ["sessions.open_wallets"]
        );
        assert_eq!(keys("[sessions]\nlifetime = 60"), ["sessions.lifetime"]);
    }

    #[test]
    fn dev_mint_auth_is_off_by_default_and_only_for_the_embedded_mint() {
        assert_eq!(Config::default().dev_mint_auth, None);
        assert_eq!(Config::parse("").map(|c| c.dev_mint_auth), Ok(None));
        assert_eq!(
            Config::parse("[mint]\nauth = true").map(|c| c.dev_mint_auth),
            Ok(Some(DevMintAuth {
                bat_max_mint: DEFAULT_BAT_MAX_MINT,
                issuer_port: DEFAULT_DEV_ISSUER_PORT,
            }))
        );
        assert_eq!(
            Config::parse("[mint]\nauth = true\nbat_max_mint = 5\ndev_issuer_port = 0")
                .map(|c| c.dev_mint_auth),
            Ok(Some(DevMintAuth {
                bat_max_mint: 5,
                issuer_port: 0,
            }))
        );
        assert_eq!(
            keys("[mint]\nauth = true\nbat_max_mint = 0"),
            ["mint.bat_max_mint"]
        );
        assert_eq!(
            keys("[mint]\nurl = \"https://m.example\"\nauth = true\nbat_max_mint = 9"),
            ["mint.auth", "mint.bat_max_mint"]
        );
        let problems = Config::parse("[mint]\nurl = \"https://m.example\"\nauth = false");
        assert!(problems.is_err_and(|p| p[0].message.contains("embedded dev mint only")));
    }
}
