//! Cashu tokens leaving the escrow wallet (refunds, payouts to merchants who take ecash).
//!
//! Making a token and recording that it was made cannot be one transaction: the wallet and
//! sled are separate stores. So the wallet's send operation id is recorded first, and after a
//! crash the token is read back from the wallet's own record of that operation (cdk keeps a
//! send saga with the token's proofs until they are spent). A token is never made twice and
//! never lost: either the operation got as far as a token, and that token is used, or it did
//! not, and a new send starts.

use cdk::nuts::Token;
use cdk_common::wallet::{OperationData, SendSagaState, WalletSagaState};

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
        let send = self
            .inner
            .wallet
            .prepare_send(amount.into(), cdk::wallet::SendOptions::default())
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
        let wallet = &self.inner.wallet;
        let id = uuid::Uuid::parse_str(operation)
            .map_err(|e| EscrowError::Books(format!("recorded send operation: {e}")))?;
        let saga = wallet
            .localstore
            .get_saga(&id)
            .await
            .map_err(cdk::Error::from)?;
        let Some(saga) = saga else {
            return Ok(None);
        };
        match (&saga.state, &saga.data) {
            (WalletSagaState::Send(SendSagaState::TokenCreated), OperationData::Send(data)) => {
                if let Some(token) = &data.token {
                    return Ok(Some(token.clone()));
                }
                match &data.proofs {
                    Some(proofs) => Ok(Some(
                        Token::new(
                            wallet.mint_url.clone(),
                            proofs.clone(),
                            None,
                            wallet.unit.clone(),
                        )
                        .to_string(),
                    )),
                    None => Err(EscrowError::Books(format!(
                        "send {operation} made a token without proofs"
                    ))),
                }
            }
            _ => Err(EscrowError::Books(format!(
                "send {operation} is still in progress; it is settled at the next start"
            ))),
        }
    }

    /// Finishes what the wallet itself left half-done at a crash (its sagas), before anything
    /// else uses it. Only safe while nothing else runs: call once at start.
    pub async fn recover(&self) -> Result<(), EscrowError> {
        let report = self.inner.wallet.recover_incomplete_sagas().await?;
        if !report.is_empty() {
            tracing::info!(
                ?report,
                "the escrow wallet finished operations a stop interrupted"
            );
        }
        Ok(())
    }
}
