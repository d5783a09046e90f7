//! Tokens leaving a wallet, read back after a crash.
//!
//! Making a token and recording that it was made cannot be one transaction: the wallet and
//! sled are separate stores. So a caller records the wallet's send operation id first, and
//! after a crash reads the token back from the wallet's own record of that operation (cdk
//! keeps a send saga with the token's proofs). A token is never made twice and never lost:
//! either the operation got as far as a token, and that token is used, or it did not, and a
//! new send starts.
//!
//! cdk's recovery at start deletes a send saga whose *reserved* proofs are spent. For a
//! token made by a swap (most tokens: an exact amount rarely sits in the wallet) those are
//! the swap's inputs, spent by the swap itself: the saga, and with it the only record of a
//! token nobody has taken yet, went on the first restart, and the caller made a second
//! token (the crash trial of the exchange lost 50 sat to it). So [`recover`] keeps the
//! token of every send that got as far as one and is not yet taken, sealed in the wallet's
//! own store, before cdk's recovery runs, and [`recorded_token`] reads it from there.

use std::collections::HashSet;

use cdk::nuts::{Proofs, ProofsMethods, State, Token};
use cdk::wallet::RecoveryReport;
use cdk_common::wallet::{OperationData, SendSagaState, WalletSaga, WalletSagaState};
use serde::{Deserialize, Serialize};

use super::Wallet;

/// The wallet's kv namespaces of the tokens [`recover`] keeps, by send operation id.
const KEPT: (&str, &str) = ("soko", "made_tokens");

/// The most proofs asked about in one NUT-07 state check.
const CHECK_BATCH: usize = 100;

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
    /// A token kept by [`recover`] does not decode.
    #[error("kept token of send {0} is unreadable")]
    Unreadable(String),
}

/// A token as [`recover`] keeps it: with its proofs, to ask the mint whether it was taken.
#[derive(Serialize, Deserialize)]
struct Kept {
    token: String,
    proofs: Proofs,
}

/// The token the recorded send `operation` of `wallet` made, or `None` when that send never
/// got as far as a token (nothing left the wallet; start a new one). A send caught half-way
/// is rolled back or finished by [`recover`]; until then this is
/// [`RecordedTokenError::InProgress`], to retry later.
///
/// A token taken by its receiver is forgotten at a later [`recover`]: whoever must answer
/// with the same token for ever keeps the token itself once it has it, and hands it to
/// anyone only after that; it asks this only for a send whose token it never stored.
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
        return kept(wallet, operation).await;
    };
    match (&saga.state, &saga.data) {
        (WalletSagaState::Send(SendSagaState::TokenCreated), OperationData::Send(_)) => {
            match made_token(wallet, &saga) {
                Some((token, _)) => Ok(Some(token)),
                None => Err(RecordedTokenError::NoProofs(operation.to_owned())),
            }
        }
        _ => Err(RecordedTokenError::InProgress(operation.to_owned())),
    }
}

/// Settles what a stop left half-done in `wallet` (cdk's saga recovery), keeping the tokens
/// made and not yet taken first (see the module's doc). Proofs a send's swap made for a
/// token it never finished are given back to the balance. Call it when nothing else uses
/// the wallet: at start, or when a wallet is first opened.
pub async fn recover(wallet: &Wallet) -> Result<RecoveryReport, cdk::Error> {
    keep_untaken_tokens(wallet).await?;
    let report = wallet.recover_incomplete_sagas().await?;
    release_unfinished_sends(wallet).await?;
    Ok(report)
}

/// The token and proofs of a send saga that got as far as a token (no proofs when the saga
/// kept only the token: the mint cannot be asked about it then, and it stays kept).
fn made_token(wallet: &Wallet, saga: &WalletSaga) -> Option<(String, Proofs)> {
    let OperationData::Send(data) = &saga.data else {
        return None;
    };
    let token = match (&data.token, &data.proofs) {
        (Some(token), _) => token.clone(),
        (None, Some(proofs)) => Token::new(
            wallet.mint_url.clone(),
            proofs.clone(),
            None,
            wallet.unit.clone(),
        )
        .to_string(),
        (None, None) => return None,
    };
    Some((token, data.proofs.clone().unwrap_or_default()))
}

async fn kept(wallet: &Wallet, operation: &str) -> Result<Option<String>, RecordedTokenError> {
    let bytes = wallet
        .localstore
        .kv_read(KEPT.0, KEPT.1, operation)
        .await
        .map_err(cdk::Error::from)?;
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let kept: Kept = serde_json::from_slice(&bytes)
        .map_err(|_| RecordedTokenError::Unreadable(operation.to_owned()))?;
    Ok(Some(kept.token))
}

