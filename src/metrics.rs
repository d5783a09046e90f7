//! Operations figures: sessions, BAT verifications, session wallets, the escrow's wallet
//! operations, orders, exchange offers and rate-limit refusals. One [`Metrics`] handle, cheap to clone, is
//! given to whoever counts; the admin `metrics` command reads a [`Snapshot`] and the
//! optional Prometheus endpoint the text of [`Metrics::encode`], both from the same figures.
//!
//! Counting is a few atomic operations; nothing here waits on I/O. Label values are fixed
//! strings (outcomes, operation names, tiers), never keys or ids, so the number of series
//! stays small.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::clock::Clock;
use crate::money::Sats;
use crate::ratelimit::Tier;

/// Seconds in a day: "today" is the current UTC day of the services' clock.
const DAY_SECS: u64 = 86_400;

/// The offers' rolling figures are kept per minute of the services' clock.
const MINUTE_SECS: u64 = 60;

/// The rolling window of the `metrics` command's offer figures.
const HOUR: Duration = Duration::from_secs(3_600);

/// How far back offer events are kept, and so the longest window
/// [`Metrics::dispute_rate_bp`] looks at (a longer one is cut to this). At most one bucket
/// per minute: 1440 small buckets at worst.
pub const OFFER_WINDOW_MAX: Duration = Duration::from_secs(DAY_SECS);

/// Offer states as label values, lowercase (`kinds/exchange.md`'s names). A state given in
/// any case maps to one of these; anything else is counted as `other`, so a caller's typo
/// cannot grow the number of series.
const OFFER_STATES: [&str; 13] = [
    "created",
    "invoice_paid",
    "claimed",
    "taker_bond_paid",
    "receipt_submitted",
    "completed",
    "expired",
    "canceled",
    "marked_with_issue",
    "forfeit",
    "disputed",
    "resolved",
    "error",
];

/// The states an offer ends in, shown from the start at zero.
const OFFER_ENDINGS: [&str; 6] = [
    "completed",
    "expired",
    "canceled",
    "forfeit",
    "resolved",
    "error",
];

/// The states in which soko holds an offer's ecash, shown from the start at zero.
const OFFER_HOLDING: [&str; 6] = [
    "invoice_paid",
    "claimed",
    "taker_bond_paid",
    "receipt_submitted",
    "marked_with_issue",
    "disputed",
];

/// The label for an unknown state.
const OTHER_STATE: &str = "other";

fn offer_state_label(state: &str) -> &'static str {
    OFFER_STATES
        .into_iter()
        .find(|known| known.eq_ignore_ascii_case(state))
        .unwrap_or(OTHER_STATE)
}

/// How a BAT verification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatOutcome {
    /// Valid and burnt: the session opened.
    Ok,
    /// Not valid: replayed, bad DLEQ, another mint's, or auth off.
    Refused,
    /// Could not be decided: the mint was unreachable or soko failed.
    Failed,
}

