//! Issue 16: the escrow wallet's proofs consolidated, and what its store no longer needs
//! dropped.
//!
//! Every paid order leaves a few proofs in the escrow wallet (one per power of two of its
//! total), and a delivery only moves sats between soko's books, so the proofs pile up: four
//! per order, sealed, each read back on every balance check. Past `[market]
//! consolidate_proofs_above` unspent proofs, the smallest are swapped at the mint into few
//! (NUT-03), at most [`CHUNK`] per swap.
//!
//! A swap is cdk's saga: it reserves its inputs, records itself in the wallet's store and,
//! cut short by a crash, is finished or rolled back by the wallet's recovery at start
//! ([`EscrowService::recover`]). What soko adds is its books: a mint charging input fees
//! (NUT-02) takes them out of the swap, and that fee must be booked exactly once. So before
//! each swap soko records the swap it is about to make (its fee and one input proof: the
//! mint spends a swap's inputs all together or not at all), and books the fee in the same
//! sled transaction that clears the record. A record left by a crash is settled by the
//! wallet's own state of that input once its recovery ran: unspent means the swap never
//! happened (or was rolled back), spent or gone means it did.
//!
//! cdk marks a swap's or melt's inputs spent and keeps them; once no saga of the wallet
//! refers to them they are only weight, and are removed.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cdk::amount::SplitTarget;
use cdk::nuts::nut00::ProofsMethods;
use cdk::nuts::{Proofs, State};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::books::INPUT_FEES_KEY;
use super::service::{tx_error, EscrowError, EscrowService, LedgerEntry};
use crate::money::Sats;

/// The guards [`EscrowService::spenders_idle`] holds.
type Spenders<'a> = (
    tokio::sync::MutexGuard<'a, ()>,
    tokio::sync::MutexGuard<'a, ()>,
    tokio::sync::MutexGuard<'a, ()>,
);

/// Most proofs one consolidating swap takes: cdk's mint takes up to 1000 inputs by default,
/// other mints fewer; a few hundred keep each request small.
pub const CHUNK: usize = 500;

/// How often the footprint pass (consolidation, pruning, shrinking) runs.
pub const FOOTPRINT_EVERY: Duration = Duration::from_secs(600);

/// The tree holding the consolidating swap under way, if any.
pub const CONSOLIDATION_TREE: &str = "escrow/consolidation";

/// Its only key.
const PENDING_KEY: &[u8] = b"pending";

/// The footprint settings (`[market] order_retention_secs`, `consolidate_proofs_above`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Seconds after its creation from which a finished order is shrunk.
    pub order_retention_secs: u64,
    /// Unspent proofs the escrow wallet may hold before it consolidates.
    pub consolidate_above: usize,
}

impl Default for Footprint {
    fn default() -> Self {
        Self {
            order_retention_secs: crate::config::DEFAULT_ORDER_RETENTION_SECS,
            consolidate_above: crate::config::DEFAULT_CONSOLIDATE_PROOFS_ABOVE,
        }
    }
}

/// A consolidating swap recorded before it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSwap {
    /// One of its input proofs (`Y`, hex): all of them are spent together or none is.
    pub input_y: String,
    /// How many proofs it swaps.
    pub inputs: usize,
    /// The NUT-02 input fee the mint takes out of it.
    pub fee: Sats,
}

/// What one consolidation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consolidation {
    /// Swaps made.
    pub swaps: usize,
    /// Proofs swapped away.
    pub proofs_in: usize,
    /// Proofs received for them.
    pub proofs_out: usize,
    /// Input fees paid (and booked).
    pub fee: Sats,
}

/// When the footprint pass last ran.
#[derive(Debug, Default)]
pub(super) struct Schedule(Mutex<Option<Instant>>);

impl Schedule {
    /// True (and the time set) when a pass is due at `now`.
    fn due(&self, now: Instant) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < FOOTPRINT_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// The chunks to swap, smallest proofs first, when `proofs` are more than `above`: none
/// otherwise, and never a chunk of one (a swap of one proof gains nothing).
pub fn chunks(mut proofs: Proofs, above: usize, chunk: usize) -> Vec<Proofs> {
    if proofs.len() <= above {
        return Vec::new();
    }
    proofs.sort_by_key(|p| p.amount);
    let mut chunks: Vec<Proofs> = proofs
        .chunks(chunk.max(2))
        .map(<[cdk::nuts::Proof]>::to_vec)
        .collect();
    if chunks.last().is_some_and(|last| last.len() < 2) {
        chunks.pop();
    }
    chunks
}

impl EscrowService {
    /// Runs the footprint pass when [`FOOTPRINT_EVERY`] has passed since the last one (the
    /// first one a pass after start). A failure is logged; the next pass tries again.
    pub(super) async fn footprint_if_due(&self) {
        if !self.inner.footprint_schedule.due(Instant::now()) {
            return;
        }
        if let Err(e) = self.tidy().await {
            tracing::warn!(error = %e, "the escrow's footprint pass failed; retried later");
        }
    }

