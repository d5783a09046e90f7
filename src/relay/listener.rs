//! The embedded relay's own accept loop.
//!
//! nostr-relay-builder's listener leaves Nagle's algorithm on, which holds every small
//! websocket frame back until the peer's delayed ACK: about 40 ms per message on loopback,
//! which made each DM round trip take ~44 ms (measured with `bench_dm`). soko accepts
//! connections itself, sets `TCP_NODELAY`, does the HTTP upgrade with hyper, and hands the
//! upgraded stream to the relay. Plain HTTP requests get the NIP-11 relay information
//! document (or a one-line hint).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::prelude::*;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nostr_relay_builder::LocalRelay;
use nostr_sdk::hashes::sha1::Hash as Sha1;
use nostr_sdk::hashes::{Hash, HashEngine};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::frames::FrameGuard;
use super::policy::SokoWritePolicy;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What one connection may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Incoming websocket messages over this many bytes end their connection (see
    /// [`FrameGuard`]).
    pub max_message: u64,
    /// One permit per open connection; none left, new ones are closed at once.
    pub connections: Arc<Semaphore>,
    /// Told when a websocket session ends.
    pub policy: Arc<SokoWritePolicy>,
}

/// Serves `listener` until `stopped` turns true.
pub async fn serve(
    listener: TcpListener,
    relay: LocalRelay,
    info: String,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "embedded relay cannot accept a connection");
                    continue;
                }
            },
        };
        let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "embedded relay at its connection cap; closing a new one");
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let relay = relay.clone();
        let info = info.clone();
        let limits = limits.clone();
        // Shared with the websocket session, which outlives the HTTP connection's task.
        let permit = Arc::new(permit);
        let held = permit.clone();
        let mut connection_stopped = stopped.clone();
        let session_stopped = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(
                    &relay,
                    addr,
                    &info,
                    &limits,
                    held.clone(),
                    request,
                    session_stopped.clone(),
                );
                async move { Ok::<_, Infallible>(response) }
            });
            // A connection holds a permit: one that never sends its request must not keep it.
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            // Every task holding the relay (and so its sled trees) must end on shutdown, or
            // the database stays locked after soko stops.
            tokio::select! {
                result = connection => if let Err(e) = result {
                    tracing::debug!(error = %e, "relay connection ended");
                },
                _ = connection_stopped.changed() => {}
            }
            drop(permit);
        });
    }
}

fn respond(
    relay: &LocalRelay,
    addr: SocketAddr,
    info: &str,
    limits: &Limits,
    permit: Arc<OwnedSemaphorePermit>,
    request: Request<Incoming>,
    mut stopped: watch::Receiver<bool>,
) -> Response<String> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default()
    };
    let wants_upgrade = header(CONNECTION).contains("upgrade") && header(UPGRADE) == "websocket";
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| accept_key(k.as_bytes()));
    if let (true, Some(accept)) = (wants_upgrade, key) {
        let relay = relay.clone();
        let (max_message, policy) = (limits.max_message, limits.policy.clone());
        tokio::spawn(async move {
            let session = async {
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        if let Err(e) = relay
                            .take_connection(
                                FrameGuard::new(TokioIo::new(upgraded), max_message),
                                addr,
                            )
                            .await
                        {
                            tracing::debug!(error = %e, "relay session ended");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                }
            };
            tokio::select! {
                _ = session => {}
                _ = stopped.changed() => {}
            }
            policy.forget_connection(&addr);
            drop(permit);
        });
        return response(StatusCode::SWITCHING_PROTOCOLS, String::new(), |r| {
            r.header(CONNECTION, "upgrade")
                .header(UPGRADE, "websocket")
                .header(SEC_WEBSOCKET_ACCEPT, accept)
        });
    }
    if header(ACCEPT).contains("application/nostr+json") {
        return response(StatusCode::OK, info.to_owned(), |r| {
            r.header(CONTENT_TYPE, "application/nostr+json")
                .header("access-control-allow-origin", "*")
        });
    }
    response(
        StatusCode::OK,
        "soko's Nostr relay: connect with a Nostr client over websocket.\n".to_owned(),
        |r| r.header(CONTENT_TYPE, "text/plain; charset=utf-8"),
    )
}

fn response(
    status: StatusCode,
    body: String,
    headers: impl FnOnce(hyper::http::response::Builder) -> hyper::http::response::Builder,
) -> Response<String> {
    headers(Response::builder().status(status))
        .body(body)
        .unwrap_or_else(|_| Response::new(String::new()))
}

/// RFC 6455's `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
fn accept_key(key: &[u8]) -> String {
    let mut engine = Sha1::engine();
    engine.input(key);
    engine.input(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64_STANDARD.encode(Sha1::from_engine(engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
