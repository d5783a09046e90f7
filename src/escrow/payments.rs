//! The payment watch's pass over unpaid orders: the mint's pushes followed, each due order
//! checked on its own, paid ones moved into escrow (with the buyer's code and the paid-order
//! notices), overdue ones expired.

use cdk::amount::SplitTarget;
use cdk::nuts::MintQuoteState;
use nostr_sdk::PublicKey;

use super::code::DeliveryCode;
use super::messages::{code_note, describe, status};
use super::notify::PaidOrder;
use super::records::{LedgerEntry, OrderRecord};
use super::service::{
    code_scope, lines, merchant_of, number_of, Change, EscrowError, EscrowService,
};
use super::state::{transition, EscrowEvent, EscrowState};
use crate::market::{listing, Merchants};

impl EscrowService {
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
        if let Err(e) = self.resume_ecash().await {
            tracing::error!(error = %e, "resuming orders paid with ecash failed; retrying next pass");
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
            if !watch.take_check_of(&key, now) {
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
        let (look, in_process, wake) = {
            let push = inner.push.lock().unwrap_or_else(|p| p.into_inner());
            (
                push.feed.is_none() && push.next_look.is_none_or(|at| now >= at),
                push.in_process.clone(),
                push.wake.clone(),
            )
        };
        if let (true, Some((mint, runtime))) = (look, in_process) {
            tracing::info!("following the embedded dev mint's payment events in-process");
            inner.push.lock().unwrap_or_else(|p| p.into_inner()).feed = Some(std::sync::Arc::new(
                crate::wallet::nut17::QuoteFeed::in_process(mint, &runtime, wake),
            ));
        } else if look {
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
                    match crate::wallet::nut17::QuoteFeed::start(&inner.wallet.mint_url, wake) {
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

    /// Follows the embedded dev mint's payment events in-process instead of over its
    /// websocket (call before the first pass).
    pub fn follow_in_process(
        &self,
        mint: std::sync::Arc<cdk::Mint>,
        runtime: tokio::runtime::Handle,
    ) {
        self.inner
            .push
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_process = Some((mint, runtime));
    }

    /// Notified when the mint tells a payment: the payment watch runs its pass at once
    /// instead of waiting for its next tick.
    pub fn payment_wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.inner
            .push
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .wake
            .clone()
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
                // The amount's own binary split. cdk's default split first reads every
                // unspent proof of the wallet to top its denominations up, which made each
                // payment cost a decode (a public key parsed) per proof held: growing with
                // every order (issue 16's profile: a third of the CPU in an order run).
                let split = match record.total.0 {
                    0 => SplitTarget::default(),
                    sats => SplitTarget::Value(sats.into()),
                };
                let minted = inner.wallet.mint(&record.quote_id, split, None).await;
                inner.metrics.wallet_op("mint", minted.is_ok());
                minted?;
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
            .seal_to_buyer(merchant, &record, code_note(&record, &code))
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
            audit: None,
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
        inner.metrics.order_paid();
        tracing::info!(
            order = paid.number,
            sats = paid.total.0,
            "order paid; funds held in escrow"
        );
        self.republish_stock(merchant, &record).await
    }

    /// The paid units left the listing in the paid commit: the product is republished with
    /// its new stock. A failure here is logged, not fatal: the stock is already right.
    pub(super) async fn republish_stock(
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
            if let Err(e) = listing::republish_product(
                &self.inner.merchants,
                &self.inner.publisher,
                merchant,
                &product,
            )
            .await
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
