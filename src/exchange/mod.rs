//! The P2P exchange (`kinds/exchange.md`): a maker offers sats for a fiat bill paid, a taker
//! pays the bill and earns them; both post bonds, soko holds escrow and bonds in their
//! private sessions' wallets and lists the offer on a public NIP-69 book that names neither.
//!
//! Every move is one [`state::transition`], recorded in one sled transaction together with
//! what it sends (DMs, the book event, signed before, staged in the outbox) and the money it
//! moves ([`records::Transfer`]s, each made idempotent by its id), so a crash at any point
//! resumes where it stopped and never pays twice.

pub mod alarm;
pub mod amounts;
pub mod audit;
pub mod book;
mod dispute;
pub mod error;
mod offers;
pub mod ports;
pub mod providers;
pub mod records;
pub mod reputation;
pub mod reveal;
mod settle;
pub mod state;
mod timers;

use std::collections::HashMap;
use std::sync::Arc;

use nostr_sdk::{Event, EventId, PublicKey};
use serde::{Deserialize, Serialize};
use sled::transaction::Transactional;

pub use self::amounts::{Amounts, Outcome, Schedule, Side};
pub use self::error::{ExchangeError, ExchangeRefusal};
pub use self::ports::{Collected, Invoice, PayoutRefusal, PurseError, Purses, Registered};
pub use self::records::OfferRecord;
pub use self::state::{OfferEvent, OfferState};
use crate::clock::Clock;
use crate::market::Rates;
use crate::metrics::Metrics;
use crate::money::Sats;
use crate::outbound::{Publisher, Scheme};
use crate::store::{Store, StoreError, Typed};
use crate::vault::Vault;
use crate::wallet::Wallet;

/// How long each window lasts, in seconds (OpenPleb's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// To pay the maker's invoice.
    pub pay: u64,
    /// On the book without a taker.
    pub listing: u64,
    /// To pay the taker's bond after claiming.
    pub claim: u64,
    /// To submit a receipt once the bond is paid.
    pub receipt: u64,
    /// For the maker to confirm a receipt.
    pub confirm: u64,
    /// Added once an issue is marked, for the other side to answer.
    pub issue: u64,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            pay: 120,
            listing: 300,
            claim: 300,
            receipt: 300,
            confirm: 500,
            issue: 250,
        }
    }
}

/// How the exchange runs.
#[derive(Debug, Clone)]
pub struct ExchangeRules {
    /// Bonds and fees.
    pub schedule: Schedule,
    /// Timeouts.
    pub windows: Windows,
    /// Largest bill per currency, in whole units.
    pub max_fiat: HashMap<String, u64>,
    /// Largest escrow.
    pub max_sats: Sats,
    /// Smallest escrow.
    pub min_sats: Sats,
    /// Millisats per cent, by currency (offers priced by a premium over the rate).
    pub rates: Rates,
    /// The book's `network` tag.
    pub network: String,
    /// The book's instance name (`y` tag).
    pub instance: Option<String>,
    /// Open offers and claims one session may have at once.
    pub max_open_per_session: usize,
    /// Dispute rate (basis points) above which admins are told.
    pub alert_bp: u32,
    /// Offers taken in the day before the rate counts.
    pub alert_min_offers: u64,
}

impl Default for ExchangeRules {
    fn default() -> Self {
        Self {
            schedule: Schedule::default(),
            windows: Windows::default(),
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
            max_sats: Sats(5_000_000),
            min_sats: Sats(1_000),
            rates: Rates::default(),
            network: "mainnet".to_owned(),
            instance: None,
            max_open_per_session: 4,
            alert_bp: 1_000,
            alert_min_offers: 10,
        }
    }
}

