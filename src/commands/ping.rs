//! `ping`: proves the round trip works (relay in, decrypt, dispatch, encrypt, relay out).

use crate::proto::{PingArgs, PingResult};

/// Answers with soko's clock (`now`, the commands' clock).
pub fn run(_args: PingArgs, now: u64) -> PingResult {
    PingResult {
        pong: true,
        time: now,
    }
}
