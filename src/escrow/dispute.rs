//! Issues on marketplace orders, the exchange's dispute path for orders (`kinds/orders.md`):
//! a buyer who paid and got nothing, or a merchant whose buyer withholds the delivery code,
//! marks an issue once the delivery window has passed, revealing its key with a signed
//! reveal event ([`crate::proto::reveal`]); the other side concedes or disputes (revealing
//! its own); an admin resolves a dispute, or an issue left unanswered past its window.
//!
//! The revealed keys: the buyer's is the key it ordered with (it signs its reveal, and
//! soko refuses one signed by any other key); the merchant's is its shop identity, whose
//! key soko holds and signs with when the merchant acts from USSD or through the operator.
//!
//! Money: `merchant_wins` credits the merchant's balance as a delivery would (soko holds
//! the merchant's key, so ecash locked to it would only come back to soko); `buyer_wins`
//! and `split` refund the buyer's part through the refund saga ([`super::refund`]) as a
//! token locked (NUT-11) to the buyer's revealed key. Each is recorded, with the admin's
//! audit entry, in the commit that decides it, before any token is made.

use nostr_sdk::{Event, EventBuilder, Kind, PublicKey, Tag};
use serde::{Deserialize, Serialize};

use super::messages::{describe, status, text};
use super::payout::Payout;
use super::records::{IssueOutcome, OrderIssue, OrderSide};
use super::refund::refund_ledger_key;
use super::refusal::EscrowRefusal;
use super::service::{
    merchant_of, order_key, Change, EscrowError, EscrowService, LedgerEntry, OrderRecord,
    RefundPlan,
};
use super::state::{transition, EscrowEvent, EscrowState};
use crate::money::Sats;
use crate::proto::exchange::KIND_REVEAL;
use crate::proto::reveal::{self, Revealed, Subject};
use crate::store::audit::AuditEntry;

/// The sled tree of the escrow's audit trail.
pub const AUDIT_TREE: &str = "escrow/audit";
/// Longest evidence text a side adds to its reveal, in bytes.
pub const MAX_EVIDENCE_BYTES: usize = 2000;
/// Longest note an admin adds to a resolution, in bytes.
pub const MAX_NOTE_BYTES: usize = 2000;

/// What the merchant's menu offers about an order's issue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IssueChoice {
    /// Nothing to do.
    #[default]
    None,
    /// Past its delivery window without the code: the merchant may mark an issue.
    CanMark,
    /// The buyer marked an issue: the merchant may concede or dispute.
    CanAnswer,
}

/// Issues by revealed key: how often it marked, was in a dispute, won, lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeStats {
    /// Issues it marked.
    pub marked: u64,
    /// Issues it was in that went to a dispute.
    pub disputed: u64,
    /// Issues settled its way.
    pub won: u64,
    /// Issues settled the other way by an admin.
    pub lost: u64,
}

/// The other side's answer to an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueAnswer {
    /// The issue is right: settle it the marker's way.
    Concede,
    /// The issue is wrong: an admin decides (reveals the answering side's key).
    Dispute,
}

/// Who acts on an issue, and how it proves its key.
#[derive(Debug, Clone, Copy)]
pub enum Party<'a> {
    /// The order's buyer (the command's sender), with its signed reveal when it has one.
    Buyer {
        /// The sender's key.
        key: PublicKey,
        /// Its reveal event.
        reveal: Option<&'a Event>,
    },
    /// The merchant (from USSD, or the operator for it): soko signs its reveal.
    Merchant,
}

impl Party<'_> {
    fn side(&self) -> OrderSide {
        match self {
            Self::Buyer { .. } => OrderSide::Buyer,
            Self::Merchant => OrderSide::Merchant,
        }
    }
}

