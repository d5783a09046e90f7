//! A session's life, one pure transition function tested against its whole table.
//!
//! ```text
//! Open ──close / expire──▶ Closing ──ecash returned (token DM queued, or none left)──▶ Refunded
//!                            │  ▲                                                      │
//!                melt quoted │  │ melt paid (the change goes back as a token) /     trees deleted
//!                            ▼  │ melt failed                                          ▼
//!                           Melting                                                  Ended
//! ```
//! Closing to Refunded is the refund saga: each arrow is recorded in sled before the step
//! after it, so a crash anywhere resumes where it stopped and returns the ecash exactly once.

use serde::{Deserialize, Serialize};

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Commands run in it.
    Open,
    /// Closed or expired: no command runs; what its wallet holds goes back.
    Closing,
    /// The refund is a Lightning payment recorded at the mint (a melt quote).
    Melting,
    /// Nothing is left to return; the session's wallet can go.
    Refunded,
    /// Its wallet is deleted; a tombstone answers `session_closed` / `session_expired`
    /// until it is pruned. Terminal.
    Ended,
}

/// Something that happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEvent {
    /// `close_session`.
    Close,
    /// Its time ran out.
    Expire,
    /// A melt quote for the Lightning refund is recorded.
    MeltQuoted,
    /// The mint paid the melt: what is left (its change) is returned next.
    MeltPaid,
    /// The mint refused or failed the melt: start again.
    MeltFailed,
    /// The rest of the ecash went back as a token (its DM queued), or none was left.
    Returned,
    /// The session wallet's trees are deleted.
    TreesDeleted,
}

impl SessionState {
    /// True while commands may run in the session.
    pub fn is_open(self) -> bool {
        self == Self::Open
    }

    /// True while the refund saga has work to do.
    pub fn is_refunding(self) -> bool {
        matches!(self, Self::Closing | Self::Melting)
    }
}

/// A move the session's state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{event:?} is not possible while the session is {from:?}")]
pub struct IllegalMove {
    /// The state it was in.
    pub from: SessionState,
    /// What was attempted.
    pub event: SessionEvent,
}

/// The next state, or why not.
pub fn transition(from: SessionState, event: SessionEvent) -> Result<SessionState, IllegalMove> {
    use SessionEvent as E;
    use SessionState as S;
    Ok(match (from, event) {
        (S::Open, E::Close | E::Expire) => S::Closing,
        (S::Closing, E::MeltQuoted) => S::Melting,
        (S::Closing, E::Returned) => S::Refunded,
        (S::Melting, E::MeltPaid | E::MeltFailed) => S::Closing,
        (S::Refunded, E::TreesDeleted) => S::Ended,
        _ => return Err(IllegalMove { from, event }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionEvent as E;
    use SessionState as S;

    const STATES: [S; 5] = [S::Open, S::Closing, S::Melting, S::Refunded, S::Ended];
    const EVENTS: [E; 7] = [
        E::Close,
        E::Expire,
        E::MeltQuoted,
        E::MeltPaid,
        E::MeltFailed,
        E::Returned,
        E::TreesDeleted,
    ];
    const ALLOWED: [(S, E, S); 7] = [
        (S::Open, E::Close, S::Closing),
        (S::Open, E::Expire, S::Closing),
        (S::Closing, E::MeltQuoted, S::Melting),
        (S::Closing, E::Returned, S::Refunded),
        (S::Melting, E::MeltPaid, S::Closing),
        (S::Melting, E::MeltFailed, S::Closing),
        (S::Refunded, E::TreesDeleted, S::Ended),
    ];

    #[test]
    fn the_table_is_the_whole_machine() {
        crate::util::assert_whole_table(&STATES, &EVENTS, &ALLOWED, transition);
    }

    #[test]
    fn an_ended_session_never_refunds_again() {
        for event in EVENTS {
            assert!(transition(S::Ended, event).is_err());
            assert!(transition(S::Refunded, event).is_err() || event == E::TreesDeleted);
        }
    }
}
