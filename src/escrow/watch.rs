//! When the payment watcher looks at each unpaid order again. Pure bookkeeping in memory
//! (a restart simply checks every order once more).
//!
//! - An unpaid order is checked at the mint after 1 s, then at intervals doubling up to
//!   [`PollRules::max_interval`]: most buyers pay within the first minute, and an order
//!   that waits costs the mint a request every few seconds, not every second.
//! - An order whose handling fails is retried on its own, after a delay doubling from
//!   [`FIRST_RETRY`] to [`MAX_RETRY`]; the others go on meanwhile.
//! - All checks together stay within [`PollRules::checks_per_minute`] (a token bucket
//!   holding ten seconds' worth), so open orders cannot starve payouts and refunds of the
//!   mint's request budget; all but the check of a payment the mint pushed, which comes
//!   once per payment and must not wait behind the unpaid orders' checks.
//! - When the mint pushes invoice states (NUT-17, [`crate::wallet::nut17`]), an order whose
//!   state it told is checked only every [`PollRules::pushed_interval`] (for a push that
//!   went missing) and at its expiry; a pushed change makes it due at once, ahead of the
//!   others. The check is the same either way, so an order seen paid by both the push and
//!   a check is handled once. When the connection drops, every order is back at the
//!   poller's pace until the mint tells its state again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First delay before a failed order is tried again.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest delay between tries of a failing order.
pub const MAX_RETRY: Duration = Duration::from_secs(120);
/// First interval between mint checks of an unpaid order.
pub const FIRST_POLL: Duration = Duration::from_secs(1);
/// When the mint's info could not be read, it is read again this much later.
pub const INFO_RETRY: Duration = Duration::from_secs(60);
/// A mint that offers no push is asked again this much later (it may have been upgraded).
pub const NO_PUSH_LOOK_AGAIN: Duration = Duration::from_secs(3600);

/// The mint's push, once followed.
#[derive(Default)]
pub struct Push {
    /// The feed of invoice states, when the mint offers one.
    pub feed: Option<std::sync::Arc<crate::wallet::nut17::QuoteFeed>>,
    /// When to read the mint's info again, after a failure or a "no push".
    pub next_look: Option<Instant>,
    /// Notified when the mint tells a payment: the watcher's pass runs at once.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// The embedded dev mint, followed in-process rather than over its websocket.
    pub in_process: Option<(std::sync::Arc<cdk::Mint>, tokio::runtime::Handle)>,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("feed", &self.feed)
            .field("next_look", &self.next_look)
            .field("in_process", &self.in_process.is_some())
            .finish_non_exhaustive()
    }
}

/// How often unpaid orders are checked at the mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollRules {
    /// Longest interval between two checks of one unpaid order.
    pub max_interval: Duration,
    /// Most mint checks per minute, all orders together.
    pub checks_per_minute: u32,
    /// Interval between checks of an order whose invoice the mint pushes (NUT-17): a safety
    /// net for a notification that went missing.
    pub pushed_interval: Duration,
}

impl Default for PollRules {
    fn default() -> Self {
        Self {
            max_interval: Duration::from_secs(15),
            checks_per_minute: 120,
            pushed_interval: Duration::from_secs(60),
        }
    }
}

/// How much nearer an order's expiry must come between two passes to count as a moved clock
/// rather than the rounding of whole seconds.
const CLOCK_JUMP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Slot {
    next: Instant,
    /// Zero until the first check.
    interval: Duration,
    failures: u32,
    /// When the order is past its expiry (and a check would expire it).
    expires: Instant,
    /// Its invoice's mint quote, once known (push only).
    quote: Option<String>,
    /// The mint pushes this quote's state on the live connection.
    pushed: bool,
    /// The mint pushed a change: check it first.
    urgent: bool,
}

