//! Per-key rate limits.
//!
//! - [`KeyedLimiter`]: a token bucket per key (from `governor`), for the embedded relay's
//!   writes, forgotten when idle.
//! - [`CommandLimits`]: commands per sender and window, by [`Tier`], in a window store of
//!   bounded size ([`WindowLimiter`]). Which tier a command counts against is decided by a
//!   [`Tiers`] given at construction.

use std::hash::Hash;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use lru::LruCache;
use nostr_sdk::PublicKey;

use crate::clock::Clock;
use crate::config::LimitsConfig;

/// Allows `per_minute` events per key, in bursts of up to the same number.
#[derive(Debug)]
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter allowing `per_minute` events per key.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Takes one token for `key`; false when the key is over its quota.
    pub fn allow(&self, key: &K) -> bool {
        self.limiter.check_key(key).is_ok()
    }

    /// Forgets keys whose buckets are full again, so memory tracks active senders only.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Which budget a command counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// No session: `[limits] anonymous`.
    Anonymous,
    /// A live private session of this sender: `[limits] session`.
    Session,
    /// An admin (or another key the operator trusts with more): `[limits] admin`.
    Admin,
}

impl Tier {
    /// Its name in messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Anonymous => "anonymous",
            Tier::Session => "session",
            Tier::Admin => "admin",
        }
    }
}

/// Decides the tier of one command: its sender (for NIP-17 the rumor's author) and the
/// session the envelope names, if any. Called once per command, so it must be cheap (a
/// lookup, no network).
pub trait Tiers: Send + Sync {
    /// The tier `sender`'s command counts against.
    fn tier(&self, sender: &PublicKey, session: Option<&str>) -> Tier;
}

/// Tiers by key alone: the given keys are [`Tier::Admin`], everyone else
/// [`Tier::Anonymous`] whatever session they name (no session is live before the sessions
/// domain says so).
#[derive(Debug, Clone, Default)]
pub struct KeyTiers {
    admins: Arc<std::collections::HashSet<PublicKey>>,
}

impl KeyTiers {
    /// `admins` are counted as [`Tier::Admin`].
    pub fn new(admins: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            admins: Arc::new(admins.into_iter().collect()),
        }
    }

    /// Whether `key` is one of the admin-tier keys.
    pub fn is_admin(&self, key: &PublicKey) -> bool {
        self.admins.contains(key)
    }
}

impl Tiers for KeyTiers {
    fn tier(&self, sender: &PublicKey, _session: Option<&str>) -> Tier {
        if self.is_admin(sender) {
            Tier::Admin
        } else {
            Tier::Anonymous
        }
    }
}

/// One key's window: when it started (unix seconds) and how much of it is used.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    used: u32,
}

/// Fixed windows per key: at most `limit` events in `window_secs` from a key's first event
/// in the window. At most `max_keys` windows are kept; a new key past that pushes out the
/// key seen least recently. Forgetting a key only gives it a fresh window, which a fresh key
/// gets anyway (keys cost nothing to make), so the cap bounds memory without opening a way
/// around the limit. Windows rather than a token bucket: "100 per 15 minutes" means what it
/// says, and the retry time is when the window ends.
#[derive(Debug)]
pub struct WindowLimiter<K: Hash + Eq> {
    limit: u32,
    window_secs: u64,
    max_keys: NonZeroUsize,
    // Unbounded as an LruCache (it would allocate for `max_keys` up front); the bound is
    // kept in `check`, so memory follows the keys actually seen.
    windows: Mutex<LruCache<K, Window>>,
}

impl<K: Hash + Eq + Clone> WindowLimiter<K> {
    /// `limit` events per `window_secs` per key, for at most `max_keys` keys (each at least 1).
    pub fn new(limit: u32, window_secs: u64, max_keys: usize) -> Self {
        Self {
            limit: limit.max(1),
            window_secs: window_secs.max(1),
            max_keys: NonZeroUsize::new(max_keys).unwrap_or(NonZeroUsize::MIN),
            windows: Mutex::new(LruCache::unbounded()),
        }
    }

    /// Counts one event of `key` at unix time `now`; `Err(seconds)` until its window ends
    /// when the key is over its limit (a refused event is not counted).
    pub fn check(&self, key: &K, now: u64) -> Result<(), u64> {
        self.check_limit(key, self.limit, now)
    }