/// An order's issue as its parties and admins see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssueView {
    /// soko's number of the order.
    pub order: u64,
    /// The buyer's order id.
    pub order_id: String,
    /// The order's state.
    pub state: EscrowState,
    /// Who marked the issue.
    pub marked_by: OrderSide,
    /// Until when the other side may answer (unix seconds).
    pub answer_by: u64,
    /// The buyer's revealed key (hex), once revealed.
    pub buyer_key: Option<String>,
    /// The merchant's revealed key (hex), once revealed.
    pub merchant_key: Option<String>,
    /// How it was settled.
    pub outcome: Option<IssueOutcome>,
    /// What went to the buyer as locked ecash.
    pub buyer_sat: u64,
    /// What went to the merchant's balance.
    pub merchant_sat: u64,
    /// The key the buyer's ecash is locked to.
    pub locked_to: Option<String>,
}

/// An order's issue as admins read it: whose shop, the issue, and (shown one at a time,
/// audited) what each side said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssueCase {
    /// The merchant (hex).
    pub merchant: String,
    /// The issue.
    #[serde(flatten)]
    pub issue: IssueView,
    /// Each side's words in the order given: its reveal's statement, then its evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<Said>>,
}

/// One side's words on an issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Said {
    /// Who said it.
    pub side: OrderSide,
    /// What it said.
    pub text: String,
}

/// Most open issues one `order_issue_list` answer carries.
const MAX_LISTED: usize = 50;

/// What a settlement leaves to do once the escrow lock is released.
struct Settling {
    key: Vec<u8>,
    refund: bool,
    credited: Sats,
}

impl EscrowService {
    /// soko's number of the order `order_id` that `buyer` placed with `merchant`.
    pub fn buyer_order_number(
        &self,
        merchant: &PublicKey,
        buyer: &PublicKey,
        order_id: &str,
    ) -> Result<u64, EscrowError> {
        let index_key = [
            merchant.to_bytes().as_slice(),
            &buyer.to_bytes(),
            order_id.as_bytes(),
        ]
        .concat();
        self.inner
            .index
            .get(&index_key)?
            .ok_or_else(|| EscrowRefusal::NoSuchBuyerOrder(order_id.to_owned()).into())
    }

    /// What the merchant may do about an issue on `record` now (its USSD menu).
    pub fn issue_choice(&self, record: &OrderRecord) -> IssueChoice {
        let due = record
            .paid_at
            .unwrap_or(record.created_at)
            .saturating_add(self.inner.delivery_window_secs);
        match (record.state, record.issue.as_ref()) {
            (EscrowState::Paid, _) if self.inner.clock.now() >= due => IssueChoice::CanMark,
            (EscrowState::IssueMarked, Some(issue)) if issue.by == OrderSide::Buyer => {
                IssueChoice::CanAnswer
            }
            _ => IssueChoice::None,
        }
    }

    /// How issues went for `key`.
    pub fn dispute_stats(&self, key: &PublicKey) -> Result<DisputeStats, EscrowError> {
        Ok(self
            .inner
            .dispute_stats
            .get(&key.to_bytes())?
            .unwrap_or_default())
    }

    /// `order_issue_list`: orders whose issue is not settled yet, the oldest first, at most
    /// [`MAX_LISTED`]. A scan of every order: issues are rare and admins ask seldom.
    pub fn open_issues(&self) -> Result<Vec<IssueCase>, EscrowError> {
        let mut open = Vec::new();
        for entry in self.inner.orders.iter() {
            let (key, record) = entry?;
            if record.issue.as_ref().is_some_and(|i| i.outcome.is_none()) {
                open.push(IssueCase {
                    merchant: merchant_of(&key)?.to_hex(),
                    issue: view(&record),
                    evidence: None,
                });
            }
        }
        open.sort_by_key(|case| case.issue.answer_by);
        open.truncate(MAX_LISTED);
        Ok(open)
    }

