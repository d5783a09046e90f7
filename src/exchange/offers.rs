//! What a session does to offers: make, claim, cancel, submit and confirm a receipt, look.

use nostr_sdk::PublicKey;

use super::amounts::{Amounts, Side};
use super::records::{Bill, OfferRecord, Receipt, Stake, Terms, Trader};
use super::{new_id, Effects, Exchange, ExchangeError, ExchangeRefusal, OfferEvent, OfferState};
use crate::money::Sats;
use crate::proto::exchange::{
    AmountsView, BillArgs, OfferClaimArgs, OfferCreateArgs, OfferList, OfferView, ReceiptArgs,
    ReceiptView, SettingsArgs, SettingsView, MAX_BILL_NOTE_LEN, MAX_FIAT_LEN,
    MAX_RECEIPT_IMAGE_LEN, MAX_RECEIPT_TEXT_LEN,
};
use crate::proto::reputation::{BlindedRep, RepToken, MAX_REP_TOKENS};

/// Premium bounds, percent.
pub(super) const PREMIUM: (i32, i32) = (-50, 100);

/// A fiat amount in cents: digits, an optional point and at most two decimals.
pub(super) fn parse_fiat(text: &str) -> Result<u64, ExchangeRefusal> {
    let bad = |why: &str| ExchangeRefusal::Fiat(why.to_owned());
    if text.is_empty() || text.len() > MAX_FIAT_LEN {
        return Err(bad("a decimal amount like \"1500\" or \"12.50\""));
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || (text.contains('.') && frac.is_empty())
    {
        return Err(bad("a decimal amount like \"1500\" or \"12.50\""));
    }
    let whole: u64 = whole.parse().map_err(|_| bad("too large"))?;
    let frac: u64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u64>().map_err(|_| bad("bad decimals"))? * 10,
        _ => frac.parse().map_err(|_| bad("bad decimals"))?,
    };
    let cents = whole
        .checked_mul(100)
        .and_then(|c| c.checked_add(frac))
        .ok_or_else(|| bad("too large"))?;
    if cents == 0 {
        return Err(bad("must be more than zero"));
    }
    Ok(cents)
}

/// Sats for `cents` at `msat_per_cent`, `premium` percent over, rounded up.
pub(super) fn sats_at_rate(cents: u64, msat_per_cent: u64, premium: i32) -> Option<Sats> {
    let factor = u128::try_from(100i64 + i64::from(premium)).ok()?;
    let msat = u128::from(cents) * u128::from(msat_per_cent) * factor;
    let sats = msat.div_ceil(100 * 1000);
    u64::try_from(sats).ok().map(Sats)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ExchangeRefusal> {
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(ExchangeRefusal::Bill(format!(
            "{field} must be at most {max} bytes of printable text"
        )));
    }
    Ok(())
}

impl Exchange {
    /// `offer_create` in `session` (opened by `key`): the maker pays an invoice.
    pub async fn create(
        &self,
        session: &str,
        key: PublicKey,
        args: OfferCreateArgs,
    ) -> Result<OfferView, ExchangeError> {
        let amounts = self.quote(session, &args)?;
        let invoice = self
            .inner
            .purses
            .invoice(session, amounts.maker_invoice())
            .await?;
        let record = self.record(session, key, args, Some(invoice)).await?;
        self.view(&record, Side::Maker)
    }

    /// An offer whose maker's session already holds escrow, bond and fee (a merchant paying
    /// a bill from its sales): listed at once, without an invoice. The caller puts exactly
    /// [`Exchange::quote`]'s `maker_invoice()` into the session first.
    pub async fn create_funded(
        &self,
        session: &str,
        key: PublicKey,
        args: OfferCreateArgs,
    ) -> Result<OfferView, ExchangeError> {
        let record = self.record(session, key, args, None).await?;
        let _offer = self.lock(&record.id).await;
        self.listed(record.clone()).await?;
        let record = self
            .offer(&record.id)?
            .ok_or(ExchangeRefusal::UnknownOffer)?;
        self.view(&record, Side::Maker)
    }

    /// Checks an offer's terms: its escrow, bonds and fees.
    pub fn quote(&self, session: &str, args: &OfferCreateArgs) -> Result<Amounts, ExchangeError> {
        Ok(self.terms(session, args)?.1)
    }