impl BatOutcome {
    fn as_str(self) -> &'static str {
        match self {
            BatOutcome::Ok => "ok",
            BatOutcome::Refused => "refused",
            BatOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WalletOpLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrderLabel {
    event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Offer events of one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OfferMinute {
    minute: u64,
    created: u64,
    taken: u64,
    completed: u64,
    completed_secs: u64,
    disputed: u64,
}

impl OfferMinute {
    fn add(&mut self, other: &OfferMinute) {
        self.created += other.created;
        self.taken += other.taken;
        self.completed += other.completed;
        self.completed_secs = self.completed_secs.saturating_add(other.completed_secs);
        self.disputed += other.disputed;
    }
}

/// Offer events by minute, oldest first, only minutes that had one, none older than
/// [`OFFER_WINDOW_MAX`]: a rolling window without keeping every event.
#[derive(Debug, Default)]
struct OfferMinutes {
    minutes: VecDeque<OfferMinute>,
}

impl OfferMinutes {
    fn record(&mut self, now: u64, event: impl FnOnce(&mut OfferMinute)) {
        self.prune(now);
        let minute = now / MINUTE_SECS;
        // The system clock may step back (NTP); such an event joins the newest minute
        // rather than breaking the order the pruning relies on.
        match self.minutes.back_mut() {
            Some(last) if last.minute >= minute => event(last),
            _ => {
                let mut bucket = OfferMinute {
                    minute,
                    ..OfferMinute::default()
                };
                event(&mut bucket);
                self.minutes.push_back(bucket);
            }
        }
    }

    fn prune(&mut self, now: u64) {
        let first = first_minute(now, OFFER_WINDOW_MAX);
        while self.minutes.front().is_some_and(|m| m.minute < first) {
            self.minutes.pop_front();
        }
    }

    /// The events of the last `window` (whole minutes, the current one included).
    fn sum(&mut self, now: u64, window: Duration) -> OfferMinute {
        self.prune(now);
        let first = first_minute(now, window.min(OFFER_WINDOW_MAX));
        let mut total = OfferMinute {
            minute: first,
            ..OfferMinute::default()
        };
        for bucket in self.minutes.iter().filter(|m| m.minute >= first) {
            total.add(bucket);
        }
        total
    }
}

/// The first minute inside `window` back from `now`: a window of an hour covers the current
/// minute and the 59 before it.
fn first_minute(now: u64, window: Duration) -> u64 {
    (now / MINUTE_SECS + 1).saturating_sub(window.as_secs().div_ceil(MINUTE_SECS))
}

/// Disputes per offers that reached a taker, in basis points; `None` below `min_offers`
/// (or with none at all). Rounded down, at most 10000: a dispute of an offer taken before
/// the window would otherwise count without its offer.
fn dispute_rate(events: &OfferMinute, min_offers: u64) -> Option<u32> {
    if events.taken == 0 || events.taken < min_offers {
        return None;
    }
    let bp = events.disputed.saturating_mul(10_000) / events.taken;
    Some(u32::try_from(bp.min(10_000)).unwrap_or(10_000))
}

/// Orders of one UTC day, counted as they happen.
#[derive(Debug, Clone, Copy, Default)]
struct Today {
    day: u64,
    created: u64,
    paid: u64,
    completed: u64,
}

/// The figures. A clone counts into the same ones.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    clock: Clock,
    started: u64,
    sessions_active: Gauge,
    sessions_opened: Counter,
    session_seconds: Histogram,
    session_wallets_open: Gauge,
    session_ecash_sat: Gauge,
    cleanup_runs: Family<OutcomeLabel, Counter>,
    bat_verifications: Family<OutcomeLabel, Counter>,
    bat_seconds: Histogram,
    wallet_ops: Family<WalletOpLabels, Counter>,
    // For the snapshot, not registered: the histograms keep their sums and counts to
    // themselves, and the wallet's operations are summed over their labels.
    sessions_ended: Counter,
    session_secs_sum: Counter,
    bats: Counter,
    bat_micros_sum: Counter,
    wallet_ops_all: Counter,
    wallet_failures: Counter,
    orders: Family<OrderLabel, Counter>,
    orders_today: Family<OrderLabel, Gauge>,
    rate_limited: Family<TierLabel, Counter>,
    today: Mutex<Today>,
    offers: Family<OrderLabel, Counter>,
    offers_last_hour: Family<OrderLabel, Gauge>,
    offer_seconds: Histogram,
    offers_ended: Family<StateLabel, Counter>,
    offer_ecash_sat: Family<StateLabel, Gauge>,
    offer_minutes: Mutex<OfferMinutes>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Clock::system())
    }
}

