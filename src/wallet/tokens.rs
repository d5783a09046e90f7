//! Tokens leaving a wallet, read back after a crash.
//!
//! Making a token and recording that it was made cannot be one transaction: the wallet and
//! sled are separate stores. So a caller records the wallet's send operation id first, and
//! after a crash reads the token back from the wallet's own record of that operation (cdk
//! keeps a send saga with the token's proofs until they are spent). A token is never made
//! twice and never lost: either the operation got as far as a token, and that token is used,
//! or it did not, and a new send starts.

use cdk::nuts::Token;
use cdk_common::wallet::{OperationData, SendSagaState, WalletSagaState};

use super::Wallet;

/// Why the token of a recorded send cannot be told (yet).
#[derive(Debug, thiserror::Error)]
pub enum RecordedTokenError {
    /// The recorded operation id is not one (a corrupt record).
    #[error("recorded send operation: {0}")]
    BadOperation(String),
    /// The wallet's database failed.
    #[error("wallet: {0}")]
    Wallet(#[from] cdk::Error),
    /// The wallet says a token was made but kept neither it nor its proofs.
    #[error("send {0} made a token without proofs")]
    NoProofs(String),
    /// The send was caught half-way; the wallet's recovery at start settles it.
    #[error("send {0} is still in progress; it is settled at the next start")]
    InProgress(String),
}

/// The token the recorded send `operation` of `wallet` made, or `None` when that send never
/// got as far as a token (nothing left the wallet; start a new one). A send caught half-way
/// is rolled back or finished by the wallet's recovery at start
/// (`Wallet::recover_incomplete_sagas`); until then this is
/// [`RecordedTokenError::InProgress`], to retry later.
///
/// The wallet forgets a send once its proofs are seen spent (its recovery finalises the
/// saga): whoever must answer with the same token for ever keeps the token itself once it
/// has it, and asks this only for a send whose token it never stored.
pub async fn recorded_token(
    wallet: &Wallet,
    operation: &str,
) -> Result<Option<String>, RecordedTokenError> {
    let id = uuid::Uuid::parse_str(operation)
        .map_err(|e| RecordedTokenError::BadOperation(e.to_string()))?;
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
                None => Err(RecordedTokenError::NoProofs(operation.to_owned())),
            }
        }
        _ => Err(RecordedTokenError::InProgress(operation.to_owned())),
    }
}
