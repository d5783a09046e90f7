//! Private sessions: a registered user opens one from any key with one blind authentication
//! token (Cashu NUT-22), so soko knows the session is *some* registered user's but not whose.
//!
//! A session is bound to the key that opened it and runs out at `expires_at` (checked
//! against sled on every command, never against the mint). Each has its own ecash wallet,
//! a namespace of the sled wallet database, so no proof of one session can pay for another.
//! When it is closed or expires, its ecash goes back (a Cashu token by DM to the session
//! key, or a Lightning address given at open) and its wallet's trees are deleted: the
//! refund saga of [`state`], resumed by [`Sessions::cleanup`] after a crash.
//!
//! What soko keeps about a session: a random id, the session key (fresh, chosen by the
//! user), the times, the state, the refund address sealed with the vault, and the spent
//! token's `Y` (so a replay is refused even when the mint is unreachable). Nothing names the
//! user's registered key or OIDC subject: soko never sees them.

pub mod bat;
mod error;
mod purse;
mod refund;
pub mod state;
mod transfer;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use nostr_sdk::secp256k1::rand::{rngs::OsRng, RngCore};
use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};

pub use self::bat::{BatVerifier, ExternalMint, InProcessMint};
pub use self::error::{SessionError, SessionRefusal};
pub use self::purse::{Collected, Invoice, PurseError};
pub use self::state::{SessionEvent, SessionState};
use crate::clock::Clock;
use crate::metrics::{BatOutcome, Metrics};
use crate::money::Sats;
use crate::outbound::Publisher;
use crate::store::{Store, StoreError, Typed};
use crate::vault::Vault;
use crate::wallet::{self, Wallet};

pub use crate::config::MAX_SESSION_SECS;

/// How sessions are run.
#[derive(Debug, Clone)]
pub struct SessionRules {
    /// Seconds a session lasts (at most [`MAX_SESSION_SECS`]).
    pub ttl_secs: u64,
    /// Seconds an ended session still answers `session_closed` / `session_expired` before
    /// its tombstone goes.
    pub tombstone_secs: u64,
    /// Session wallets kept open in memory; others reopen on demand.
    pub open_wallets: NonZeroUsize,
    /// Which Lightning addresses refunds may go to.
    pub lnurl: crate::lnurl::Policy,
}

impl Default for SessionRules {
    fn default() -> Self {
        Self {
            ttl_secs: MAX_SESSION_SECS,
            tombstone_secs: 24 * 3600,
            open_wallets: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            lnurl: crate::lnurl::Policy::default(),
        }
    }
}

/// One session as sled keeps it (tree `sessions`, keyed by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The key that opened it: the only one its commands are taken from.
    pub key: PublicKey,
    /// When it was opened.
    pub opened_at: u64,
    /// When it runs out.
    pub expires_at: u64,
    /// Where it stands.
    pub state: SessionState,
    /// Why it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ending>,
    /// The refund Lightning address, sealed with the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_to: Option<String>,
    /// The Lightning refund in flight (`Melting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub melt: Option<MeltRef>,
    /// Lightning refunds tried and failed; after [`refund::MAX_MELT_FAILURES`] the ecash
    /// goes back as a token instead.
    #[serde(default)]
    pub melt_failures: u32,
    /// Sats returned so far.
    #[serde(default)]
    pub returned: Sats,
    /// Whether the session's wallet was ever created (by a deposit). Recorded before the
    /// wallet's trees are: a session that never held ecash is never given a wallet, which
    /// costs sled about a dozen trees.
    #[serde(default)]
    pub has_wallet: bool,
}

/// A Lightning refund recorded before its melt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeltRef {
    /// The mint's melt quote id.
    pub quote: String,
    /// What it pays to the refund address.
    pub amount: Sats,
}

/// Why and when a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    /// Closed by its owner, or expired.
    pub reason: EndReason,
    /// When.
    pub at: u64,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `close_session`.
    Closed,
    /// It ran out of time.
    Expired,
}

impl SessionRecord {
    fn moved(mut self, event: SessionEvent) -> Result<Self, state::IllegalMove> {
        self.state = state::transition(self.state, event)?;
        Ok(self)
    }
}

/// A session the sender may use now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// Its id.
    pub id: String,
    /// Its record.
    pub record: SessionRecord,
}

/// A session just opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its id, to name in every command of the session.
    pub id: String,
    /// When it runs out.
    pub expires_at: u64,
}

