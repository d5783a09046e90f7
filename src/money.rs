//! Money as integers: sats and millisats in newtypes, with checked arithmetic only, so an
//! overflow is an error instead of a wrap-around.

use serde::{Deserialize, Serialize};

/// An amount in satoshis.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Sats(pub u64);

/// An amount in millisatoshis.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Msats(pub u64);

/// An amount did not fit in 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount overflow")]
pub struct Overflow;

impl Sats {
    /// Zero sats.
    pub const ZERO: Sats = Sats(0);

    /// `self + other`, or an error on overflow.
    pub fn checked_add(self, other: Sats) -> Result<Sats, Overflow> {
        self.0.checked_add(other.0).map(Sats).ok_or(Overflow)
    }

    /// `self - other`, or `None` when it would go below zero.
    pub fn checked_sub(self, other: Sats) -> Option<Sats> {
        self.0.checked_sub(other.0).map(Sats)
    }

    /// In millisats.
    pub fn to_msats(self) -> Result<Msats, Overflow> {
        self.0.checked_mul(1_000).map(Msats).ok_or(Overflow)
    }
}

impl Msats {
    /// Whole sats, rounding up: a buyer never pays less than the price.
    pub fn to_sats_ceil(self) -> Sats {
        Sats(self.0.div_ceil(1_000))
    }
}

impl std::fmt::Display for Sats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} sat", self.0)
    }
}

impl From<Sats> for cdk::Amount {
    fn from(sats: Sats) -> Self {
        cdk::Amount::from(sats.0)
    }
}

impl From<cdk::Amount> for Sats {
    fn from(amount: cdk::Amount) -> Self {
        Sats(u64::from(amount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked_and_rounding_favours_the_seller() {
        assert_eq!(Sats(u64::MAX).checked_add(Sats(1)), Err(Overflow));
        assert_eq!(Sats(1).checked_sub(Sats(2)), None);
        assert_eq!(Msats(1_001).to_sats_ceil(), Sats(2));
        assert_eq!(Msats(1_000).to_sats_ceil(), Sats(1));
        assert_eq!(Sats(u64::MAX).to_msats(), Err(Overflow));
    }
}