/// What the exchange is built from.
pub struct ExchangeParts {
    /// The session wallets.
    pub purses: Arc<dyn Purses>,
    /// Who registered.
    pub registered: Arc<dyn Registered>,
    /// soko's fee wallet.
    pub house: Wallet,
    /// Signs and queues DMs and the book.
    pub publisher: Publisher,
    /// soko's bot key (author of the book and the DMs).
    pub bot: PublicKey,
    /// Seals bills, receipts and evidence.
    pub vault: Vault,
    /// The wallet master seed (the reputation key derives from it).
    pub seed: [u8; 64],
    /// The time windows are judged by.
    pub clock: Clock,
    /// Offer figures.
    pub metrics: Metrics,
    /// soko's admins (dispute alerts).
    pub admins: Vec<PublicKey>,
}

/// Per-session settings (`exchange_settings`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The currency offers default to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Whether a payout Lightning address is set (the address itself is the session's).
    #[serde(default)]
    pub payout_set: bool,
}

/// Disputes seen per revealed key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeStats {
    /// Issues this key marked.
    pub marked: u32,
    /// Disputes it took part in.
    pub disputed: u32,
    /// Won.
    pub won: u32,
    /// Lost.
    pub lost: u32,
}

/// The exchange.
#[derive(Clone)]
pub struct Exchange {
    inner: Arc<Inner>,
}

struct Inner {
    offers: Typed<OfferRecord>,
    /// Offers not yet final or still settling: what the timer pass walks.
    open: Typed<u64>,
    /// `session id / offer id` → side, for a session's offers and its limit.
    by_session: Typed<Side>,
    /// Reveal event ids used → when.
    reveals: Typed<u64>,
    /// Revealed key (hex) → its disputes.
    stats: Typed<DisputeStats>,
    /// Session id → settings.
    settings: Typed<Settings>,
    reputation: reputation::Reputation,
    providers: providers::Providers,
    audit: audit::Audit,
    purses: Arc<dyn Purses>,
    registered: Arc<dyn Registered>,
    house: Wallet,
    publisher: Publisher,
    bot: PublicKey,
    vault: Vault,
    clock: Clock,
    metrics: Metrics,
    admins: Vec<PublicKey>,
    rules: ExchangeRules,
    alarm: std::sync::Mutex<alarm::DisputeAlarm>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("offers", &self.inner.offers.len())
            .field("open", &self.inner.open.len())
            .finish_non_exhaustive()
    }
}

/// What one state change sends and burns, committed with the record.
#[derive(Default)]
struct Effects {
    /// DMs and the book event, signed.
    events: Vec<Event>,
    /// Reputation tokens burned.
    burn: Vec<reputation::Spend>,
    /// A reveal event used.
    reveal: Option<EventId>,
    /// An admin action.
    audit: Option<audit::AuditEntry>,
    /// Dispute figures of revealed keys.
    stats: Vec<(PublicKey, DisputeStats)>,
    /// The session index entry to add.
    index: Option<(String, Side)>,
}

