//! `soko-ussd`: the bridge between a USSD gateway's HTTP callbacks and soko (kinds/ussd.md).
//!
//! Stateless per hop: each callback becomes a `ussd_hop` command gift-wrapped to soko's bot
//! key, and the HTTP answer waits for soko's reply — never longer than the budget, since the
//! gateway drops a hop after 10–20 s. soko keeps the session state, so a restarted bridge
//! loses nothing but the hops in flight.

mod auth;
mod gateway;
mod link;
mod pending;
mod sms;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use nostr_sdk::{Keys, PublicKey};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::auth::Denied;
pub use self::auth::{GatewayAuth, GatewaySecret, SecretError, SECRET_HEADER};
pub use self::gateway::{fit, AfricasTalking, BadHop, Gateway, Hop};
use self::link::{short, Link};
use self::pending::{Pending, Reply, Waiter};
use self::sms::SmsSender;
pub use self::sms::{mask_phone, SmsConfig, AFRICAS_TALKING_SMS_URL};
use crate::proto::ussd::UssdScreen;
use crate::proto::PROTOCOL_VERSION;

/// The path gateways POST their callbacks to: `/ussd/<secret>`, or `/ussd` with the secret
/// in the [`SECRET_HEADER`] header (or with no secret when that is turned off for local
/// development).
pub const HOP_PATH: &str = "/ussd";
/// The default time the bridge gives soko to answer a hop.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(8000);
/// Where the bridge listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
/// Shown when soko has not answered within the budget.
pub const TOO_SLOW: &str = "Sorry, the service is taking too long. Please dial again.";
/// Shown when soko answered with an error, or could not be reached.
pub const UNAVAILABLE: &str =
    "Sorry, the service is unavailable right now. Please try again later.";

/// Gateway callbacks are a few hundred bytes; anything much larger is not one.
const MAX_BODY: usize = 8 * 1024;

/// Failures starting the bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// No relay was given.
    #[error("no relay given: pass soko's relay URL")]
    NoRelay,
    /// A relay could not be used.
    #[error("relay {url}: {reason}")]
    Relay {
        /// The relay(s).
        url: String,
        /// Why.
        reason: String,
    },
    /// The HTTP listener could not start.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The SMS API client could not be set up.
    #[error("SMS client: {0}")]
    Sms(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Server(String),
}

/// Everything the bridge needs.
#[derive(Clone)]
pub struct BridgeConfig {
    /// The bridge's own identity (listed in soko's `[ussd] bridges`).
    pub keys: Keys,
    /// soko's bot key: where hops go, and the only key whose messages are believed.
    pub soko: PublicKey,
    /// soko's relays (`ws://…`).
    pub relays: Vec<String>,
    /// The HTTP listen address (port 0 picks a free one).
    pub listen: SocketAddr,
    /// How long soko gets to answer a hop.
    pub budget: Duration,
    /// The gateway's callback format.
    pub gateway: Arc<dyn Gateway>,
    /// The SMS API for notices; `None` logs them only.
    pub sms: Option<SmsConfig>,
    /// How gateway callbacks are authenticated.
    pub auth: GatewayAuth,
}

impl BridgeConfig {
    /// A bridge with the defaults: Africa's Talking format on [`DEFAULT_LISTEN`], the
    /// [`DEFAULT_BUDGET`], notices logged only, and a fresh random gateway secret (see
    /// [`BridgeHandle::url`]).
    pub fn new(keys: Keys, soko: PublicKey, relays: Vec<String>) -> Self {
        Self {
            keys,
            soko,
            relays,
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            budget: DEFAULT_BUDGET,
            gateway: Arc::new(AfricasTalking),
            sms: None,
            auth: GatewayAuth {
                secret: Some(GatewaySecret::generate()),
                allow_from: Vec::new(),
            },
        }
    }
}

/// What each HTTP request needs.
struct Shared {
    gateway: Arc<dyn Gateway>,
    link: Link,
    pending: Pending,
    budget: Duration,
    auth: GatewayAuth,
}

/// The bridge.
#[derive(Debug)]
pub struct Bridge;

