//! The escrow service: orders in sled, invoices from the mint, payment detection, delivery
//! with the code, and the merchant's balance. It applies the pure state machine
//! ([`super::transition`]) and keeps every fund movement in the `ledger` before the mint call.
//!
//! Trees:
//! - `orders`: merchant (32) ‖ order number (u64 BE) → [`OrderRecord`].
//! - `order_index`: merchant (32) ‖ buyer (32) ‖ buyer's order id → order number.
//! - `order_seq`: merchant (32) → last order number given.
//! - `reserved`: merchant (32) ‖ product id → units held by unpaid orders.
//! - `balances`: merchant (32) → sats owed to the merchant (delivered orders).
//! - `ledger`: `"mint:" ‖ order key` → [`LedgerEntry`], written before the mint call and
//!   marked done after, so a crash in between is resumed instead of minting twice.
//! - `payouts`: melt quote id → [`PayoutRecord`]: a payout to a merchant's Lightning
//!   address, debited from the balance before the melt (see [`super::payout`]).
//!
//! Every state change happens under one lock: orders are few per second, and one writer
//! at a time makes "check then change" safe without per-order locking.

use std::sync::Arc;

use cdk::amount::SplitTarget;
use cdk::nuts::{MeltQuoteState, MintQuoteState, PaymentMethod};
use nostr_sdk::{Event, PublicKey};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use tokio::sync::Mutex;

use super::code::{CodeHasher, DeliveryCode, StoredCode, Verdict};
use super::state::{transition, EscrowEvent, EscrowState};
use crate::bot::{Outbox, Publisher, Scheme};
use crate::market::pricing::{self, Line, Rates};
use crate::market::{MerchantError, Merchants};
use crate::money::Sats;
use crate::proto::nip15::{Order, OrderStatus, PaymentOption, PaymentRequest};
use crate::store::{Store, StoreError, Typed};
use crate::util::unix_now;
use crate::vault::Vault;
use crate::wallet::Wallet;

/// An encoded sled entry, prepared outside a transaction.
type KeyValue = (Vec<u8>, Vec<u8>);

/// What changes together with an order's record.
struct Change {
    /// New `reserved` values.
    reserved: Vec<KeyValue>,
    /// A ledger entry to write.
    ledger: Option<(Vec<u8>, LedgerEntry)>,
    /// A merchant's new balance.
    balance: Option<(PublicKey, Sats)>,
}

/// Checkout rules from the config.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Fiat rates.
    pub rates: Rates,
    /// Seconds a buyer has to pay.
    pub payment_window_secs: u64,
}

/// One order and its escrow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    /// soko's number for the order, per merchant (short, for phones).
    pub number: u64,
    /// The buyer's own order id.
    pub buyer_order_id: String,
    /// Buyer pubkey (hex).
    pub buyer: String,
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

/// A payout in flight or done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRecord {
    /// Merchant pubkey (hex).
    pub merchant: String,
    /// Amount plus fee reserve taken from the balance.
    pub debited: Sats,
    /// Amount the invoice pays.
    pub amount: Sats,
    /// False until the mint reports the invoice paid.
    pub done: bool,
}

/// The outcome of a payout attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payout {
    /// The merchant has no Lightning address: the balance stays in soko.
    NotConfigured,
    /// Nothing to pay.
    Nothing,
    /// Paid.
    Sent {
        /// Received by the merchant.
        amount: Sats,
        /// Lightning fee paid.
        fee: Sats,
    },
    /// Not paid; the balance is intact. The reason is safe to show the merchant.
    Failed(String),
}

/// Escrow failures that are not refusals.
#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The mint or the wallet.
    #[error("wallet: {0}")]
    Wallet(#[from] cdk::Error),
    /// Merchant registry.
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    /// Publishing.
    #[error("publishing: {0}")]
    Publish(String),
}

/// What happened to a delivery attempt, told to the merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Released: the merchant's balance grew by this much.
    Released(Sats),
    /// Refused, with the reason.
    Refused(String),
}

