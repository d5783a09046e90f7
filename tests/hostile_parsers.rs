//! Issue 11 (the Lightning-address panic and the parsers of outside input) and issue 9
//! (requests to buyer-chosen URLs), attacked the way an outsider would: plain Nostr DMs to a
//! real soko (embedded relay, in-process dev mint, sled in a tempdir), payees on loopback.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nostr_sdk::prelude::*;
use proptest::prelude::*;
use serde_json::json;

/// An `order_cancel` with a fresh request id (a reused one would get the stored reply).
fn cancel(npub: &str, order_id: &str, refund_to: Option<&str>) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let id = format!("c{}-{order_id}", NEXT.fetch_add(1, Ordering::SeqCst));
    json!({"v": 1, "id": id, "cmd": "order_cancel",
           "args": {"merchant": npub, "order_id": order_id, "refund_to": refund_to}})
    .to_string()
}

fn lnurl_of(url: &str) -> String {
    lnurl::lnurl::LnUrl::from_url(url.to_owned()).encode()
}

/// A loopback TCP port that counts the connections made to it and answers none of them.
async fn counting_port() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, count)
}

/// Item 11: `destination[..6]` panicked when byte 6 fell inside a multi-byte character, and
/// `refund_to` was read before soko checked that the order was the sender's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multibyte_refund_to_is_refused_and_soko_keeps_serving() {
    let mut soko = TestSoko::start().await;
    let Shop { merchant, npub } = mango_shop(&soko).await;
    // "a€€@x.y": byte 6 is inside the second "€".
    let hostile = "a€€@x.y";

    let mut stranger = User::connect(&[soko.relay_url()]).await;
    let reply = stranger
        .ask_nip04(soko.bot(), &cancel(&npub, "not-mine", Some(hostile)))
        .await
        .json();
    assert_eq!(reply["ok"], false, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    // A stranger hears only that there is no such order, nothing about the address.
    assert!(message.contains("no order"), "{reply}");
    assert!(!message.contains("Lightning"), "{reply}");

    // The order's own buyer is told the address is unreadable.
    let (mut buyer, _code) = paid_order(&soko, merchant, "mb-1").await;
    let reply = buyer
        .ask_nip04(soko.bot(), &cancel(&npub, "mb-1", Some(hostile)))
        .await
        .json();
    assert_eq!(reply["error"]["code"], "invalid", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("neither a Lightning address"),
        "{reply}"
    );
    for text in ["lnurlé@x", "€€€€€€€", "lnurl\u{1F600}x"] {
        let reply = buyer
            .ask_nip04(soko.bot(), &cancel(&npub, "mb-1", Some(text)))
            .await
            .json();
        assert_eq!(reply["error"]["code"], "invalid", "{text}: {reply}");
    }
    // soko still serves: the same buyer's plain cancel is recorded.
    let reply = buyer
        .ask_nip04(soko.bot(), &cancel(&npub, "mb-1", None))
        .await
        .json();
    assert_eq!(reply["result"]["cancel_requested"], true, "{reply}");
    soko.stop().await;
}

/// Item 9: without the dev setting soko calls no loopback service, whether the address names
/// loopback outright (refused at the cancel) or through a name that resolves there (refused
/// at the refund, which then goes out as ecash). The buyer reads nothing about why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_to_loopback_is_refused_without_the_dev_setting() {
    let mut soko = TestSoko::start_with(|c| c.lnurl.allow_loopback_http = false).await;
    let Shop { merchant, npub } = mango_shop(&soko).await;
    let (port, connections) = counting_port().await;
    let (mut buyer, _code) = paid_order(&soko, merchant, "lo-1").await;

    for url in [
        format!("http://127.0.0.1:{port}/.well-known/lnurlp/mama"),
        format!("https://127.0.0.1:{port}/.well-known/lnurlp/mama"),
        format!("https://[::ffff:127.0.0.1]:{port}/.well-known/lnurlp/mama"),
        "https://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        let reply = buyer
            .ask_nip04(soko.bot(), &cancel(&npub, "lo-1", Some(&lnurl_of(&url))))
            .await
            .json();
        assert_eq!(reply["error"]["code"], "invalid", "{url}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains("https"), "{message}");
        assert!(!message.contains("127.0.0.1"), "{message}");
    }

    // A name is judged by what it resolves to.
    let by_name = lnurl_of(&format!("https://localhost:{port}/.well-known/lnurlp/mama"));
    let reply = buyer
        .ask_nip04(soko.bot(), &cancel(&npub, "lo-1", Some(&by_name)))
        .await
        .json();
    assert_eq!(reply["result"]["refund_via"], "lightning", "{reply}");
    let refund = operator(&soko, "order_refund", json!({"merchant": npub, "order": 1}))
        .await
        .result
        .expect("refunded");
    assert_eq!(
        (refund["state"].as_str(), refund["via"].as_str()),
        (Some("refunded"), Some("token")),
        "{refund}"
    );
    let dms = buyer.all_dms(Duration::from_secs(3)).await;
    let money = dms
        .iter()
        .find(|dm| dm.content.contains("Cashu"))
        .expect("the refund as ecash");
    assert!(
        money
            .content
            .starts_with("Your Lightning address could not be paid, so here is your refund"),
        "{}",
        money.content
    );
    assert!(!money.content.contains("localhost"), "{}", money.content);
    assert_eq!(connections.load(Ordering::SeqCst), 0, "soko connected");
    soko.stop().await;
}