/// Keeps the token of every send saga that made one, and forgets kept tokens their
/// receivers took. A token whose state the mint cannot tell now is kept.
async fn keep_untaken_tokens(wallet: &Wallet) -> Result<(), cdk::Error> {
    let store = &wallet.localstore;
    let listed: HashSet<String> = store.kv_list(KEPT.0, KEPT.1).await?.into_iter().collect();
    // (send operation, its token, whether it is kept already)
    let mut tokens: Vec<(String, Kept, bool)> = Vec::new();
    for saga in store.get_incomplete_sagas().await? {
        let ours = saga.mint_url == wallet.mint_url && saga.unit == wallet.unit;
        let made = matches!(
            saga.state,
            WalletSagaState::Send(SendSagaState::TokenCreated)
        );
        if !ours || !made {
            continue;
        }
        if let Some((token, proofs)) = made_token(wallet, &saga) {
            let operation = saga.id.to_string();
            let kept = listed.contains(&operation);
            tokens.push((operation, Kept { token, proofs }, kept));
        }
    }
    for operation in listed {
        if tokens.iter().any(|(op, _, _)| *op == operation) {
            continue;
        }
        let Some(bytes) = store.kv_read(KEPT.0, KEPT.1, &operation).await? else {
            continue;
        };
        match serde_json::from_slice::<Kept>(&bytes) {
            Ok(kept) => tokens.push((operation, kept, true)),
            Err(_) => tracing::warn!(%operation, "a kept token is unreadable; left as it is"),
        }
    }
    if tokens.is_empty() {
        return Ok(());
    }
    let taken = taken(wallet, &tokens).await;
    for (i, (operation, kept, stored)) in tokens.iter().enumerate() {
        match (taken.get(i).copied().unwrap_or(false), stored) {
            (true, true) => store.kv_remove(KEPT.0, KEPT.1, operation).await?,
            (false, false) => {
                let bytes = serde_json::to_vec(kept)
                    .map_err(|e| cdk::Error::Custom(format!("encoding a kept token: {e}")))?;
                store.kv_write(KEPT.0, KEPT.1, operation, &bytes).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// For each token, whether the mint says all its proofs are spent (taken). Unknown (the
/// mint did not answer) counts as not taken.
async fn taken(wallet: &Wallet, tokens: &[(String, Kept, bool)]) -> Vec<bool> {
    let mut answers = Vec::with_capacity(tokens.len());
    let mut start = 0;
    while start < tokens.len() {
        let mut end = start;
        let mut proofs = Proofs::new();
        while end < tokens.len() && (end == start || proofs.len() < CHECK_BATCH) {
            proofs.extend(tokens[end].1.proofs.iter().cloned());
            end += 1;
        }
        let spent: Option<Vec<_>> = match wallet.check_proofs_spent(proofs).await {
            Ok(states) => Some(
                states
                    .into_iter()
                    .filter(|s| s.state == State::Spent)
                    .map(|s| s.y)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the mint did not tell whether made tokens were taken; they stay kept");
                None
            }
        };
        for (_, kept, _) in &tokens[start..end] {
            let all_spent = match (&spent, kept.proofs.ys()) {
                (Some(spent), Ok(ys)) => !ys.is_empty() && ys.iter().all(|y| spent.contains(y)),
                _ => false,
            };
            answers.push(all_spent);
        }
        start = end;
    }
    answers
}

/// Proofs a send's swap made and put aside (`Reserved`, owned by no operation) for a token
/// that a stop kept from being made: no live operation holds them once recovery ran, and
/// nobody got them.
async fn release_unfinished_sends(wallet: &Wallet) -> Result<(), cdk::Error> {
    let aside = wallet
        .localstore
        .get_proofs(
            Some(wallet.mint_url.clone()),
            Some(wallet.unit.clone()),
            Some(vec![State::Reserved]),
            None,
        )
        .await?;
    let ys: Vec<_> = aside
        .iter()
        .filter(|p| p.used_by_operation.is_none())
        .map(|p| p.y)
        .collect();
    if ys.is_empty() {
        return Ok(());
    }
    let count = ys.len();
    wallet
        .localstore
        .update_proofs_state(ys, State::Unspent)
        .await?;
    tracing::info!(
        proofs = count,
        "proofs put aside for a token a stop cut short are back in the balance"
    );
    Ok(())
}