/// What one cleanup pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Sessions that ran out in this pass.
    pub expired: usize,
    /// Sessions whose ecash went back in this pass.
    pub refunded: usize,
    /// Sessions whose wallet was deleted in this pass.
    pub deleted: usize,
    /// Sessions whose refund failed (retried next pass).
    pub failed: usize,
    /// Expired sessions kept because a trade or dispute holds them.
    pub held: usize,
}

/// The sessions domain.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    records: Typed<SessionRecord>,
    /// Spent token `Y` (hex) → when.
    spent: Typed<u64>,
    /// Session id → what holds it open past its expiry (a trade, a dispute).
    holds: Typed<Vec<String>>,
    /// Session id, NUL, mint quote → what [`Sessions::collect`] minted of it.
    collected: Typed<Sats>,
    /// Session id, NUL, caller's op → the token [`Sessions::token`] made for it.
    sent: Typed<purse::SentRecord>,
    verifier: Option<Arc<dyn BatVerifier>>,
    wallets: Mutex<LruCache<String, Wallet>>,
    /// Sessions whose wallet's recovery ran in this process. Once only: a wallet dropped
    /// from `wallets` and opened again may still be in use by a task holding the old handle,
    /// and recovery rolls back what it finds in flight.
    recovered: Mutex<HashSet<String>>,
    /// Taken while a wallet recovers, so two first opens of one session do not both run it.
    recovering: tokio::sync::Mutex<()>,
    mint_url: String,
    link: wallet::MintLink,
    seed: [u8; 64],
    publisher: Publisher,
    bot: PublicKey,
    vault: Vault,
    rules: SessionRules,
    clock: Clock,
    metrics: Metrics,
    /// Open, unexpired sessions: counted at start and by each cleanup pass, moved by opens
    /// and ends in between (a gauge, not a scan per open).
    active: AtomicU64,
    /// Ecash in open sessions' wallets: summed by each cleanup pass, moved by deposits and
    /// refunds in between.
    held: AtomicU64,
    /// Per-session locks, striped: a deposit, the end of a session and each step of its
    /// refund saga never interleave for one session (a deposit landing after the refund
    /// token was made would be deleted with the wallet), while different sessions mostly
    /// go on side by side. Bounded whatever the number of sessions.
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("sessions", &self.inner.records.len())
            .field("verifier", &self.inner.verifier)
            .finish_non_exhaustive()
    }
}

/// What [`Sessions::open`] needs besides the store.
#[derive(Debug, Clone)]
pub struct SessionParts {
    /// Checks and burns tokens at the mint; `None` when the mint issues none.
    pub verifier: Option<Arc<dyn BatVerifier>>,
    /// The mint session wallets use.
    pub mint_url: String,
    /// How session wallets reach the mint.
    pub link: wallet::MintLink,
    /// The master wallet seed (each session's derives from it and its namespace).
    pub seed: [u8; 64],
    /// Sends refund DMs as `bot`.
    pub publisher: Publisher,
    /// soko's bot key, the refund DMs' author.
    pub bot: PublicKey,
    /// Seals refund addresses.
    pub vault: Vault,
    /// The time sessions are judged by.
    pub clock: Clock,
    /// Where session, token and cleanup figures go.
    pub metrics: Metrics,
}