    /// The footprint pass: consolidates the escrow wallet's proofs when they are too many,
    /// drops the spent ones no saga needs, and shrinks finished orders past their window.
    /// soko runs it every [`FOOTPRINT_EVERY`]; it is public for benchmarks and tests.
    pub async fn tidy(&self) -> Result<super::shrink::Tidied, EscrowError> {
        let consolidated = self.consolidate().await?;
        let spent_pruned = self.prune_spent_proofs().await?;
        let shrunk = self.shrink_finished().await?;
        let tidied = super::shrink::Tidied {
            consolidated,
            spent_pruned,
            ..shrunk
        };
        tracing::info!(?tidied, "escrow footprint pass");
        Ok(tidied)
    }

    /// The locks of the wallet's other spenders (payouts, refunds, ecash payments), held
    /// together, or `None` when one of them is busy: a pass over the wallet's proofs waits
    /// for a moment when none picks proofs.
    fn spenders_idle(&self) -> Option<Spenders<'_>> {
        let inner = &self.inner;
        match (
            inner.payouts_lock.try_lock(),
            inner.refunds.try_lock(),
            inner.ecash_lock.try_lock(),
        ) {
            (Ok(payouts), Ok(refunds), Ok(ecash)) => Some((payouts, refunds, ecash)),
            _ => None,
        }
    }

    /// Swaps the escrow wallet's smallest proofs into few once there are more than
    /// `[market] consolidate_proofs_above` unspent ones. `None` when a payout, refund or ecash
    /// payment is under way (they pick proofs too; the next pass tries again) or when a
    /// swap a crash interrupted is not settled yet.
    pub async fn consolidate(&self) -> Result<Option<Consolidation>, EscrowError> {
        let Some(_spenders) = self.spenders_idle() else {
            return Ok(None);
        };
        let inner = &self.inner;
        if !self.settle_pending_swap().await? {
            return Ok(None);
        }
        let unspent = inner.wallet.get_unspent_proofs().await?;
        let mut done = Consolidation::default();
        for chunk in chunks(unspent, inner.footprint.consolidate_above, CHUNK) {
            let fee = Sats::from(inner.wallet.get_proofs_fee(&chunk).await?.total);
            let total = Sats::from(
                chunk
                    .total_amount()
                    .map_err(|e| EscrowError::Books(format!("proofs' total: {e}")))?,
            );
            if fee >= total {
                // Dust the mint's fee would eat whole: left as it is.
                continue;
            }
            let input_y = chunk
                .first()
                .map(|p| p.y())
                .transpose()
                .map_err(|e| EscrowError::Books(format!("a proof's Y: {e}")))?
                .ok_or_else(|| EscrowError::Books("an empty chunk".to_owned()))?;
            let pending = PendingSwap {
                input_y: input_y.to_hex(),
                inputs: chunk.len(),
                fee,
            };
            inner.consolidation.insert(PENDING_KEY, &pending)?;
            crate::failpoint::crash("consolidate-recorded", inner.consolidation.raw());
            // Empty target values: the fewest proofs (one per power of two of the total).
            // The wallet's default refills a few of every denomination, which turned 12
            // proofs into 35.
            let swapped = inner
                .wallet
                .swap(
                    None,
                    SplitTarget::Values(Vec::new()),
                    chunk,
                    None,
                    false,
                    false,
                )
                .await;
            inner.metrics.wallet_op("swap", swapped.is_ok());
            if let Err(e) = swapped {
                // The wallet knows whether the mint took it (a definitive refusal released
                // the inputs); the record is settled from that, now or after recovery.
                self.settle_pending_swap().await?;
                return Err(e.into());
            }
            crate::failpoint::crash("consolidate-swapped", inner.consolidation.raw());
            self.book_swap(&pending)?;
            done.swaps += 1;
            done.proofs_in += pending.inputs;
            done.fee = Sats(done.fee.0.saturating_add(fee.0));
        }
        if done.swaps == 0 {
            return Ok(None);
        }
        done.proofs_out = inner.wallet.get_unspent_proofs().await?.len();
        tracing::info!(
            swaps = done.swaps,
            proofs_in = done.proofs_in,
            unspent_after = done.proofs_out,
            fee = done.fee.0,
            "escrow wallet proofs consolidated"
        );
        Ok(Some(done))
    }

