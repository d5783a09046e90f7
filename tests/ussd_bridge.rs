//! The USSD bridge on real parts: it runs in-process on a free loopback port against
//! TestSoko's embedded relay and is driven with real HTTP requests in Africa's Talking's
//! format. soko's side is played either by soko itself or by a real nostr-sdk client with
//! its own keys (a counterpart, not a mock of the bridge).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::bridge::unix_ms;
use common::gateway::*;
use common::*;
use nostr_sdk::hashes::{sha256, Hash};
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

/// The request id rule of kinds/ussd.md, computed independently of the bridge: the hop's
/// position (inputs so far), never its text.
fn request_id(session: &str, text: &str) -> String {
    let position = if text.is_empty() {
        0
    } else {
        text.split('*').count()
    };
    sha256::Hash::hash(format!("soko-ussd-hop\n{session}\n{position}").as_bytes()).to_string()[..32]
        .to_owned()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_callbacks_get_400_with_the_reason() {
    let soko = TestSoko::start().await;
    let bridge = start_bridge(&soko.relay_url(), soko.bot(), DEFAULT_BUDGET, None).await;
    let url = bridge.url();

    let (status, body) = post_form(
        &url,
        &[],
        &[
            ("serviceCode", SERVICE),
            ("phoneNumber", PHONE),
            ("text", ""),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("sessionId"), "{body}");

    let (status, body) = post_form(&url, &[], &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = post_form(
        &url,
        &[],
        &[
            ("sessionId", "s1"),
            ("serviceCode", SERVICE),
            ("phoneNumber", "+254711000111,+254722000222"),
            ("text", ""),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("phoneNumber"), "{body}");

    let raw = reqwest::Client::new()
        .post(&url)
        .body(vec![0xff, 0x00, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let get = reqwest::get(&url).await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

/// soko refuses hops from a key it does not list as a bridge (`forbidden`): the caller
/// gets the polite error END.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_from_soko_ends_the_session_politely() {
    let soko = TestSoko::start().await;
    let bridge = start_bridge(&soko.relay_url(), soko.bot(), DEFAULT_BUDGET, None).await;
    let (status, body) = dial(&bridge, "ATUid_refused", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("END {UNAVAILABLE}"));

    // An error code the bridge has never heard of is still an error.
    let peer = counterpart(
        &soko.relay_url(),
        Duration::ZERO,
        Box::new(|_| Some(Err("brand_new_code"))),
    )
    .await;
    let other = start_bridge(
        &soko.relay_url(),
        peer.keys.public_key(),
        DEFAULT_BUDGET,
        None,
    )
    .await;
    assert_eq!(
        dial(&other, "ATUid_refused2", "").await.1,
        format!("END {UNAVAILABLE}")
    );
    assert_eq!((bridge.pending_hops(), other.pending_hops()), (0, 0));
    other.shutdown().await.unwrap();
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screens_come_back_as_con_and_end_within_the_limit() {
    let soko = TestSoko::start().await;
    let mut peer = counterpart(
        &soko.relay_url(),
        Duration::ZERO,
        Box::new(|args| {
            Some(Ok(match args.text.as_str() {
                "" => screen("Karibu Mama Duka\n1 Orders\n2 Confirm delivery", false),
                "1" => screen(&"Order #7 Mango x3 ".repeat(20), false),
                "ok" => json!({"pong": true}),
                _ => screen("Asante. Bye", true),
            }))
        }),
    )
    .await;
    let bridge = start_bridge(
        &soko.relay_url(),
        peer.keys.public_key(),
        DEFAULT_BUDGET,
        None,
    )
    .await;

    let before = unix_ms();
    let (status, body) = dial(&bridge, "ATUid_screens", "").await;
    let after = unix_ms();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "CON Karibu Mama Duka\n1 Orders\n2 Confirm delivery");

    // The hop arrived as the protocol says, from the bridge's key.
    let seen = peer.seen.recv().await.unwrap();
    assert_eq!(seen.from, bridge.public_key());
    assert_eq!((seen.request.v, seen.request.cmd.as_str()), (1, "ussd_hop"));
    assert_eq!(
        seen.request.id.as_deref(),
        Some(request_id("ATUid_screens", "").as_str())
    );
    assert_eq!(seen.args.session, "ATUid_screens");
    assert_eq!(seen.args.phone, PHONE);
    assert_eq!(seen.args.service_code, SERVICE);
    assert_eq!(seen.args.network.as_deref(), Some("63902"));
    assert_eq!(seen.args.text, "");
    let budget = DEFAULT_BUDGET.as_millis() as u64;
    assert!(
        (before + budget..=after + budget).contains(&seen.args.deadline_ms),
        "deadline {} is now + budget",
        seen.args.deadline_ms
    );

    // A screen longer than a handset shows is cut at 182 characters, prefix included.
    let (_, body) = dial(&bridge, "ATUid_screens", "1").await;
    assert_eq!(body.chars().count(), SCREEN_LIMIT);
    assert!(body.starts_with("CON Order #7 Mango x3 Order #7"), "{body}");
    assert_eq!(peer.seen.recv().await.unwrap().args.text, "1");

    let (_, body) = dial(&bridge, "ATUid_screens", "1*9").await;
    assert_eq!(body, "END Asante. Bye");

    // `ok:true` without a screen is not shown to the caller.
    let (_, body) = dial(&bridge, "ATUid_screens", "ok").await;
    assert_eq!(body, format!("END {UNAVAILABLE}"));
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_ends_politely_and_a_late_reply_changes_nothing() {
    let soko = TestSoko::start().await;
    let budget = Duration::from_millis(1500);

    // Nobody holds this key: no reply can ever come.
    let nobody = Keys::generate().public_key();
    let bridge_to_nobody = start_bridge(&soko.relay_url(), nobody, budget, None).await;
    let (status, body) = dial(&bridge_to_nobody, "ATUid_silent", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("END {TOO_SLOW}"));
    assert_eq!(bridge_to_nobody.pending_hops(), 0);
    bridge_to_nobody.shutdown().await.unwrap();

    // A slow counterpart answers, but only after the budget.
    let mut slow = counterpart(
        &soko.relay_url(),
        budget + Duration::from_millis(1000),
        Box::new(|args| Some(Ok(screen(&format!("late {}", args.text), false)))),
    )
    .await;
    let bridge = start_bridge(&soko.relay_url(), slow.keys.public_key(), budget, None).await;
    let (_, body) = dial(&bridge, "ATUid_slow", "").await;
    assert_eq!(body, format!("END {TOO_SLOW}"));
    let late = slow.sent.recv().await.unwrap();
    assert_eq!(late, request_id("ATUid_slow", ""));
    // Give the late reply time to reach the bridge: it finds no hop waiting.
    tokio::time::sleep(QUIET_PERIOD).await;
    assert_eq!(bridge.pending_hops(), 0);

    // The bridge still serves: a hop now waits long enough for the slow answer.
    let patient = start_bridge_with_keys(
        Keys::generate(),
        &soko.relay_url(),
        slow.keys.public_key(),
        Duration::from_secs(10),
        None,
    )
    .await;
    let (_, body) = dial(&patient, "ATUid_slow", "1").await;
    assert_eq!(body, "CON late 1");
    let (_, body) = dial(&bridge, "ATUid_slow", "2").await;
    assert_eq!(body, format!("END {TOO_SLOW}"));
    patient.shutdown().await.unwrap();
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_signed_by_another_key_is_ignored() {
    let soko = TestSoko::start().await;
    let relay = soko.relay_url();
    let impostor = User::connect(std::slice::from_ref(&relay)).await;
    let (forge_tx, mut forge_rx) = mpsc::unbounded_channel::<(PublicKey, String)>();
    // The real counterpart stays silent and tells the impostor the hop's id and bridge; the
    // impostor answers in its place with a screen the caller must never see.
    let mut peer = counterpart(&relay, Duration::ZERO, Box::new(|_| None)).await;
    tokio::spawn(async move {
        while let Some(seen) = peer.seen.recv().await {
            let _ = forge_tx.send((seen.from, seen.request.id.unwrap()));
        }
    });
    let (forged_tx, mut forged_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((bridge, id)) = forge_rx.recv().await {
            let reply = json!({"v":1,"re":id,"ok":true,"result":screen("Enter PIN to win", false)});
            impostor.send_nip17(bridge, &reply.to_string()).await;
            let _ = forged_tx.send(());
        }
    });

    let bridge = start_bridge(&relay, peer.keys.public_key(), Duration::from_secs(3), None).await;
    let (_, body) = dial(&bridge, "ATUid_forged", "").await;
    assert!(
        forged_rx.try_recv().is_ok(),
        "the forged reply was sent while the hop waited"
    );
    assert_eq!(body, format!("END {TOO_SLOW}"));
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_retry_reuses_the_request_id() {
    let soko = TestSoko::start().await;
    let mut peer = counterpart(
        &soko.relay_url(),
        Duration::from_millis(300),
        Box::new(|args| Some(Ok(screen(&format!("you typed {}", args.text), false)))),
    )
    .await;
    let bridge = start_bridge(
        &soko.relay_url(),
        peer.keys.public_key(),
        DEFAULT_BUDGET,
        None,
    )
    .await;

    // The gateway retries a hop it got no answer to, sometimes while the first still waits.
    let (first, second) = tokio::join!(
        dial(&bridge, "ATUid_retry", "1*2"),
        dial(&bridge, "ATUid_retry", "1*2")
    );
    assert_eq!(first.1, "CON you typed 1*2");
    assert_eq!(second.1, "CON you typed 1*2");
    let (_, again) = dial(&bridge, "ATUid_retry", "1*2").await;
    assert_eq!(again, "CON you typed 1*2");
    let (_, next) = dial(&bridge, "ATUid_retry", "1*2*3").await;
    assert_eq!(next, "CON you typed 1*2*3");

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(peer.seen.recv().await.unwrap().request.id.unwrap());
    }
    let expected = request_id("ATUid_retry", "1*2");
    assert_eq!(&ids[..3], &[expected.clone(), expected.clone(), expected]);
    assert_eq!(ids[3], request_id("ATUid_retry", "1*2*3"));
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_hops_in_flight_finish() {
    let soko = TestSoko::start().await;
    let mut peer = counterpart(
        &soko.relay_url(),
        Duration::from_millis(1500),
        Box::new(|_| Some(Ok(screen("Still here", false)))),
    )
    .await;
    let bridge = start_bridge(
        &soko.relay_url(),
        peer.keys.public_key(),
        DEFAULT_BUDGET,
        None,
    )
    .await;
    let url = bridge.url();
    let in_flight = {
        let url = url.clone();
        tokio::spawn(async move { dial_url(&url, "ATUid_bye", "").await })
    };
    peer.seen.recv().await.unwrap();
    bridge.shutdown().await.unwrap();
    assert_eq!(in_flight.await.unwrap().1, "CON Still here");
    // Stopped: no more callbacks are taken.
    assert!(reqwest::Client::new().post(&url).send().await.is_err());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_from_soko_are_texted_and_others_are_not() {
    let soko = TestSoko::start().await;
    let relay = soko.relay_url();
    let (url, mut calls) = sms_api().await;
    let soko_side = User::connect(std::slice::from_ref(&relay)).await;
    let stranger = User::connect(std::slice::from_ref(&relay)).await;
    let sms = SmsConfig {
        url,
        username: "sandbox".into(),
        api_key: "atsk_test_key".into(),
        from: Some("SOKO".into()),
    };
    let bridge = start_bridge(&relay, soko_side.pubkey(), DEFAULT_BUDGET, Some(sms)).await;

    let notice =
        |text: &str| json!({"v":1,"notice":"sms","args":{"phone":PHONE,"text":text}}).to_string();
    stranger
        .send_nip17(
            bridge.public_key(),
            &notice("Forged: send your PIN to 0700"),
        )
        .await;
    soko_side
        .send_nip17(bridge.public_key(), &notice("Order #3 paid: 1500 sat"))
        .await;

    let call = tokio::time::timeout(REPLY_TIMEOUT, calls.recv())
        .await
        .expect("the notice is texted")
        .unwrap();
    assert_eq!(call.api_key.as_deref(), Some("atsk_test_key"));
    assert_eq!(call.accept.as_deref(), Some("application/json"));
    let field = |name: &str| {
        call.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("username"), Some("sandbox"));
    assert_eq!(field("to"), Some(PHONE));
    assert_eq!(field("message"), Some("Order #3 paid: 1500 sat"));
    assert_eq!(field("from"), Some("SOKO"));

    // The stranger's notice never reaches the SMS API.
    assert!(
        tokio::time::timeout(QUIET_PERIOD, calls.recv())
            .await
            .is_err(),
        "only soko's notice is texted"
    );
    bridge.shutdown().await.unwrap();
}

/// Phone numbers, inputs (a PIN travels in `text`) and the bridge's key never reach the log,
/// even at TRACE level; the masked number does. The capture is process-wide, so every other
/// test of this file running meanwhile is held to the same rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_inputs_and_keys_stay_out_of_the_log() {
    let capture = Capture::default();
    let trace = LogConfig {
        level: "trace".into(),
        json: false,
    };
    soko::logging::init_with_writer(&trace, capture.clone()).unwrap();

    let soko = TestSoko::start().await;
    let relay = soko.relay_url();
    let peer = counterpart(
        &relay,
        Duration::ZERO,
        Box::new(|_| Some(Ok(screen("PIN accepted", false)))),
    )
    .await;
    let keys = Keys::generate();
    let bridge = start_bridge_with_keys(
        keys.clone(),
        &relay,
        peer.keys.public_key(),
        DEFAULT_BUDGET,
        None,
    )
    .await;
    let phone = "+254799123456";
    let pin_input = "1*987654321";
    let (_, body) = post_form(
        &bridge.url(),
        &[],
        &[
            ("sessionId", "ATUid_logs"),
            ("serviceCode", SERVICE),
            ("phoneNumber", phone),
            ("networkCode", "63902"),
            ("text", pin_input),
        ],
    )
    .await;
    assert_eq!(body, "CON PIN accepted");
    let soko_side = User::with_keys(peer.keys.clone(), std::slice::from_ref(&relay)).await;
    let notice = json!({"v":1,"notice":"sms","args":{"phone":phone,"text":"Order #9 paid"}});
    soko_side
        .send_nip17(bridge.public_key(), &notice.to_string())
        .await;

    let masked = "+2547•••••456";
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while !capture.text().contains(masked) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notice is logged with the number masked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bridge.shutdown().await.unwrap();

    let log = capture.text();
    for secret in [
        "799123456".to_owned(),
        pin_input.to_owned(),
        keys.secret_key().to_bech32().unwrap(),
        keys.secret_key().to_secret_hex(),
    ] {
        assert!(!log.contains(&secret), "the log shows a secret");
    }
}

/// Issue 5's walk on real parts only: Africa's Talking callbacks over HTTP → the bridge →
/// soko's menus over the embedded relay and back; the paid order's SMS through a loopback
/// SMS API; delivery with the buyer's code; a withdrawal to a loopback LNURL payee, checked
/// at the mint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_runs_a_shop_through_the_bridge() {
    let bridge_keys = Keys::generate();
    let trusted = bridge_keys.public_key();
    let soko = TestSoko::start_with(|c| c.ussd.bridges = vec![trusted]).await;
    let (sms_url, mut texts) = sms_api().await;
    let sms = SmsConfig {
        url: sms_url,
        username: "sandbox".into(),
        api_key: "atsk_test_key".into(),
        from: None,
    };
    let relay = soko.relay_url();
    let bridge =
        start_bridge_with_keys(bridge_keys, &relay, soko.bot(), DEFAULT_BUDGET, Some(sms)).await;
    let (merchant, npub, activation) = pending_merchant(&soko, PHONE, None).await.typed();

    // Onboarding: the activation code, a PIN twice, the shop's name confirmed.
    assert_eq!(
        walk(&bridge, "ATUid_1", &[""]).await,
        "CON Welcome to soko, Mama Duka!\nEnter the 12-digit activation code from your agent or soko's operator:"
    );
    assert_eq!(
        walk(&bridge, "ATUid_1", &[&activation]).await,
        "CON Choose a PIN of 4 to 6 digits:"
    );
    assert_eq!(
        walk(&bridge, "ATUid_1", &[&format!("{activation}*4821")]).await,
        "CON Enter the same PIN again:"
    );
    assert_eq!(
        walk(&bridge, "ATUid_1", &[&format!("{activation}*4821*4821")]).await,
        "CON Is this your shop's name?\nMama Duka\n1 Yes, open my shop\n2 No"
    );
    let open = walk(&bridge, "ATUid_1", &[&format!("{activation}*4821*4821*1")]).await;
    assert!(
        open.starts_with("CON Your shop is open!\nMama Duka\n1 Orders"),
        "{open}"
    );

    // A buyer pays an order: the merchant is texted through the aggregator's SMS API.
    put_listings(&soko, &npub).await;
    let (mut buyer, code) = paid_order(&soko, merchant, "o-1").await;
    let text = tokio::time::timeout(REPLY_TIMEOUT, texts.recv())
        .await
        .expect("the paid order is texted")
        .unwrap();
    let field = |name: &str| {
        text.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("to").as_deref(), Some(PHONE));
    let message = field("message").unwrap();
    assert!(
        message.contains("order #1") && message.contains("1120 sat"),
        "{message}"
    );
    assert!(!message.contains("Amina"), "no buyer data in an SMS");

    // Menu 1 in a new session: the paid order and its detail.
    assert_eq!(
        walk(&bridge, "ATUid_2", &[""]).await,
        "CON soko: Mama Duka\nEnter your PIN:"
    );
    assert_eq!(
        walk(&bridge, "ATUid_2", &["4821", "4821*1"]).await,
        "CON Paid orders, newest first:\n#1 PAID 1120 sat\nReply with an order no.\n00 Back"
    );
    let detail = walk(&bridge, "ATUid_2", &["4821*1*1"]).await;
    assert!(
        detail.starts_with("CON Order #1: PAID 1120 sat\n2 x Mango\nTo: Amina"),
        "{detail}"
    );

    // Menu 2: a wrong code is explained, the buyer's code releases the escrow.
    let wrong = walk(
        &bridge,
        "ATUid_3",
        &["", "4821", "4821*2", "4821*2*1", "4821*2*1*00000000"],
    )
    .await;
    assert!(
        wrong.starts_with("CON Wrong code for order #1; 4 tries left"),
        "{wrong}"
    );
    let escrow = soko.daemon().escrow().clone();
    assert_eq!(
        escrow.order(&merchant, 1).unwrap().unwrap().state,
        EscrowState::Paid
    );
    assert_eq!(
        walk(&bridge, "ATUid_3", &[&format!("4821*2*1*00000000*{code}")]).await,
        "END Order #1 delivered: 1120 sat released to you. Balance: 1120 sat."
    );
    assert_eq!(
        escrow.order(&merchant, 1).unwrap().unwrap().state,
        EscrowState::PaidOut
    );
    assert_eq!(escrow.balance(&merchant).unwrap(), Sats(1120));
    let told = buyer
        .next_dm(REPLY_TIMEOUT)
        .await
        .expect("buyer told")
        .json();
    assert_eq!(told["shipped"], true, "{told}");

    // Menu 5: withdraw to a Lightning address typed in, after a confirmation screen.
    let mama_dir = tempfile::tempdir().unwrap();
    let (lnurlp, mama, _server) =
        lnurl_service_on(0, soko.daemon().mint_url(), mama_dir.path()).await;
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp).encode();
    let to_address = format!("4821*5*2*{lnurl}");
    let confirm = walk(
        &bridge,
        "ATUid_4",
        &["", "4821", "4821*5", "4821*5*2", &to_address],
    )
    .await;
    assert!(
        confirm.starts_with("CON Withdraw 1120 sat to lnurl1")
            && confirm.ends_with("Enter your PIN to send:\n00 Back"),
        "{confirm}"
    );
    let wrong_pin = walk(&bridge, "ATUid_4", &[&format!("{to_address}*1111")]).await;
    assert!(
        wrong_pin.starts_with("CON Wrong PIN. 2 tries left."),
        "{wrong_pin}"
    );
    assert_eq!(
        escrow.balance(&merchant).unwrap(),
        Sats(1120),
        "nothing sent"
    );
    assert_eq!(
        walk(&bridge, "ATUid_4", &[&format!("{to_address}*1111*4821")]).await,
        "END Sent 1109 sat (fee 0 sat). Balance: 11 sat."
    );
    assert_eq!(mint_paid_invoice(&mama, 1109).await, 1109);
    let wallet = Sats::from(soko.daemon().wallet().total_balance().await.unwrap());
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats(11)));
    assert_eq!(wallet, Sats(11), "soko's wallet holds the fee reserve left");
    let mint = soko.daemon().dev_mint().unwrap().mint().clone();
    assert_eq!(outstanding_at(&mint).await, 11 + 1109);
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

/// The gateway's budget runs out while soko is still at work (paying the merchant out to a
/// slow LNURL payee): the caller gets the polite END at once, soko finishes the delivery
/// whole, and the next dial shows it done, paid once, the code spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soko_slower_than_the_gateway_leaves_nothing_half_done() {
    let bridge_keys = Keys::generate();
    let trusted = bridge_keys.public_key();
    let soko = TestSoko::start_with(|c| c.ussd.bridges = vec![trusted]).await;
    let relay = soko.relay_url();
    let mama_dir = tempfile::tempdir().unwrap();
    let (lnurlp, mama, _server) = lnurl_service_slow(
        0,
        soko.daemon().mint_url(),
        mama_dir.path(),
        Duration::from_secs(4),
    )
    .await;
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp).encode();
    let (merchant, npub, activation) = pending_merchant(&soko, PHONE, Some(&lnurl)).await.typed();

    // Onboarding and the way to the code prompt, through a bridge with the usual budget.
    let bridge = start_bridge_with_keys(
        bridge_keys.clone(),
        &relay,
        soko.bot(),
        DEFAULT_BUDGET,
        None,
    )
    .await;
    walk(
        &bridge,
        "ATUid_1",
        &[
            "",
            &activation,
            &format!("{activation}*4821"),
            &format!("{activation}*4821*4821"),
            &format!("{activation}*4821*4821*1"),
        ],
    )
    .await;
    put_listings(&soko, &npub).await;
    let (_buyer, code) = paid_order(&soko, merchant, "o-1").await;
    let prompt = walk(&bridge, "ATUid_2", &["", "4821", "4821*2", "4821*2*1"]).await;
    assert!(
        prompt.contains("Enter the buyer's 8-digit code"),
        "{prompt}"
    );
    bridge.shutdown().await.unwrap();

    // The same session goes on through a restarted bridge (it keeps no state) whose budget
    // is shorter than soko's payout takes.
    let hurried = start_bridge_with_keys(
        bridge_keys.clone(),
        &relay,
        soko.bot(),
        Duration::from_millis(1500),
        None,
    )
    .await;
    let (status, body) = dial(&hurried, "ATUid_2", &format!("4821*2*1*{code}")).await;
    assert_eq!((status, body), (StatusCode::OK, format!("END {TOO_SLOW}")));
    assert_eq!(hurried.pending_hops(), 0, "the bridge forgot the hop");
    hurried.shutdown().await.unwrap();

    // soko carried on: the escrow released and the payout went through, each exactly once.
    let escrow = soko.daemon().escrow().clone();
    let mut paid = 0;
    for _ in 0..100 {
        paid = mint_paid_invoice(&mama, 1109).await;
        if paid > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(paid, 1109, "mama paid once, less the fee reserve");
    assert_eq!(
        escrow.order(&merchant, 1).unwrap().unwrap().state,
        EscrowState::PaidOut
    );
    let settled = async {
        loop {
            if escrow.books().unwrap() == (Sats::ZERO, Sats(11)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, settled)
        .await
        .expect("the payout's books settle: nothing held, the unused fee reserve owed");
    let mint = soko.daemon().dev_mint().unwrap().mint().clone();
    assert_eq!(outstanding_at(&mint).await, 11 + 1109);

    // Dialling again: the order is done and the code releases nothing more.
    let bridge =
        start_bridge_with_keys(bridge_keys, &relay, soko.bot(), DEFAULT_BUDGET, None).await;
    let again = walk(&bridge, "ATUid_3", &["", "4821", "4821*2", "4821*2*1"]).await;
    assert!(
        again.starts_with("CON Order #1 is not waiting for delivery"),
        "{again}"
    );
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats(11)));
    assert_eq!(mint_paid_invoice(&mama, 1109).await, 1109);
    bridge.shutdown().await.unwrap();
}
