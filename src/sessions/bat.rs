//! Checking a blind authentication token (NUT-22) once: its DLEQ proof offline against the
//! mint's auth keys, then a burn at the mint, so a second use fails there as well as in sled.
//!
//! Two mints are supported:
//! - the embedded dev mint, in this process: cdk's own `verify_blind_auth`, then
//!   `check_blind_auth_proof_spendable`, an atomic burn in the mint's auth database (never
//!   `verify_auth`, which passes any token when the endpoint is not protected);
//! - an external mint over HTTP: the DLEQ against `/v1/auth/blind/keys/{id}`, then one call
//!   to an endpoint the mint lists as blind-protected in `/v1/info`, carrying the token
//!   without its DLEQ (the DLEQ would link the redemption to the issuance). soko knows how to
//!   call `POST /v1/checkstate` (one random `Y`) and `POST /v1/restore` (one random output):
//!   both change nothing at the mint and neither burns the token without an answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdk::nuts::nut21::{Method, ProtectedEndpoint, RoutePath};
use cdk::nuts::{
    AuthRequired, AuthToken, BlindAuthToken, BlindedMessage, CurrencyUnit, Id, KeysResponse,
    MintInfo, SecretKey,
};
use cdk::Mint;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatRefusal {
    /// Not a token, or not one this mint signed (unknown keyset, not an auth keyset, expired
    /// keyset, a DLEQ or signature that does not verify).
    #[error("{0}")]
    Invalid(String),
    /// Already used, here or at the mint.
    #[error("this blind auth token was already used")]
    Spent,
    /// The mint issues no blind auth tokens, or protects nothing soko can burn one on.
    #[error("{0}")]
    Unsupported(String),
}

/// A check that could not be made: the mint did not answer usefully. The token is not
/// burned by soko then, and the sender may try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the mint could not check the token: {0}")]
pub struct MintUnavailable(pub String);

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Valid, and now spent at the mint.
    Burned,
    /// Refused.
    Refused(BatRefusal),
    /// Unknown: the mint could not be asked.
    Unavailable(MintUnavailable),
}

/// Verifies and burns blind auth tokens at one mint.
#[async_trait::async_trait]
pub trait BatVerifier: std::fmt::Debug + Send + Sync {
    /// Checks `token` (with its DLEQ) and burns it at the mint.
    async fn verify_and_burn(&self, token: &BlindAuthToken) -> Checked;
}

/// Parses the `authA…` form.
pub fn parse(text: &str) -> Result<BlindAuthToken, BatRefusal> {
    text.trim()
        .parse::<BlindAuthToken>()
        .map_err(|e| BatRefusal::Invalid(format!("not a blind auth token (authA…): {e}")))
}

/// The DLEQ proof of `token` against the amount-1 key of `keys` (NUT-12): proves the mint's
/// key signed it without asking the mint.
fn check_dleq(token: &BlindAuthToken, keys: &KeysResponse) -> Result<(), BatRefusal> {
    let proof = &token.auth_proof;
    let keyset = keys
        .keysets
        .iter()
        .find(|k| k.id == proof.keyset_id)
        .ok_or_else(|| BatRefusal::Invalid("the token's keyset is not this mint's".into()))?;
    if keyset.unit != CurrencyUnit::Auth {
        return Err(BatRefusal::Invalid(
            "the token's keyset is not an auth keyset".into(),
        ));
    }
    let key = keyset
        .keys
        .amount_key(1.into())
        .ok_or_else(|| BatRefusal::Invalid("the auth keyset has no key for 1".into()))?;
    if proof.dleq.is_none() {
        return Err(BatRefusal::Invalid(
            "the token carries no DLEQ proof (send it as the mint issued it)".into(),
        ));
    }
    cdk::nuts::Proof::from(proof.clone())
        .verify_dleq(key)
        .map_err(|_| BatRefusal::Invalid("the token's DLEQ proof does not verify".into()))
}

fn auth_enabled(info: &MintInfo) -> Result<(), BatRefusal> {
    if info.nuts.nut22.is_none() {
        return Err(BatRefusal::Unsupported(
            "this soko's mint does not issue blind auth tokens (NUT-22 is off)".into(),
        ));
    }
    Ok(())
}

/// The embedded dev mint, called in-process, on the mint's own runtime (its SQLite calls
/// block the thread they run on).
#[derive(Clone)]
pub struct InProcessMint {
    mint: Arc<Mint>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for InProcessMint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcessMint")
    }
}