    /// `order_issue_show`: order `number` of `merchant` with both sides' words, for `admin`
    /// (audited: admins read what buyers and merchants said in private).
    pub fn issue_case(
        &self,
        admin: &PublicKey,
        merchant: PublicKey,
        number: u64,
    ) -> Result<IssueCase, EscrowError> {
        let record = self
            .inner
            .orders
            .get(&order_key(&merchant, number))?
            .ok_or(EscrowRefusal::NoSuchOrder(number))?;
        let issue = record
            .issue
            .as_ref()
            .ok_or(EscrowRefusal::NoIssue(number))?;
        let evidence = issue
            .evidence
            .iter()
            .map(|(side, sealed)| {
                Ok(Said {
                    side: *side,
                    text: self.inner.vault.unseal(sealed)?,
                })
            })
            .collect::<Result<Vec<_>, EscrowError>>()?;
        self.inner.audit.append(&AuditEntry {
            at: self.inner.clock.now(),
            admin: admin.to_hex(),
            action: "order_issue_show".to_owned(),
            offer: format!("{}:{number}", merchant.to_hex()),
            detail: String::new(),
        })?;
        Ok(IssueCase {
            merchant: merchant.to_hex(),
            issue: view(&record),
            evidence: Some(evidence),
        })
    }

    /// Up to `limit` entries of the escrow's audit trail numbered after `after`.
    pub fn audit_trail(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, EscrowError> {
        Ok(self.inner.audit.since(after, limit)?)
    }

    /// The order `number` of `merchant` as `party` may see it: a buyer sees only its own.
    fn order_for(
        &self,
        merchant: &PublicKey,
        number: u64,
        party: &Party<'_>,
    ) -> Result<(Vec<u8>, OrderRecord), EscrowError> {
        let key = order_key(merchant, number);
        let record = self.inner.orders.get(&key)?;
        match (record, party) {
            (Some(record), Party::Buyer { key: buyer, .. }) if record.buyer != *buyer => {
                Err(EscrowRefusal::NoSuchBuyerOrder(record.buyer_order_id.clone()).into())
            }
            (Some(record), _) => Ok((key, record)),
            (None, _) => Err(EscrowRefusal::NoSuchOrder(number).into()),
        }
    }

    /// The key `party` reveals for `record`, checked like any reveal; `statement` is what a
    /// merchant's reveal (signed by soko) says.
    fn revealed(
        &self,
        merchant: &PublicKey,
        record: &OrderRecord,
        party: &Party<'_>,
        statement: &str,
    ) -> Result<Revealed, EscrowError> {
        let inner = &self.inner;
        let bot = inner.publisher.keyring().bot().public_key();
        let subject = Subject::order(&record.buyer_order_id);
        let signed;
        let event = match party {
            Party::Buyer { reveal: None, .. } => {
                return Err(EscrowRefusal::RevealRequired.into());
            }
            Party::Buyer {
                reveal: Some(event),
                ..
            } => *event,
            Party::Merchant => {
                let keys = inner.publisher.keyring().get(merchant).ok_or_else(|| {
                    EscrowError::Books("soko holds no key for this merchant".to_owned())
                })?;
                let tags = [
                    Tag::public_key(bot),
                    Tag::parse([subject.tag, subject.id])
                        .map_err(|e| EscrowError::Books(e.to_string()))?,
                    Tag::parse(["side", "merchant"])
                        .map_err(|e| EscrowError::Books(e.to_string()))?,
                ];
                signed = EventBuilder::new(Kind::Custom(KIND_REVEAL), statement)
                    .tags(tags)
                    .custom_created_at(nostr_sdk::Timestamp::from(inner.clock.now()))
                    .sign_with_keys(&keys)
                    .map_err(|e| EscrowError::Books(e.to_string()))?;
                &signed
            }
        };
        let side = party.side().name();
        let revealed = reveal::check(event, &bot, subject, side, inner.clock.now())
            .map_err(|e| EscrowRefusal::Reveal(e.to_string()))?;
        // The buyer's key is the one it ordered with: a reveal by any other key proves
        // nothing about who paid.
        let expected = match party {
            Party::Buyer { .. } => record.buyer,
            Party::Merchant => *merchant,
        };
        if revealed.key != expected {
            return Err(EscrowRefusal::WrongSigner(party.side().name()).into());
        }
        if inner.reveals.get(revealed.event_id.as_bytes())?.is_some() {
            return Err(EscrowRefusal::RevealReused.into());
        }
        Ok(revealed)
    }

    /// `side`'s words, sealed: the reveal's statement, then its evidence.
    fn sealed_evidence(
        &self,
        side: OrderSide,
        texts: &[&str],
    ) -> Result<Vec<(OrderSide, String)>, EscrowError> {
        texts
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| Ok((side, self.inner.vault.seal(t)?)))
            .collect()
    }

