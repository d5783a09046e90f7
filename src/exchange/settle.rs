//! Ending a trade (or one claim of it): the legs of its outcome become recorded transfers,
//! committed with the move and its notices, then carried out one by one. Each transfer's
//! token is made under its own id, so a retry after a crash gets the same token, and a
//! transfer is marked done in the same transaction as the DM that carries a locked token.

use std::time::Duration;

use super::amounts::{settle, Leg, Outcome, Part, Party, Side};
use super::offers::hold_name;
use super::records::{Destination, OfferRecord, Transfer};
use super::{Effects, Exchange, ExchangeError, OfferEvent, OfferState};
use crate::money::Sats;
use crate::proto::reputation::BlindedRep;

impl Exchange {
    /// Moves `record` by `event` to the end `outcome` calls for, records the transfers and
    /// the notices, and carries the transfers out.
    pub(super) async fn finish(
        &self,
        record: OfferRecord,
        event: OfferEvent,
        outcome: Outcome,
        text: &str,
        mut fx: Effects,
    ) -> Result<OfferRecord, ExchangeError> {
        let now = self.inner.clock.now();
        let taker_paid = matches!(
            record.state,
            OfferState::TakerBondPaid
                | OfferState::ReceiptSubmitted
                | OfferState::MarkedWithIssue
                | OfferState::Disputed
        );
        let legs = settle(&record.amounts, outcome, taker_paid);
        let mut record = record.moved(event)?;
        record.outcome = Some(outcome);
        if outcome == Outcome::Completed {
            record.completed_at = Some(now);
        }
        record.deadline = 0;
        let round = record.claims;
        let transfers = self.transfers(&record, &legs, outcome, round);
        record.transfers.extend(transfers);
        let events = &mut fx.events;
        events.extend(self.book_event(&record)?);
        for side in [Side::Maker, Side::Taker] {
            let Some(trader) = record.trader(side) else {
                continue;
            };
            if side == Side::Taker && !taker_paid {
                continue;
            }
            let returned = self.returned_stake(&record, side, outcome)?;
            let gets = gets(&legs, side);
            let extra = serde_json::json!({
                "outcome": outcome_name(outcome),
                "you_get_sat": gets.0,
                "reputation": { "signatures": returned },
            });
            events.push(self.notice(trader.key, &record, text, extra).await?);
        }
        self.commit(&record, fx)?;
        crate::failpoint::crash("exchange-ended", self.inner.offers.raw());
        let metrics = &self.inner.metrics;
        metrics.offer_ended(&record.state.name().to_ascii_lowercase());
        if outcome == Outcome::Completed {
            metrics.offer_completed(Duration::from_secs(now.saturating_sub(record.created_at)));
        }
        tracing::info!(offer = %record.id, state = record.state.name(), "offer ended");
        Ok(self.carry_out_or_later(record).await)
    }

