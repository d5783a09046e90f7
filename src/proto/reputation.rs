//! Reputation tokens on the wire (`kinds/reputation.md`): Cashu-style blind signatures of
//! one denomination under soko's one reputation key.
//!
//! Every field is a lowercase hex string of a fixed length; the lengths are checked by
//! `exchange::reputation` before any curve arithmetic, so a hostile string costs nothing.
//! The names follow NUT-00 (`C`, `C_`) so that a Cashu developer reads them at sight.

use serde::{Deserialize, Serialize};

/// Most tokens staked, or blinded outputs asked for, in one command.
pub const MAX_REP_TOKENS: usize = 16;
/// Hex length of a compressed secp256k1 point (`B_`, `C_`, `C`, the key).
pub const POINT_HEX_LEN: usize = 66;
/// Hex length of a scalar (a DLEQ's `e` and `s`).
pub const SCALAR_HEX_LEN: usize = 64;
/// Hex length of a token secret: 32 random bytes, as cdk's `Secret::generate` makes them.
pub const SECRET_HEX_LEN: usize = 64;

/// soko's reputation keyset: one public key, one denomination (each token is one point).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepKeyset {
    /// The NUT-02 (v1) keyset id of `{1: pubkey}`: 16 hex characters.
    pub id: String,
    /// The public key `K`, compressed, 66 hex characters.
    pub pubkey: String,
}

/// One reputation token, as its holder presents it: the secret and soko's unblinded
/// signature on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepToken {
    /// The secret `x`: 64 lowercase hex characters; `Y = hash_to_curve(x as UTF-8 bytes)`.
    pub secret: String,
    /// The signature `C = k·Y`, compressed point hex.
    #[serde(rename = "C")]
    pub c: String,
}

/// A blinded output `B_ = Y + r·G` the holder wants signed, compressed point hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlindedRep(pub String);

/// soko's blind signature on one [`BlindedRep`], with its NUT-12 proof that the one
/// published key made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepSignature {
    /// `C_ = k·B_`, compressed point hex.
    #[serde(rename = "C_")]
    pub c_: String,
    /// The DLEQ proof that `log_G(K) = log_B_(C_)`.
    pub dleq: RepDleq,
}

/// A NUT-12 DLEQ proof on a blind signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepDleq {
    /// The challenge, scalar hex.
    pub e: String,
    /// The response, scalar hex.
    pub s: String,
}