    /// [`Self::check`] with another limit for this key (tiers share one store).
    fn check_limit(&self, key: &K, limit: u32, now: u64) -> Result<(), u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(window) = windows.get_mut(key) {
            let ends = window.start.saturating_add(self.window_secs);
            if now >= ends {
                *window = Window {
                    start: now,
                    used: 1,
                };
            } else if window.used < limit {
                window.used += 1;
            } else {
                return Err((ends - now).max(1));
            }
            return Ok(());
        }
        if windows.len() >= self.max_keys.get() {
            windows.pop_lru();
        }
        windows.put(
            key.clone(),
            Window {
                start: now,
                used: 1,
            },
        );
        Ok(())
    }

    /// Windows kept now.
    pub fn len(&self) -> usize {
        self.windows.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no window is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A command refused for its sender's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The tier it counted against.
    pub tier: Tier,
    /// That tier's commands per window.
    pub limit: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Seconds until the sender's window ends and it may send again.
    pub retry_after_secs: u64,
}

/// The per-sender command limits, by tier: one [`WindowLimiter`] keyed by (tier, sender),
/// so a sender's tiers have separate budgets and all of them share one bound on memory.
pub struct CommandLimits {
    tiers: Arc<dyn Tiers>,
    config: LimitsConfig,
    windows: WindowLimiter<(Tier, PublicKey)>,
    clock: Clock,
}

impl std::fmt::Debug for CommandLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandLimits")
            .field("config", &self.config)
            .field("tracked", &self.windows.len())
            .finish_non_exhaustive()
    }
}

impl CommandLimits {
    /// Limits per `config`, tiers decided by `tiers`, windows kept on `clock`.
    pub fn new(config: &LimitsConfig, tiers: Arc<dyn Tiers>, clock: Clock) -> Self {
        Self {
            tiers,
            config: config.clone(),
            // The window store takes one limit; each tier's is applied in `check`.
            windows: WindowLimiter::new(u32::MAX, config.window_secs, config.max_tracked_senders),
            clock,
        }
    }

    /// Counts one command of `sender` naming `session`: its tier, or why it must wait.
    pub fn check(&self, sender: &PublicKey, session: Option<&str>) -> Result<Tier, Limited> {
        let tier = self.tiers.tier(sender, session);
        let limit = self.limit(tier);
        self.windows
            .check_limit(&(tier, *sender), limit, self.clock.now())
            .map(|()| tier)
            .map_err(|retry_after_secs| Limited {
                tier,
                limit,
                window_secs: self.windows.window_secs,
                retry_after_secs,
            })
    }

    /// A tier's commands per window.
    pub fn limit(&self, tier: Tier) -> u32 {
        match tier {
            Tier::Anonymous => self.config.anonymous,
            Tier::Session => self.config.session,
            Tier::Admin => self.config.admin,
        }
        .max(1)
    }

