//! Issue 13, operations: every log line of one request carries its correlation id (the
//! request id when the command has one, else the id its reply answers), also the lines
//! logged deep inside the escrow and cdk's wallet. (Its own test binary: the log capture is
//! process-global.)
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{code_in, mango_order, mango_shop, Capture, TestSoko, User, REPLY_TIMEOUT};
use serde_json::json;
use soko::config::LogConfig;

/// The text without its terminal colours (`ESC [ … m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The log lines of the request span with correlation id `id`, and every line that
/// mentions `needle`.
fn lines<'a>(text: &'a str, id: &str, needle: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let tag = format!("id=\"{id}\"");
    (
        text.lines().filter(|l| l.contains(&tag)).collect(),
        text.lines().filter(|l| l.contains(needle)).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_request_carries_its_id() {
    let capture = Capture::default();
    let level = LogConfig {
        level: "debug".into(),
        json: false,
    };
    soko::logging::init_with_writer(&level, capture.clone()).unwrap();

    let soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;

    // An order (NIP-15 to the merchant, no request id): known by its event id.
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let order = buyer.send_nip04(shop.merchant, &mango_order("o1", 2)).await;
    let request = buyer.next_dm(REPLY_TIMEOUT).await.expect("type 1").json();
    assert_eq!(request["type"], 1, "{request}");
    let paid = buyer.next_dm(REPLY_TIMEOUT).await.expect("paid").json();
    assert_eq!(paid["paid"], true, "{paid}");
    let code = code_in(&buyer.next_dm(REPLY_TIMEOUT).await.expect("code")).unwrap();

    // A command with a request id, over NIP-17 from the operator: the escrow releases.
    let operator_keys = soko::identity::operator_keys(&soko.data_dir()).unwrap();
    let mut operator = User::with_keys(operator_keys, &[soko.relay_url()]).await;
    let deliver = json!({"id": "corr-deliver", "cmd": "order_deliver",
                         "args": {"merchant": shop.npub, "order": 1, "code": code}});
    operator.send_nip17(soko.bot(), &deliver.to_string()).await;
    // The relay still holds the replies to the shop's set-up, sent to the same key.
    let delivered = loop {
        let reply = operator
            .next_dm(REPLY_TIMEOUT)
            .await
            .expect("a reply")
            .json();
        if reply["re"] == json!("corr-deliver") {
            break reply;
        }
    };
    assert_eq!(delivered["ok"], json!(true), "{delivered}");

    let text = plain(&capture.text());
    let order_id = order.id.to_hex();
    let (of_order, placed) = lines(&text, &order_id, "order placed");
    assert_eq!(placed.len(), 1, "{text}");
    assert!(
        placed[0].contains(&format!("id=\"{order_id}\"")),
        "{}",
        placed[0]
    );
    // cdk's wallet asked the mint for the invoice inside the same request: what is logged
    // inside its `mint_quote` span (its storage, in soko's sled) is the request's too.
    assert!(
        of_order.iter().any(|l| l.contains("}:mint_quote{")),
        "no cdk line carries the order's id:\n{}",
        of_order.join("\n")
    );
    let (of_command, released) = lines(&text, "corr-deliver", "escrow released");
    assert_eq!(released.len(), 1, "{text}");
    assert!(
        released[0].contains("id=\"corr-deliver\""),
        "{}",
        released[0]
    );
    assert!(
        of_command.iter().any(|l| l.contains("soko::escrow")),
        "{}",
        of_command.join("\n")
    );
    // The span also names the event, so the lines before the id was known are found too.
    assert!(of_order
        .iter()
        .all(|l| l.contains(&format!("event={order_id}"))));
}