/// A loopback LNURL-pay service for the hostile cases: `/.well-known/lnurlp/mama` answers
/// `first` (a pay request or a redirect), the callback answers an invoice of mama's wallet
/// for `extra_sat` more than asked.
async fn hostile_payee(
    soko: &TestSoko,
    store_dir: &std::path::Path,
    redirect_to: Option<String>,
    extra_sat: u64,
) -> (String, Arc<AtomicUsize>) {
    use axum::extract::{Query, State};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::get;
    let store = soko::store::Store::open(store_dir).unwrap();
    let wallet = soko::wallet::open(&store, "mama", soko.daemon().mint_url(), &[5; 64]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let calls = Arc::new(AtomicUsize::new(0));
    let pay_request = json!({
        "callback": format!("{base}/cb"), "minSendable": 1_000, "maxSendable": 100_000_000,
        "tag": "payRequest", "metadata": "[[\"text/plain\",\"mama\"]]",
    });
    let (first_calls, cb_calls) = (calls.clone(), calls.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/lnurlp/mama",
            get(move || {
                let redirect_to = redirect_to.clone();
                let body = pay_request.clone();
                first_calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    match redirect_to {
                        Some(to) => Redirect::temporary(&to).into_response(),
                        None => axum::Json(body).into_response(),
                    }
                }
            }),
        )
        .route(
            "/cb",
            get(
                move |State(wallet): State<soko::wallet::Wallet>,
                      Query(q): Query<std::collections::HashMap<String, String>>| {
                    cb_calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let msat: u64 = q["amount"].parse().unwrap();
                        let quote = wallet
                            .mint_quote(
                                cdk::nuts::PaymentMethod::BOLT11,
                                Some((msat / 1000 + extra_sat).into()),
                                None,
                                None,
                            )
                            .await
                            .unwrap();
                        let answer: Response =
                            axum::Json(json!({"pr": quote.request})).into_response();
                        answer
                    }
                },
            ),
        )
        .with_state(wallet);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("{base}/.well-known/lnurlp/mama"), calls)
}

/// Cancels `order_id` with `refund_to`, refunds it and returns how it went out and the
/// buyer's refund DM.
async fn refund_to(
    soko: &TestSoko,
    buyer: &mut User,
    npub: &str,
    order_id: &str,
    refund_to: &str,
) -> (String, String) {
    let reply = buyer
        .ask_nip04(soko.bot(), &cancel(npub, order_id, Some(refund_to)))
        .await
        .json();
    assert_eq!(reply["result"]["refund_via"], "lightning", "{reply}");
    let number = reply["result"]["order"].as_u64().unwrap();
    let refund = operator(
        soko,
        "order_refund",
        json!({"merchant": npub, "order": number}),
    )
    .await
    .result
    .expect("refunded");
    assert_eq!(refund["state"], "refunded", "{refund}");
    let dms = buyer.all_dms(Duration::from_secs(3)).await;
    let money = dms
        .into_iter()
        .find(|dm| dm.content.contains("Refund for order"))
        .expect("the refund DM");
    (refund["via"].as_str().unwrap().to_owned(), money.content)
}

/// Item 9: a payee that answers with a redirect is not followed, even to an address soko
/// could reach (here another loopback service, allowed by the dev setting, that would pay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_payee_is_not_followed() {
    let mut soko = TestSoko::start().await;
    let Shop { merchant, npub } = mango_shop(&soko).await;
    let honest_dir = tempfile::tempdir().unwrap();
    let (honest_url, honest_calls) = hostile_payee(&soko, honest_dir.path(), None, 0).await;
    let hostile_dir = tempfile::tempdir().unwrap();
    let (hostile_url, _) = hostile_payee(&soko, hostile_dir.path(), Some(honest_url), 0).await;
    let (mut buyer, _code) = paid_order(&soko, merchant, "rd-1").await;

    let (via, text) = refund_to(&soko, &mut buyer, &npub, "rd-1", &lnurl_of(&hostile_url)).await;
    assert_eq!(via, "token", "{text}");
    assert!(text.contains("1120 sat as Cashu"), "{text}");
    assert!(
        !text.contains("redirect") && !text.contains("127.0.0.1"),
        "{text}"
    );
    assert_eq!(
        honest_calls.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    soko.stop().await;
}

