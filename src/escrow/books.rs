//! The escrow's books against its wallet (issue 11): NUT-02 input fees the wallet pays are
//! booked, and the watcher compares, once a minute, the wallet's balance with what soko
//! holds and owes. A drift is logged (an error when the wallet is short), never corrected
//! by itself: it means a bug or an outside hand, which a person must look at.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cdk::nuts::MeltQuoteState;

use super::service::{EscrowError, EscrowService, LedgerEntry};
use crate::money::Sats;

/// `ledger` key of the NUT-02 input fees the escrow wallet has paid in all.
pub const INPUT_FEES_KEY: &[u8] = b"fees:input";

/// How often the watcher reconciles.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// The books and the wallet at one moment, in sats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciliation {
    /// The escrow wallet's balance, with the proofs a melt holds pending at the mint.
    pub wallet: Sats,
    /// Held for paid orders not yet settled.
    pub held: Sats,
    /// Owed to merchants, plus soko's own `fees` account.
    pub owed: Sats,
    /// Debited from balances for payouts not yet settled (still in the wallet, or on their
    /// way out).
    pub in_flight: Sats,
    /// NUT-02 input fees the wallet paid (gone from the wallet, owed to nobody).
    pub input_fees: Sats,
}

impl Reconciliation {
    /// What the wallet has beyond what the books account for: 0 when they agree, negative
    /// when the wallet is short.
    pub fn drift(&self) -> i128 {
        i128::from(self.wallet.0) + i128::from(self.input_fees.0)
            - i128::from(self.held.0)
            - i128::from(self.owed.0)
            - i128::from(self.in_flight.0)
    }
}

/// When the last reconciliation ran.
#[derive(Debug, Default)]
pub(super) struct Clock(Mutex<Option<Instant>>);

impl Clock {
    /// True (and the clock set) when a reconciliation is due at `now`.
    fn due(&self, now: Instant) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < RECONCILE_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// How long a melt is waited for before it is left pending. Most Lightning payments settle
/// well within it; a merchant on a USSD call waits this long at most for the answer.
const MELT_WAIT: Duration = Duration::from_secs(4);

/// What paying a melt quote came to.
#[derive(Debug)]
pub(super) enum Melt {
    /// Paid; the fee is in it.
    Paid(cdk_common::FinalizedMelt),
    /// Handed to the mint, not settled yet.
    Pending,
}

impl EscrowService {
    /// Books a NUT-02 input fee the wallet just paid. A failure is logged: it shows as a
    /// drift at the next reconciliation.
    pub(super) fn book_input_fee(&self, fee: Sats) {
        if fee == Sats::ZERO {
            return;
        }
        let ledger = &self.inner.ledger;
        let booked = ledger.raw().update_and_fetch(INPUT_FEES_KEY, |old| {
            let paid = old
                .and_then(|bytes| crate::store::decode::<LedgerEntry>(bytes).ok())
                .map_or(Sats::ZERO, |e| e.amount);
            let entry = LedgerEntry {
                amount: Sats(paid.0.saturating_add(fee.0)),
                done: true,
            };
            crate::store::encode(&entry).ok()
        });
        match booked {
            Ok(_) => tracing::info!(sats = fee.0, "NUT-02 input fee paid and booked"),
            Err(e) => tracing::error!(sats = fee.0, error = %e, "an input fee could not be booked"),
        }
    }

    /// The state of a melt quote as the mint holds it ([`crate::wallet::melt_state`]).
    pub(super) async fn melt_state(&self, quote_id: &str) -> Result<MeltQuoteState, cdk::Error> {
        crate::wallet::melt_state(&self.inner.wallet, quote_id).await
    }

    /// Pays a melt quote from the escrow wallet. The melt's own input fee is in the result's
    /// `fee_paid` (borne like the Lightning fee); the swap before it, when the proofs do not
    /// fit the amount, is soko's and is booked here.
    ///
    /// A payment the mint has not settled when it answers is left to it ([`Melt::Pending`]):
    /// waiting for it would hold the payout or refund lock for as long as the payee likes
    /// (a hold invoice never settles), and stop every other payout or refund meanwhile. The
    /// wallet keeps the melt's record; the payout and refund passes settle it from the mint's
    /// later answer.
    pub(super) async fn melt_booking_swap_fee(&self, quote_id: &str) -> Result<Melt, cdk::Error> {
        let melted = self.melt_once(quote_id).await;
        self.inner.metrics.wallet_op("melt", melted.is_ok());
        melted
    }

    async fn melt_once(&self, quote_id: &str) -> Result<Melt, cdk::Error> {
        let prepared = self
            .inner
            .wallet
            .prepare_melt(quote_id, Default::default())
            .await?;
        let swap_fee = Sats::from(prepared.swap_fee());
        let melted = match prepared.confirm_prefer_async().await? {
            cdk::wallet::MeltOutcome::Paid(finalized) => Melt::Paid(finalized),
            // Dropping the wait leaves the melt to the wallet's record and the mint.
            cdk::wallet::MeltOutcome::Pending(pending) => {
                match tokio::time::timeout(MELT_WAIT, pending).await {
                    Ok(finalized) => Melt::Paid(finalized?),
                    Err(_) => Melt::Pending,
                }
            }
        };
        self.book_input_fee(swap_fee);
        Ok(melted)
    }

