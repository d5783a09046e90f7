//! The timer pass: payments seen, windows run out, unfinished transfers carried on. Called
//! every second by the daemon, and at start it resumes what a crash interrupted.

use super::amounts::Outcome;
use super::records::OfferRecord;
use super::{Collected, Effects, Exchange, ExchangeError, OfferEvent, OfferState};

/// Offers one pass moves on at once.
const PASS_PARALLEL: usize = 16;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Offers that moved.
    pub moved: usize,
    /// Offers whose step failed (retried next pass).
    pub failed: usize,
}

impl Exchange {
    /// One pass over the open offers. A failing offer is logged and retried next pass; the
    /// others go on.
    pub async fn tick(&self) -> Result<TickReport, ExchangeError> {
        let mut ids = Vec::new();
        for entry in self.inner.open.iter() {
            let (id, _) = entry?;
            ids.push(String::from_utf8_lossy(&id).into_owned());
        }
        let mut report = TickReport::default();
        // Offers side by side (each under its own lock): one at a time, the payment checks
        // of many open offers queued behind each other and every trade waited for all of them.
        let mut steps = tokio::task::JoinSet::new();
        let mut ids = ids.into_iter();
        loop {
            while steps.len() < PASS_PARALLEL {
                let Some(id) = ids.next() else { break };
                let exchange = self.clone();
                steps.spawn(async move {
                    let result = exchange.step(&id).await;
                    (id, result)
                });
            }
            let Some(done) = steps.join_next().await else {
                break;
            };
            match done {
                Ok((_, Ok(true))) => report.moved += 1,
                Ok((_, Ok(false))) => {}
                Ok((id, Err(e))) => {
                    report.failed += 1;
                    tracing::warn!(offer = %id, error = %e, "an offer step failed; retried next pass");
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(error = %e, "an offer step stopped");
                }
            }
        }
        self.report_figures();
        Ok(report)
    }

