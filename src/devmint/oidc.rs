//! A development OpenID Connect issuer on loopback, for the dev mint's NUT-21 clear auth.
//!
//! A *registered* soko user logs in by POSTing to the token endpoint with a NIP-98 HTTP-auth
//! event (kind 27235, `u` = the token URL, `method` = POST) in `Authorization: Nostr
//! <base64>`; the answer is an OAuth token response whose access token (a clear-auth token,
//! CAT) is an ES256 JWT that cdk's `verify_cat` accepts. Who counts as registered is asked
//! through [`Registry`], given at construction, so the dev mint stays below the domains.
//!
//! There is no browser and no device flow: the discovery document lists the device
//! endpoint because cdk requires the field, and that endpoint answers with an OAuth error
//! that says how to log in instead.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nostr_sdk::nips::nip98::{self, HttpMethod};
use nostr_sdk::{Event, EventId, JsonUtil, PublicKey, Timestamp, Url};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::identity;

/// The OAuth client id the dev mint is configured with and its tokens carry (`azp`, `aud`).
pub const CLIENT_ID: &str = "soko-dev";
/// The grant type of a login by signed Nostr event (RFC 6749 §4.5: an absolute URI).
pub const GRANT_TYPE: &str = "urn:soko:params:oauth:grant-type:nostr-event";
/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/token";
/// Path of the device authorization endpoint (which refuses: see the module doc).
pub const DEVICE_PATH: &str = "/device";
/// Path of the JWKS.
pub const JWKS_PATH: &str = "/jwks.json";
/// Path of the discovery document, under the issuer URL.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Seconds a clear-auth token stays valid.
pub const TOKEN_LIFETIME_SECS: u64 = 3_600;
/// Largest token request body: a form with a grant type and a client id.
const MAX_BODY_BYTES: usize = 4 * 1024;
/// How far a login event's `created_at` may be from the issuer's clock (NIP-98's window:
/// 60 s in the past, 30 s ahead, checked by `nip98::verify_auth_header`).
const WINDOW_SECS: u64 = 60;
/// Most login events remembered at once. A login event is refused as a replay while it is
/// remembered; one older than the window is refused as stale anyway, so only those of the
/// last window need remembering. More logins than this in one window are refused (503)
/// rather than forgetting one that could then be replayed.
const MAX_SEEN: usize = 10_000;
/// How long shutdown waits for open HTTP connections.
const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Who may log in: the daemon answers from its registered users, tests from a fixed set.
pub trait Registry: Send + Sync {
    /// True when `key` is a registered soko user.
    fn is_registered(&self, key: &PublicKey) -> bool;
}

/// A fixed set of keys (tests, and a standalone issuer).
impl Registry for std::collections::HashSet<PublicKey> {
    fn is_registered(&self, key: &PublicKey) -> bool {
        self.contains(key)
    }
}

/// Failures starting the issuer.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// It could not listen.
    #[error("dev OIDC issuer cannot listen on 127.0.0.1:{port}: {source} (change [mint] dev_issuer_port)")]
    Listen {
        /// Port it tried.
        port: u16,
        /// Why not.
        source: std::io::Error,
    },
    /// Its signing key could not be read or created.
    #[error("dev OIDC issuer key: {0}")]
    Key(#[from] identity::IdentityError),
    /// The key file holds something that is not a P-256 PKCS#8 key.
    #[error(
        "dev OIDC issuer key file {} is not a P-256 PKCS#8 key",
        identity::DEV_OIDC_KEY_FILE
    )]
    BadKey,
}

