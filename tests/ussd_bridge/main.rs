//! The USSD bridge on real parts: it runs in-process on a free loopback port against
//! TestSoko's embedded relay and is driven with real HTTP requests in Africa's Talking's
//! format. soko's side is played either by soko itself or by a real nostr-sdk client with
//! its own keys (a counterpart, not a mock of the bridge).
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod hops;
mod logs;
mod merchant;
mod notices;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::bridge::unix_ms;
use common::gateway::*;
use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::bridge::{
    Bridge, BridgeConfig, BridgeHandle, SmsConfig, DEFAULT_BUDGET, TOO_SLOW, UNAVAILABLE,
};
use soko::config::LogConfig;
use soko::escrow::EscrowState;
use soko::money::Sats;
use soko::proto::ussd::{UssdHopArgs, SCREEN_LIMIT};
use soko::proto::Request;
use tokio::sync::mpsc;

/// Starts a bridge on a free port, talking to `soko` over `relay`.
async fn start_bridge(
    relay: &RelayUrl,
    soko: PublicKey,
    budget: Duration,
    sms: Option<SmsConfig>,
) -> BridgeHandle {
    start_bridge_with_keys(Keys::generate(), relay, soko, budget, sms).await
}

/// A counterpart on soko's relay that answers after `delay` with `answer`, and a bridge to it
/// with the default budget.
async fn bridged_to_counterpart(
    soko: &TestSoko,
    delay: Duration,
    answer: Answer,
) -> (Counterpart, BridgeHandle) {
    let peer = counterpart(&soko.relay_url(), delay, answer).await;
    let bridge = start_bridge(
        &soko.relay_url(),
        peer.keys.public_key(),
        DEFAULT_BUDGET,
        None,
    )
    .await;
    (peer, bridge)
}

async fn start_bridge_with_keys(
    keys: Keys,
    relay: &RelayUrl,
    soko: PublicKey,
    budget: Duration,
    sms: Option<SmsConfig>,
) -> BridgeHandle {
    let mut config = BridgeConfig::new(keys, soko, vec![relay.to_string()]);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.budget = budget;
    config.sms = sms;
    Bridge::start(config).await.expect("bridge starts")
}

/// The request id rule of kinds/ussd.md, computed independently of soko's bridge (by the fake
/// bridge of tests/common): the hop's position (inputs so far), never its text.
fn request_id(session: &str, text: &str) -> String {
    common::bridge::Bridge::position_id(session, text)
}

/// What a counterpart saw: the request envelope and who sent it.
#[derive(Debug, Clone)]
struct Seen {
    from: PublicKey,
    request: Request,
    args: UssdHopArgs,
}

/// A real Nostr client with its own keys playing soko's part: each `ussd_hop` it receives
/// is reported on `seen`, then answered with `answer(&args)` (the `result`, or an `Err` error
/// code) after `delay`; every reply sent is reported on `sent`.
struct Counterpart {
    keys: Keys,
    seen: mpsc::UnboundedReceiver<Seen>,
    sent: mpsc::UnboundedReceiver<String>,
}

type Answer = Box<dyn Fn(&UssdHopArgs) -> Option<Result<Value, &'static str>> + Send + Sync>;

async fn counterpart(relay: &RelayUrl, delay: Duration, answer: Answer) -> Counterpart {
    let mut user = User::connect(std::slice::from_ref(relay)).await;
    let keys = user.keys.clone();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (sent_tx, sent) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(dm) = user.next_dm(Duration::from_secs(3600)).await {
            let request = Request::parse(&dm.content).expect("a command envelope");
            assert_eq!(request.cmd, "ussd_hop");
            let args: UssdHopArgs =
                serde_json::from_value(Value::Object(request.args.clone())).expect("hop args");
            let id = request.id.clone().expect("hops carry a request id");
            let _ = seen_tx.send(Seen {
                from: dm.from,
                request,
                args: args.clone(),
            });
            let Some(result) = answer(&args) else {
                continue;
            };
            let reply = match result {
                Ok(result) => json!({"v":1,"re":id,"ok":true,"result":result}),
                Err(code) => json!({"v":1,"re":id,"ok":false,
                                    "error":{"code":code,"message":"refused by the counterpart"}}),
            };
            tokio::time::sleep(delay).await;
            user.send_nip17(dm.from, &reply.to_string()).await;
            let _ = sent_tx.send(id);
        }
    });
    Counterpart { keys, seen, sent }
}

fn screen(text: &str, end: bool) -> Value {
    json!({"screen": text, "end": end})
}

/// One call the loopback SMS API received.
#[derive(Debug, Clone)]
struct SmsCall {
    api_key: Option<String>,
    accept: Option<String>,
    form: Vec<(String, String)>,
}

/// A loopback HTTP server answering as Africa's Talking's SMS API does; returns its URL.
async fn sms_api() -> (String, mpsc::UnboundedReceiver<SmsCall>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Arc::new(Mutex::new(tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/version1/messaging",
        listener.local_addr().unwrap()
    );
    let app = axum::Router::new().route(
        "/version1/messaging",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let form = form_urlencoded::parse(&body).into_owned().collect();
                let _ = tx.lock().unwrap().send(SmsCall {
                    api_key: header("apikey"),
                    accept: header("accept"),
                    form,
                });
                (
                    StatusCode::CREATED,
                    r#"{"SMSMessageData":{"Message":"Sent to 1/1 Total Cost: KES 0.8000","Recipients":[{"statusCode":101,"number":"+254711000111","status":"Success","cost":"KES 0.8000","messageId":"ATPid_1"}]}}"#,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}