    /// Moves offer `id` on if something is due; true when it moved.
    async fn step(&self, id: &str) -> Result<bool, ExchangeError> {
        let _offer = self.lock(id).await;
        let Some(record) = self.inner.offers.get(id.as_bytes())? else {
            self.inner.open.remove(id.as_bytes())?;
            return Ok(false);
        };
        if record.transfers.iter().any(|t| !t.done) {
            self.carry_out(record).await?;
            return Ok(true);
        }
        let record = if record.late.is_empty() {
            record
        } else {
            self.watch_late(record).await?
        };
        if record.state.is_final() {
            return Ok(false);
        }
        let now = self.inner.clock.now();
        let due = record.deadline > 0 && now >= record.deadline;
        let inner = &self.inner;
        match record.state {
            OfferState::Created => {
                let Some(invoice) = &record.maker_invoice else {
                    // Funded without an invoice, and stopped before it was listed.
                    self.listed(record).await?;
                    return Ok(true);
                };
                // A payment counts even when it lands after the window: the maker paid.
                match inner
                    .purses
                    .collect(&record.maker.session, &invoice.quote)
                    .await?
                {
                    Collected::Minted(_) => {
                        crate::failpoint::crash("exchange-maker-collected", inner.offers.raw());
                        self.listed(record).await?;
                        Ok(true)
                    }
                    Collected::Expired | Collected::Unpaid if due => {
                        self.expire_unpaid(record).await?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            OfferState::InvoicePaid if due => {
                self.finish(
                    record,
                    OfferEvent::ListingOut,
                    Outcome::Cancelled,
                    "no taker came in time: the offer is off the book and your ecash stays in your session", Effects::default())
                .await?;
                Ok(true)
            }
            OfferState::Claimed => {
                let (Some(taker), Some(invoice)) = (&record.taker, &record.taker_invoice) else {
                    return Err(ExchangeError::Internal("a claim without a taker".into()));
                };
                match inner.purses.collect(&taker.session, &invoice.quote).await? {
                    Collected::Minted(_) => {
                        crate::failpoint::crash("exchange-bond-collected", inner.offers.raw());
                        self.bond_paid(record).await?;
                        Ok(true)
                    }
                    Collected::Expired | Collected::Unpaid if due => {
                        self.unclaim(record).await?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            OfferState::TakerBondPaid if due => {
                self.lapse_claim(record).await?;
                Ok(true)
            }
            OfferState::ReceiptSubmitted if due => {
                self.finish(
                    record,
                    OfferEvent::ConfirmOut,
                    Outcome::Completed,
                    "the maker did not answer the receipt in time: the taker is paid",
                    Effects::default(),
                )
                .await?;
                Ok(true)
            }
            OfferState::MarkedWithIssue if due => {
                self.unanswered(record).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The maker paid: on the book.
    pub(super) async fn listed(&self, record: OfferRecord) -> Result<(), ExchangeError> {
        let now = self.inner.clock.now();
        let mut record = record.moved(OfferEvent::MakerPaid)?;
        record.deadline = now + self.inner.rules.windows.listing;
        let mut events = vec![
            self.notice(
                record.maker.key,
                &record,
                "paid: your offer is on the book",
                serde_json::json!({ "deadline": record.deadline }),
            )
            .await?,
        ];
        events.extend(self.book_event(&record)?);
        self.commit_events(&record, events)?;
        crate::failpoint::crash("exchange-listed", self.inner.offers.raw());
        tracing::info!(offer = %record.id, "offer listed");
        Ok(())
    }

    /// Never paid: nothing was taken, the staked reputation comes back.
    async fn expire_unpaid(&self, record: OfferRecord) -> Result<(), ExchangeError> {
        let mut record = record.moved(OfferEvent::PayWindowOut)?;
        record.deadline = 0;
        if let Some(invoice) = record.maker_invoice.clone() {
            record.late.push(super::records::LateInvoice {
                session: record.maker.session.clone(),
                invoice,
            });
        }
        let returned = self.sign_outputs(&record.maker.stake.outputs, record.maker.stake.staked)?;
        let told = self
            .notice(
                record.maker.key,
                &record,
                "the invoice was not paid in time: the offer is gone",
                serde_json::json!({ "reputation": { "signatures": returned } }),
            )
            .await?;
        self.commit_events(&record, vec![told])?;
        self.release_unneeded(&record)?;
        self.inner.metrics.offer_ended("expired");
        Ok(())
    }

    /// The taker's bond is paid: the taker learns the bill.
    async fn bond_paid(&self, record: OfferRecord) -> Result<(), ExchangeError> {
        let now = self.inner.clock.now();
        self.inner.metrics.offer_taken();
        let mut record = record.moved(OfferEvent::BondPaid)?;
        record.deadline = now + self.inner.rules.windows.receipt;
        let bill = self.bill(&record)?;
        let Some(taker) = record.taker.clone() else {
            return Err(ExchangeError::Internal("a claim without a taker".into()));
        };
        let events = vec![
            self.notice(
                taker.key,
                &record,
                "your bond is paid: pay this bill, then send the receipt (receipt_submit)",
                serde_json::json!({ "bill": bill, "fiat_amount": record.terms.fiat_amount, "currency": record.terms.currency, "deadline": record.deadline }),
            )
            .await?,
            self.notice(
                record.maker.key,
                &record,
                "a taker's bond is paid: the taker is paying your bill",
                serde_json::json!({ "deadline": record.deadline }),
            )
            .await?,
        ];
        self.commit_events(&record, events)?;
        crate::failpoint::crash("exchange-bond-paid", self.inner.offers.raw());
        Ok(())
    }

    /// The taker never paid its bond: back on the book, the taker's stake back.
    async fn unclaim(&self, record: OfferRecord) -> Result<(), ExchangeError> {
        let now = self.inner.clock.now();
        let taker = record.taker.clone();
        let mut record = record.moved(OfferEvent::ClaimOut)?;
        if let (Some(taker), Some(invoice)) = (&taker, record.taker_invoice.take()) {
            record.late.push(super::records::LateInvoice {
                session: taker.session.clone(),
                invoice,
            });
        }
        record.taker = None;
        record.deadline = now + self.inner.rules.windows.listing;
        let mut events = Vec::new();
        if let Some(taker) = &taker {
            let returned = self.sign_outputs(&taker.stake.outputs, taker.stake.staked)?;
            events.push(
                self.notice(
                    taker.key,
                    &record,
                    "the bond was not paid in time: the offer went back on the book",
                    serde_json::json!({ "reputation": { "signatures": returned } }),
                )
                .await?,
            );
        }
        events.extend(self.book_event(&record)?);
        self.commit_events(&record, events)?;
        self.release_unneeded(&record)?;
        Ok(())
    }

    /// Invoices paid after their window: minted into their session all the same (the user
    /// paid), or forgotten once the mint no longer honours them.
    async fn watch_late(&self, mut record: OfferRecord) -> Result<OfferRecord, ExchangeError> {
        let now = self.inner.clock.now();
        let mut events = Vec::new();
        let mut kept = Vec::new();
        let mut changed = false;
        for late in std::mem::take(&mut record.late) {
            match self
                .inner
                .purses
                .collect(&late.session, &late.invoice.quote)
                .await?
            {
                Collected::Minted(sats) => {
                    changed = true;
                    if let Some(key) = self.inner.purses.key(&late.session)? {
                        events.push(
                            self.notice(
                                key,
                                &record,
                                "a payment arrived after its window: it is in your session and comes back with it",
                                serde_json::json!({ "amount_sat": sats.0 }),
                            )
                            .await?,
                        );
                    }
                }
                Collected::Expired => changed = true,
                // A mint that never says expired: an hour past the invoice's own expiry.
                Collected::Unpaid if now > late.invoice.expires_at.saturating_add(3600) => {
                    changed = true;
                }
                Collected::Unpaid => kept.push(late),
            }
        }
        record.late = kept;
        if changed {
            self.commit_events(&record, events)?;
            self.release_unneeded(&record)?;
        }
        Ok(record)
    }

    /// Figures for `metrics`: ecash held per state, and the dispute alarm.
    fn report_figures(&self) {
        let inner = &self.inner;
        let mut held: std::collections::HashMap<&'static str, u64> =
            std::collections::HashMap::new();
        for state in OfferState::ALL {
            held.insert(state.name(), 0);
        }
        for entry in inner.open.iter() {
            let Ok((id, _)) = entry else { continue };
            let Ok(Some(record)) = inner.offers.get(&id) else {
                continue;
            };
            let a = record.amounts;
            let sats = match record.state {
                OfferState::Created => 0,
                OfferState::InvoicePaid | OfferState::Claimed => a.maker_invoice().0,
                s if s.is_final() => 0,
                _ => a.maker_invoice().0 + a.taker_invoice().0,
            };
            *held.entry(record.state.name()).or_default() += sats;
        }
        for (state, sats) in held {
            inner
                .metrics
                .set_offer_ecash(&state.to_ascii_lowercase(), crate::money::Sats(sats));
        }
        let rate = inner.metrics.dispute_rate_bp(
            std::time::Duration::from_secs(24 * 3600),
            inner.rules.alert_min_offers,
        );
        let now = inner.clock.now();
        let alert = inner
            .alarm
            .lock()
            .ok()
            .and_then(|mut alarm| alarm.check(rate, inner.rules.alert_bp, now));
        if let Some(text) = alert {
            tracing::warn!(%text, "dispute rate alert");
            let exchange = self.clone();
            tokio::spawn(async move {
                for admin in exchange.inner.admins.clone() {
                    if let Err(e) = exchange
                        .inner
                        .publisher
                        .send_dm(
                            &exchange.inner.bot,
                            admin,
                            crate::outbound::Scheme::Nip17,
                            &text,
                        )
                        .await
                    {
                        tracing::warn!(error = %e, "dispute alert not sent");
                    }
                }
            });
        }
    }
}