    fn terms(
        &self,
        session: &str,
        args: &OfferCreateArgs,
    ) -> Result<(Terms, Amounts), ExchangeError> {
        let inner = &self.inner;
        let rules = &inner.rules;
        let settings = inner.settings.get(session.as_bytes())?.unwrap_or_default();
        let currency = args
            .currency
            .clone()
            .or(settings.currency)
            .ok_or_else(|| {
                ExchangeRefusal::Currency("name one (or set it with exchange_settings)".into())
            })?
            .to_ascii_uppercase();
        let cents = parse_fiat(&args.fiat_amount)?;
        let max = rules
            .max_fiat
            .get(&currency)
            .ok_or_else(|| ExchangeRefusal::Currency(format!("{currency} is not traded here")))?;
        if cents > max.saturating_mul(100) {
            return Err(ExchangeRefusal::Fiat(format!("at most {max} {currency}")).into());
        }
        if let Some(note) = &args.bill.note {
            check_len("bill.note", note, MAX_BILL_NOTE_LEN)?;
        }
        let kind: super::providers::BillKind = serde_json::from_value(serde_json::Value::String(
            args.bill.kind.clone(),
        ))
        .map_err(|_| {
            ExchangeRefusal::Bill(format!(
                "unknown bill kind {:?}",
                args.bill.kind.chars().take(32).collect::<String>()
            ))
        })?;
        let provider = inner
            .providers
            .check_bill(&args.provider, kind, &currency, &args.bill.reference)
            .map_err(|e| ExchangeRefusal::Bill(e.to_string()))?;
        let premium = args.premium.unwrap_or(0);
        if !(PREMIUM.0..=PREMIUM.1).contains(&premium) {
            return Err(ExchangeRefusal::Premium {
                min: PREMIUM.0,
                max: PREMIUM.1,
            }
            .into());
        }
        let escrow = match args.sats {
            Some(sats) => Sats(sats),
            None => {
                let rate = rules.rates.0.get(&currency).ok_or_else(|| {
                    ExchangeRefusal::Currency(format!(
                        "soko has no rate for {currency}: name the sats"
                    ))
                })?;
                sats_at_rate(cents, *rate, premium)
                    .ok_or_else(|| ExchangeRefusal::Sats("too large".into()))?
            }
        };
        if escrow < rules.min_sats || escrow > rules.max_sats {
            return Err(ExchangeRefusal::Sats(format!(
                "between {} and {} sat",
                rules.min_sats.0, rules.max_sats.0
            ))
            .into());
        }
        let amounts = Amounts::for_escrow(&rules.schedule, escrow)
            .map_err(|_| ExchangeRefusal::Sats("too large".into()))?;
        let terms = Terms {
            fiat_amount: args.fiat_amount.clone(),
            currency,
            provider: provider.id.clone(),
            provider_name: provider.name.clone(),
            premium: if args.sats.is_some() { 0 } else { premium },
        };
        Ok((terms, amounts))
    }

    /// Stores a new offer of `session`'s.
    async fn record(
        &self,
        session: &str,
        key: PublicKey,
        args: OfferCreateArgs,
        invoice: Option<super::Invoice>,
    ) -> Result<OfferRecord, ExchangeError> {
        let inner = &self.inner;
        let rules = &inner.rules;
        let (terms, amounts) = self.terms(session, &args)?;
        self.check_open_limit(session)?;
        let (stake, burn) = self.stake(&args.stake, &args.outputs)?;
        let bill = Bill {
            kind: args.bill.kind.clone(),
            reference: args.bill.reference.clone(),
            note: args.bill.note.clone(),
        };
        let sealed = inner.vault.seal(
            &serde_json::to_string(&bill).map_err(|e| ExchangeError::Internal(e.to_string()))?,
        )?;
        let now = inner.clock.now();
        let record = OfferRecord {
            id: new_id(),
            state: OfferState::Created,
            created_at: now,
            deadline: now + rules.windows.pay,
            maker: Trader {
                session: session.to_owned(),
                key,
                stake,
            },
            taker: None,
            terms,
            amounts,
            bill: sealed,
            maker_invoice: invoice,
            taker_invoice: None,
            receipt: None,
            issue: None,
            outcome: None,
            transfers: Vec::new(),
            claims: 0,
            completed_at: None,
            late: Vec::new(),
            involved: vec![session.to_owned()],
        };
        let _offer = self.lock(&record.id).await;
        self.commit(
            &record,
            Effects {
                burn,
                index: Some((session.to_owned(), Side::Maker)),
                ..Effects::default()
            },
        )?;
        inner.purses.hold(session, &hold_name(&record.id))?;
        inner.metrics.offer_created();
        tracing::info!(offer = %record.id, escrow = amounts.escrow.0, "offer created");
        Ok(record)
    }

