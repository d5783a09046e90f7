//! The USSD service: one `ussd_hop` in, one screen out. It finds the merchant by phone
//! number, keeps the session in sled, runs the pure [`menu`] engine over the merchant's
//! data, and applies the engine's actions through the same domain APIs the operator
//! commands use ([`Merchants`], [`EscrowService`]): no business rule lives here.
//!
//! Trees:
//! - `ussd_sessions`: bridge pubkey (32) ‖ gateway session id → [`StoredSession`]: expiry in
//!   clear (for sweeping), the [`Session`] sealed by the vault.
//! - `ussd_accounts`: merchant pubkey (32) → [`Account`]: PIN hash and lockout.
//!
//! Hops of one session run one at a time (a per-session lock), and a hop whose text was
//! already consumed gets the last screen again: a gateway retry never acts twice, even when
//! it arrives while the first attempt is still running.

use std::collections::HashMap;
use std::sync::Arc;

use nostr_sdk::{EventBuilder, PublicKey};
use serde::{Deserialize, Serialize};

use super::approvals;
use super::menu::{
    self, Action, AgentLine, ApprovalLine, OrderDetail, OrderLine, Outcome, ProductLine, Secret,
    Shop, Step, View,
};
use super::pin::{self, Account, Lockout, PinVerdict};
use super::screen::{Screen, BODY_LIMIT};
use super::session::{latest_input, Hop, Session};
use crate::agents::{Desk, DeskError};
use crate::config::UssdConfig;
use crate::escrow::{EscrowError, EscrowService, Payout};
use crate::market::pricing::price_text;
use crate::market::{listing, merchants, ActivationCode, MerchantError, MerchantStatus, Merchants};
use crate::outbound::Publisher;
use crate::proto::agents::ProposalKind;
use crate::proto::nip15::Product;
use crate::proto::ussd::{UssdHopArgs, UssdScreen};
use crate::proto::{ErrorCode, Refusal};
use crate::store::{Store, StoreError, Typed};
use crate::vault::Vault;

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
    /// Publishing a listing.
    #[error("publishing: {0}")]
    Publish(String),
    /// Escrow.
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    /// Agents' desk.
    #[error(transparent)]
    Desk(#[from] DeskError),
    /// Anything else inside soko.
    #[error("{0}")]
    Internal(String),
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
    vault: Vault,
    locks: std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

impl UssdService {
    /// Opens the trees.
    pub fn open(
        store: &Store,
        vault: &Vault,
        merchants: Merchants,
        escrow: EscrowService,
        publisher: Publisher,
        desk: Desk,
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
        if owner.map(|o| o.to_hex()).as_deref() != Some(session.merchant.as_str()) {
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
        let merchant = PublicKey::from_hex(&session.merchant)
            .map_err(|e| UssdError::Internal(format!("stored session merchant: {e}")))?;
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
                let outcome = self.apply(merchant, &action).await?;
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
            Step::Act(_) => return Err(UssdError::Internal("an action after an action".into())),
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
            merchant: merchant.to_hex(),
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

    /// Applies an action through the domain APIs.
    async fn apply(&self, merchant: PublicKey, action: &Action) -> Result<Outcome, UssdError> {
        let inner = &self.inner;
        let refused = |e: MerchantError| match e {
            MerchantError::Invalid(why) => Ok(Outcome::Refused(why)),
            other => Err(UssdError::from(other)),
        };
        // Withdrawals and address changes are confirmed with the PIN: a session left open on
        // a borrowed phone must not move the money.
        match action {
            Action::Withdraw { pin, .. } | Action::SetLightningAddress { pin, .. } => {
                match self.check(&merchant, Entered::Pin(pin)).await? {
                    PinVerdict::Right => {}
                    PinVerdict::Wrong { tries_left } => {
                        return Ok(Outcome::WrongPin { tries_left })
                    }
                    PinVerdict::Locked { until } => return Ok(Outcome::Locked { until }),
                }
            }
            _ => {}
        }
        match action {
            Action::CheckPin(pin) => Ok(match self.check(&merchant, Entered::Pin(pin)).await? {
                PinVerdict::Right => Outcome::Done,
                PinVerdict::Wrong { tries_left } => Outcome::WrongPin { tries_left },
                PinVerdict::Locked { until } => Outcome::Locked { until },
            }),
            Action::CheckActivation(code) => Ok(
                match self.check(&merchant, Entered::Activation(code)).await? {
                    PinVerdict::Right => Outcome::Done,
                    PinVerdict::Wrong { tries_left } => Outcome::WrongPin { tries_left },
                    PinVerdict::Locked { until } => Outcome::Locked { until },
                },
            ),
            Action::SetPin { code, pin } => {
                let key = account_key(&merchant);
                let guard = self.lock(&key).await;
                let outcome = self.first_pin(&merchant, code, pin).await;
                drop(guard);
                self.unlock(&key);
                outcome
            }
            Action::Activate => {
                if inner.merchants.get(&merchant)?.status == MerchantStatus::Pending {
                    let active = inner.merchants.activate(&merchant)?;
                    inner
                        .publisher
                        .publish_as(
                            &merchant,
                            EventBuilder::metadata(&merchants::profile(&active)),
                        )
                        .await
                        .map_err(|e| UssdError::Internal(e.to_string()))?;
                    tracing::info!(merchant = %merchant, "merchant onboarded over USSD; profile published");
                }
                Ok(Outcome::Done)
            }
            Action::Deliver { number, code } => {
                match inner.escrow.deliver(merchant, *number, &code.0).await {
                    Err(EscrowError::Refused(why)) => Ok(Outcome::Refused(why.to_string())),
                    Err(e) => Err(e.into()),
                    Ok(released) => {
                        // As `order_deliver` does: straight on to the saved Lightning address.
                        let payout = match inner.escrow.pay_out(merchant).await? {
                            Payout::NotConfigured | Payout::Nothing => None,
                            Payout::Sent { amount, .. } => {
                                Some(format!("{} sat paid to your Lightning address.", amount.0))
                            }
                            Payout::Token(amount) => Some(format!(
                                "{} sat sent to your Nostr inbox as ecash.",
                                amount.0
                            )),
                            Payout::Pending(amount) => Some(format!(
                                "{} sat is on its way to your Lightning address; the mint has not confirmed it yet.",
                                amount.0
                            )),
                            Payout::Failed(why) => {
                                Some(format!("Not paid out ({why}); it stays in your balance."))
                            }
                        };
                        Ok(Outcome::Delivered {
                            released,
                            payout,
                            balance: inner.escrow.balance(&merchant)?,
                        })
                    }
                }
            }
            Action::SetPrice { id, price } => {
                let Some(mut product) = inner.merchants.product(&merchant, id)? else {
                    return Ok(Outcome::Refused(
                        "that product is hidden or gone".to_owned(),
                    ));
                };
                // NIP-15 prices are JSON numbers; a whole number from the keypad is exact.
                product.price = *price as f64;
                match self.put_product(&merchant, &product).await {
                    Err(UssdError::Merchant(e)) => refused(e),
                    other => other.map(|()| Outcome::Done),
                }
            }
            Action::SetStock { id, quantity } => {
                let Some(mut product) = inner.merchants.product(&merchant, id)? else {
                    return Ok(Outcome::Refused(
                        "that product is hidden or gone".to_owned(),
                    ));
                };
                product.quantity = Some(*quantity);
                match self.put_product(&merchant, &product).await {
                    Err(UssdError::Merchant(e)) => refused(e),
                    other => other.map(|()| Outcome::Done),
                }
            }
            Action::Hide { id } => match inner.merchants.hide_product(&merchant, id) {
                Err(e) => refused(e),
                Ok(_) => {
                    let request = listing::deletion(
                        &merchant,
                        crate::proto::nip15::KIND_PRODUCT,
                        id,
                        "taken off sale by the merchant",
                    );
                    inner
                        .publisher
                        .publish_as(&merchant, request)
                        .await
                        .map_err(|e| UssdError::Internal(e.to_string()))?;
                    Ok(Outcome::Done)
                }
            },
            Action::Show { id } => match inner.merchants.show_product(&merchant, id) {
                Err(e) => refused(e),
                Ok(product) => {
                    self.publish_product(&merchant, &product).await?;
                    Ok(Outcome::Done)
                }
            },
            Action::Withdraw { destination, .. } => {
                match inner.escrow.pay_out_to(merchant, destination).await? {
                    Payout::Sent { amount, fee } => Ok(Outcome::Withdrawn {
                        amount,
                        fee,
                        balance: inner.escrow.balance(&merchant)?,
                    }),
                    // A withdrawal to a typed-in address is always Lightning.
                    Payout::Token(amount) => Ok(Outcome::Withdrawn {
                        amount,
                        fee: crate::money::Sats::ZERO,
                        balance: inner.escrow.balance(&merchant)?,
                    }),
                    Payout::Pending(amount) => Ok(Outcome::WithdrawalPending {
                        amount,
                        balance: inner.escrow.balance(&merchant)?,
                    }),
                    Payout::Failed(why) => Ok(Outcome::Refused(format!(
                        "not sent: {why}. Your balance is kept."
                    ))),
                    Payout::Nothing | Payout::NotConfigured => {
                        Ok(Outcome::Refused("nothing to withdraw".to_owned()))
                    }
                }
            }
            Action::SetLightningAddress { address, .. } => {
                match inner
                    .merchants
                    .set_lightning_address(&merchant, Some(address))
                {
                    Ok(_) => Ok(Outcome::Done),
                    Err(e) => refused(e),
                }
            }
            Action::Approve { id } => decided(inner.desk.approve(&merchant, *id).await),
            Action::Reject { id } => decided(inner.desk.reject(&merchant, *id).await),
            Action::Unlink { agent } => {
                let agent = PublicKey::from_hex(agent)
                    .map_err(|e| UssdError::Internal(format!("stored agent key: {e}")))?;
                inner.desk.unlink(&merchant, &agent).await?;
                Ok(Outcome::Done)
            }
            Action::ShareBuyer(share) => {
                inner.desk.links().set_shares_buyer(&merchant, *share)?;
                Ok(Outcome::Done)
            }
            Action::ChangePin { old, new } => {
                Ok(match self.check(&merchant, Entered::Pin(old)).await? {
                    PinVerdict::Right => {
                        self.set_pin(&merchant, new).await?;
                        Outcome::Done
                    }
                    PinVerdict::Wrong { tries_left } => Outcome::WrongPin { tries_left },
                    PinVerdict::Locked { until } => Outcome::Locked { until },
                })
            }
        }
    }

    /// Sets the first PIN, under the merchant's lock: only with its unused activation code,
    /// which is then used up. The PIN is saved before the code is used up, so a crash in
    /// between leaves a PIN (and a stale code that no screen asks for any more), never a
    /// used code and no PIN.
    async fn first_pin(
        &self,
        merchant: &PublicKey,
        code: &Secret,
        pin: &Secret,
    ) -> Result<Outcome, UssdError> {
        let merchants = &self.inner.merchants;
        if self.account(merchant)?.pin_hash.is_some() {
            return Ok(Outcome::Refused(
                "A PIN is set already. Please dial again.".to_owned(),
            ));
        }
        if !merchants.check_activation(merchant, &code.0)? {
            return Ok(Outcome::Refused(
                "That activation code was used or replaced. Ask for a new one.".to_owned(),
            ));
        }
        self.set_pin(merchant, pin).await?;
        merchants.redeem_activation(merchant, &code.0)?;
        tracing::info!(merchant = %merchant, "activation code used; first USSD PIN set");
        Ok(Outcome::Done)
    }

    /// Lifts the merchant's lock (the operator's `ussd_reset`); with `new_code`, forgets its
    /// PIN and issues a new activation code.
    pub async fn reset(
        &self,
        merchant: &PublicKey,
        new_code: bool,
    ) -> Result<Option<ActivationCode>, UssdError> {
        let key = account_key(merchant);
        let guard = self.lock(&key).await;
        let result = (|| -> Result<Option<ActivationCode>, UssdError> {
            let account = self.account(merchant)?.reset(new_code);
            let code = if new_code {
                Some(self.inner.merchants.issue_activation(merchant)?)
            } else {
                None
            };
            self.inner.accounts.insert(&merchant.to_bytes(), &account)?;
            Ok(code)
        })();
        drop(guard);
        self.unlock(&key);
        result
    }

    /// Checks a PIN or an activation code under the merchant's lock and records the
    /// verdict: both count towards the same lock.
    async fn check(
        &self,
        merchant: &PublicKey,
        typed: Entered<'_>,
    ) -> Result<PinVerdict, UssdError> {
        let key = account_key(merchant);
        let guard = self.lock(&key).await;
        let result = async {
            let account = self.account(merchant)?;
            let now = self.inner.escrow.clock().now();
            if let Some(until) = account.locked(now) {
                return Ok(PinVerdict::Locked { until });
            }
            let right = match typed {
                Entered::Activation(code) => {
                    self.inner.merchants.check_activation(merchant, &code.0)?
                }
                Entered::Pin(pin) => {
                    let Some(stored) = account.pin_hash.clone() else {
                        return Ok(PinVerdict::Wrong { tries_left: 0 });
                    };
                    let typed = pin.0.clone();
                    // argon2 is slow on purpose: off the async threads.
                    tokio::task::spawn_blocking(move || pin::verify(&stored, &typed))
                        .await
                        .map_err(|e| UssdError::Internal(e.to_string()))?
                }
            };
            let rule = Lockout {
                tries: self.inner.config.pin_tries,
                secs: self.inner.config.lockout_secs,
                timed: self.inner.config.timed_lockouts,
            };
            let (next, verdict) = account.record(right, self.inner.escrow.clock().now(), rule);
            self.inner.accounts.insert(&merchant.to_bytes(), &next)?;
            if let PinVerdict::Locked { .. } = verdict {
                tracing::warn!(merchant = %merchant, "too many wrong USSD PINs; access locked");
            }
            Ok(verdict)
        }
        .await;
        drop(guard);
        self.unlock(&key);
        result
    }

    async fn set_pin(&self, merchant: &PublicKey, pin: &Secret) -> Result<(), UssdError> {
        let typed = pin.0.clone();
        let hash = tokio::task::spawn_blocking(move || pin::hash(&typed))
            .await
            .map_err(|e| UssdError::Internal(e.to_string()))?
            .map_err(|e| UssdError::Internal(e.to_string()))?;
        let mut account = self.account(merchant)?;
        account.pin_hash = Some(hash);
        account.wrong = 0;
        self.inner.accounts.insert(&merchant.to_bytes(), &account)?;
        Ok(())
    }

    /// Saves a product and republishes it, like `product_put`.
    async fn put_product(&self, merchant: &PublicKey, product: &Product) -> Result<(), UssdError> {
        let inner = &self.inner;
        listing::put_product(&inner.merchants, &inner.publisher, merchant, product).await?;
        Ok(())
    }

    async fn publish_product(
        &self,
        merchant: &PublicKey,
        product: &Product,
    ) -> Result<(), UssdError> {
        listing::republish_product(&self.inner.publisher, merchant, product).await?;
        Ok(())
    }

    fn account(&self, merchant: &PublicKey) -> Result<Account, UssdError> {
        Ok(self
            .inner
            .accounts
            .get(&merchant.to_bytes())?
            .unwrap_or_default())
    }

    fn session(&self, key: &[u8], now: u64) -> Result<Option<Session>, UssdError> {
        let Some(stored) = self.inner.sessions.get(key)? else {
            return Ok(None);
        };
        if stored.expires_at <= now {
            self.inner.sessions.remove(key)?;
            return Ok(None);
        }
        let json = self
            .inner
            .vault
            .unseal(&stored.sealed)
            .map_err(|e| UssdError::Internal(format!("opening a session: {e}")))?;
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| UssdError::Internal(format!("reading a session: {e}")))
    }

    fn save(&self, key: &[u8], session: &Session) -> Result<(), UssdError> {
        let json =
            serde_json::to_string(session).map_err(|e| UssdError::Internal(e.to_string()))?;
        let sealed = self
            .inner
            .vault
            .seal(&json)
            .map_err(|e| UssdError::Internal(format!("sealing a session: {e}")))?;
        self.inner.sessions.insert(
            key,
            &StoredSession {
                expires_at: session.expires_at,
                sealed,
            },
        )?;
        Ok(())
    }

    /// Drops expired sessions (on each first hop: sessions are few and short).
    fn sweep(&self, now: u64) -> Result<(), UssdError> {
        let expired: Vec<sled::IVec> = self
            .inner
            .sessions
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            self.inner.sessions.remove(&key)?;
        }
        Ok(())
    }

    async fn lock(&self, key: &[u8]) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = match self.inner.locks.lock() {
            Ok(mut locks) => locks.entry(key.to_vec()).or_default().clone(),
            // A poisoned map only means another hop panicked: a fresh lock is still safe
            // for this hop, as the stored session decides what it does.
            Err(_) => Arc::default(),
        };
        mutex.lock_owned().await
    }

    fn unlock(&self, key: &[u8]) {
        if let Ok(mut locks) = self.inner.locks.lock() {
            if locks.get(key).is_some_and(|m| Arc::strong_count(m) == 1) {
                locks.remove(key);
            }
        }
    }
}

