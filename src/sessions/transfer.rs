//! Ecash soko moves into a session (a trade's escrow or a forfeited bond) and the session's
//! payout address, for the exchange (through its `Purses` port, wired in the daemon).

use super::{SessionError, SessionRefusal, Sessions};
use crate::money::Sats;

impl Sessions {
    /// Takes `token` (made by soko from another session) into session `id`. A token already
    /// spent was taken before (soko made it and told it to no one), so a retry after a crash
    /// is not an error.
    pub async fn receive(&self, id: &str, token: &str) -> Result<(), SessionError> {
        let _session = self.lock(id).await;
        let mut record = self.stored(id)?;
        if !record.state.is_open() {
            return Err(SessionRefusal::Closed.into());
        }
        if !record.has_wallet {
            record.has_wallet = true;
            self.inner.records.insert(id.as_bytes(), &record)?;
        }
        let wallet = self.wallet(id).await?;
        match wallet.receive(token, Default::default()).await {
            Ok(received) => {
                self.inner.metrics.wallet_op("session_receive", true);
                self.move_held(Sats::from(received), true);
                Ok(())
            }
            Err(cdk::Error::TokenAlreadySpent) => Ok(()),
            Err(e) => {
                self.inner.metrics.wallet_op("session_receive", false);
                Err(e.into())
            }
        }
    }

    /// Sets (or clears) the Lightning address session `id`'s ecash goes to when it ends.
    pub fn set_refund_to(&self, id: &str, address: Option<&str>) -> Result<(), SessionError> {
        let sealed = match address {
            Some(address) => {
                let url = crate::lnurl::lnurlp_url(address)
                    .map_err(|e| SessionRefusal::RefundAddress(e.to_string()))?;
                self.inner
                    .rules
                    .lnurl
                    .check(&url)
                    .map_err(|e| SessionRefusal::RefundAddress(e.to_string()))?;
                Some(self.inner.vault.seal(address)?)
            }
            None => None,
        };
        let mut record = self.stored(id)?;
        if !record.state.is_open() {
            return Err(SessionRefusal::Closed.into());
        }
        record.refund_to = sealed;
        Ok(self.inner.records.insert(id.as_bytes(), &record)?)
    }

    /// True while a trade or dispute holds session `id`.
    pub fn is_held(&self, id: &str) -> Result<bool, SessionError> {
        Ok(self.inner.holds.get(id.as_bytes())?.is_some())
    }
}
