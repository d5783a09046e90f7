//! The escrow service: orders in sled, invoices from the mint, payment detection, delivery
//! with the code, and the merchant's balance. It applies the pure state machine
//! ([`super::transition`]) and keeps every fund movement in the `ledger` before the mint call.
//!
//! Trees:
//! - `orders`: merchant (32) ‖ order number (u64 BE) → [`OrderRecord`].
//! - `order_index`: merchant (32) ‖ buyer (32) ‖ buyer's order id → order number.
//! - `order_seq`: merchant (32) → last order number given.
//! - `awaiting`: order key → unix expiry, for orders still waiting for payment (what the
//!   payment watcher polls, so completed orders cost it nothing).
//! - `reserved`: merchant (32) ‖ product id → units held by unpaid orders.
//! - `balances`: merchant (32) → sats owed to the merchant (delivered orders); also soko's
//!   own `fees` account (unused Lightning fee reserve from refunds).
//! - `refunding`: order key → unix start, for refunds under way (what `tick` resumes).
//! - `ledger`: `"mint:"`/`"refund:" ‖ order key` → [`LedgerEntry`], written before the
//!   mint call and marked done after, so a crash in between is resumed instead of minting
//!   (or refunding) twice.
//! - `payouts`: melt quote id (or the wallet's send operation id, for a token) →
//!   [`PayoutRecord`]: a payout to a merchant, debited from the balance before the melt or the
//!   send; kept once settled, in its final state (see [`super::saga`]).
//!
//! Every state change happens under one lock: orders are few per second, and one writer
//! at a time makes "check then change" safe without per-order locking.

use std::sync::Arc;

use cdk::amount::SplitTarget;
use cdk::nuts::{MintQuoteState, PaymentMethod};
use nostr_sdk::{Event, PublicKey};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tokio::sync::Mutex;

use super::code::{CodeHasher, DeliveryCode, StoredCode};
use super::messages::{describe, payment_request, refusal, shown_id, status, text};
use super::notify::{PaidOrder, PaidOrderListener};
use super::payout::PayoutRecord;
use super::refusal::EscrowRefusal;
use super::state::{transition, EscrowEvent, EscrowState, InvalidTransition};
use crate::clock::Clock;
use crate::market::pricing::{self, Line, Rates};
use crate::market::{listing, MerchantError, Merchants};
use crate::money::Sats;
use crate::outbound::{Note, Outbox, PublishError, Publisher, Scheme, Staged};
use crate::proto::nip15::{clip_echo, Order};
use crate::store::{Store, StoreError, Typed};
use crate::vault::{Vault, VaultError};
use crate::wallet::Wallet;

/// An encoded sled entry, prepared outside a transaction.
pub(super) type KeyValue = (Vec<u8>, Vec<u8>);

/// What changes together with an order's record.
#[derive(Default)]
pub(super) struct Change {
    /// New `reserved` values.
    pub(super) reserved: Vec<KeyValue>,
    /// A ledger entry to write.
    pub(super) ledger: Option<(Vec<u8>, LedgerEntry)>,
    /// An account's new balance (a merchant's key, or [`super::refund::FEES_ACCOUNT`]).
    pub(super) balance: Option<(Vec<u8>, Sats)>,
    /// Units sold: (listing key, units) taken off the listed stock in the same transaction,
    /// so a crash after the paid commit cannot leave them on sale (oversold).
    pub(super) sold: Vec<(Vec<u8>, u64)>,
}

/// Checkout rules from the config.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Fiat rates.
    pub rates: Rates,
    /// Seconds a buyer has to pay.
    pub payment_window_secs: u64,
    /// Seconds a merchant has to deliver a paid order.
    pub delivery_window_secs: u64,
    /// Where payouts and refunds may send LNURL requests.
    pub lnurl: crate::lnurl::Policy,
    /// How often unpaid orders are checked at the mint.
    pub poll: super::watch::PollRules,
    /// Caps on unpaid orders.
    pub caps: Caps,
    /// The time the windows are kept on.
    pub clock: Clock,
}

/// Caps on orders waiting for payment (`[market]` `max_unpaid_*`, `max_held_percent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Unpaid orders one buyer key may have.
    pub per_buyer: u32,
    /// Unpaid orders in all.
    pub total: u32,
    /// Share (percent) of a product's stock unpaid orders may hold together.
    pub held_percent: u8,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            per_buyer: 3,
            total: 500,
            held_percent: 50,
        }
    }
}

/// Below this many units a product's whole stock may wait for payment.
pub const MIN_HELD_CAP: u64 = 5;

/// Units of a product with `stock` listed that unpaid orders may hold together.
pub fn held_cap(stock: u64, percent: u8) -> u64 {
    let share = u128::from(stock) * u128::from(percent.min(100)) / 100;
    u64::try_from(share)
        .unwrap_or(u64::MAX)
        .max(MIN_HELD_CAP.min(stock))
}