    /// Carries the transfers out now if it can. The move is committed and the transfers
    /// recorded, so a failure here (the mint busy, a swap it left pending) is not the
    /// command's: the timer pass carries them on, and the caller is answered with the move.
    async fn carry_out_or_later(&self, record: OfferRecord) -> OfferRecord {
        match self.carry_out(record.clone()).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(offer = %record.id, error = %e, "a transfer failed; the timer pass carries it on");
                record
            }
        }
    }

    /// A claim that lapsed after its bond was paid: the taker's bond goes to the maker, its
    /// fee to soko, and the offer goes back on the book.
    pub(super) async fn lapse_claim(
        &self,
        record: OfferRecord,
    ) -> Result<OfferRecord, ExchangeError> {
        let now = self.inner.clock.now();
        let a = record.amounts;
        let legs: Vec<Leg> = [
            Leg {
                from: Side::Taker,
                to: Party::Maker,
                amount: a.taker_bond,
                what: Part::TakerBond,
            },
            Leg {
                from: Side::Taker,
                to: Party::Soko,
                amount: a.taker_fee,
                what: Part::TakerFee,
            },
        ]
        .into_iter()
        .filter(|l| l.amount > Sats::ZERO)
        .collect();
        let round = record.claims;
        let taker = record.taker.clone();
        let transfers = self.transfers(&record, &legs, Outcome::MakerWins, round);
        let mut record = record.moved(OfferEvent::ReceiptOut)?;
        record.transfers.extend(transfers);
        record.deadline = now + self.inner.rules.windows.listing;
        let mut events = Vec::new();
        if let Some(taker) = &taker {
            let returned = self.sign_outputs(&taker.stake.outputs, lost(taker.stake.staked))?;
            events.push(
                self.notice(
                    taker.key,
                    &record,
                    "no receipt came in time: your bond went to the maker and the offer is back on the book",
                    serde_json::json!({ "reputation": { "signatures": returned } }),
                )
                .await?,
            );
        }
        events.push(
            self.notice(
                record.maker.key,
                &record,
                "the taker sent no receipt in time: its bond is yours, and your offer is back on the book",
                serde_json::json!({ "you_get_sat": a.taker_bond.0 }),
            )
            .await?,
        );
        // The taker is gone from the offer; its session is released once the transfers are done.
        record.taker = None;
        record.taker_invoice = None;
        record.receipt = None;
        events.extend(self.book_event(&record)?);
        self.commit_events(&record, events)?;
        Ok(self.carry_out_or_later(record).await)
    }

    /// The transfers `legs` call for, numbered by claim round.
    fn transfers(
        &self,
        record: &OfferRecord,
        legs: &[Leg],
        outcome: Outcome,
        round: u32,
    ) -> Vec<Transfer> {
        let start = record.transfers.len();
        legs.iter()
            .enumerate()
            .filter_map(|(i, leg)| {
                let from_session = record.trader(leg.from)?.session.clone();
                let to = match leg.to {
                    Party::Soko => Destination::House,
                    Party::Maker | Party::Taker => {
                        let side = if leg.to == Party::Maker {
                            Side::Maker
                        } else {
                            Side::Taker
                        };
                        let trader = record.trader(side)?;
                        let locked = matches!(
                            outcome,
                            Outcome::MakerWins
                                | Outcome::TakerWins
                                | Outcome::Split
                                | Outcome::Return
                        ) && record.issue.is_some();
                        match record.issue.as_ref().and_then(|i| i.key(side)) {
                            Some(key) if locked => Destination::Locked {
                                key,
                                dm_to: trader.key,
                            },
                            _ if side == leg.from => Destination::Stays,
                            _ => Destination::Session(trader.session.clone()),
                        }
                    }
                };
                Some(Transfer {
                    leg: *leg,
                    from_session,
                    to,
                    op: format!("{}:{round}:{}", record.id, start + i),
                    done: false,
                })
            })
            .collect()
    }

    /// Carries out the record's transfers not yet done, then lets go of the sessions it no
    /// longer needs: both once it is final, a lapsed taker's as soon as its bond moved.
    pub(super) async fn carry_out(
        &self,
        mut record: OfferRecord,
    ) -> Result<OfferRecord, ExchangeError> {
        let inner = &self.inner;
        for i in 0..record.transfers.len() {
            if record.transfers[i].done {
                continue;
            }
            let transfer = record.transfers[i].clone();
            let mut events = Vec::new();
            match &transfer.to {
                Destination::Stays => {}
                Destination::House => {
                    let token = inner
                        .purses
                        .token(
                            &transfer.from_session,
                            transfer.leg.amount,
                            None,
                            &transfer.op,
                        )
                        .await?;
                    crate::failpoint::crash("exchange-token-made", inner.offers.raw());
                    match inner.house.receive(&token, Default::default()).await {
                        Ok(_) | Err(cdk::Error::TokenAlreadySpent) => {}
                        Err(e) => return Err(ExchangeError::Internal(format!("fee wallet: {e}"))),
                    }
                }
                Destination::Session(to) => {
                    let token = inner
                        .purses
                        .token(
                            &transfer.from_session,
                            transfer.leg.amount,
                            None,
                            &transfer.op,
                        )
                        .await?;
                    crate::failpoint::crash("exchange-token-made", inner.offers.raw());
                    inner.purses.receive(to, &token).await?;
                }
                Destination::Locked { key, dm_to } => {
                    let token = inner
                        .purses
                        .token(
                            &transfer.from_session,
                            transfer.leg.amount,
                            Some(*key),
                            &transfer.op,
                        )
                        .await?;
                    events.push(
                        self.notice(
                            *dm_to,
                            &record,
                            "ecash from the dispute, locked to your registered key: redeem it with that key",
                            serde_json::json!({ "token": token, "amount_sat": transfer.leg.amount.0, "locked_to": key.to_hex() }),
                        )
                        .await?,
                    );
                }
            }
            crate::failpoint::crash("exchange-transfer", self.inner.offers.raw());
            record.transfers[i].done = true;
            self.commit_events(&record, events)?;
        }
        self.release_unneeded(&record)?;
        Ok(record)
    }

    /// Lifts the offer's hold on every session it no longer needs (idempotent).
    pub(super) fn release_unneeded(&self, record: &OfferRecord) -> Result<(), ExchangeError> {
        for session in &record.involved {
            if !record.needs(session) {
                self.inner.purses.release(session, &hold_name(&record.id))?;
            }
        }
        Ok(())
    }

    /// Signatures on the outputs `side` gave, as many as the outcome returns.
    fn returned_stake(
        &self,
        record: &OfferRecord,
        side: Side,
        outcome: Outcome,
    ) -> Result<Vec<crate::proto::reputation::RepSignature>, ExchangeError> {
        let Some(trader) = record.trader(side) else {
            return Ok(Vec::new());
        };
        let staked = trader.stake.staked;
        let loser = match outcome {
            Outcome::MakerWins => Some(Side::Taker),
            Outcome::TakerWins => Some(Side::Maker),
            _ => None,
        };
        let count = match outcome {
            Outcome::Completed => staked + 1,
            _ if loser == Some(side) => lost(staked),
            _ => staked,
        };
        self.sign_outputs(&trader.stake.outputs, count)
    }

    pub(super) fn sign_outputs(
        &self,
        outputs: &[String],
        count: u32,
    ) -> Result<Vec<crate::proto::reputation::RepSignature>, ExchangeError> {
        let outputs: Vec<BlindedRep> = outputs
            .iter()
            .take(count as usize)
            .map(|o| BlindedRep(o.clone()))
            .collect();
        self.inner
            .reputation
            .sign(&outputs)
            .map_err(|e| ExchangeError::Internal(format!("reputation: {e}")))
    }
}

/// Tokens a loser gets back: up to three are lost.
fn lost(staked: u32) -> u32 {
    staked - staked.min(3)
}

/// What `side` receives, in sats, by the legs.
fn gets(legs: &[Leg], side: Side) -> Sats {
    let party = match side {
        Side::Maker => Party::Maker,
        Side::Taker => Party::Taker,
    };
    Sats(
        legs.iter()
            .filter(|l| l.to == party)
            .map(|l| l.amount.0)
            .sum(),
    )
}

/// The wire name of an outcome.
pub(super) fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Completed => "completed",
        Outcome::Cancelled => "cancelled",
        Outcome::MakerWins => "maker_wins",
        Outcome::TakerWins => "taker_wins",
        Outcome::Split => "split",
        Outcome::Return => "return",
    }
}
