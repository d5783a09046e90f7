//! Orders that arrive paid: Shopstr's checkout sends the order and a Cashu token in one
//! message (`kinds/gamma.md`, "Shopstr checkout"). The token is redeemed into the escrow
//! wallet at once, and the order is then paid exactly as if its invoice had been: delivery
//! code, stock, held funds, notices.
//!
//! An intake moves through [`Step`]s, each recorded before the side effect it leads to:
//! - the token and its proofs (`Y`s) are recorded before the mint sees it, the proofs
//!   claimed for this intake alone, so a token can pay for one order only;
//! - the mint is asked (NUT-07) whether the token is still unspent before the swap, and the
//!   intake marked as swapping; so a "spent" answer to soko's first swap means someone
//!   else spent it;
//! - the swap at the mint is cdk's receive saga, which the wallet's recovery at start
//!   finishes; a retry after a stop that finds the token spent takes the wallet's completed
//!   receive of those proofs as soko's own. (cdk marks such a receive completed even when
//!   the mint had no outputs to give back, so a buyer spending the token elsewhere in the
//!   very moment soko stops mid-swap would get the order unpaid; the books' reconciliation
//!   then shows the wallet short by that much.)
//! - the order is recorded paid, and what goes back to the buyer (an overpayment, or the
//!   whole value when the order could no longer be taken) recorded in the same transaction;
//! - the send operation making that token is recorded before it is made
//!   ([`crate::wallet::recorded_token`]).
//!
//! A crash anywhere leaves an intake short of `Done`: the next pass of the payment watch
//! (or the same message handled again) carries it on from its step, once.

mod foreign;
mod paid;
mod redeem;

pub(crate) use foreign::Melted;

use std::collections::BTreeSet;
use std::str::FromStr;

use cdk::nuts::{CurrencyUnit, Token};
use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::service::{tx_error, EscrowError, EscrowService};
use crate::failpoint;
use crate::money::Sats;
use crate::outbound::{Note, Scheme};
use crate::proto::nip15::Order;
use crate::proto::shopstr;

/// An order paid with a Cashu token, from before the token is redeemed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Intake {
    /// The token, sealed (ecash at rest is a secret); emptied once done.
    token: String,
    /// The NIP-15 form of the order, sealed (it holds the buyer's address); emptied once
    /// done.
    order: String,
    /// How the buyer talks to the merchant.
    scheme: Scheme,
    /// Unix seconds it was recorded.
    at: u64,
    /// How far it got.
    step: Step,
    /// The token's proofs (`Y`, hex), claimed for this intake: released with it.
    #[serde(default)]
    ys: Vec<String>,
    /// For a token of another mint, once melted: what it cost and brought.
    #[serde(default)]
    melted: Option<Melted>,
}

/// How long a finished intake is kept: a copy of its message redelivered meanwhile is
/// recognised. After it, the order's own record and the mint (which knows the proofs spent)
/// refuse a replay.
const KEEP_DONE_SECS: u64 = 7 * 24 * 3600;

/// How far an intake got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
enum Step {
    /// Recorded; not yet handed to the mint.
    Received,
    /// Checked unspent at the mint and handed to it to swap; the swap may have gone through
    /// (a crash can stop it anywhere in there: the wallet's recovery at start finishes it).
    Swapping,
    /// A token of another mint: soko's mint's invoice and the other mint's melt quote paying
    /// it recorded; the melt may have gone through (see `foreign`).
    Melting {
        /// The other mint.
        mint: String,
        /// The invoice of soko's mint (the escrow wallet's mint quote).
        mint_quote: String,
        /// The other mint's melt quote paying it.
        melt_quote: String,
        /// The invoice's amount: what reaches soko's mint.
        amount: Sats,
        /// The token's value.
        value: Sats,
    },
    /// Melted (the intake's `melted` says for what); the change goes back and the invoice
    /// of soko's mint is minted.
    Minting {
        /// The invoice of soko's mint.
        mint_quote: String,
    },
    /// Redeemed into the escrow wallet: `received` sats.
    Redeemed {
        /// What the swap gave the wallet (the token's value less the mint's input fee).
        received: Sats,
    },
    /// `back` sats go back to the buyer as a token: an overpayment of order `number`, or
    /// all of it when no order was made (`number` is `None`, `reason` says why).
    Returning {
        /// The order, when one was made.
        number: Option<u64>,
        /// What goes back.
        back: Sats,
        /// Why no order was made.
        reason: Option<String>,
        /// The wallet's send operation, recorded before the token is made.
        operation: Option<String>,
    },
    /// Answered for good.
    Done,
}