#[derive(Debug, Default)]
struct Book {
    slots: HashMap<Vec<u8>, Slot>,
    /// Quote → order key, for pushed states.
    orders: HashMap<String, Vec<u8>>,
    /// The mint's push connection is up.
    live: bool,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

/// The watcher's schedule of unpaid orders.
#[derive(Debug)]
pub struct Schedule {
    rules: PollRules,
    book: Mutex<Book>,
    bucket: Mutex<Bucket>,
    failures: AtomicU64,
    checks: AtomicU64,
    missed: AtomicU64,
}

impl Schedule {
    /// An empty schedule.
    pub fn new(rules: PollRules) -> Self {
        Self {
            rules,
            book: Mutex::new(Book::default()),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                at: None,
            }),
            failures: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A poisoned lock only means a panic elsewhere mid-update of plain numbers.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the schedule in line with the orders awaiting payment, `(key, when it is past
    /// its expiry)`: new ones are added, due at once, or after [`FIRST_POLL`] while the
    /// mint's push is live (by then the mint has told their state, and a check would only
    /// find them unpaid); the others are dropped. Returns the quotes of the dropped orders.
    pub fn sync(&self, awaiting: &[(Vec<u8>, Instant)], now: Instant) -> Vec<String> {
        let mut book = self.book();
        let first = if book.live { now + FIRST_POLL } else { now };
        let keys: HashSet<&[u8]> = awaiting.iter().map(|(k, _)| k.as_slice()).collect();
        let mut gone = Vec::new();
        book.slots.retain(|key, slot| {
            let keep = keys.contains(key.as_slice());
            if !keep {
                gone.extend(slot.quote.take());
            }
            keep
        });
        for quote in &gone {
            book.orders.remove(quote);
        }
        for (key, expires) in awaiting {
            book.slots
                .entry(key.clone())
                .and_modify(|slot| {
                    // The services' clock moved ahead (a test's, or a system clock that
                    // jumped): an expiry that came nearer by more than the seconds' rounding
                    // is checked at its new time, not at the one the check was set by (a
                    // pushed order's could be a minute away).
                    if *expires + CLOCK_JUMP < slot.expires {
                        slot.next = slot.next.min(*expires);
                    }
                    slot.expires = *expires;
                })
                .or_insert(Slot {
                    next: first,
                    interval: Duration::ZERO,
                    failures: 0,
                    expires: *expires,
                    quote: None,
                    pushed: false,
                    urgent: false,
                });
        }
        gone
    }

