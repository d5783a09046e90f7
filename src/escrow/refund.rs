//! Refunds. A paid order may be refunded when the buyer asked to cancel before delivery, when
//! the merchant's delivery window has passed, or when it is disputed. The money goes to the
//! buyer's Lightning address if the cancel request gave one, as a Cashu token DM otherwise
//! (or when the Lightning payment fails).
//!
//! The order first moves to `Refunding` with its [`RefundPlan`] and a pending ledger entry;
//! from then on every step records how far it got before the next side effect, and `tick`
//! picks up a refund a crash or an unclear Lightning payment left half-way. The plan's states
//! and the moves between them are [`super::saga`]'s; every recorded step asks its transition
//! function.

use cdk::nuts::{MeltQuoteState, PaymentMethod};
use nostr_sdk::PublicKey;

use super::books::Melt;
use super::messages::{describe, status};
use super::refusal::EscrowRefusal;
use super::saga::{check_plan_move, refund_transition, RefundEvent, RefundState};
use super::service::{
    merchant_of, order_key, CancelRequest, Change, EscrowError, EscrowService, LedgerEntry,
    OrderRecord, RefundPlan,
};
use super::state::{transition, EscrowEvent, EscrowState};
use crate::money::Sats;
use crate::store::StoreError;

/// Where the unused part of Lightning fee reserves on refunds is booked (soko's own
/// account in `balances`, next to the merchants').
pub const FEES_ACCOUNT: &[u8] = b"fees";

/// Why an order may be refunded now, or why not (pure, for the tests).
pub fn refundable(
    record: &OrderRecord,
    delivery_window_secs: u64,
    now: u64,
) -> Result<(), EscrowRefusal> {
    let number = record.number;
    if record.issue.as_ref().is_some_and(|i| i.outcome.is_none()) {
        return Err(EscrowRefusal::IssueOpen(number));
    }
    match record.state {
        EscrowState::Disputed => Ok(()),
        EscrowState::Paid if record.cancel.is_some() => Ok(()),
        EscrowState::Paid => {
            let due = record
                .paid_at
                .unwrap_or(record.created_at)
                .saturating_add(delivery_window_secs);
            if now >= due {
                Ok(())
            } else {
                Err(EscrowRefusal::InDeliveryWindow { number, due })
            }
        }
        state => Err(EscrowRefusal::NotRefundable { number, state }),
    }
}

