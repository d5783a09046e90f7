//! The embedded relay's write policy: size, kind and per-pubkey rate limits.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use nostr_relay_builder::builder::{PolicyResult, WritePolicy};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, JsonUtil, PublicKey};

use crate::config::RelayConfig;
use crate::ratelimit::KeyedLimiter;

/// Keys whose events skip the rate limit: the bot and the identities it manages publish
/// on behalf of many users and must not be throttled as one.
pub type Exempt = Arc<RwLock<HashSet<PublicKey>>>;

/// Rejections carry these reasons after the relay's `blocked: ` prefix.
#[derive(Debug)]
pub struct SokoWritePolicy {
    max_event_bytes: usize,
    allowed_kinds: HashSet<u16>,
    limiter: KeyedLimiter<PublicKey>,
    exempt: Exempt,
}

impl SokoWritePolicy {
    /// Builds the policy from `[relay]`.
    pub fn new(config: &RelayConfig, exempt: Exempt) -> Self {
        Self {
            max_event_bytes: config.max_event_bytes,
            allowed_kinds: config.allowed_kinds.iter().copied().collect(),
            limiter: KeyedLimiter::per_minute(
                NonZeroU32::new(config.rate_limit_per_minute).unwrap_or(NonZeroU32::MIN),
            ),
            exempt,
        }
    }

    /// The verdict on one event, without the relay around it.
    pub fn judge(&self, event: &Event) -> Result<(), String> {
        let size = event.as_json().len();
        if size > self.max_event_bytes {
            return Err(format!(
                "event too large ({size} bytes, limit {})",
                self.max_event_bytes
            ));
        }
        let kind = event.kind.as_u16();
        if !self.allowed_kinds.is_empty() && !self.allowed_kinds.contains(&kind) {
            return Err(format!("kind {kind} is not accepted by this relay"));
        }
        let exempt = self
            .exempt
            .read()
            .map(|set| set.contains(&event.pubkey))
            .unwrap_or(false);
        if !exempt && !self.limiter.allow(&event.pubkey) {
            return Err("rate limited: too many events from this pubkey, slow down".to_owned());
        }
        Ok(())
    }

    /// See [`KeyedLimiter::forget_idle`].
    pub fn forget_idle(&self) {
        self.limiter.forget_idle();
    }
}

impl WritePolicy for SokoWritePolicy {
    fn admit_event<'a>(
        &'a self,
        event: &'a Event,
        _addr: &'a SocketAddr,
    ) -> BoxedFuture<'a, PolicyResult> {
        Box::pin(async move {
            match self.judge(event) {
                Ok(()) => PolicyResult::Accept,
                Err(reason) => PolicyResult::Reject(reason),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::{EventBuilder, Keys, Kind};

    use super::*;
    use crate::config::Config;

    fn policy(exempt: Exempt) -> SokoWritePolicy {
        let mut config = Config::default().relay;
        config.max_event_bytes = 1_000;
        config.rate_limit_per_minute = 2;
        SokoWritePolicy::new(&config, exempt)
    }

    fn note(
        keys: &Keys,
        kind: u16,
        content: &str,
    ) -> Result<Event, nostr_sdk::event::builder::Error> {
        EventBuilder::new(Kind::Custom(kind), content).sign_with_keys(keys)
    }

    #[test]
    fn size_kind_and_rate_are_enforced() -> Result<(), Box<dyn std::error::Error>> {
        let policy = policy(Exempt::default());
        let keys = Keys::generate();
        let big = note(&keys, 4, &"x".repeat(2_000))?;
        assert!(policy.judge(&big).is_err_and(|r| r.contains("too large")));
        let odd = note(&keys, 1, "hi")?;
        assert!(policy.judge(&odd).is_err_and(|r| r.contains("kind 1")));
        let dm = note(&keys, 4, "hi")?;
        assert!(policy.judge(&dm).is_ok());
        assert!(policy.judge(&dm).is_ok());
        assert!(policy.judge(&dm).is_err_and(|r| r.contains("rate limited")));
        Ok(())
    }

    #[test]
    fn exempt_keys_are_not_rate_limited() -> Result<(), Box<dyn std::error::Error>> {
        let keys = Keys::generate();
        let exempt = Exempt::default();
        exempt
            .write()
            .map_err(|_| "poisoned")?
            .insert(keys.public_key());
        let policy = policy(exempt);
        let dm = note(&keys, 4, "hi")?;
        for _ in 0..10 {
            assert!(policy.judge(&dm).is_ok());
        }
        Ok(())
    }
}
