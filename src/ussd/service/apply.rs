//! Applying the engine's actions through the domain APIs (merchants, escrow, listings, the
//! agents' desk), and what each came to.

use super::accounts::account_key;
use super::*;

impl UssdService {
    /// Applies an action through the domain APIs. `now` is the hop's, for the PIN checks
    /// (see `check`).
    pub(super) async fn apply(
        &self,
        merchant: PublicKey,
        action: &Action,
        now: u64,
    ) -> Result<Outcome, UssdError> {
        let inner = &self.inner;
        let refused = |e: MerchantError| match e {
            MerchantError::Refused(why) => Ok(Outcome::Refused(why.to_string())),
            other => Err(UssdError::from(other)),
        };
        // Withdrawals and address changes are confirmed with the PIN: a session left open on
        // a borrowed phone must not move the money.
        match action {
            Action::Withdraw { pin, .. }
            | Action::SetLightningAddress { pin, .. }
            | Action::PayBill { pin, .. }
            | Action::ConfirmBill { pin, .. } => {
                match self.check(&merchant, Entered::Pin(pin), now).await? {
                    PinVerdict::Right => {}
                    PinVerdict::Wrong { tries_left } => {
                        return Ok(Outcome::WrongPin { tries_left })
                    }
                    PinVerdict::Locked { until } => return Ok(Outcome::Locked { until }),
                }
            }
            _ => {}
        }
        match action {
            Action::CheckPin(pin) => {
                Ok(match self.check(&merchant, Entered::Pin(pin), now).await? {
                    PinVerdict::Right => Outcome::Done,
                    PinVerdict::Wrong { tries_left } => Outcome::WrongPin { tries_left },
                    PinVerdict::Locked { until } => Outcome::Locked { until },
                })
            }
            Action::CheckActivation(code) => Ok(
                match self
                    .check(&merchant, Entered::Activation(code), now)
                    .await?
                {
                    PinVerdict::Right => Outcome::Done,
                    PinVerdict::Wrong { tries_left } => Outcome::WrongPin { tries_left },
                    PinVerdict::Locked { until } => Outcome::Locked { until },
                },
            ),
            Action::SetPin { code, pin } => {
                let key = account_key(&merchant);
                let guard = self.lock(&key).await;
                let outcome = self.first_pin(&merchant, code, pin).await;
                drop(guard);
                self.unlock(&key);
                outcome
            }
            Action::Activate => {
                // Activated with the notices to its agents in one transaction.
                if inner.desk.activate(&merchant).await? {
                    // Its profile and DM relay list (issue 15).
                    listing::sync_merchant(&inner.merchants, &inner.publisher, &merchant).await?;
                    tracing::info!(merchant = %merchant, "merchant onboarded over USSD; profile published");
                }
                Ok(Outcome::Done)
            }
            Action::Deliver { number, code } => {
                match inner
                    .escrow
                    .deliver_and_pay_out(merchant, *number, &code.0)
                    .await
                {
                    Err(EscrowError::Refused(why)) => Ok(Outcome::Refused(why.to_string())),
                    Err(e) => Err(e.into()),
                    Ok(settled) => {
                        let payout = match settled.payout {
                            Payout::NotConfigured | Payout::Nothing => None,
                            Payout::Sent { amount, .. } => {
                                Some(format!("{} sat paid to your Lightning address.", amount.0))
                            }
                            Payout::Token(amount) => Some(format!(
                                "{} sat sent to your Nostr inbox as ecash.",
                                amount.0
                            )),
                            Payout::Pending(amount) => Some(format!(
                                "{} sat is on its way to your Lightning address; the mint has not confirmed it yet.",
                                amount.0
                            )),
                            Payout::Failed(why) => {
                                Some(format!("Not paid out ({why}); it stays in your balance."))
                            }
                        };
                        Ok(Outcome::Delivered {
                            released: settled.credited,
                            payout,
                            balance: settled.balance,
                        })
                    }
                }
            }
            Action::SetPrice { id, price } => {
                let Some(mut product) = inner.merchants.product(&merchant, id)? else {
                    return Ok(Outcome::Refused(
                        "that product is hidden or gone".to_owned(),
                    ));
                };
                // NIP-15 prices are JSON numbers; a whole number from the keypad is exact.
                product.price = *price as f64;
                match self.put_product(&merchant, &product).await {
                    Err(UssdError::Merchant(e)) => refused(e),
                    other => other.map(|()| Outcome::Done),
                }
            }
            Action::SetStock { id, quantity } => {
                let Some(mut product) = inner.merchants.product(&merchant, id)? else {
                    return Ok(Outcome::Refused(
                        "that product is hidden or gone".to_owned(),
                    ));
                };
                product.quantity = Some(*quantity);
                match self.put_product(&merchant, &product).await {
                    Err(UssdError::Merchant(e)) => refused(e),
                    other => other.map(|()| Outcome::Done),
                }
            }
            Action::Hide { id } => match inner.merchants.hide_product(&merchant, id) {
                Err(e) => refused(e),
                Ok(_) => {
                    listing::withdraw_product(
                        &inner.merchants,
                        &inner.publisher,
                        &merchant,
                        id,
                        "taken off sale by the merchant",
                    )
                    .await?;
                    Ok(Outcome::Done)
                }
            },
            Action::Show { id } => match inner.merchants.show_product(&merchant, id) {
                Err(e) => refused(e),
                Ok(product) => {
                    self.publish_product(&merchant, &product).await?;
                    Ok(Outcome::Done)
                }
            },
            Action::Withdraw { destination, .. } => {
                match inner.escrow.pay_out_to(merchant, destination).await? {
                    Payout::Sent { amount, fee } => Ok(Outcome::Withdrawn {
                        amount,
                        fee,
                        balance: inner.escrow.balance(&merchant)?,
                    }),
                    // A withdrawal to a typed-in address is always Lightning.
                    Payout::Token(amount) => Ok(Outcome::Withdrawn {
                        amount,
                        fee: crate::money::Sats::ZERO,
                        balance: inner.escrow.balance(&merchant)?,
                    }),
                    Payout::Pending(amount) => Ok(Outcome::WithdrawalPending {
                        amount,
                        balance: inner.escrow.balance(&merchant)?,
                    }),
                    Payout::Failed(why) => Ok(Outcome::Refused(format!(
                        "not sent: {why}. Your balance is kept."
                    ))),
                    Payout::Nothing | Payout::NotConfigured => {
                        Ok(Outcome::Refused("nothing to withdraw".to_owned()))
                    }
                }
            }
            Action::SetLightningAddress { address, .. } => {
                match inner
                    .merchants
                    .set_lightning_address(&merchant, Some(address))
                {
                    Ok(_) => Ok(Outcome::Done),
                    Err(e) => refused(e),
                }
            }
            Action::Approve { id } => decided(inner.desk.approve(&merchant, *id).await),
            Action::Reject { id } => decided(inner.desk.reject(&merchant, *id).await),
            Action::Unlink { agent } => {
                let agent = PublicKey::from_hex(agent)
                    .map_err(|e| UssdError::StoredKey(format!("agent: {e}")))?;
                inner.desk.unlink(&merchant, &agent).await?;
                Ok(Outcome::Done)
            }
            Action::MarkIssue { number } => {
                let marked = inner
                    .escrow
                    .mark_issue(merchant, *number, crate::escrow::Party::Merchant, None)
                    .await;
                match marked {
                    Err(EscrowError::Refused(why)) => Ok(Outcome::Refused(why.to_string())),
                    Err(e) => Err(e.into()),
                    Ok(_) => Ok(Outcome::Done),
                }
            }
            Action::AnswerIssue { number, concede } => {
                let answer = if *concede {
                    crate::escrow::IssueAnswer::Concede
                } else {
                    crate::escrow::IssueAnswer::Dispute
                };
                let answered = inner
                    .escrow
                    .answer_issue(
                        merchant,
                        *number,
                        crate::escrow::Party::Merchant,
                        answer,
                        None,
                    )
                    .await;
                match answered {
                    Err(EscrowError::Refused(why)) => Ok(Outcome::Refused(why.to_string())),
                    Err(e) => Err(e.into()),
                    Ok(_) => Ok(Outcome::Done),
                }
            }
            Action::ShareBuyer(share) => {
                inner.desk.links().set_shares_buyer(&merchant, *share)?;
                Ok(Outcome::Done)
            }
            Action::PayBill {
                choice,
                reference,
                amount,
                ..
            } => {
                self.pay_bill(merchant, bills::offer_args(choice, reference, amount))
                    .await
            }
            Action::ConfirmBill { id, .. } => self.confirm_bill(merchant, id).await,
            Action::ChangePin { old, new } => {
                Ok(match self.check(&merchant, Entered::Pin(old), now).await? {
                    PinVerdict::Right => {
                        self.set_pin(&merchant, new).await?;
                        Outcome::Done
                    }
                    PinVerdict::Wrong { tries_left } => Outcome::WrongPin { tries_left },
                    PinVerdict::Locked { until } => Outcome::Locked { until },
                })
            }
        }
    }

    /// Saves a product and republishes it, like `product_put`.
    pub(super) async fn put_product(
        &self,
        merchant: &PublicKey,
        product: &Product,
    ) -> Result<(), UssdError> {
        let inner = &self.inner;
        listing::put_product(&inner.merchants, &inner.publisher, merchant, product).await?;
        Ok(())
    }

    pub(super) async fn publish_product(
        &self,
        merchant: &PublicKey,
        product: &Product,
    ) -> Result<(), UssdError> {
        let inner = &self.inner;
        listing::republish_product(&inner.merchants, &inner.publisher, merchant, product).await?;
        Ok(())
    }
}

/// A merchant's decision on a proposal, as the menu shows it: refusals (the proposal is
/// gone, decided otherwise, its content no longer passes) are read out; failures are not.
pub(super) fn decided(decided: Result<ProposalKind, DeskError>) -> Result<Outcome, UssdError> {
    match decided {
        Ok(_) => Ok(Outcome::Done),
        Err(DeskError::Refused(why)) => Ok(Outcome::Refused(why.to_string())),
        Err(DeskError::Merchant(MerchantError::Refused(why))) => {
            Ok(Outcome::Refused(why.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}
