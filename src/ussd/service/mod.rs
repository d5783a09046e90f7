//! The USSD service: one `ussd_hop` in, one screen out. It finds the merchant by phone
//! number, keeps the session in sled, runs the pure [`menu`] engine over the merchant's
//! data, and applies the engine's actions through the same domain APIs the operator
//! commands use ([`Merchants`], [`EscrowService`]): no business rule lives here.
//!
//! Trees:
//! - `ussd_sessions`: bridge pubkey (32) ‖ gateway session id → [`StoredSession`]: expiry in
//!   clear (for sweeping), the [`Session`] sealed by the vault.
//! - `ussd_accounts`: merchant pubkey (32) → [`Account`]: PIN hash and lockout.
//! - `ussd_bills`: merchant pubkey (32) ‖ bill id → a bill paid from sales, sealed
//!   ([`bills`]).
//!
//! Hops of one session run one at a time (a per-session lock), and a hop whose text was
//! already consumed gets the last screen again: a gateway retry never acts twice, even when
//! it arrives while the first attempt is still running.
//!
//! This file takes the hop (checks, session, engine, screen); `apply` carries out the
//! engine's actions, `accounts` keeps PINs and lockouts, `sessions` the stored sessions and
//! their locks, `view` reads the merchant's data for the engine.

use std::collections::HashMap;
use std::sync::Arc;

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};

use super::approvals;
use super::menu::{
    self, Action, AgentLine, ApprovalLine, BillChoice, BillDetail, BillLine, BillOption, BillQuote,
    OrderDetail, OrderLine, Outcome, ProductLine, Secret, Shop, Step, View,
};
use super::pin::{self, Account, Lockout, PinVerdict};
use super::screen::{Screen, BODY_LIMIT};
use super::session::{latest_input, Hop, Session};
use crate::agents::{Desk, DeskError};
use crate::config::UssdConfig;
use crate::escrow::{EscrowError, EscrowService, Payout};
use crate::exchange::Exchange;
use crate::market::pricing::price_text;
use crate::market::{listing, ActivationCode, MerchantError, MerchantStatus, Merchants};
use crate::outbound::Publisher;
use crate::proto::agents::ProposalKind;
use crate::proto::nip15::Product;
use crate::proto::ussd::{UssdHopArgs, UssdScreen};
use crate::proto::{ErrorCode, Refusal};
use crate::sessions::Sessions;
use crate::store::{Store, StoreError, Typed};
use crate::vault::Vault;

mod accounts;
mod apply;
pub mod bills;
mod sessions;
mod view;

use self::accounts::Entered;
use self::view::Data;

/// Longest gateway session id accepted.
const MAX_SESSION_ID: usize = 128;
/// Longest `text` accepted (a session's inputs together).
const MAX_TEXT: usize = 1024;
/// Orders menu 1 looks at, newest first.
const MAX_LISTED_ORDERS: usize = 100;

/// The screen for a hop soko read after its deadline.
pub const TIMED_OUT: &str = "Sorry, that took too long. Please dial again.";
/// The screen for a hop of a session soko does not know (any more).
pub const EXPIRED: &str = "Your session expired. Please dial again.";
/// The screen for a number no merchant has.
pub const UNREGISTERED: &str = "This number is not registered. Ask your agent or soko's operator.";
/// The screen for a merchant without a PIN and without an activation code to set one.
pub const NO_CODE: &str =
    "Your shop needs an activation code to start. Ask your agent or soko's operator for one.";
/// The screen that ends a session after `pin_tries` wrong PINs in it.
pub const SESSION_TRIES: &str = "Too many wrong PINs in this call. Please dial again later.";

