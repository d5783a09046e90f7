//! A token of another mint on `[mint] foreign_allow`: melted there to pay an invoice of
//! soko's mint, whose ecash then pays the order as a token of soko's mint would.
//!
//! The steps, each recorded before its side effect:
//! - `Received`: the other mint is asked (NUT-07) whether the token is unspent, then soko's
//!   mint for an invoice and the other mint for a melt quote paying it, the invoice as large
//!   as the token pays after that mint's input fee and Lightning fee reserve. A token that
//!   would then fall short of the order, or pay more fees than `[mint]
//!   foreign_max_fee_percent` allows, or a mint that cannot be reached, is handed back
//!   untouched: nothing was spent.
//! - `Melting`: the quotes recorded; the melt (the token's own proofs, no swap first). On a
//!   later try the other mint's answer on the quote decides: paid is kept, unpaid is melted
//!   again (the wallet's recovery at start rolled back a melt cut short), pending waits.
//! - `Minting`: melted; the fees and the melt's change (the unused fee reserve, NUT-08)
//!   recorded. The change goes back to the buyer as a token of that mint (its send
//!   recorded before it is made), then soko's wallet mints the paid invoice (an invoice
//!   already issued was minted by a run before the stop; cdk's mint saga holds the proofs).
//! - `Redeemed`: from here on as a token of soko's mint, the fees told with the order.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use cdk::amount::SplitTarget;
use cdk::mint_url::MintUrl;
use cdk::nuts::{KeySetInfo, MeltQuoteState, MintQuoteState, PaymentMethod, Token};
use cdk::wallet::MeltConfirmOptions;
use cdk::Amount;
use cdk_common::wallet::{TransactionDirection, TransactionStatus};
use serde::{Deserialize, Serialize};

use super::{proof_ys, Intake, Step};
use crate::escrow::service::{EscrowError, EscrowService};
use crate::money::Sats;
use crate::wallet::foreign::ForeignMints;
use crate::wallet::Wallet;

/// Quote pairs tried to find the largest invoice a token pays: the fee reserve depends on
/// the invoice, so a second pair usually fits and a third rarely needed.
const QUOTE_TRIES: usize = 4;
/// How long a pass waits for soko's mint to see its invoice paid by the melt.
const INVOICE_WAIT: Duration = Duration::from_secs(10);

/// What a melt at another mint cost and brought, kept with the intake (the fee is told to
/// the buyer and stays on record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Melted {
    /// The other mint.
    pub(crate) mint: String,
    /// The token's value.
    pub(crate) value: Sats,
    /// What reached soko's mint.
    pub(crate) arrived: Sats,
    /// The other mint's fees: input fee and Lightning fee together.
    pub(crate) fees: Sats,
    /// The unused fee reserve it gave back (NUT-08), returned to the buyer.
    pub(crate) change: Sats,
    /// The change's token once made, sealed; emptied when the intake is done.
    #[serde(default)]
    pub(crate) change_token: Option<String>,
    /// The send making that token, recorded before it is made.
    #[serde(default)]
    pub(crate) change_operation: Option<String>,
}

impl Melted {
    /// The sentence telling the buyer what the melt cost.
    pub(crate) fn told(&self) -> String {
        format!(
            "your token of {} held {}; that mint's fees (input and Lightning) came to {} and {} reached soko's mint",
            self.mint, self.value, self.fees, self.arrived
        )
    }
}

/// Why a token of another mint is not taken.
pub(super) enum Refused {
    /// Nothing was spent: the buyer gets the token back.
    HandBack(String),
    /// It is spent: there is nothing to hand back.
    Spent,
}

impl EscrowService {
    /// The other mints taken, once the daemon set them.
    pub(super) fn foreign(&self) -> Option<&ForeignMints> {
        self.inner.foreign.get()
    }

    /// The mint of `token` when it is another mint that soko takes.
    pub(super) fn foreign_mint_of(&self, token: &str) -> Option<MintUrl> {
        let mint = Token::from_str(token).ok()?.mint_url().ok()?;
        (mint != self.inner.wallet.mint_url && self.foreign().is_some_and(|f| f.allows(&mint)))
            .then_some(mint)
    }

