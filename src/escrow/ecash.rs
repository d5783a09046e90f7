//! Orders that arrive paid: Shopstr's checkout sends the order and a Cashu token in one
//! message (`kinds/gamma.md`, "Shopstr checkout"). The token is redeemed into the escrow
//! wallet at once, and the order is then paid exactly as if its invoice had been: delivery
//! code, stock, held funds, notices.
//!
//! An intake moves through [`Step`]s, each recorded before the side effect it leads to:
//! - the token and its proofs (`Y`s) are recorded before the mint sees it, the proofs
//!   claimed for this intake alone, so a token can pay for one order only;
//! - the mint is asked (NUT-07) whether the token is still unspent before the swap, and the
//!   intake marked as swapping; so a "spent" answer to soko's first swap means someone
//!   else spent it;
//! - the swap at the mint is cdk's receive saga, which the wallet's recovery at start
//!   finishes; a retry after a stop that finds the token spent takes the wallet's completed
//!   receive of those proofs as soko's own. (cdk marks such a receive completed even when
//!   the mint had no outputs to give back, so a buyer spending the token elsewhere in the
//!   very moment soko stops mid-swap would get the order unpaid; the books' reconciliation
//!   then shows the wallet short by that much.)
//! - the order is recorded paid, and what goes back to the buyer (an overpayment, or the
//!   whole value when the order could no longer be taken) recorded in the same transaction;
//! - the send operation making that token is recorded before it is made
//!   ([`crate::wallet::recorded_token`]).
//!
//! A crash anywhere leaves an intake short of `Done`: the next pass of the payment watch
//! (or the same message handled again) carries it on from its step, once.

use std::collections::BTreeSet;
use std::str::FromStr;

use cdk::nuts::{CurrencyUnit, Token};
use cdk_common::wallet::{TransactionDirection, TransactionStatus};
use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::code::DeliveryCode;
use super::messages::{code_note, describe, status};
use super::notify::PaidOrder;
use super::records::{Dialect, LedgerEntry, OrderRecord};
use super::service::{
    code_scope, order_key, stored_line, take_units, tx_error, EscrowError, EscrowService,
};
use super::state::{transition, EscrowEvent, EscrowState};
use crate::failpoint;
use crate::market::Merchants;
use crate::money::Sats;
use crate::outbound::{Note, Scheme};
use crate::proto::nip15::Order;
use crate::proto::shopstr;
use crate::store::StoreError;

/// An order paid with a Cashu token, from before the token is redeemed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Intake {
    /// The token, sealed (ecash at rest is a secret); emptied once done.
    token: String,
    /// The NIP-15 form of the order, sealed (it holds the buyer's address); emptied once
    /// done.
    order: String,
    /// How the buyer talks to the merchant.
    scheme: Scheme,
    /// Unix seconds it was recorded.
    at: u64,
    /// How far it got.
    step: Step,
    /// The token's proofs (`Y`, hex), claimed for this intake: released with it.
    #[serde(default)]
    ys: Vec<String>,
}

/// How long a finished intake is kept: a copy of its message redelivered meanwhile is
/// recognised. After it, the order's own record and the mint (which knows the proofs spent)
/// refuse a replay.
const KEEP_DONE_SECS: u64 = 7 * 24 * 3600;

/// How far an intake got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
enum Step {
    /// Recorded; not yet handed to the mint.
    Received,
    /// Checked unspent at the mint and handed to it to swap; the swap may have gone through
    /// (a crash can stop it anywhere in there: the wallet's recovery at start finishes it).
    Swapping,
    /// Redeemed into the escrow wallet: `received` sats.
    Redeemed {
        /// What the swap gave the wallet (the token's value less the mint's input fee).
        received: Sats,
    },
    /// `back` sats go back to the buyer as a token: an overpayment of order `number`, or
    /// all of it when no order was made (`number` is `None`, `reason` says why).
    Returning {
        /// The order, when one was made.
        number: Option<u64>,
        /// What goes back.
        back: Sats,
        /// Why no order was made.
        reason: Option<String>,
        /// The wallet's send operation, recorded before the token is made.
        operation: Option<String>,
    },
    /// Answered for good.
    Done,
}

/// What became of an earlier swap of a token by the escrow wallet.
enum Earlier {
    /// It went through: this much was received.
    Received(Sats),
    /// Started and not settled.
    InProgress,
    /// There was none (or it failed): someone else spent the token.
    Nothing,
}

