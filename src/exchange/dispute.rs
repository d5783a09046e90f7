//! Issues and disputes: a side marks an issue by revealing its registered key; the other
//! side concedes (forfeit) or disputes (revealing its own); an admin resolves, and the
//! resolution's ecash is locked to the revealed keys. Every admin action is audited.

use nostr_sdk::{Event, PublicKey};

use super::amounts::{Outcome, Side};
use super::audit::AuditEntry;
use super::offers::{amounts_view, receipt_view};
use super::records::{Evidence, Issue, OfferRecord};
use super::{
    DisputeStats, Effects, Exchange, ExchangeError, ExchangeRefusal, OfferEvent, OfferState,
};
use crate::proto::exchange::{
    Answer, AnswerArgs, DisputeList, DisputeView, IssueArgs, OfferView, Resolution, ResolveArgs,
    MAX_EVIDENCE_LEN,
};

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Maker => "maker",
        Side::Taker => "taker",
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Maker => Side::Taker,
        Side::Taker => Side::Maker,
    }
}

impl Exchange {
    /// Checks a reveal event for `side` of `offer`: the registered key it reveals.
    fn revealed(
        &self,
        reveal: Option<&serde_json::Value>,
        offer: &str,
        side: Side,
    ) -> Result<super::reveal::Revealed, ExchangeError> {
        let Some(reveal) = reveal else {
            return Err(ExchangeRefusal::RevealRequired.into());
        };
        let event: Event = serde_json::from_value(reveal.clone())
            .map_err(|e| ExchangeRefusal::Reveal(format!("not a nostr event: {e}")))?;
        let now = self.inner.clock.now();
        let revealed = super::reveal::check(&event, &self.inner.bot, offer, side_name(side), now)
            .map_err(|e| ExchangeRefusal::Reveal(e.to_string()))?;
        if !self.inner.registered.is_registered(&revealed.key) {
            return Err(ExchangeRefusal::NotRegistered.into());
        }
        if self
            .inner
            .reveals
            .get(revealed.event_id.as_bytes())?
            .is_some()
        {
            return Err(ExchangeRefusal::RevealReused.into());
        }
        Ok(revealed)
    }