    /// Settles a consolidating swap recorded before a crash or an unclear answer: books its
    /// fee if the mint took it, forgets it if not. False while the wallet has not settled it
    /// yet (its recovery at the next start does).
    async fn settle_pending_swap(&self) -> Result<bool, EscrowError> {
        let inner = &self.inner;
        let Some(pending) = inner.consolidation.get(PENDING_KEY)? else {
            return Ok(true);
        };
        let y = cdk::nuts::PublicKey::from_hex(&pending.input_y)
            .map_err(|e| EscrowError::Books(format!("a recorded swap's input: {e}")))?;
        let stored = inner
            .wallet
            .localstore
            .get_proofs_by_ys(vec![y])
            .await
            .map_err(cdk::Error::from)?;
        match stored.first().map(|p| p.state) {
            Some(State::Unspent) => {
                tracing::info!(
                    inputs = pending.inputs,
                    "a consolidating swap did not happen; nothing to book"
                );
                inner.consolidation.remove(PENDING_KEY)?;
                Ok(true)
            }
            // Gone only once spent and pruned.
            Some(State::Spent) | None => {
                tracing::info!(
                    inputs = pending.inputs,
                    fee = pending.fee.0,
                    "a consolidating swap an interruption left is booked"
                );
                self.book_swap(&pending)?;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// Books a made swap's fee and clears its record, in one transaction.
    fn book_swap(&self, pending: &PendingSwap) -> Result<(), EscrowError> {
        let inner = &self.inner;
        (inner.ledger.raw(), inner.consolidation.raw())
            .transaction(|(ledger, consolidation)| {
                if pending.fee > Sats::ZERO {
                    let paid = ledger
                        .get(INPUT_FEES_KEY)?
                        .and_then(|bytes| crate::store::decode::<LedgerEntry>(&bytes).ok())
                        .map_or(Sats::ZERO, |e| e.amount);
                    let entry = LedgerEntry {
                        amount: Sats(paid.0.saturating_add(pending.fee.0)),
                        done: true,
                    };
                    let encoded = crate::store::encode(&entry)
                        .map_err(|_| ConflictableTransactionError::Abort(()))?;
                    ledger.insert(INPUT_FEES_KEY, encoded)?;
                }
                consolidation.remove(PENDING_KEY)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)
    }

    /// Removes the escrow wallet's spent proofs that no unfinished saga of the wallet refers
    /// to (its recovery reads a saga's spent inputs), returning how many. Under the payout,
    /// refund and ecash locks, so no saga of soko's starts meanwhile; `0` when one is busy.
    pub async fn prune_spent_proofs(&self) -> Result<usize, EscrowError> {
        let Some(_spenders) = self.spenders_idle() else {
            return Ok(0);
        };
        let inner = &self.inner;
        let store = &inner.wallet.localstore;
        let open: HashSet<uuid::Uuid> = store
            .get_incomplete_sagas()
            .await
            .map_err(cdk::Error::from)?
            .into_iter()
            .map(|saga| saga.id)
            .collect();
        let spent: Vec<_> = store
            .get_proofs(None, None, Some(vec![State::Spent]), None)
            .await
            .map_err(cdk::Error::from)?
            .into_iter()
            .filter(|p| p.used_by_operation.is_none_or(|op| !open.contains(&op)))
            .map(|p| p.y)
            .collect();
        let pruned = spent.len();
        if pruned > 0 {
            store
                .update_proofs(Vec::new(), spent)
                .await
                .map_err(cdk::Error::from)?;
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdk::nuts::{Id, Proof};
    use cdk::secret::Secret;
    use cdk::Amount;
    use std::str::FromStr;

    fn proofs(amounts: &[u64]) -> Result<Proofs, Box<dyn std::error::Error>> {
        let keyset = Id::from_str("009a1f293253e41e")?;
        let c = cdk::nuts::PublicKey::from_hex(
            "02698c4e2b5f9534cd0687d87513c759790cf829aa5739184a3e3735471fbda904",
        )?;
        Ok(amounts
            .iter()
            .map(|a| Proof::new(Amount::from(*a), keyset, Secret::generate(), c))
            .collect())
    }

    fn amounts(chunks: &[Proofs]) -> Vec<Vec<u64>> {
        chunks
            .iter()
            .map(|c| c.iter().map(|p| u64::from(p.amount)).collect())
            .collect()
    }

    #[test]
    fn nothing_is_swapped_up_to_the_threshold() -> Result<(), Box<dyn std::error::Error>> {
        assert!(chunks(proofs(&[1, 2, 4])?, 3, 2).is_empty());
        assert!(chunks(Vec::new(), 0, 2).is_empty());
        Ok(())
    }

    #[test]
    fn past_it_the_smallest_go_first_in_chunks_never_of_one(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let got = chunks(proofs(&[64, 1, 32, 8, 1, 4, 2])?, 3, 3);
        // Seven proofs in chunks of three: the last one alone is left.
        assert_eq!(amounts(&got), vec![vec![1, 1, 2], vec![4, 8, 32]]);
        let got = chunks(proofs(&[8, 4, 2, 1])?, 3, 2);
        assert_eq!(amounts(&got), vec![vec![1, 2], vec![4, 8]]);
        // A chunk size below two still pairs them.
        assert_eq!(amounts(&chunks(proofs(&[2, 1])?, 1, 0)), vec![vec![1, 2]]);
        Ok(())
    }

    #[test]
    fn the_pass_runs_every_ten_minutes() {
        let schedule = Schedule::default();
        let now = Instant::now();
        assert!(schedule.due(now));
        assert!(!schedule.due(now + Duration::from_secs(599)));
        assert!(schedule.due(now + FOOTPRINT_EVERY));
    }
}