impl Sessions {
    /// Opens the sessions stored in `store`.
    pub fn open(
        store: &Store,
        parts: SessionParts,
        rules: SessionRules,
    ) -> Result<Self, StoreError> {
        let sessions = Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                records: store.tree("sessions")?,
                spent: store.tree("sessions/spent_bats")?,
                holds: store.tree("sessions/holds")?,
                collected: store.tree("sessions/collected")?,
                sent: store.tree("sessions/tokens")?,
                verifier: parts.verifier,
                wallets: Mutex::new(LruCache::new(rules.open_wallets)),
                recovered: Mutex::default(),
                recovering: tokio::sync::Mutex::default(),
                mint_url: parts.mint_url,
                link: parts.link,
                seed: parts.seed,
                publisher: parts.publisher,
                bot: parts.bot,
                vault: parts.vault,
                rules,
                clock: parts.clock,
                metrics: parts.metrics,
                active: AtomicU64::new(0),
                held: AtomicU64::new(0),
                locks: (0..LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
            }),
        };
        let active = sessions.count_active()?;
        sessions.set_active(active);
        Ok(sessions)
    }

    fn set_active(&self, active: u64) {
        self.inner.active.store(active, Ordering::Relaxed);
        self.inner.metrics.set_sessions_active(active);
    }

    fn move_active(&self, opened: bool) {
        let before = if opened {
            self.inner.active.fetch_add(1, Ordering::Relaxed)
        } else {
            self.inner
                .active
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                })
                .unwrap_or(0)
        };
        let now = if opened {
            before + 1
        } else {
            before.saturating_sub(1)
        };
        self.inner.metrics.set_sessions_active(now);
    }

    fn move_held(&self, sats: Sats, added: bool) {
        let held = &self.inner.held;
        let result = held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(if added {
                n.saturating_add(sats.0)
            } else {
                n.saturating_sub(sats.0)
            })
        });
        let before = result.unwrap_or_else(|n| n);
        let now = if added {
            before.saturating_add(sats.0)
        } else {
            before.saturating_sub(sats.0)
        };
        self.inner.metrics.set_session_ecash(Sats(now));
    }

    /// Opens a session for `sender` with the blind auth token `bat` (`authA…`), its ecash
    /// to go back to `refund_to` (a Lightning address) or else by DM to `sender`.
    pub async fn open_session(
        &self,
        sender: PublicKey,
        bat: &str,
        refund_to: Option<&str>,
    ) -> Result<Opened, SessionError> {
        let inner = &self.inner;
        let Some(verifier) = &inner.verifier else {
            return Err(SessionRefusal::AuthUnsupported(
                "this soko's mint does not issue blind auth tokens, so it opens no sessions".into(),
            )
            .into());
        };
        let refund_to = match refund_to {
            Some(address) => {
                let url = crate::lnurl::lnurlp_url(address)
                    .map_err(|e| SessionRefusal::RefundAddress(e.to_string()))?;
                inner
                    .rules
                    .lnurl
                    .check(&url)
                    .map_err(|e| SessionRefusal::RefundAddress(e.to_string()))?;
                Some(inner.vault.seal(address)?)
            }
            None => None,
        };
        let token = bat::parse(bat)?;
        let y = token
            .auth_proof
            .y()
            .map_err(|e| SessionRefusal::BadToken(format!("the token's secret: {e}")))?
            .to_hex();
        // Before the mint: a replay is refused even when the mint cannot be asked.
        if inner.spent.get(y.as_bytes())?.is_some() {
            return Err(SessionRefusal::TokenSpent.into());
        }
        let started = std::time::Instant::now();
        let checked = verifier.verify_and_burn(&token).await;
        let outcome = match &checked {
            bat::Checked::Burned => BatOutcome::Ok,
            bat::Checked::Refused(_) => BatOutcome::Refused,
            bat::Checked::Unavailable(_) => BatOutcome::Failed,
        };
        inner.metrics.bat_verified(outcome, started.elapsed());
        match checked {
            bat::Checked::Burned => {}
            bat::Checked::Refused(refusal) => return Err(refusal.into()),
            bat::Checked::Unavailable(e) => {
                tracing::warn!(error = %e, "a blind auth token could not be checked");
                return Err(SessionRefusal::from(e).into());
            }
        }
        let now = inner.clock.now();
        let id = new_id();
        let record = SessionRecord {
            key: sender,
            opened_at: now,
            expires_at: now.saturating_add(inner.rules.ttl_secs),
            state: SessionState::Open,
            ended: None,
            refund_to,
            melt: None,
            melt_failures: 0,
            returned: Sats::ZERO,
            has_wallet: false,
        };
        let encoded = inner.records.encode(&record)?;
        let when = inner.spent.encode(&now)?;
        let fresh = (inner.spent.raw(), inner.records.raw())
            .transaction(|(spent, records)| {
                if spent.insert(y.as_bytes(), when.clone())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                records.insert(id.as_bytes(), encoded.clone())?;
                Ok(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(()) => None,
                sled::transaction::TransactionError::Storage(e) => Some(StoreError::from(e)),
            });
        match fresh {
            Ok(()) => {}
            // The mint burned it for someone else first: a mint that forgot its spent
            // tokens (a reset dev mint) is still not a second session.
            Err(None) => return Err(SessionRefusal::TokenSpent.into()),
            Err(Some(e)) => return Err(e.into()),
        }
        inner.metrics.session_opened();
        self.move_active(true);
        tracing::info!(expires_at = record.expires_at, "session opened");
        Ok(Opened {
            id,
            expires_at: record.expires_at,
        })
    }

    /// Opens a session soko runs itself for a user it already knows (a custodial merchant
    /// paying a bill from its sales over USSD), without a blind auth token: no BAT is needed
    /// because soko is not learning anyone new. The record, its expiry and its refund saga are
    /// a user's session's; `key` is where its DMs (and a refund token, should any ecash be
    /// left at its end) would go. Callers that move ecash through it take that ecash out
    /// themselves (a hold keeps it open meanwhile) and then [`Sessions::close_internal`] it.
    pub fn open_internal(&self, key: PublicKey) -> Result<Opened, SessionError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let id = new_id();
        let record = SessionRecord {
            key,
            opened_at: now,
            expires_at: now.saturating_add(inner.rules.ttl_secs),
            state: SessionState::Open,
            ended: None,
            refund_to: None,
            melt: None,
            melt_failures: 0,
            returned: Sats::ZERO,
            has_wallet: false,
        };
        inner.records.insert(id.as_bytes(), &record)?;
        inner.metrics.session_opened();
        self.move_active(true);
        tracing::info!(expires_at = record.expires_at, "internal session opened");
        Ok(Opened {
            id,
            expires_at: record.expires_at,
        })
    }

    /// Ends a session opened with [`Sessions::open_internal`] whatever its expiry (its owner,
    /// soko, asks for no command in it). A session still held is refused (`busy`); one that
    /// already ended is left as it is.
    pub async fn close_internal(&self, id: &str) -> Result<SessionRecord, SessionError> {
        if self.is_held(id)? {
            return Err(SessionRefusal::Held.into());
        }
        if self.stored(id)?.state == SessionState::Open {
            let ending = Ending {
                reason: EndReason::Closed,
                at: self.inner.clock.now(),
            };
            self.end(id, SessionEvent::Close, ending).await?;
        }
        self.finish(id).await
    }

    /// The ecash session `id`'s wallet holds, by id (soko's own use of a session).
    pub async fn balance_of(&self, id: &str) -> Result<Sats, SessionError> {
        let record = self.stored(id)?;
        if !record.has_wallet || !record.state.is_open() {
            return Ok(Sats::ZERO);
        }
        let wallet = self.wallet(id).await?;
        Ok(Sats::from(wallet.total_balance().await?))
    }

    /// The session `id` if `sender` may run a command in it now.
    pub fn live(&self, sender: &PublicKey, id: &str) -> Result<Live, SessionError> {
        let record = self
            .inner
            .records
            .get(id.as_bytes())?
            .filter(|record| record.key == *sender)
            .ok_or(SessionRefusal::Unknown)?;
        match (record.state, record.ended) {
            (SessionState::Open, _) if self.inner.clock.now() >= record.expires_at => {
                Err(SessionRefusal::Expired.into())
            }
            (SessionState::Open, _) => Ok(Live {
                id: id.to_owned(),
                record,
            }),
            (
                _,
                Some(Ending {
                    reason: EndReason::Expired,
                    ..
                }),
            ) => Err(SessionRefusal::Expired.into()),
            _ => Err(SessionRefusal::Closed.into()),
        }
    }

    /// True when `sender` may run a command in session `id` now (rate tiers ask this).
    pub fn is_live(&self, sender: &PublicKey, id: &str) -> bool {
        self.live(sender, id).is_ok()
    }

    /// The ecash the session's wallet holds.
    pub async fn balance(&self, live: &Live) -> Result<Sats, SessionError> {
        if !self.stored(&live.id)?.has_wallet {
            return Ok(Sats::ZERO);
        }
        let wallet = self.wallet(&live.id).await?;
        Ok(Sats::from(wallet.total_balance().await?))
    }

    /// Takes the Cashu `token` into the session's wallet (swapped, so the sender can no
    /// longer spend it), returning the new balance.
    pub async fn deposit(&self, live: &Live, token: &str) -> Result<Sats, SessionError> {
        let parsed: cdk::nuts::Token = token
            .trim()
            .parse()
            .map_err(|e| SessionRefusal::Deposit(format!("not a Cashu token: {e}")))?;
        let from = parsed
            .mint_url()
            .map_err(|e| SessionRefusal::Deposit(format!("the token names no mint: {e}")))?;
        if from.to_string().trim_end_matches('/') != self.inner.mint_url.trim_end_matches('/') {
            return Err(SessionRefusal::Deposit(format!(
                "the token is from {from}, and sessions hold ecash of {} only",
                self.inner.mint_url
            ))
            .into());
        }
        let _session = self.lock(&live.id).await;
        // Checked again under the lock: the session may have ended since the command began.
        let mut record = self.live(&live.record.key, &live.id)?.record;
        if !record.has_wallet {
            record.has_wallet = true;
            self.inner.records.insert(live.id.as_bytes(), &record)?;
        }
        let wallet = self.wallet(&live.id).await?;
        match wallet.receive(token.trim(), Default::default()).await {
            Ok(received) => {
                self.inner.metrics.wallet_op("session_receive", true);
                self.move_held(Sats::from(received), true);
            }
            Err(e @ (cdk::Error::TokenAlreadySpent | cdk::Error::UnknownKeySet)) => {
                return Err(SessionRefusal::Deposit(e.to_string()).into())
            }
            Err(e) => {
                self.inner.metrics.wallet_op("session_receive", false);
                return Err(e.into());
            }
        }
        Ok(Sats::from(wallet.total_balance().await?))
    }

    /// Ends `sender`'s session `id` now and returns its ecash; the record says how far the
    /// refund got (`Ended`, or `Melting` while the mint settles a Lightning refund).
    pub async fn close(&self, sender: &PublicKey, id: &str) -> Result<SessionRecord, SessionError> {
        let live = self.live(sender, id)?;
        // A trade's escrow and bonds are in this wallet: they go back when the trade ends.
        if self.is_held(&live.id)? {
            return Err(SessionRefusal::Held.into());
        }
        let ending = Ending {
            reason: EndReason::Closed,
            at: self.inner.clock.now(),
        };
        self.end(&live.id, SessionEvent::Close, ending).await?;
        self.finish(&live.id).await
    }

    /// Marks the session `id` (a trade or dispute in it is open) so cleanup keeps it past
    /// its expiry until [`Sessions::release`].
    pub fn hold(&self, id: &str, what: &str) -> Result<(), SessionError> {
        let mut holds = self.inner.holds.get(id.as_bytes())?.unwrap_or_default();
        if !holds.iter().any(|h| h == what) {
            holds.push(what.to_owned());
        }
        Ok(self.inner.holds.insert(id.as_bytes(), &holds)?)
    }

    /// Lifts the hold `what` on session `id`.
    pub fn release(&self, id: &str, what: &str) -> Result<(), SessionError> {
        let mut holds = self.inner.holds.get(id.as_bytes())?.unwrap_or_default();
        holds.retain(|h| h != what);
        if holds.is_empty() {
            Ok(self.inner.holds.remove(id.as_bytes())?)
        } else {
            Ok(self.inner.holds.insert(id.as_bytes(), &holds)?)
        }
    }

    /// Sessions open now (not expired, not closed), as last counted.
    pub fn active(&self) -> u64 {
        self.inner.active.load(Ordering::Relaxed)
    }

    fn count_active(&self) -> Result<u64, StoreError> {
        let now = self.inner.clock.now();
        let mut active = 0;
        for entry in self.inner.records.iter() {
            let (_, record) = entry?;
            if record.state.is_open() && record.expires_at > now {
                active += 1;
            }
        }
        Ok(active)
    }

    /// Ecash in open sessions' wallets, summed now (one wallet read per open session).
    async fn count_held(&self) -> Result<Sats, SessionError> {
        let mut ids = Vec::new();
        for entry in self.inner.records.iter() {
            let (id, record) = entry?;
            if record.state.is_open() && record.has_wallet {
                ids.push(String::from_utf8_lossy(&id).into_owned());
            }
        }
        let mut held = Sats::ZERO;
        for id in ids {
            let balance = Sats::from(self.wallet(&id).await?.total_balance().await?);
            held = held.checked_add(balance).unwrap_or(held);
        }
        Ok(held)
    }

    /// One pass over every session: expire those past their time (unless held), carry
    /// every unfinished refund on, delete the wallets of refunded ones, and forget old
    /// tombstones. A failing session is logged and retried next pass; the others go on.
    pub async fn cleanup(&self) -> Result<CleanupReport, SessionError> {
        let result = self.cleanup_pass().await;
        let ok = matches!(&result, Ok(report) if report.failed == 0);
        self.inner.metrics.cleanup_run(ok);
        if let Ok(active) = self.count_active() {
            self.set_active(active);
        }
        match self.count_held().await {
            Ok(held) => {
                self.inner.held.store(held.0, Ordering::Relaxed);
                self.inner.metrics.set_session_ecash(held);
            }
            Err(e) => tracing::warn!(error = %e, "session ecash could not be summed"),
        }
        self.inner
            .metrics
            .set_session_wallets_open(self.open_wallets() as u64);
        result
    }

    async fn cleanup_pass(&self) -> Result<CleanupReport, SessionError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut report = CleanupReport::default();
        let mut ids = Vec::new();
        for entry in inner.records.iter() {
            let (id, record) = entry?;
            let Ok(id) = String::from_utf8(id.to_vec()) else {
                continue;
            };
            ids.push((id, record));
        }
        for (id, record) in ids {
            match record.state {
                SessionState::Open if now >= record.expires_at => {
                    if inner.holds.get(id.as_bytes())?.is_some() {
                        report.held += 1;
                        continue;
                    }
                    report.expired += 1;
                    let ending = Ending {
                        reason: EndReason::Expired,
                        at: now,
                    };
                    if let Err(e) = self.end(&id, SessionEvent::Expire, ending).await {
                        tracing::warn!(error = %e, "a session could not be expired");
                        report.failed += 1;
                        continue;
                    }
                }
                SessionState::Open => continue,
                SessionState::Ended => {
                    let ended_at = record.ended.map_or(0, |e| e.at);
                    if now >= ended_at.saturating_add(inner.rules.tombstone_secs) {
                        inner.records.remove(id.as_bytes())?;
                        inner.holds.remove(id.as_bytes())?;
                        self.forget_purse(&id)?;
                    }
                    continue;
                }
                _ => {}
            }
            let before = record.state;
            match self.finish(&id).await {
                Ok(done) => {
                    if before != SessionState::Refunded && done.state == SessionState::Ended {
                        report.refunded += 1;
                    }
                    if done.state == SessionState::Ended {
                        report.deleted += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a session refund failed; retried next pass");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// The lock of session `id`'s stripe.
    async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let stripe = (hasher.finish() % LOCK_STRIPES as u64) as usize;
        self.inner.locks[stripe].lock().await
    }

    /// Records the session's end (the first move of the refund saga).
    async fn end(&self, id: &str, event: SessionEvent, ending: Ending) -> Result<(), SessionError> {
        let _session = self.lock(id).await;
        let mut record = self.stored(id)?.moved(event)?;
        record.ended = Some(ending);
        self.inner.records.insert(id.as_bytes(), &record)?;
        self.move_active(false);
        let lived = ending.at.saturating_sub(record.opened_at);
        self.inner
            .metrics
            .session_closed(std::time::Duration::from_secs(lived));
        crate::failpoint::crash("session-ending", self.inner.records.raw());
        tracing::info!(reason = ?ending.reason, "session ended");
        Ok(())
    }

    /// The stored session `id`, which must be there.
    fn stored(&self, id: &str) -> Result<SessionRecord, SessionError> {
        self.inner
            .records
            .get(id.as_bytes())?
            .ok_or_else(|| SessionError::Refused(SessionRefusal::Unknown))
    }

    /// The session's wallet, opened (and its interrupted operations finished) on first use.
    async fn wallet(&self, id: &str) -> Result<Wallet, SessionError> {
        let cached = self
            .inner
            .wallets
            .lock()
            .ok()
            .and_then(|mut wallets| wallets.get(id).cloned());
        if let Some(wallet) = cached {
            return Ok(wallet);
        }
        let inner = &self.inner;
        let wallet = wallet::open_linked(
            &inner.store,
            &namespace(id),
            &inner.mint_url,
            &inner.seed,
            &inner.link,
        )?;
        let _recovering = inner.recovering.lock().await;
        let done = inner.recovered.lock().is_ok_and(|done| done.contains(id));
        if !done {
            wallet::recover(&wallet).await?;
            if let Ok(mut done) = inner.recovered.lock() {
                done.insert(id.to_owned());
            }
        }
        if let Ok(mut wallets) = inner.wallets.lock() {
            wallets.put(id.to_owned(), wallet.clone());
        }
        Ok(wallet)
    }

    /// Session wallets open in memory now.
    pub fn open_wallets(&self) -> usize {
        self.inner.wallets.lock().map_or(0, |w| w.len())
    }

    fn forget_wallet(&self, id: &str) {
        if let Ok(mut wallets) = self.inner.wallets.lock() {
            wallets.pop(id);
        }
        if let Ok(mut done) = self.inner.recovered.lock() {
            done.remove(id);
        }
    }
}

/// Lock stripes: enough that sessions rarely wait for each other.
const LOCK_STRIPES: usize = 64;

/// The wallet namespace of session `id`.
fn namespace(id: &str) -> String {
    format!("session:{id}")
}

/// 32 random bytes, hex: unguessable, and naming nothing.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
