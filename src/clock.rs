//! The time soko's services enforce their windows on: the payment window, the delivery
//! window, PIN lockouts, USSD sessions, agents' proposals and registrations. It is given to
//! each service at construction, so a test moves it forward instead of sleeping through a
//! window. The transport (relay retention, replay windows, the outbox's retries) keeps the
//! world's time: it judges other people's timestamps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::util::unix_now;

/// Unix seconds, from the system clock plus whatever a test has moved it ahead. Cheap to
/// clone; clones share the same offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    ahead: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        unix_now().saturating_add(self.ahead.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) `secs` ahead; it never goes back. For
    /// tests: a window passes without waiting for it.
    pub fn advance(&self, secs: u64) {
        self.ahead.fetch_add(secs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_clock_moves_every_clone_and_keeps_running() {
        let clock = Clock::system();
        let shared = clock.clone();
        let before = clock.now();
        shared.advance(300);
        assert!(clock.now() >= before + 300);
        assert!(clock.now() < before + 310);
    }
}
