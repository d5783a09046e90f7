//! Per-key rate limits (a token bucket per key, from `governor`).
//!
//! One [`KeyedLimiter`] holds one quota; tiers of senders (anonymous, authenticated, admin)
//! are one limiter each, chosen by the caller.

use std::hash::Hash;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

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
