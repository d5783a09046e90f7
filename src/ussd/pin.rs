//! Merchant PINs: stored only as argon2id hashes (slow on purpose), with a pure lockout rule:
//! `pin_tries` wrong PINs in a row lock USSD access, for `lockout_secs` the first time and
//! four times longer each time after (15 min, 1 h, 4 h with the defaults); after
//! `timed_lockouts` such locks the next one lasts until the operator resets it
//! (`ussd_reset`). A right PIN clears the count and the escalation. Wrong activation codes
//! count as wrong PINs.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use nostr_sdk::secp256k1::rand::{rngs::OsRng, RngCore};
use serde::{Deserialize, Serialize};

/// A merchant's USSD access.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The PIN's argon2id hash (PHC string); `None` until the first PIN is set.
    pub pin_hash: Option<String>,
    /// Wrong PINs in a row.
    pub wrong: u32,
    /// Unix seconds until which access is locked (0: never locked; [`UNTIL_RESET`]: until
    /// the operator resets it).
    pub locked_until: u64,
    /// Locks since the last right PIN: each lasts longer.
    #[serde(default)]
    pub locks: u32,
}

/// `locked_until` of a lock only the operator lifts.
pub const UNTIL_RESET: u64 = u64::MAX;
/// How much longer each lock lasts than the one before.
const ESCALATION: u64 = 4;

/// The answer to a PIN entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinVerdict {
    /// Right.
    Right,
    /// Wrong; this many tries remain.
    Wrong {
        /// Tries left.
        tries_left: u32,
    },
    /// Locked until then (the PIN was not checked, or this was the last try).
    Locked {
        /// Unix seconds.
        until: u64,
    },
}

/// The lockout rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Wrong PINs in a row that lock.
    pub tries: u32,
    /// Seconds of the first lock.
    pub secs: u64,
    /// Timed locks before one that lasts until an operator reset.
    pub timed: u32,
}

impl Lockout {
    /// Seconds the `n`th lock (1-based) lasts; `None` for a lock until reset.
    pub fn duration(&self, n: u32) -> Option<u64> {
        if n > self.timed {
            return None;
        }
        Some(
            self.secs
                .saturating_mul(ESCALATION.saturating_pow(n.saturating_sub(1))),
        )
    }
}

/// Hashing failed (practically never).
#[derive(Debug, thiserror::Error)]
#[error("PIN hashing: {0}")]
pub struct PinError(String);

impl Account {
    /// Until when access is locked, if it is now.
    pub fn locked(&self, now: u64) -> Option<u64> {
        (self.locked_until > now).then_some(self.locked_until)
    }

    /// The account after a PIN entry that was `right` or not, and the verdict. A locked
    /// account is not checked at all.
    pub fn record(&self, right: bool, now: u64, rule: Lockout) -> (Account, PinVerdict) {
        if let Some(until) = self.locked(now) {
            return (self.clone(), PinVerdict::Locked { until });
        }
        let mut next = self.clone();
        if right {
            next.wrong = 0;
            next.locks = 0;
            return (next, PinVerdict::Right);
        }
        next.wrong = next.wrong.saturating_add(1);
        if next.wrong >= rule.tries {
            next.wrong = 0;
            next.locks = next.locks.saturating_add(1);
            next.locked_until = match rule.duration(next.locks) {
                Some(secs) => now.saturating_add(secs),
                None => UNTIL_RESET,
            };
            return (
                next.clone(),
                PinVerdict::Locked {
                    until: next.locked_until,
                },
            );
        }
        let tries_left = rule.tries - next.wrong;
        (next, PinVerdict::Wrong { tries_left })
    }
}

impl Account {
    /// The account with its lock and counts cleared (the operator's reset); the PIN too
    /// when `forget_pin`.
    pub fn reset(&self, forget_pin: bool) -> Account {
        Account {
            pin_hash: if forget_pin {
                None
            } else {
                self.pin_hash.clone()
            },
            wrong: 0,
            locked_until: 0,
            locks: 0,
        }
    }
}