    /// Verifies staked tokens and the outputs for their return.
    fn stake(
        &self,
        tokens: &[RepToken],
        outputs: &[BlindedRep],
    ) -> Result<(Stake, Vec<super::reputation::Spend>), ExchangeError> {
        // One fewer than the most outputs: a completion returns the stake and one more.
        if tokens.len() >= MAX_REP_TOKENS || outputs.len() > tokens.len() + 1 {
            return Err(ExchangeRefusal::Reputation(format!(
                "at most {} tokens, and at most one output more than the tokens staked",
                MAX_REP_TOKENS - 1
            ))
            .into());
        }
        let burn = if tokens.is_empty() {
            Vec::new()
        } else {
            self.inner
                .reputation
                .verify(tokens)
                .map_err(|e| ExchangeRefusal::Reputation(e.to_string()))?
        };
        let stake = Stake {
            staked: tokens.len() as u32,
            outputs: outputs.iter().map(|o| o.0.clone()).collect(),
        };
        Ok((stake, burn))
    }

    fn check_open_limit(&self, session: &str) -> Result<(), ExchangeError> {
        let mut open = 0;
        for (offer, _) in self.open_of(session)? {
            if self.inner.open.get(offer.as_bytes())?.is_some() {
                open += 1;
            }
        }
        let max = self.inner.rules.max_open_per_session;
        if open >= max {
            return Err(ExchangeRefusal::TooManyOpen(max).into());
        }
        Ok(())
    }

    /// `offer_claim` in `session`.
    pub async fn claim(
        &self,
        session: &str,
        key: PublicKey,
        args: OfferClaimArgs,
    ) -> Result<OfferView, ExchangeError> {
        let inner = &self.inner;
        let _offer = self.lock(&args.offer).await;
        let record = inner
            .offers
            .get(args.offer.as_bytes())?
            .ok_or(ExchangeRefusal::UnknownOffer)?;
        if record.state == OfferState::Created {
            // Not on the book: others are not told it exists.
            return Err(ExchangeRefusal::UnknownOffer.into());
        }
        if record.maker.session == session {
            return Err(ExchangeRefusal::OwnOffer.into());
        }
        // The same claim again (a retry, or a request soko handles again after a crash
        // lost its reply): the same answer, with the bond invoice.
        if record.taker.as_ref().is_some_and(|t| t.session == session) {
            return self.view(&record, Side::Taker);
        }
        if record.state != OfferState::InvoicePaid {
            return Err(ExchangeRefusal::WrongState {
                state: record.state,
                what: "only a listed offer can be claimed",
            }
            .into());
        }
        self.check_open_limit(session)?;
        let (stake, burn) = self.stake(&args.stake, &args.outputs)?;
        let invoice = inner
            .purses
            .invoice(session, record.amounts.taker_invoice())
            .await?;
        let now = inner.clock.now();
        let mut record = record.moved(OfferEvent::Claim)?;
        record.claims += 1;
        record.deadline = now + inner.rules.windows.claim;
        record.taker = Some(Trader {
            session: session.to_owned(),
            key,
            stake,
        });
        record.taker_invoice = Some(invoice);
        if !record.involved.iter().any(|s| s == session) {
            record.involved.push(session.to_owned());
        }
        let mut events = Vec::new();
        events.extend(self.book_event(&record)?);
        self.commit(
            &record,
            Effects {
                events,
                burn,
                index: Some((session.to_owned(), Side::Taker)),
                ..Effects::default()
            },
        )?;
        crate::failpoint::crash("exchange-claimed", inner.offers.raw());
        inner.purses.hold(session, &hold_name(&record.id))?;
        tracing::info!(offer = %record.id, "offer claimed");
        self.view(&record, Side::Taker)
    }

    /// `offer_cancel`: the maker withdraws a listed offer; everything stays with the maker.
    pub async fn cancel(&self, session: &str, offer: &str) -> Result<OfferView, ExchangeError> {
        let _offer = self.lock(offer).await;
        let (record, side) = self.party(offer, session)?;
        if side != Side::Maker {
            return Err(ExchangeRefusal::NotYourPart("maker").into());
        }
        if record.state != OfferState::InvoicePaid {
            return Err(ExchangeRefusal::WrongState {
                state: record.state,
                what: "only a listed offer without a taker can be cancelled",
            }
            .into());
        }
        let record = self
            .finish(
                record,
                OfferEvent::Cancel,
                super::amounts::Outcome::Cancelled,
                "the offer is cancelled; your ecash stays in your session",
                Effects::default(),
            )
            .await?;
        self.view(&record, Side::Maker)
    }