impl Metrics {
    /// Fresh figures; "today" is the UTC day of `clock`.
    pub fn new(clock: Clock) -> Self {
        let mut registry = Registry::with_prefix("soko");
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Private sessions open now",
            sessions_active.clone(),
        );
        let sessions_opened = Counter::default();
        registry.register(
            "sessions_opened",
            "Private sessions opened",
            sessions_opened.clone(),
        );
        // 1 min .. about 4 h: sessions last at most an hour by default.
        let session_seconds = Histogram::new(exponential_buckets(60.0, 2.0, 8));
        registry.register(
            "session_duration_seconds",
            "Lengths of ended sessions (closed or expired); sum / count is the average",
            session_seconds.clone(),
        );
        let session_wallets_open = Gauge::default();
        registry.register(
            "session_wallets_open",
            "Session wallets open in memory now",
            session_wallets_open.clone(),
        );
        let session_ecash_sat = Gauge::default();
        registry.register(
            "session_ecash_sats",
            "Ecash held in all session wallets, in sats",
            session_ecash_sat.clone(),
        );
        let cleanup_runs = Family::default();
        registry.register(
            "session_cleanup_runs",
            "Runs of the expired-session cleanup, by outcome (ok, failed)",
            cleanup_runs.clone(),
        );
        let bat_verifications = Family::default();
        registry.register(
            "bat_verifications",
            "Blind auth token verifications, by outcome (ok, refused, failed)",
            bat_verifications.clone(),
        );
        // 1 ms .. about 4 s: the embedded mint answers in microseconds, an external one
        // over the network.
        let bat_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 12));
        registry.register(
            "bat_verification_seconds",
            "Time to verify and burn one blind auth token",
            bat_seconds.clone(),
        );
        let wallet_ops = Family::default();
        registry.register(
            "wallet_operations",
            "Wallet operations with the mint, by operation and outcome (ok, failed)",
            wallet_ops.clone(),
        );
        let orders = Family::default();
        registry.register(
            "orders",
            "Orders, by event (created, paid, completed)",
            orders.clone(),
        );
        let orders_today = Family::default();
        registry.register(
            "orders_today",
            "Orders of the current UTC day (since soko started if later), by event",
            orders_today.clone(),
        );
        let rate_limited = Family::default();
        registry.register(
            "commands_rate_limited",
            "Commands refused for their sender's rate, by tier",
            rate_limited.clone(),
        );
        let offers = Family::default();
        registry.register(
            "offers",
            "Exchange offers, by event (created, taken: the taker's bond paid, completed, \
             disputed: an issue marked)",
            offers.clone(),
        );
        let offers_last_hour = Family::default();
        registry.register(
            "offers_last_hour",
            "Exchange offer events of the last hour (since soko started if later), by event",
            offers_last_hour.clone(),
        );
        // 30 s .. about 4 h: a trade's windows add up to minutes, a dispute to hours.
        let offer_seconds = Histogram::new(exponential_buckets(30.0, 2.0, 10));
        registry.register(
            "offer_completion_seconds",
            "Time from an offer's creation to its completion",
            offer_seconds.clone(),
        );
        let offers_ended = Family::default();
        registry.register(
            "offers_ended",
            "Exchange offers ended, by final state",
            offers_ended.clone(),
        );
        let offer_ecash_sat = Family::default();
        registry.register(
            "offer_ecash_sats",
            "Ecash soko holds for exchange offers now, by offer state, in sats",
            offer_ecash_sat.clone(),
        );
        let now = clock.now();
        let metrics = Self {
            inner: Arc::new(Inner {
                registry,
                started: now,
                today: Mutex::new(Today {
                    day: now / DAY_SECS,
                    ..Today::default()
                }),
                clock,
                sessions_active,
                sessions_opened,
                session_seconds,
                session_wallets_open,
                session_ecash_sat,
                cleanup_runs,
                bat_verifications,
                bat_seconds,
                wallet_ops,
                sessions_ended: Counter::default(),
                session_secs_sum: Counter::default(),
                bats: Counter::default(),
                bat_micros_sum: Counter::default(),
                wallet_ops_all: Counter::default(),
                wallet_failures: Counter::default(),
                orders,
                orders_today,
                rate_limited,
                offers,
                offers_last_hour,
                offer_seconds,
                offers_ended,
                offer_ecash_sat,
                offer_minutes: Mutex::default(),
            }),
        };
        // Every labelled series exists from the start, at zero, so a scrape (and a reader
        // of the text) sees each name before the first event.
        for outcome in ["ok", "failed"] {
            metrics
                .inner
                .cleanup_runs
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(0);
        }
        for outcome in [BatOutcome::Ok, BatOutcome::Refused, BatOutcome::Failed] {
            metrics
                .inner
                .bat_verifications
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.as_str(),
                })
                .inc_by(0);
        }
        for tier in [Tier::Anonymous, Tier::Session, Tier::Admin] {
            metrics
                .inner
                .rate_limited
                .get_or_create(&TierLabel {
                    tier: tier.as_str(),
                })
                .inc_by(0);
        }
        for event in OFFER_EVENTS {
            metrics
                .inner
                .offers
                .get_or_create(&OrderLabel { event })
                .inc_by(0);
        }
        for state in OFFER_ENDINGS {
            metrics
                .inner
                .offers_ended
                .get_or_create(&StateLabel { state })
                .inc_by(0);
        }
        for state in OFFER_HOLDING {
            metrics
                .inner
                .offer_ecash_sat
                .get_or_create(&StateLabel { state })
                .set(0);
        }
        metrics.refresh_today();
        metrics.refresh_offers();
        metrics
    }

    /// A session opened.
    pub fn session_opened(&self) {
        self.inner.sessions_opened.inc();
        self.inner.sessions_active.inc();
    }

    /// A session ended (closed or expired) after `lived`.
    pub fn session_closed(&self, lived: Duration) {
        self.inner.sessions_active.dec();
        self.inner.session_seconds.observe(lived.as_secs_f64());
        self.inner.sessions_ended.inc();
        self.inner.session_secs_sum.inc_by(lived.as_secs());
    }

    /// Sessions open now, as counted from storage (at start, after a cleanup).
    pub fn set_sessions_active(&self, sessions: u64) {
        self.inner.sessions_active.set(saturating_i64(sessions));
    }

    /// Session wallets open in memory now (the LRU cache's length).
    pub fn set_session_wallets_open(&self, wallets: u64) {
        self.inner.session_wallets_open.set(saturating_i64(wallets));
    }

    /// Ecash held in all session wallets together.
    pub fn set_session_ecash(&self, held: Sats) {
        self.inner.session_ecash_sat.set(saturating_i64(held.0));
    }

    /// One run of the expired-session cleanup; `ok` false when any step failed.
    pub fn cleanup_run(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.inner
            .cleanup_runs
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// One BAT verification and how long it took (verify and burn).
    pub fn bat_verified(&self, outcome: BatOutcome, latency: Duration) {
        self.inner
            .bat_verifications
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
        self.inner.bat_seconds.observe(latency.as_secs_f64());
        self.inner.bats.inc();
        self.inner
            .bat_micros_sum
            .inc_by(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// One wallet operation with the mint (`op`: a fixed name such as `mint_quote`, `mint`,
    /// `melt`, `send`, `receive`) and whether it succeeded.
    pub fn wallet_op(&self, op: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.inner.wallet_ops_all.inc();
        if !ok {
            self.inner.wallet_failures.inc();
        }
        self.inner
            .wallet_ops
            .get_or_create(&WalletOpLabels { op, outcome })
            .inc();
    }

    /// An order was recorded (its invoice issued).
    pub fn order_created(&self) {
        self.order("created");
    }

    /// An order's payment arrived.
    pub fn order_paid(&self) {
        self.order("paid");
    }

    /// An order was completed: the merchant has been paid out.
    pub fn order_completed(&self) {
        self.order("completed");
    }

    /// A command refused for its sender's rate.
    pub fn rate_limited(&self, tier: Tier) {
        self.inner
            .rate_limited
            .get_or_create(&TierLabel {
                tier: tier.as_str(),
            })
            .inc();
    }

    /// An exchange offer was created (its maker's invoice issued).
    pub fn offer_created(&self) {
        self.offer_event("created", |m| m.created += 1);
    }

    /// An offer reached a taker: the taker's bond is paid. The dispute rate counts per
    /// such offer.
    pub fn offer_taken(&self) {
        self.offer_event("taken", |m| m.taken += 1);
    }

    /// An offer was completed, `took` after its creation.
    pub fn offer_completed(&self, took: Duration) {
        self.inner.offer_seconds.observe(took.as_secs_f64());
        self.offer_event("completed", |m| {
            m.completed += 1;
            m.completed_secs = m.completed_secs.saturating_add(took.as_secs());
        });
    }

    /// An issue was marked on an offer (`MARKED_WITH_ISSUE`); once per offer.
    pub fn offer_disputed(&self) {
        self.offer_event("disputed", |m| m.disputed += 1);
    }

    /// An offer ended in `state` (`completed`, `expired`, `canceled`, `forfeit`, `resolved`,
    /// `error`; any case).
    pub fn offer_ended(&self, state: &str) {
        self.inner
            .offers_ended
            .get_or_create(&StateLabel {
                state: offer_state_label(state),
            })
            .inc();
    }

    /// The ecash soko holds now for all offers in `state` (any case).
    pub fn set_offer_ecash(&self, state: &str, sats: Sats) {
        self.inner
            .offer_ecash_sat
            .get_or_create(&StateLabel {
                state: offer_state_label(state),
            })
            .set(saturating_i64(sats.0));
    }

    /// Disputes over offers that reached a taker, in the last `window` (whole minutes, at
    /// most [`OFFER_WINDOW_MAX`]), when at least `min_offers` such offers: the rate in basis
    /// points, rounded down. `None` otherwise.
    pub fn dispute_rate_bp(&self, window: Duration, min_offers: u64) -> Option<u32> {
        let events = self.offer_minutes().sum(self.inner.clock.now(), window);
        dispute_rate(&events, min_offers)
    }

    fn offer_event(&self, event: &'static str, count: impl FnOnce(&mut OfferMinute)) {
        self.inner.offers.get_or_create(&OrderLabel { event }).inc();
        let now = self.inner.clock.now();
        let mut minutes = self.offer_minutes();
        minutes.record(now, count);
        let hour = minutes.sum(now, HOUR);
        drop(minutes);
        self.publish_offer_hour(&hour);
    }

    fn offer_minutes(&self) -> std::sync::MutexGuard<'_, OfferMinutes> {
        self.inner
            .offer_minutes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn publish_offer_hour(&self, hour: &OfferMinute) {
        for (event, count) in [
            ("created", hour.created),
            ("taken", hour.taken),
            ("completed", hour.completed),
            ("disputed", hour.disputed),
        ] {
            self.inner
                .offers_last_hour
                .get_or_create(&OrderLabel { event })
                .set(saturating_i64(count));
        }
    }

    /// The last hour's offer events, published to the gauges.
    fn refresh_offers(&self) -> OfferMinute {
        let hour = self.offer_minutes().sum(self.inner.clock.now(), HOUR);
        self.publish_offer_hour(&hour);
        hour
    }

    fn order(&self, event: &'static str) {
        self.inner.orders.get_or_create(&OrderLabel { event }).inc();
        let mut today = self.today();
        match event {
            "created" => today.created += 1,
            "paid" => today.paid += 1,
            _ => today.completed += 1,
        }
        self.publish_today(&today);
    }

    /// Today's counts, started afresh when the UTC day changed.
    fn today(&self) -> std::sync::MutexGuard<'_, Today> {
        let mut today = self.inner.today.lock().unwrap_or_else(|p| p.into_inner());
        let day = self.inner.clock.now() / DAY_SECS;
        if today.day != day {
            *today = Today {
                day,
                ..Today::default()
            };
        }
        today
    }

    fn publish_today(&self, today: &Today) {
        for (event, count) in [
            ("created", today.created),
            ("paid", today.paid),
            ("completed", today.completed),
        ] {
            self.inner
                .orders_today
                .get_or_create(&OrderLabel { event })
                .set(saturating_i64(count));
        }
    }

    fn refresh_today(&self) {
        let today = self.today();
        self.publish_today(&today);
    }

    /// Every figure in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        self.refresh_today();
        self.refresh_offers();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// Every figure, for the `metrics` command.
    pub fn snapshot(&self) -> Snapshot {
        let inner = &self.inner;
        let outcome = |family: &Family<OutcomeLabel, Counter>, outcome: &'static str| {
            family.get(&OutcomeLabel { outcome }).map_or(0, |c| c.get())
        };
        let today = *self.today();
        self.publish_today(&today);
        let day_start = today.day * DAY_SECS;
        let hour = self.refresh_offers();
        // Every state with a series: those shown from the start, and any other counted since.
        let by_state = |value: &dyn Fn(&StateLabel) -> Option<u64>| -> BTreeMap<String, u64> {
            OFFER_STATES
                .iter()
                .chain([&OTHER_STATE])
                .filter_map(|&state| Some((state.to_owned(), value(&StateLabel { state })?)))
                .collect()
        };
        let ended = by_state(&|label| inner.offers_ended.get(label).map(|c| c.get()));
        let ecash_sat = by_state(&|label| {
            let held = inner.offer_ecash_sat.get(label)?.get();
            Some(non_negative(held))
        });
        Snapshot {
            sessions: SessionFigures {
                active: non_negative(inner.sessions_active.get()),
                opened: inner.sessions_opened.get(),
                ended: inner.sessions_ended.get(),
                average_secs: average(inner.session_secs_sum.get(), inner.sessions_ended.get()),
                wallets_open: non_negative(inner.session_wallets_open.get()),
                ecash_sat: non_negative(inner.session_ecash_sat.get()),
                cleanup_runs: outcome(&inner.cleanup_runs, "ok")
                    + outcome(&inner.cleanup_runs, "failed"),
                cleanup_failures: outcome(&inner.cleanup_runs, "failed"),
            },
            bat: BatFigures {
                ok: outcome(&inner.bat_verifications, "ok"),
                refused: outcome(&inner.bat_verifications, "refused"),
                failed: outcome(&inner.bat_verifications, "failed"),
                average_ms: average(inner.bat_micros_sum.get(), inner.bats.get()) / 1000,
            },
            wallet: WalletFigures {
                operations: inner.wallet_ops_all.get(),
                failures: inner.wallet_failures.get(),
            },
            orders_today: OrderFigures {
                since: day_start.max(inner.started),
                created: today.created,
                paid: today.paid,
                completed: today.completed,
            },
            rate_limited: [Tier::Anonymous, Tier::Session, Tier::Admin]
                .into_iter()
                .map(|tier| {
                    let refused = inner
                        .rate_limited
                        .get(&TierLabel {
                            tier: tier.as_str(),
                        })
                        .map_or(0, |c| c.get());
                    (tier.as_str().to_owned(), refused)
                })
                .collect(),
            exchange: ExchangeFigures {
                last_hour: OfferHour {
                    since: (hour.minute * MINUTE_SECS).max(inner.started),
                    created: hour.created,
                    taken: hour.taken,
                    completed: hour.completed,
                    disputed: hour.disputed,
                    average_secs: average(hour.completed_secs, hour.completed),
                    dispute_rate_bp: dispute_rate(&hour, 1),
                },
                ended,
                ecash_sat,
            },
        }
    }
}

