//! Bills paid from sales (menus 7 and 8): the merchant becomes an exchange maker without an
//! invoice. soko opens a session of its own for the bill ([`Sessions::open_internal`]) under
//! a fresh key, so nothing the exchange sends or publishes names the merchant; moves escrow,
//! bond and fee out of the merchant's balance into it as a token
//! ([`EscrowService::withdraw_token`]); lists the offer ([`Exchange::create_funded`]); and,
//! once the offer has ended and its money has moved, sweeps what the session holds (the bond
//! back, or everything when the offer never listed) into the balance again
//! ([`EscrowService::credit_token`]).
//!
//! Tree `ussd_bills`: merchant (32) ‖ bill id → the [`BillRecord`] as JSON, sealed by the
//! vault (it names the bill's number). Each stage is written before the step after it, and
//! every step is idempotent (keyed by the bill id), so [`UssdService::tick_bills`] carries a
//! bill a crash interrupted on from where it stopped. While a bill is not swept its session
//! is held (`bill` hold), so it never expires and never refunds by itself.

use nostr_sdk::Keys;

use super::*;
use crate::exchange::{ExchangeError, OfferState};
use crate::money::Sats;
use crate::proto::exchange::{BillArgs, OfferCreateArgs};
use crate::sessions::SessionError;

/// The hold a bill puts on its session.
const HOLD: &str = "bill";
/// The session-wallet operation of a bill's sweep.
const SWEEP_OP: &str = "bill-sweep";

/// Where a bill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillStage {
    /// Its session is open; nothing moved yet.
    Opened,
    /// The total is in its session.
    Funded,
    /// On the exchange as `offer`.
    Listed,
    /// The exchange refused it; its session's ecash goes back.
    Failed,
    /// Sweeping `sweep` sats back into the balance.
    Sweeping,
    /// Done: the session's ecash is back in the balance and the session closed.
    Swept,
}

/// One bill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BillRecord {
    /// soko's id (not the offer's).
    pub id: String,
    /// The merchant paying.
    pub merchant: PublicKey,
    /// When.
    pub created_at: u64,
    /// The offer's terms.
    pub args: OfferCreateArgs,
    /// Escrow, bond and fee: what left the balance.
    pub total: Sats,
    /// The internal session holding it.
    pub session: String,
    /// The session's key (fresh, its secret never kept).
    pub key: PublicKey,
    /// Where it stands.
    pub stage: BillStage,
    /// The exchange's offer id, once listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// Why the exchange refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// What the sweep takes back (recorded before the token is made).
    #[serde(default)]
    pub sweep: Sats,
}

/// The offer's terms for a bill typed on the keypad.
pub(super) fn offer_args(choice: &BillChoice, reference: &str, amount: &str) -> OfferCreateArgs {
    OfferCreateArgs {
        fiat_amount: amount.to_owned(),
        currency: Some(choice.currency.clone()),
        provider: choice.provider.clone(),
        bill: BillArgs {
            kind: choice.kind.clone(),
            reference: reference.to_owned(),
            note: None,
        },
        sats: None,
        premium: None,
        stake: Vec::new(),
        outputs: Vec::new(),
    }
}

fn bill_key(merchant: &PublicKey, id: &str) -> Vec<u8> {
    [merchant.to_bytes().as_slice(), id.as_bytes()].concat()
}

/// A session id for quotes (the exchange reads a session's default currency; a bill always
/// names its currency).
const QUOTE_SESSION: &str = "ussd-bill-quote";