/// The `escrow/ecash` key of an order.
fn intake_key(merchant: &PublicKey, buyer: &PublicKey, order_id: &str) -> Vec<u8> {
    [
        merchant.to_bytes().as_slice(),
        &buyer.to_bytes(),
        order_id.as_bytes(),
    ]
    .concat()
}

/// The proofs' `Y`s (hash of each secret to the curve): what the mint marks spent, and
/// what the wallet's transactions list.
fn proof_ys(token: &Token) -> Result<BTreeSet<[u8; 33]>, String> {
    token
        .token_secrets()
        .into_iter()
        .map(|secret| {
            cdk::dhke::hash_to_curve(secret.as_bytes())
                .map(|y| y.to_bytes())
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Why a token is not taken before anything is done with it (the buyer keeps it).
fn precheck(token: &Token, own_mint: &cdk::mint_url::MintUrl, total: Sats) -> Result<Sats, String> {
    if token.unit().is_some_and(|unit| unit != CurrencyUnit::Sat) {
        return Err("the token is not in sat; soko's escrow takes sat ecash only".to_owned());
    }
    let mint = token
        .mint_url()
        .map_err(|_| "the token holds ecash of several mints; send one mint's".to_owned())?;
    if &mint != own_mint {
        return Err(format!(
            "the token is ecash of {mint}, a mint soko does not take; pay with ecash of {own_mint}"
        ));
    }
    let value = token
        .value()
        .map(Sats::from)
        .map_err(|e| format!("the token's amounts do not add up ({e})"))?;
    if value < total {
        return Err(format!(
            "short payment: the token holds {value} sat and the order costs {total} sat"
        ));
    }
    Ok(value)
}

impl EscrowService {
    /// An order paid with `token`, from `buyer` (the key soko answers) to `merchant`. Every
    /// answer goes to the buyer through the outbox; an error means nothing was recorded
    /// (the token was not taken) and the caller tells the buyer so. Once recorded, a
    /// failure is logged and the payment watch's next pass carries the intake on.
    pub async fn take_ecash_order(
        &self,
        merchant: PublicKey,
        buyer: PublicKey,
        scheme: Scheme,
        order: Order,
        token: &str,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let key = intake_key(&merchant, &buyer, &order.id);
        let _one = inner.ecash_lock.lock().await;
        if inner.ecash.get(&key)?.is_none() {
            let buyer_hex = buyer.to_hex();
            let refuse = |why: String, back: Option<&str>| {
                let mut content = format!("Order not accepted: {why}.");
                if let Some(token) = back {
                    content.push_str(&format!(
                        " Your payment was not taken; here it is back: {token}"
                    ));
                }
                Note::Tagged {
                    kind: 14,
                    tags: shopstr::info_tags(
                        &buyer_hex,
                        &order.id,
                        Some(shopstr::Status::Canceled),
                    ),
                    content,
                }
            };
            // The same buyer's order id names one order, whatever paid for it.
            if inner.index.get(&key)?.is_some() {
                let note = refuse("this order id is already taken".to_owned(), Some(token));
                return self.answer(&merchant, buyer, scheme, &note).await;
            }
            let parsed = match Token::from_str(token) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let note = refuse(format!("the payment is not a Cashu token ({e})"), None);
                    return self.answer(&merchant, buyer, scheme, &note).await;
                }
            };
            let total = match self.price(&merchant, &order)? {
                Ok((_, priced)) => priced.total_sats,
                Err(why) => {
                    let note = refuse(why, Some(token));
                    return self.answer(&merchant, buyer, scheme, &note).await;
                }
            };
            if let Err(why) = precheck(&parsed, &inner.wallet.mint_url, total) {
                let note = refuse(why, Some(token));
                return self.answer(&merchant, buyer, scheme, &note).await;
            }
            let ys = match proof_ys(&parsed) {
                Ok(ys) => ys,
                Err(e) => {
                    let note = refuse(format!("the token's proofs do not read ({e})"), None);
                    return self.answer(&merchant, buyer, scheme, &note).await;
                }
            };
            let intake = Intake {
                token: inner.vault.seal(token)?,
                order: inner.vault.seal(&serde_json::to_string(&order)?)?,
                scheme,
                at: inner.clock.now(),
                step: Step::Received,
                ys: ys.iter().map(cdk::util::hex::encode).collect(),
            };
            if !self.claim_proofs(&key, &intake, &ys)? {
                let note = refuse("this token already paid for another order".to_owned(), None);
                return self.answer(&merchant, buyer, scheme, &note).await;
            }
            failpoint::crash("ecash-recorded", inner.ecash.raw());
        }
        if let Err(e) = self.carry_on(&key).await {
            tracing::error!(error = %e, "an order paid with ecash stopped half-way; the next pass carries it on");
        }
        Ok(())
    }

    /// Records the intake and claims its token's proofs for it, in one transaction: false
    /// (nothing written) when another intake holds one of them.
    fn claim_proofs(
        &self,
        key: &[u8],
        intake: &Intake,
        ys: &BTreeSet<[u8; 33]>,
    ) -> Result<bool, EscrowError> {
        let inner = &self.inner;
        let encoded = inner.ecash.encode(intake)?;
        let owner = inner.ecash_proofs.encode(&key.to_vec())?;
        let claimed =
            (inner.ecash.raw(), inner.ecash_proofs.raw()).transaction(|(intakes, proofs)| {
                for y in ys {
                    if proofs.get(y)?.is_some_and(|held| held != owner) {
                        return Err(ConflictableTransactionError::Abort(()));
                    }
                }
                for y in ys {
                    proofs.insert(y.as_slice(), owner.clone())?;
                }
                intakes.insert(key, encoded.clone())?;
                Ok(())
            });
        match claimed {
            Ok(()) => Ok(true),
            Err(sled::transaction::TransactionError::Abort(())) => Ok(false),
            Err(e) => Err(tx_error(e)),
        }
    }

    /// Carries on every intake a stop or a failure left short of done (the payment watch's
    /// pass). Each is on its own: one that fails is logged and tried again next pass.
    pub(super) async fn resume_ecash(&self) -> Result<(), EscrowError> {
        let mut open = Vec::new();
        let now = self.inner.clock.now();
        for entry in self.inner.ecash.iter() {
            let (key, intake) = entry?;
            if intake.step != Step::Done {
                open.push(key.to_vec());
            } else if intake.at.saturating_add(KEEP_DONE_SECS) <= now {
                self.forget(&key, &intake)?;
            }
        }
        for key in open {
            let _one = self.inner.ecash_lock.lock().await;
            if let Err(e) = self.carry_on(&key).await {
                tracing::error!(error = %e, "an order paid with ecash could not be carried on; retrying next pass");
            }
        }
        Ok(())
    }

    /// Orders paid with ecash that soko keeps a record of: under way, or finished within
    /// the last week (a copy of their message is recognised).
    pub fn ecash_intakes(&self) -> usize {
        self.inner.ecash.len()
    }

    /// Drops a finished intake past its keeping time, with its claims on the proofs.
    fn forget(&self, key: &[u8], intake: &Intake) -> Result<(), EscrowError> {
        let ys: Vec<Vec<u8>> = intake
            .ys
            .iter()
            .filter_map(|y| cdk::util::hex::decode(y).ok())
            .collect();
        (self.inner.ecash.raw(), self.inner.ecash_proofs.raw())
            .transaction(|(intakes, proofs)| {
                for y in &ys {
                    proofs.remove(y.as_slice())?;
                }
                intakes.remove(key)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)
    }

    /// Moves the intake at `key` as far as it goes. Call with `ecash_lock` held.
    async fn carry_on(&self, key: &[u8]) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let merchant = PublicKey::from_slice(key.get(..32).unwrap_or_default())
            .map_err(|_| EscrowError::Books("malformed ecash intake key".to_owned()))?;
        let buyer = PublicKey::from_slice(key.get(32..64).unwrap_or_default())
            .map_err(|_| EscrowError::Books("malformed ecash intake key".to_owned()))?;
        // True once this call handed the token to the mint itself (not a run before).
        let mut fresh = false;
        loop {
            let Some(mut intake) = inner.ecash.get(key)? else {
                return Ok(());
            };
            let order: Order = match intake.step {
                Step::Done => return Ok(()),
                _ => serde_json::from_str(&inner.vault.unseal(&intake.order)?)?,
            };
            match intake.step.clone() {
                Step::Received => {
                    // Asked first, so that a token spent before soko saw it is told apart
                    // for sure from one a swap of soko's spent (see `redeem`).
                    let token = inner.vault.unseal(&intake.token)?;
                    if self.spent_at_mint(&token).await? {
                        let note = self.refusal(buyer, &order, "the token is already spent");
                        return self.finish(key, intake, &merchant, buyer, &note).await;
                    }
                    intake.step = Step::Swapping;
                    inner.ecash.insert(key, &intake)?;
                    fresh = true;
                }
                Step::Swapping => {
                    let token = inner.vault.unseal(&intake.token)?;
                    intake.step = match self.redeem(&token, fresh).await? {
                        Ok(received) => Step::Redeemed { received },
                        Err(why) => {
                            let note = self.refusal(buyer, &order, &why);
                            return self.finish(key, intake, &merchant, buyer, &note).await;
                        }
                    };
                    inner.ecash.insert(key, &intake)?;
                    // The crash test's point: redeemed, and no order recorded yet.
                    failpoint::crash("ecash-redeemed", inner.ecash.raw());
                }
                Step::Redeemed { received } => {
                    self.record_order(key, intake, &merchant, buyer, &order, received)
                        .await?;
                }
                Step::Returning {
                    number,
                    back,
                    reason,
                    operation,
                } => {
                    let token = match operation {
                        Some(op) => match self.recorded_token(&op).await? {
                            Some(token) => token,
                            None => self.make_token(key, &mut intake, back).await?,
                        },
                        None => self.make_token(key, &mut intake, back).await?,
                    };
                    let content = match (number, reason) {
                        (Some(number), _) => format!(
                            "Order #{number}: you paid {back} sat more than its total; here they are back: {token}"
                        ),
                        (None, reason) => format!(
                            "Order not accepted: {}. Your {back} sat come back as this token: {token}",
                            reason.unwrap_or_default()
                        ),
                    };
                    let tags = match number {
                        Some(_) => shopstr::change_tags(&buyer.to_hex(), &order.id, &token),
                        None => {
                            let mut tags = shopstr::info_tags(
                                &buyer.to_hex(),
                                &order.id,
                                Some(shopstr::Status::Canceled),
                            );
                            tags.push(vec!["payment".into(), "ecash".into(), token.clone()]);
                            tags
                        }
                    };
                    let note = Note::Tagged {
                        kind: 14,
                        tags,
                        content,
                    };
                    return self.finish(key, intake, &merchant, buyer, &note).await;
                }
                Step::Done => return Ok(()),
            }
        }
    }

    /// A refusal of the order after its token was recorded.
    fn refusal(&self, buyer: PublicKey, order: &Order, why: &str) -> Note {
        Note::Tagged {
            kind: 14,
            tags: shopstr::info_tags(&buyer.to_hex(), &order.id, Some(shopstr::Status::Canceled)),
            content: format!("Order not accepted: {why}."),
        }
    }

    /// True when the mint says any of the token's proofs is spent or being spent (NUT-07).
    async fn spent_at_mint(&self, token: &str) -> Result<bool, EscrowError> {
        let parsed = Token::from_str(token)
            .map_err(|e| EscrowError::Books(format!("a recorded token does not read: {e}")))?;
        let ys = proof_ys(&parsed)
            .map_err(EscrowError::Books)?
            .iter()
            .map(|y| cdk::nuts::PublicKey::from_slice(y))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        let states = self
            .inner
            .wallet
            .mint_connector()
            .post_check_state(cdk::nuts::CheckStateRequest { ys })
            .await?;
        Ok(states
            .states
            .iter()
            .any(|s| s.state != cdk::nuts::State::Unspent))
    }

    /// Swaps `token` into the escrow wallet: the sats received, or why it cannot be taken.
    /// `fresh` when this is the first swap of it and the mint had it unspent just before: a
    /// "spent" answer then means someone else spent it meanwhile. On a later try it may be
    /// a swap of soko's own that a stop cut short, which the wallet's recovery at start
    /// finished: the wallet's transactions tell. An error is a failure that may have left
    /// the swap half-way (the mint's answer was lost): the intake is carried on later.
    async fn redeem(&self, token: &str, fresh: bool) -> Result<Result<Sats, String>, EscrowError> {
        let wallet = &self.inner.wallet;
        let received = wallet.receive(token, Default::default()).await;
        self.inner
            .metrics
            .wallet_op("ecash_receive", received.is_ok());
        match received {
            Ok(amount) => Ok(Ok(Sats::from(amount))),
            Err(cdk::Error::TokenAlreadySpent) if fresh => {
                Ok(Err("the token is already spent".to_owned()))
            }
            Err(cdk::Error::TokenAlreadySpent) => match self.received_before(token).await? {
                Earlier::Received(received) => Ok(Ok(received)),
                Earlier::Nothing => Ok(Err("the token is already spent".to_owned())),
                // Spent by a swap of ours whose answer was lost: the wallet's recovery at the
                // next start finishes it; calling the token spent now would keep the money
                // and drop the order.
                Earlier::InProgress => Err(EscrowError::Books(
                    "the token's swap is still in progress; the wallet's recovery at the next start settles it".to_owned(),
                )),
            },
            Err(e)
                if e.is_definitive_failure()
                    || matches!(e, cdk::Error::DHKE(cdk::dhke::Error::TokenNotVerified)) =>
            {
                Ok(Err(format!("the mint does not take the token ({e})")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What became of an earlier swap of `token` by the escrow wallet (one cut short by a
    /// crash is finished by the wallet's recovery at start).
    async fn received_before(&self, token: &str) -> Result<Earlier, EscrowError> {
        let parsed = Token::from_str(token)
            .map_err(|e| EscrowError::Books(format!("a recorded token does not read: {e}")))?;
        let ys = proof_ys(&parsed).map_err(EscrowError::Books)?;
        let incoming = self
            .inner
            .wallet
            .list_transactions(Some(TransactionDirection::Incoming))
            .await?;
        let ours = incoming
            .into_iter()
            .filter(|t| t.ys.iter().map(|y| y.to_bytes()).collect::<BTreeSet<_>>() == ys);
        let mut earlier = Earlier::Nothing;
        for t in ours {
            match t.status {
                TransactionStatus::Completed => return Ok(Earlier::Received(Sats::from(t.amount))),
                TransactionStatus::Pending => earlier = Earlier::InProgress,
                TransactionStatus::Failed => {}
            }
        }
        Ok(earlier)
    }

    /// Under the escrow lock: the order priced again against the stock now, then recorded
    /// paid (code, stock, notices) with what goes back to the buyer, in one transaction; or,
    /// when it can no longer be taken, everything received set to go back.
    async fn record_order(
        &self,
        key: &[u8],
        mut intake: Intake,
        merchant: &PublicKey,
        buyer: PublicKey,
        order: &Order,
        received: Sats,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let priced = match self.price(merchant, order)? {
            Ok((stall_id, priced)) if priced.total_sats <= received => (stall_id, priced),
            Ok((_, priced)) => {
                let why = format!(
                    "short payment: the token gave {received} sat after the mint's fee and the order costs {} sat",
                    priced.total_sats
                );
                return self.set_returning(key, intake, None, received, Some(why));
            }
            Err(why) => return self.set_returning(key, intake, None, received, Some(why)),
        };
        let (stall_id, priced) = priced;
        let number = self.next_number(merchant)?;
        let now = inner.clock.now();
        let placed = OrderRecord {
            number,
            buyer_order_id: order.id.clone(),
            buyer,
            scheme: intake.scheme,
            stall_id,
            lines: priced.lines.iter().map(stored_line).collect(),
            total: priced.total_sats,
            quote_id: String::new(),
            invoice: String::new(),
            expires_at: now,
            state: EscrowState::AwaitingPayment,
            code: None,
            created_at: now,
            shipping_sealed: self.seal_shipping(order)?,
            paid_at: None,
            cancel: None,
            refund: None,
            dialect: Dialect::Shopstr,
            issue: None,
        };
        let code = DeliveryCode::generate();
        let mut paid = placed.clone();
        paid.state = transition(placed.state, EscrowEvent::PaymentReceived)?;
        paid.paid_at = Some(now);
        paid.code = Some(inner.codes.store(&code_scope(merchant, number), &code));
        let back = received
            .checked_sub(paid.total)
            .ok_or_else(|| EscrowError::Books("received less than the total".to_owned()))?;
        intake.step = if back == Sats::ZERO {
            Step::Done
        } else {
            Step::Returning {
                number: Some(number),
                back,
                reason: None,
                operation: None,
            }
        };
        if intake.step == Step::Done {
            intake.token.clear();
            intake.order.clear();
        }
        let mut dms = vec![
            self.seal_to_buyer(
                merchant,
                &paid,
                status(&paid, &describe(paid.state, number)),
            )
            .await?,
            self.seal_to_buyer(merchant, &paid, code_note(&paid, &code))
                .await?,
        ];
        dms.extend(
            inner
                .listener
                .notices(&PaidOrder::new(*merchant, &paid, self))
                .await?,
        );
        let order_key = order_key(merchant, number);
        let index_key = intake_key(merchant, &buyer, &order.id);
        let encoded = inner.orders.encode(&paid)?;
        let number_bytes = inner.index.encode(&number)?;
        let ledger_key = [b"ecash:".as_slice(), &order_key].concat();
        let ledger = inner.ledger.encode(&LedgerEntry {
            amount: paid.total,
            done: true,
        })?;
        let intake_bytes = inner.ecash.encode(&intake)?;
        let sold: Vec<(Vec<u8>, u64)> = paid
            .lines
            .iter()
            .map(|l| (Merchants::product_key(merchant, &l.product_id), l.quantity))
            .collect();
        let queued = dms
            .iter()
            .map(|dm| inner.outbox.stage(dm))
            .collect::<Result<Vec<_>, StoreError>>()?;
        (
            inner.orders.raw(),
            inner.index.raw(),
            inner.ledger.raw(),
            inner.merchants.listings_tree(),
            inner.ecash.raw(),
            inner.outbox.raw(),
        )
            .transaction(|(orders, index, ledger_tree, listings, intakes, outbox)| {
                for (listing, units) in &sold {
                    take_units(listings, listing, *units)?;
                }
                orders.insert(order_key.as_slice(), encoded.clone())?;
                index.insert(index_key.as_slice(), number_bytes.clone())?;
                ledger_tree.insert(ledger_key.as_slice(), ledger.clone())?;
                intakes.insert(key, intake_bytes.clone())?;
                for staged in &queued {
                    staged.insert(outbox)?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        failpoint::crash("ecash-ordered", inner.ecash.raw());
        inner.metrics.order_created();
        inner.metrics.order_paid();
        tracing::info!(
            order = number,
            sats = paid.total.0,
            back = back.0,
            "order paid with ecash; funds held in escrow"
        );
        for dm in &dms {
            inner.outbox.deliver(dm).await?;
        }
        self.republish_stock(merchant, &paid).await
    }

    fn set_returning(
        &self,
        key: &[u8],
        mut intake: Intake,
        number: Option<u64>,
        back: Sats,
        reason: Option<String>,
    ) -> Result<(), EscrowError> {
        intake.step = Step::Returning {
            number,
            back,
            reason,
            operation: None,
        };
        Ok(self.inner.ecash.insert(key, &intake)?)
    }

    /// A token of `back` sats out of the escrow wallet, its send operation recorded in the
    /// intake before the token is made.
    async fn make_token(
        &self,
        key: &[u8],
        intake: &mut Intake,
        back: Sats,
    ) -> Result<String, EscrowError> {
        let prepared = self.prepare_token(back).await?;
        if let Step::Returning { operation, .. } = &mut intake.step {
            *operation = Some(prepared.operation.clone());
        }
        if let Err(e) = self.inner.ecash.insert(key, intake) {
            prepared.cancel().await;
            return Err(e.into());
        }
        failpoint::crash("ecash-change-prepared", self.inner.ecash.raw());
        prepared.confirm().await
    }

    /// The intake is done: its last answer queued with it, in one transaction, then sent.
    async fn finish(
        &self,
        key: &[u8],
        mut intake: Intake,
        merchant: &PublicKey,
        buyer: PublicKey,
        note: &Note,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let dm = inner
            .publisher
            .seal_note(merchant, buyer, intake.scheme, note)
            .await?;
        intake.step = Step::Done;
        intake.token.clear();
        intake.order.clear();
        let encoded = inner.ecash.encode(&intake)?;
        let staged = inner.outbox.stage(&dm)?;
        (inner.ecash.raw(), inner.outbox.raw())
            .transaction(|(intakes, outbox)| {
                intakes.insert(key, encoded.clone())?;
                staged.insert(outbox)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        inner.outbox.deliver(&dm).await?;
        Ok(())
    }

    /// Sends `note` from `merchant` to `buyer`, durably: for answers that change nothing.
    pub async fn answer(
        &self,
        merchant: &PublicKey,
        buyer: PublicKey,
        scheme: Scheme,
        note: &Note,
    ) -> Result<(), EscrowError> {
        let dm = self
            .inner
            .publisher
            .seal_note(merchant, buyer, scheme, note)
            .await?;
        Ok(self.inner.outbox.send(&dm).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_back_from_their_stored_form() {
        let steps = [
            Step::Received,
            Step::Swapping,
            Step::Redeemed {
                received: Sats(700),
            },
            Step::Returning {
                number: Some(3),
                back: Sats(90),
                reason: None,
                operation: Some("op".to_owned()),
            },
            Step::Done,
        ];
        for step in steps {
            let json = serde_json::to_string(&step).unwrap_or_default();
            assert_eq!(
                serde_json::from_str::<Step>(&json).ok(),
                Some(step),
                "{json}"
            );
        }
    }
}