    /// `receipt_submit`: the taker paid the bill.
    pub async fn submit_receipt(
        &self,
        session: &str,
        args: ReceiptArgs,
    ) -> Result<OfferView, ExchangeError> {
        let _offer = self.lock(&args.offer).await;
        let (record, side) = self.party(&args.offer, session)?;
        if side != Side::Taker {
            return Err(ExchangeRefusal::NotYourPart("taker").into());
        }
        if args.text.is_none() && args.image.is_none() {
            return Err(ExchangeRefusal::EmptyReceipt.into());
        }
        if let Some(text) = &args.text {
            check_len("text", text, MAX_RECEIPT_TEXT_LEN)?;
        }
        if let Some(image) = &args.image {
            check_len("image", image, MAX_RECEIPT_IMAGE_LEN)?;
        }
        if record.state != OfferState::TakerBondPaid {
            return Err(ExchangeRefusal::WrongState {
                state: record.state,
                what: "a receipt comes after the bond is paid, once",
            }
            .into());
        }
        let now = self.inner.clock.now();
        let receipt = Receipt {
            text: args.text.clone(),
            image: args.image.clone(),
            at: now,
        };
        let mut record = record.moved(OfferEvent::Receipt)?;
        record.receipt = Some(self.inner.vault.seal(
            &serde_json::to_string(&receipt).map_err(|e| ExchangeError::Internal(e.to_string()))?,
        )?);
        record.deadline = now + self.inner.rules.windows.confirm;
        let told = self
            .notice(
                record.maker.key,
                &record,
                "the taker says the bill is paid: check it and confirm (receipt_confirm), or mark an issue",
                serde_json::json!({ "receipt": receipt_view(&receipt), "deadline": record.deadline }),
            )
            .await?;
        self.commit_events(&record, vec![told])?;
        crate::failpoint::crash("exchange-receipt", self.inner.offers.raw());
        self.view(&record, Side::Taker)
    }

    /// `receipt_confirm`: the maker got the bill paid; the taker is paid.
    pub async fn confirm(&self, session: &str, offer: &str) -> Result<OfferView, ExchangeError> {
        let _offer = self.lock(offer).await;
        let (record, side) = self.party(offer, session)?;
        if side != Side::Maker {
            return Err(ExchangeRefusal::NotYourPart("maker").into());
        }
        if record.state != OfferState::ReceiptSubmitted {
            return Err(ExchangeRefusal::WrongState {
                state: record.state,
                what: "only a submitted receipt can be confirmed",
            }
            .into());
        }
        let record = self
            .finish(
                record,
                OfferEvent::Confirm,
                super::amounts::Outcome::Completed,
                "the trade is complete",
                Effects::default(),
            )
            .await?;
        self.view(&record, Side::Maker)
    }

    /// `offer_status`.
    pub fn status(&self, session: &str, offer: &str) -> Result<OfferView, ExchangeError> {
        let (record, side) = self.party(offer, session)?;
        self.view(&record, side)
    }

    /// `offer_list`: the session's offers and claims, newest first (at most 20).
    pub fn list(&self, session: &str) -> Result<OfferList, ExchangeError> {
        let mut offers = Vec::new();
        for (offer, _) in self.open_of(session)? {
            if let Ok((record, side)) = self.party(&offer, session) {
                offers.push((record.created_at, self.view(&record, side)?));
            }
        }
        offers.sort_by_key(|o| std::cmp::Reverse(o.0));
        Ok(OfferList {
            offers: offers.into_iter().take(20).map(|(_, v)| v).collect(),
        })
    }

    /// `exchange_settings`.
    pub fn settings(
        &self,
        session: &str,
        args: SettingsArgs,
    ) -> Result<SettingsView, ExchangeError> {
        let inner = &self.inner;
        let mut settings = inner.settings.get(session.as_bytes())?.unwrap_or_default();
        if let Some(currency) = &args.currency {
            let currency = currency.to_ascii_uppercase();
            if !inner.rules.max_fiat.contains_key(&currency) {
                return Err(ExchangeRefusal::Currency(format!(
                    "{} is not traded here",
                    currency.chars().take(8).collect::<String>()
                ))
                .into());
            }
            settings.currency = Some(currency);
        }
        if let Some(address) = &args.payout_to {
            let address = address.trim();
            let address = (!address.is_empty()).then_some(address);
            inner
                .purses
                .set_payout(session, address)
                .map_err(|e| match e {
                    super::PayoutRefusal::Address(why) => {
                        ExchangeError::from(ExchangeRefusal::Payout(format!("payout_to: {why}")))
                    }
                    super::PayoutRefusal::Purse(e) => e.into(),
                })?;
            settings.payout_set = address.is_some();
        }
        inner.settings.insert(session.as_bytes(), &settings)?;
        Ok(SettingsView {
            currency: settings.currency,
            payout_set: settings.payout_set,
        })
    }

