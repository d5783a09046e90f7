//! Who may post gateway callbacks. soko takes the posted phone number as the merchant's
//! identity, so an unauthenticated bridge would let anyone with `curl` act as any merchant.
//! Africa's Talking cannot sign its callbacks; what it can do is call a URL that holds a
//! secret, from a known set of addresses. So the bridge checks:
//!
//! - a shared secret, in the callback path (`/ussd/<secret>`) or in the
//!   [`SECRET_HEADER`] header (for gateways or proxies that can set one), compared in
//!   constant time;
//! - optionally, the peer's address against an allow-list of networks.
//!
//! A request that fails either check never reaches soko.

use ipnet::IpNet;
use nostr_sdk::hashes::{sha256, Hash};
use nostr_sdk::secp256k1::rand::{rngs::OsRng, RngCore};
use std::net::IpAddr;

/// The header that may carry the gateway secret instead of the path.
pub const SECRET_HEADER: &str = "x-soko-gateway-secret";
/// Shortest secret accepted: guessing must be hopeless even at line rate.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted (it sits in a URL).
pub const MAX_SECRET_LEN: usize = 128;

/// Why a gateway secret is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Too short or too long.
    #[error("a gateway secret has {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters")]
    Length,
    /// It must fit in a URL path segment unescaped.
    #[error("a gateway secret is letters, digits, `-` and `_` only")]
    Charset,
}

/// A gateway secret. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewaySecret(String);

impl std::fmt::Debug for GatewaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaySecret(****)")
    }
}

impl GatewaySecret {
    /// A random secret: 128 bits as 32 hex characters.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Checks a configured secret.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&text.len()) {
            return Err(SecretError::Length);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SecretError::Charset);
        }
        Ok(Self(text.to_owned()))
    }

    /// The secret, for the callback URL given to the gateway's dashboard only.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// True when `given` is the secret. Both sides are hashed first, so the comparison
    /// takes the same time whatever the length or the first differing byte of `given`.
    pub fn matches(&self, given: &str) -> bool {
        let a = sha256::Hash::hash(self.0.as_bytes()).to_byte_array();
        let b = sha256::Hash::hash(given.as_bytes()).to_byte_array();
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

/// How the bridge authenticates its gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayAuth {
    /// The shared secret; `None` only when explicitly disabled for local development.
    pub secret: Option<GatewaySecret>,
    /// Networks callbacks may come from; empty: any address.
    pub allow_from: Vec<IpNet>,
}

/// Why a callback was turned away (the HTTP status says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No secret, or a wrong one: 401.
    Secret,
    /// The peer is not on the allow-list: 403.
    Address,
}

impl GatewayAuth {
    /// Checks one callback: the peer address, then the secret from the path or the header.
    pub fn check(
        &self,
        peer: IpAddr,
        path_secret: Option<&str>,
        header_secret: Option<&str>,
    ) -> Result<(), Denied> {
        if !self.allow_from.is_empty() && !self.allow_from.iter().any(|net| net.contains(&peer)) {
            return Err(Denied::Address);
        }
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        // Both are checked whichever is present, so timing tells nothing of which one was.
        let by_path = path_secret.is_some_and(|s| secret.matches(s));
        let by_header = header_secret.is_some_and(|s| secret.matches(s));
        if by_path | by_header {
            Ok(())
        } else {
            Err(Denied::Secret)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_by_path_or_header_and_addresses_by_network() -> Result<(), SecretError> {
        let secret = GatewaySecret::parse("s3cret-callback-path_1")?;
        assert!(!format!("{secret:?}").contains("s3cret"));
        let auth = GatewayAuth {
            secret: Some(secret),
            allow_from: vec![],
        };
        let peer: IpAddr = [203, 0, 113, 7].into();
        assert_eq!(
            auth.check(peer, Some("s3cret-callback-path_1"), None),
            Ok(())
        );
        assert_eq!(
            auth.check(peer, None, Some("s3cret-callback-path_1")),
            Ok(())
        );
        assert_eq!(auth.check(peer, None, None), Err(Denied::Secret));
        assert_eq!(
            auth.check(peer, Some("s3cret-callback-path_2"), None),
            Err(Denied::Secret)
        );
        assert_eq!(
            auth.check(peer, Some("s3cret-callback-path_"), None),
            Err(Denied::Secret)
        );
        let fenced = GatewayAuth {
            allow_from: vec!["203.0.113.0/24".parse().map_err(|_| SecretError::Length)?],
            ..auth
        };
        assert_eq!(
            fenced.check(peer, None, Some("s3cret-callback-path_1")),
            Ok(())
        );
        assert_eq!(
            fenced.check(
                [198, 51, 100, 1].into(),
                Some("s3cret-callback-path_1"),
                None
            ),
            Err(Denied::Address)
        );
        let open = GatewayAuth::default();
        assert_eq!(open.check(peer, None, None), Ok(()));
        Ok(())
    }

    #[test]
    fn generated_secrets_parse_and_bad_ones_do_not() {
        let secret = GatewaySecret::generate();
        assert_eq!(GatewaySecret::parse(secret.reveal()), Ok(secret.clone()));
        assert_ne!(GatewaySecret::generate(), secret);
        assert_eq!(GatewaySecret::parse("short"), Err(SecretError::Length));
        assert_eq!(
            GatewaySecret::parse("has/a/slash/in/it/x"),
            Err(SecretError::Charset)
        );
    }
}
