//! Cashu tokens leaving the escrow wallet (refunds, payouts to merchants who take ecash).
//!
//! The wallet's send operation id is recorded before a token is made, and after a crash the
//! token is read back with [`crate::wallet::recorded_token`] (why, there).

use super::service::{EscrowError, EscrowService};
use crate::money::Sats;

/// A send whose operation id must be recorded before [`Prepared::confirm`].
pub(super) struct Prepared<'a> {
    /// The wallet's operation id, to record.
    pub(super) operation: String,
    send: cdk::wallet::PreparedSend<'a>,
    service: EscrowService,
}

impl Prepared<'_> {
    /// Makes the token, booking the NUT-02 input fee its swap paid.
    pub(super) async fn confirm(self) -> Result<String, EscrowError> {
        let fee = Sats::from(self.send.swap_fee());
        let sent = self.send.confirm(None).await;
        self.service.inner.metrics.wallet_op("send", sent.is_ok());
        let token = sent?.to_string();
        self.service.book_input_fee(fee);
        Ok(token)
    }

    /// Gives the reserved proofs back; a failure is logged, the wallet's recovery at the
    /// next start finishes it.
    pub(super) async fn cancel(self) {
        if let Err(e) = self.send.cancel().await {
            tracing::warn!(error = %e, "could not release a prepared token; released at next start");
        }
    }
}

impl EscrowService {
    /// Reserves proofs for a token of `amount`.
    pub(super) async fn prepare_token(&self, amount: Sats) -> Result<Prepared<'_>, EscrowError> {
        self.prepare_locked_token(amount, None).await
    }

    /// Reserves proofs for a token of `amount`, locked (NUT-11 P2PK) to `lock` when given:
    /// only that key's holder can redeem it.
    pub(super) async fn prepare_locked_token(
        &self,
        amount: Sats,
        lock: Option<nostr_sdk::PublicKey>,
    ) -> Result<Prepared<'_>, EscrowError> {
        let conditions = lock
            .as_ref()
            .map(crate::wallet::p2pk_lock)
            .transpose()
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        let options = cdk::wallet::SendOptions {
            conditions,
            ..Default::default()
        };
        let send = self
            .inner
            .wallet
            .prepare_send(amount.into(), options)
            .await?;
        Ok(Prepared {
            operation: send.operation_id().to_string(),
            send,
            service: self.clone(),
        })
    }

    /// The token the recorded send `operation` made, or `None` when that send never got as far
    /// as a token (nothing left the wallet; start a new one). A send caught half-way is rolled
    /// back by the wallet's recovery at start ([`EscrowService::recover`]); until then this
    /// is an error, retried later.
    pub(super) async fn recorded_token(
        &self,
        operation: &str,
    ) -> Result<Option<String>, EscrowError> {
        use crate::wallet::RecordedTokenError;
        crate::wallet::recorded_token(&self.inner.wallet, operation)
            .await
            .map_err(|e| match e {
                RecordedTokenError::Wallet(e) => EscrowError::Wallet(e),
                other => EscrowError::Books(other.to_string()),
            })
    }

    /// Finishes what the wallet itself left half-done at a crash (its sagas), before anything
    /// else uses it. Only safe while nothing else runs: call once at start.
    pub async fn recover(&self) -> Result<(), EscrowError> {
        let report = crate::wallet::recover(&self.inner.wallet).await?;
        if !report.is_empty() {
            tracing::info!(
                ?report,
                "the escrow wallet finished operations a stop interrupted"
            );
        }
        Ok(())
    }
}