/// The offer events counted, as label values.
const OFFER_EVENTS: [&str; 4] = ["created", "taken", "completed", "disputed"];

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` (the text of [`Metrics::encode`]) on `listener` until `stop`
/// turns true.
pub async fn serve(
    metrics: Metrics,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    metrics.encode(),
                )
            }
        }),
    );
    let stopped = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

/// `sum / count`, rounded to the nearest; 0 when nothing was counted.
fn average(sum: u64, count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    sum.saturating_add(count / 2) / count
}

/// The `metrics` command's result (`kinds/commands.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Private sessions.
    pub sessions: SessionFigures,
    /// Blind auth token verifications.
    pub bat: BatFigures,
    /// Wallet operations with the mint.
    pub wallet: WalletFigures,
    /// Orders of the current UTC day.
    pub orders_today: OrderFigures,
    /// Commands refused for their sender's rate since start, by tier.
    pub rate_limited: BTreeMap<String, u64>,
    /// Exchange offers.
    pub exchange: ExchangeFigures,
}

/// Exchange offers: the last hour's events, the endings since start, the ecash held now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExchangeFigures {
    /// The last hour's events (a rolling hour, in whole minutes).
    pub last_hour: OfferHour,
    /// Offers ended since soko started, by final state.
    pub ended: BTreeMap<String, u64>,
    /// Ecash held now for offers, by offer state, in sats.
    pub ecash_sat: BTreeMap<String, u64>,
}

