//! Recording an order paid with ecash, and the answers that finish an intake (see the
//! module above).

use nostr_sdk::PublicKey;
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::{intake_key, Intake, Step};
use crate::escrow::code::DeliveryCode;
use crate::escrow::messages::{code_note, describe, status};
use crate::escrow::notify::PaidOrder;
use crate::escrow::records::{Dialect, LedgerEntry, OrderRecord};
use crate::escrow::service::{
    code_scope, order_key, stored_line, take_units, tx_error, EscrowError, EscrowService,
};
use crate::escrow::state::{transition, EscrowEvent, EscrowState};
use crate::failpoint;
use crate::market::Merchants;
use crate::money::Sats;
use crate::outbound::{Note, Scheme};
use crate::proto::nip15::Order;
use crate::proto::shopstr;
use crate::store::StoreError;

use super::Melted;

/// The buyer told what a token of another mint cost, with its unused fee reserve back.
fn melt_note(
    buyer: &PublicKey,
    number: u64,
    order_id: &str,
    melted: &Melted,
    change: Option<&str>,
) -> Note {
    let told = melted.told();
    match change {
        Some(token) => Note::Tagged {
            kind: 14,
            tags: shopstr::change_tags(&buyer.to_hex(), order_id, token),
            content: format!(
                "Order #{number}: {told}. The {} of fee reserve it did not use come back as this token of that mint: {token}",
                melted.change
            ),
        },
        None => Note::Tagged {
            kind: 14,
            tags: shopstr::info_tags(&buyer.to_hex(), order_id, None),
            content: format!("Order #{number}: {told}."),
        },
    }
}

impl EscrowService {
    /// Under the escrow lock: the order priced again against the stock now, then recorded
    /// paid (code, stock, notices) with what goes back to the buyer, in one transaction; or,
    /// when it can no longer be taken, everything received set to go back.
    pub(super) async fn record_order(
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
                    "short payment: the token gave {received} after the mint's fee and the order costs {}",
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
            shrunk_at: None,
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
        // A token of another mint: its fees told with the order, and the fee reserve that
        // mint did not use handed back with them.
        let melt_note = match &intake.melted {
            Some(melted) => {
                let change = match &melted.change_token {
                    Some(sealed) => Some(inner.vault.unseal(sealed)?),
                    None => None,
                };
                Some(melt_note(
                    &buyer,
                    number,
                    &order.id,
                    melted,
                    change.as_deref(),
                ))
            }
            None => None,
        };
        if intake.step == Step::Done {
            intake.token.clear();
            intake.order.clear();
            if let Some(melted) = intake.melted.as_mut() {
                melted.change_token = None;
            }
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
        if let Some(note) = &melt_note {
            dms.push(
                inner
                    .publisher
                    .seal_note(merchant, buyer, intake.scheme, note)
                    .await?,
            );
        }
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
    pub(super) async fn make_token(
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
    pub(super) async fn finish(
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
        if let Some(melted) = intake.melted.as_mut() {
            melted.change_token = None;
        }
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
