//! The payout and refund sagas: which persisted states they go through and which events move
//! them, as pure transition functions tested exhaustively (like [`super::state`]).
//!
//! Payout (a [`super::payout::PayoutRecord`] in `payouts`, keyed by the melt quote id or the
//! wallet's send operation id):
//! ```text
//! MeltDebited ──mint paid──▶ Paid          TokenDebited ──token made, DM queued──▶ Sent
//!      │                                        │
//!  mint unpaid / failed                   the send made no token
//!      ▼                                        ▼
//!  GivenBack                                GivenBack
//! ```
//! `MeltDebited` and `TokenDebited` are written, with the debit from the merchant's balance,
//! before the melt is paid or the token made; every later state is written with its
//! booking (fee reserve credited back, the DM staged, the debit given back) in one
//! transaction. A melt the mint holds pending moves nothing: the record stays `MeltDebited`
//! until the mint answers paid or unpaid.
//!
//! Refund (the [`RefundPlan`] of an order in `Refunding`; the order's own move to `Refunded`
//! ends it):
//! ```text
//! LightningPlanned ──quoted──▶ LightningQuoted ──paid──▶ Refunded
//!        │                          │
//!  lightning failed           lightning failed
//!        ▼                          │
//!   TokenPlanned ◀──────────────────┘
//!        │ token prepared (its operation recorded)
//!        ▼
//!   TokenPrepared ──token sent──▶ Refunded
//!   (token prepared again when the recorded send made no token)
//! ```
//! A refund starts in `LightningPlanned` when the buyer's cancel named a Lightning address,
//! in `TokenPlanned` otherwise. `Refunded` is terminal for both.

use serde::{Deserialize, Serialize};

use super::service::RefundPlan;

/// Where a payout stands, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// Debited from the balance for a melt; the melt may be in flight at the mint.
    MeltDebited,
    /// Debited from the balance for a token; the wallet's send may have made it.
    TokenDebited,
    /// The mint paid the invoice; the unused fee reserve is back in the balance. Terminal.
    Paid,
    /// The token was made and its DM queued. Terminal.
    Sent,
    /// Nothing left the wallet; the debit is back in the balance. Terminal.
    GivenBack,
}

impl PayoutState {
    /// True while the debit is neither paid out nor given back (it is still in the wallet,
    /// or on its way out).
    pub fn in_flight(self) -> bool {
        matches!(self, Self::MeltDebited | Self::TokenDebited)
    }
}

/// What settles a payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutEvent {
    /// The mint reports the melt paid.
    MintPaid,
    /// The mint reports the melt unpaid or failed: nothing left the wallet.
    MintRefused,
    /// The token exists (made now, or read back from the wallet's record) and its DM is queued.
    TokenMade,
    /// The wallet's send never got as far as a token.
    NoToken,
}

/// Where a refund stands: the [`RefundPlan`] of a refunding order, or `Refunded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundState {
    /// To the buyer's Lightning address; no melt quote yet.
    LightningPlanned,
    /// The melt quote is recorded; the melt may be in flight at the mint.
    LightningQuoted,
    /// As a token (from the start, or after Lightning failed); no send recorded yet.
    TokenPlanned,
    /// The wallet's send operation is recorded; the token may exist.
    TokenPrepared,
    /// The buyer has the money (the order is `Refunded`). Terminal.
    Refunded,
}

impl RefundState {
    /// The state a stored plan stands for.
    pub fn of(plan: &RefundPlan) -> Self {
        match plan {
            RefundPlan::Lightning { quote: None, .. } => Self::LightningPlanned,
            RefundPlan::Lightning { quote: Some(_), .. } => Self::LightningQuoted,
            RefundPlan::Token {
                operation: None, ..
            } => Self::TokenPlanned,
            RefundPlan::Token {
                operation: Some(_), ..
            } => Self::TokenPrepared,
        }
    }
}

