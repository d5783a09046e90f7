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
//!   mint's request budget.

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

/// How often unpaid orders are checked at the mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollRules {
    /// Longest interval between two checks of one unpaid order.
    pub max_interval: Duration,
    /// Most mint checks per minute, all orders together.
    pub checks_per_minute: u32,
}

impl Default for PollRules {
    fn default() -> Self {
        Self {
            max_interval: Duration::from_secs(15),
            checks_per_minute: 120,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    next: Instant,
    interval: Duration,
    failures: u32,
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
    slots: Mutex<HashMap<Vec<u8>, Slot>>,
    bucket: Mutex<Bucket>,
    failures: AtomicU64,
    checks: AtomicU64,
}

impl Schedule {
    /// An empty schedule.
    pub fn new(rules: PollRules) -> Self {
        Self {
            rules,
            slots: Mutex::new(HashMap::new()),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                at: None,
            }),
            failures: AtomicU64::new(0),
            checks: AtomicU64::new(0),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Slot>> {
        // A poisoned lock only means a panic elsewhere mid-update of plain numbers.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when order `key` should be looked at now (a new order always is).
    pub fn due(&self, key: &[u8], now: Instant) -> bool {
        self.slots().get(key).is_none_or(|slot| now >= slot.next)
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

    /// Order `key` is still unpaid: its next check comes after a longer interval.
    pub fn unpaid(&self, key: &[u8], now: Instant) {
        let mut slots = self.slots();
        let interval = match slots.get(key) {
            Some(slot) if slot.failures == 0 => (slot.interval * 2).min(self.rules.max_interval),
            _ => FIRST_POLL.min(self.rules.max_interval),
        };
        slots.insert(
            key.to_vec(),
            Slot {
                next: now + interval,
                interval,
                failures: 0,
            },
        );
    }

    /// Handling order `key` failed: (failures in a row, delay until the next try).
    pub fn failed(&self, key: &[u8], now: Instant) -> (u32, Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots();
        let failures = slots.get(key).map_or(0, |s| s.failures).saturating_add(1);
        let delay = FIRST_RETRY
            .saturating_mul(1 << (failures - 1).min(16))
            .min(MAX_RETRY);
        slots.insert(
            key.to_vec(),
            Slot {
                next: now + delay,
                interval: FIRST_POLL,
                failures,
            },
        );
        (failures, delay)
    }

    /// Order `key` left the watch (paid or expired).
    pub fn forget(&self, key: &[u8]) {
        self.slots().remove(key);
    }

    /// Drops the slots of orders no longer awaiting payment.
    pub fn retain(&self, awaiting: &HashSet<Vec<u8>>) {
        self.slots().retain(|key, _| awaiting.contains(key));
    }

    /// Failures handling an order since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Mint checks of unpaid orders since start.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
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
            max_interval: Duration::from_secs(15),
            checks_per_minute: 60,
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
    fn orders_no_longer_awaiting_are_forgotten() {
        let schedule = Schedule::new(PollRules::default());
        let now = Instant::now();
        schedule.unpaid(b"a", now);
        schedule.unpaid(b"b", now);
        schedule.retain(&HashSet::from([b"a".to_vec()]));
        assert!(!schedule.due(b"a", now));
        assert!(schedule.due(b"b", now));
    }
}