    fn check_evidence(evidence: Option<&str>) -> Result<(), EscrowError> {
        match evidence {
            Some(text) if text.len() > MAX_EVIDENCE_BYTES => Err(EscrowRefusal::Reveal(format!(
                "evidence must be at most {MAX_EVIDENCE_BYTES} bytes"
            ))
            .into()),
            _ => Ok(()),
        }
    }

    /// Counts for each key (statistics: written after the commit they describe).
    fn count(
        &self,
        keys: &[Option<PublicKey>],
        change: impl Fn(&mut DisputeStats),
    ) -> Result<(), EscrowError> {
        let mut done = Vec::new();
        for key in keys.iter().flatten() {
            if done.contains(key) {
                continue;
            }
            done.push(*key);
            let mut stats = self.dispute_stats(key)?;
            change(&mut stats);
            self.inner.dispute_stats.insert(&key.to_bytes(), &stats)?;
        }
        Ok(())
    }

    /// `party` marks an issue on order `number` of `merchant`, revealing its key.
    pub async fn mark_issue(
        &self,
        merchant: PublicKey,
        number: u64,
        party: Party<'_>,
        evidence: Option<&str>,
    ) -> Result<IssueView, EscrowError> {
        Self::check_evidence(evidence)?;
        let inner = &self.inner;
        let _guard = inner.lock.lock().await;
        let (key, record) = self.order_for(&merchant, number, &party)?;
        if record.state != EscrowState::Paid {
            return Err(EscrowRefusal::NotIssuable {
                number,
                state: record.state,
            }
            .into());
        }
        let now = inner.clock.now();
        let from = record
            .paid_at
            .unwrap_or(record.created_at)
            .saturating_add(inner.delivery_window_secs);
        if now < from {
            return Err(EscrowRefusal::IssueTooEarly { number, from }.into());
        }
        let side = party.side();
        let revealed = self.revealed(&merchant, &record, &party, evidence.unwrap_or(""))?;
        let mut next = record.clone();
        next.state = transition(record.state, EscrowEvent::IssueMarked)?;
        let mut texts = vec![revealed.statement.as_str()];
        if side == OrderSide::Buyer {
            texts.extend(evidence);
        }
        next.issue = Some(OrderIssue {
            by: side,
            at: now,
            answer_by: now.saturating_add(inner.issue_answer_secs),
            buyer_key: (side == OrderSide::Buyer).then_some(revealed.key),
            merchant_key: (side == OrderSide::Merchant).then_some(revealed.key),
            evidence: self.sealed_evidence(side, &texts)?,
            outcome: None,
            merchant_part: Sats::ZERO,
        });
        let told = match side {
            OrderSide::Buyer => format!(
                "Your issue on order #{number} is recorded; the merchant may answer until unix time {}, then soko's operator decides.",
                now.saturating_add(inner.issue_answer_secs)
            ),
            OrderSide::Merchant => format!(
                "The merchant marked an issue on order #{number}: the delivery code was not given. Answer with order_answer (\"concede\" releases the payment to the merchant; \"dispute\" reveals your key for soko's operator to decide) by unix time {}.",
                now.saturating_add(inner.issue_answer_secs)
            ),
        };
        let dms = [
            self.seal_to_buyer(
                &merchant,
                &record,
                status(&next, &describe(next.state, number)),
            )
            .await?,
            self.seal_to_buyer(&merchant, &record, text(&record, told))
                .await?,
        ];
        // Spent before the move it proves: a crash in between costs a fresh signature.
        inner.reveals.insert(revealed.event_id.as_bytes(), &now)?;
        self.commit(&key, &next, Change::default(), &dms).await?;
        self.count(&[Some(revealed.key)], |s| s.marked += 1)?;
        tracing::info!(order = number, by = side.name(), "issue marked on an order");
        Ok(view(&next))
    }