/// One order and its escrow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// soko's number for the order, per merchant (short, for phones).
    pub number: u64,
    /// The buyer's own order id.
    pub buyer_order_id: String,
    /// The buyer's key (hex on disk, as it always was).
    pub buyer: PublicKey,
    /// How the buyer talks to us; every message to them uses it.
    pub scheme: Scheme,
    /// The stall.
    pub stall_id: String,
    /// What was ordered, at what unit price.
    pub lines: Vec<StoredLine>,
    /// What the buyer pays.
    pub total: Sats,
    /// The mint quote paying for it.
    pub quote_id: String,
    /// The BOLT11 invoice.
    pub invoice: String,
    /// Unix seconds after which an unpaid order expires.
    pub expires_at: u64,
    /// Escrow state.
    pub state: EscrowState,
    /// The delivery code's MAC, once paid.
    pub code: Option<StoredCode>,
    /// Unix seconds.
    pub created_at: u64,
    /// The buyer's shipping details from the NIP-15 order, sealed (personal data); see
    /// [`super::query::Shipping`]. Absent on orders stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_sealed: Option<String>,
    /// Unix seconds the payment arrived.
    #[serde(default)]
    pub paid_at: Option<u64>,
    /// The buyer asked to cancel (before delivery).
    #[serde(default)]
    pub cancel: Option<CancelRequest>,
    /// How the money goes back to the buyer, once a refund started.
    #[serde(default)]
    pub refund: Option<RefundPlan>,
    /// The order messages the buyer's client speaks.
    #[serde(default)]
    pub dialect: Dialect,
}

/// Which order messages a buyer's client speaks; every message about the order uses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// NIP-15 JSON messages (type 0/1/2) in kind-4 or kind-14 DMs.
    #[default]
    Nip15,
    /// Gamma Markets kind-16 messages with tags, gift-wrapped.
    Gamma,
}

/// A buyer's request to cancel a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Unix seconds.
    pub at: u64,
    /// A Lightning address or LNURL-pay link for the refund; a Cashu token DM otherwise.
    pub refund_to: Option<String>,
}

/// A refund's route and how far it got: enough to finish it after a crash without paying
/// twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum RefundPlan {
    /// A Cashu token DM'd to the buyer.
    Token {
        /// The wallet's send operation, recorded before the token is made.
        operation: Option<String>,
        /// Why a Lightning refund fell back to a token, told to the buyer.
        #[serde(default)]
        note: Option<String>,
    },
    /// A payment to the buyer's Lightning address.
    Lightning {
        /// Lightning address or LNURL.
        destination: String,
        /// The melt quote, recorded before the melt.
        quote: Option<String>,
        /// What the invoice pays (the total minus the mint's fee reserve).
        amount: Sats,
    },
}

/// One stored order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLine {
    /// Product id.
    pub product_id: String,
    /// Units.
    pub quantity: u64,
    /// Unit price in the stall's minor unit.
    pub unit_price: u64,
}

/// A fund movement, recorded before it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Amount moved.
    pub amount: Sats,
    /// False until the movement is confirmed.
    pub done: bool,
}