/// A running issuer; it stops on [`DevIssuer::shutdown`].
#[derive(Debug)]
pub struct DevIssuer {
    issuer: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl DevIssuer {
    /// Starts the issuer on `127.0.0.1:port` (0 picks a free port) with the signing key kept
    /// in `data_dir`, letting in the keys `registry` knows, judging login events' age by
    /// `clock`.
    pub async fn start(
        data_dir: &Path,
        port: u16,
        registry: Arc<dyn Registry>,
        clock: Clock,
    ) -> Result<Self, OidcError> {
        let pkcs8 = identity::dev_oidc_key(data_dir)?;
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| OidcError::BadKey)?;
        // An uncompressed SEC1 point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
            return Err(OidcError::BadKey);
        };
        let kid = {
            let digest = ring::digest::digest(&ring::digest::SHA256, point);
            URL_SAFE_NO_PAD.encode(digest.as_ref().get(..16).unwrap_or_default())
        };
        let jwks = JwkSet {
            keys: vec![Jwk {
                common: CommonParameters {
                    public_key_use: Some(PublicKeyUse::Signature),
                    key_algorithm: Some(KeyAlgorithm::ES256),
                    key_id: Some(kid.clone()),
                    ..Default::default()
                },
                algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x: URL_SAFE_NO_PAD.encode(x),
                    y: URL_SAFE_NO_PAD.encode(y),
                }),
            }],
        };

        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|source| OidcError::Listen { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| OidcError::Listen { port, source })?;
        let issuer = format!("http://{addr}");
        let token_url =
            Url::parse(&format!("{issuer}{TOKEN_PATH}")).map_err(|e| OidcError::Listen {
                port,
                source: std::io::Error::other(e.to_string()),
            })?;
        let state = Arc::new(Inner {
            issuer: issuer.clone(),
            token_url,
            kid,
            key: EncodingKey::from_ec_der(&pkcs8),
            jwks,
            registry,
            clock,
            seen: Seen::default(),
        });
        let router = Router::new()
            .route(DISCOVERY_PATH, get(discovery))
            .route(JWKS_PATH, get(jwks_doc))
            .route(TOKEN_PATH, post(token))
            .route(DEVICE_PATH, post(device))
            .with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "dev OIDC issuer stopped");
            }
        });
        Ok(Self {
            issuer,
            stop: Some(stop),
            server,
        })
    }

    /// The issuer identifier and base URL (`http://127.0.0.1:PORT`), the JWTs' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The discovery document's URL, which the mint advertises in NUT-21.
    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.issuer)
    }

    /// The token endpoint, where a registered user logs in with a signed Nostr event.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.issuer)
    }

    /// The OAuth client id its tokens are issued for.
    pub fn client_id(&self) -> &'static str {
        CLIENT_ID
    }

    /// Stops serving.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(GRACE, &mut self.server).await.is_err() {
            self.server.abort();
        }
    }
}

struct Inner {
    issuer: String,
    token_url: Url,
    kid: String,
    key: EncodingKey,
    jwks: JwkSet,
    registry: Arc<dyn Registry>,
    clock: Clock,
    seen: Seen,
}

/// Login events already used, by id, with their `created_at`; at most [`MAX_SEEN`].
#[derive(Default)]
struct Seen(Mutex<HashMap<EventId, u64>>);

impl Seen {
    /// Records a login event as used, refusing one already used. Entries older than the
    /// window (twice, for the 30 s NIP-98 allows ahead) go first when it is full; they
    /// would be refused as stale anyway.
    fn remember(&self, id: EventId, created_at: u64, now: u64) -> Result<(), Refusal> {
        let mut seen = self.0.lock().map_err(|_| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "issuer state is poisoned",
            )
        })?;
        if seen.contains_key(&id) {
            return Err(Refusal::grant(
                "this login event was already used; sign a new one",
            ));
        }
        if seen.len() >= MAX_SEEN {
            seen.retain(|_, at| at.saturating_add(2 * WINDOW_SECS) >= now);
        }
        if seen.len() >= MAX_SEEN {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many logins in the last minute; try again shortly",
            ));
        }
        seen.insert(id, created_at);
        Ok(())
    }
}

/// An OAuth error response (RFC 6749 §5.2).
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    fn grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        tracing::debug!(error = self.error, reason = %self.description, "dev OIDC issuer refused a request");
        let body = json!({"error": self.error, "error_description": self.description});
        (
            self.status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body.to_string(),
        )
            .into_response()
    }
}

async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    let issuer = &inner.issuer;
    let body = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "device_authorization_endpoint": format!("{issuer}{DEVICE_PATH}"),
        "grant_types_supported": [GRANT_TYPE],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn jwks_doc(State(inner): State<Arc<Inner>>) -> Response {
    let body = serde_json::to_string(&inner.jwks).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn device(State(inner): State<Arc<Inner>>) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        format!(
            "this development issuer has no device flow: a registered soko user logs in by POSTing to {} with grant_type={GRANT_TYPE} and an `Authorization: Nostr <base64>` header holding a NIP-98 event (kind 27235, u = that URL, method = POST) signed by their registered key",
            inner.token_url
        ),
    )
}