/// The escrow service; cheap to clone.
#[derive(Debug, Clone)]
pub struct EscrowService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    orders: Typed<OrderRecord>,
    index: Typed<u64>,
    seq: Typed<u64>,
    reserved: Typed<u64>,
    balances: Typed<Sats>,
    ledger: Typed<LedgerEntry>,
    payouts: Typed<PayoutRecord>,
    wallet: Wallet,
    merchants: Merchants,
    publisher: Publisher,
    outbox: Outbox,
    codes: CodeHasher,
    rates: Rates,
    payment_window_secs: u64,
    lock: Mutex<()>,
}

impl EscrowService {
    /// Opens the trees.
    pub fn open(
        store: &Store,
        wallet: Wallet,
        merchants: Merchants,
        publisher: Publisher,
        outbox: Outbox,
        vault: &Vault,
        rules: Rules,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                orders: store.tree("orders")?,
                index: store.tree("order_index")?,
                seq: store.tree("order_seq")?,
                reserved: store.tree("reserved")?,
                balances: store.tree("balances")?,
                ledger: store.tree("ledger")?,
                payouts: store.tree("payouts")?,
                wallet,
                merchants,
                publisher,
                outbox,
                codes: CodeHasher::new(vault.subkey("delivery-code")),
                rates: rules.rates,
                payment_window_secs: rules.payment_window_secs,
                lock: Mutex::new(()),
            }),
        })
    }

    /// Handles a type-0 order DM'd to `merchant`; returns the NIP-15 reply (type 1 with an
    /// invoice, or type 2 explaining a refusal or the order's status).
    pub async fn place(
        &self,
        merchant: PublicKey,
        buyer: PublicKey,
        scheme: Scheme,
        order: Order,
    ) -> Result<String, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let index_key = [
            merchant.to_bytes().as_slice(),
            &buyer.to_bytes(),
            order.id.as_bytes(),
        ]
        .concat();
        if let Some(number) = inner.index.get(&index_key)? {
            // The same order again (a retry, or another relay's copy in a new event).
            if let Some(record) = inner.orders.get(&order_key(&merchant, number))? {
                return Ok(match record.state {
                    EscrowState::AwaitingPayment => payment_request(&record),
                    state => status(&record, &describe(state, record.number)),
                });
            }
        }
        let refuse = |why: String| {
            to_json(&OrderStatus {
                id: order.id.clone(),
                kind: 2,
                message: format!("Order not accepted: {why}"),
                paid: false,
                shipped: false,
            })
        };
        let Some(first) = order.items.first() else {
            return Ok(refuse(pricing::OrderRefusal::NoItems.to_string()));
        };
        let Some(product) = inner.merchants.product(&merchant, &first.product_id)? else {
            return Ok(refuse(
                pricing::OrderRefusal::UnknownProduct(first.product_id.clone()).to_string(),
            ));
        };
        let Some(stall) = inner.merchants.stall(&merchant, &product.stall_id)? else {
            return Ok(refuse(format!("stall {:?} is gone", product.stall_id)));
        };
        let mut products = inner.merchants.products(&merchant)?;
        for product in &mut products {
            let held = inner
                .reserved
                .get(&reserved_key(&merchant, &product.id))?
                .unwrap_or(0);
            product.quantity = product.quantity.map(|q| q.saturating_sub(held));
        }
        let priced = match pricing::price(&order, &stall, &products, &inner.rates) {
            Ok(priced) => priced,
            Err(refusal) => return Ok(refuse(refusal.to_string())),
        };
        if priced.total_sats == Sats::ZERO {
            return Ok(refuse("the total is zero".to_owned()));
        }

        let shop = inner.merchants.get(&merchant)?.name;
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
        let quote = inner
            .wallet
            .mint_quote(
                PaymentMethod::BOLT11,
                Some(priced.total_sats.into()),
                Some(format!("{shop} order #{number}")),
                None,
            )
            .await?;
        let now = unix_now();
        let record = OrderRecord {
            number,
            buyer_order_id: order.id.clone(),
            buyer: buyer.to_hex(),
            scheme,
            stall_id: stall.id.clone(),
            lines: priced.lines.iter().map(stored_line).collect(),
            total: priced.total_sats,
            quote_id: quote.id.clone(),
            invoice: quote.request.clone(),
            expires_at: (now + inner.payment_window_secs).min(quote.expiry.max(now)),
            state: EscrowState::AwaitingPayment,
            code: None,
            created_at: now,
        };
        let key = order_key(&merchant, number);
        let encoded = inner.orders.encode(&record)?;
        let number_bytes = inner.index.encode(&number)?;
        let holds = self.reservation_changes(&merchant, &priced.lines, true)?;
        (inner.orders.raw(), inner.index.raw(), inner.reserved.raw())
            .transaction(|(orders, index, reserved)| {
                orders.insert(key.as_slice(), encoded.clone())?;
                index.insert(index_key.as_slice(), number_bytes.clone())?;
                for (k, v) in &holds {
                    reserved.insert(k.as_slice(), v.clone())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        tracing::info!(order = number, sats = record.total.0, "order placed");
        Ok(payment_request(&record))
    }

    /// One pass over unpaid orders: mint paid ones into escrow, expire overdue ones.
    /// Also finishes what a crash interrupted (the ledger says what).
    pub async fn tick(&self) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        self.settle_payouts().await?;
        let awaiting: Vec<(sled::IVec, OrderRecord)> = inner
            .orders
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, r)| r.state == EscrowState::AwaitingPayment)
            .collect();
        for (key, record) in awaiting {
            let merchant = merchant_of(&key)?;
            let quote = match inner.wallet.check_mint_quote_status(&record.quote_id).await {
                Ok(quote) => quote,
                Err(e) => {
                    tracing::warn!(order = record.number, error = %e, "cannot check the invoice yet");
                    continue;
                }
            };
            match quote.state {
                MintQuoteState::Paid | MintQuoteState::Issued => {
                    self.receive_payment(&merchant, &key, record, quote.state)
                        .await?;
                }
                MintQuoteState::Unpaid if unix_now() > record.expires_at => {
                    self.expire(&merchant, &key, record).await?;
                }
                MintQuoteState::Unpaid => {}
            }
        }
        Ok(())
    }

    async fn receive_payment(
        &self,
        merchant: &PublicKey,
        key: &[u8],
        record: OrderRecord,
        quote_state: MintQuoteState,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
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
        paid.code = Some(
            inner
                .codes
                .store(&code_scope(merchant, record.number), &code),
        );
        let buyer = PublicKey::from_hex(&record.buyer)
            .map_err(|e| EscrowError::Publish(format!("stored buyer key: {e}")))?;
        let status_dm = self
            .seal(
                merchant,
                buyer,
                record.scheme,
                &status(&paid, &describe(next, paid.number)),
            )
            .await?;
        let code_dm = self
            .seal(
                merchant,
                buyer,
                record.scheme,
                &format!(
                    "Delivery code for order #{} ({}): {}\nQR: {}\nGive it to the merchant only when you have your goods: it releases your payment to them.",
                    paid.number,
                    record.buyer_order_id,
                    code.reveal(),
                    code.qr_string(&record.buyer_order_id)
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
        };
        self.commit(key, &paid, change, &[status_dm, code_dm])
            .await?;
        tracing::info!(
            order = paid.number,
            sats = paid.total.0,
            "order paid; funds held in escrow"
        );
        self.take_from_stock(merchant, &record).await
    }

    /// The paid units leave the listing: the product is saved and republished with its new
    /// stock. A failure here is logged, not fatal: the money side is already consistent.
    async fn take_from_stock(
        &self,
        merchant: &PublicKey,
        record: &OrderRecord,
    ) -> Result<(), EscrowError> {
        for line in &record.lines {
            let Some(mut product) = self.inner.merchants.product(merchant, &line.product_id)?
            else {
                continue;
            };
            let Some(stock) = product.quantity else {
                continue;
            };
            product.quantity = Some(stock.saturating_sub(line.quantity));
            self.inner.merchants.put_product(merchant, &product)?;
            let content =
                serde_json::to_string(&product).map_err(|e| EscrowError::Publish(e.to_string()))?;
            let builder = nostr_sdk::EventBuilder::new(nostr_sdk::Kind::Custom(30018), content)
                .tag(nostr_sdk::Tag::identifier(&product.id));
            if let Err(e) = self.inner.publisher.publish_as(merchant, builder).await {
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
        let Ok(next) = transition(record.state, EscrowEvent::InvoiceExpired) else {
            return Ok(());
        };
        let mut expired = record.clone();
        expired.state = next;
        let buyer = PublicKey::from_hex(&record.buyer)
            .map_err(|e| EscrowError::Publish(format!("stored buyer key: {e}")))?;
        let dm = self
            .seal(
                merchant,
                buyer,
                record.scheme,
                &status(&expired, &describe(next, expired.number)),
            )
            .await?;
        let change = Change {
            reserved: self.reservation_changes(merchant, &lines(&record), false)?,
            ledger: None,
            balance: None,
        };
        self.commit(key, &expired, change, &[dm]).await?;
        tracing::info!(
            order = expired.number,
            "order expired unpaid; stock released"
        );
        Ok(())
    }

    /// The merchant presents the buyer's code for order `number`.
    pub async fn deliver(
        &self,
        merchant: PublicKey,
        number: u64,
        code: &str,
    ) -> Result<Delivery, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let key = order_key(&merchant, number);
        let Some(record) = inner.orders.get(&key)? else {
            return Ok(Delivery::Refused(format!("there is no order #{number}")));
        };
        if record.state != EscrowState::Paid {
            return Ok(Delivery::Refused(format!(
                "order #{number} cannot be delivered: {}",
                describe(record.state, number)
            )));
        }
        let Some(stored) = &record.code else {
            return Ok(Delivery::Refused(format!(
                "order #{number} has no code yet"
            )));
        };
        let (verdict, updated) = inner
            .codes
            .check(&code_scope(&merchant, number), stored, code);
        let mut next = record.clone();
        next.code = Some(updated);
        let refusal = match verdict {
            Verdict::Accepted => None,
            Verdict::Wrong { attempts_left } => Some(format!(
                "wrong code for order #{number}; {attempts_left} tries left"
            )),
            Verdict::Locked | Verdict::AlreadyLocked => {
                next.state = transition(record.state, EscrowEvent::CodeAttemptsExhausted)
                    .unwrap_or(record.state);
                Some(format!(
                    "too many wrong codes: order #{number} is locked for review by soko's operator"
                ))
            }
        };
        if let Some(why) = refusal {
            inner.orders.insert(&key, &next)?;
            return Ok(Delivery::Refused(why));
        }
        // Delivered, and the payout is a credit to the merchant's balance held in soko's
        // escrow wallet: both steps complete here, in one transaction.
        let delivered = transition(record.state, EscrowEvent::CodeAccepted).unwrap_or(record.state);
        next.state = transition(delivered, EscrowEvent::PayoutSettled).unwrap_or(delivered);
        let buyer = PublicKey::from_hex(&record.buyer)
            .map_err(|e| EscrowError::Publish(format!("stored buyer key: {e}")))?;
        let dm = self
            .seal(
                &merchant,
                buyer,
                record.scheme,
                &status(&next, &describe(next.state, number)),
            )
            .await?;
        let balance = inner
            .balances
            .get(&merchant.to_bytes())?
            .unwrap_or(Sats::ZERO);
        let credited = balance
            .checked_add(record.total)
            .map_err(|e| EscrowError::Publish(e.to_string()))?;
        let change = Change {
            reserved: Vec::new(),
            ledger: None,
            balance: Some((merchant, credited)),
        };
        self.commit(&key, &next, change, &[dm]).await?;
        tracing::info!(
            order = number,
            sats = record.total.0,
            "delivered; escrow released to the merchant's balance"
        );
        Ok(Delivery::Released(record.total))
    }

    /// Refunds a paid (undelivered) or disputed order: the total goes back to the buyer as a
    /// Cashu token in a DM, in the buyer's scheme. The token is stored sealed in the ledger
    /// with the order's new state and the DMs, in one transaction.
    pub async fn refund(&self, merchant: PublicKey, number: u64) -> Result<Delivery, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let key = order_key(&merchant, number);
        let Some(record) = inner.orders.get(&key)? else {
            return Ok(Delivery::Refused(format!("there is no order #{number}")));
        };
        let Ok(next) = transition(record.state, EscrowEvent::RefundSettled) else {
            return Ok(Delivery::Refused(format!(
                "order #{number} cannot be refunded: {}",
                describe(record.state, number)
            )));
        };
        let buyer = PublicKey::from_hex(&record.buyer)
            .map_err(|e| EscrowError::Publish(format!("stored buyer key: {e}")))?;
        let token = inner
            .wallet
            .prepare_send(record.total.into(), cdk::wallet::SendOptions::default())
            .await?
            .confirm(None)
            .await?
            .to_string();
        let mut refunded = record.clone();
        refunded.state = next;
        let status_dm = self
            .seal(
                &merchant,
                buyer,
                record.scheme,
                &status(&refunded, &describe(next, number)),
            )
            .await?;
        let token_dm = self
            .seal(
                &merchant,
                buyer,
                record.scheme,
                &format!(
                    "Refund for order #{number} ({}): {} sat as Cashu ecash. Redeem it in any Cashu wallet:\n{token}",
                    record.buyer_order_id, record.total.0
                ),
            )
            .await?;
        let change = Change {
            reserved: Vec::new(),
            ledger: Some((
                [b"refund:".as_slice(), &key].concat(),
                LedgerEntry {
                    amount: record.total,
                    done: true,
                },
            )),
            balance: None,
        };
        self.commit(&key, &refunded, change, &[status_dm, token_dm])
            .await?;
        tracing::info!(
            order = number,
            sats = record.total.0,
            "order refunded to the buyer as a token"
        );
        Ok(Delivery::Released(record.total))
    }

    /// Pays the merchant's whole balance to its Lightning address, if it has one.
    pub async fn pay_out(&self, merchant: PublicKey) -> Result<Payout, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let Some(destination) = inner.merchants.get(&merchant)?.lightning_address else {
            return Ok(Payout::NotConfigured);
        };
        let balance = inner
            .balances
            .get(&merchant.to_bytes())?
            .unwrap_or(Sats::ZERO);
        if balance == Sats::ZERO {
            return Ok(Payout::Nothing);
        }
        // The fee reserve is only known from the melt quote, so ask for the whole balance
        // first and, if amount + reserve does not fit, once more for balance - reserve.
        let mut amount = balance;
        let mut attempt = 0;
        let quote = loop {
            attempt += 1;
            let invoice = match super::payout::invoice_for(&destination, amount).await {
                Ok(invoice) => invoice,
                Err(e) => return Ok(Payout::Failed(e.to_string())),
            };
            let quote = match inner
                .wallet
                .melt_quote(PaymentMethod::BOLT11, invoice, None, None)
                .await
            {
                Ok(quote) => quote,
                Err(e) => {
                    return Ok(Payout::Failed(format!(
                        "the mint cannot pay that invoice: {e}"
                    )))
                }
            };
            let reserve = Sats::from(quote.fee_reserve);
            if amount
                .checked_add(reserve)
                .is_ok_and(|debit| debit <= balance)
            {
                break quote;
            }
            match balance.checked_sub(reserve) {
                Some(smaller) if smaller > Sats::ZERO && attempt < 2 => amount = smaller,
                _ => {
                    return Ok(Payout::Failed(format!(
                        "a balance of {balance} does not cover the Lightning fee reserve"
                    )))
                }
            }
        };
        let debited = amount
            .checked_add(Sats::from(quote.fee_reserve))
            .map_err(|e| EscrowError::Publish(e.to_string()))?;
        let record = PayoutRecord {
            merchant: merchant.to_hex(),
            debited,
            amount,
            done: false,
        };
        let remaining = balance.checked_sub(debited).unwrap_or(Sats::ZERO);
        self.commit_payout(&merchant, &quote.id, &record, remaining)?;
        tracing::info!(
            sats = amount.0,
            "paying a merchant's balance out over Lightning"
        );

        let melted = match inner
            .wallet
            .prepare_melt(&quote.id, Default::default())
            .await
        {
            Ok(prepared) => prepared.confirm().await,
            Err(e) => Err(e),
        };
        match melted {
            Ok(finalized) => {
                let fee = Sats::from(finalized.fee_paid());
                self.finish_payout(&merchant, &quote.id, record, fee)?;
                Ok(Payout::Sent { amount, fee })
            }
            Err(e) => {
                // Only a payment the mint reports unpaid is given back; anything unclear
                // stays pending for `tick` to settle from the mint's later answer.
                let state = inner
                    .wallet
                    .check_melt_quote_status(&quote.id)
                    .await
                    .map(|q| q.state);
                if matches!(state, Ok(MeltQuoteState::Unpaid | MeltQuoteState::Failed)) {
                    self.undo_payout(&merchant, &quote.id, &record)?;
                    Ok(Payout::Failed(format!("the payment failed: {e}")))
                } else {
                    tracing::warn!(error = %e, "payout outcome unclear; will settle from the mint's state");
                    Ok(Payout::Failed(
                        "the payment is pending; soko will settle it".to_owned(),
                    ))
                }
            }
        }
    }

    fn commit_payout(
        &self,
        merchant: &PublicKey,
        quote_id: &str,
        record: &PayoutRecord,
        balance: Sats,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let encoded = inner.payouts.encode(record)?;
        let balance = inner.balances.encode(&balance)?;
        let merchant_bytes = merchant.to_bytes();
        (inner.payouts.raw(), inner.balances.raw())
            .transaction(|(payouts, balances)| {
                payouts.insert(quote_id.as_bytes(), encoded.clone())?;
                balances.insert(merchant_bytes.as_slice(), balance.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)
    }

    /// Marks a payout done and credits back the unused fee reserve.
    fn finish_payout(
        &self,
        merchant: &PublicKey,
        quote_id: &str,
        mut record: PayoutRecord,
        fee: Sats,
    ) -> Result<(), EscrowError> {
        let spent = record
            .amount
            .checked_add(fee)
            .map_err(|e| EscrowError::Publish(e.to_string()))?;
        let unused = record.debited.checked_sub(spent).unwrap_or(Sats::ZERO);
        let balance = self
            .balance(merchant)?
            .checked_add(unused)
            .map_err(|e| EscrowError::Publish(e.to_string()))?;
        record.done = true;
        self.commit_payout(merchant, quote_id, &record, balance)
    }

    /// Gives a failed payout's debit back.
    fn undo_payout(
        &self,
        merchant: &PublicKey,
        quote_id: &str,
        record: &PayoutRecord,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let balance = self
            .balance(merchant)?
            .checked_add(record.debited)
            .map_err(|e| EscrowError::Publish(e.to_string()))?;
        let balance = inner.balances.encode(&balance)?;
        let merchant_bytes = merchant.to_bytes();
        (inner.payouts.raw(), inner.balances.raw())
            .transaction(|(payouts, balances)| {
                payouts.remove(quote_id.as_bytes())?;
                balances.insert(merchant_bytes.as_slice(), balance.clone())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)
    }

    /// Settles payouts a crash or an unclear answer left pending.
    async fn settle_payouts(&self) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let pending: Vec<(sled::IVec, PayoutRecord)> = inner
            .payouts
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, p)| !p.done)
            .collect();
        for (quote_id, record) in pending {
            let quote_id = String::from_utf8_lossy(&quote_id).into_owned();
            let merchant = PublicKey::from_hex(&record.merchant)
                .map_err(|e| EscrowError::Publish(format!("stored merchant key: {e}")))?;
            match inner.wallet.check_melt_quote_status(&quote_id).await {
                // The fee actually paid is unknown here: the reserve counts as spent.
                Ok(q) if q.state == MeltQuoteState::Paid => {
                    let fee = record
                        .debited
                        .checked_sub(record.amount)
                        .unwrap_or(Sats::ZERO);
                    self.finish_payout(&merchant, &quote_id, record, fee)?;
                }
                Ok(q) if matches!(q.state, MeltQuoteState::Unpaid | MeltQuoteState::Failed) => {
                    self.undo_payout(&merchant, &quote_id, &record)?;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot check a pending payout yet"),
            }
        }
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
                    .map_err(|e| EscrowError::Publish(e.to_string()))?;
            }
        }
        let mut owed = Sats::ZERO;
        for entry in self.inner.balances.iter() {
            let (_, sats) = entry?;
            owed = owed
                .checked_add(sats)
                .map_err(|e| EscrowError::Publish(e.to_string()))?;
        }
        Ok((held, owed))
    }

    /// One transaction: the order's new record with what changes along with it, and the DMs
    /// telling the buyer (queued in the outbox). Then the DMs are sent. A crash before the
    /// transaction leaves everything as it was; after it, the outbox sends the DMs on start.
    async fn commit(
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
            Some((merchant, sats)) => Some((merchant.to_bytes(), inner.balances.encode(sats)?)),
            None => None,
        };
        let queued: Vec<KeyValue> = dms
            .iter()
            .map(|dm| {
                Ok((
                    dm.id.as_bytes().to_vec(),
                    inner.outbox.tree().encode(&Outbox::entry(dm))?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        (
            inner.orders.raw(),
            inner.reserved.raw(),
            inner.ledger.raw(),
            inner.balances.raw(),
            inner.outbox.tree().raw(),
        )
            .transaction(|(orders, reserved, ledger_tree, balances, outbox)| {
                orders.insert(key, encoded.clone())?;
                for (k, v) in &change.reserved {
                    reserved.insert(k.as_slice(), v.clone())?;
                }
                if let Some((k, v)) = &ledger {
                    ledger_tree.insert(k.as_slice(), v.clone())?;
                }
                if let Some((k, v)) = &balance {
                    balances.insert(k.as_slice(), v.clone())?;
                }
                for (id, entry) in &queued {
                    outbox.insert(id.as_slice(), entry.clone())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        for dm in dms {
            inner.outbox.deliver(dm).await?;
        }
        Ok(())
    }

    async fn seal(
        &self,
        from: &PublicKey,
        to: PublicKey,
        scheme: Scheme,
        content: &str,
    ) -> Result<Event, EscrowError> {
        self.inner
            .publisher
            .seal_dm(from, to, scheme, content)
            .await
            .map_err(|e| EscrowError::Publish(e.to_string()))
    }

    /// New `reserved` values after holding (or releasing) the lines' units.
    fn reservation_changes(
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

fn stored_line(line: &Line) -> StoredLine {
    StoredLine {
        product_id: line.product_id.clone(),
        quantity: line.quantity,
        unit_price: line.unit_price,
    }
}

fn lines(record: &OrderRecord) -> Vec<Line> {
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

fn order_key(merchant: &PublicKey, number: u64) -> Vec<u8> {
    [merchant.to_bytes().as_slice(), &number.to_be_bytes()].concat()
}

fn reserved_key(merchant: &PublicKey, product: &str) -> Vec<u8> {
    [merchant.to_bytes().as_slice(), product.as_bytes()].concat()
}

fn merchant_of(order_key: &[u8]) -> Result<PublicKey, EscrowError> {
    order_key
        .get(..32)
        .and_then(|bytes| PublicKey::from_slice(bytes).ok())
        .ok_or_else(|| EscrowError::Publish("malformed order key".to_owned()))
}

/// What the delivery code's MAC binds to.
fn code_scope(merchant: &PublicKey, number: u64) -> String {
    format!("{}:{number}", merchant.to_hex())
}

fn payment_request(record: &OrderRecord) -> String {
    to_json(&PaymentRequest {
        id: record.buyer_order_id.clone(),
        kind: 1,
        message: Some(format!(
            "Order #{}: {} sat. Pay this invoice before {} (unix time); soko holds the payment until you confirm delivery with your delivery code.",
            record.number, record.total.0, record.expires_at
        )),
        payment_options: vec![PaymentOption {
            kind: "ln".to_owned(),
            link: record.invoice.clone(),
        }],
    })
}

fn status(record: &OrderRecord, message: &str) -> String {
    to_json(&OrderStatus {
        id: record.buyer_order_id.clone(),
        kind: 2,
        message: message.to_owned(),
        paid: record.state.holds_funds() || record.state == EscrowState::PaidOut,
        shipped: matches!(record.state, EscrowState::Delivered | EscrowState::PaidOut),
    })
}

fn describe(state: EscrowState, number: u64) -> String {
    match state {
        EscrowState::AwaitingPayment => format!("Order #{number} is waiting for payment."),
        EscrowState::Paid => format!(
            "Payment received for order #{number}; soko holds it. Your delivery code follows in a separate message."
        ),
        EscrowState::Delivered | EscrowState::PaidOut => {
            format!("Order #{number} delivered and completed. Thank you!")
        }
        EscrowState::Expired => format!("Order #{number} expired unpaid and was cancelled."),
        EscrowState::Refunded => format!("Order #{number} was refunded."),
        EscrowState::Disputed => format!("Order #{number} is under review by soko's operator."),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn tx_error(e: TransactionError<()>) -> EscrowError {
    match e {
        TransactionError::Storage(e) => EscrowError::Store(e.into()),
        TransactionError::Abort(()) => EscrowError::Publish("transaction aborted".to_owned()),
    }
}