    async fn foreign_wallet(&self, mint: &MintUrl) -> Result<&Wallet, EscrowError> {
        let foreign = self
            .foreign()
            .ok_or_else(|| EscrowError::Books(format!("no wallet at {mint}")))?;
        foreign.wallet(mint).await?.ok_or_else(|| {
            EscrowError::Books(format!(
                "{mint} is no longer in [mint] foreign_allow; the intake waits until it is again"
            ))
        })
    }

    /// `Received` for a token of another mint: its quotes, or why it is not taken.
    pub(super) async fn quote_foreign(
        &self,
        mint: &MintUrl,
        token: &str,
        total: Sats,
    ) -> Result<Result<Step, Refused>, EscrowError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Refused::HandBack(format!(
                "the mint {mint} cannot be reached just now ({e}); try again later"
            ))
        };
        let wallet = match self.foreign_wallet(mint).await {
            Ok(wallet) => wallet,
            Err(e) => return Ok(Err(unreachable(&e))),
        };
        let parsed = Token::from_str(token)
            .map_err(|e| EscrowError::Books(format!("a recorded token does not read: {e}")))?;
        match spent_at(wallet, &parsed).await {
            Ok(true) => return Ok(Err(Refused::Spent)),
            Ok(false) => {}
            Err(e) => return Ok(Err(unreachable(&e))),
        }
        let (value, input_fee) = match value_and_fee(wallet, &parsed).await {
            Ok(found) => found,
            Err(e) => return Ok(Err(unreachable(&e))),
        };
        let bound = self
            .foreign()
            .map(|f| f.bound().limit(value))
            .unwrap_or(Sats::ZERO);
        let short = |reserve: Sats, arrives: Sats| {
            Refused::HandBack(format!(
                "short payment: the token holds {value} of {mint}; after that mint's fees (input {input_fee}, Lightning reserve {reserve}) {arrives} would reach soko's mint, and the order costs {total}"
            ))
        };
        let Some(mut amount) = value.checked_sub(input_fee).filter(|a| *a >= total) else {
            return Ok(Err(short(
                Sats::ZERO,
                value.checked_sub(input_fee).unwrap_or(Sats::ZERO),
            )));
        };
        for _ in 0..QUOTE_TRIES {
            let invoice = self
                .inner
                .wallet
                .mint_quote(
                    PaymentMethod::BOLT11,
                    Some(amount.into()),
                    Some(format!("soko: ecash of {mint}")),
                    None,
                )
                .await;
            self.inner.metrics.wallet_op("mint_quote", invoice.is_ok());
            let invoice = invoice?;
            let melt = match wallet
                .melt_quote(PaymentMethod::BOLT11, &invoice.request, None, None)
                .await
            {
                Ok(melt) => melt,
                Err(e) if e.is_definitive_failure() => {
                    return Ok(Err(Refused::HandBack(format!(
                        "the mint {mint} will not pay soko's invoice ({e})"
                    ))))
                }
                Err(e) => return Ok(Err(unreachable(&e))),
            };
            let reserve = Sats::from(melt.fee_reserve);
            let fees = input_fee.checked_add(reserve).map_err(books)?;
            let needed = amount.checked_add(fees).map_err(books)?;
            if needed <= value {
                if fees > bound {
                    return Ok(Err(Refused::HandBack(format!(
                        "the fees of {mint} for this token (input {input_fee}, Lightning reserve {reserve}) are more than soko lets a payment pay ({bound})"
                    ))));
                }
                return Ok(Ok(Step::Melting {
                    mint: mint.to_string(),
                    mint_quote: invoice.id,
                    melt_quote: melt.id,
                    amount,
                    value,
                }));
            }
            let smaller = value.checked_sub(fees).filter(|a| *a < amount);
            match smaller {
                Some(smaller) if smaller >= total => amount = smaller,
                _ => return Ok(Err(short(reserve, smaller.unwrap_or(Sats::ZERO)))),
            }
        }
        Ok(Err(Refused::HandBack(format!(
            "the mint {mint} quoted no invoice the token could pay; try again later"
        ))))
    }

    /// `Melting`: the melt, or what became of the one a stop cut short. `Ok(None)` when the
    /// token turned out spent (by someone else: the melt never went through).
    pub(super) async fn melt_foreign(
        &self,
        intake: &Intake,
        mint: &str,
        melt_quote: &str,
        amount: Sats,
        value: Sats,
    ) -> Result<Result<Melted, Refused>, EscrowError> {
        let mint_url = MintUrl::from_str(mint).map_err(|e| EscrowError::Books(e.to_string()))?;
        let wallet = self.foreign_wallet(&mint_url).await?;
        match crate::wallet::melt_state(wallet, melt_quote).await? {
            MeltQuoteState::Paid => {}
            MeltQuoteState::Pending => {
                return Err(EscrowError::Books(format!(
                    "the melt at {mint} is pending; looked at again next pass"
                )))
            }
            MeltQuoteState::Unpaid | MeltQuoteState::Failed | MeltQuoteState::Unknown => {
                let token = self.inner.vault.unseal(&intake.token)?;
                let prepared = match wallet
                    .prepare_melt_token(melt_quote, &token, HashMap::new())
                    .await
                {
                    Ok(prepared) => prepared,
                    Err(cdk::Error::TokenAlreadySpent) => return Ok(Err(Refused::Spent)),
                    Err(e) if e.is_definitive_failure() => {
                        return Ok(Err(Refused::HandBack(format!(
                            "the mint {mint} would not melt the token ({e})"
                        ))))
                    }
                    Err(e) => return Err(e.into()),
                };
                let melted = prepared
                    .confirm_with_options(MeltConfirmOptions::skip_swap())
                    .await;
                self.inner.metrics.wallet_op("foreign_melt", melted.is_ok());
                match melted {
                    Ok(melted) if melted.state() == MeltQuoteState::Paid => {}
                    Ok(melted) => {
                        return Err(EscrowError::Books(format!(
                            "the melt at {mint} is {}; looked at again next pass",
                            melted.state()
                        )))
                    }
                    Err(cdk::Error::TokenAlreadySpent) => return Ok(Err(Refused::Spent)),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let (melted, fees) = melt_outcome(wallet, melt_quote).await?;
        if Sats::from(melted) != amount {
            return Err(EscrowError::Books(format!(
                "the melt at {mint} paid {melted} sat, not the {amount} quoted"
            )));
        }
        let fees = Sats::from(fees);
        let change = value
            .checked_sub(amount)
            .and_then(|rest| rest.checked_sub(fees))
            .ok_or_else(|| {
                EscrowError::Books(format!(
                    "the melt at {mint} took {fees} of fees beyond the token's {value}"
                ))
            })?;
        Ok(Ok(Melted {
            mint: mint.to_owned(),
            value,
            arrived: amount,
            fees,
            change,
            change_token: None,
            change_operation: None,
        }))
    }

    /// `Minting`: the change back to the buyer as a token of the other mint, then soko's
    /// invoice minted. Returns what soko's wallet received.
    pub(super) async fn mint_foreign(
        &self,
        key: &[u8],
        intake: &mut Intake,
        mint_quote: &str,
    ) -> Result<Sats, EscrowError> {
        let inner = &self.inner;
        let Some(melted) = intake.melted.clone() else {
            return Err(EscrowError::Books(
                "a melted intake without its melt".to_owned(),
            ));
        };
        if melted.change > Sats::ZERO && melted.change_token.is_none() {
            let mint_url =
                MintUrl::from_str(&melted.mint).map_err(|e| EscrowError::Books(e.to_string()))?;
            let wallet = self.foreign_wallet(&mint_url).await?;
            let earlier = match &melted.change_operation {
                Some(op) => crate::wallet::recorded_token(wallet, op)
                    .await
                    .map_err(|e| EscrowError::Books(e.to_string()))?,
                None => None,
            };
            let token = match earlier {
                Some(token) => token,
                None => {
                    let prepared = wallet
                        .prepare_send(Amount::from(melted.change), Default::default())
                        .await?;
                    if let Some(m) = intake.melted.as_mut() {
                        m.change_operation = Some(prepared.operation_id().to_string());
                    }
                    inner.ecash.insert(key, intake)?;
                    let sent = prepared.confirm(None).await;
                    self.inner.metrics.wallet_op("foreign_send", sent.is_ok());
                    sent?.to_string()
                }
            };
            if let Some(m) = intake.melted.as_mut() {
                m.change_token = Some(inner.vault.seal(&token)?);
            }
            inner.ecash.insert(key, intake)?;
        }
        // The melt paid the invoice; soko's mint may see it a moment later.
        let deadline = tokio::time::Instant::now() + INVOICE_WAIT;
        loop {
            let quote = inner.wallet.check_mint_quote_status(mint_quote).await?;
            match quote.state {
                MintQuoteState::Issued => break,
                MintQuoteState::Paid => {
                    let minted = inner
                        .wallet
                        .mint(mint_quote, SplitTarget::default(), None)
                        .await;
                    inner.metrics.wallet_op("mint", minted.is_ok());
                    minted?;
                    break;
                }
                MintQuoteState::Unpaid if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                MintQuoteState::Unpaid => {
                    return Err(EscrowError::Books(format!(
                        "soko's invoice {mint_quote} is not paid yet although {} melted for it; looked at again next pass",
                        melted.mint
                    )))
                }
            }
        }
        Ok(melted.arrived)
    }
}

/// True when the mint says any of the token's proofs is spent or being spent (NUT-07).
pub(super) async fn spent_at(wallet: &Wallet, token: &Token) -> Result<bool, EscrowError> {
    let ys = proof_ys(token)
        .map_err(EscrowError::Books)?
        .iter()
        .map(|y| cdk::nuts::PublicKey::from_slice(y))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EscrowError::Books(e.to_string()))?;
    let states = wallet
        .mint_connector()
        .post_check_state(cdk::nuts::CheckStateRequest { ys })
        .await?;
    Ok(states
        .states
        .iter()
        .any(|s| s.state != cdk::nuts::State::Unspent))
}

/// The token's value and the input fee its mint charges to spend its proofs (NUT-02).
async fn value_and_fee(wallet: &Wallet, token: &Token) -> Result<(Sats, Sats), cdk::Error> {
    let keysets: Vec<KeySetInfo> = wallet
        .keysets(Default::default())
        .await?
        .into_iter()
        .map(|k| KeySetInfo {
            id: k.id,
            unit: k.unit,
            active: k.active.unwrap_or(true),
            input_fee_ppk: k.input_fee_ppk,
            final_expiry: k.final_expiry,
        })
        .collect();
    let proofs = token.proofs(&keysets)?;
    let value: Amount = proofs
        .iter()
        .map(|p| p.amount)
        .try_fold(Amount::ZERO, |sum, a| sum.checked_add(a))
        .ok_or(cdk::Error::AmountOverflow)?;
    let fee = wallet.get_proofs_fee(&proofs).await?.total;
    Ok((Sats::from(value), Sats::from(fee)))
}

/// What the wallet's completed melt of `quote` paid out and its fees (input and Lightning:
/// what the proofs held, less the amount and the change).
async fn melt_outcome(wallet: &Wallet, quote: &str) -> Result<(Amount, Amount), EscrowError> {
    for attempt in 0..2 {
        let outgoing = wallet
            .list_transactions(Some(TransactionDirection::Outgoing))
            .await?;
        if let Some(t) = outgoing.into_iter().find(|t| {
            t.quote_id.as_deref() == Some(quote) && t.status == TransactionStatus::Completed
        }) {
            return Ok((t.amount, t.fee));
        }
        if attempt == 0 {
            // A melt the mint finished while soko was stopped: the wallet records it once
            // it settles its own side.
            wallet.finalize_pending_melts().await?;
        }
    }
    Err(EscrowError::Books(format!(
        "the melt {quote} is paid at its mint and not yet settled in soko's wallet there; looked at again next pass"
    )))
}

fn books(e: impl std::fmt::Display) -> EscrowError {
    EscrowError::Books(e.to_string())
}