    fn evidence(&self, side: Side, text: Option<&str>) -> Result<Option<Evidence>, ExchangeError> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if text.len() > MAX_EVIDENCE_LEN {
            return Err(ExchangeRefusal::Reveal(format!(
                "evidence must be at most {MAX_EVIDENCE_LEN} bytes"
            ))
            .into());
        }
        Ok(Some(Evidence {
            side,
            at: self.inner.clock.now(),
            text: self.inner.vault.seal(text)?,
        }))
    }

    fn stats_of(
        &self,
        key: &PublicKey,
        change: impl FnOnce(&mut DisputeStats),
    ) -> Result<(PublicKey, DisputeStats), ExchangeError> {
        let mut stats = self.dispute_stats(key)?;
        change(&mut stats);
        Ok((*key, stats))
    }

    /// `offer_issue`: `session`'s side says something is wrong.
    pub async fn mark_issue(
        &self,
        session: &str,
        args: IssueArgs,
    ) -> Result<OfferView, ExchangeError> {
        let _offer = self.lock(&args.offer).await;
        let (record, side) = self.party(&args.offer, session)?;
        if !matches!(
            record.state,
            OfferState::TakerBondPaid | OfferState::ReceiptSubmitted
        ) {
            return Err(ExchangeRefusal::WrongState {
                state: record.state,
                what: "an issue can be marked once the taker's bond is paid, until the trade ends",
            }
            .into());
        }
        let revealed = self.revealed(args.reveal.as_ref(), &args.offer, side)?;
        let now = self.inner.clock.now();
        let from = record.state;
        let mut record = record.moved(OfferEvent::MarkIssue)?;
        let mut evidence = Vec::new();
        evidence.extend(self.evidence(side, Some(&revealed.statement))?);
        evidence.extend(self.evidence(side, args.evidence.as_deref())?);
        record.issue = Some(Issue {
            by: side,
            at: now,
            maker_key: (side == Side::Maker).then_some(revealed.key),
            taker_key: (side == Side::Taker).then_some(revealed.key),
            evidence,
            from,
        });
        record.deadline = now + self.inner.rules.windows.issue;
        let Some(counterpart) = record.trader(other(side)).map(|t| t.key) else {
            return Err(ExchangeError::Internal("an issue without a taker".into()));
        };
        let told = self
            .notice(
                counterpart,
                &record,
                &format!(
                    "the {} marked an issue: answer with offer_answer, \"forfeit\" to concede or \"dispute\" (reveals your registered key) for an admin to decide",
                    side_name(side)
                ),
                serde_json::json!({
                    "evidence": [revealed.statement, args.evidence.clone().unwrap_or_default()],
                    "deadline": record.deadline,
                }),
            )
            .await?;
        let stats = vec![self.stats_of(&revealed.key, |s| s.marked += 1)?];
        self.commit(
            &record,
            Effects {
                events: vec![told],
                reveal: Some(revealed.event_id),
                stats,
                ..Effects::default()
            },
        )?;
        self.inner.metrics.offer_disputed();
        tracing::info!(offer = %record.id, by = side_name(side), "issue marked");
        self.view(&record, side)
    }

    /// `offer_answer`: the other side concedes or disputes.
    pub async fn answer(
        &self,
        session: &str,
        args: AnswerArgs,
    ) -> Result<OfferView, ExchangeError> {
        let _offer = self.lock(&args.offer).await;
        let (record, side) = self.party(&args.offer, session)?;
        let Some(issue) = record
            .issue
            .clone()
            .filter(|_| record.state == OfferState::MarkedWithIssue)
        else {
            return Err(ExchangeRefusal::WrongState {
                state: record.state,
                what: "only a marked issue can be answered",
            }
            .into());
        };
        if issue.by == side {
            return Err(ExchangeRefusal::NotYourPart(side_name(other(side))).into());
        }
        match args.answer {
            Answer::Forfeit => {
                let outcome = match issue.by {
                    Side::Maker => Outcome::MakerWins,
                    Side::Taker => Outcome::TakerWins,
                };
                let mut fx = Effects::default();
                if let Some(key) = issue.key(issue.by) {
                    fx.stats.push(self.stats_of(&key, |s| s.won += 1)?);
                }
                let record = self
                    .finish(
                        record,
                        OfferEvent::Concede,
                        outcome,
                        &format!("the {} conceded", side_name(side)),
                        fx,
                    )
                    .await?;
                self.view(&record, side)
            }
            Answer::Dispute => {
                let revealed = self.revealed(args.reveal.as_ref(), &args.offer, side)?;
                let mut record = record.moved(OfferEvent::Counter)?;
                record.deadline = 0;
                let mut stats = vec![self.stats_of(&revealed.key, |s| s.disputed += 1)?];
                if let Some(marker) = issue.key(issue.by) {
                    if marker != revealed.key {
                        stats.push(self.stats_of(&marker, |s| s.disputed += 1)?);
                    }
                }
                if let Some(issue) = record.issue.as_mut() {
                    match side {
                        Side::Maker => issue.maker_key = Some(revealed.key),
                        Side::Taker => issue.taker_key = Some(revealed.key),
                    }
                    issue
                        .evidence
                        .extend(self.evidence(side, Some(&revealed.statement))?);
                    issue
                        .evidence
                        .extend(self.evidence(side, args.evidence.as_deref())?);
                }
                let events = self.disputed_notices(&record).await?;
                self.commit(
                    &record,
                    Effects {
                        events,
                        reveal: Some(revealed.event_id),
                        stats,
                        ..Effects::default()
                    },
                )?;
                tracing::info!(offer = %record.id, "offer disputed");
                self.view(&record, side)
            }
        }
    }

    /// Nobody answered the issue in time: an admin decides.
    pub(super) async fn unanswered(&self, record: OfferRecord) -> Result<(), ExchangeError> {
        let mut record = record.moved(OfferEvent::IssueOut)?;
        record.deadline = 0;
        let mut stats = Vec::new();
        if let Some(issue) = &record.issue {
            if let Some(key) = issue.key(issue.by) {
                stats.push(self.stats_of(&key, |s| s.disputed += 1)?);
            }
        }
        let events = self.disputed_notices(&record).await?;
        self.commit(
            &record,
            Effects {
                events,
                stats,
                ..Effects::default()
            },
        )?;
        Ok(())
    }

    async fn disputed_notices(&self, record: &OfferRecord) -> Result<Vec<Event>, ExchangeError> {
        let mut events = Vec::new();
        for key in [Some(record.maker.key), record.taker.as_ref().map(|t| t.key)]
            .into_iter()
            .flatten()
        {
            events.push(
                self.notice(
                    key,
                    record,
                    "disputed: an admin will decide",
                    serde_json::json!({}),
                )
                .await?,
            );
        }
        for admin in &self.inner.admins {
            events.push(
                self.notice(
                    *admin,
                    record,
                    "a dispute waits for an admin (dispute_show, dispute_resolve)",
                    serde_json::json!({}),
                )
                .await?,
            );
        }
        Ok(events)
    }

    /// `dispute_resolve` by `admin`.
    pub async fn resolve(
        &self,
        admin: &PublicKey,
        args: ResolveArgs,
    ) -> Result<DisputeView, ExchangeError> {
        let _offer = self.lock(&args.offer).await;
        let record = self
            .inner
            .offers
            .get(args.offer.as_bytes())?
            .ok_or(ExchangeRefusal::UnknownOffer)?;
        if record.state != OfferState::Disputed {
            return Err(ExchangeRefusal::WrongState {
                state: record.state,
                what: "only a dispute can be resolved",
            }
            .into());
        }
        if let Some(note) = &args.note {
            if note.len() > MAX_EVIDENCE_LEN {
                return Err(ExchangeRefusal::Reveal(format!(
                    "note must be at most {MAX_EVIDENCE_LEN} bytes"
                ))
                .into());
            }
        }
        let outcome = match args.outcome {
            Resolution::MakerWins => Outcome::MakerWins,
            Resolution::TakerWins => Outcome::TakerWins,
            Resolution::Split => Outcome::Split,
            Resolution::Return => Outcome::Return,
        };
        let mut fx = Effects::default();
        if let Some(issue) = &record.issue {
            let winner = match outcome {
                Outcome::MakerWins => Some(Side::Maker),
                Outcome::TakerWins => Some(Side::Taker),
                _ => None,
            };
            for side in [Side::Maker, Side::Taker] {
                if let (Some(key), Some(winner)) = (issue.key(side), winner) {
                    fx.stats.push(self.stats_of(&key, |s| {
                        if side == winner {
                            s.won += 1
                        } else {
                            s.lost += 1
                        }
                    })?);
                }
            }
        }
        let name = super::settle::outcome_name(outcome);
        fx.audit = Some(AuditEntry {
            at: self.inner.clock.now(),
            admin: admin.to_hex(),
            action: format!("resolve:{name}"),
            offer: record.id.clone(),
            detail: args.note.clone().unwrap_or_default(),
        });
        let record = self
            .finish(
                record,
                OfferEvent::Resolve,
                outcome,
                &format!("an admin resolved the dispute: {name}"),
                fx,
            )
            .await?;
        tracing::info!(offer = %record.id, outcome = name, "dispute resolved");
        self.dispute_view(&record)
    }

    /// `dispute_list`: open issues and disputes.
    pub fn disputes(&self) -> Result<DisputeList, ExchangeError> {
        let mut disputes = Vec::new();
        for entry in self.inner.open.iter() {
            let (id, _) = entry?;
            if let Some(record) = self.inner.offers.get(&id)? {
                if matches!(
                    record.state,
                    OfferState::MarkedWithIssue | OfferState::Disputed
                ) {
                    disputes.push(self.dispute_view(&record)?);
                }
            }
        }
        disputes.truncate(50);
        Ok(DisputeList { disputes })
    }

    /// `dispute_show`: one offer with an issue, as admins see it (audited: admins read
    /// private bills and receipts here).
    pub fn dispute(&self, admin: &PublicKey, offer: &str) -> Result<DisputeView, ExchangeError> {
        let record = self
            .inner
            .offers
            .get(offer.as_bytes())?
            .filter(|r| r.issue.is_some())
            .ok_or(ExchangeRefusal::UnknownOffer)?;
        self.inner.audit.append(&AuditEntry {
            at: self.inner.clock.now(),
            admin: admin.to_hex(),
            action: "show".to_owned(),
            offer: record.id.clone(),
            detail: String::new(),
        })?;
        self.dispute_view(&record)
    }

    fn dispute_view(&self, record: &OfferRecord) -> Result<DisputeView, ExchangeError> {
        let Some(issue) = &record.issue else {
            return Err(ExchangeRefusal::UnknownOffer.into());
        };
        let evidence = issue
            .evidence
            .iter()
            .map(|e| {
                Ok((
                    side_name(e.side).to_owned(),
                    self.inner.vault.unseal(&e.text)?,
                ))
            })
            .collect::<Result<Vec<_>, ExchangeError>>()?;
        Ok(DisputeView {
            offer: record.id.clone(),
            state: record.state.name().to_owned(),
            marked_by: side_name(issue.by).to_owned(),
            marked_at: issue.at,
            maker_key: issue.maker_key.map(|k| k.to_hex()),
            taker_key: issue.taker_key.map(|k| k.to_hex()),
            evidence,
            receipt: self.receipt(record)?.map(|r| receipt_view(&r)),
            bill: self.bill(record)?,
            amounts: amounts_view(&record.amounts),
            deadline: (record.state == OfferState::MarkedWithIssue).then_some(record.deadline),
        })
    }
}
