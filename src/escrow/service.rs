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
//! - `order_reveals`: reveal event id → unix seconds used: a reveal is taken once.
//! - `order_dispute_stats`: revealed key (32) → [`super::dispute::DisputeStats`].
//! - `escrow/audit`: the append-only trail of admins' decisions on orders
//!   ([`crate::store::audit`]).
//! - `payouts`: melt quote id (or the wallet's send operation id, for a token) →
//!   [`PayoutRecord`]: a payout to a merchant, debited from the balance before the melt or the
//!   send; kept once settled, in its final state (see [`super::saga`]).
//! - `escrow/withdrawals`, `escrow/credits`: a balance moved out as a token soko takes
//!   itself, and a token soko made credited back ([`super::withdraw`]).
//! - `escrow/ecash`: merchant (32) ‖ buyer (32) ‖ buyer's order id → an order paid with a
//!   Cashu token, recorded before the token is redeemed; `escrow/ecash_proofs`: each of
//!   those tokens' proofs (`Y`) → the intake it paid ([`super::ecash`]).
//! - `escrow/consolidation`: `pending` → the consolidating swap about to be made
//!   ([`super::consolidate`]).
//!
//! Every state change happens under one lock: orders are few per second, and one writer
//! at a time makes "check then change" safe without per-order locking.

use std::collections::BTreeMap;
use std::sync::Arc;

use nostr_sdk::{Event, PublicKey};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tokio::sync::Mutex;

use super::code::CodeHasher;
use super::notify::PaidOrderListener;
use super::payout::PayoutRecord;
use super::state::EscrowState;
use crate::clock::Clock;
use crate::market::pricing::{Line, Rates};
use crate::market::Merchants;
use crate::money::Sats;
use crate::outbound::{Note, Outbox, Publisher, Staged};
use crate::proto::nip15::clip_echo;
use crate::store::{Store, StoreError, Typed};
use crate::vault::Vault;
use crate::wallet::Wallet;

pub use super::error::EscrowError;
pub use super::records::{
    CancelRequest, Dialect, LedgerEntry, OrderRecord, RefundPlan, StoredLine,
};

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
    /// An admin's decision, appended to the escrow's audit trail with the change it made.
    pub(super) audit: Option<crate::store::audit::AuditEntry>,
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
    /// Seconds the other side has to answer an issue marked on an order.
    pub issue_answer_secs: u64,
    /// Where payouts and refunds may send LNURL requests.
    pub lnurl: crate::lnurl::Policy,
    /// How often unpaid orders are checked at the mint.
    pub poll: super::watch::PollRules,
    /// Caps on unpaid orders.
    pub caps: Caps,
    /// The time the windows are kept on.
    pub clock: Clock,
    /// Where orders and wallet operations are counted.
    pub metrics: crate::metrics::Metrics,
    /// Issue 16: when finished orders shrink, when the wallet consolidates.
    pub footprint: super::consolidate::Footprint,
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
    /// What `awaiting` holds, counted in all and per buyer, for the intake caps.
    pub(super) unpaid: std::sync::Mutex<super::unpaid::Unpaid>,
    pub(super) refunding: Typed<u64>,
    pub(super) reserved: Typed<u64>,
    pub(super) balances: Typed<Sats>,
    pub(super) ledger: Typed<LedgerEntry>,
    pub(super) payouts: Typed<PayoutRecord>,
    /// Balances moved out as tokens soko takes ([`super::withdraw`]).
    pub(super) withdrawals: Typed<super::withdraw::Withdrawal>,
    /// Tokens soko made, credited back to balances ([`super::withdraw`]).
    pub(super) credits: Typed<super::withdraw::Credit>,
    /// Orders paid with a Cashu token, from before the token is redeemed
    /// ([`super::ecash`]).
    pub(super) ecash: Typed<super::ecash::Intake>,
    /// Each proof (its `Y`) of a token taken as payment → the intake it paid.
    pub(super) ecash_proofs: Typed<Vec<u8>>,
    /// One ecash intake moves at a time (the inbox and the timer's resume may meet).
    pub(super) ecash_lock: Mutex<()>,
    /// Wallets at the other mints whose ecash a pay-first order may bring (set once, at
    /// start: [`EscrowService::take_foreign_mints`]).
    pub(super) foreign: std::sync::OnceLock<crate::wallet::foreign::ForeignMints>,
    pub(super) wallet: Wallet,
    pub(super) merchants: Merchants,
    pub(super) publisher: Publisher,
    pub(super) outbox: Outbox,
    pub(super) codes: CodeHasher,
    pub(super) rates: Rates,
    pub(super) payment_window_secs: u64,
    pub(super) delivery_window_secs: u64,
    pub(super) issue_answer_secs: u64,
    pub(super) reveals: Typed<u64>,
    pub(super) dispute_stats: Typed<super::dispute::DisputeStats>,
    pub(super) audit: crate::store::audit::Audit,
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
    pub(super) metrics: crate::metrics::Metrics,
    /// Issue 16: a consolidating swap recorded before it is made.
    pub(super) consolidation: Typed<super::consolidate::PendingSwap>,
    pub(super) footprint: super::consolidate::Footprint,
    pub(super) footprint_schedule: super::consolidate::Schedule,
}