/// Offer events of the last hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OfferHour {
    /// Unix seconds the counts start: an hour ago to the minute, or soko's start if later.
    pub since: u64,
    /// Offers created.
    pub created: u64,
    /// Offers that reached a taker (its bond paid).
    pub taken: u64,
    /// Offers completed.
    pub completed: u64,
    /// Issues marked.
    pub disputed: u64,
    /// Average seconds from creation to completion of the completed ones.
    pub average_secs: u64,
    /// `disputed` per `taken` in basis points, rounded down (at most 10000); null when no
    /// offer reached a taker.
    pub dispute_rate_bp: Option<u32>,
}

/// Sessions since soko started (`active` and the wallet figures are as of now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SessionFigures {
    /// Open now.
    pub active: u64,
    /// Opened.
    pub opened: u64,
    /// Ended (closed or expired).
    pub ended: u64,
    /// Average length of the ended ones, in seconds.
    pub average_secs: u64,
    /// Session wallets open in memory.
    pub wallets_open: u64,
    /// Ecash held in all session wallets, in sats.
    pub ecash_sat: u64,
    /// Cleanup runs.
    pub cleanup_runs: u64,
    /// Cleanup runs that failed.
    pub cleanup_failures: u64,
}

/// BAT verifications since soko started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BatFigures {
    /// Valid and burnt.
    pub ok: u64,
    /// Refused.
    pub refused: u64,
    /// Undecided (mint unreachable, internal failure).
    pub failed: u64,
    /// Average time to verify and burn one, in milliseconds.
    pub average_ms: u64,
}