impl Bridge {
    /// Connects to soko's relays and starts serving gateway callbacks.
    pub async fn start(config: BridgeConfig) -> Result<BridgeHandle, BridgeError> {
        let sms =
            SmsSender::new(config.sms.clone()).map_err(|e| BridgeError::Sms(e.to_string()))?;
        // Bound first: a taken port must not leave a relay connection behind.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| BridgeError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| BridgeError::Listen {
                addr: config.listen,
                source,
            })?;
        let link = Link::connect(config.keys.clone(), config.soko, &config.relays).await?;
        let pending = Pending::default();
        // Two stops: the HTTP side first, so hops in flight can still get their replies, then
        // the Nostr side.
        let (stop_http, mut http_stopped) = watch::channel(false);
        let (stop_link, link_stopped) = watch::channel(false);

        let listening = tokio::spawn(link.clone().listen(pending.clone(), sms, link_stopped));
        let shared = Arc::new(Shared {
            gateway: config.gateway.clone(),
            link,
            pending: pending.clone(),
            budget: config.budget,
            auth: config.auth.clone(),
        });
        let router = Router::new()
            .route(HOP_PATH, post(hop))
            .route(&format!("{HOP_PATH}/{{secret}}"), post(hop_with_secret))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(shared);
        let serving = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                // An error means the handle is gone: stop too.
                let _ = http_stopped.wait_for(|stop| *stop).await;
            })
            .await
        });
        tracing::info!(
            %addr,
            gateway = config.gateway.name(),
            budget_ms = config.budget.as_millis() as u64,
            sms = config.sms.is_some(),
            gateway_secret = config.auth.secret.is_some(),
            allow_from = config.auth.allow_from.len(),
            "USSD bridge listening"
        );
        Ok(BridgeHandle {
            addr,
            secret: config.auth.secret.clone(),
            public_key: config.keys.public_key(),
            pending,
            stop_http,
            stop_link,
            serving,
            listening,
        })
    }
}

/// A running bridge.
#[derive(Debug)]
pub struct BridgeHandle {
    addr: SocketAddr,
    secret: Option<GatewaySecret>,
    public_key: PublicKey,
    pending: Pending,
    stop_http: watch::Sender<bool>,
    stop_link: watch::Sender<bool>,
    serving: JoinHandle<std::io::Result<()>>,
    listening: JoinHandle<()>,
}

impl BridgeHandle {
    /// The callback URL to give the gateway, secret included, e.g.
    /// `http://127.0.0.1:8090/ussd/<secret>` (`…/ussd` when the secret is turned off).
    pub fn url(&self) -> String {
        match &self.secret {
            Some(secret) => format!("http://{}{HOP_PATH}/{}", self.addr, secret.reveal()),
            None => self.bare_url(),
        }
    }

    /// The callback URL without the secret.
    pub fn bare_url(&self) -> String {
        format!("http://{}{HOP_PATH}", self.addr)
    }

    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bridge's public key (to list in soko's `[ussd] bridges`).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Hops waiting for soko right now.
    pub fn pending_hops(&self) -> usize {
        self.pending.waiting()
    }

    /// Stops taking callbacks, lets the hops in flight finish (each within the budget),
    /// then disconnects from the relays.
    pub async fn shutdown(self) -> Result<(), BridgeError> {
        let _ = self.stop_http.send(true);
        let served = self.serving.await;
        let _ = self.stop_link.send(true);
        let _ = self.listening.await;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BridgeError::Server(e.to_string())),
            Err(e) => Err(BridgeError::Server(e.to_string())),
        }
    }
}

/// `POST /ussd`: one gateway callback, the secret (if any) in the header.
async fn hop(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve_hop(&shared, peer, None, &headers, body).await
}

/// `POST /ussd/<secret>`: one gateway callback, the secret in the path.
async fn hop_with_secret(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve_hop(&shared, peer, Some(&secret), &headers, body).await
}