    /// Orders whose quote is not known yet.
    pub fn unquoted(&self) -> Vec<Vec<u8>> {
        self.book()
            .slots
            .iter()
            .filter(|(_, slot)| slot.quote.is_none())
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Order `key` is paid through `quote`.
    pub fn set_quote(&self, key: &[u8], quote: &str) {
        let mut book = self.book();
        if let Some(slot) = book.slots.get_mut(key) {
            slot.quote = Some(quote.to_owned());
            book.orders.insert(quote.to_owned(), key.to_vec());
        }
    }

    /// The mint's push connection is up.
    pub fn connected(&self) {
        self.book().live = true;
    }

    /// The mint's push connection dropped: every order goes back to the poller's pace,
    /// checked within [`PollRules::max_interval`].
    pub fn lost(&self, now: Instant) {
        let max = self.rules.max_interval;
        let mut book = self.book();
        book.live = false;
        for slot in book.slots.values_mut().filter(|s| s.pushed) {
            slot.pushed = false;
            if slot.failures == 0 && !slot.urgent {
                slot.interval = max;
                slot.next = slot.next.min(now + max);
            }
        }
    }

    /// The mint told `quote`'s state; `changed` when it is no longer unpaid. An unpaid one
    /// is now pushed: checked only every [`PollRules::pushed_interval`] and at its expiry.
    /// A changed one is checked at once, before the others.
    pub fn pushed(&self, quote: &str, changed: bool, now: Instant) {
        let pushed_interval = self.rules.pushed_interval;
        let mut book = self.book();
        let Some(key) = book.orders.get(quote).cloned() else {
            return;
        };
        let Some(slot) = book.slots.get_mut(&key) else {
            return;
        };
        slot.pushed = true;
        if changed {
            slot.urgent = true;
            slot.next = now;
        } else if slot.failures == 0 && !slot.urgent {
            slot.interval = pushed_interval;
            // Past its expiry already when the mint first tells its state (the clock moved
            // since the order was placed): checked at once, and the check expires it.
            slot.next = if slot.expires <= now {
                now
            } else {
                pushed_next(slot, now, pushed_interval)
            };
        }
    }

    /// True when order `key` should be looked at now (one not in the schedule always is).
    pub fn due(&self, key: &[u8], now: Instant) -> bool {
        self.book()
            .slots
            .get(key)
            .is_none_or(|slot| now >= slot.next)
    }

    /// True when the mint pushed a change of order `key`'s invoice not yet checked.
    pub fn urgent(&self, key: &[u8]) -> bool {
        self.book().slots.get(key).is_some_and(|slot| slot.urgent)
    }

    /// True when the mint pushes order `key`'s invoice and told no change: a payment found
    /// by a check then is a missed push.
    pub fn quiet(&self, key: &[u8]) -> bool {
        self.book()
            .slots
            .get(key)
            .is_some_and(|slot| slot.pushed && !slot.urgent)
    }

    /// A check found order `key` paid although the mint pushed nothing: counted, and the
    /// caller reconnects the push.
    pub fn missed(&self) {
        self.missed.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one mint check of order `key`: free when the mint pushed a change of its
    /// invoice (acting on a payment the mint told must not wait behind the budget, and such
    /// checks come one per payment), from the budget otherwise; false when it is spent.
    pub fn take_check_of(&self, key: &[u8], now: Instant) -> bool {
        if self.urgent(key) {
            self.checks.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.take_check(now)
        }
    }

    /// Takes one mint check from the budget; false when it is spent for now.
    pub fn take_check(&self, now: Instant) -> bool {
        let per_minute = f64::from(self.rules.checks_per_minute.max(1));
        let capacity = (per_minute / 6.0).max(1.0);
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let refill = bucket.at.map_or(capacity, |at| {
            now.duration_since(at).as_secs_f64() * per_minute / 60.0
        });
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = Some(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            self.checks.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Order `key` is still unpaid: its next check comes after a longer interval (or, when
    /// the mint pushes its state, after [`PollRules::pushed_interval`] or at its expiry).
    pub fn unpaid(&self, key: &[u8], now: Instant) {
        let rules = self.rules;
        let mut book = self.book();
        let slot = book.slots.entry(key.to_vec()).or_insert(Slot {
            next: now,
            interval: Duration::ZERO,
            failures: 0,
            expires: now,
            quote: None,
            pushed: false,
            urgent: false,
        });
        slot.urgent = false;
        if slot.pushed {
            slot.interval = rules.pushed_interval;
            slot.next = pushed_next(slot, now, rules.pushed_interval);
        } else {
            slot.interval = if slot.failures == 0 {
                (slot.interval * 2).clamp(FIRST_POLL, rules.max_interval.max(FIRST_POLL))
            } else {
                FIRST_POLL
            }
            .min(rules.max_interval);
            slot.next = now + slot.interval;
        }
        slot.failures = 0;
    }

    /// Handling order `key` failed: (failures in a row, delay until the next try).
    pub fn failed(&self, key: &[u8], now: Instant) -> (u32, Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut book = self.book();
        let slot = book.slots.entry(key.to_vec()).or_insert(Slot {
            next: now,
            interval: FIRST_POLL,
            failures: 0,
            expires: now,
            quote: None,
            pushed: false,
            urgent: false,
        });
        slot.failures = slot.failures.saturating_add(1);
        let delay = FIRST_RETRY
            .saturating_mul(1 << (slot.failures - 1).min(16))
            .min(MAX_RETRY);
        slot.next = now + delay;
        slot.interval = FIRST_POLL;
        slot.urgent = false;
        (slot.failures, delay)
    }

    /// Order `key` left the watch (paid or expired): its quote, to stop watching it.
    pub fn forget(&self, key: &[u8]) -> Option<String> {
        let mut book = self.book();
        let quote = book.slots.remove(key).and_then(|slot| slot.quote);
        if let Some(quote) = &quote {
            book.orders.remove(quote);
        }
        quote
    }

    /// Failures handling an order since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Mint checks of unpaid orders since start.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Orders whose invoice state the mint pushes now.
    pub fn pushed_count(&self) -> usize {
        self.book().slots.values().filter(|s| s.pushed).count()
    }

    /// Payments found by a check although the mint was pushing their invoice's state.
    pub fn missed_pushes(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// A pushed order's next check: after `interval`, or at its expiry if that comes first
/// (expiry is only seen by a check: the quote stays unpaid, so nothing is pushed).
fn pushed_next(slot: &Slot, now: Instant, interval: Duration) -> Instant {
    let later = now + interval;
    if slot.expires > now {
        later.min(slot.expires)
    } else {
        later
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn unpaid_orders_are_checked_less_and_less_often() {
        let schedule = Schedule::new(PollRules::default());
        let start = Instant::now();
        let mut now = start;
        let mut checks = 0;
        while now < start + 60 * S {
            if schedule.due(b"o", now) {
                checks += 1;
                schedule.unpaid(b"o", now);
            }
            now += Duration::from_millis(100);
        }
        // 0, 1, 3, 7, 15, 30, 45 s: seven checks in the first minute instead of sixty,
        // then four a minute.
        assert_eq!(checks, 7);
        assert!(!schedule.due(b"o", start + 59 * S));
        assert!(schedule.due(b"o", start + 60 * S));
        assert!(schedule.due(b"other", now), "a new order is due at once");
    }

    #[test]
    fn a_failing_order_backs_off_alone() {
        let schedule = Schedule::new(PollRules::default());
        let now = Instant::now();
        assert_eq!(schedule.failed(b"bad", now), (1, FIRST_RETRY));
        assert_eq!(schedule.failed(b"bad", now), (2, FIRST_RETRY * 2));
        for _ in 0..20 {
            schedule.failed(b"bad", now);
        }
        assert_eq!(schedule.failed(b"bad", now).1, MAX_RETRY);
        assert!(!schedule.due(b"bad", now + 60 * S));
        assert!(schedule.due(b"bad", now + MAX_RETRY));
        assert!(schedule.due(b"good", now));
        assert_eq!(schedule.failures(), 23);
        // Once it goes through, it is polled like any unpaid order again.
        schedule.unpaid(b"bad", now);
        assert!(schedule.due(b"bad", now + FIRST_POLL));
    }

    #[test]
    fn the_budget_caps_checks_per_minute() {
        let schedule = Schedule::new(PollRules {
            checks_per_minute: 60,
            ..PollRules::default()
        });
        let start = Instant::now();
        let mut allowed = 0;
        // A pass every second for ten minutes, 50 orders due each time.
        for second in 0..600 {
            let now = start + second * S;
            for _ in 0..50 {
                if schedule.take_check(now) {
                    allowed += 1;
                }
            }
        }
        // 60 a minute plus the initial burst of ten seconds' worth.
        assert!((600..=610).contains(&allowed), "{allowed}");
    }

    #[test]
    fn a_pushed_payment_is_checked_with_the_budget_spent() {
        let schedule = Schedule::new(PollRules {
            checks_per_minute: 6,
            ..PollRules::default()
        });
        let now = Instant::now();
        let later = now + 300 * S;
        schedule.sync(&[(b"a".to_vec(), later), (b"b".to_vec(), later)], now);
        schedule.set_quote(b"b", "qb");
        schedule.connected();
        while schedule.take_check(now) {}
        assert!(!schedule.take_check_of(b"a", now), "the budget is spent");
        schedule.pushed("qb", true, now);
        assert!(schedule.take_check_of(b"b", now), "the mint told a payment");
        schedule.unpaid(b"b", now);
        assert!(
            !schedule.take_check_of(b"b", now),
            "checked; no longer urgent"
        );
    }

    #[test]
    fn orders_no_longer_awaiting_are_forgotten() {
        let schedule = Schedule::new(PollRules::default());
        let now = Instant::now();
        let later = now + 300 * S;
        schedule.sync(&[(b"a".to_vec(), later), (b"b".to_vec(), later)], now);
        schedule.set_quote(b"b", "qb");
        schedule.unpaid(b"a", now);
        schedule.unpaid(b"b", now);
        assert_eq!(schedule.sync(&[(b"a".to_vec(), later)], now), vec!["qb"]);
        assert!(!schedule.due(b"a", now));
        assert!(schedule.due(b"b", now), "forgotten, so new again");
        assert_eq!(schedule.unquoted(), vec![b"a".to_vec()]);
    }

    /// The schedule of `orders` unpaid orders over `secs` seconds, a pass a second, as the
    /// watcher runs it: (checks, seconds after the start when order 0 was checked).
    fn run(schedule: &Schedule, orders: u8, secs: u32, push: bool) -> (u32, Vec<u32>) {
        let start = Instant::now();
        let expires = start + 3600 * S;
        let awaiting: Vec<_> = (0..orders).map(|i| (vec![i], expires)).collect();
        let (mut checks, mut first) = (0, Vec::new());
        for second in 0..secs {
            let now = start + second * S;
            schedule.sync(&awaiting, now);
            if push && second == 0 {
                // The first pass finds the connection up, and the mint answers each
                // subscription with the invoice's current state.
                schedule.connected();
                for (key, _) in &awaiting {
                    schedule.set_quote(key, &format!("q{}", key[0]));
                    schedule.pushed(&format!("q{}", key[0]), false, now);
                }
            }
            for (key, _) in &awaiting {
                if schedule.due(key, now) && schedule.take_check(now) {
                    checks += 1;
                    if key[0] == 0 {
                        first.push(second);
                    }
                    schedule.unpaid(key, now);
                }
            }
        }
        (checks, first)
    }

    #[test]
    fn pushed_orders_are_checked_once_a_minute() {
        let rules = PollRules::default();
        // Polling: 20 orders, 10 minutes: the first minute's doubling, then every 15 s,
        // within the budget of 120 a minute.
        let (polled, _) = run(&Schedule::new(rules), 20, 600, false);
        // Pushed: every 60 s each (the safety net), nothing more.
        let (pushed, times) = run(&Schedule::new(rules), 20, 600, true);
        assert_eq!(times, vec![60, 120, 180, 240, 300, 360, 420, 480, 540]);
        assert_eq!(pushed, 20 * 9);
        // 7 checks each in the first minute (the budget trims that burst a little), then 4 a
        // minute each.
        assert!(
            (20 * (4 + 9 * 4)..=20 * (7 + 9 * 4)).contains(&polled),
            "{polled}"
        );
    }

    #[test]
    fn a_pushed_order_is_checked_at_its_expiry_when_the_clock_moves_ahead() {
        let schedule = Schedule::new(PollRules::default());
        let now = Instant::now();
        schedule.connected();
        schedule.sync(&[(b"o".to_vec(), now + 600 * S)], now);
        schedule.set_quote(b"o", "q");
        schedule.pushed("q", false, now);
        let later = now + 5 * S;
        // The same expiry, give or take the seconds' rounding: the check stays a minute away.
        schedule.sync(&[(b"o".to_vec(), now + 599 * S)], later);
        assert!(!schedule.due(b"o", later));
        // The clock moved ten minutes ahead: the expiry is now, and so is the check.
        schedule.sync(&[(b"o".to_vec(), later)], later);
        assert!(schedule.due(b"o", later));
    }

    #[test]
    fn a_pushed_order_past_its_expiry_is_checked_at_once() {
        let schedule = Schedule::new(PollRules::default());
        let now = Instant::now();
        schedule.connected();
        // Past its expiry by the time the mint tells its state (the clock moved meanwhile).
        schedule.sync(&[(b"o".to_vec(), now)], now);
        schedule.set_quote(b"o", "q");
        schedule.pushed("q", false, now + S);
        assert!(schedule.due(b"o", now + S));
    }

    #[test]
    fn a_pushed_payment_is_checked_at_once_and_first() {
        let schedule = Schedule::new(PollRules::default());
        let now = Instant::now();
        schedule.connected();
        schedule.sync(&[(b"o".to_vec(), now + 300 * S)], now);
        assert!(
            !schedule.due(b"o", now),
            "while pushed, a new order waits a second"
        );
        schedule.set_quote(b"o", "q");
        schedule.pushed("q", false, now);
        assert!(!schedule.due(b"o", now + 30 * S));
        schedule.pushed("q", true, now + 30 * S);
        assert!(schedule.due(b"o", now + 30 * S));
        assert!(schedule.urgent(b"o"));
        assert!(!schedule.quiet(b"o"));
        // Seen paid by the check: the order leaves; a second push of it finds nothing.
        assert_eq!(schedule.forget(b"o"), Some("q".to_owned()));
        schedule.pushed("q", true, now + 31 * S);
        assert!(schedule.unquoted().is_empty());
        // A state of a quote never watched changes nothing.
        schedule.pushed("other", true, now);
    }

    #[test]
    fn a_pushed_order_is_still_checked_at_its_expiry() {
        let schedule = Schedule::new(PollRules::default());
        let now = Instant::now();
        schedule.sync(&[(b"o".to_vec(), now + 20 * S)], now);
        schedule.set_quote(b"o", "q");
        schedule.pushed("q", false, now);
        assert!(!schedule.due(b"o", now + 19 * S));
        assert!(schedule.due(b"o", now + 20 * S), "expiry needs a check");
        schedule.unpaid(b"o", now + 20 * S);
        assert!(!schedule.due(b"o", now + 79 * S));
        assert!(schedule.due(b"o", now + 80 * S));
    }

    #[test]
    fn a_lost_push_returns_orders_to_the_poller() {
        let rules = PollRules::default();
        let schedule = Schedule::new(rules);
        let now = Instant::now();
        schedule.connected();
        schedule.sync(&[(b"o".to_vec(), now + 3600 * S)], now);
        schedule.set_quote(b"o", "q");
        schedule.pushed("q", false, now);
        assert!(schedule.quiet(b"o"));
        schedule.lost(now + 5 * S);
        assert!(!schedule.quiet(b"o"));
        assert!(!schedule.due(b"o", now + 19 * S));
        assert!(schedule.due(b"o", now + 5 * S + rules.max_interval));
        // Polled at the poller's pace again until the mint tells the state anew.
        schedule.unpaid(b"o", now + 20 * S);
        assert!(schedule.due(b"o", now + 35 * S));
        // New orders are due at once while nothing is pushed.
        schedule.sync(
            &[
                (b"o".to_vec(), now + 3600 * S),
                (b"n".to_vec(), now + 3600 * S),
            ],
            now + 40 * S,
        );
        assert!(schedule.due(b"n", now + 40 * S));
    }

    #[test]
    fn a_failing_pushed_order_keeps_its_backoff() {
        let schedule = Schedule::new(PollRules::default());
        let now = Instant::now();
        schedule.sync(&[(b"o".to_vec(), now + 3600 * S)], now);
        schedule.set_quote(b"o", "q");
        schedule.failed(b"o", now);
        schedule.pushed("q", false, now);
        assert!(
            schedule.due(b"o", now + FIRST_RETRY),
            "the retry is not postponed"
        );
        schedule.unpaid(b"o", now + FIRST_RETRY);
        assert!(!schedule.due(b"o", now + FIRST_RETRY + 59 * S));
    }
}