/// What moves a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundEvent {
    /// An invoice from the buyer's address and its melt quote were had.
    Quoted,
    /// No invoice or quote could be had, or the mint reports the melt unpaid or failed.
    LightningFailed,
    /// The mint reports the melt paid (the buyer's DMs queued with `Refunded`).
    LightningPaid,
    /// A send was prepared and its operation id is recorded before the token is made.
    TokenPrepared,
    /// The token was made and DM'd (queued with `Refunded`).
    TokenSent,
}

/// A move a saga does not allow: a bug, never ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMove {
    /// In a payout.
    #[error("{event:?} is not possible while a payout is {from:?}")]
    Payout {
        /// The state the payout was in.
        from: PayoutState,
        /// What was attempted.
        event: PayoutEvent,
    },
    /// In a refund.
    #[error("{event:?} is not possible while a refund is {from:?}")]
    Refund {
        /// The state the refund was in.
        from: RefundState,
        /// What was attempted.
        event: RefundEvent,
    },
}

/// The payout's next state, or why not.
pub fn payout_transition(
    from: PayoutState,
    event: PayoutEvent,
) -> Result<PayoutState, InvalidMove> {
    use PayoutEvent as E;
    use PayoutState as S;
    match (from, event) {
        (S::MeltDebited, E::MintPaid) => Ok(S::Paid),
        (S::MeltDebited, E::MintRefused) => Ok(S::GivenBack),
        (S::TokenDebited, E::TokenMade) => Ok(S::Sent),
        (S::TokenDebited, E::NoToken) => Ok(S::GivenBack),
        _ => Err(InvalidMove::Payout { from, event }),
    }
}

/// The refund's next state, or why not.
pub fn refund_transition(
    from: RefundState,
    event: RefundEvent,
) -> Result<RefundState, InvalidMove> {
    use RefundEvent as E;
    use RefundState as S;
    match (from, event) {
        (S::LightningPlanned, E::Quoted) => Ok(S::LightningQuoted),
        (S::LightningPlanned | S::LightningQuoted, E::LightningFailed) => Ok(S::TokenPlanned),
        (S::LightningQuoted, E::LightningPaid) => Ok(S::Refunded),
        // From `TokenPrepared` only when the recorded send made no token: a new one replaces it.
        (S::TokenPlanned | S::TokenPrepared, E::TokenPrepared) => Ok(S::TokenPrepared),
        (S::TokenPrepared, E::TokenSent) => Ok(S::Refunded),
        _ => Err(InvalidMove::Refund { from, event }),
    }
}