/// Item 9: an invoice for more than asked is not paid; the buyer gets the whole refund as
/// ecash and a note that does not repeat what the service answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_for_the_wrong_amount_is_not_paid() {
    let mut soko = TestSoko::start().await;
    let Shop { merchant, npub } = mango_shop(&soko).await;
    let payee_dir = tempfile::tempdir().unwrap();
    let (payee_url, calls) = hostile_payee(&soko, payee_dir.path(), None, 1).await;
    let (mut buyer, _code) = paid_order(&soko, merchant, "amt-1").await;

    let (via, text) = refund_to(&soko, &mut buyer, &npub, "amt-1", &lnurl_of(&payee_url)).await;
    assert_eq!(via, "token", "{text}");
    assert!(text.contains("1120 sat as Cashu"), "{text}");
    assert!(
        text.starts_with("Your Lightning address could not be paid, so here is your refund"),
        "{text}"
    );
    assert!(calls.load(Ordering::SeqCst) >= 2, "the payee was asked");
    // Everything the escrow held went to the buyer's token: nothing left for a melt.
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (soko::money::Sats::ZERO, soko::money::Sats::ZERO)
    );
    soko.stop().await;
}

// ---- property tests over the parsers of outside input (issue 11) ----
//
// Each reads anything at all and either accepts it or refuses it with a message; none may
// panic. 256 cases each keeps the suite quick; the strategies mix arbitrary text with the
// shapes the parsers look for, so cases get past the first check.

const MERCHANT: &str = "f916d184100631c6e9096a22bcffcbf991f14e5952e4f36b87a7ee41e9b80b32";

/// Field names the parsers look for, or any text.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            "v", "id", "cmd", "args", "type", "name", "address", "message", "contact", "items",
            "shipping_id", "product_id", "quantity", "nostr", "phone", "email", "merchant",
            "order_id", "refund_to", "order", "code", "stall", "product", "to", "page", "query",
            "lightning_address", "currency", "price", "cost", "shipping", "stall_id", "session",
            "text", "service_code", "deadline_ms", "invite", "role", "agent", "approve",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Text that is sometimes what a parser hopes for and sometimes hostile.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9@._:-]{0,24}",
        proptest::sample::select(vec![
            "",
            "0",
            "-1",
            "1",
            "18446744073709551616",
            "sat",
            "USD",
            "nairobi",
            "mango",
            "a€€@x.y",
            "lnurl1",
            "LNURL1€",
            "mama@duka.example",
            "\u{0}",
            "€",
            "\u{1F600}",
        ])
        .prop_map(str::to_owned),
        Just(format!("{}:{MERCHANT}:mango", Kind::SetProduct)),
        Just(format!("30406:{MERCHANT}:nairobi")),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A command envelope: anything, any JSON, or a known command with arbitrary arguments.
fn envelope() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        json_value().prop_map(|v| v.to_string()),
        (
            proptest::sample::select(soko::proto::command::COMMAND_NAMES),
            json_value(),
            proptest::option::of(text()),
            prop_oneof![Just(1u64), any::<u64>()],
        )
            .prop_map(|(cmd, args, id, v)| {
                json!({"v": v, "id": id, "cmd": cmd, "args": args}).to_string()
            }),
    ]
}

fn amount() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (0u32..100_000).prop_map(f64::from),
        proptest::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.1,
            1e300,
            9_007_199_254_740_993.0,
        ]),
    ]
}

fn currency() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec!["sat", "SAT", "USD", "KES", "JPY", "BHD"])
            .prop_map(str::to_owned),
        any::<String>(),
    ]
}

fn small_id() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec!["mango", "s1", "nairobi", "other"]).prop_map(str::to_owned),
        any::<String>(),
    ]
}

fn order_strategy() -> impl Strategy<Value = soko::proto::nip15::Order> {
    use soko::proto::nip15::{Contact, Order, OrderItem};
    (
        text(),
        proptest::option::of(text()),
        proptest::collection::vec((small_id(), any::<i64>()), 0..6),
        small_id(),
    )
        .prop_map(|(id, name, items, shipping_id)| Order {
            id,
            kind: 0,
            name: name.clone(),
            address: name,
            message: None,
            contact: Contact::default(),
            items: items
                .into_iter()
                .map(|(product_id, quantity)| OrderItem {
                    product_id,
                    quantity,
                })
                .collect(),
            shipping_id,
        })
}