    /// `party`, the other side of the issue on order `number`, concedes or disputes it.
    pub async fn answer_issue(
        &self,
        merchant: PublicKey,
        number: u64,
        party: Party<'_>,
        answer: IssueAnswer,
        evidence: Option<&str>,
    ) -> Result<IssueView, EscrowError> {
        Self::check_evidence(evidence)?;
        let inner = &self.inner;
        let settling = {
            let _guard = inner.lock.lock().await;
            let (key, record) = self.order_for(&merchant, number, &party)?;
            let Some(issue) = record
                .issue
                .clone()
                .filter(|_| record.state == EscrowState::IssueMarked)
            else {
                return Err(EscrowRefusal::NoOpenIssue {
                    number,
                    state: record.state,
                }
                .into());
            };
            let side = party.side();
            if issue.by == side {
                return Err(EscrowRefusal::NotYourAnswer(side.other().name()).into());
            }
            match answer {
                IssueAnswer::Concede => {
                    let outcome = match issue.by {
                        OrderSide::Buyer => IssueOutcome::BuyerWins,
                        OrderSide::Merchant => IssueOutcome::MerchantWins,
                    };
                    let settling = self
                        .settle_locked(merchant, key, record, outcome, None)
                        .await?;
                    self.count(&[issue.key(issue.by)], |s| s.won += 1)?;
                    tracing::info!(order = number, by = side.name(), "issue conceded");
                    settling
                }
                IssueAnswer::Dispute => {
                    let revealed =
                        self.revealed(&merchant, &record, &party, evidence.unwrap_or(""))?;
                    let mut next = record.clone();
                    next.state = transition(record.state, EscrowEvent::IssueDisputed)?;
                    let mut texts = vec![revealed.statement.as_str()];
                    if side == OrderSide::Buyer {
                        texts.extend(evidence);
                    }
                    let words = self.sealed_evidence(side, &texts)?;
                    if let Some(open) = next.issue.as_mut() {
                        match side {
                            OrderSide::Buyer => open.buyer_key = Some(revealed.key),
                            OrderSide::Merchant => open.merchant_key = Some(revealed.key),
                        }
                        open.evidence.extend(words);
                    }
                    let dm = self
                        .seal_to_buyer(
                            &merchant,
                            &record,
                            status(&next, &describe(next.state, number)),
                        )
                        .await?;
                    inner
                        .reveals
                        .insert(revealed.event_id.as_bytes(), &inner.clock.now())?;
                    self.commit(&key, &next, Change::default(), &[dm]).await?;
                    self.count(&[Some(revealed.key), issue.key(issue.by)], |s| {
                        s.disputed += 1
                    })?;
                    tracing::info!(order = number, by = side.name(), "issue disputed");
                    return Ok(view(&next));
                }
            }
        };
        self.after_settling(merchant, settling).await
    }