/// Checks that replacing the plan `from` by `to` is the move `event` allows.
pub fn check_plan_move(
    from: &RefundPlan,
    event: RefundEvent,
    to: &RefundPlan,
) -> Result<(), InvalidMove> {
    let from = RefundState::of(from);
    let next = refund_transition(from, event)?;
    if next == RefundState::of(to) {
        Ok(())
    } else {
        Err(InvalidMove::Refund { from, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Sats;

    mod payout {
        use super::*;
        use PayoutEvent as E;
        use PayoutState as S;

        const STATES: [S; 5] = [
            S::MeltDebited,
            S::TokenDebited,
            S::Paid,
            S::Sent,
            S::GivenBack,
        ];
        const EVENTS: [E; 4] = [E::MintPaid, E::MintRefused, E::TokenMade, E::NoToken];
        const ALLOWED: [(S, E, S); 4] = [
            (S::MeltDebited, E::MintPaid, S::Paid),
            (S::MeltDebited, E::MintRefused, S::GivenBack),
            (S::TokenDebited, E::TokenMade, S::Sent),
            (S::TokenDebited, E::NoToken, S::GivenBack),
        ];

        #[test]
        fn the_table_is_the_whole_machine() {
            crate::util::assert_whole_table(&STATES, &EVENTS, &ALLOWED, payout_transition);
        }

        #[test]
        fn only_a_debit_is_in_flight_and_nothing_leaves_a_settled_payout() {
            for from in STATES {
                assert_eq!(
                    from.in_flight(),
                    matches!(from, S::MeltDebited | S::TokenDebited),
                    "{from:?}"
                );
                if !from.in_flight() {
                    for event in EVENTS {
                        assert_eq!(
                            payout_transition(from, event),
                            Err(InvalidMove::Payout { from, event })
                        );
                    }
                }
            }
            // A melt payout is never settled by the token's evidence, nor the reverse.
            assert!(payout_transition(S::MeltDebited, E::TokenMade).is_err());
            assert!(payout_transition(S::TokenDebited, E::MintPaid).is_err());
        }
    }

    mod refund {
        use super::*;
        use RefundEvent as E;
        use RefundState as S;

        const STATES: [S; 5] = [
            S::LightningPlanned,
            S::LightningQuoted,
            S::TokenPlanned,
            S::TokenPrepared,
            S::Refunded,
        ];
        const EVENTS: [E; 5] = [
            E::Quoted,
            E::LightningFailed,
            E::LightningPaid,
            E::TokenPrepared,
            E::TokenSent,
        ];
        const ALLOWED: [(S, E, S); 7] = [
            (S::LightningPlanned, E::Quoted, S::LightningQuoted),
            (S::LightningPlanned, E::LightningFailed, S::TokenPlanned),
            (S::LightningQuoted, E::LightningFailed, S::TokenPlanned),
            (S::LightningQuoted, E::LightningPaid, S::Refunded),
            (S::TokenPlanned, E::TokenPrepared, S::TokenPrepared),
            (S::TokenPrepared, E::TokenPrepared, S::TokenPrepared),
            (S::TokenPrepared, E::TokenSent, S::Refunded),
        ];

        #[test]
        fn the_table_is_the_whole_machine() {
            crate::util::assert_whole_table(&STATES, &EVENTS, &ALLOWED, refund_transition);
        }

        #[test]
        fn a_token_is_only_sent_once_its_send_is_recorded() {
            // The operation id is on disk before the token exists: never straight to Refunded.
            assert!(refund_transition(S::TokenPlanned, E::TokenSent).is_err());
            // A quote is recorded before the melt.
            assert!(refund_transition(S::LightningPlanned, E::LightningPaid).is_err());
            for event in EVENTS {
                assert!(refund_transition(S::Refunded, event).is_err(), "{event:?}");
            }
        }

        #[test]
        fn a_stored_plan_reads_as_its_state() {
            let plan = |json: &str| -> RefundPlan {
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
            };
            // As written before the token note existed.
            assert_eq!(
                RefundState::of(&plan(r#"{"via":"token","operation":null}"#)),
                S::TokenPlanned
            );
            assert_eq!(
                RefundState::of(&plan(
                    r#"{"via":"token","operation":"2b8e4f3c-1d52-4f7e-9a51-3a1f0c6d2e11"}"#
                )),
                S::TokenPrepared
            );
            assert_eq!(
                RefundState::of(&plan(
                    r#"{"via":"lightning","destination":"b@x.example","quote":null,"amount":90}"#
                )),
                S::LightningPlanned
            );
            assert_eq!(
                RefundState::of(&plan(
                    r#"{"via":"lightning","destination":"b@x.example","quote":"q1","amount":90}"#
                )),
                S::LightningQuoted
            );
        }

        #[test]
        fn a_plan_move_must_match_its_event() {
            let quoted = RefundPlan::Lightning {
                destination: "b@x.example".into(),
                quote: Some("q".into()),
                amount: Sats(90),
            };
            let planned = RefundPlan::Lightning {
                destination: "b@x.example".into(),
                quote: None,
                amount: Sats(100),
            };
            let token = RefundPlan::Token {
                operation: None,
                note: Some("n".into()),
            };
            assert!(check_plan_move(&planned, E::Quoted, &quoted).is_ok());
            assert!(check_plan_move(&quoted, E::LightningFailed, &token).is_ok());
            // The event allows the move, but the plan written is not where it leads.
            assert!(check_plan_move(&planned, E::Quoted, &token).is_err());
            assert!(check_plan_move(&token, E::Quoted, &quoted).is_err());
        }
    }
}