fn stall_strategy() -> impl Strategy<Value = soko::proto::nip15::Stall> {
    use soko::proto::nip15::{ShippingZone, Stall};
    (
        currency(),
        proptest::collection::vec((small_id(), amount()), 0..4),
    )
        .prop_map(|(currency, zones)| Stall {
            id: "s1".into(),
            name: "Duka".into(),
            description: None,
            currency,
            shipping: zones
                .into_iter()
                .map(|(id, cost)| ShippingZone {
                    id,
                    name: None,
                    cost,
                    regions: vec![],
                })
                .collect(),
        })
}

fn products_strategy() -> impl Strategy<Value = Vec<soko::proto::nip15::Product>> {
    use soko::proto::nip15::{Product, ShippingExtra};
    proptest::collection::vec(
        (
            small_id(),
            small_id(),
            currency(),
            amount(),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec((small_id(), amount()), 0..3),
        )
            .prop_map(
                |(id, stall_id, currency, price, quantity, extras)| Product {
                    id,
                    stall_id,
                    name: "Mango".into(),
                    description: None,
                    images: vec![],
                    currency,
                    price,
                    quantity,
                    specs: vec![],
                    shipping: extras
                        .into_iter()
                        .map(|(id, cost)| ShippingExtra { id, cost })
                        .collect(),
                    categories: vec![],
                },
            ),
        0..5,
    )
}

fn tags() -> impl Strategy<Value = Vec<Vec<String>>> {
    proptest::collection::vec(
        (
            prop_oneof![
                3 => proptest::sample::select(vec![
                    "order", "item", "shipping", "shipping_option", "amount", "type", "status",
                    "name", "address", "email", "phone", "p", "invite", "role",
                ])
                .prop_map(str::to_owned),
                1 => any::<String>(),
            ],
            proptest::collection::vec(text(), 0..4),
        )
            .prop_map(|(name, mut rest)| {
                rest.insert(0, name);
                rest
            }),
        0..10,
    )
}

/// An Africa's Talking callback body: arbitrary bytes, or a form with its fields.
fn gateway_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(
            (
                prop_oneof![
                    proptest::sample::select(vec![
                        "sessionId",
                        "serviceCode",
                        "phoneNumber",
                        "networkCode",
                        "text",
                    ])
                    .prop_map(str::to_owned),
                    any::<String>(),
                ],
                prop_oneof![text(), "\\+?[0-9]{0,16}", "[0-9*#]{0,40}"],
            ),
            0..8,
        )
        .prop_map(|fields| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish()
                .into_bytes()
        }),
    ]
}