/// The `escrow/ecash` key of an order.
fn intake_key(merchant: &PublicKey, buyer: &PublicKey, order_id: &str) -> Vec<u8> {
    [
        merchant.to_bytes().as_slice(),
        &buyer.to_bytes(),
        order_id.as_bytes(),
    ]
    .concat()
}

/// The proofs' `Y`s (hash of each secret to the curve): what the mint marks spent, and
/// what the wallet's transactions list.
fn proof_ys(token: &Token) -> Result<BTreeSet<[u8; 33]>, String> {
    token
        .token_secrets()
        .into_iter()
        .map(|secret| {
            cdk::dhke::hash_to_curve(secret.as_bytes())
                .map(|y| y.to_bytes())
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Why a token is not taken before anything is done with it (the buyer keeps it).
fn precheck(
    token: &Token,
    own_mint: &cdk::mint_url::MintUrl,
    foreign: Option<&crate::wallet::foreign::ForeignMints>,
    total: Sats,
) -> Result<Sats, String> {
    if token.unit().is_some_and(|unit| unit != CurrencyUnit::Sat) {
        return Err("the token is not in sat; soko's escrow takes sat ecash only".to_owned());
    }
    let mint = token
        .mint_url()
        .map_err(|_| "the token holds ecash of several mints; send one mint's".to_owned())?;
    if &mint != own_mint && !foreign.is_some_and(|f| f.allows(&mint)) {
        return Err(format!(
            "the token is ecash of {mint}, a mint soko does not take; pay with ecash of {own_mint}"
        ));
    }
    let value = token
        .value()
        .map(Sats::from)
        .map_err(|e| format!("the token's amounts do not add up ({e})"))?;
    if value < total {
        return Err(format!(
            "short payment: the token holds {value} and the order costs {total}"
        ));
    }
    Ok(value)
}

impl EscrowService {
    /// An order paid with `token`, from `buyer` (the key soko answers) to `merchant`. Every
    /// answer goes to the buyer through the outbox; an error means nothing was recorded
    /// (the token was not taken) and the caller tells the buyer so. Once recorded, a
    /// failure is logged and the payment watch's next pass carries the intake on.
    pub async fn take_ecash_order(
        &self,
        merchant: PublicKey,
        buyer: PublicKey,
        scheme: Scheme,
        order: Order,
        token: &str,
    ) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let key = intake_key(&merchant, &buyer, &order.id);
        let _one = inner.ecash_lock.lock().await;
        if inner.ecash.get(&key)?.is_none() {
            let buyer_hex = buyer.to_hex();
            let refuse = |why: String, back: Option<&str>| {
                let mut content = format!("Order not accepted: {why}.");
                if let Some(token) = back {
                    content.push_str(&format!(
                        " Your payment was not taken; here it is back: {token}"
                    ));
                }
                Note::Tagged {
                    kind: 14,
                    tags: shopstr::info_tags(
                        &buyer_hex,
                        &order.id,
                        Some(shopstr::Status::Canceled),
                    ),
                    content,
                }
            };
            // The same buyer's order id names one order, whatever paid for it.
            if inner.index.get(&key)?.is_some() {
                let note = refuse("this order id is already taken".to_owned(), Some(token));
                return self.answer(&merchant, buyer, scheme, &note).await;
            }
            let parsed = match Token::from_str(token) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let note = refuse(format!("the payment is not a Cashu token ({e})"), None);
                    return self.answer(&merchant, buyer, scheme, &note).await;
                }
            };
            let total = match self.price(&merchant, &order)? {
                Ok((_, priced)) => priced.total_sats,
                Err(why) => {
                    let note = refuse(why, Some(token));
                    return self.answer(&merchant, buyer, scheme, &note).await;
                }
            };
            if let Err(why) = precheck(&parsed, &inner.wallet.mint_url, self.foreign(), total) {
                let note = refuse(why, Some(token));
                return self.answer(&merchant, buyer, scheme, &note).await;
            }
            let ys = match proof_ys(&parsed) {
                Ok(ys) => ys,
                Err(e) => {
                    let note = refuse(format!("the token's proofs do not read ({e})"), None);
                    return self.answer(&merchant, buyer, scheme, &note).await;
                }
            };
            let intake = Intake {
                token: inner.vault.seal(token)?,
                order: inner.vault.seal(&serde_json::to_string(&order)?)?,
                scheme,
                at: inner.clock.now(),
                step: Step::Received,
                ys: ys.iter().map(cdk::util::hex::encode).collect(),
                melted: None,
            };
            if !self.claim_proofs(&key, &intake, &ys)? {
                let note = refuse("this token already paid for another order".to_owned(), None);
                return self.answer(&merchant, buyer, scheme, &note).await;
            }
            failpoint::crash("ecash-recorded", inner.ecash.raw());
        }
        if let Err(e) = self.carry_on(&key).await {
            tracing::error!(error = %e, "an order paid with ecash stopped half-way; the next pass carries it on");
        }
        Ok(())
    }

    /// Records the intake and claims its token's proofs for it, in one transaction: false
    /// (nothing written) when another intake holds one of them.
    fn claim_proofs(
        &self,
        key: &[u8],
        intake: &Intake,
        ys: &BTreeSet<[u8; 33]>,
    ) -> Result<bool, EscrowError> {
        let inner = &self.inner;
        let encoded = inner.ecash.encode(intake)?;
        let owner = inner.ecash_proofs.encode(&key.to_vec())?;
        let claimed =
            (inner.ecash.raw(), inner.ecash_proofs.raw()).transaction(|(intakes, proofs)| {
                for y in ys {
                    if proofs.get(y)?.is_some_and(|held| held != owner) {
                        return Err(ConflictableTransactionError::Abort(()));
                    }
                }
                for y in ys {
                    proofs.insert(y.as_slice(), owner.clone())?;
                }
                intakes.insert(key, encoded.clone())?;
                Ok(())
            });
        match claimed {
            Ok(()) => Ok(true),
            Err(sled::transaction::TransactionError::Abort(())) => Ok(false),
            Err(e) => Err(tx_error(e)),
        }
    }

    /// Carries on every intake a stop or a failure left short of done (the payment watch's
    /// pass). Each is on its own: one that fails is logged and tried again next pass.
    pub(super) async fn resume_ecash(&self) -> Result<(), EscrowError> {
        let mut open = Vec::new();
        let now = self.inner.clock.now();
        for entry in self.inner.ecash.iter() {
            let (key, intake) = entry?;
            if intake.step != Step::Done {
                open.push(key.to_vec());
            } else if intake.at.saturating_add(KEEP_DONE_SECS) <= now {
                self.forget(&key, &intake)?;
            }
        }
        for key in open {
            let _one = self.inner.ecash_lock.lock().await;
            if let Err(e) = self.carry_on(&key).await {
                tracing::error!(error = %e, "an order paid with ecash could not be carried on; retrying next pass");
            }
        }
        Ok(())
    }

    /// Orders paid with ecash that soko keeps a record of: under way, or finished within
    /// the last week (a copy of their message is recognised).
    pub fn ecash_intakes(&self) -> usize {
        self.inner.ecash.len()
    }

    /// Drops a finished intake past its keeping time, with its claims on the proofs.
    fn forget(&self, key: &[u8], intake: &Intake) -> Result<(), EscrowError> {
        let ys: Vec<Vec<u8>> = intake
            .ys
            .iter()
            .filter_map(|y| cdk::util::hex::decode(y).ok())
            .collect();
        (self.inner.ecash.raw(), self.inner.ecash_proofs.raw())
            .transaction(|(intakes, proofs)| {
                for y in &ys {
                    proofs.remove(y.as_slice())?;
                }
                intakes.remove(key)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)
    }

    /// Moves the intake at `key` as far as it goes. Call with `ecash_lock` held.
    async fn carry_on(&self, key: &[u8]) -> Result<(), EscrowError> {
        let inner = &self.inner;
        let merchant = PublicKey::from_slice(key.get(..32).unwrap_or_default())
            .map_err(|_| EscrowError::Books("malformed ecash intake key".to_owned()))?;
        let buyer = PublicKey::from_slice(key.get(32..64).unwrap_or_default())
            .map_err(|_| EscrowError::Books("malformed ecash intake key".to_owned()))?;
        // True once this call handed the token to the mint itself (not a run before).
        let mut fresh = false;
        loop {
            let Some(mut intake) = inner.ecash.get(key)? else {
                return Ok(());
            };
            let order: Order = match intake.step {
                Step::Done => return Ok(()),
                _ => serde_json::from_str(&inner.vault.unseal(&intake.order)?)?,
            };
            match intake.step.clone() {
                Step::Received => {
                    let token = inner.vault.unseal(&intake.token)?;
                    // Another mint taken when the token came and dropped from `[mint]
                    // foreign_allow` since: nothing was done with it, so it goes back.
                    if let Some(mint) = Token::from_str(&token)
                        .ok()
                        .and_then(|t| t.mint_url().ok())
                        .filter(|m| {
                            m != &inner.wallet.mint_url && self.foreign_mint_of(&token).is_none()
                        })
                    {
                        let why =
                            format!("the token is ecash of {mint}, a mint soko does not take");
                        let note = self.refusal_back(buyer, &order, &why, &token);
                        return self.finish(key, intake, &merchant, buyer, &note).await;
                    }
                    if let Some(mint) = self.foreign_mint_of(&token) {
                        let total = match self.price(&merchant, &order)? {
                            Ok((_, priced)) => priced.total_sats,
                            Err(why) => {
                                let note = self.refusal_back(buyer, &order, &why, &token);
                                return self.finish(key, intake, &merchant, buyer, &note).await;
                            }
                        };
                        intake.step = match self.quote_foreign(&mint, &token, total).await? {
                            Ok(step) => step,
                            Err(refused) => {
                                let note = self.refused(buyer, &order, refused, &token);
                                return self.finish(key, intake, &merchant, buyer, &note).await;
                            }
                        };
                        inner.ecash.insert(key, &intake)?;
                        // The crash test's point: quoted, the melt not yet asked for.
                        failpoint::crash("ecash-quoted", inner.ecash.raw());
                        continue;
                    }
                    // Asked first, so that a token spent before soko saw it is told apart
                    // for sure from one a swap of soko's spent (see `redeem`).
                    if self.spent_at_mint(&token).await? {
                        let note = self.refusal(buyer, &order, "the token is already spent");
                        return self.finish(key, intake, &merchant, buyer, &note).await;
                    }
                    intake.step = Step::Swapping;
                    inner.ecash.insert(key, &intake)?;
                    fresh = true;
                }
                Step::Melting {
                    mint,
                    mint_quote,
                    melt_quote,
                    amount,
                    value,
                } => {
                    let melted = match self
                        .melt_foreign(&intake, &mint, &melt_quote, amount, value)
                        .await?
                    {
                        Ok(melted) => melted,
                        Err(refused) => {
                            let token = inner.vault.unseal(&intake.token)?;
                            let note = self.refused(buyer, &order, refused, &token);
                            return self.finish(key, intake, &merchant, buyer, &note).await;
                        }
                    };
                    tracing::info!(
                        mint = %melted.mint,
                        value = melted.value.0,
                        fees = melted.fees.0,
                        change = melted.change.0,
                        arrived = melted.arrived.0,
                        "a token of another mint melted to pay soko's invoice"
                    );
                    intake.melted = Some(melted);
                    intake.step = Step::Minting { mint_quote };
                    inner.ecash.insert(key, &intake)?;
                    // The crash test's point: melted there, not yet minted here.
                    failpoint::crash("ecash-melted", inner.ecash.raw());
                }
                Step::Minting { mint_quote } => {
                    let received = self.mint_foreign(key, &mut intake, &mint_quote).await?;
                    intake.step = Step::Redeemed { received };
                    inner.ecash.insert(key, &intake)?;
                }
                Step::Swapping => {
                    let token = inner.vault.unseal(&intake.token)?;
                    intake.step = match self.redeem(&token, fresh).await? {
                        Ok(received) => Step::Redeemed { received },
                        Err(why) => {
                            let note = self.refusal(buyer, &order, &why);
                            return self.finish(key, intake, &merchant, buyer, &note).await;
                        }
                    };
                    inner.ecash.insert(key, &intake)?;
                    // The crash test's point: redeemed, and no order recorded yet.
                    failpoint::crash("ecash-redeemed", inner.ecash.raw());
                }
                Step::Redeemed { received } => {
                    self.record_order(key, intake, &merchant, buyer, &order, received)
                        .await?;
                }
                Step::Returning {
                    number,
                    back,
                    reason,
                    operation,
                } => {
                    let token = match operation {
                        Some(op) => match self.recorded_token(&op).await? {
                            Some(token) => token,
                            None => self.make_token(key, &mut intake, back).await?,
                        },
                        None => self.make_token(key, &mut intake, back).await?,
                    };
                    let content = match (number, reason) {
                        (Some(number), _) => format!(
                            "Order #{number}: you paid {back} more than its total; here they are back: {token}"
                        ),
                        (None, reason) => format!(
                            "Order not accepted: {}. Your {back} come back as this token: {token}",
                            reason.unwrap_or_default()
                        ),
                    };
                    // Melted at another mint first: the fees said, its change handed back.
                    let content = match (&intake.melted, number) {
                        (Some(melted), None) => {
                            let change = match &melted.change_token {
                                Some(sealed) => format!(
                                    " The {} of fee reserve it did not use come back as this token of that mint: {}",
                                    melted.change,
                                    inner.vault.unseal(sealed)?
                                ),
                                None => String::new(),
                            };
                            format!("{content} ({}).{change}", melted.told())
                        }
                        _ => content,
                    };
                    let tags = match number {
                        Some(_) => shopstr::change_tags(&buyer.to_hex(), &order.id, &token),
                        None => {
                            let mut tags = shopstr::info_tags(
                                &buyer.to_hex(),
                                &order.id,
                                Some(shopstr::Status::Canceled),
                            );
                            tags.push(vec!["payment".into(), "ecash".into(), token.clone()]);
                            tags
                        }
                    };
                    let note = Note::Tagged {
                        kind: 14,
                        tags,
                        content,
                    };
                    return self.finish(key, intake, &merchant, buyer, &note).await;
                }
                Step::Done => return Ok(()),
            }
        }
    }

    /// A refusal of the order after its token was recorded, the token handed back as it
    /// came (nothing of it was spent).
    fn refusal_back(&self, buyer: PublicKey, order: &Order, why: &str, token: &str) -> Note {
        let mut note = self.refusal(buyer, order, why);
        if let Note::Tagged { content, .. } = &mut note {
            *content = format!(
                "Order not accepted: {why}. Your payment was not taken; here it is back: {token}"
            );
        }
        note
    }

    /// The refusal of a token of another mint.
    fn refused(
        &self,
        buyer: PublicKey,
        order: &Order,
        refused: foreign::Refused,
        token: &str,
    ) -> Note {
        match refused {
            foreign::Refused::HandBack(why) => self.refusal_back(buyer, order, &why, token),
            foreign::Refused::Spent => self.refusal(buyer, order, "the token is already spent"),
        }
    }

    /// A refusal of the order after its token was recorded.
    fn refusal(&self, buyer: PublicKey, order: &Order, why: &str) -> Note {
        Note::Tagged {
            kind: 14,
            tags: shopstr::info_tags(&buyer.to_hex(), &order.id, Some(shopstr::Status::Canceled)),
            content: format!("Order not accepted: {why}."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_back_from_their_stored_form() {
        let steps = [
            Step::Received,
            Step::Swapping,
            Step::Melting {
                mint: "https://mint.example".to_owned(),
                mint_quote: "q1".to_owned(),
                melt_quote: "q2".to_owned(),
                amount: Sats(980),
                value: Sats(1000),
            },
            Step::Minting {
                mint_quote: "q1".to_owned(),
            },
            Step::Redeemed {
                received: Sats(700),
            },
            Step::Returning {
                number: Some(3),
                back: Sats(90),
                reason: None,
                operation: Some("op".to_owned()),
            },
            Step::Done,
        ];
        for step in steps {
            let json = serde_json::to_string(&step).unwrap_or_default();
            assert_eq!(
                serde_json::from_str::<Step>(&json).ok(),
                Some(step),
                "{json}"
            );
        }
    }
}