impl EscrowService {
    /// The buyer asks to cancel their order `order_id` with `merchant`, before delivery.
    /// Returns soko's number of the order, which the operator or merchant can now refund.
    pub async fn request_cancel(
        &self,
        merchant: PublicKey,
        buyer: PublicKey,
        order_id: &str,
        refund_to: Option<String>,
    ) -> Result<u64, EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let index_key = [
            merchant.to_bytes().as_slice(),
            &buyer.to_bytes(),
            order_id.as_bytes(),
        ]
        .concat();
        let no_such_order = || EscrowRefusal::NoSuchBuyerOrder(order_id.to_owned());
        let Some(number) = inner.index.get(&index_key)? else {
            return Err(no_such_order().into());
        };
        let key = order_key(&merchant, number);
        let Some(mut record) = inner.orders.get(&key)? else {
            return Err(no_such_order().into());
        };
        match record.state {
            EscrowState::Paid | EscrowState::Disputed => {}
            EscrowState::AwaitingPayment => return Err(EscrowRefusal::NotPaidYet(number).into()),
            state => return Err(EscrowRefusal::NotCancellable { number, state }.into()),
        }
        // Only the order's own buyer gets this far: a stranger learns nothing about how soko
        // reads addresses, and the address is judged before anything is recorded for it.
        if let Some(destination) = &refund_to {
            if let Err(e) =
                crate::lnurl::lnurlp_url(destination).and_then(|url| inner.lnurl.check(&url))
            {
                return Err(EscrowRefusal::RefundAddress(e.to_string()).into());
            }
        }
        record.cancel = Some(CancelRequest {
            at: inner.clock.now(),
            refund_to,
        });
        inner.orders.insert(&key, &record)?;
        tracing::info!(order = number, "the buyer asked to cancel");
        Ok(number)
    }

    /// Refunds order `number` if [`refundable`] allows it, and drives the refund as far as it
    /// goes now (a Lightning payment may stay pending; `tick` finishes it). Returns the
    /// order's total.
    pub async fn refund(&self, merchant: PublicKey, number: u64) -> Result<Sats, EscrowError> {
        let key = order_key(&merchant, number);
        {
            let inner = &self.inner;
            let _guard = inner.lock.lock().await;
            let Some(record) = inner.orders.get(&key)? else {
                return Err(EscrowRefusal::NoSuchOrder(number).into());
            };
            if record.state != EscrowState::Refunding {
                refundable(&record, inner.delivery_window_secs, inner.clock.now())?;
                let next = transition(record.state, EscrowEvent::RefundStarted)?;
                let mut refunding = record.clone();
                refunding.state = next;
                refunding.refund = Some(
                    match record.cancel.as_ref().and_then(|c| c.refund_to.clone()) {
                        Some(destination) => RefundPlan::Lightning {
                            destination,
                            quote: None,
                            amount: record.total,
                        },
                        None => RefundPlan::Token {
                            operation: None,
                            note: None,
                        },
                    },
                );
                let change = Change {
                    ledger: Some((
                        refund_ledger_key(&key),
                        LedgerEntry {
                            amount: record.total,
                            done: false,
                        },
                    )),
                    ..Change::default()
                };
                self.commit(&key, &refunding, change, &[]).await?;
                tracing::info!(order = number, "refund started");
            }
        }
        self.advance_refund(&key).await?;
        let total = self.order(&merchant, number)?.map(|r| r.total);
        Ok(total.unwrap_or(Sats::ZERO))
    }

    /// Moves every refund in progress on (after a crash, or a pending Lightning payment).
    pub(super) async fn resume_refunds(&self) -> Result<(), EscrowError> {
        let keys: Vec<sled::IVec> = self
            .inner
            .refunding
            .raw()
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)?;
        for key in keys {
            if let Err(e) = self.advance_refund(&key).await {
                tracing::warn!(error = %e, "a refund could not move on yet");
            }
        }
        Ok(())
    }

    /// One refund, from wherever its plan says it is to `Refunded` or to a wait for the
    /// mint. Mint and Lightning calls run outside the escrow lock (orders keep flowing);
    /// each recorded step takes it and checks the order did not move meanwhile.
    pub(super) async fn advance_refund(&self, key: &[u8]) -> Result<(), EscrowError> {
        let inner = &self.inner;
        // One refund moves at a time (they are rare): the command and `tick` never both
        // make a token for the same order, and the command sees the outcome of either.
        let _refunds = inner.refunds.lock().await;
        loop {
            let Some(record) = inner.orders.get(key)? else {
                return Ok(());
            };
            let (EscrowState::Refunding, Some(plan)) = (record.state, record.refund.clone()) else {
                return Ok(());
            };
            match plan {
                RefundPlan::Token { operation, note } => {
                    let recorded = match &operation {
                        Some(operation) => self.recorded_token(operation).await?,
                        None => None,
                    };
                    let token = match recorded {
                        Some(token) => token,
                        None => {
                            let prepared = self
                                .prepare_locked_token(record.held(), record.buyer_lock())
                                .await?;
                            let recorded = self
                                .record_plan(
                                    key,
                                    &plan_of(&record),
                                    RefundEvent::TokenPrepared,
                                    RefundPlan::Token {
                                        operation: Some(prepared.operation.clone()),
                                        note: note.clone(),
                                    },
                                )
                                .await;
                            if let Err(e) = recorded {
                                // Not recorded, so never to be made: the proofs go back now
                                // rather than at the next start.
                                prepared.cancel().await;
                                return Err(e);
                            }
                            prepared.confirm().await?
                        }
                    };
                    let text = match record.buyer_lock() {
                        Some(key) => format!(
                            "Settlement of the issue on order #{} ({}): {} sat as Cashu ecash locked to your key {}; redeem it in a Cashu wallet that signs with that key (NUT-11):\n{token}",
                            record.number,
                            super::messages::shown_id(&record),
                            record.held().0,
                            key.to_hex()
                        ),
                        None => format!(
                            "{}Refund for order #{} ({}): {} sat as Cashu ecash. Redeem it in any Cashu wallet:\n{token}",
                            note.map(|n| format!("{n}\n")).unwrap_or_default(),
                            record.number,
                            super::messages::shown_id(&record),
                            record.total.0
                        ),
                    };
                    return self
                        .finish_refund(key, &record, RefundEvent::TokenSent, text, Sats::ZERO)
                        .await;
                }
                RefundPlan::Lightning {
                    destination,
                    quote: None,
                    ..
                } => {
                    let (event, next) = match self.refund_quote(&destination, record.total).await {
                        Ok((quote, amount)) => (
                            RefundEvent::Quoted,
                            RefundPlan::Lightning {
                                destination,
                                quote: Some(quote),
                                amount,
                            },
                        ),
                        Err(why) => (RefundEvent::LightningFailed, fallback(&why)),
                    };
                    self.record_plan(key, &plan_of(&record), event, next)
                        .await?;
                }
                RefundPlan::Lightning {
                    destination,
                    quote: Some(quote),
                    amount,
                } => {
                    let state = self.melt_state(&quote).await?;
                    let fee = match state {
                        MeltQuoteState::Paid => None,
                        MeltQuoteState::Unpaid => match self.melt_booking_swap_fee(&quote).await {
                            Ok(Melt::Paid(finalized)) => Some(Sats::from(finalized.fee_paid())),
                            Ok(Melt::Pending) => {
                                tracing::warn!(order = record.number, "refund payment not settled by the mint yet; settling from its later answer");
                                return Ok(());
                            }
                            Err(e) => {
                                let now = self.melt_state(&quote).await?;
                                if matches!(now, MeltQuoteState::Unpaid | MeltQuoteState::Failed) {
                                    self.record_plan(
                                        key,
                                        &plan_of(&record),
                                        RefundEvent::LightningFailed,
                                        fallback(&e.to_string()),
                                    )
                                    .await?;
                                    continue;
                                }
                                tracing::warn!(order = record.number, error = %e, "refund payment unclear; settling from the mint later");
                                return Ok(());
                            }
                        },
                        MeltQuoteState::Failed => {
                            self.record_plan(
                                key,
                                &plan_of(&record),
                                RefundEvent::LightningFailed,
                                fallback("the Lightning payment failed"),
                            )
                            .await?;
                            continue;
                        }
                        // Pending or unknown: the mint decides later.
                        _ => return Ok(()),
                    };
                    // Paid before a crash: the fee from the wallet's record of the payment,
                    // or, without one, the whole reserve counts as spent.
                    let fee = match fee {
                        Some(fee) => Some(fee),
                        None => self.paid_melt_fee(&quote).await,
                    };
                    let spent_fee = fee
                        .unwrap_or_else(|| record.total.checked_sub(amount).unwrap_or(Sats::ZERO));
                    let text = format!(
                        "Refund for order #{} ({}): {} sat paid to {destination} over Lightning (Lightning fee {} sat).",
                        record.number, super::messages::shown_id(&record), amount.0, spent_fee.0
                    );
                    let unused = record
                        .total
                        .checked_sub(amount)
                        .and_then(|rest| rest.checked_sub(spent_fee))
                        .unwrap_or(Sats::ZERO);
                    return self
                        .finish_refund(key, &record, RefundEvent::LightningPaid, text, unused)
                        .await;
                }
            }
        }
    }

    /// An invoice from the buyer's Lightning address for as much of `total` as fits with the
    /// mint's fee reserve, and its melt quote: (quote id, amount the invoice pays).
    async fn refund_quote(&self, destination: &str, total: Sats) -> Result<(String, Sats), String> {
        let mut amount = total;
        for _ in 0..2 {
            let invoice = self
                .inner
                .lnurl
                .invoice_for(destination, amount)
                .await
                .map_err(|e| e.to_string())?;
            let quote = self
                .inner
                .wallet
                .melt_quote(PaymentMethod::BOLT11, invoice, None, None)
                .await
                .map_err(|e| format!("the mint cannot pay that invoice: {e}"))?;
            let reserve = Sats::from(quote.fee_reserve);
            if amount
                .checked_add(reserve)
                .is_ok_and(|debit| debit <= total)
            {
                return Ok((quote.id, amount));
            }
            amount = match total.checked_sub(reserve) {
                Some(smaller) if smaller > Sats::ZERO => smaller,
                _ => break,
            };
        }
        Err(format!("{total} does not cover the Lightning fee reserve"))
    }

    /// Replaces the plan of a refund still at `expected` by `next`, the move `event` makes
    /// (an illegal move is an error), under the lock.
    async fn record_plan(
        &self,
        key: &[u8],
        expected: &Option<RefundPlan>,
        event: RefundEvent,
        next: RefundPlan,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let Some(mut record) = inner.orders.get(key)? else {
            return Err(EscrowError::Books("a refunding order vanished".to_owned()));
        };
        if record.state != EscrowState::Refunding || &record.refund != expected {
            return Err(EscrowError::Books(
                "a refund moved on elsewhere; leaving it".to_owned(),
            ));
        }
        if let Some(from) = expected {
            check_plan_move(from, event, &next)?;
        }
        record.refund = Some(next);
        inner.orders.insert(key, &record)?;
        Ok(())
    }

    /// `Refunded`, the ledger entry done, `unused` fee reserve to soko's fees account and the
    /// buyer's DMs, in one transaction.
    async fn finish_refund(
        &self,
        key: &[u8],
        seen: &OrderRecord,
        event: RefundEvent,
        text: String,
        unused: Sats,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let Some(record) = inner.orders.get(key)? else {
            return Ok(());
        };
        // Only refund steps change a refunding order, and they run one at a time.
        if record.state != EscrowState::Refunding {
            tracing::warn!(order = seen.number, state = ?record.state, "a refund found its order moved on");
            return Ok(());
        }
        // The stored plan, not `seen`'s: a token's send was recorded after `seen` was read.
        let from = record
            .refund
            .as_ref()
            .map(RefundState::of)
            .ok_or_else(|| EscrowError::Books("a refunding order without a plan".to_owned()))?;
        refund_transition(from, event)?;
        let merchant = merchant_of(key)?;
        let mut refunded = record.clone();
        refunded.state = transition(record.state, EscrowEvent::RefundSettled)?;
        let status_dm = self
            .seal_to_buyer(
                &merchant,
                &record,
                status(&refunded, &describe(refunded.state, record.number)),
            )
            .await?;
        let money_dm = self
            .seal_to_buyer(&merchant, &record, super::messages::text(&record, text))
            .await?;
        let fees = inner
            .balances
            .get(FEES_ACCOUNT)?
            .unwrap_or(Sats::ZERO)
            .checked_add(unused)
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        let change = Change {
            ledger: Some((
                refund_ledger_key(key),
                LedgerEntry {
                    amount: record.held(),
                    done: true,
                },
            )),
            balance: (unused > Sats::ZERO).then(|| (FEES_ACCOUNT.to_vec(), fees)),
            ..Change::default()
        };
        self.commit(key, &refunded, change, &[status_dm, money_dm])
            .await?;
        tracing::info!(
            order = record.number,
            sats = record.total.0,
            "order refunded to the buyer"
        );
        Ok(())
    }
}

