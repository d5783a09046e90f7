//! The real USSD bridge (`soko::bridge`) driven the way a gateway drives it: Africa's
//! Talking callbacks over HTTP.

use axum::http::StatusCode;
use soko::bridge::BridgeHandle;
use soko::proto::ussd::SCREEN_LIMIT;

/// The phone the gateway dials from.
pub const PHONE: &str = "+254711000111";
/// The USSD service code.
pub const SERVICE: &str = "*384*7#";

/// POSTs a form to the bridge as the gateway does, with extra `headers`; returns status and
/// body.
pub async fn post_form(
    url: &str,
    headers: &[(&str, &str)],
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().post(url).form(fields);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the bridge answers HTTP");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
    (status, response.text().await.expect("a body"))
}

/// One Africa's Talking callback from [`PHONE`] to `url`, as `curl -d` sends it.
pub async fn dial_as(
    url: &str,
    headers: &[(&str, &str)],
    session: &str,
    text: &str,
) -> (StatusCode, String) {
    post_form(
        url,
        headers,
        &[
            ("sessionId", session),
            ("serviceCode", SERVICE),
            ("phoneNumber", PHONE),
            ("networkCode", "63902"),
            ("text", text),
        ],
    )
    .await
}

/// One callback to `url` with no extra headers.
pub async fn dial_url(url: &str, session: &str, text: &str) -> (StatusCode, String) {
    dial_as(url, &[], session, text).await
}

/// One callback to `bridge`.
pub async fn dial(bridge: &BridgeHandle, session: &str, text: &str) -> (StatusCode, String) {
    dial_url(&bridge.url(), session, text).await
}

/// Dials the same session hop after hop, each answered with a screen that fits the
/// handset; returns the last body.
pub async fn walk(bridge: &BridgeHandle, session: &str, texts: &[&str]) -> String {
    let mut last = String::new();
    for text in texts {
        let (status, body) = dial(bridge, session, text).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.starts_with("CON ") || body.starts_with("END "),
            "{body}"
        );
        assert!(body.chars().count() <= SCREEN_LIMIT, "{body}");
        last = body;
    }
    last
}