async fn token(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Body) -> Response {
    match login(&inner, &headers, body).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// Checks a login, cheapest checks first, and the replay last: an event is remembered only
/// once it is known to be genuine, fresh and from a registered key, so nobody fills the
/// memory with events of their own making.
async fn login(inner: &Inner, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("a token request body is at most {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    match form.get("grant_type").map(String::as_str) {
        Some(GRANT_TYPE) => {}
        Some(_) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("this issuer only grants {GRANT_TYPE}: a login by signed Nostr event"),
            ))
        }
        None => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("grant_type is missing (it is {GRANT_TYPE})"),
            ))
        }
    }
    if let Some(client) = form.get("client_id") {
        if client != CLIENT_ID {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                format!("unknown client_id; this issuer serves {CLIENT_ID}"),
            ));
        }
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "log in with an `Authorization: Nostr <base64>` header holding a signed NIP-98 event (kind 27235)",
            )
        })?;
    let now = inner.clock.now();
    let key = nip98::verify_auth_header(
        authorization,
        &inner.token_url,
        HttpMethod::POST,
        Timestamp::from(now),
        None,
    )
    .map_err(|e| refusal_of(e, &inner.token_url))?;
    // Verified, so it decodes: read its id and age for the replay check.
    let event = authorization
        .split_once(' ')
        .and_then(|(_, encoded)| STANDARD.decode(encoded).ok())
        .and_then(|json| Event::from_json(json).ok())
        .ok_or_else(|| Refusal::grant("the login event does not decode"))?;
    if !inner.registry.is_registered(&key) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "invalid_grant",
            "this key is not a registered soko user (register with an invite first)",
        ));
    }
    inner
        .seen
        .remember(event.id, event.created_at.as_secs(), now)?;

    let claims = json!({
        "iss": inner.issuer,
        "sub": key.to_hex(),
        "aud": CLIENT_ID,
        "azp": CLIENT_ID,
        "iat": now,
        "exp": now.saturating_add(TOKEN_LIFETIME_SECS),
    });
    let header = Header {
        kid: Some(inner.kid.clone()),
        typ: Some("JWT".to_owned()),
        ..Header::new(Algorithm::ES256)
    };
    let jwt = jsonwebtoken::encode(&header, &claims, &inner.key).map_err(|e| {
        tracing::error!(error = %e, "dev OIDC issuer cannot sign a token");
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the issuer could not sign a token",
        )
    })?;
    tracing::debug!("dev OIDC issuer: a registered user logged in");
    let body = json!({
        "access_token": jwt,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response())
}

/// What a NIP-98 failure tells the user, as an OAuth error.
fn refusal_of(error: nip98::Error, token_url: &Url) -> Refusal {
    use nostr_sdk::event;
    match error {
        nip98::Error::WrongAuthHeaderKind => {
            Refusal::grant("the login event must be kind 27235 (NIP-98 HTTP auth)")
        }
        nip98::Error::MissingTag(tag) => {
            Refusal::grant(format!("the login event has no `{tag}` tag"))
        }
        nip98::Error::AuthorizationNotMatchRequest { .. } => Refusal::grant(format!(
            "the login event's `u` tag must be {token_url} and its `method` tag POST"
        )),
        nip98::Error::AuthorizationTooOld { .. } => Refusal::grant(format!(
            "the login event's created_at is too far from the issuer's clock (at most {WINDOW_SECS} s old, 30 s ahead)"
        )),
        nip98::Error::Event(event::Error::InvalidId | event::Error::InvalidSignature) => {
            Refusal::grant("the login event's id or signature does not verify")
        }
        nip98::Error::AuthTooLarge => Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the login event is too large",
        ),
        _ => Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "the Authorization header must be `Nostr <base64 of a signed kind-27235 event>`",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> EventId {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        EventId::from_byte_array(bytes)
    }

    #[test]
    fn a_login_event_is_used_once_and_the_memory_stays_bounded() {
        let seen = Seen::default();
        let now = 1_000_000;
        assert!(seen.remember(id(0), now, now).is_ok());
        let again = seen.remember(id(0), now, now).map_err(|r| r.description);
        assert!(again.is_err_and(|d| d.contains("already used")));

        // Full of events of the current window: a new one is refused, none forgotten.
        for n in 1..MAX_SEEN as u32 {
            assert!(seen.remember(id(n), now, now).is_ok());
        }
        let full = seen.remember(id(u32::MAX), now, now).map_err(|r| r.status);
        assert_eq!(full, Err(StatusCode::SERVICE_UNAVAILABLE));
        assert!(seen.remember(id(7), now, now).is_err(), "still remembered");

        // Once they are past the window they make room (and are stale anyway).
        let later = now + 2 * WINDOW_SECS + 1;
        assert!(seen.remember(id(u32::MAX), later, later).is_ok());
        assert_eq!(seen.0.lock().map(|s| s.len()).unwrap_or_default(), 1);
    }
}
