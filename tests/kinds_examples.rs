//! Every JSON example in `kinds/` parses as the type it illustrates and round-trips, so the
//! public spec cannot drift from the code.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use serde_json::Value;
use soko::proto::agents::{AgentNotice, AgentNoticeBody};
use soko::proto::gamma;
use soko::proto::nip15::{Order, OrderStatus, PaymentRequest};
use soko::proto::ussd::{Notice, NoticeBody, UssdHopArgs, UssdScreen, SCREEN_LIMIT};
use soko::proto::{Request, Response};

/// (page, info string, JSON text) for every fenced example under `kinds/`.
fn examples() -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kinds");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let page = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(info) = line.trim().strip_prefix("```json ") else {
                continue;
            };
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            found.push((page.clone(), info.trim().to_owned(), body.join("\n")));
        }
    }
    found
}

#[test]
fn every_example_parses_and_round_trips() {
    let examples = examples();
    let mut checked = 0;
    // The stall and product the `gamma-listing` examples after it are made from.
    let mut gamma_source: Option<Value> = None;
    for (page, info, json) in &examples {
        let as_value: Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{page}: {info} example is not JSON ({e}): {json}"));
        match info.as_str() {
            "request" => {
                let request = Request::parse(json)
                    .unwrap_or_else(|r| panic!("{page}: request refused: {r}: {json}"));
                request
                    .command()
                    .unwrap_or_else(|r| panic!("{page}: command refused: {r}: {json}"));
                if let Some(event) = request.args.get("event") {
                    // A register example carries a real signed registration event.
                    check_registration_event(page, event);
                }
                if let Some(bat) = request.args.get("bat").and_then(Value::as_str) {
                    let token: cdk::nuts::BlindAuthToken = bat
                        .parse()
                        .unwrap_or_else(|e| panic!("{page}: not a blind auth token ({e}): {json}"));
                    assert!(
                        token.auth_proof.dleq.is_some(),
                        "{page}: a BAT carries its DLEQ"
                    );
                }
                if let Some(merchant) = request.args.get("merchant").and_then(Value::as_str) {
                    nostr_sdk::PublicKey::parse(merchant)
                        .unwrap_or_else(|e| panic!("{page}: bad merchant key ({e}): {json}"));
                }
                let again = serde_json::to_string(&request).unwrap();
                assert_eq!(Request::parse(&again).unwrap(), request, "{page}: {json}");
            }
            "response" => {
                let response: Response = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{page}: not a response ({e}): {json}"));
                assert_eq!(
                    serde_json::to_value(&response).unwrap(),
                    as_value,
                    "{page}: response round trip"
                );
                assert_eq!(response.ok, response.result.is_some(), "{page}: {json}");
                assert_eq!(response.ok, response.error.is_none(), "{page}: {json}");
                if let (true, Some(result)) = (page == "sessions.md", &response.result) {
                    check_session_result(page, result);
                }
                if let Some(result) = response
                    .result
                    .as_ref()
                    .filter(|r| r.get("orders_today").is_some())
                {
                    // A `metrics` result is the snapshot, field for field.
                    let snapshot: soko::metrics::Snapshot = serde_json::from_value(result.clone())
                        .unwrap_or_else(|e| panic!("{page}: not a metrics snapshot ({e}): {json}"));
                    assert_eq!(&serde_json::to_value(&snapshot).unwrap(), result, "{page}");
                }
                if let Some(npub) = response.result.as_ref().and_then(|r| r.get("npub")) {
                    let from_npub = nostr_sdk::PublicKey::parse(npub.as_str().unwrap()).unwrap();
                    let hex = response.result.as_ref().unwrap()["pubkey"]
                        .as_str()
                        .unwrap();
                    assert_eq!(from_npub.to_hex(), hex, "{page}: npub and pubkey agree");
                }
            }
            "event-template" => {
                let kind = as_value["kind"].as_u64().expect("kind");
                assert!(kind <= u64::from(u16::MAX), "{page}: kind");
                assert!(as_value["content"].is_string(), "{page}: content");
                let tags = as_value["tags"].as_array().expect("tags");
                assert!(tags
                    .iter()
                    .all(|t| t.as_array().is_some_and(|t| t.iter().all(Value::is_string))));
                if kind == 0 {
                    let content = as_value["content"].as_str().unwrap();
                    serde_json::from_str::<nostr_sdk::Metadata>(content)
                        .unwrap_or_else(|e| panic!("{page}: profile content ({e})"));
                }
            }
            "nip15-order" => {
                let order: Order = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{page}: not an order ({e}): {json}"));
                assert_eq!(order.kind, 0);
                assert_eq!(serde_json::to_value(&order).unwrap(), as_value, "{page}");
            }
            "nip15-payment-request" => {
                let request: PaymentRequest = serde_json::from_str(json).unwrap();
                assert_eq!(request.kind, 1);
                assert_eq!(serde_json::to_value(&request).unwrap(), as_value, "{page}");
            }
            "nip15-status" => {
                let status: OrderStatus = serde_json::from_str(json).unwrap();
                assert_eq!(status.kind, 2);
                assert_eq!(serde_json::to_value(&status).unwrap(), as_value, "{page}");
            }
            "gamma-rumor" => {
                let tags: Vec<Vec<String>> = serde_json::from_value(as_value["tags"].clone())
                    .unwrap_or_else(|e| panic!("{page}: tags are string lists ({e})"));
                let content = as_value["content"].as_str().expect("content");
                match (as_value["kind"].as_u64(), gamma::message_type(&tags)) {
                    (Some(16), Some(1)) => {
                        let merchant = tags[0][1].clone();
                        gamma::parse_order(&tags, content, &merchant)
                            .unwrap_or_else(|e| panic!("{page}: order refused: {e}"));
                    }
                    (Some(16), Some(2 | 3)) => {
                        assert!(gamma::order_id(&tags).is_some(), "{page}: order tag");
                    }
                    (Some(14), None) => {}
                    other => panic!("{page}: unexpected Gamma rumor {other:?}"),
                }
            }
            "shopstr-rumor" => check_shopstr_rumor(page, &as_value),
            "gamma-source" => gamma_source = Some(as_value.clone()),
            "gamma-listing" => check_gamma_listing(
                page,
                gamma_source
                    .as_ref()
                    .unwrap_or_else(|| panic!("{page}: a gamma-source example comes first")),
                &as_value,
            ),
            "ussd-hop" => {
                let request = Request::parse(json)
                    .unwrap_or_else(|r| panic!("{page}: hop refused: {r}: {json}"));
                assert_eq!(request.cmd, "ussd_hop", "{page}: {json}");
                let args: UssdHopArgs = serde_json::from_value(Value::Object(request.args.clone()))
                    .unwrap_or_else(|e| panic!("{page}: bad hop args ({e}): {json}"));
                assert_eq!(
                    serde_json::to_value(&args).unwrap(),
                    as_value["args"],
                    "{page}: hop args round trip"
                );
                // The request id rule: sha256("soko-ussd-hop\n" ‖ session ‖ "\n" ‖ position),
                // first 32 hex chars; position = inputs in text (never the text: the PIN).
                use nostr_sdk::hashes::{sha256, Hash};
                let position = if args.text.is_empty() {
                    0
                } else {
                    args.text.split('*').count()
                };
                let digest = sha256::Hash::hash(
                    format!("soko-ussd-hop\n{}\n{position}", args.session).as_bytes(),
                );
                assert_eq!(
                    request.id.as_deref(),
                    Some(&digest.to_string()[..32]),
                    "{page}: hop id follows the rule: {json}"
                );
            }
            "ussd-screen" => {
                let response: Response = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{page}: not a response ({e}): {json}"));
                assert!(response.ok, "{page}: {json}");
                let screen: UssdScreen = serde_json::from_value(response.result.clone().unwrap())
                    .unwrap_or_else(|e| panic!("{page}: not a screen ({e}): {json}"));
                assert!(
                    screen.screen.chars().count() + 4 <= SCREEN_LIMIT,
                    "{page}: screen fits with its prefix: {json}"
                );
                assert_eq!(
                    serde_json::to_value(&response).unwrap(),
                    as_value,
                    "{page}: screen round trip"
                );
            }
            "ussd-notice" => {
                let notice: Notice = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{page}: not a notice ({e}): {json}"));
                assert_eq!(notice.v, 1, "{page}: {json}");
                let NoticeBody::Sms(sms) = &notice.body;
                assert!(sms.text.chars().count() <= 160, "{page}: SMS length");
                assert_eq!(
                    serde_json::to_value(&notice).unwrap(),
                    as_value,
                    "{page}: notice round trip"
                );
            }
            "registration-event" => check_registration_event(page, &as_value),
            "book-event" => check_book_event(page, &as_value),
            "exchange-notice" => {
                let notice: soko::proto::exchange::ExchangeNotice = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{page}: not an exchange notice ({e}): {json}"));
                assert_eq!(
                    (notice.v, notice.notice.as_str()),
                    (1, "offer"),
                    "{page}: {json}"
                );
                assert_eq!(
                    serde_json::to_value(&notice).unwrap(),
                    as_value,
                    "{page}: exchange notice round trip"
                );
            }
            "agent-notice" => {
                let notice: AgentNotice = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("{page}: not an agent notice ({e}): {json}"));
                assert_eq!(notice.v, 1, "{page}: {json}");
                let merchant = match &notice.body {
                    AgentNoticeBody::Proposal(p) => &p.merchant,
                    AgentNoticeBody::OrderPaid(o) => &o.merchant,
                    AgentNoticeBody::Unlinked(u) => &u.merchant,
                    AgentNoticeBody::MerchantActive(a) => &a.merchant,
                };
                nostr_sdk::PublicKey::parse(merchant)
                    .unwrap_or_else(|e| panic!("{page}: bad merchant key ({e}): {json}"));
                assert_eq!(
                    serde_json::to_value(&notice).unwrap(),
                    as_value,
                    "{page}: agent notice round trip"
                );
            }
            rep if rep.starts_with("rep-") => check_reputation_example(page, rep, &as_value),
            other => panic!("{page}: unknown example type `json {other}`"),
        }
        checked += 1;
    }
    assert!(checked >= 8, "the spec has its examples ({checked} found)");
    for page in [
        "commands.md",
        "relay.md",
        "orders.md",
        "gamma.md",
        "ussd.md",
        "agents.md",
        "book.md",
        "exchange.md",
    ] {
        assert!(
            examples.iter().any(|(p, _, _)| p == page),
            "{page} has examples"
        );
    }
}

/// A Shopstr checkout example: the buyer's `order-payment` reads as an ecash order whose
/// token is a real Cashu token in sat; soko's answers use the subjects Shopstr's reader
/// keeps and the statuses its orders view ranks, and a token given back decodes.
fn check_shopstr_rumor(page: &str, value: &Value) {
    use soko::proto::shopstr;
    use std::str::FromStr;
    let tags: Vec<Vec<String>> = serde_json::from_value(value["tags"].clone())
        .unwrap_or_else(|e| panic!("{page}: tags are string lists ({e})"));
    let content = value["content"].as_str().expect("content");
    assert_eq!(value["kind"], 14, "{page}: Shopstr's messages are kind 14");
    let tag = |name: &str| {
        tags.iter()
            .find(|t| t[0] == name)
            .map(|t| t[1..].to_vec())
            .unwrap_or_default()
    };
    let real_token = |token: &str| {
        let parsed = cdk::nuts::Token::from_str(token)
            .unwrap_or_else(|e| panic!("{page}: not a Cashu token ({e})"));
        assert_eq!(parsed.unit(), Some(cdk::nuts::CurrencyUnit::Sat), "{page}");
        assert!(
            content.contains(token),
            "{page}: the token is in the text too"
        );
        u64::from(parsed.value().unwrap_or_else(|e| panic!("{page}: {e}")))
    };
    assert!(!tag("order").is_empty(), "{page}: an order tag");
    match tag("subject").first().map(String::as_str) {
        Some(shopstr::SUBJECT_PAYMENT) => {
            let merchant = tags[0][1].clone();
            let Some(Ok(shopstr::Message::EcashOrder(order))) =
                shopstr::read(&tags, content, &merchant)
            else {
                panic!("{page}: not read as an ecash order");
            };
            assert!(real_token(&order.token) > 0, "{page}");
        }
        Some(shopstr::SUBJECT_INFO) => {
            if let Some(status) = tag("status").first() {
                assert!(
                    ["pending", "confirmed", "shipped", "completed", "canceled"]
                        .contains(&status.as_str()),
                    "{page}: Shopstr ranks no status {status:?}"
                );
            }
        }
        Some(shopstr::SUBJECT_CHANGE) => {
            let payment = tag("payment");
            assert_eq!(payment.first().map(String::as_str), Some("ecash"), "{page}");
            assert!(real_token(&payment[1]) > 0, "{page}");
        }
        other => panic!("{page}: a subject Shopstr's reader drops: {other:?}"),
    }
}

/// A `gamma-listing` example is exactly what soko publishes for the `gamma-source` before
/// it: the 30402 and 30406 from the pure conversions, the deletion from the same builder,
/// the profile from the same function.
fn check_gamma_listing(page: &str, source: &Value, example: &Value) {
    use soko::proto::gamma_listing;
    use soko::proto::nip15::{Product, Stall};
    let merchant = source["merchant"].as_str().unwrap();
    let stall: Stall = serde_json::from_value(source["stall"].clone()).unwrap();
    let product: Product = serde_json::from_value(source["product"].clone()).unwrap();
    let tags: Vec<Vec<String>> = serde_json::from_value(example["tags"].clone())
        .unwrap_or_else(|e| panic!("{page}: tags are string lists ({e})"));
    let content = example["content"].as_str().expect("content");
    match example["kind"].as_u64() {
        Some(30402) => {
            let made = gamma_listing::product_listing(merchant, &product, &stall);
            assert_eq!(
                (made.content.as_str(), &made.tags),
                (content, &tags),
                "{page}"
            );
        }
        Some(30406) => {
            let made = gamma_listing::shipping_option(&stall, &stall.shipping[0]);
            assert_eq!(
                (made.content.as_str(), &made.tags),
                (content, &tags),
                "{page}"
            );
        }
        Some(5) => {
            let key = nostr_sdk::PublicKey::from_hex(merchant).unwrap();
            let ids: Vec<nostr_sdk::EventId> = tags
                .iter()
                .filter(|t| t[0] == "e")
                .map(|t| nostr_sdk::EventId::from_hex(&t[1]).unwrap())
                .collect();
            assert!(!ids.is_empty(), "{page}: a deletion names ids");
            let coordinates = [
                (soko::proto::nip15::KIND_PRODUCT, product.id.clone()),
                (gamma_listing::KIND_LISTING, product.id.clone()),
            ];
            let made = nostr_sdk::EventBuilder::delete(soko::market::listing::deletion(
                &key,
                &coordinates,
                &ids,
                content,
            ))
            .build(key);
            let made: Vec<Vec<String>> = made.tags.iter().map(|t| t.as_slice().to_vec()).collect();
            assert_eq!(made, tags, "{page}: the deletion soko builds");
        }
        Some(10050) => {
            assert!(!tags.is_empty(), "{page}");
            for tag in &tags {
                assert_eq!(tag[0], "relay", "{page}");
                nostr_sdk::RelayUrl::parse(&tag[1]).unwrap();
            }
        }
        Some(0) => {
            let shown: Value = serde_json::from_str(content).unwrap();
            let merchant = soko::market::Merchant {
                pubkey: merchant.to_owned(),
                npub: String::new(),
                name: shown["name"].as_str().unwrap().to_owned(),
                lightning_address: None,
                tokens_to: None,
                status: soko::market::MerchantStatus::Active,
            };
            let made = serde_json::to_value(soko::market::merchants::profile(&merchant)).unwrap();
            assert_eq!(made, shown, "{page}: the profile soko publishes");
            assert_eq!(tags, vec![vec!["payment_preference", "ecash"]], "{page}");
        }
        other => panic!("{page}: unexpected listing kind {other:?}"),
    }
}

/// A registration event example is signed for real and passes soko's stateless checks at
/// its own `created_at`, addressed to the key in its `p` tag.
fn check_registration_event(page: &str, value: &Value) {
    let event: nostr_sdk::Event = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{page}: not an event ({e}): {value}"));
    event
        .verify()
        .unwrap_or_else(|e| panic!("{page}: registration event does not verify ({e})"));
    assert_eq!(serde_json::to_value(&event).unwrap(), *value, "{page}");
    let soko = event
        .tags
        .public_keys()
        .next()
        .copied()
        .unwrap_or_else(|| panic!("{page}: registration event has no p tag"));
    let at = event.created_at.as_secs();
    soko::agents::registration::check_event(&event, &event.pubkey, &soko, at)
        .unwrap_or_else(|r| panic!("{page}: registration event refused: {r}"));
    let claim = soko::agents::registration::claim(&event)
        .unwrap_or_else(|r| panic!("{page}: registration event refused: {r}"));
    assert!(claim.code.is_some(), "{page}: the invite tag holds a code");
}

/// A public book example is a real signed NIP-69 event that soko's reader accepts, and it is
/// exactly what soko's builder writes for the entry it holds: same kind, tags and content.
fn check_book_event(page: &str, value: &Value) {
    use soko::exchange::book;
    let event: nostr_sdk::Event = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{page}: not an event ({e}): {value}"));
    event
        .verify()
        .unwrap_or_else(|e| panic!("{page}: book event does not verify ({e})"));
    assert_eq!(serde_json::to_value(&event).unwrap(), *value, "{page}");
    let entry = book::parse(&event).unwrap_or_else(|e| panic!("{page}: book event refused: {e}"));
    let mut rebuilt = book::event(&entry)
        .unwrap_or_else(|e| panic!("{page}: entry refused: {e}"))
        .custom_created_at(event.created_at)
        .build(event.pubkey);
    assert_eq!(rebuilt.kind, event.kind, "{page}");
    assert_eq!(rebuilt.content, event.content, "{page}");
    assert_eq!(rebuilt.tags, event.tags, "{page}: the tags soko writes");
    // Signed by the example's key, as soko's bot key signs the real ones: the id matches.
    assert_eq!(rebuilt.id(), event.id, "{page}");
}

/// A session command's result is one of the session result types, exactly (they deny
/// unknown fields).
fn check_session_result(page: &str, result: &Value) {
    use soko::proto::sessions::{CloseSessionResult, OpenSessionResult, SessionStatusResult};
    let parses = serde_json::from_value::<OpenSessionResult>(result.clone()).is_ok()
        || serde_json::from_value::<SessionStatusResult>(result.clone()).is_ok()
        || serde_json::from_value::<CloseSessionResult>(result.clone()).is_ok();
    assert!(parses, "{page}: not a session result: {result}");
}

/// A reputation example parses as its wire type, exactly (they deny unknown fields).
fn check_reputation_example(page: &str, info: &str, value: &Value) {
    use soko::proto::reputation::{BlindedRep, RepKeyset, RepSignature, RepToken};
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(page: &str, value: &Value) {
        let parsed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            panic!(
                "{page}: not a {} ({e}): {value}",
                std::any::type_name::<T>()
            )
        });
        assert_eq!(&serde_json::to_value(&parsed).unwrap(), value, "{page}");
    }
    match info {
        "rep-keyset" => round_trip::<RepKeyset>(page, value),
        "rep-outputs" => round_trip::<Vec<BlindedRep>>(page, value),
        "rep-signatures" => round_trip::<Vec<RepSignature>>(page, value),
        "rep-stake" => round_trip::<Vec<RepToken>>(page, value),
        other => panic!("{page}: unknown example type `json {other}`"),
    }
}

/// reputation.md's examples are real: made with the key of the all-zero seed, the
/// signatures are that key's answers to the outputs (with proofs that verify) and the
/// staked tokens verify under it.
#[test]
fn reputation_examples_are_signed_by_the_key_they_name() {
    use soko::exchange::reputation::{client, Reputation};
    use soko::proto::reputation::{BlindedRep, RepKeyset, RepSignature, RepToken};
    let found: Vec<(String, String)> = examples()
        .into_iter()
        .filter(|(page, _, _)| page == "reputation.md")
        .map(|(_, info, json)| (info, json))
        .collect();
    let one = |info: &str| {
        let mut of_kind = found.iter().filter(|(i, _)| i == info);
        let (_, json) = of_kind
            .next()
            .unwrap_or_else(|| panic!("reputation.md has a {info} example"));
        assert!(of_kind.next().is_none(), "one {info} example");
        json.clone()
    };
    let keyset: RepKeyset = serde_json::from_str(&one("rep-keyset")).unwrap();
    let outputs: Vec<BlindedRep> = serde_json::from_str(&one("rep-outputs")).unwrap();
    let signatures: Vec<RepSignature> = serde_json::from_str(&one("rep-signatures")).unwrap();
    let stake: Vec<RepToken> = serde_json::from_str(&one("rep-stake")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let rep = Reputation::open(&store, &[0; 64]).unwrap();
    assert_eq!(rep.keyset(), keyset);
    assert_eq!(rep.sign(&outputs).unwrap(), signatures);
    for (output, signature) in outputs.iter().zip(&signatures) {
        client::check_signature(output, signature, &keyset).unwrap();
    }
    assert_eq!(rep.verify(&stake).unwrap().len(), stake.len());
    assert!(!stake.is_empty());
}