    /// `order_resolve` by `admin`: a disputed order, or one whose issue went unanswered past
    /// its window, settled `outcome`'s way. Asked again with the same outcome it finishes
    /// what is left and changes nothing else (no second audit entry).
    pub async fn resolve_issue(
        &self,
        admin: &PublicKey,
        merchant: PublicKey,
        number: u64,
        outcome: IssueOutcome,
        note: Option<&str>,
    ) -> Result<IssueView, EscrowError> {
        if note.is_some_and(|n| n.len() > MAX_NOTE_BYTES) {
            return Err(EscrowRefusal::Reveal(format!(
                "note must be at most {MAX_NOTE_BYTES} bytes"
            ))
            .into());
        }
        let inner = &self.inner;
        let settling = {
            let _guard = inner.lock.lock().await;
            let key = order_key(&merchant, number);
            let Some(record) = inner.orders.get(&key)? else {
                return Err(EscrowRefusal::NoSuchOrder(number).into());
            };
            let Some(issue) = record.issue.clone() else {
                return Err(EscrowRefusal::NoIssue(number).into());
            };
            if let Some(settled) = issue.outcome {
                if settled != outcome {
                    return Err(EscrowRefusal::AlreadySettled { number, settled }.into());
                }
                Settling {
                    refund: record.state == EscrowState::Refunding,
                    key,
                    credited: Sats::ZERO,
                }
            } else {
                let mut record = record;
                match record.state {
                    EscrowState::Disputed => {}
                    EscrowState::IssueMarked if inner.clock.now() >= issue.answer_by => {
                        record.state = transition(record.state, EscrowEvent::IssueUnanswered)?;
                        self.count(&[issue.key(issue.by)], |s| s.disputed += 1)?;
                    }
                    EscrowState::IssueMarked => {
                        return Err(EscrowRefusal::AwaitingAnswer {
                            number,
                            until: issue.answer_by,
                        }
                        .into())
                    }
                    state => return Err(EscrowRefusal::NoOpenIssue { number, state }.into()),
                }
                let (buyer_sat, merchant_sat) = parts(record.total, outcome);
                let entry = AuditEntry {
                    at: inner.clock.now(),
                    admin: admin.to_hex(),
                    action: format!("order_resolve:{}", outcome_name(outcome)),
                    offer: format!("{}:{number}", merchant.to_hex()),
                    detail: format!(
                        "{} sat to the buyer (locked to {}), {} sat to the merchant's balance{}",
                        buyer_sat.0,
                        issue.buyer_key.unwrap_or(record.buyer).to_hex(),
                        merchant_sat.0,
                        note.map(|n| format!("; {n}")).unwrap_or_default()
                    ),
                };
                // A split is neither side's win or loss.
                let decided = match outcome {
                    IssueOutcome::BuyerWins => Some((OrderSide::Buyer, OrderSide::Merchant)),
                    IssueOutcome::MerchantWins => Some((OrderSide::Merchant, OrderSide::Buyer)),
                    IssueOutcome::Split => None,
                };
                let settling = self
                    .settle_locked(merchant, key, record, outcome, Some(entry))
                    .await?;
                if let Some((winner, loser)) = decided {
                    self.count(&[issue.key(winner)], |s| s.won += 1)?;
                    self.count(&[issue.key(loser)], |s| s.lost += 1)?;
                }
                tracing::info!(
                    order = number,
                    outcome = outcome_name(outcome),
                    "an admin resolved an order's issue"
                );
                settling
            }
        };
        self.after_settling(merchant, settling).await
    }

    /// Records `outcome` for the order at `key` (under the escrow lock): the merchant's part
    /// credited, the buyer's part started as a locked-token refund, `audit` with them.
    async fn settle_locked(
        &self,
        merchant: PublicKey,
        key: Vec<u8>,
        record: OrderRecord,
        outcome: IssueOutcome,
        audit: Option<AuditEntry>,
    ) -> Result<Settling, EscrowError> {
        let number = record.number;
        let (_, merchant_sat) = parts(record.total, outcome);
        let mut next = record.clone();
        if let Some(issue) = next.issue.as_mut() {
            issue.outcome = Some(outcome);
            issue.merchant_part = merchant_sat;
        }
        if outcome == IssueOutcome::MerchantWins {
            next.state = transition(record.state, EscrowEvent::ResolvedForMerchant)?;
            self.credit_merchant(merchant, number, &key, &record, next, audit)
                .await?;
            return Ok(Settling {
                key,
                refund: false,
                credited: record.total,
            });
        }
        next.state = transition(record.state, EscrowEvent::RefundStarted)?;
        next.refund = Some(RefundPlan::Token {
            operation: None,
            note: None,
        });
        let balance = match merchant_sat {
            Sats::ZERO => None,
            part => {
                let now = self.balance(&merchant)?;
                let credited = now
                    .checked_add(part)
                    .map_err(|e| EscrowError::Books(e.to_string()))?;
                Some((merchant.to_bytes().to_vec(), credited))
            }
        };
        let change = Change {
            ledger: Some((
                refund_ledger_key(&key),
                LedgerEntry {
                    amount: next.held(),
                    done: false,
                },
            )),
            balance,
            audit,
            ..Change::default()
        };
        self.commit(&key, &next, change, &[]).await?;
        Ok(Settling {
            key,
            refund: true,
            credited: merchant_sat,
        })
    }

