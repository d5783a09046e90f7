//! Delivery codes: what the buyer hands the merchant on delivery to release the escrow.
//!
//! Eight decimal digits, so it can be typed on a feature phone's keypad: 10^8 ≈ 2^26.6
//! possibilities. With [`MAX_ATTEMPTS`] wrong tries per order before it locks for review, a
//! guessing merchant succeeds with probability 5 × 10^-8 per order. Codes are stored only as
//! HMAC-SHA256 under a 256-bit secret kept outside sled, so a copy of the database alone
//! cannot be brute-forced offline (10^8 plain hashes would take a second).

use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::sha256;
use nostr_sdk::hashes::{Hash, HashEngine};
use nostr_sdk::secp256k1::rand::{rngs::OsRng, Rng};
use serde::{Deserialize, Serialize};

/// Digits in a code.
pub const CODE_DIGITS: usize = 8;
/// Wrong codes accepted before the order locks.
pub const MAX_ATTEMPTS: u8 = 5;

/// A freshly generated code. Its `Debug` hides the digits so it cannot leak into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliveryCode(String);

impl std::fmt::Debug for DeliveryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryCode(********)")
    }
}

impl DeliveryCode {
    /// A uniformly random code.
    pub fn generate() -> Self {
        let n: u32 = OsRng.gen_range(0..100_000_000);
        Self(format!("{n:08}"))
    }

    /// The digits, for the buyer's DM only.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// A QR-friendly form (QR alphanumeric mode: upper case, digits, `:`), e.g.
    /// `SOKO:ORDER-ID:12345678`; [`normalize`] accepts it as typed input too.
    pub fn qr_string(&self, order_id: &str) -> String {
        format!("SOKO:{}:{}", order_id.to_uppercase(), self.0)
    }
}

/// The digits of what someone typed or scanned: spaces, dashes and a `SOKO:…:` prefix are
/// dropped. `None` when no eight digits remain.
pub fn normalize(input: &str) -> Option<String> {
    let last = input.rsplit(':').next().unwrap_or(input);
    let digits: String = last.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (digits.len() == CODE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// Keyed hashing of codes.
#[derive(Clone)]
pub struct CodeHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHasher(..)")
    }
}

/// What is stored for an order's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCode {
    /// HMAC of order id and code.
    pub mac: [u8; 32],
    /// Wrong tries so far.
    pub wrong_attempts: u8,
}

/// The answer to a code entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right code.
    Accepted,
    /// Wrong code; this many tries remain.
    Wrong {
        /// Tries left before locking.
        attempts_left: u8,
    },
    /// Wrong code, and that was the last try: the order locks for review.
    Locked,
    /// The order was already locked; nothing was checked.
    AlreadyLocked,
}

impl CodeHasher {
    /// A hasher under `key` (kept in the data dir, not in sled).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// What to store for `code` on `order_id`.
    pub fn store(&self, order_id: &str, code: &DeliveryCode) -> StoredCode {
        StoredCode {
            mac: self.mac(order_id, &code.0),
            wrong_attempts: 0,
        }
    }

    /// Checks an entry and returns the verdict with the updated record to save.
    pub fn check(&self, order_id: &str, stored: &StoredCode, input: &str) -> (Verdict, StoredCode) {
        if stored.wrong_attempts >= MAX_ATTEMPTS {
            return (Verdict::AlreadyLocked, stored.clone());
        }
        let right = normalize(input)
            .map(|digits| constant_time_eq(&self.mac(order_id, &digits), &stored.mac))
            .unwrap_or(false);
        if right {
            return (Verdict::Accepted, stored.clone());
        }
        let mut next = stored.clone();
        next.wrong_attempts = stored.wrong_attempts.saturating_add(1);
        let verdict = match MAX_ATTEMPTS.saturating_sub(next.wrong_attempts) {
            0 => Verdict::Locked,
            left => Verdict::Wrong {
                attempts_left: left,
            },
        };
        (verdict, next)
    }

    fn mac(&self, order_id: &str, digits: &str) -> [u8; 32] {
        let mut engine = HmacEngine::<sha256::Hash>::new(&self.key);
        engine.input(order_id.as_bytes());
        engine.input(b":");
        engine.input(digits.as_bytes());
        Hmac::<sha256::Hash>::from_engine(engine).to_byte_array()
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_eight_digits_and_hidden_from_debug() {
        let code = DeliveryCode::generate();
        assert_eq!(normalize(code.reveal()).as_deref(), Some(code.reveal()));
        assert!(!format!("{code:?}").contains(code.reveal()));
        assert_eq!(
            normalize(&code.qr_string("ab-1")).as_deref(),
            Some(code.reveal())
        );
        assert_eq!(normalize("1234 5678").as_deref(), Some("12345678"));
        assert_eq!(normalize("1234567"), None);
        assert_eq!(normalize("1234567a"), None);
    }

    #[test]
    fn right_code_is_accepted_wrong_ones_count_down_then_lock() {
        let hasher = CodeHasher::new([7; 32]);
        let code = DeliveryCode(String::from("01234567"));
        let mut stored = hasher.store("o1", &code);
        assert_eq!(
            hasher.check("o1", &stored, "0123-4567").0,
            Verdict::Accepted
        );
        // The same code on another order is wrong: the MAC binds the order id.
        assert_ne!(hasher.check("o2", &stored, "01234567").0, Verdict::Accepted);
        for left in (1..MAX_ATTEMPTS).rev() {
            let (verdict, next) = hasher.check("o1", &stored, "99999999");
            assert_eq!(
                verdict,
                Verdict::Wrong {
                    attempts_left: left
                }
            );
            stored = next;
        }
        let (verdict, stored) = hasher.check("o1", &stored, "garbage");
        assert_eq!(verdict, Verdict::Locked);
        // Locked: even the right code is not checked any more.
        assert_eq!(
            hasher.check("o1", &stored, "01234567").0,
            Verdict::AlreadyLocked
        );
    }

    #[test]
    fn another_key_gives_another_mac() {
        let code = DeliveryCode(String::from("01234567"));
        let a = CodeHasher::new([1; 32]).store("o1", &code);
        let b = CodeHasher::new([2; 32]).store("o1", &code);
        assert_ne!(a.mac, b.mac);
    }
}