/// The argon2id hash of a PIN, with a fresh random salt.
pub fn hash(pin: &str) -> Result<String, PinError> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PinError(e.to_string()))?;
    Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PinError(e.to_string()))
}

/// True when `pin` matches the stored hash.
pub fn verify(stored: &str, pin: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(pin.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Lockout = Lockout {
        tries: 3,
        secs: 900,
        timed: 3,
    };

    #[test]
    fn hashes_verify_only_their_pin_and_hide_it() -> Result<(), PinError> {
        let stored = hash("4821")?;
        assert!(stored.starts_with("$argon2id$"));
        assert!(!stored.contains("4821"));
        assert!(verify(&stored, "4821"));
        assert!(!verify(&stored, "4822"));
        assert!(!verify("not a hash", "4821"));
        assert_ne!(hash("4821")?, stored, "salted");
        Ok(())
    }

    #[test]
    fn wrong_pins_count_down_lock_and_the_lock_expires() {
        let account = Account::default();
        let (account, v) = account.record(false, 100, RULE);
        assert_eq!(v, PinVerdict::Wrong { tries_left: 2 });
        let (account, v) = account.record(true, 101, RULE);
        assert_eq!(v, PinVerdict::Right, "a right PIN resets the count");
        let (account, _) = account.record(false, 102, RULE);
        let (account, v) = account.record(false, 103, RULE);
        assert_eq!(v, PinVerdict::Wrong { tries_left: 1 });
        let (account, v) = account.record(false, 104, RULE);
        assert_eq!(v, PinVerdict::Locked { until: 1004 });
        // Locked: even the right PIN is not accepted.
        let (account, v) = account.record(true, 500, RULE);
        assert_eq!(v, PinVerdict::Locked { until: 1004 });
        // After the lock, a fresh count.
        let (account, v) = account.record(false, 1004, RULE);
        assert_eq!(v, PinVerdict::Wrong { tries_left: 2 });
        assert_eq!(account.record(true, 1005, RULE).1, PinVerdict::Right);
    }

    /// Three wrong in a row, from `now`: the verdict of the third.
    fn three_wrong(account: Account, now: u64) -> (Account, PinVerdict) {
        let (account, _) = account.record(false, now, RULE);
        let (account, _) = account.record(false, now, RULE);
        account.record(false, now, RULE)
    }

    #[test]
    fn locks_escalate_to_one_only_the_operator_lifts() {
        let (account, v) = three_wrong(Account::default(), 0);
        assert_eq!(v, PinVerdict::Locked { until: 900 });
        let (account, v) = three_wrong(account, 900);
        assert_eq!(v, PinVerdict::Locked { until: 900 + 3600 });
        let (account, v) = three_wrong(account, 4500);
        assert_eq!(
            v,
            PinVerdict::Locked {
                until: 4500 + 14_400
            }
        );
        let (account, v) = three_wrong(account, 18_900);
        assert_eq!(v, PinVerdict::Locked { until: UNTIL_RESET });
        // Years later, still locked, and the right PIN is not even checked.
        let (account, v) = account.record(true, 1 << 40, RULE);
        assert_eq!(v, PinVerdict::Locked { until: UNTIL_RESET });
        // The operator's reset: a fresh start, PIN kept (or forgotten).
        let reset = account.reset(false);
        assert!(reset.pin_hash == account.pin_hash && reset.locks == 0);
        assert_eq!(
            reset.record(false, 1, RULE).1,
            PinVerdict::Wrong { tries_left: 2 }
        );
        assert_eq!(account.reset(true).pin_hash, None);
        // A right PIN between locks starts the escalation over.
        let (account, _) = three_wrong(Account::default(), 0);
        let (account, v) = account.record(true, 900, RULE);
        assert_eq!(v, PinVerdict::Right);
        assert_eq!(
            three_wrong(account, 901).1,
            PinVerdict::Locked { until: 1801 }
        );
    }
}