impl Inner {
    /// The unpaid counts; a panic elsewhere while they were held leaves them as they were.
    pub(super) fn unpaid_counts(&self) -> std::sync::MutexGuard<'_, super::unpaid::Unpaid> {
        self.unpaid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
        let orders = store.tree("orders")?;
        let awaiting = store.tree("awaiting")?;
        let reserved = store.tree("reserved")?;
        let unpaid = recount(&orders, &awaiting, &reserved)?;
        Ok(Self {
            inner: Arc::new(Inner {
                orders,
                index: store.tree("order_index")?,
                seq: store.tree("order_seq")?,
                awaiting,
                unpaid: std::sync::Mutex::new(unpaid),
                refunding: store.tree("refunding")?,
                reserved,
                balances: store.tree("balances")?,
                ledger: store.tree("ledger")?,
                payouts: store.tree("payouts")?,
                withdrawals: store.tree("escrow/withdrawals")?,
                credits: store.tree("escrow/credits")?,
                ecash: store.tree("escrow/ecash")?,
                ecash_proofs: store.tree("escrow/ecash_proofs")?,
                ecash_lock: Mutex::new(()),
                foreign: std::sync::OnceLock::new(),
                wallet,
                merchants,
                outbox: publisher.outbox().clone(),
                publisher,
                codes: CodeHasher::new(vault.subkey("delivery-code")),
                rates: rules.rates,
                payment_window_secs: rules.payment_window_secs,
                delivery_window_secs: rules.delivery_window_secs,
                issue_answer_secs: rules.issue_answer_secs,
                reveals: store.tree("order_reveals")?,
                dispute_stats: store.tree("order_dispute_stats")?,
                audit: crate::store::audit::Audit::open(store, super::dispute::AUDIT_TREE)?,
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
                metrics: rules.metrics,
                consolidation: store.tree(super::consolidate::CONSOLIDATION_TREE)?,
                footprint: rules.footprint,
                footprint_schedule: Default::default(),
            }),
        })
    }

    /// Takes ecash of these other mints too (`[mint] foreign_allow`); only the first call
    /// counts.
    pub fn take_foreign_mints(&self, mints: crate::wallet::foreign::ForeignMints) {
        if self.inner.foreign.set(mints).is_err() {
            tracing::warn!("the other mints were already set; kept the first");
        }
    }

    /// The time its windows are kept on (the menus keep the same).
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
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
                    .checked_add(record.held())
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
        let left_awaiting = (
            inner.orders.raw(),
            inner.reserved.raw(),
            inner.ledger.raw(),
            inner.balances.raw(),
            inner.outbox.raw(),
            inner.awaiting.raw(),
            inner.refunding.raw(),
            inner.merchants.listings_tree(),
            inner.audit.raw(),
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
                    trail,
                )| {
                    if let Some(entry) = &change.audit {
                        crate::store::audit::Audit::append_in::<StoreError>(trail, entry).map_err(
                            |e| match e {
                                ConflictableTransactionError::Abort(_) => {
                                    ConflictableTransactionError::Abort(())
                                }
                                ConflictableTransactionError::Storage(e) => {
                                    ConflictableTransactionError::Storage(e)
                                }
                                ConflictableTransactionError::Conflict => {
                                    ConflictableTransactionError::Conflict
                                }
                            },
                        )?;
                    }
                    for (listing, units) in &change.sold {
                        take_units(listings, listing, *units)?;
                    }
                    orders.insert(key, encoded.clone())?;
                    let left_awaiting = !still_awaiting && awaiting.remove(key)?.is_some();
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
                    Ok::<_, ConflictableTransactionError<()>>(left_awaiting)
                },
            )
            .map_err(tx_error)?;
        if left_awaiting {
            inner.unpaid_counts().removed(&record.buyer);
        }
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
                if let Some(size) =
                    crate::util::json_size_over(&event, crate::outbound::MAX_EVENT_BYTES)
                {
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

/// Counts the orders in `awaiting`, in all and by their buyers, and sets the stock they hold
/// (`reserved`) to what their records say. An order is recorded key by key, its record last
/// (see `place`), so a crash can leave an expiry in `awaiting` with no record, and stock
/// held for it: the expiry is dropped (no payment request was sent for it) and the stock is
/// free again. While any of their records cannot be read, `reserved` is left as it is:
/// what that order holds is unknown, and freeing it could sell its units twice.
fn recount(
    orders: &Typed<OrderRecord>,
    awaiting: &Typed<u64>,
    reserved: &Typed<u64>,
) -> Result<super::unpaid::Unpaid, StoreError> {
    let mut unpaid = super::unpaid::Unpaid::default();
    let mut held: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut all_read = true;
    for key in awaiting.raw().iter().keys() {
        let key = key?;
        match orders.get(&key) {
            Ok(Some(record)) => {
                unpaid.added(record.buyer);
                if record.state == EscrowState::AwaitingPayment {
                    match merchant_of(&key) {
                        Ok(merchant) => {
                            for line in &record.lines {
                                let key = reserved_key(&merchant, &line.product_id);
                                let units = held.entry(key).or_default();
                                *units = units.saturating_add(line.quantity);
                            }
                        }
                        Err(_) => all_read = false,
                    }
                }
            }
            Ok(None) => {
                tracing::info!("dropping the expiry of an order a crash left unrecorded");
                awaiting.raw().remove(&key)?;
            }
            Err(e) => {
                tracing::warn!(error = %e, "an order waiting for payment could not be read; counted for no buyer, held stock left as it was");
                unpaid.added_unknown();
                all_read = false;
            }
        }
    }
    if !all_read {
        return Ok(unpaid);
    }
    for entry in reserved.raw().iter() {
        let (key, _) = entry?;
        if !held.contains_key(key.as_ref()) {
            reserved.raw().remove(key)?;
        }
    }
    for (key, units) in held {
        if reserved.get(&key).ok().flatten() != Some(units) {
            reserved.insert(&key, &units)?;
        }
    }
    Ok(unpaid)
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
pub(super) fn take_units(
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
pub(super) fn number_of(key: &[u8]) -> u64 {
    key.get(32..40)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Longest text of a shortened message, in bytes.
const SHORT_TEXT_BYTES: usize = 4096;
/// Longest tag value of a shortened message, in bytes.
const SHORT_TAG_BYTES: usize = 256;

/// `note` cut to sizes that always seal.
pub(super) fn shorten(note: &Note) -> Note {
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
pub(super) fn clip(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(end, _)| &text[..end])
}
