//! `ping`: proves the round trip works (relay in, decrypt, dispatch, encrypt, relay out).

use crate::proto::{PingArgs, PingResult};
use crate::util::unix_now;

/// Answers with soko's clock.
pub fn run(_args: PingArgs) -> PingResult {
    PingResult {
        pong: true,
        time: unix_now(),
    }
}
