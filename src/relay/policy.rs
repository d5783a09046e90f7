//! The embedded relay's write policy: size, kind, age, proof of work, and write budgets per
//! pubkey, per connection and overall.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};

use nostr_relay_builder::builder::{PolicyResult, WritePolicy};
use nostr_sdk::prelude::BoxedFuture;
use nostr_sdk::{Event, Kind, PublicKey, Timestamp};

use super::events_db::SledEventStore;
use crate::config::RelayConfig;
use crate::ratelimit::KeyedLimiter;
use crate::util::json_size_over;

/// soko's own keys, the bot and the identities it manages. Their events skip the rate limit
/// (they publish on behalf of many users and must not be throttled as one) and the store's
/// bound (see `SledEventStore`).
pub type Exempt = Arc<RwLock<HashSet<PublicKey>>>;

/// How far ahead of the relay's clock an event may be dated. Further ahead, it would
/// outlive everything in the bounded store (the oldest go first) and cheat the retention.
const MAX_FUTURE_SECS: u64 = 15 * 60;

/// How recent an event of soko's own must be for its connection to be trusted.
const FRESH_SECS: u64 = 120;

/// NIP-59 backdates gift wraps by up to two days.
pub const GIFT_WRAP_BACKDATE: u64 = 2 * 24 * 3600;

/// Rejections carry these reasons after the relay's `blocked: ` prefix.
#[derive(Debug)]
pub struct SokoWritePolicy {
    max_event_bytes: usize,
    allowed_kinds: HashSet<u16>,
    retention_secs: u64,
    wrap_backdate_secs: u64,
    min_pow: u8,
    limiter: KeyedLimiter<PublicKey>,
    per_connection: KeyedLimiter<SocketAddr>,
    overall: KeyedLimiter<()>,
    exempt: Exempt,
    /// Connections that published a new event signed by one of soko's keys: soko's own,
    /// whose gift wraps (fresh keys) must not count against the budgets meant for outsiders.
    trusted: Mutex<HashSet<SocketAddr>>,
    /// The store, to tell a new event from a copy of one already published.
    store: Option<SledEventStore>,
}