impl InProcessMint {
    /// Checks tokens with `mint`, on `runtime`.
    pub fn new(mint: Arc<Mint>, runtime: tokio::runtime::Handle) -> Self {
        Self { mint, runtime }
    }

    async fn check(&self, token: &BlindAuthToken) -> Checked {
        match self.mint.mint_info().await {
            Ok(info) => {
                if let Err(refusal) = auth_enabled(&info) {
                    return Checked::Refused(refusal);
                }
            }
            Err(e) => return Checked::Unavailable(MintUnavailable(e.to_string())),
        }
        let keys = match self.mint.auth_pubkeys() {
            Ok(keys) => keys,
            Err(e) => return Checked::Unavailable(MintUnavailable(e.to_string())),
        };
        if let Err(refusal) = check_dleq(token, &keys) {
            return Checked::Refused(refusal);
        }
        if let Err(e) = self.mint.verify_blind_auth(token).await {
            return Checked::Refused(BatRefusal::Invalid(format!(
                "the mint does not accept the token: {e}"
            )));
        }
        match self
            .mint
            .check_blind_auth_proof_spendable(token.auth_proof.clone())
            .await
        {
            Ok(()) => Checked::Burned,
            Err(cdk::Error::TokenAlreadySpent) => Checked::Refused(BatRefusal::Spent),
            Err(e) => Checked::Unavailable(MintUnavailable(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl BatVerifier for InProcessMint {
    async fn verify_and_burn(&self, token: &BlindAuthToken) -> Checked {
        let this = self.clone();
        let token = token.clone();
        match self
            .runtime
            .spawn(async move { this.check(&token).await })
            .await
        {
            Ok(checked) => checked,
            Err(e) => Checked::Unavailable(MintUnavailable(format!("the dev mint stopped: {e}"))),
        }
    }
}

/// How long one call to an external mint may take.
const MINT_TIMEOUT: Duration = Duration::from_secs(10);
/// Auth keysets remembered (an external mint has one or a few).
const MAX_CACHED_KEYSETS: usize = 16;

/// A mint reached over HTTP.
#[derive(Debug, Clone)]
pub struct ExternalMint {
    base: String,
    http: reqwest::Client,
    keys: Arc<Mutex<HashMap<Id, KeysResponse>>>,
}

/// The protected endpoints soko can burn a token on, best first.
const BURNABLE: [RoutePath; 2] = [RoutePath::Checkstate, RoutePath::Restore];

impl ExternalMint {
    /// Checks tokens at the mint at `url`.
    pub fn new(url: &str) -> Result<Self, MintUnavailable> {
        let http = reqwest::Client::builder()
            .timeout(MINT_TIMEOUT)
            .build()
            .map_err(|e| MintUnavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
            keys: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Result<T, cdk::Error>, MintUnavailable> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| MintUnavailable(format!("GET {path}: {e}")))?;
        read(path, response).await
    }

    async fn auth_keys(
        &self,
        id: &Id,
    ) -> Result<Result<KeysResponse, cdk::Error>, MintUnavailable> {
        if let Some(keys) = self.cached(id) {
            return Ok(Ok(keys));
        }
        let answer: Result<KeysResponse, cdk::Error> =
            self.get(&format!("/v1/auth/blind/keys/{id}")).await?;
        if let Ok(keys) = &answer {
            if let Ok(mut cache) = self.keys.lock() {
                if cache.len() >= MAX_CACHED_KEYSETS {
                    cache.clear();
                }
                cache.insert(*id, keys.clone());
            }
        }
        Ok(answer)
    }

    fn cached(&self, id: &Id) -> Option<KeysResponse> {
        self.keys.lock().ok()?.get(id).cloned()
    }

    /// The first endpoint in [`BURNABLE`] the mint protects with blind auth.
    fn burn_endpoint(info: &MintInfo) -> Result<RoutePath, BatRefusal> {
        let protected = info.protected_endpoints();
        BURNABLE
            .into_iter()
            .find(|path| {
                protected.get(&ProtectedEndpoint::new(Method::Post, path.clone()))
                    == Some(&AuthRequired::Blind)
            })
            .ok_or_else(|| {
                BatRefusal::Unsupported(
                    "the mint protects no endpoint soko can use a blind auth token on (it needs POST /v1/checkstate or POST /v1/restore blind-protected)".into(),
                )
            })
    }

    /// One harmless call to `path`, carrying the token: the mint burns it or says why not.
    async fn burn(
        &self,
        path: &RoutePath,
        token: &BlindAuthToken,
    ) -> Result<Result<(), cdk::Error>, MintUnavailable> {
        let random_point = || SecretKey::generate().public_key();
        let body = match path {
            RoutePath::Restore => {
                // One output, never none: an empty restore burns the token and then fails.
                let keyset = self.sat_keyset().await?;
                let output = BlindedMessage::new(1.into(), keyset, random_point());
                serde_json::json!({ "outputs": [output] })
            }
            _ => serde_json::json!({ "Ys": [random_point()] }),
        };
        let header = AuthToken::BlindAuth(token.without_dleq());
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header.header_key(), header.to_string())
            .json(&body)
            .send()
            .await
            .map_err(|e| MintUnavailable(format!("POST {path}: {e}")))?;
        let answer: Result<serde_json::Value, cdk::Error> =
            read(&path.to_string(), response).await?;
        Ok(answer.map(|_| ()))
    }

    async fn sat_keyset(&self) -> Result<Id, MintUnavailable> {
        let keysets: Result<cdk::nuts::KeysetResponse, cdk::Error> =
            self.get("/v1/keysets").await?;
        let keysets = keysets.map_err(|e| MintUnavailable(format!("keysets: {e}")))?;
        keysets
            .keysets
            .into_iter()
            .find(|k| k.active && k.unit == CurrencyUnit::Sat)
            .map(|k| k.id)
            .ok_or_else(|| MintUnavailable("the mint has no active sat keyset".into()))
    }
}

/// Most bytes read from one answer of the mint.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A mint's answer: the value, the mint's own error (NUT-00 error body), or no answer.
async fn read<T: serde::de::DeserializeOwned>(
    what: &str,
    mut response: reqwest::Response,
) -> Result<Result<T, cdk::Error>, MintUnavailable> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| MintUnavailable(format!("{what}: {e}")))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(MintUnavailable(format!("{what}: answer too large")));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map(Ok)
            .map_err(|e| MintUnavailable(format!("{what}: unreadable answer: {e}")));
    }
    match serde_json::from_slice::<cdk_common::error::ErrorResponse>(&body) {
        Ok(error) => Ok(Err(cdk::Error::from(error))),
        Err(_) => Err(MintUnavailable(format!("{what}: answered {status}"))),
    }
}

#[async_trait::async_trait]
impl BatVerifier for ExternalMint {
    async fn verify_and_burn(&self, token: &BlindAuthToken) -> Checked {
        let info: MintInfo = match self.get("/v1/info").await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Checked::Unavailable(MintUnavailable(format!("info: {e}"))),
            Err(e) => return Checked::Unavailable(e),
        };
        if let Err(refusal) = auth_enabled(&info) {
            return Checked::Refused(refusal);
        }
        let path = match Self::burn_endpoint(&info) {
            Ok(path) => path,
            Err(refusal) => return Checked::Refused(refusal),
        };
        match self.auth_keys(&token.auth_proof.keyset_id).await {
            Ok(Ok(keys)) => {
                if let Err(refusal) = check_dleq(token, &keys) {
                    return Checked::Refused(refusal);
                }
            }
            Ok(Err(_)) => {
                return Checked::Refused(BatRefusal::Invalid(
                    "the token's keyset is not this mint's".into(),
                ))
            }
            Err(e) => return Checked::Unavailable(e),
        }
        match self.burn(&path, token).await {
            Ok(Ok(())) => Checked::Burned,
            Ok(Err(cdk::Error::TokenAlreadySpent)) => Checked::Refused(BatRefusal::Spent),
            Ok(Err(
                e @ (cdk::Error::BlindAuthFailed
                | cdk::Error::BlindAuthRequired
                | cdk::Error::UnknownKeySet
                | cdk::Error::ExpiredKeyset),
            )) => Checked::Refused(BatRefusal::Invalid(format!(
                "the mint does not accept the token: {e}"
            ))),
            Ok(Err(e)) => Checked::Unavailable(MintUnavailable(format!("{path}: {e}"))),
            Err(e) => Checked::Unavailable(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_not_a_token() {
        assert!(matches!(parse("cashuA…"), Err(BatRefusal::Invalid(_))));
        assert!(matches!(
            parse("authAnot-base64!"),
            Err(BatRefusal::Invalid(_))
        ));
        assert!(matches!(parse(""), Err(BatRefusal::Invalid(_))));
    }
}