    /// NUT-02 input fees paid in all.
    pub fn input_fees_paid(&self) -> Result<Sats, EscrowError> {
        Ok(self
            .inner
            .ledger
            .get(INPUT_FEES_KEY)?
            .map_or(Sats::ZERO, |e| e.amount))
    }

    /// The books against the wallet, or `None` when a payment, payout or refund is under way
    /// (the wallet and the books then differ for a moment; the next pass tries again).
    pub async fn reconcile(&self) -> Result<Option<Reconciliation>, EscrowError> {
        let inner = &self.inner;
        let (Ok(_orders), Ok(_payouts), Ok(_refunds)) = (
            inner.lock.try_lock(),
            inner.payouts_lock.try_lock(),
            inner.refunds.try_lock(),
        ) else {
            return Ok(None);
        };
        let (held, owed) = self.books()?;
        let mut in_flight = Sats::ZERO;
        for entry in inner.payouts.iter() {
            let (_, payout) = entry?;
            if payout.state.in_flight() {
                in_flight = Sats(in_flight.0.saturating_add(payout.debited.0));
            }
        }
        in_flight = Sats(in_flight.0.saturating_add(self.withdrawals_in_flight()?.0));
        // Proofs a melt holds pending at the mint are still the wallet's until the mint
        // settles it (a payout or refund in flight); without them a payout to a hold invoice
        // read as money missing.
        let wallet = Sats::from(inner.wallet.total_balance().await?)
            .checked_add(Sats::from(inner.wallet.total_pending_balance().await?))
            .map_err(|e| EscrowError::Books(e.to_string()))?;
        Ok(Some(Reconciliation {
            wallet,
            held,
            owed,
            in_flight,
            input_fees: self.input_fees_paid()?,
        }))
    }

    /// Reconciles when [`RECONCILE_EVERY`] has passed since the last time, and logs a drift.
    pub(super) async fn reconcile_if_due(&self) {
        // Issue 16: the footprint pass keeps its own, slower schedule.
        self.footprint_if_due().await;
        if !self.inner.reconciled.due(Instant::now()) {
            return;
        }
        match self.reconcile().await {
            Ok(Some(r)) => match r.drift() {
                0 => tracing::debug!(wallet = r.wallet.0, "escrow books agree with the wallet"),
                drift if drift < 0 => tracing::error!(
                    drift,
                    wallet = r.wallet.0,
                    held = r.held.0,
                    owed = r.owed.0,
                    in_flight = r.in_flight.0,
                    input_fees = r.input_fees.0,
                    "ALERT: the escrow wallet holds less than the books say"
                ),
                drift => tracing::warn!(
                    drift,
                    wallet = r.wallet.0,
                    held = r.held.0,
                    owed = r.owed.0,
                    in_flight = r.in_flight.0,
                    input_fees = r.input_fees.0,
                    "the escrow wallet holds more than the books say"
                ),
            },
            // Busy: the clock is reset so the next pass tries again.
            Ok(None) => self.inner.reconciled.reset(),
            Err(e) => tracing::warn!(error = %e, "cannot reconcile the books now"),
        }
    }
}

impl Clock {
    fn reset(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn books(wallet: u64, held: u64, owed: u64, in_flight: u64, input_fees: u64) -> Reconciliation {
        Reconciliation {
            wallet: Sats(wallet),
            held: Sats(held),
            owed: Sats(owed),
            in_flight: Sats(in_flight),
            input_fees: Sats(input_fees),
        }
    }

    #[test]
    fn drift_is_what_the_wallet_has_beyond_the_books() {
        assert_eq!(books(1_000, 600, 400, 0, 0).drift(), 0);
        // A payout debited but not yet melted is still in the wallet.
        assert_eq!(books(1_000, 600, 100, 300, 0).drift(), 0);
        // Fees paid leave the wallet and are owed to nobody.
        assert_eq!(books(997, 600, 400, 0, 3).drift(), 0);
        // An unbooked fee, or money gone: short.
        assert_eq!(books(997, 600, 400, 0, 0).drift(), -3);
        // A mint finished before a crash and not yet booked: surplus.
        assert_eq!(books(1_500, 600, 400, 0, 0).drift(), 500);
        assert_eq!(
            books(0, u64::MAX, u64::MAX, 0, 0).drift(),
            -2 * i128::from(u64::MAX)
        );
    }

    #[test]
    fn it_runs_once_a_minute() {
        let clock = Clock::default();
        let now = Instant::now();
        assert!(clock.due(now));
        assert!(!clock.due(now + Duration::from_secs(59)));
        assert!(clock.due(now + RECONCILE_EVERY));
        clock.reset();
        assert!(clock.due(now + RECONCILE_EVERY));
    }
}