/// USSD failures that are not screens.
#[derive(Debug, thiserror::Error)]
pub enum UssdError {
    /// The hop itself is unacceptable.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Merchant registry.
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    /// Publishing a listing or a profile.
    #[error("publishing: {0}")]
    Publish(String),
    /// Sealing or opening a session at rest.
    #[error("session at rest: {0}")]
    Vault(#[from] crate::vault::VaultError),
    /// Encoding or reading a session.
    #[error("session: {0}")]
    Session(#[from] serde_json::Error),
    /// Hashing a PIN.
    #[error("PIN hash: {0}")]
    Pin(#[from] super::pin::PinError),
    /// A blocking task (PIN hashing) did not finish.
    #[error("blocking task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A key soko stored does not read back.
    #[error("stored key: {0}")]
    StoredKey(String),
    /// The pure menu engine asked for something it never should (a bug, logged).
    #[error("menu engine: {0}")]
    Engine(&'static str),
    /// Escrow.
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    /// Agents' desk.
    #[error(transparent)]
    Desk(#[from] DeskError),
    /// The exchange (bills paid from sales).
    #[error(transparent)]
    Exchange(#[from] crate::exchange::ExchangeError),
    /// soko's own sessions (bills paid from sales).
    #[error(transparent)]
    Sessions(#[from] crate::sessions::SessionError),
}

impl From<listing::ListingError> for UssdError {
    fn from(e: listing::ListingError) -> Self {
        match e {
            listing::ListingError::Merchant(e) => Self::Merchant(e),
            listing::ListingError::Publish(e) => Self::Publish(e),
        }
    }
}

/// A session as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    /// Unix seconds after which the session is gone.
    pub expires_at: u64,
    /// The [`Session`] as JSON, sealed.
    pub sealed: String,
}

/// The USSD service; cheap to clone.
#[derive(Debug, Clone)]
pub struct UssdService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: UssdConfig,
    sessions: Typed<StoredSession>,
    accounts: Typed<Account>,
    merchants: Merchants,
    escrow: EscrowService,
    publisher: Publisher,
    desk: Desk,
    exchange: Exchange,
    /// soko's private sessions: a bill's ecash is held in one of its own.
    purses: Sessions,
    bills: Typed<String>,
    vault: Vault,
    locks: std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

impl UssdService {
    /// Opens the trees. `exchange` and `sessions` carry the bills merchants pay from sales.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        store: &Store,
        vault: &Vault,
        merchants: Merchants,
        escrow: EscrowService,
        publisher: Publisher,
        desk: Desk,
        exchange: Exchange,
        sessions: Sessions,
        config: UssdConfig,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                sessions: store.tree("ussd_sessions")?,
                accounts: store.tree("ussd_accounts")?,
                merchants,
                escrow,
                publisher,
                desk,
                exchange,
                purses: sessions,
                bills: store.tree("ussd_bills")?,
                vault: vault.clone(),
                locks: Default::default(),
            }),
        })
    }

    /// True for a bridge soko trusts with `ussd_hop`.
    pub fn is_bridge(&self, sender: &PublicKey) -> bool {
        self.inner.config.bridges.contains(sender)
    }

    /// The agents' desk (menu 4, agents in settings).
    pub fn desk(&self) -> &Desk {
        &self.inner.desk
    }

    /// One hop from `bridge`: the next screen.
    pub async fn hop(&self, bridge: PublicKey, args: UssdHopArgs) -> Result<UssdScreen, UssdError> {
        if unix_ms() > args.deadline_ms {
            return Ok(wire(Screen::end(TIMED_OUT)));
        }
        if args.session.is_empty() || args.session.len() > MAX_SESSION_ID {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("\"session\" must be 1 to {MAX_SESSION_ID} characters"),
            )
            .into());
        }
        if args.text.len() > MAX_TEXT {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("\"text\" is longer than {MAX_TEXT} characters"),
            )
            .into());
        }
        let key = [bridge.to_bytes().as_slice(), args.session.as_bytes()].concat();
        let guard = self.lock(&key).await;
        let result = self.hop_locked(&key, &args).await;
        drop(guard);
        self.unlock(&key);
        result.map(wire)
    }

    async fn hop_locked(&self, key: &[u8], args: &UssdHopArgs) -> Result<Screen, UssdError> {
        let inner = &self.inner;
        let now = self.inner.escrow.clock().now();
        let owner = inner.merchants.by_phone(&args.phone)?;
        let Some(mut session) = self.session(key, now)? else {
            if !args.text.is_empty() {
                return Ok(Screen::end(EXPIRED));
            }
            return self.start(key, owner, now).await;
        };
        if owner != Some(session.merchant) {
            // Not the number this session began with.
            return Ok(Screen::end(EXPIRED));
        }
        let input = match latest_input(&session.consumed, &args.text) {
            Hop::Retry | Hop::Stale => return Ok(session.last),
            Hop::Input(input) => input,
        };
        if session.last.end {
            return Ok(Screen::end(EXPIRED));
        }
        let merchant = session.merchant;
        let view = Data {
            inner,
            merchant,
            now,
        };
        let step = match menu::step(&session.menu, &input, &view)? {
            Step::Act(action) => {
                // The last moment to refuse: past the deadline the bridge has answered
                // already, and the merchant must not get a change it never saw confirmed.
                if unix_ms() > args.deadline_ms {
                    return Ok(Screen::end(TIMED_OUT));
                }
                let outcome = self.apply(merchant, &action, now).await?;
                // Wrong tries count for the merchant (the escalating lock) and for the call:
                // one call gets `pin_tries` at most, so a flood from one session cannot go
                // on guessing after a right PIN from another session cleared the count.
                if matches!(outcome, Outcome::WrongPin { .. }) {
                    session.wrong = session.wrong.saturating_add(1);
                    if session.wrong >= inner.config.pin_tries {
                        Step::End(SESSION_TRIES.to_owned())
                    } else {
                        menu::after(&session.menu, &action, outcome, &view)?
                    }
                } else {
                    menu::after(&session.menu, &action, outcome, &view)?
                }
            }
            step => step,
        };
        let (menu, screen) = match step {
            Step::Show { menu, notice } => {
                let screen = menu::render(&menu, notice.as_deref(), &view)?;
                (menu, screen)
            }
            Step::End(text) => (session.menu.clone(), Screen::end(&text)),
            Step::Act(_) => return Err(UssdError::Engine("an action after an action")),
        };
        let screen = checked(screen);
        session.menu = menu;
        session.consumed = args.text.clone();
        session.last = screen.clone();
        session.expires_at = now.saturating_add(inner.config.session_secs);
        self.save(key, &session)?;
        Ok(screen)
    }

    /// The first hop: who is calling, and the PIN screen.
    async fn start(
        &self,
        key: &[u8],
        owner: Option<PublicKey>,
        now: u64,
    ) -> Result<Screen, UssdError> {
        let inner = &self.inner;
        self.sweep(now)?;
        let Some(merchant) = owner else {
            return Ok(Screen::end(UNREGISTERED));
        };
        let account = self.account(&merchant)?;
        if let Some(until) = account.locked(now) {
            return Ok(Screen::end(&menu::locked(until, now)));
        }
        if account.pin_hash.is_none() && !inner.merchants.has_activation(&merchant)? {
            return Ok(Screen::end(NO_CODE));
        }
        let view = Data {
            inner,
            merchant,
            now,
        };
        let menu = menu::first(account.pin_hash.is_some());
        let screen = checked(menu::render(&menu, None, &view)?);
        let session = Session {
            merchant,
            menu,
            consumed: String::new(),
            last: screen.clone(),
            expires_at: now.saturating_add(inner.config.session_secs),
            wrong: 0,
        };
        self.save(key, &session)?;
        tracing::info!(merchant = %merchant, "USSD session started");
        Ok(screen)
    }
}

/// The engine keeps screens within the limit; should one ever not be, it is cut here and
/// the bug logged (without the text, which may hold personal data).
fn checked(screen: Screen) -> Screen {
    if menu::fits(&screen) {
        return screen;
    }
    tracing::error!(
        chars = screen.text.chars().count(),
        "a USSD screen was too long and was cut"
    );
    Screen {
        text: super::screen::cut(&screen.text, BODY_LIMIT),
        end: screen.end,
    }
}

fn wire(screen: Screen) -> UssdScreen {
    UssdScreen {
        screen: screen.text,
        end: screen.end,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
