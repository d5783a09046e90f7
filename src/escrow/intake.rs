//! Taking an order: priced against the listings, capped (unpaid orders per buyer, in all,
//! and held stock), an invoice asked from the mint, then numbered and recorded under the
//! escrow lock.

use cdk::nuts::PaymentMethod;
use nostr_sdk::PublicKey;

use super::messages::{describe, payment_request, refusal, status};
use super::records::{Dialect, OrderRecord};
use super::service::{
    clip, held_cap, order_key, reserved_key, stored_line, EscrowError, EscrowService,
};
use super::state::EscrowState;
use crate::market::pricing::{self, Line};
use crate::money::Sats;
use crate::outbound::{Note, Scheme};
use crate::proto::nip15::{clip_echo, Order};
use crate::store::StoreError;

impl EscrowService {
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
            .inspect(|_| inner.metrics.wallet_op("mint_quote", true))
            .inspect_err(|_| inner.metrics.wallet_op("mint_quote", false))
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
        let number = self.next_number(&merchant)?;
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
            issue: None,
            shrunk_at: None,
        };
        let key = order_key(&merchant, number);
        let encoded = inner.orders.encode(&record)?;
        let number_bytes = inner.index.encode(&number)?;
        let holds = self.reservation_changes(&merchant, &priced.lines, true)?;
        let expiry = inner.awaiting.encode(&record.expires_at)?;
        // Key by key, not in a sled transaction (one cost about as much as a flush and
        // stopped every other write): the record goes last, and what a crash can leave
        // before it (a number for the buyer's order id, an expiry in `awaiting`, held stock)
        // is set right when the service opens (see `recount`). A payment request goes out
        // only after the store is flushed, so no invoice is ever sent for such an order.
        let store_error = |e: sled::Error| EscrowError::Store(e.into());
        inner
            .index
            .raw()
            .insert(index_key.as_slice(), number_bytes)
            .map_err(store_error)?;
        let newly_awaiting = inner
            .awaiting
            .raw()
            .insert(key.as_slice(), expiry)
            .map_err(store_error)?
            .is_none();
        for (k, v) in holds {
            inner.reserved.raw().insert(k, v).map_err(store_error)?;
        }
        crate::failpoint::crash("order-held", inner.reserved.raw());
        inner
            .orders
            .raw()
            .insert(key.as_slice(), encoded)
            .map_err(store_error)?;
        if newly_awaiting {
            inner.unpaid_counts().added(buyer);
        }
        inner.metrics.order_created();
        tracing::info!(order = number, sats = record.total.0, "order placed");
        Ok(payment_request(&record))
    }

    /// The merchant's next order number. Taken before the order is recorded: a crash in
    /// between leaves a gap, never a number given twice.
    pub(super) fn next_number(&self, merchant: &PublicKey) -> Result<u64, EscrowError> {
        Ok(self
            .inner
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
            .unwrap_or(1))
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
        let (open, mine) = {
            let unpaid = inner.unpaid_counts();
            (unpaid.total(), unpaid.of(buyer))
        };
        if open >= usize::try_from(caps.total).unwrap_or(usize::MAX) {
            return Ok(Some(format!(
                "busy: soko has {open} orders waiting for payment, its limit; please order again in a few minutes"
            )));
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
    /// orders: (stall id, priced lines), or why it is refused. Only the products the order
    /// names are read: reading the whole catalog made every order cost as much as the
    /// merchant has products, twice.
    pub(super) fn price(
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
        let mut products = vec![product];
        for item in &order.items {
            if products.iter().any(|p| p.id == item.product_id) {
                continue;
            }
            // One the merchant does not list stays out, and pricing refuses it by name.
            if let Some(product) = inner.merchants.product(merchant, &item.product_id)? {
                products.push(product);
            }
        }
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
}
