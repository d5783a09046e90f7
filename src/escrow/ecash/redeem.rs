//! Redeeming a recorded token at soko's mint, and telling a spent token from one a swap of
//! soko's own spent (see the module above).

use std::collections::BTreeSet;
use std::str::FromStr;

use cdk::nuts::Token;
use cdk_common::wallet::{TransactionDirection, TransactionStatus};

use super::proof_ys;
use crate::escrow::service::{EscrowError, EscrowService};
use crate::money::Sats;

/// What became of an earlier swap of a token by the escrow wallet.
enum Earlier {
    /// It went through: this much was received.
    Received(Sats),
    /// Started and not settled.
    InProgress,
    /// There was none (or it failed): someone else spent the token.
    Nothing,
}

impl EscrowService {
    /// True when the mint says any of the token's proofs is spent or being spent (NUT-07).
    pub(super) async fn spent_at_mint(&self, token: &str) -> Result<bool, EscrowError> {
        let parsed = Token::from_str(token)
            .map_err(|e| EscrowError::Books(format!("a recorded token does not read: {e}")))?;
        super::foreign::spent_at(&self.inner.wallet, &parsed).await
    }

    /// Swaps `token` into the escrow wallet: the sats received, or why it cannot be taken.
    /// `fresh` when this is the first swap of it and the mint had it unspent just before: a
    /// "spent" answer then means someone else spent it meanwhile. On a later try it may be
    /// a swap of soko's own that a stop cut short, which the wallet's recovery at start
    /// finished: the wallet's transactions tell. An error is a failure that may have left
    /// the swap half-way (the mint's answer was lost): the intake is carried on later.
    pub(super) async fn redeem(
        &self,
        token: &str,
        fresh: bool,
    ) -> Result<Result<Sats, String>, EscrowError> {
        let wallet = &self.inner.wallet;
        let received = wallet.receive(token, Default::default()).await;
        self.inner
            .metrics
            .wallet_op("ecash_receive", received.is_ok());
        match received {
            Ok(amount) => Ok(Ok(Sats::from(amount))),
            Err(cdk::Error::TokenAlreadySpent) if fresh => {
                Ok(Err("the token is already spent".to_owned()))
            }
            Err(cdk::Error::TokenAlreadySpent) => match self.received_before(token).await? {
                Earlier::Received(received) => Ok(Ok(received)),
                Earlier::Nothing => Ok(Err("the token is already spent".to_owned())),
                // Spent by a swap of ours whose answer was lost: the wallet's recovery at the
                // next start finishes it; calling the token spent now would keep the money
                // and drop the order.
                Earlier::InProgress => Err(EscrowError::Books(
                    "the token's swap is still in progress; the wallet's recovery at the next start settles it".to_owned(),
                )),
            },
            Err(e)
                if e.is_definitive_failure()
                    || matches!(e, cdk::Error::DHKE(cdk::dhke::Error::TokenNotVerified)) =>
            {
                Ok(Err(format!("the mint does not take the token ({e})")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What became of an earlier swap of `token` by the escrow wallet (one cut short by a
    /// crash is finished by the wallet's recovery at start).
    async fn received_before(&self, token: &str) -> Result<Earlier, EscrowError> {
        let parsed = Token::from_str(token)
            .map_err(|e| EscrowError::Books(format!("a recorded token does not read: {e}")))?;
        let ys = proof_ys(&parsed).map_err(EscrowError::Books)?;
        let incoming = self
            .inner
            .wallet
            .list_transactions(Some(TransactionDirection::Incoming))
            .await?;
        let ours = incoming
            .into_iter()
            .filter(|t| t.ys.iter().map(|y| y.to_bytes()).collect::<BTreeSet<_>>() == ys);
        let mut earlier = Earlier::Nothing;
        for t in ours {
            match t.status {
                TransactionStatus::Completed => return Ok(Earlier::Received(Sats::from(t.amount))),
                TransactionStatus::Pending => earlier = Earlier::InProgress,
                TransactionStatus::Failed => {}
            }
        }
        Ok(earlier)
    }
}