fn plan_of(record: &OrderRecord) -> Option<RefundPlan> {
    record.refund.clone()
}

/// The plan once the buyer's Lightning address failed: `why` goes to the log only, since it
/// may describe what a service the buyer named answered, or what the mint said.
fn fallback(why: &str) -> RefundPlan {
    tracing::warn!(reason = %why, "a refund goes out as ecash: the Lightning address could not be paid");
    RefundPlan::Token {
        operation: None,
        note: Some(
            "Your Lightning address could not be paid, so here is your refund as ecash instead."
                .to_owned(),
        ),
    }
}

pub(super) fn refund_ledger_key(order_key: &[u8]) -> Vec<u8> {
    [b"refund:".as_slice(), order_key].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Scheme;

    fn order(state: EscrowState, paid_at: u64, cancel: bool) -> OrderRecord {
        OrderRecord {
            number: 7,
            buyer_order_id: "o".into(),
            buyer: nostr_sdk::Keys::generate().public_key(),
            scheme: Scheme::Nip04,
            stall_id: "s".into(),
            lines: Vec::new(),
            total: Sats(100),
            quote_id: String::new(),
            invoice: String::new(),
            expires_at: 0,
            state,
            code: None,
            created_at: 0,
            paid_at: Some(paid_at),
            cancel: cancel.then_some(CancelRequest {
                at: paid_at,
                refund_to: None,
            }),
            refund: None,
            dialect: Default::default(),
            shipping_sealed: None,
            issue: None,
            shrunk_at: None,
        }
    }

    #[test]
    fn a_paid_order_is_refundable_on_cancel_or_after_its_window() {
        let window = 100;
        assert!(refundable(&order(EscrowState::Paid, 1000, false), window, 1099).is_err());
        assert!(refundable(&order(EscrowState::Paid, 1000, false), window, 1100).is_ok());
        assert!(refundable(&order(EscrowState::Paid, 1000, true), window, 1001).is_ok());
        assert!(refundable(&order(EscrowState::Disputed, 1000, false), window, 1001).is_ok());
    }

    #[test]
    fn an_order_with_an_open_issue_is_settled_only_by_its_resolution() {
        let mut disputed = order(EscrowState::Disputed, 1000, false);
        disputed.issue = Some(crate::escrow::records::OrderIssue {
            by: crate::escrow::records::OrderSide::Buyer,
            at: 1000,
            answer_by: 1100,
            buyer_key: None,
            merchant_key: None,
            evidence: Vec::new(),
            outcome: None,
            merchant_part: Sats::ZERO,
        });
        assert!(matches!(
            refundable(&disputed, 100, 2000),
            Err(EscrowRefusal::IssueOpen(_))
        ));
        if let Some(issue) = disputed.issue.as_mut() {
            issue.outcome = Some(crate::escrow::records::IssueOutcome::BuyerWins);
        }
        assert!(refundable(&disputed, 100, 2000).is_ok());
    }

    #[test]
    fn nothing_else_is_refundable() {
        for state in [
            EscrowState::AwaitingPayment,
            EscrowState::Delivered,
            EscrowState::PaidOut,
            EscrowState::Expired,
            EscrowState::Refunding,
            EscrowState::Refunded,
        ] {
            assert!(
                refundable(&order(state, 0, true), 0, u64::MAX).is_err(),
                "{state:?}"
            );
        }
    }
}
