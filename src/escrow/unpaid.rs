//! How many orders wait for payment, in all and per buyer: what the intake caps are checked
//! against.
//!
//! Counted in memory because sled counts a tree by walking it, and counting one buyer's
//! unpaid orders from the `awaiting` tree meant reading every unpaid order's record: two
//! walks of up to `max_unpaid_total` records for every order taken. The counts are derived
//! from `awaiting` when the service opens and then moved by exactly what each committed
//! transaction did to it, so they cannot drift from it across a restart.

use std::collections::HashMap;

use nostr_sdk::PublicKey;

/// Orders waiting for payment: in all, and per buyer.
#[derive(Debug, Default)]
pub(super) struct Unpaid {
    total: usize,
    by_buyer: HashMap<PublicKey, u32>,
}

impl Unpaid {
    /// An order of `buyer` now waits for payment (its key was not in `awaiting` before).
    pub(super) fn added(&mut self, buyer: PublicKey) {
        self.total = self.total.saturating_add(1);
        let mine = self.by_buyer.entry(buyer).or_default();
        *mine = mine.saturating_add(1);
    }

    /// An order of `buyer` no longer waits for payment (its key was taken out of
    /// `awaiting`).
    pub(super) fn removed(&mut self, buyer: &PublicKey) {
        self.total = self.total.saturating_sub(1);
        if let Some(mine) = self.by_buyer.get_mut(buyer) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                self.by_buyer.remove(buyer);
            }
        }
    }

    /// An order in `awaiting` whose record could not be read: counted in all, for no buyer.
    pub(super) fn added_unknown(&mut self) {
        self.total = self.total.saturating_add(1);
    }

    pub(super) fn total(&self) -> usize {
        self.total
    }

    pub(super) fn of(&self, buyer: &PublicKey) -> u32 {
        self.by_buyer.get(buyer).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::Keys;

    use super::*;

    #[test]
    fn counts_follow_what_was_added_and_removed() {
        let (a, b) = (Keys::generate().public_key(), Keys::generate().public_key());
        let mut unpaid = Unpaid::default();
        unpaid.added(a);
        unpaid.added(a);
        unpaid.added(b);
        unpaid.added_unknown();
        assert_eq!((unpaid.total(), unpaid.of(&a), unpaid.of(&b)), (4, 2, 1));
        unpaid.removed(&a);
        unpaid.removed(&b);
        assert_eq!((unpaid.total(), unpaid.of(&a), unpaid.of(&b)), (2, 1, 0));
        assert!(
            !unpaid.by_buyer.contains_key(&b),
            "a buyer at 0 is forgotten"
        );
    }

    #[test]
    fn a_removal_never_underflows() {
        let a = Keys::generate().public_key();
        let mut unpaid = Unpaid::default();
        unpaid.removed(&a);
        assert_eq!((unpaid.total(), unpaid.of(&a)), (0, 0));
    }
}