impl Exchange {
    /// Opens the exchange stored in `store`; providers get their defaults on first start.
    pub fn open(
        store: &Store,
        parts: ExchangeParts,
        rules: ExchangeRules,
    ) -> Result<Self, ExchangeError> {
        let providers = providers::Providers::open(store)?;
        if providers
            .all()
            .map_err(|e| ExchangeError::Internal(e.to_string()))?
            .is_empty()
        {
            for provider in providers::defaults() {
                providers
                    .put(provider)
                    .map_err(|e| ExchangeError::Internal(e.to_string()))?;
            }
        }
        let exchange = Self {
            inner: Arc::new(Inner {
                offers: store.tree("exchange/offers")?,
                open: store.tree("exchange/open")?,
                by_session: store.tree("exchange/by_session")?,
                reveals: store.tree("exchange/reveals")?,
                stats: store.tree("exchange/dispute_stats")?,
                settings: store.tree("exchange/settings")?,
                reputation: reputation::Reputation::open(store, &parts.seed)?,
                providers,
                audit: audit::Audit::open(store, audit::TREE)?,
                purses: parts.purses,
                registered: parts.registered,
                house: parts.house,
                publisher: parts.publisher,
                bot: parts.bot,
                vault: parts.vault,
                clock: parts.clock,
                metrics: parts.metrics,
                admins: parts.admins,
                rules,
                alarm: std::sync::Mutex::new(alarm::DisputeAlarm::default()),
                locks: (0..LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        };
        exchange.hold_again()?;
        Ok(exchange)
    }

    /// Holds again every session an open offer needs. An offer is committed before its
    /// session is held (a hold for an offer never stored would keep the session from ever
    /// closing), so a crash between the two leaves a trade whose side could close its
    /// session, taking its bond or escrow, or let it expire under ecash coming to it. Run at
    /// open, before the bot or the session cleanup pass can act on such a session.
    fn hold_again(&self) -> Result<(), ExchangeError> {
        let inner = &self.inner;
        for entry in inner.open.iter() {
            let (id, _) = entry?;
            let Some(record) = inner.offers.get(&id)? else {
                continue;
            };
            for session in record.involved.iter().filter(|s| record.needs(s)) {
                // One session's wallet failing must not keep soko from starting; the offer's
                // other steps report it again.
                if let Err(e) = inner.purses.hold(session, &offers::hold_name(&record.id)) {
                    tracing::warn!(offer = %record.id, error = %e, "an open offer's session could not be held again");
                }
            }
        }
        Ok(())
    }

    /// The reputation keyset users blind their outputs for.
    pub fn reputation_keyset(&self) -> crate::proto::reputation::RepKeyset {
        self.inner.reputation.keyset()
    }

    /// The fiat providers offers may name.
    pub fn providers(&self) -> &providers::Providers {
        &self.inner.providers
    }

    /// The stored offer `id`.
    pub fn offer(&self, id: &str) -> Result<Option<OfferRecord>, ExchangeError> {
        Ok(self.inner.offers.get(id.as_bytes())?)
    }

    /// Every offer, final ones too (admins, tests, the books check).
    pub fn all(&self) -> Result<Vec<OfferRecord>, ExchangeError> {
        let mut all = Vec::new();
        for entry in self.inner.offers.iter() {
            all.push(entry?.1);
        }
        Ok(all)
    }

    /// The dispute figures of a revealed key.
    pub fn dispute_stats(&self, key: &PublicKey) -> Result<DisputeStats, ExchangeError> {
        Ok(self
            .inner
            .stats
            .get(key.to_hex().as_bytes())?
            .unwrap_or_default())
    }

    /// The admin audit trail, oldest first.
    pub fn audit_trail(&self) -> Result<Vec<(u64, audit::AuditEntry)>, ExchangeError> {
        Ok(self.inner.audit.since(0, usize::MAX)?)
    }

    /// Ecash in soko's fee wallet.
    pub async fn house_balance(&self) -> Result<Sats, ExchangeError> {
        let balance = self
            .inner
            .house
            .total_balance()
            .await
            .map_err(|e| ExchangeError::Internal(format!("fee wallet: {e}")))?;
        Ok(Sats::from(balance))
    }

    /// Finishes what the fee wallet left half-done at a crash; call once at start.
    pub async fn recover(&self) {
        match crate::wallet::recover(&self.inner.house).await {
            Ok(report) if !report.is_empty() => {
                tracing::info!(
                    ?report,
                    "the fee wallet finished operations a stop interrupted"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "the fee wallet could not recover"),
        }
    }

    /// The lock of offer `id`'s stripe: commands and the timer pass never interleave on one
    /// offer.
    async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let stripe = (hasher.finish() % LOCK_STRIPES as u64) as usize;
        self.inner.locks[stripe].lock().await
    }

    /// The offer `id` as `session` may see it, and which side `session` is on.
    fn party(&self, id: &str, session: &str) -> Result<(OfferRecord, Side), ExchangeError> {
        let record = self
            .inner
            .offers
            .get(id.as_bytes())?
            .ok_or(ExchangeRefusal::UnknownOffer)?;
        if record.maker.session == session {
            return Ok((record, Side::Maker));
        }
        if record.taker.as_ref().is_some_and(|t| t.session == session) {
            return Ok((record, Side::Taker));
        }
        Err(ExchangeRefusal::UnknownOffer.into())
    }

    /// A JSON notice by DM to a session key (`kinds/exchange.md`, "Notices").
    async fn notice(
        &self,
        to: PublicKey,
        record: &OfferRecord,
        text: &str,
        extra: serde_json::Value,
    ) -> Result<Event, ExchangeError> {
        let mut body = serde_json::json!({
            "v": 1,
            "notice": "offer",
            "offer": record.id,
            "state": record.state.name(),
            "text": text,
        });
        if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        // Through the wire type: a notice that strays from `kinds/exchange.md` fails here.
        let typed: crate::proto::exchange::ExchangeNotice = serde_json::from_value(body)
            .map_err(|e| ExchangeError::Internal(format!("notice: {e}")))?;
        let text = serde_json::to_string(&typed)
            .map_err(|e| ExchangeError::Internal(format!("notice: {e}")))?;
        Ok(self
            .inner
            .publisher
            .seal_dm(&self.inner.bot, to, Scheme::Nip17, &text)
            .await?)
    }

    /// The book event for `record`'s current state, signed, or `None` while it is private.
    fn book_event(&self, record: &OfferRecord) -> Result<Option<Event>, ExchangeError> {
        use book::BookStatus;
        let status = match record.state {
            OfferState::Created => return Ok(None),
            OfferState::Error if record.outcome.is_none() => return Ok(None),
            OfferState::InvoicePaid => BookStatus::Pending,
            OfferState::Claimed
            | OfferState::TakerBondPaid
            | OfferState::ReceiptSubmitted
            | OfferState::MarkedWithIssue
            | OfferState::Disputed => BookStatus::InProgress,
            OfferState::Completed => BookStatus::Success,
            OfferState::Expired => BookStatus::Expired,
            OfferState::Canceled
            | OfferState::Forfeit
            | OfferState::Resolved
            | OfferState::Error => BookStatus::Canceled,
        };
        let expires_at = if record.deadline > 0 {
            record.deadline
        } else {
            self.inner.clock.now() + self.inner.rules.windows.listing
        };
        let entry = book::BookEntry {
            d: record.id.clone(),
            status,
            sats: record.amounts.escrow,
            fiat_amount: record.terms.fiat_amount.clone(),
            currency: record.terms.currency.clone(),
            methods: vec![record.terms.provider_name.clone()],
            premium: record.terms.premium,
            expires_at,
            network: self.inner.rules.network.clone(),
            instance: self.inner.rules.instance.clone(),
            staked: record.maker.stake.staked,
        };
        let keys = self.inner.publisher.keyring().bot().clone();
        let event = book::event(&entry)
            .map_err(|e| ExchangeError::Internal(format!("book event: {e}")))?
            .sign_with_keys(&keys)
            .map_err(|e| ExchangeError::Publish(e.to_string()))?;
        Ok(Some(event))
    }

    /// Stores `record` with everything its move sends, burns and notes, in one transaction.
    fn commit(&self, record: &OfferRecord, fx: Effects) -> Result<(), ExchangeError> {
        let inner = &self.inner;
        let encoded = inner.offers.encode(record)?;
        let open = !record.state.is_final() || record.settling();
        let staged = fx
            .events
            .iter()
            .map(|e| inner.publisher.outbox().stage(e))
            .collect::<Result<Vec<_>, _>>()?;
        let now = inner.clock.now();
        let when = inner.reveals.encode(&now)?;
        let stats = fx
            .stats
            .iter()
            .map(|(key, s)| Ok((key.to_hex(), inner.stats.encode(s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let index = fx
            .index
            .as_ref()
            .map(|(session, side)| {
                Ok::<_, StoreError>((
                    format!("{session}/{}", record.id),
                    inner.by_session.encode(side)?,
                ))
            })
            .transpose()?;
        let trees: [&sled::Tree; 8] = [
            inner.offers.raw(),
            inner.open.raw(),
            inner.publisher.outbox().raw(),
            inner.reputation.spent_tree(),
            inner.reveals.raw(),
            inner.audit.raw(),
            inner.stats.raw(),
            inner.by_session.raw(),
        ];
        let result = trees[..].transaction(|t| {
            use sled::transaction::ConflictableTransactionError as Abort;
            t[0].insert(record.id.as_bytes(), encoded.as_slice())?;
            if open {
                t[1].insert(record.id.as_bytes(), when.as_slice())?;
            } else {
                t[1].remove(record.id.as_bytes())?;
            }
            for s in &staged {
                s.insert(&t[2])?;
            }
            reputation::mark_spent(&t[3], &fx.burn, now).map_err(|e| match e {
                Abort::Abort(r) => Abort::Abort(Aborted::Spent(r)),
                Abort::Storage(e) => Abort::Storage(e),
                // The enum is non-exhaustive; sled has no other variant today.
                _ => Abort::Abort(Aborted::Store(StoreError::Task(
                    "reputation burn failed".to_owned(),
                ))),
            })?;
            if let Some(id) = fx.reveal {
                if t[4].insert(id.as_bytes(), when.as_slice())?.is_some() {
                    return Err(Abort::Abort(Aborted::RevealReused));
                }
            }
            if let Some(entry) = &fx.audit {
                audit::Audit::append_in::<Aborted>(&t[5], entry)?;
            }
            for (key, s) in &stats {
                t[6].insert(key.as_bytes(), s.as_slice())?;
            }
            if let Some((key, side)) = &index {
                t[7].insert(key.as_bytes(), side.as_slice())?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.deliver(fx.events);
                Ok(())
            }
            Err(sled::transaction::TransactionError::Abort(Aborted::Spent(r))) => {
                Err(ExchangeRefusal::Reputation(r.to_string()).into())
            }
            Err(sled::transaction::TransactionError::Abort(Aborted::RevealReused)) => {
                Err(ExchangeRefusal::RevealReused.into())
            }
            Err(sled::transaction::TransactionError::Abort(Aborted::Store(e))) => Err(e.into()),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(StoreError::from(e).into()),
        }
    }

    /// Sends what a commit staged now rather than at the outbox's next retry pass, up to
    /// 10 s later: a trader waits on these notices at every step. Off the caller's path, so
    /// no offer lock is held across relay round trips; a send that fails stays in the outbox
    /// for the retry pass, and without a runtime (a sync caller) the retry pass sends it.
    fn deliver(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let outbox = self.inner.publisher.outbox().clone();
        runtime.spawn(async move {
            for event in &events {
                if let Err(e) = outbox.deliver(event).await {
                    tracing::warn!(event_id = %event.id, error = %e, "a staged event was not sent; the outbox retries it");
                }
            }
        });
    }

    /// Stores `record` with the notices its move sends.
    fn commit_events(&self, record: &OfferRecord, events: Vec<Event>) -> Result<(), ExchangeError> {
        self.commit(
            record,
            Effects {
                events,
                ..Effects::default()
            },
        )
    }

    /// Open offers and claims of `session`.
    fn open_of(&self, session: &str) -> Result<Vec<(String, Side)>, ExchangeError> {
        let mut found = Vec::new();
        for entry in self
            .inner
            .by_session
            .raw()
            .scan_prefix(format!("{session}/"))
        {
            let (key, side) = entry.map_err(StoreError::from)?;
            let side: Side = self.inner.by_session.decode(&side)?;
            let key = String::from_utf8_lossy(&key);
            if let Some((_, offer)) = key.split_once('/') {
                found.push((offer.to_owned(), side));
            }
        }
        Ok(found)
    }
}

/// Why the commit transaction stopped.
enum Aborted {
    Spent(reputation::RepRefusal),
    RevealReused,
    Store(StoreError),
}

impl From<StoreError> for Aborted {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Lock stripes.
const LOCK_STRIPES: usize = 64;

/// 16 random bytes, hex: the offer's public id.
fn new_id() -> String {
    use nostr_sdk::secp256k1::rand::{rngs::OsRng, RngCore};
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