/// The same envelopes, sent as DMs to a real soko by a buyer with a paid order, mixed with
/// cancels of that order naming any `refund_to`: every one is answered (a handler that
/// panics answers nothing), and soko still answers a ping afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_commands_to_a_real_soko_are_each_answered() {
    use proptest::strategy::ValueTree;
    let mut soko = TestSoko::start().await;
    let Shop { merchant, npub } = mango_shop(&soko).await;
    let (mut buyer, _code) = paid_order(&soko, merchant, "fz-1").await;
    let cancels = (
        prop_oneof![Just("fz-1".to_owned()), text()],
        // Printable text of any script: where item 11's slice fell inside a character.
        proptest::option::of(prop_oneof![text(), "\\PC{5,12}"]),
    )
        .prop_map(move |(order_id, refund_to)| {
            json!({"v": 1, "cmd": "order_cancel",
                   "args": {"merchant": npub, "order_id": order_id, "refund_to": refund_to}})
            .to_string()
        });
    let strategy = prop_oneof![envelope(), cancels];
    // Deterministic: a failure names its input and is the same on the next run.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..40 {
        let content = strategy.new_tree(&mut runner).unwrap().current();
        buyer.send_nip04(soko.bot(), &content).await;
        let reply = buyer.next_dm(REPLY_TIMEOUT).await;
        assert!(reply.is_some(), "no answer to {content:?}");
    }
    let pong = buyer
        .ask_nip04(soko.bot(), r#"{"v":1,"id":"last-ping","cmd":"ping"}"#)
        .await
        .json();
    assert_eq!(pong["result"]["pong"], true, "{pong}");
    soko.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Lightning addresses and LNURLs (item 11's panic lived here).
    #[test]
    fn any_destination_is_read_or_refused(destination in prop_oneof![any::<String>(), text()]) {
        match soko::lnurl::lnurlp_url(&destination) {
            Ok(url) => {
                prop_assert!(url.contains("://"));
                let _ = soko::lnurl::Policy::default().check(&url);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// The command envelope and every command's arguments.
    #[test]
    fn any_envelope_is_read_or_refused(content in envelope()) {
        match soko::proto::Request::parse(&content) {
            Ok(request) => {
                if let Err(refusal) = request.command() {
                    prop_assert!(!refusal.message.is_empty());
                }
            }
            Err(refusal) => prop_assert!(!refusal.message.is_empty()),
        }
    }

    /// NIP-15 order JSON: read by serde, then priced against a stall and its products whose
    /// prices may be anything JSON can carry (NaN and infinities arrive as unreadable JSON,
    /// but the types allow them).
    #[test]
    fn any_order_json_is_read_or_refused(value in json_value()) {
        let _ = serde_json::from_value::<soko::proto::nip15::Order>(value.clone());
        let _ = serde_json::from_value::<soko::proto::nip15::Stall>(value.clone());
        let _ = serde_json::from_value::<soko::proto::nip15::Product>(value);
    }

    #[test]
    fn any_order_is_priced_or_refused(
        order in order_strategy(),
        stall in stall_strategy(),
        products in products_strategy(),
        rate in prop_oneof![Just(0u64), any::<u64>(), Just(10_000u64)],
    ) {
        let rates = soko::market::Rates(
            ["USD", "KES", "JPY", "BHD"].iter().map(|c| ((*c).to_owned(), rate)).collect(),
        );
        match soko::market::price(&order, &stall, &products, &rates) {
            Ok(priced) => prop_assert!(!priced.lines.is_empty()),
            Err(refusal) => prop_assert!(!refusal.to_string().is_empty()),
        }
        let _ = soko::proto::nip15::Shipping::of(&order);
    }

    /// Gamma kind-16 tags.
    #[test]
    fn any_gamma_tags_are_read_or_refused(tags in tags(), content in any::<String>()) {
        use soko::proto::gamma;
        let _ = (gamma::message_type(&tags), gamma::order_id(&tags), gamma::status(&tags));
        match gamma::parse_order(&tags, &content, MERCHANT) {
            Ok(order) => {
                prop_assert!(!order.items.is_empty());
                let _ = order.to_nip15("npub1buyer", Some("nairobi"));
            }
            Err(why) => prop_assert!(!why.is_empty()),
        }
    }

    /// USSD hops as the bridge reads them from the gateway, the hop's input as soko splits
    /// it, and screens cut to the handset.
    #[test]
    fn any_gateway_callback_is_read_or_refused(
        body in gateway_body(),
        consumed in "[0-9*#]{0,20}",
        typed in prop_oneof![any::<String>(), "[0-9*#]{0,30}"],
        screen in any::<String>(),
    ) {
        use soko::bridge::Gateway;
        match soko::bridge::AfricasTalking.parse(&body) {
            Ok(hop) => prop_assert!(!hop.phone.is_empty()),
            Err(bad) => prop_assert!(!bad.to_string().is_empty()),
        }
        let _ = soko::ussd::session::latest_input(&consumed, &typed);
        let fitted = soko::bridge::fit("CON ", &screen);
        prop_assert!(fitted.chars().count() <= soko::proto::ussd::SCREEN_LIMIT);
    }
}

proptest! {
    // Each case signs an event: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Registration events: arbitrary kind, content, tags and time on a validly signed event.
    #[test]
    fn any_registration_event_is_read_or_refused(
        kind in prop_oneof![Just(soko::proto::agents::REGISTRATION_KIND), any::<u16>()],
        content in any::<String>(),
        tags in tags(),
        at in prop_oneof![Just(1_800_000_000u64), any::<u32>().prop_map(u64::from)],
        to_soko in any::<bool>(),
    ) {
        use soko::agents::registration::{check_event, claim};
        let user = Keys::generate();
        let soko_key = Keys::generate().public_key();
        let mut builder = EventBuilder::new(Kind::Custom(kind), content)
            .custom_created_at(Timestamp::from(at));
        if to_soko {
            builder = builder.tag(Tag::public_key(soko_key));
        }
        builder = builder.tags(tags.iter().filter_map(|t| Tag::parse(t.clone()).ok()));
        let event = builder.sign_with_keys(&user).unwrap();
        if let Err(refusal) = check_event(&event, &user.public_key(), &soko_key, 1_800_000_000) {
            prop_assert!(!refusal.to_string().is_empty());
        }
        if let Err(refusal) = claim(&event) {
            prop_assert!(!refusal.to_string().is_empty());
        }
    }
}