/// `n` as a governor quota (at least 1).
fn quota(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The oldest `created_at` a regular event of `kind` may have at `now` and still be kept,
/// gift wraps allowed NIP-59's full backdating ([`GIFT_WRAP_BACKDATE`]).
pub fn oldest_kept(kind: Kind, retention_secs: u64, now: u64) -> u64 {
    oldest_kept_with(kind, retention_secs, GIFT_WRAP_BACKDATE, now)
}

/// [`oldest_kept`], gift wraps allowed `wrap_backdate_secs` (`[relay]
/// gift_wrap_backdate_secs`): what the relay keeps and accepts.
pub fn oldest_kept_with(kind: Kind, retention_secs: u64, wrap_backdate_secs: u64, now: u64) -> u64 {
    let backdate = if kind == Kind::GiftWrap {
        wrap_backdate_secs
    } else {
        0
    };
    now.saturating_sub(retention_secs.saturating_add(backdate))
}

/// Regular events expire by age; replaceable and addressable ones are one per author (and
/// `d` tag) and stay, ephemeral ones are never stored.
pub fn expires(kind: Kind) -> bool {
    !(kind.is_replaceable() || kind.is_addressable() || kind.is_ephemeral())
}

impl SokoWritePolicy {
    /// Builds the policy from `[relay]`; `store` tells new events from copies (see `judge`).
    pub fn new(config: &RelayConfig, exempt: Exempt, store: Option<SledEventStore>) -> Self {
        Self {
            max_event_bytes: config.max_event_bytes,
            allowed_kinds: config.allowed_kinds.iter().copied().collect(),
            retention_secs: config.retention_secs,
            wrap_backdate_secs: config.gift_wrap_backdate_secs,
            min_pow: config.min_pow_unknown,
            limiter: KeyedLimiter::per_minute(quota(config.rate_limit_per_minute)),
            per_connection: KeyedLimiter::per_minute(quota(config.connection_write_per_minute)),
            overall: KeyedLimiter::per_minute(quota(config.write_budget_per_minute)),
            exempt,
            trusted: Mutex::default(),
            store,
        }
    }

    /// The verdict on one event from the connection at `from`, without the relay around it.
    ///
    /// A connection becomes soko's own when it publishes a fresh event signed by one of
    /// soko's keys that the relay does not hold yet (`stored` false). Anyone can copy one of
    /// soko's public events, but only after the relay has it: a copy does not count.
    pub fn judge(&self, event: &Event, from: &SocketAddr, stored: bool) -> Result<(), String> {
        self.judge_own(event)?;
        let ours = self.is_ours(&event.pubkey);
        let now = Timestamp::now().as_secs();
        let created_at = event.created_at.as_secs();
        let fresh = now.abs_diff(created_at) <= FRESH_SECS;
        let trusted = match self.trusted.lock() {
            Ok(mut trusted) if ours && fresh && !stored => {
                trusted.insert(*from);
                true
            }
            Ok(trusted) => trusted.contains(from),
            Err(_) => false,
        };
        if ours || trusted {
            return Ok(());
        }
        if created_at > now.saturating_add(MAX_FUTURE_SECS) {
            return Err("created_at is in the future".to_owned());
        }
        let oldest = oldest_kept_with(
            event.kind,
            self.retention_secs,
            self.wrap_backdate_secs,
            now,
        );
        if expires(event.kind) && created_at < oldest {
            return Err("created_at is older than this relay keeps events".to_owned());
        }
        if self.min_pow > 0 && !event.id.check_pow(self.min_pow) {
            return Err(format!(
                "proof of work of {} bits required (NIP-13)",
                self.min_pow
            ));
        }
        // Narrowest budget first: a sender over its own budget must not spend the others'.
        // The per-pubkey budget guards what the relay keeps. Ephemeral events (NIP-46
        // requests and answers) pass through unstored; an app and its signer trade two per
        // DM sealed or opened, a resumed app's backlog all at once, and a flood of them
        // still meets the connection's and the relay's budgets.
        if !event.kind.is_ephemeral() && !self.limiter.allow(&event.pubkey) {
            return Err("rate limited: too many events from this pubkey, slow down".to_owned());
        }
        if !self.per_connection.allow(from) {
            return Err("rate limited: too many events on this connection, slow down".to_owned());
        }
        if !self.overall.allow(&()) {
            return Err("rate limited: the relay is busy, try again in a minute".to_owned());
        }
        Ok(())
    }

    /// The verdict on an event soko publishes from inside the process (see
    /// `LocalPublisher`): its size and kind, the rules that hold for soko's own connection
    /// too. The budgets and age rules are for outsiders.
    pub fn judge_own(&self, event: &Event) -> Result<(), String> {
        if let Some(size) = json_size_over(event, self.max_event_bytes) {
            return Err(format!(
                "event too large ({size} bytes, limit {})",
                self.max_event_bytes
            ));
        }
        let kind = event.kind.as_u16();
        if !self.allowed_kinds.is_empty() && !self.allowed_kinds.contains(&kind) {
            return Err(format!("kind {kind} is not accepted by this relay"));
        }
        Ok(())
    }

    /// Whether `author` is one of soko's own keys.
    fn is_ours(&self, author: &PublicKey) -> bool {
        self.exempt.read().is_ok_and(|set| set.contains(author))
    }

    /// The connection at `addr` closed: its address may come back as someone else.
    pub fn forget_connection(&self, addr: &SocketAddr) {
        if let Ok(mut trusted) = self.trusted.lock() {
            trusted.remove(addr);
        }
    }

    /// See [`KeyedLimiter::forget_idle`].
    pub fn forget_idle(&self) {
        self.limiter.forget_idle();
        self.per_connection.forget_idle();
    }
}

impl WritePolicy for SokoWritePolicy {
    fn admit_event<'a>(
        &'a self,
        event: &'a Event,
        addr: &'a SocketAddr,
    ) -> BoxedFuture<'a, PolicyResult> {
        Box::pin(async move {
            // Whether the relay holds it matters only for soko's own keys (see `judge`).
            let ours = self.is_ours(&event.pubkey);
            let stored = match &self.store {
                Some(store) if ours => store.holds(&event.id).await,
                _ => false,
            };
            match self.judge(event, addr, stored) {
                Ok(()) => PolicyResult::Accept,
                Err(reason) => PolicyResult::Reject(reason),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::{EventBuilder, JsonUtil, Keys};

    use super::*;
    use crate::config::Config;

    fn policy(exempt: Exempt) -> SokoWritePolicy {
        let mut config = Config::default().relay;
        config.max_event_bytes = 1_000;
        config.rate_limit_per_minute = 2;
        config.connection_write_per_minute = 3;
        config.write_budget_per_minute = 5;
        SokoWritePolicy::new(&config, exempt, None)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn note(
        keys: &Keys,
        kind: u16,
        content: &str,
    ) -> Result<Event, nostr_sdk::event::builder::Error> {
        EventBuilder::new(Kind::Custom(kind), content).sign_with_keys(keys)
    }

    #[test]
    fn an_event_just_over_the_limit_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let policy = policy(Exempt::default());
        let keys = Keys::generate();
        let fits = |content: &str| {
            note(&keys, 4, content).map(|e| (e.as_json().len(), policy.judge_own(&e)))
        };
        // Find the longest content that fits the 1,000-byte limit: one more byte is refused.
        let mut n = 0;
        while fits(&"x".repeat(n + 1))?.0 <= 1_000 {
            n += 1;
        }
        assert!(fits(&"x".repeat(n))?.1.is_ok());
        assert!(fits(&"x".repeat(n + 1))?
            .1
            .is_err_and(|r| r.contains("too large")));
        // Escapes count as the JSON has them.
        assert!(fits(&"\u{1}".repeat(n / 6 + 1))?.1.is_err());
        Ok(())
    }

    #[test]
    fn size_kind_and_rate_are_enforced() -> Result<(), Box<dyn std::error::Error>> {
        let policy = policy(Exempt::default());
        let keys = Keys::generate();
        let big = note(&keys, 4, &"x".repeat(2_000))?;
        assert!(policy
            .judge(&big, &addr(1), false)
            .is_err_and(|r| r.contains("too large")));
        let odd = note(&keys, 1, "hi")?;
        assert!(policy
            .judge(&odd, &addr(1), false)
            .is_err_and(|r| r.contains("kind 1")));
        let dm = note(&keys, 4, "hi")?;
        assert!(policy.judge(&dm, &addr(1), false).is_ok());
        assert!(policy.judge(&dm, &addr(2), false).is_ok());
        assert!(policy
            .judge(&dm, &addr(3), false)
            .is_err_and(|r| r.contains("this pubkey")));
        Ok(())
    }

    #[test]
    fn ephemeral_events_spend_the_connections_budget_not_the_pubkeys(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let relay = policy(Exempt::default());
        let signer = Keys::generate();
        // Three NIP-46 answers from one key on three connections: over the pubkey's 2, each
        // within its connection's 3.
        for port in 1..=3 {
            let answer = note(&signer, 24133, "answer")?;
            assert!(relay.judge(&answer, &addr(port), false).is_ok());
        }
        // One connection still stops at its 3.
        for _ in 0..2 {
            assert!(relay
                .judge(&note(&signer, 24133, "answer")?, &addr(1), false)
                .is_ok());
        }
        assert!(relay
            .judge(&note(&signer, 24133, "answer")?, &addr(1), false)
            .is_err_and(|r| r.contains("this connection")));
        // A kept event still counts against its pubkey (a fresh policy: the relay's budget
        // of 5 is spent).
        let relay = policy(Exempt::default());
        let kept = note(&signer, 4, "dm")?;
        assert!(relay.judge(&kept, &addr(9), false).is_ok());
        assert!(relay.judge(&kept, &addr(8), false).is_ok());
        assert!(relay
            .judge(&kept, &addr(7), false)
            .is_err_and(|r| r.contains("this pubkey")));
        Ok(())
    }

    #[test]
    fn gift_wraps_are_kept_the_configured_backdate_longer() -> Result<(), Box<dyn std::error::Error>>
    {
        let day = 24 * 3600;
        let now = 100 * day;
        assert_eq!(oldest_kept(Kind::GiftWrap, 7 * day, now), 91 * day);
        assert_eq!(
            oldest_kept(Kind::EncryptedDirectMessage, 7 * day, now),
            93 * day
        );
        assert_eq!(
            oldest_kept_with(Kind::GiftWrap, 7 * day, day, now),
            92 * day
        );
        assert_eq!(
            oldest_kept_with(Kind::TextNote, 7 * day, day, now),
            93 * day
        );
        // The relay refuses by the configured backdate: a wrap dated over 8 days ago passes the
        // default, not a relay keeping wraps a day past its week.
        let mut config = Config::default().relay;
        let eight_days = Timestamp::from(Timestamp::now().as_secs() - 8 * day - 3600);
        let wrap = EventBuilder::new(Kind::GiftWrap, "w")
            .custom_created_at(eight_days)
            .sign_with_keys(&Keys::generate())?;
        let default = SokoWritePolicy::new(&config, Exempt::default(), None);
        assert!(default.judge(&wrap, &addr(1), false).is_ok());
        config.gift_wrap_backdate_secs = day;
        let shorter = SokoWritePolicy::new(&config, Exempt::default(), None);
        assert!(shorter
            .judge(&wrap, &addr(1), false)
            .is_err_and(|r| r.contains("older than this relay keeps")));
        Ok(())
    }

    #[test]
    fn fresh_keys_meet_the_connection_and_overall_budgets() -> Result<(), Box<dyn std::error::Error>>
    {
        let policy = policy(Exempt::default());
        let fresh = || note(&Keys::generate(), 4, "hi");
        for _ in 0..3 {
            assert!(policy.judge(&fresh()?, &addr(1), false).is_ok());
        }
        assert!(policy
            .judge(&fresh()?, &addr(1), false)
            .is_err_and(|r| r.contains("this connection")));
        assert!(policy.judge(&fresh()?, &addr(2), false).is_ok());
        assert!(policy.judge(&fresh()?, &addr(3), false).is_ok());
        assert!(policy
            .judge(&fresh()?, &addr(4), false)
            .is_err_and(|r| r.contains("busy")));
        Ok(())
    }

    #[test]
    fn soko_connections_and_keys_are_exempt() -> Result<(), Box<dyn std::error::Error>> {
        let keys = Keys::generate();
        let exempt = Exempt::default();
        exempt
            .write()
            .map_err(|_| "poisoned")?
            .insert(keys.public_key());
        let policy = policy(exempt);
        let dm = note(&keys, 4, "hi")?;
        for _ in 0..10 {
            assert!(policy.judge(&dm, &addr(1), false).is_ok());
        }
        // A copy of one of soko's events the relay already holds vouches for nobody.
        assert!(policy.judge(&dm, &addr(9), true).is_ok());
        assert!(policy
            .judge(&note(&Keys::generate(), 1059, "w")?, &addr(9), false)
            .is_ok());
        // Its connection's wraps (fresh keys) pass too, until the connection closes.
        for _ in 0..10 {
            assert!(policy
                .judge(&note(&Keys::generate(), 1059, "w")?, &addr(1), false)
                .is_ok());
        }
        policy.forget_connection(&addr(1));
        for _ in 0..3 {
            assert!(policy
                .judge(&note(&Keys::generate(), 1059, "w")?, &addr(1), false)
                .is_ok());
        }
        assert!(policy
            .judge(&note(&Keys::generate(), 1059, "w")?, &addr(1), false)
            .is_err());
        Ok(())
    }

    #[test]
    fn far_future_stale_and_unmined_events_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let mut config = Config::default().relay;
        config.retention_secs = 3_600;
        config.min_pow_unknown = 8;
        let policy = SokoWritePolicy::new(&config, Exempt::default(), None);
        let keys = Keys::generate();
        let now = Timestamp::now().as_secs();
        let at = |kind: u16, t: u64| {
            EventBuilder::new(Kind::Custom(kind), "x")
                .custom_created_at(Timestamp::from(t))
                .sign_with_keys(&keys)
        };
        assert!(policy
            .judge(&at(4, now + 3_600)?, &addr(1), false)
            .is_err_and(|r| r.contains("future")));
        assert!(policy
            .judge(&at(4, now - 7_200)?, &addr(1), false)
            .is_err_and(|r| r.contains("older")));
        // A wrap may be two days older: NIP-59 backdates them. Unmined for sure: one id in
        // 256 has 8 leading zero bits by chance, and the test then failed.
        let mut unmined = at(1059, now - 7_200)?;
        let mut t = now - 7_200;
        while unmined.id.check_pow(8) {
            t -= 1;
            unmined = at(1059, t)?;
        }
        assert!(policy
            .judge(&unmined, &addr(1), false)
            .is_err_and(|r| r.contains("proof of work")));
        let mined = EventBuilder::new(Kind::Custom(4), "x")
            .pow(8)
            .sign_with_keys(&keys)?;
        assert!(policy.judge(&mined, &addr(1), false).is_ok());
        Ok(())
    }
}