async fn serve_hop(
    shared: &Shared,
    peer: SocketAddr,
    path_secret: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let header_secret = headers
        .get(SECRET_HEADER)
        .and_then(|value| value.to_str().ok());
    // Before the body is even parsed: an unauthenticated request must cost nothing and
    // reach nothing. The peer address is logged, never the secret tried.
    if let Err(denied) = shared.auth.check(peer.ip(), path_secret, header_secret) {
        let (status, why) = match denied {
            Denied::Secret => (StatusCode::UNAUTHORIZED, "gateway secret missing or wrong"),
            Denied::Address => (StatusCode::FORBIDDEN, "address not allowed"),
        };
        tracing::warn!(peer = %peer.ip(), reason = why, "refused a gateway callback");
        return (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{why}\n"),
        )
            .into_response();
    }
    let hop = match shared.gateway.parse(&body) {
        Ok(hop) => hop,
        Err(e) => {
            tracing::info!(error = %e, "refused a malformed gateway callback");
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("bad USSD callback: {e}\n"),
            )
                .into_response();
        }
    };
    let screen = shared.answer(hop).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, shared.gateway.content_type())],
        shared.gateway.render(&screen),
    )
        .into_response()
}

/// How a hop ended, before it is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// soko answered.
    Answered(Reply),
    /// The hop could not be sent.
    NotSent,
    /// soko did not answer within the budget.
    TooSlow,
}

impl Shared {
    async fn answer(&self, hop: Hop) -> UssdScreen {
        let id = hop.request_id();
        let deadline_ms = unix_ms().saturating_add(self.budget.as_millis() as u64);
        // Registered before sending: a quick reply must find its hop waiting.
        let waiter = self.pending.wait_for(&id);
        let request = serde_json::json!({
            "v": PROTOCOL_VERSION,
            "id": id,
            "cmd": "ussd_hop",
            "args": hop.into_args(deadline_ms),
        });
        let outcome = tokio::time::timeout(self.budget, self.ask(&request.to_string(), waiter))
            .await
            .unwrap_or(Outcome::TooSlow);
        let hop = short(&id);
        match &outcome {
            Outcome::Answered(Reply::Screen(screen)) => {
                tracing::info!(%hop, end = screen.end, "hop answered");
            }
            Outcome::Answered(Reply::Refused(code)) => {
                tracing::warn!(%hop, %code, "soko refused a hop");
            }
            Outcome::Answered(Reply::Unreadable) => {
                tracing::warn!(%hop, "soko's reply holds no screen");
            }
            Outcome::NotSent => {}
            Outcome::TooSlow => {
                tracing::warn!(%hop, budget_ms = self.budget.as_millis() as u64, "soko did not answer in time");
            }
        }
        screen_for(outcome)
    }

    async fn ask(&self, request: &str, mut waiter: Waiter) -> Outcome {
        if let Err(e) = self.link.send(request).await {
            tracing::warn!(error = %e, "could not send a hop to soko");
            return Outcome::NotSent;
        }
        match waiter.reply().await {
            Some(reply) => Outcome::Answered(reply),
            None => Outcome::NotSent,
        }
    }
}

/// The screen the caller sees for an outcome.
fn screen_for(outcome: Outcome) -> UssdScreen {
    let end = |text: &str| UssdScreen {
        screen: text.to_owned(),
        end: true,
    };
    match outcome {
        Outcome::Answered(Reply::Screen(screen)) => screen,
        Outcome::Answered(Reply::Refused(_) | Reply::Unreadable) | Outcome::NotSent => {
            end(UNAVAILABLE)
        }
        Outcome::TooSlow => end(TOO_SLOW),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_a_polite_screen() {
        let screen = UssdScreen {
            screen: "1 Orders".into(),
            end: false,
        };
        assert_eq!(
            screen_for(Outcome::Answered(Reply::Screen(screen.clone()))),
            screen
        );
        for (outcome, text) in [
            (
                Outcome::Answered(Reply::Refused("forbidden".into())),
                UNAVAILABLE,
            ),
            (Outcome::Answered(Reply::Unreadable), UNAVAILABLE),
            (Outcome::NotSent, UNAVAILABLE),
            (Outcome::TooSlow, TOO_SLOW),
        ] {
            let shown = screen_for(outcome);
            assert!(shown.end);
            assert_eq!(shown.screen, text);
            assert!(
                AfricasTalking.render(&shown).chars().count() <= crate::proto::ussd::SCREEN_LIMIT
            );
        }
    }
}
