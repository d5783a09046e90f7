//! The phone index: a merchant found by the number it dials from (USSD), under an HMAC of
//! the digits so the number is not stored in clear; the number itself stays sealed.

use super::*;

impl Merchants {
    /// Merchants stored before the phone index existed get their entry.
    pub(super) fn index_phones(&self) -> Result<(), StoreError> {
        for entry in self.records.iter() {
            let (key, stored) = entry?;
            let Some(sealed) = &stored.phone_sealed else {
                continue;
            };
            let Ok(phone) = self.vault.unseal(sealed) else {
                continue;
            };
            if let Some(digits) = phone_digits(&phone) {
                let pubkey = hex_of(&key);
                self.phones
                    .insert_if_absent(&self.phone_tag(&digits), &pubkey)?;
            }
        }
        Ok(())
    }

    pub(super) fn phone_tag(&self, digits: &str) -> [u8; 32] {
        let mut engine = HmacEngine::<sha256::Hash>::new(&self.phone_key);
        engine.input(digits.as_bytes());
        Hmac::<sha256::Hash>::from_engine(engine).to_byte_array()
    }

    /// The merchant registered with this phone number, if any.
    pub fn by_phone(&self, phone: &str) -> Result<Option<PublicKey>, MerchantError> {
        let Some(digits) = phone_digits(phone) else {
            return Ok(None);
        };
        self.phones
            .get(&self.phone_tag(&digits))?
            .map(|hex| PublicKey::from_hex(&hex).map_err(MerchantError::from))
            .transpose()
    }

    /// The merchant's phone number, unsealed (for SMS notices only; never log it).
    pub fn phone(&self, pubkey: &PublicKey) -> Result<Option<String>, MerchantError> {
        let stored = self
            .records
            .get(&pubkey.to_bytes())?
            .ok_or_else(|| MerchantError::unknown(pubkey))?;
        Ok(stored
            .phone_sealed
            .map(|sealed| self.vault.unseal(&sealed))
            .transpose()?)
    }
}

/// The digits of a phone number as the index knows it: an optional `+` and 7 to 15 digits.
pub fn phone_digits(phone: &str) -> Option<String> {
    let phone = phone.trim();
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    let valid = (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| digits.to_owned())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