/// Wallet operations with the mint since soko started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WalletFigures {
    /// All operations.
    pub operations: u64,
    /// Those that failed.
    pub failures: u64,
}

/// Orders of one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OrderFigures {
    /// Unix seconds the counts start: midnight UTC, or soko's start if later.
    pub since: u64,
    /// Recorded (invoice issued).
    pub created: u64,
    /// Paid.
    pub paid: u64,
    /// Completed (the merchant paid out).
    pub completed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_reach_the_snapshot_and_the_text() {
        let metrics = Metrics::default();
        metrics.session_opened();
        metrics.session_opened();
        metrics.session_closed(Duration::from_secs(600));
        metrics.set_session_wallets_open(2);
        metrics.set_session_ecash(Sats(1234));
        metrics.cleanup_run(true);
        metrics.cleanup_run(false);
        metrics.bat_verified(BatOutcome::Ok, Duration::from_millis(4));
        metrics.bat_verified(BatOutcome::Refused, Duration::from_millis(2));
        metrics.wallet_op("mint", true);
        metrics.wallet_op("melt", false);
        metrics.order_created();
        metrics.order_paid();
        metrics.rate_limited(Tier::Anonymous);
        let snapshot = metrics.snapshot();
        assert_eq!(
            (
                snapshot.sessions.active,
                snapshot.sessions.opened,
                snapshot.sessions.ended
            ),
            (1, 2, 1)
        );
        assert_eq!(snapshot.sessions.average_secs, 600);
        assert_eq!(
            (snapshot.sessions.wallets_open, snapshot.sessions.ecash_sat),
            (2, 1234)
        );
        assert_eq!(
            (
                snapshot.sessions.cleanup_runs,
                snapshot.sessions.cleanup_failures
            ),
            (2, 1)
        );
        assert_eq!(
            (
                snapshot.bat.ok,
                snapshot.bat.refused,
                snapshot.bat.failed,
                snapshot.bat.average_ms
            ),
            (1, 1, 0, 3)
        );
        assert_eq!(
            (snapshot.wallet.operations, snapshot.wallet.failures),
            (2, 1)
        );
        assert_eq!(
            (
                snapshot.orders_today.created,
                snapshot.orders_today.paid,
                snapshot.orders_today.completed
            ),
            (1, 1, 0)
        );
        assert_eq!(snapshot.rate_limited.get("anonymous"), Some(&1));

        let text = metrics.encode();
        for line in [
            "soko_sessions_active 1",
            "soko_session_duration_seconds_sum 600.0",
            "soko_session_duration_seconds_count 1",
            "soko_session_ecash_sats 1234",
            "soko_session_cleanup_runs_total{outcome=\"failed\"} 1",
            "soko_bat_verifications_total{outcome=\"refused\"} 1",
            "soko_bat_verifications_total{outcome=\"failed\"} 0",
            "soko_wallet_operations_total{op=\"melt\",outcome=\"failed\"} 1",
            "soko_orders_total{event=\"paid\"} 1",
            "soko_orders_today{event=\"created\"} 1",
            "soko_commands_rate_limited_total{tier=\"anonymous\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn todays_orders_start_again_at_midnight_utc() {
        let clock = Clock::system();
        let metrics = Metrics::new(clock.clone());
        metrics.order_created();
        metrics.order_created();
        metrics.order_completed();
        assert_eq!(metrics.snapshot().orders_today.created, 2);
        clock.advance(DAY_SECS);
        let next_day = metrics.snapshot().orders_today;
        assert_eq!((next_day.created, next_day.completed), (0, 0));
        assert_eq!(next_day.since % DAY_SECS, 0);
        assert!(metrics
            .encode()
            .contains("soko_orders_today{event=\"created\"} 0"));
        // The totals keep counting across days.
        assert!(metrics
            .encode()
            .contains("soko_orders_total{event=\"created\"} 2"));
    }

    #[test]
    fn offer_figures_count_a_rolling_hour_on_the_clock() {
        let clock = Clock::system();
        let metrics = Metrics::new(clock.clone());
        metrics.offer_created();
        metrics.offer_created();
        metrics.offer_taken();
        metrics.offer_completed(Duration::from_secs(400));
        clock.advance(30 * 60);
        metrics.offer_created();
        metrics.offer_taken();
        metrics.offer_completed(Duration::from_secs(600));
        let hour = metrics.snapshot().exchange.last_hour;
        assert_eq!(
            (hour.created, hour.taken, hour.completed, hour.average_secs),
            (3, 2, 2, 500)
        );
        assert!(metrics
            .encode()
            .contains("soko_offers_last_hour{event=\"created\"} 3"));

        // 61 minutes after the first ones: they left the hour, the later ones are in it.
        clock.advance(31 * 60);
        let hour = metrics.snapshot().exchange.last_hour;
        assert_eq!(
            (hour.created, hour.taken, hour.completed, hour.average_secs),
            (1, 1, 1, 600)
        );
        assert!(hour.since > clock.now() - 3_600 - MINUTE_SECS && hour.since <= clock.now());
        let text = metrics.encode();
        assert!(
            text.contains("soko_offers_last_hour{event=\"created\"} 1"),
            "{text}"
        );
        // The totals and the histogram keep everything since start.
        assert!(
            text.contains("soko_offers_total{event=\"created\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("soko_offer_completion_seconds_sum 1000.0"),
            "{text}"
        );

        clock.advance(31 * 60);
        let hour = metrics.snapshot().exchange.last_hour;
        assert_eq!((hour.created, hour.completed, hour.average_secs), (0, 0, 0));
        assert_eq!(hour.dispute_rate_bp, None);
    }

    #[test]
    fn the_dispute_rate_counts_taken_offers_in_the_window() {
        let clock = Clock::system();
        let metrics = Metrics::new(clock.clone());
        let day = Duration::from_secs(DAY_SECS);
        assert_eq!(metrics.dispute_rate_bp(day, 0), None, "no offer taken");
        for _ in 0..8 {
            metrics.offer_taken();
        }
        metrics.offer_disputed();
        assert_eq!(metrics.dispute_rate_bp(day, 10), None, "too few offers");
        assert_eq!(metrics.dispute_rate_bp(day, 8), Some(1_250));
        clock.advance(2 * 3_600);
        metrics.offer_taken();
        metrics.offer_taken();
        metrics.offer_disputed();
        metrics.offer_disputed();
        // The hour holds the last two only; the day all ten, rounded down: 3/10.
        assert_eq!(metrics.dispute_rate_bp(HOUR, 1), Some(10_000));
        assert_eq!(metrics.dispute_rate_bp(day, 1), Some(3_000));
        assert_eq!(
            metrics.snapshot().exchange.last_hour.dispute_rate_bp,
            Some(10_000)
        );
        // A window beyond what is kept is cut to it; what is older than a day is gone.
        clock.advance(23 * 3_600);
        let week = Duration::from_secs(7 * DAY_SECS);
        assert_eq!(metrics.dispute_rate_bp(week, 1), Some(10_000));
        clock.advance(2 * 3_600);
        assert_eq!(metrics.dispute_rate_bp(week, 1), None);
        assert!(metrics.offer_minutes().minutes.is_empty(), "pruned");
        // Disputes of offers taken before the window never make it above 100 %.
        metrics.offer_taken();
        metrics.offer_disputed();
        metrics.offer_disputed();
        assert_eq!(metrics.dispute_rate_bp(HOUR, 1), Some(10_000));
    }

    #[test]
    fn offer_states_are_fixed_labels() {
        let metrics = Metrics::default();
        metrics.offer_ended("COMPLETED");
        metrics.offer_ended("forfeit");
        metrics.offer_ended("no such state");
        metrics.set_offer_ecash("TAKER_BOND_PAID", Sats(7_500));
        metrics.set_offer_ecash("invoice_paid", Sats(2_000));
        metrics.set_offer_ecash("invoice_paid", Sats(1_000));
        let exchange = metrics.snapshot().exchange;
        assert_eq!(exchange.ended.get("completed"), Some(&1));
        assert_eq!(exchange.ended.get("forfeit"), Some(&1));
        assert_eq!(
            exchange.ended.get("expired"),
            Some(&0),
            "shown from the start"
        );
        assert_eq!(exchange.ended.get("other"), Some(&1));
        assert_eq!(exchange.ecash_sat.get("taker_bond_paid"), Some(&7_500));
        assert_eq!(exchange.ecash_sat.get("invoice_paid"), Some(&1_000));
        assert_eq!(exchange.ecash_sat.get("disputed"), Some(&0));
        let text = metrics.encode();
        for line in [
            "soko_offers_ended_total{state=\"completed\"} 1",
            "soko_offers_ended_total{state=\"other\"} 1",
            "soko_offer_ecash_sats{state=\"taker_bond_paid\"} 7500",
            "soko_offer_ecash_sats{state=\"invoice_paid\"} 1000",
            "soko_offers_total{event=\"disputed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn a_window_of_an_hour_is_the_current_minute_and_the_59_before() {
        assert_eq!(first_minute(3_600 * 10 + 59, HOUR), 10 * 60 - 59);
        assert_eq!(first_minute(3_600 * 10, HOUR), 10 * 60 - 59);
        assert_eq!(first_minute(30, HOUR), 0);
        assert_eq!(first_minute(600, Duration::ZERO), 11, "nothing");
    }
}
