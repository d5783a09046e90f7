//! The merchant's USSD account: the first PIN (after the activation code), PIN checks with
//! their lockouts, PIN changes and resets.

use super::*;

impl UssdService {
    /// Sets the first PIN, under the merchant's lock: only with its unused activation code,
    /// which is then used up. The PIN is saved before the code is used up, so a crash in
    /// between leaves a PIN (and a stale code that no screen asks for any more), never a
    /// used code and no PIN.
    pub(super) async fn first_pin(
        &self,
        merchant: &PublicKey,
        code: &Secret,
        pin: &Secret,
    ) -> Result<Outcome, UssdError> {
        let merchants = &self.inner.merchants;
        if self.account(merchant)?.pin_hash.is_some() {
            return Ok(Outcome::Refused(
                "A PIN is set already. Please dial again.".to_owned(),
            ));
        }
        if !merchants.check_activation(merchant, &code.0)? {
            return Ok(Outcome::Refused(
                "That activation code was used or replaced. Ask for a new one.".to_owned(),
            ));
        }
        self.set_pin(merchant, pin).await?;
        merchants.redeem_activation(merchant, &code.0)?;
        tracing::info!(merchant = %merchant, "activation code used; first USSD PIN set");
        Ok(Outcome::Done)
    }

    /// Lifts the merchant's lock (the operator's `ussd_reset`); with `new_code`, forgets its
    /// PIN and issues a new activation code.
    pub async fn reset(
        &self,
        merchant: &PublicKey,
        new_code: bool,
    ) -> Result<Option<ActivationCode>, UssdError> {
        let key = account_key(merchant);
        let guard = self.lock(&key).await;
        let result = (|| -> Result<Option<ActivationCode>, UssdError> {
            let account = self.account(merchant)?.reset(new_code);
            let code = if new_code {
                Some(self.inner.merchants.issue_activation(merchant)?)
            } else {
                None
            };
            self.inner.accounts.insert(&merchant.to_bytes(), &account)?;
            Ok(code)
        })();
        drop(guard);
        self.unlock(&key);
        result
    }

    /// Checks a PIN or an activation code under the merchant's lock and records the
    /// verdict: both count towards the same lock. `now` is the hop's: a lock it sets
    /// reads "in 15 min" on the screen the same hop shows, however long argon2 took.
    pub(super) async fn check(
        &self,
        merchant: &PublicKey,
        typed: Entered<'_>,
        now: u64,
    ) -> Result<PinVerdict, UssdError> {
        let key = account_key(merchant);
        let guard = self.lock(&key).await;
        let result = async {
            let account = self.account(merchant)?;
            if let Some(until) = account.locked(now) {
                return Ok(PinVerdict::Locked { until });
            }
            let right = match typed {
                Entered::Activation(code) => {
                    self.inner.merchants.check_activation(merchant, &code.0)?
                }
                Entered::Pin(pin) => {
                    let Some(stored) = account.pin_hash.clone() else {
                        return Ok(PinVerdict::Wrong { tries_left: 0 });
                    };
                    let typed = pin.0.clone();
                    // argon2 is slow on purpose: off the async threads.
                    tokio::task::spawn_blocking(move || pin::verify(&stored, &typed)).await?
                }
            };
            let rule = Lockout {
                tries: self.inner.config.pin_tries,
                secs: self.inner.config.lockout_secs,
                timed: self.inner.config.timed_lockouts,
            };
            let (next, verdict) = account.record(right, now, rule);
            self.inner.accounts.insert(&merchant.to_bytes(), &next)?;
            if let PinVerdict::Locked { .. } = verdict {
                tracing::warn!(merchant = %merchant, "too many wrong USSD PINs; access locked");
            }
            Ok(verdict)
        }
        .await;
        drop(guard);
        self.unlock(&key);
        result
    }

    pub(super) async fn set_pin(
        &self,
        merchant: &PublicKey,
        pin: &Secret,
    ) -> Result<(), UssdError> {
        let typed = pin.0.clone();
        let hash = tokio::task::spawn_blocking(move || pin::hash(&typed)).await??;
        let mut account = self.account(merchant)?;
        account.pin_hash = Some(hash);
        account.wrong = 0;
        self.inner.accounts.insert(&merchant.to_bytes(), &account)?;
        Ok(())
    }

    pub(super) fn account(&self, merchant: &PublicKey) -> Result<Account, UssdError> {
        Ok(self
            .inner
            .accounts
            .get(&merchant.to_bytes())?
            .unwrap_or_default())
    }
}

/// What a caller typed to prove who it is.
pub(super) enum Entered<'a> {
    Pin(&'a Secret),
    Activation(&'a Secret),
}

pub(super) fn account_key(merchant: &PublicKey) -> Vec<u8> {
    [b"account:".as_slice(), &merchant.to_bytes()].concat()
}