    /// The offer as `side` sees it.
    pub(super) fn view(
        &self,
        record: &OfferRecord,
        side: Side,
    ) -> Result<OfferView, ExchangeError> {
        let a = &record.amounts;
        let (invoice, invoice_sat) = match (side, record.state) {
            (Side::Maker, OfferState::Created) => (
                record.maker_invoice.as_ref().map(|i| i.bolt11.clone()),
                Some(a.maker_invoice().0),
            ),
            (Side::Taker, OfferState::Claimed) => (
                record.taker_invoice.as_ref().map(|i| i.bolt11.clone()),
                Some(a.taker_invoice().0),
            ),
            _ => (None, None),
        };
        let bill_visible = side == Side::Maker
            || matches!(
                record.state,
                OfferState::TakerBondPaid
                    | OfferState::ReceiptSubmitted
                    | OfferState::MarkedWithIssue
                    | OfferState::Disputed
                    | OfferState::Completed
            );
        let bill = if bill_visible {
            Some(self.bill(record)?)
        } else {
            None
        };
        let receipt = self.receipt(record)?.map(|r| receipt_view(&r));
        let staked = record.trader(side).map_or(0, |t| t.stake.staked);
        Ok(OfferView {
            offer: record.id.clone(),
            state: record.state.name().to_owned(),
            role: match side {
                Side::Maker => "maker",
                Side::Taker => "taker",
            }
            .to_owned(),
            fiat_amount: record.terms.fiat_amount.clone(),
            currency: record.terms.currency.clone(),
            provider: record.terms.provider.clone(),
            premium: record.terms.premium,
            amounts: amounts_view(a),
            invoice,
            invoice_sat,
            deadline: (record.deadline > 0 && !record.state.is_final()).then_some(record.deadline),
            bill,
            receipt,
            staked,
        })
    }

    /// The offer's bill, unsealed.
    pub(super) fn bill(&self, record: &OfferRecord) -> Result<BillArgs, ExchangeError> {
        let bill: Bill = serde_json::from_str(&self.inner.vault.unseal(&record.bill)?)
            .map_err(|e| ExchangeError::Internal(format!("stored bill: {e}")))?;
        Ok(BillArgs {
            kind: bill.kind,
            reference: bill.reference,
            note: bill.note,
        })
    }

    /// The offer's receipt, unsealed.
    pub(super) fn receipt(&self, record: &OfferRecord) -> Result<Option<Receipt>, ExchangeError> {
        record
            .receipt
            .as_ref()
            .map(|sealed| {
                serde_json::from_str(&self.inner.vault.unseal(sealed)?)
                    .map_err(|e| ExchangeError::Internal(format!("stored receipt: {e}")))
            })
            .transpose()
    }
}

/// The hold an offer puts on a session.
pub(super) fn hold_name(offer: &str) -> String {
    format!("offer:{offer}")
}

pub(super) fn receipt_view(r: &Receipt) -> ReceiptView {
    ReceiptView {
        text: r.text.clone(),
        image: r.image.clone(),
        at: r.at,
    }
}

pub(super) fn amounts_view(a: &Amounts) -> AmountsView {
    AmountsView {
        escrow: a.escrow.0,
        maker_bond: a.maker_bond.0,
        taker_bond: a.taker_bond.0,
        platform_fee: a.platform_fee.0,
        taker_fee: a.taker_fee.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiat_amounts() {
        assert_eq!(parse_fiat("1500"), Ok(150_000));
        assert_eq!(parse_fiat("12.5"), Ok(1_250));
        assert_eq!(parse_fiat("12.50"), Ok(1_250));
        assert_eq!(parse_fiat("0.01"), Ok(1));
        for bad in [
            "",
            "0",
            "0.00",
            "1.",
            ".5",
            "1.234",
            "-1",
            "1e3",
            "１",
            "99999999999999999",
            "1,5",
        ] {
            assert!(parse_fiat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rate_conversion_rounds_up() {
        // 1 KES = 100 cents at 7_000 msat per cent = 700 sat; +2 % = 714.
        assert_eq!(sats_at_rate(100, 7_000, 0), Some(Sats(700)));
        assert_eq!(sats_at_rate(100, 7_000, 2), Some(Sats(714)));
        assert_eq!(sats_at_rate(1, 1, 0), Some(Sats(1)));
        assert_eq!(sats_at_rate(100, 7_000, -50), Some(Sats(350)));
    }
}