    /// The side effects a settlement recorded: the buyer's locked token made and sent, the
    /// merchant's credit paid out to its destination.
    async fn after_settling(
        &self,
        merchant: PublicKey,
        settling: Settling,
    ) -> Result<IssueView, EscrowError> {
        if settling.refund {
            self.advance_refund(&settling.key).await?;
        }
        if settling.credited > Sats::ZERO {
            // The credit is booked; a payout that fails leaves it in the balance.
            match self.then_pay_out(merchant, settling.credited).await {
                Ok(settled) => {
                    if let Payout::Failed(why) = settled.payout {
                        tracing::warn!(reason = %why, "a merchant's issue settlement stays in its balance");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a merchant's issue settlement stays in its balance")
                }
            }
        }
        let record = self
            .inner
            .orders
            .get(&settling.key)?
            .ok_or_else(|| EscrowError::Books("a settled order vanished".to_owned()))?;
        Ok(view(&record))
    }
}

/// (the buyer's part, the merchant's part) of `total` for `outcome`: a split gives the
/// merchant half rounded down, the buyer the rest.
pub fn parts(total: Sats, outcome: IssueOutcome) -> (Sats, Sats) {
    match outcome {
        IssueOutcome::BuyerWins => (total, Sats::ZERO),
        IssueOutcome::MerchantWins => (Sats::ZERO, total),
        IssueOutcome::Split => {
            let merchant = Sats(total.0 / 2);
            (Sats(total.0 - merchant.0), merchant)
        }
    }
}

/// The outcome as the wire names it.
pub fn outcome_name(outcome: IssueOutcome) -> &'static str {
    match outcome {
        IssueOutcome::BuyerWins => "buyer_wins",
        IssueOutcome::MerchantWins => "merchant_wins",
        IssueOutcome::Split => "split",
    }
}

fn view(record: &OrderRecord) -> IssueView {
    let issue = record.issue.as_ref();
    let settled = issue.and_then(|i| i.outcome);
    let (buyer_sat, merchant_sat) = settled.map_or((Sats::ZERO, Sats::ZERO), |outcome| {
        parts(record.total, outcome)
    });
    IssueView {
        order: record.number,
        order_id: record.buyer_order_id.clone(),
        state: record.state,
        marked_by: issue.map_or(OrderSide::Buyer, |i| i.by),
        answer_by: issue.map_or(0, |i| i.answer_by),
        buyer_key: issue.and_then(|i| i.buyer_key).map(|k| k.to_hex()),
        merchant_key: issue.and_then(|i| i.merchant_key).map(|k| k.to_hex()),
        outcome: settled,
        buyer_sat: buyer_sat.0,
        merchant_sat: merchant_sat.0,
        locked_to: (buyer_sat > Sats::ZERO)
            .then(|| record.buyer_lock())
            .flatten()
            .map(|k| k.to_hex()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_of_every_outcome_add_up_to_the_total() {
        for total in [0u64, 1, 2, 3, 610, 1121, u64::MAX] {
            for outcome in [
                IssueOutcome::BuyerWins,
                IssueOutcome::MerchantWins,
                IssueOutcome::Split,
            ] {
                let (buyer, merchant) = parts(Sats(total), outcome);
                assert_eq!(
                    u128::from(buyer.0) + u128::from(merchant.0),
                    u128::from(total)
                );
            }
        }
        assert_eq!(
            parts(Sats(611), IssueOutcome::Split),
            (Sats(306), Sats(305))
        );
        assert_eq!(
            parts(Sats(610), IssueOutcome::Split),
            (Sats(305), Sats(305))
        );
    }
}