/// What a caller typed to prove who it is.
enum Entered<'a> {
    Pin(&'a Secret),
    Activation(&'a Secret),
}

/// The merchant's data, read for one hop.
struct Data<'a> {
    inner: &'a Inner,
    merchant: PublicKey,
    now: u64,
}

impl View for Data<'_> {
    type Error = UssdError;

    fn shop(&self) -> Result<Shop, UssdError> {
        let merchant = self.inner.merchants.get(&self.merchant)?;
        Ok(Shop {
            name: merchant.name,
            pending: merchant.status == MerchantStatus::Pending,
            lightning_address: merchant.lightning_address,
            balance: self.inner.escrow.balance(&self.merchant)?,
            share_buyer: self.inner.desk.links().shares_buyer(&self.merchant)?,
        })
    }

    fn orders(&self) -> Result<Vec<OrderLine>, UssdError> {
        Ok(self
            .inner
            .escrow
            .orders_of(&self.merchant, MAX_LISTED_ORDERS, menu::listed)?
            .into_iter()
            .map(|o| OrderLine {
                number: o.number,
                state: o.state,
                total: o.total,
            })
            .collect())
    }

    fn order(&self, number: u64) -> Result<Option<OrderDetail>, UssdError> {
        let escrow = &self.inner.escrow;
        let Some(record) = escrow.order(&self.merchant, number)? else {
            return Ok(None);
        };
        let hidden = self.inner.merchants.hidden_products(&self.merchant)?;
        let mut items = Vec::new();
        for line in &record.lines {
            let name = match self
                .inner
                .merchants
                .product(&self.merchant, &line.product_id)?
            {
                Some(product) => product.name,
                None => hidden
                    .iter()
                    .find(|p| p.id == line.product_id)
                    .map_or_else(|| line.product_id.clone(), |p| p.name.clone()),
            };
            items.push((name, line.quantity));
        }
        Ok(Some(OrderDetail {
            line: OrderLine {
                number,
                state: record.state,
                total: record.total,
            },
            items,
            shipping: escrow.shipping(&record)?,
        }))
    }

    fn products(&self) -> Result<Vec<ProductLine>, UssdError> {
        let merchants = &self.inner.merchants;
        let listed = merchants
            .products(&self.merchant)?
            .into_iter()
            .map(|p| (p, false));
        let hidden = merchants
            .hidden_products(&self.merchant)?
            .into_iter()
            .map(|p| (p, true));
        Ok(listed
            .chain(hidden)
            .map(|(p, hidden)| ProductLine {
                price: price_text(p.price, &p.currency),
                currency: p.currency.clone(),
                id: p.id,
                name: p.name,
                quantity: p.quantity,
                hidden,
            })
            .collect())
    }

    fn approvals(&self) -> Result<Vec<ApprovalLine>, UssdError> {
        let desk = &self.inner.desk;
        Ok(desk
            .pending_for(&self.merchant)?
            .iter()
            .map(|p| ApprovalLine {
                id: p.id,
                summary: approvals::summary(desk, &self.inner.merchants, p),
            })
            .collect())
    }

    fn approval(&self, id: u64) -> Result<Option<Vec<String>>, UssdError> {
        let desk = &self.inner.desk;
        Ok(desk
            .pending(&self.merchant, id)?
            .map(|p| approvals::details(desk, &self.inner.merchants, &p)))
    }

    fn agents(&self) -> Result<Vec<AgentLine>, UssdError> {
        Ok(self
            .inner
            .desk
            .agents_of(&self.merchant)?
            .into_iter()
            .map(|(agent, label)| AgentLine {
                agent: agent.to_hex(),
                label,
            })
            .collect())
    }

    fn now(&self) -> u64 {
        self.now
    }
}

/// A merchant's decision on a proposal, as the menu shows it: refusals (the proposal is
/// gone, decided otherwise, its content no longer passes) are read out; failures are not.
fn decided(decided: Result<ProposalKind, DeskError>) -> Result<Outcome, UssdError> {
    match decided {
        Ok(_) => Ok(Outcome::Done),
        Err(DeskError::Refused(why)) => Ok(Outcome::Refused(why.to_string())),
        Err(DeskError::Merchant(MerchantError::Invalid(why))) => Ok(Outcome::Refused(why)),
        Err(e) => Err(e.into()),
    }
}

fn account_key(merchant: &PublicKey) -> Vec<u8> {
    [b"account:".as_slice(), &merchant.to_bytes()].concat()
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
