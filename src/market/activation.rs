//! One-time activation codes: how a pending merchant proves, on its first USSD dial, that it
//! is the shop the operator or agent registered — not merely the first caller with its number.
//!
//! A code is 12 digits (typed on a keypad, so digits only): 40 bits, handed out once when the
//! merchant is created, and guessed online only a few times before the PIN lockout stops the
//! caller. sled keeps only HMAC-SHA256 of it under the vault's `activation-code` subkey, as
//! invite codes are kept; it is used up when the first PIN is set.

use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::sha256;
use nostr_sdk::hashes::{Hash, HashEngine};
use nostr_sdk::secp256k1::rand::{rngs::OsRng, Rng};

/// Digits in a code.
pub const CODE_DIGITS: usize = 12;
/// Vault purpose of the HMAC key.
pub const VAULT_PURPOSE: &str = "activation-code";

/// An activation code. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct ActivationCode(String);

impl std::fmt::Debug for ActivationCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActivationCode(****)")
    }
}

impl ActivationCode {
    /// A uniformly random code.
    pub fn generate() -> Self {
        let mut rng = OsRng;
        Self(
            (0..CODE_DIGITS)
                .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
                .collect(),
        )
    }

    /// What was typed, without spaces or dashes; `None` when it cannot be a code.
    pub fn parse(input: &str) -> Option<Self> {
        let digits: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        (digits.len() == CODE_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(Self(digits))
    }

    /// The code in groups of four, for the operator or agent who created the merchant only.
    pub fn reveal(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        chars
            .chunks(4)
            .map(|group| group.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// HMAC-SHA256 of the code under `key`, hex: what is stored.
    pub fn tag(&self, key: &[u8; 32]) -> String {
        let mut engine = HmacEngine::<sha256::Hash>::new(key);
        engine.input(self.0.as_bytes());
        Hmac::<sha256::Hash>::from_engine(engine).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_twelve_digits_read_forgivingly_and_hidden() {
        let code = ActivationCode::generate();
        let shown = code.reveal();
        assert_eq!(shown.len(), 14);
        assert_eq!(ActivationCode::parse(&shown), Some(code.clone()));
        assert_eq!(
            ActivationCode::parse(&shown.replace(' ', "-")),
            Some(code.clone())
        );
        assert!(!format!("{code:?}").contains(&shown[..4]));
        assert_eq!(ActivationCode::parse("12345678901"), None);
        assert_eq!(ActivationCode::parse("1234567890123"), None);
        assert_eq!(ActivationCode::parse("12345678901a"), None);
        let key = [7; 32];
        assert_eq!(code.tag(&key), code.tag(&key));
        assert_ne!(code.tag(&key), code.tag(&[8; 32]));
    }
}