    /// Windows kept now, all tiers together (at most `max_tracked_senders`).
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_budget() {
        let limiter = KeyedLimiter::per_minute(NonZeroU32::MIN.saturating_add(1));
        assert!(limiter.allow(&"a"));
        assert!(limiter.allow(&"a"));
        assert!(!limiter.allow(&"a"));
        assert!(limiter.allow(&"b"));
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn a_window_allows_its_limit_then_says_when_it_ends() {
        let limiter = WindowLimiter::new(3, 900, 10);
        for at in [1_000, 1_001, 1_500] {
            assert_eq!(limiter.check(&"a", at), Ok(()));
        }
        assert_eq!(limiter.check(&"a", 1_600), Err(300));
        assert_eq!(limiter.check(&"a", 1_899), Err(1));
        // Another key has its own window.
        assert_eq!(limiter.check(&"b", 1_899), Ok(()));
        // The window ends 900 s after its first event: a fresh one starts.
        assert_eq!(limiter.check(&"a", 1_900), Ok(()));
        assert_eq!(limiter.check(&"a", 1_901), Ok(()));
        assert_eq!(limiter.check(&"a", 1_902), Ok(()));
        assert_eq!(limiter.check(&"a", 1_903), Err(897));
    }

    #[test]
    fn a_hundred_thousand_senders_stay_within_the_cap() {
        let cap = 10_000;
        let limiter = WindowLimiter::new(1, 900, cap);
        for key in 0..100_000u64 {
            assert_eq!(limiter.check(&key, 1_000), Ok(()));
            assert!(limiter.len() <= cap);
        }
        assert_eq!(limiter.len(), cap);
        // The most recent keys are the ones kept: still limited.
        assert_eq!(limiter.check(&99_999, 1_001), Err(899));
        // The oldest was forgotten and gets a fresh window, as a new key would.
        assert_eq!(limiter.check(&0, 1_001), Ok(()));
        assert_eq!(limiter.len(), cap);
    }

    #[test]
    fn a_sender_over_its_limit_stays_remembered_while_it_keeps_asking() {
        // Its refusals touch its window, so only `cap` other senders after its last try
        // could push it out.
        let limiter = WindowLimiter::new(1, 900, 3);
        assert_eq!(limiter.check(&0u64, 0), Ok(()));
        for other in 1..=10u64 {
            assert_eq!(limiter.check(&other, 1), Ok(()));
            assert_eq!(limiter.check(&0, 1), Err(899));
        }
    }

    /// Session for one key, as the sessions domain will say for a live session.
    struct OneSession(PublicKey);

    impl Tiers for OneSession {
        fn tier(&self, sender: &PublicKey, session: Option<&str>) -> Tier {
            if *sender == self.0 && session == Some("s1") {
                Tier::Session
            } else {
                Tier::Anonymous
            }
        }
    }

    fn config(anonymous: u32, session: u32, admin: u32, cap: usize) -> LimitsConfig {
        LimitsConfig {
            window_secs: 900,
            anonymous,
            session,
            admin,
            max_tracked_senders: cap,
        }
    }

    #[test]
    fn each_tier_has_its_own_limit_and_budget() {
        let (alice, bob) = (
            nostr_sdk::Keys::generate().public_key(),
            nostr_sdk::Keys::generate().public_key(),
        );
        let clock = Clock::system();
        let limits = CommandLimits::new(
            &config(2, 4, 6, 100),
            Arc::new(OneSession(alice)),
            clock.clone(),
        );
        // Alice's session commands: 4, on a budget apart from her anonymous ones.
        for _ in 0..4 {
            assert_eq!(limits.check(&alice, Some("s1")), Ok(Tier::Session));
        }
        let refused = limits.check(&alice, Some("s1"));
        assert!(
            matches!(
                refused,
                Err(Limited {
                    tier: Tier::Session,
                    limit: 4,
                    window_secs: 900,
                    retry_after_secs: 895..=900
                })
            ),
            "{refused:?}"
        );
        for _ in 0..2 {
            assert_eq!(limits.check(&alice, None), Ok(Tier::Anonymous));
        }
        assert!(limits.check(&alice, None).is_err());
        // Bob naming alice's session is not in it.
        assert_eq!(limits.check(&bob, Some("s1")), Ok(Tier::Anonymous));
        assert_eq!(limits.check(&bob, Some("s1")), Ok(Tier::Anonymous));
        assert!(matches!(
            limits.check(&bob, Some("s1")),
            Err(Limited {
                tier: Tier::Anonymous,
                limit: 2,
                ..
            })
        ));

        let admins = CommandLimits::new(
            &config(2, 4, 6, 100),
            Arc::new(KeyTiers::new([bob])),
            clock.clone(),
        );
        for _ in 0..6 {
            assert_eq!(admins.check(&bob, None), Ok(Tier::Admin));
        }
        assert!(admins.check(&bob, None).is_err());
        assert_eq!(admins.check(&alice, None), Ok(Tier::Anonymous));

        // The window passes on the services' clock: served again.
        clock.advance(900);
        assert_eq!(limits.check(&alice, Some("s1")), Ok(Tier::Session));
        assert_eq!(limits.check(&alice, None), Ok(Tier::Anonymous));
        assert_eq!(admins.check(&bob, None), Ok(Tier::Admin));
    }

    #[test]
    fn the_default_limits_refuse_the_101st_anonymous_command() {
        let alice = nostr_sdk::Keys::generate().public_key();
        let limits = CommandLimits::new(
            &LimitsConfig::default(),
            Arc::new(KeyTiers::default()),
            Clock::system(),
        );
        for _ in 0..100 {
            assert_eq!(limits.check(&alice, None), Ok(Tier::Anonymous));
        }
        assert!(matches!(
            limits.check(&alice, None),
            Err(Limited {
                limit: 100,
                window_secs: 900,
                ..
            })
        ));
    }

    #[test]
    fn command_windows_are_bounded_across_senders() {
        let limits = CommandLimits::new(
            &config(1, 1, 1, 500),
            Arc::new(KeyTiers::default()),
            Clock::system(),
        );
        for _ in 0..2_000 {
            let sender = nostr_sdk::Keys::generate().public_key();
            assert_eq!(limits.check(&sender, None), Ok(Tier::Anonymous));
            assert!(limits.tracked() <= 500);
        }
        assert_eq!(limits.tracked(), 500);
        // What one window costs: one allocation holding the key, the window and the LRU's
        // two links (72 bytes), and the map's slot (two pointers and a control byte, at a
        // load of 7/8 or more). With the allocator's rounding, about 100 bytes: 10 MB at
        // the default cap of 100,000.
        let node =
            std::mem::size_of::<((Tier, PublicKey), Window)>() + 2 * std::mem::size_of::<usize>();
        let slot = 2 * std::mem::size_of::<usize>() + 1;
        assert!(node + slot <= 96, "{node} + {slot} bytes per window");
    }
}
