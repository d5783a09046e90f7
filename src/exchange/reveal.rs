//! A dispute's key reveal for an exchange offer: the shared check
//! ([`crate::proto::reveal`]) with the offer's tag and sides.

use nostr_sdk::{Event, PublicKey};

pub use crate::proto::reveal::{RevealRefusal, Revealed, MAX_STATEMENT_BYTES, WINDOW_SECS};
use crate::proto::reveal::{Subject, OFFER_SIDES};

/// The two sides of an offer a reveal may speak for.
pub const SIDES: [&str; 2] = OFFER_SIDES;

/// Checks the reveal `event` for `offer` by `side` (`maker` or `taker`), addressed to `bot`,
/// at `now` ([`crate::proto::reveal::check`]).
pub fn check(
    event: &Event,
    bot: &PublicKey,
    offer: &str,
    side: &str,
    now: u64,
) -> Result<Revealed, RevealRefusal> {
    crate::proto::reveal::check(event, bot, Subject::offer(offer), side, now)
}