impl Inner {
    /// What the exchange asks for `args`, or its refusal as text.
    pub(super) fn quote_bill(
        &self,
        args: &OfferCreateArgs,
    ) -> Result<Result<crate::exchange::Amounts, String>, UssdError> {
        match self.exchange.quote(QUOTE_SESSION, args) {
            Ok(amounts) => Ok(Ok(amounts)),
            Err(ExchangeError::Refused(why)) => Ok(Err(why.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    fn unseal_bill(&self, sealed: &str) -> Result<BillRecord, UssdError> {
        Ok(serde_json::from_str(&self.vault.unseal(sealed)?)?)
    }

    /// The merchant's bill `id`.
    pub(super) fn bill_record(
        &self,
        merchant: &PublicKey,
        id: &str,
    ) -> Result<Option<BillRecord>, UssdError> {
        self.bills
            .get(&bill_key(merchant, id))?
            .map(|sealed| self.unseal_bill(&sealed))
            .transpose()
    }

    /// The merchant's bills, newest first.
    pub(super) fn bill_records(&self, merchant: &PublicKey) -> Result<Vec<BillRecord>, UssdError> {
        let mut bills = Vec::new();
        for entry in self.bills.raw().scan_prefix(merchant.to_bytes()) {
            let (_, bytes) = entry.map_err(StoreError::from)?;
            let sealed: String = self.bills.decode(&bytes)?;
            bills.push(self.unseal_bill(&sealed)?);
        }
        bills.sort_by_key(|b| std::cmp::Reverse(b.created_at));
        Ok(bills)
    }

    /// A bill as the menu shows it.
    pub(super) fn bill_detail(&self, record: &BillRecord) -> Result<BillDetail, UssdError> {
        let args = &record.args;
        let provider = self
            .exchange
            .providers()
            .all()
            .ok()
            .and_then(|all| all.into_iter().find(|p| p.id == args.provider))
            .map_or_else(|| args.provider.clone(), |p| p.name);
        let summary = format!(
            "{} {} {provider}",
            args.currency.as_deref().unwrap_or(""),
            args.fiat_amount
        );
        let (state, escrow, receipt) = match (&record.offer, record.stage) {
            (Some(offer), _) => {
                let view = self.exchange.status(&record.session, offer)?;
                let receipt = view.receipt.as_ref().map(|r| {
                    r.text
                        .clone()
                        .or_else(|| r.image.clone())
                        .unwrap_or_default()
                });
                (view.state, Sats(view.amounts.escrow), receipt)
            }
            (None, BillStage::Failed | BillStage::Sweeping | BillStage::Swept) => {
                ("FAILED".to_owned(), Sats::ZERO, None)
            }
            (None, _) => ("STARTING".to_owned(), Sats::ZERO, None),
        };
        let confirmable = state == OfferState::ReceiptSubmitted.name();
        Ok(BillDetail {
            line: BillLine {
                id: record.id.clone(),
                summary,
                state,
            },
            escrow,
            receipt,
            confirmable,
        })
    }
}

impl UssdService {
    /// `PayBill`: the bill recorded, funded from the balance and listed.
    pub(super) async fn pay_bill(
        &self,
        merchant: PublicKey,
        args: OfferCreateArgs,
    ) -> Result<Outcome, UssdError> {
        let inner = &self.inner;
        let amounts = match inner.quote_bill(&args)? {
            Ok(amounts) => amounts,
            Err(why) => return Ok(Outcome::Refused(why)),
        };
        let total = amounts.maker_invoice();
        let balance = inner.escrow.balance(&merchant)?;
        if balance < total {
            return Ok(Outcome::Refused(format!(
                "that takes {} sat; your balance is {} sat",
                total.0, balance.0
            )));
        }
        let key = Keys::generate().public_key();
        let opened = inner.purses.open_internal(key)?;
        let record = BillRecord {
            id: new_bill_id(),
            merchant,
            created_at: inner.escrow.clock().now(),
            args,
            total,
            session: opened.id,
            key,
            stage: BillStage::Opened,
            offer: None,
            failed: None,
            sweep: Sats::ZERO,
        };
        self.save_bill(&record)?;
        // Held before any ecash enters: the session then outlives its expiry until swept.
        inner.purses.hold(&record.session, HOLD)?;
        let record = self.advance(record).await?;
        match record.stage {
            BillStage::Listed => Ok(Outcome::BillOffered { id: record.id }),
            _ => Ok(Outcome::Refused(format!(
                "not offered: {}. Your balance is kept",
                record.failed.as_deref().unwrap_or("try again later")
            ))),
        }
    }

    /// `ConfirmBill`: the merchant confirms the payer's receipt; the bond comes back.
    pub(super) async fn confirm_bill(
        &self,
        merchant: PublicKey,
        id: &str,
    ) -> Result<Outcome, UssdError> {
        let Some(record) = self.inner.bill_record(&merchant, id)? else {
            return Ok(Outcome::Refused("that bill is gone".to_owned()));
        };
        let Some(offer) = &record.offer else {
            return Ok(Outcome::Refused("that bill is not on offer".to_owned()));
        };
        match self.inner.exchange.confirm(&record.session, offer).await {
            Ok(_) => {}
            Err(ExchangeError::Refused(why)) => return Ok(Outcome::Refused(why.to_string())),
            Err(e) => return Err(e.into()),
        }
        // The bond is back in the bill's session: into the balance at once.
        self.advance(record).await?;
        Ok(Outcome::Done)
    }

    /// Carries every unfinished bill on (after a crash, and once an offer ended by its
    /// windows); call it every few seconds. A failing bill is logged and tried next time.
    pub async fn tick_bills(&self) -> Result<(), UssdError> {
        let mut open = Vec::new();
        for entry in self.inner.bills.iter() {
            let (_, sealed) = entry?;
            let record = self.inner.unseal_bill(&sealed)?;
            if record.stage != BillStage::Swept {
                open.push(record);
            }
        }
        for record in open {
            if let Err(e) = self.advance(record).await {
                tracing::warn!(error = %e, "a bill could not be carried on; tried again later");
            }
        }
        Ok(())
    }

    /// Moves `record` on as far as it goes now.
    async fn advance(&self, mut record: BillRecord) -> Result<BillRecord, UssdError> {
        let inner = &self.inner;
        loop {
            match record.stage {
                BillStage::Opened => {
                    inner.purses.hold(&record.session, HOLD)?;
                    let token = match inner
                        .escrow
                        .withdraw_token(record.merchant, record.total, &withdrawal_key(&record.id))
                        .await
                    {
                        Ok(token) => token,
                        Err(EscrowError::Refused(why)) => {
                            record.failed = Some(why.to_string());
                            record.stage = BillStage::Failed;
                            self.save_bill(&record)?;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    inner.purses.receive(&record.session, &token).await?;
                    record.stage = BillStage::Funded;
                    self.save_bill(&record)?;
                }
                BillStage::Funded => {
                    // A crash after the exchange recorded the offer and before this stage
                    // did: the bill's session has that one offer, adopted rather than made
                    // twice from the same ecash.
                    let made = inner
                        .exchange
                        .list(&record.session)?
                        .offers
                        .into_iter()
                        .next();
                    let offer = match made {
                        Some(view) => view.offer,
                        None => match inner
                            .exchange
                            .create_funded(&record.session, record.key, record.args.clone())
                            .await
                        {
                            Ok(view) => view.offer,
                            Err(ExchangeError::Refused(why)) => {
                                record.failed = Some(why.to_string());
                                record.stage = BillStage::Failed;
                                self.save_bill(&record)?;
                                continue;
                            }
                            Err(e) => return Err(e.into()),
                        },
                    };
                    record.offer = Some(offer);
                    record.stage = BillStage::Listed;
                    self.save_bill(&record)?;
                    tracing::info!(bill = %record.id, "a merchant's bill is on offer");
                }
                BillStage::Listed => {
                    let Some(offer) = record.offer.as_deref() else {
                        return Err(UssdError::Engine("a listed bill without its offer"));
                    };
                    let Some(offer) = inner.exchange.offer(offer)? else {
                        return Err(UssdError::Engine("a bill's offer vanished"));
                    };
                    if !offer.state.is_final() || offer.settling() {
                        return Ok(record);
                    }
                    self.start_sweep(&mut record).await?;
                }
                BillStage::Failed => self.start_sweep(&mut record).await?,
                BillStage::Sweeping => {
                    if record.sweep > Sats::ZERO {
                        let token = inner
                            .purses
                            .token(&record.session, record.sweep, None, SWEEP_OP)
                            .await?;
                        inner
                            .escrow
                            .credit_token(record.merchant, &token, &sweep_key(&record.id))
                            .await?;
                    }
                    // Emptied: the session goes now, before the stage says so, so that a
                    // crash in between repeats these idempotent steps rather than leaving an
                    // empty session held for ever.
                    inner.purses.release(&record.session, HOLD)?;
                    match inner.purses.close_internal(&record.session).await {
                        Ok(_) | Err(SessionError::Refused(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    record.stage = BillStage::Swept;
                    self.save_bill(&record)?;
                    tracing::info!(bill = %record.id, back_sat = record.sweep.0, "a bill's session is swept back into the balance");
                }
                BillStage::Swept => return Ok(record),
            }
        }
    }

    /// Records what the sweep takes: all the session holds now (nothing enters it any more).
    async fn start_sweep(&self, record: &mut BillRecord) -> Result<(), UssdError> {
        record.sweep = self.inner.purses.balance_of(&record.session).await?;
        record.stage = BillStage::Sweeping;
        self.save_bill(record)
    }

    fn save_bill(&self, record: &BillRecord) -> Result<(), UssdError> {
        let json = serde_json::to_string(record)?;
        let sealed = self.inner.vault.seal(&json)?;
        self.inner
            .bills
            .insert(&bill_key(&record.merchant, &record.id), &sealed)?;
        Ok(())
    }
}

fn withdrawal_key(id: &str) -> String {
    format!("bill:{id}")
}

fn sweep_key(id: &str) -> String {
    format!("bill:{id}:sweep")
}

/// 8 random bytes, hex.
fn new_bill_id() -> String {
    use nostr_sdk::secp256k1::rand::{rngs::OsRng, RngCore};
    let mut bytes = [0u8; 8];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