/// Escrow failures that are not refusals.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// Not done, for a reason the asker may read.
    #[error(transparent)]
    Refused(#[from] EscrowRefusal),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mint or the wallet.
    #[error("wallet: {0}")]
    Wallet(#[from] cdk::Error),
    /// Merchant registry.
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    /// Signing a message to a buyer or a merchant.
    #[error("signing: {0}")]
    Sign(#[from] PublishError),
    /// A message that cannot be sent even shortened (over NIP-44's or the relays' limit).
    #[error("a message cannot be sent: {0}")]
    Unsendable(String),
    /// Encoding a message or a listing.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// Sealing or opening a buyer's shipping details.
    #[error("shipping details: {0}")]
    Vault(#[from] VaultError),
    /// An order moved in a way its state machine does not allow: a bug, never ignored.
    #[error(transparent)]
    IllegalMove(#[from] InvalidTransition),
    /// A payout or refund moved in a way its saga does not allow: a bug, never ignored.
    #[error(transparent)]
    IllegalSagaMove(#[from] super::saga::InvalidMove),
    /// soko's own records disagree with themselves or the wallet (a sum out of range, a
    /// stored key that does not read back, a record that vanished).
    #[error("books: {0}")]
    Books(String),
    /// The notices of a paid order to bridges and agents.
    #[error("paid-order notices: {0}")]
    Notice(#[from] super::notify::NoticeError),
}

/// The escrow service; cheap to clone.
#[derive(Debug, Clone)]
pub struct EscrowService {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) orders: Typed<OrderRecord>,
    pub(super) index: Typed<u64>,
    pub(super) seq: Typed<u64>,
    pub(super) awaiting: Typed<u64>,
    pub(super) refunding: Typed<u64>,
    pub(super) reserved: Typed<u64>,
    pub(super) balances: Typed<Sats>,
    pub(super) ledger: Typed<LedgerEntry>,
    pub(super) payouts: Typed<PayoutRecord>,
    pub(super) wallet: Wallet,
    pub(super) merchants: Merchants,
    pub(super) publisher: Publisher,
    pub(super) outbox: Outbox,
    pub(super) codes: CodeHasher,
    pub(super) rates: Rates,
    pub(super) payment_window_secs: u64,
    pub(super) delivery_window_secs: u64,
    pub(super) lnurl: crate::lnurl::Policy,
    pub(super) refunds: Mutex<()>,
    pub(super) payouts_lock: Mutex<()>,
    pub(super) lock: Mutex<()>,
    /// Seals buyers' shipping details.
    pub(super) vault: Vault,
    /// Who else hears of paid orders (SMS bridges, agents).
    pub(super) listener: Arc<dyn PaidOrderListener>,
    // Issue 11: when each unpaid order is checked again.
    pub(super) watch: super::watch::Schedule,
    // The mint's NUT-17 push of invoice states, when it offers one.
    pub(super) push: std::sync::Mutex<super::watch::Push>,
    pub(super) caps: Caps,
    pub(super) clock: Clock,
    pub(super) reconciled: super::books::Clock,
}

impl EscrowService {
    /// Opens the trees.
    pub fn open(
        store: &Store,
        wallet: Wallet,
        merchants: Merchants,
        publisher: Publisher,
        vault: &Vault,
        rules: Rules,
        listener: Arc<dyn PaidOrderListener>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                orders: store.tree("orders")?,
                index: store.tree("order_index")?,
                seq: store.tree("order_seq")?,
                awaiting: store.tree("awaiting")?,
                refunding: store.tree("refunding")?,
                reserved: store.tree("reserved")?,
                balances: store.tree("balances")?,
                ledger: store.tree("ledger")?,
                payouts: store.tree("payouts")?,
                wallet,
                merchants,
                outbox: publisher.outbox().clone(),
                publisher,
                codes: CodeHasher::new(vault.subkey("delivery-code")),
                rates: rules.rates,
                payment_window_secs: rules.payment_window_secs,
                delivery_window_secs: rules.delivery_window_secs,
                lnurl: rules.lnurl,
                refunds: Mutex::new(()),
                payouts_lock: Mutex::new(()),
                lock: Mutex::new(()),
                vault: vault.clone(),
                listener,
                watch: super::watch::Schedule::new(rules.poll),
                push: Default::default(),
                caps: rules.caps,
                clock: rules.clock,
                reconciled: Default::default(),
            }),
        })
    }

    /// The time its windows are kept on (the menus keep the same).
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Handles a type-0 order DM'd to `merchant`; returns the NIP-15 reply (type 1 with an
    /// invoice, or type 2 explaining a refusal or the order's status).
    ///
    /// The order is priced and its invoice asked from the mint outside the escrow lock, so
    /// orders are taken in parallel; under the lock it is priced again against the stock held
    /// meanwhile, and only then numbered and recorded. An invoice whose order lost that race
    /// is simply never paid (it expires at the mint).
    pub async fn place(
        &self,
        merchant: PublicKey,
        buyer: PublicKey,
        scheme: Scheme,
        dialect: Dialect,
        order: Order,
    ) -> Result<Note, EscrowError> {
        let inner = &self.inner;
        let index_key = [
            merchant.to_bytes().as_slice(),
            &buyer.to_bytes(),
            order.id.as_bytes(),
        ]
        .concat();
        if let Some(reply) = self.known_order(&merchant, &index_key)? {
            return Ok(reply);
        }
        let buyer_hex = buyer.to_hex();
        let refuse = |why: String| refusal(dialect, &buyer_hex, &order.id, &why);
        let (stall_id, priced) = match self.price(&merchant, &order)? {
            Ok(priced) => priced,
            Err(why) => return Ok(refuse(why)),
        };
        // Checked before the mint is asked, so a refused order costs it nothing.
        if let Some(why) = self.over_caps(&merchant, &buyer, &priced.lines)? {
            return Ok(refuse(why));
        }
        let shop = inner.merchants.get(&merchant)?.name;
        let quote = match inner
            .wallet
            .mint_quote(
                PaymentMethod::BOLT11,
                Some(priced.total_sats.into()),
                Some(format!("{shop}: order {}", clip(&order.id, 40))),
                None,
            )
            .await
        {
            Ok(quote) => quote,
            Err(cdk::Error::AmountOutofLimitRange(_, max, _)) => {
                let most = if u64::from(max) > 0 {
                    format!(" (at most {max} sat)")
                } else {
                    String::new()
                };
                return Ok(refuse(format!(
                    "too_large: the total of {} sat is more than the mint takes in one invoice{most}; order fewer items",
                    priced.total_sats.0
                )));
            }
            Err(e) => return Err(e.into()),
        };

        let _guard = inner.lock.lock().await;
        // Another copy of the same order may have been recorded while the mint answered.
        if let Some(reply) = self.known_order(&merchant, &index_key)? {
            return Ok(reply);
        }
        let priced = match self.price(&merchant, &order)? {
            Ok((_, now)) if now.total_sats == priced.total_sats => now,
            Ok(_) => return Ok(refuse("the prices changed; please order again".to_owned())),
            Err(why) => return Ok(refuse(why)),
        };
        if let Some(why) = self.over_caps(&merchant, &buyer, &priced.lines)? {
            return Ok(refuse(why));
        }
        let number = inner
            .seq
            .raw()
            .update_and_fetch(merchant.to_bytes(), |old| {
                let last = old
                    .and_then(|b| crate::store::decode::<u64>(b).ok())
                    .unwrap_or(0);
                crate::store::encode(&(last + 1)).ok()
            })
            .map_err(StoreError::from)?
            .and_then(|b| crate::store::decode::<u64>(&b).ok())
            .unwrap_or(1);
        let now = inner.clock.now();
        let record = OrderRecord {
            number,
            buyer_order_id: order.id.clone(),
            buyer,
            scheme,
            stall_id,
            lines: priced.lines.iter().map(stored_line).collect(),
            total: priced.total_sats,
            quote_id: quote.id.clone(),
            invoice: quote.request.clone(),
            expires_at: (now + inner.payment_window_secs).min(quote.expiry.max(now)),
            state: EscrowState::AwaitingPayment,
            code: None,
            created_at: now,
            paid_at: None,
            cancel: None,
            refund: None,
            dialect,
            shipping_sealed: self.seal_shipping(&order)?,
        };
        let key = order_key(&merchant, number);
        let encoded = inner.orders.encode(&record)?;
        let number_bytes = inner.index.encode(&number)?;
        let holds = self.reservation_changes(&merchant, &priced.lines, true)?;
        let expiry = inner.awaiting.encode(&record.expires_at)?;
        (
            inner.orders.raw(),
            inner.index.raw(),
            inner.reserved.raw(),
            inner.awaiting.raw(),
        )
            .transaction(|(orders, index, reserved, awaiting)| {
                orders.insert(key.as_slice(), encoded.clone())?;
                index.insert(index_key.as_slice(), number_bytes.clone())?;
                for (k, v) in &holds {
                    reserved.insert(k.as_slice(), v.clone())?;
                }
                awaiting.insert(key.as_slice(), expiry.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        tracing::info!(order = number, sats = record.total.0, "order placed");
        Ok(payment_request(&record))
    }

    /// The reply to an order this buyer placed before (a retry, or another relay's copy).
    fn known_order(
        &self,
        merchant: &PublicKey,
        index_key: &[u8],
    ) -> Result<Option<Note>, EscrowError> {
        let inner = &self.inner;
        let Some(number) = inner.index.get(index_key)? else {
            return Ok(None);
        };
        Ok(inner
            .orders
            .get(&order_key(merchant, number))?
            .map(|record| match record.state {
                EscrowState::AwaitingPayment => payment_request(&record),
                state => status(&record, &describe(state, record.number)),
            }))
    }

    /// Why a new order would go over a cap on unpaid orders (`[market]`
    /// `max_unpaid_total`, `max_unpaid_per_buyer`, `max_held_percent`), if it would.
    ///
    /// The caps bound what costs nothing to do: an unpaid order holds stock and is checked
    /// at the mint until it expires. A small stock (up to [`MIN_HELD_CAP`] units) can always
    /// be ordered whole.
    fn over_caps(
        &self,
        merchant: &PublicKey,
        buyer: &PublicKey,
        lines: &[Line],
    ) -> Result<Option<String>, EscrowError> {
        let inner = &self.inner;
        let caps = &inner.caps;
        let open = inner.awaiting.len();
        if open >= usize::try_from(caps.total).unwrap_or(usize::MAX) {
            return Ok(Some(format!(
                "busy: soko has {open} orders waiting for payment, its limit; please order again in a few minutes"
            )));
        }
        let mut mine = 0u32;
        for entry in inner.awaiting.raw().iter().keys() {
            let key = entry.map_err(StoreError::from)?;
            if inner
                .orders
                .get(&key)?
                .is_some_and(|r| r.buyer == *buyer && r.state == EscrowState::AwaitingPayment)
            {
                mine += 1;
            }
        }
        if mine >= caps.per_buyer {
            return Ok(Some(format!(
                "busy: you have {mine} orders waiting for payment, the most one buyer may have; pay or let them expire first"
            )));
        }
        for line in lines {
            let Some(product) = inner.merchants.product(merchant, &line.product_id)? else {
                continue;
            };
            let Some(stock) = product.quantity else {
                continue;
            };
            let cap = held_cap(stock, caps.held_percent);
            let held = inner
                .reserved
                .get(&reserved_key(merchant, &line.product_id))?
                .unwrap_or(0);
            if held.saturating_add(line.quantity) > cap {
                return Ok(Some(format!(
                    "busy: at most {cap} of {:?} may wait for payment at once and {held} already do; order fewer or try again in a few minutes",
                    clip_echo(&line.product_id, 64)
                )));
            }
        }
        Ok(None)
    }

    /// Prices the order against the merchant's listings and the stock not held by unpaid
    /// orders: (stall id, priced lines), or why it is refused.
    fn price(
        &self,
        merchant: &PublicKey,
        order: &Order,
    ) -> Result<Result<(String, pricing::Priced), String>, EscrowError> {
        let inner = &self.inner;
        let Some(first) = order.items.first() else {
            return Ok(Err(pricing::OrderRefusal::NoItems.to_string()));
        };
        let Some(product) = inner.merchants.product(merchant, &first.product_id)? else {
            return Ok(Err(pricing::OrderRefusal::UnknownProduct(
                first.product_id.clone(),
            )
            .to_string()));
        };
        let Some(stall) = inner.merchants.stall(merchant, &product.stall_id)? else {
            return Ok(Err(format!("stall {:?} is gone", product.stall_id)));
        };
        let mut products = inner.merchants.products(merchant)?;
        for product in &mut products {
            let held = inner
                .reserved
                .get(&reserved_key(merchant, &product.id))?
                .unwrap_or(0);
            product.quantity = product.quantity.map(|q| q.saturating_sub(held));
        }
        Ok(
            match pricing::price(order, &stall, &products, &inner.rates) {
                Ok(priced) if priced.total_sats == Sats::ZERO => {
                    Err("the total is zero".to_owned())
                }
                Ok(priced) => Ok((stall.id, priced)),
                Err(refusal) => Err(refusal.to_string()),
            },
        )
    }

    /// One pass over unpaid orders: mint paid ones into escrow, expire overdue ones.
    /// Also finishes what a crash interrupted (the ledger says what).
    ///
    /// Each order is handled on its own: one that fails (a message that cannot be sent, a
    /// mint error) is logged with its number, counted and retried later with a growing
    /// delay, and never stops the orders after it. Orders past their expiry come first (they
    /// release stock), then the newest (their buyers are the likeliest to be paying now);
    /// mint checks stay within the [`super::watch`] budget.
    pub async fn tick(&self) -> Result<(), EscrowError> {
        let inner = &self.inner;
        if let Err(e) = self.settle_payouts().await {
            tracing::error!(error = %e, "settling payouts failed; retrying next pass");
        }
        if let Err(e) = self.resume_refunds().await {
            tracing::error!(error = %e, "resuming refunds failed; retrying next pass");
        }
        let mut awaiting: Vec<(Vec<u8>, u64)> = Vec::new();
        for entry in inner.awaiting.iter() {
            let (key, expires_at) = entry?;
            awaiting.push((key.to_vec(), expires_at));
        }
        let watch = &inner.watch;
        let unix = inner.clock.now();
        let now = std::time::Instant::now();
        let feed = self.follow_pushes(now).await;
        // An order is past its expiry once the clock is past `expires_at`.
        let past_expiry: Vec<(Vec<u8>, std::time::Instant)> = awaiting
            .iter()
            .map(|(key, expires_at)| {
                let secs = expires_at.saturating_add(1).saturating_sub(unix);
                (key.clone(), now + std::time::Duration::from_secs(secs))
            })
            .collect();
        let gone = watch.sync(&past_expiry, now);
        if let Some(feed) = &feed {
            for quote in gone {
                feed.unwatch(quote);
            }
            for key in watch.unquoted() {
                match inner.orders.get(&key) {
                    Ok(Some(record)) => {
                        watch.set_quote(&key, &record.quote_id);
                        feed.watch(record.quote_id);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(order = number_of(&key), error = %e, "unreadable order; it is polled");
                    }
                }
            }
        }
        // Pushed changes first (a payment the mint announced), then orders past their expiry
        // (they release stock), then the newest.
        awaiting.sort_by_key(|(key, expires_at)| {
            (
                !watch.urgent(key),
                *expires_at > unix,
                std::cmp::Reverse(*expires_at),
            )
        });
        for (key, _) in awaiting {
            if !watch.due(&key, now) {
                continue;
            }
            if !watch.take_check(now) {
                tracing::debug!("mint check budget spent for now; the other orders wait");
                break;
            }
            let quiet = watch.quiet(&key);
            match self.watch_one(&key).await {
                Ok(checked) => {
                    if checked == Checked::Paid && quiet {
                        watch.missed();
                        tracing::warn!(
                            order = number_of(&key),
                            "a payment the mint did not push was found by a check; reconnecting its websocket"
                        );
                        if let Some(feed) = &feed {
                            feed.reconnect();
                        }
                    }
                    if checked == Checked::Unpaid {
                        watch.unpaid(&key, now);
                    } else if let (Some(quote), Some(feed)) = (watch.forget(&key), &feed) {
                        feed.unwatch(quote);
                    }
                }
                Err(e) => {
                    let (failures, retry) = watch.failed(&key, now);
                    tracing::error!(
                        order = number_of(&key),
                        failures,
                        retry_in_secs = retry.as_secs(),
                        error = %e,
                        "an unpaid order could not be processed; the others go on"
                    );
                }
            }
        }
        self.reconcile_if_due().await;
        Ok(())
    }

    /// Checks one unpaid order at the mint and moves it if paid or overdue.
    async fn watch_one(&self, key: &[u8]) -> Result<Checked, EscrowError> {
        let inner = &self.inner;
        let Some(record) = inner.orders.get(key)? else {
            return Ok(Checked::Moved);
        };
        // Asking the mint happens outside the lock: orders keep flowing while it answers.
        let quote = inner
            .wallet
            .check_mint_quote_status(&record.quote_id)
            .await?;
        let expired =
            quote.state == MintQuoteState::Unpaid && inner.clock.now() > record.expires_at;
        if quote.state == MintQuoteState::Unpaid && !expired {
            return Ok(Checked::Unpaid);
        }
        let _guard = inner.lock.lock().await;
        // Re-read under the lock: another pass may have moved the order meanwhile.
        let Some(record) = inner.orders.get(key)? else {
            return Ok(Checked::Moved);
        };
        if record.state != EscrowState::AwaitingPayment {
            return Ok(Checked::Moved);
        }
        let merchant = merchant_of(key)?;
        if expired {
            self.expire(&merchant, key, record).await?;
            Ok(Checked::Expired)
        } else {
            self.receive_payment(&merchant, key, record, quote.state)
                .await?;
            Ok(Checked::Paid)
        }
    }

    /// Starts following the mint's NUT-17 push once its info says it offers one (looked up
    /// again a minute after a failure, an hour after a "no"), and applies what it told
    /// since the last pass to the schedule. The push only makes orders due sooner or later:
    /// the check that moves an order is the same as without it.
    async fn follow_pushes(
        &self,
        now: std::time::Instant,
    ) -> Option<std::sync::Arc<crate::wallet::nut17::QuoteFeed>> {
        let inner = &self.inner;
        let look = {
            let push = inner.push.lock().unwrap_or_else(|p| p.into_inner());
            push.feed.is_none() && push.next_look.is_none_or(|at| now >= at)
        };
        if look {
            // Asked of the mint itself: the wallet's stored copy may predate an upgrade.
            let info = match inner.wallet.fetch_mint_info().await {
                Ok(Some(info)) => Ok(info),
                Ok(None) => inner.wallet.load_mint_info().await,
                Err(e) => {
                    tracing::debug!(error = %e, "the mint's info could not be fetched; using the stored copy");
                    inner.wallet.load_mint_info().await
                }
            };
            let again = match info {
                Ok(info) if crate::wallet::nut17::pushes_bolt11_mint_quotes(&info) => {
                    match crate::wallet::nut17::QuoteFeed::start(&inner.wallet.mint_url) {
                        Ok(feed) => {
                            tracing::info!("the mint pushes invoice states (NUT-17): following them on its websocket");
                            inner.push.lock().unwrap_or_else(|p| p.into_inner()).feed =
                                Some(std::sync::Arc::new(feed));
                            None
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot follow the mint's websocket; invoices are polled");
                            Some(super::watch::NO_PUSH_LOOK_AGAIN)
                        }
                    }
                }
                Ok(_) => {
                    tracing::info!("the mint does not push invoice states (no NUT-17 for bolt11 mint quotes): invoices are polled");
                    Some(super::watch::NO_PUSH_LOOK_AGAIN)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the mint's info; invoices are polled meanwhile");
                    Some(super::watch::INFO_RETRY)
                }
            };
            if let Some(after) = again {
                inner
                    .push
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .next_look = Some(now + after);
            }
        }
        let feed = inner
            .push
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .feed
            .clone()?;
        let watch = &inner.watch;
        for event in feed.events() {
            match event {
                crate::wallet::nut17::FeedEvent::Connected => watch.connected(),
                crate::wallet::nut17::FeedEvent::Lost => watch.lost(now),
                crate::wallet::nut17::FeedEvent::State { quote, state } => {
                    watch.pushed(&quote, state != MintQuoteState::Unpaid, now);
                }
            }
        }
        Some(feed)
    }

    /// Payments found by a check although the mint was pushing their invoice's state.
    pub fn missed_pushes(&self) -> u64 {
        self.inner.watch.missed_pushes()
    }

    /// Unpaid orders whose invoice state the mint pushes now (the others are polled).
    pub fn pushed_orders(&self) -> usize {
        self.inner.watch.pushed_count()
    }

    /// Connections opened to the mint's NUT-17 websocket since start (0 when the mint
    /// offers none).
    pub fn push_connections(&self) -> u64 {
        let push = self.inner.push.lock().unwrap_or_else(|p| p.into_inner());
        push.feed.as_ref().map_or(0, |feed| {
            feed.stats()
                .connects
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Failures handling unpaid orders since start (each logged with its order number).
    pub fn watch_failures(&self) -> u64 {
        self.inner.watch.failures()
    }

    /// Mint checks of unpaid orders since start.
    pub fn quote_checks(&self) -> u64 {
        self.inner.watch.checks()
    }

    async fn receive_payment(
        &self,
        merchant: &PublicKey,
        key: &[u8],
        record: OrderRecord,
        quote_state: MintQuoteState,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        // Only an order still awaiting payment moves; any other was moved by an earlier
        // sighting of the same payment (a poll and a push, or a pass before a crash).
        let Ok(next) = transition(record.state, EscrowEvent::PaymentReceived) else {
            return Ok(());
        };
        let ledger_key = [b"mint:".as_slice(), key].concat();
        let entry = inner.ledger.get(&ledger_key)?;
        if !entry.is_some_and(|e| e.done) {
            inner.ledger.insert(
                &ledger_key,
                &LedgerEntry {
                    amount: record.total,
                    done: false,
                },
            )?;
            // An `Issued` quote was minted before a crash: the wallet holds the proofs
            // already (cdk's mint saga), so only the books need finishing.
            if quote_state == MintQuoteState::Paid {
                inner
                    .wallet
                    .mint(&record.quote_id, SplitTarget::default(), None)
                    .await?;
            }
        }
        let code = DeliveryCode::generate();
        let mut paid = record.clone();
        paid.state = next;
        paid.paid_at = Some(self.inner.clock.now());
        paid.code = Some(
            inner
                .codes
                .store(&code_scope(merchant, record.number), &code),
        );
        let status_dm = self
            .seal_to_buyer(
                merchant,
                &record,
                status(&paid, &describe(next, paid.number)),
            )
            .await?;
        let code_dm = self
            .seal_to_buyer(
                merchant,
                &record,
                text(
                    &record,
                    format!(
                        "Delivery code for order #{} ({}): {}\nQR: {}\nGive it to the merchant only when you have your goods: it releases your payment to them.",
                        paid.number,
                        shown_id(&record),
                        code.reveal(),
                        code.qr_string(&shown_id(&record))
                    ),
                ),
            )
            .await?;
        let change = Change {
            reserved: self.reservation_changes(merchant, &lines(&record), false)?,
            ledger: Some((
                ledger_key,
                LedgerEntry {
                    amount: record.total,
                    done: true,
                },
            )),
            balance: None,
            sold: record
                .lines
                .iter()
                .map(|l| (Merchants::product_key(merchant, &l.product_id), l.quantity))
                .collect(),
        };
        // The notices to bridges and agents join the buyer's DMs in the same commit.
        let mut dms = vec![status_dm, code_dm];
        dms.extend(
            self.inner
                .listener
                .notices(&PaidOrder::new(*merchant, &paid, self))
                .await?,
        );
        self.commit(key, &paid, change, &dms).await?;
        tracing::info!(
            order = paid.number,
            sats = paid.total.0,
            "order paid; funds held in escrow"
        );
        self.republish_stock(merchant, &record).await
    }

    /// The paid units left the listing in the paid commit: the product is republished with
    /// its new stock. A failure here is logged, not fatal: the stock is already right.
    async fn republish_stock(
        &self,
        merchant: &PublicKey,
        record: &OrderRecord,
    ) -> Result<(), EscrowError> {
        for line in &record.lines {
            let Some(product) = self.inner.merchants.product(merchant, &line.product_id)? else {
                continue;
            };
            if product.quantity.is_none() {
                continue;
            }
            if let Err(e) =
                listing::republish_product(&self.inner.publisher, merchant, &product).await
            {
                tracing::error!(product = %product.id, error = %e, "republishing the product failed");
            }
        }
        Ok(())
    }

    async fn expire(
        &self,
        merchant: &PublicKey,
        key: &[u8],
        record: OrderRecord,
    ) -> Result<(), EscrowError> {
        // Paid in the meantime: a payment beats the clock.
        let Ok(next) = transition(record.state, EscrowEvent::InvoiceExpired) else {
            return Ok(());
        };
        let mut expired = record.clone();
        expired.state = next;
        let dm = self
            .seal_to_buyer(
                merchant,
                &record,
                status(&expired, &describe(next, expired.number)),
            )
            .await?;
        let change = Change {
            reserved: self.reservation_changes(merchant, &lines(&record), false)?,
            ..Change::default()
        };
        self.commit(key, &expired, change, &[dm]).await?;
        tracing::info!(
            order = expired.number,
            "order expired unpaid; stock released"
        );
        Ok(())
    }

    /// An order of a merchant.
    pub fn order(
        &self,
        merchant: &PublicKey,
        number: u64,
    ) -> Result<Option<OrderRecord>, EscrowError> {
        Ok(self.inner.orders.get(&order_key(merchant, number))?)
    }

    /// What soko owes a merchant.
    pub fn balance(&self, merchant: &PublicKey) -> Result<Sats, EscrowError> {
        Ok(self
            .inner
            .balances
            .get(&merchant.to_bytes())?
            .unwrap_or(Sats::ZERO))
    }

    /// The books: (sats held for paid, undelivered orders; sats owed to merchants).
    /// Together they must equal the escrow wallet's balance.
    pub fn books(&self) -> Result<(Sats, Sats), EscrowError> {
        let mut held = Sats::ZERO;
        for entry in self.inner.orders.iter() {
            let (_, record) = entry?;
            if record.state.holds_funds() {
                held = held
                    .checked_add(record.total)
                    .map_err(|e| EscrowError::Books(e.to_string()))?;
            }
        }
        let mut owed = Sats::ZERO;
        for entry in self.inner.balances.iter() {
            let (_, sats) = entry?;
            owed = owed
                .checked_add(sats)
                .map_err(|e| EscrowError::Books(e.to_string()))?;
        }
        Ok((held, owed))
    }

    /// One transaction: the order's new record with what changes along with it, and the DMs
    /// telling the buyer (queued in the outbox). Then the DMs are sent. A crash before the
    /// transaction leaves everything as it was; after it, the outbox sends the DMs on start.
    pub(super) async fn commit(
        &self,
        key: &[u8],
        record: &OrderRecord,
        change: Change,
        dms: &[Event],
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let encoded = inner.orders.encode(record)?;
        let ledger = match &change.ledger {
            Some((k, entry)) => Some((k.clone(), inner.ledger.encode(entry)?)),
            None => None,
        };
        let balance = match &change.balance {
            Some((account, sats)) => Some((account.clone(), inner.balances.encode(sats)?)),
            None => None,
        };
        let queued: Vec<Staged> = dms
            .iter()
            .map(|dm| inner.outbox.stage(dm))
            .collect::<Result<_, StoreError>>()?;
        let still_awaiting = record.state == EscrowState::AwaitingPayment;
        let is_refunding = record.state == EscrowState::Refunding;
        let since = inner.refunding.encode(&inner.clock.now())?;
        (
            inner.orders.raw(),
            inner.reserved.raw(),
            inner.ledger.raw(),
            inner.balances.raw(),
            inner.outbox.raw(),
            inner.awaiting.raw(),
            inner.refunding.raw(),
            inner.merchants.listings_tree(),
        )
            .transaction(
                |(
                    orders,
                    reserved,
                    ledger_tree,
                    balances,
                    outbox,
                    awaiting,
                    refunding,
                    listings,
                )| {
                    for (listing, units) in &change.sold {
                        take_units(listings, listing, *units)?;
                    }
                    orders.insert(key, encoded.clone())?;
                    if !still_awaiting {
                        awaiting.remove(key)?;
                    }
                    if is_refunding {
                        refunding.insert(key, since.clone())?;
                    } else {
                        refunding.remove(key)?;
                    }
                    for (k, v) in &change.reserved {
                        reserved.insert(k.as_slice(), v.clone())?;
                    }
                    if let Some((k, v)) = &ledger {
                        ledger_tree.insert(k.as_slice(), v.clone())?;
                    }
                    if let Some((k, v)) = &balance {
                        balances.insert(k.as_slice(), v.clone())?;
                    }
                    for staged in &queued {
                        staged.insert(outbox)?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                },
            )
            .map_err(tx_error)?;
        for dm in dms {
            inner.outbox.deliver(dm).await?;
        }
        Ok(())
    }

    /// A message from the merchant to the order's buyer, in the scheme and dialect the buyer
    /// ordered in.
    pub(super) async fn seal_to_buyer(
        &self,
        merchant: &PublicKey,
        record: &OrderRecord,
        note: Note,
    ) -> Result<Event, EscrowError> {
        let buyer = record.buyer;
        let publisher = &self.inner.publisher;
        let sealed = publisher
            .seal_note(merchant, buyer, record.scheme, &note)
            .await
            .map_err(|e| e.to_string())
            .and_then(|event| {
                let size = nostr_sdk::JsonUtil::as_json(&event).len();
                if size > crate::outbound::MAX_EVENT_BYTES {
                    return Err(format!("the message is {size} bytes"));
                }
                Ok(event)
            });
        match sealed {
            Ok(event) => Ok(event),
            // NIP-44 seals at most 65,535 bytes: a message that cannot be sealed is sent
            // shortened rather than failing on every pass.
            Err(e) => {
                let short = shorten(&note);
                if short == note {
                    return Err(EscrowError::Unsendable(e));
                }
                tracing::warn!(order = record.number, error = %e, "message cannot be sealed; sending a shortened one");
                Ok(publisher
                    .seal_note(merchant, buyer, record.scheme, &short)
                    .await?)
            }
        }
    }

    /// New `reserved` values after holding (or releasing) the lines' units.
    pub(super) fn reservation_changes(
        &self,
        merchant: &PublicKey,
        lines: &[Line],
        hold: bool,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut changes = Vec::new();
        for line in lines {
            let key = reserved_key(merchant, &line.product_id);
            let now = self.inner.reserved.get(&key)?.unwrap_or(0);
            let next = if hold {
                now.saturating_add(line.quantity)
            } else {
                now.saturating_sub(line.quantity)
            };
            changes.push((key, self.inner.reserved.encode(&next)?));
        }
        Ok(changes)
    }
}

/// What a check of an unpaid order found; all but `Unpaid` take it off the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Still unpaid, not yet expired.
    Unpaid,
    /// Paid: this check moved it into escrow.
    Paid,
    /// Unpaid past its expiry: this check expired it.
    Expired,
    /// Gone or moved by someone else meanwhile.
    Moved,
}

pub(super) fn stored_line(line: &Line) -> StoredLine {
    StoredLine {
        product_id: line.product_id.clone(),
        quantity: line.quantity,
        unit_price: line.unit_price,
    }
}

pub(super) fn lines(record: &OrderRecord) -> Vec<Line> {
    record
        .lines
        .iter()
        .map(|l| Line {
            product_id: l.product_id.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
        })
        .collect()
}

pub(super) fn order_key(merchant: &PublicKey, number: u64) -> Vec<u8> {
    [merchant.to_bytes().as_slice(), &number.to_be_bytes()].concat()
}

pub(super) fn reserved_key(merchant: &PublicKey, product: &str) -> Vec<u8> {
    [merchant.to_bytes().as_slice(), product.as_bytes()].concat()
}

pub(super) fn merchant_of(order_key: &[u8]) -> Result<PublicKey, EscrowError> {
    order_key
        .get(..32)
        .and_then(|bytes| PublicKey::from_slice(bytes).ok())
        .ok_or_else(|| EscrowError::Books("malformed order key".to_owned()))
}

/// What the delivery code's MAC binds to.
pub(super) fn code_scope(merchant: &PublicKey, number: u64) -> String {
    format!("{}:{number}", merchant.to_hex())
}

pub(super) fn tx_error(e: TransactionError<()>) -> EscrowError {
    match e {
        TransactionError::Storage(e) => EscrowError::Store(e.into()),
        // Nothing here aborts on purpose.
        TransactionError::Abort(()) => EscrowError::Books("a transaction was aborted".to_owned()),
    }
}

/// Takes `units` off the stock of the listing at `key`, inside a transaction. A listing that
/// is gone, unreadable or unlimited is left as it is.
fn take_units(
    listings: &sled::transaction::TransactionalTree,
    key: &[u8],
    units: u64,
) -> Result<(), ConflictableTransactionError<()>> {
    let Some(bytes) = listings.get(key)? else {
        return Ok(());
    };
    let Ok(mut listing) = crate::store::decode::<serde_json::Value>(&bytes) else {
        return Ok(());
    };
    let Some(stock) = listing.get("quantity").and_then(serde_json::Value::as_u64) else {
        return Ok(());
    };
    listing["quantity"] = stock.saturating_sub(units).into();
    if let Ok(encoded) = crate::store::encode(&listing) {
        listings.insert(key, encoded)?;
    }
    Ok(())
}

/// The order number in an order key.
fn number_of(key: &[u8]) -> u64 {
    key.get(32..40)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Longest text of a shortened message, in bytes.
const SHORT_TEXT_BYTES: usize = 4096;
/// Longest tag value of a shortened message, in bytes.
const SHORT_TAG_BYTES: usize = 256;

/// `note` cut to sizes that always seal.
fn shorten(note: &Note) -> Note {
    match note {
        Note::Text(text) => Note::Text(clip_echo(text, SHORT_TEXT_BYTES)),
        Note::Tagged {
            kind,
            tags,
            content,
        } => Note::Tagged {
            kind: *kind,
            tags: tags
                .iter()
                .map(|t| t.iter().map(|v| clip_echo(v, SHORT_TAG_BYTES)).collect())
                .collect(),
            content: clip_echo(content, SHORT_TEXT_BYTES),
        },
    }
}

/// At most `max` characters of `text`.
fn clip(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(end, _)| &text[..end])
}
