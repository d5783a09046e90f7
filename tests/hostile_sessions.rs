//! Hostile input to private sessions: oversized fields, and a mint that answers too much.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::sessions::{ask, code, with_auth};
use common::{TestSoko, User};
use serde_json::json;

#[tokio::test]
async fn oversized_session_fields_are_refused_unread() {
    let soko = TestSoko::start_with(with_auth).await;
    let mut user = User::connect(&[soko.relay_url()]).await;

    // The envelope's session id: 65 characters.
    let long_id = "a".repeat(65);
    let reply = ask(&soko, &mut user, Some(&long_id), "ping", json!({})).await;
    assert_eq!(code(&reply), "bad_request", "{reply}");
    assert!(
        !reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&long_id),
        "not echoed"
    );

    // A refund address past 256 bytes, a token past 2048, a deposit past 32 KiB: refused
    // before anything else looks at them.
    let address = format!("{}@example.com", "a".repeat(300));
    let reply = ask(
        &soko,
        &mut user,
        None,
        "open_session",
        json!({"bat": "authAe30=", "refund_to": address}),
    )
    .await;
    assert_eq!(code(&reply), "too_large", "{reply}");
    let reply = ask(
        &soko,
        &mut user,
        None,
        "open_session",
        json!({"bat": format!("authA{}", "A".repeat(3000))}),
    )
    .await;
    assert_eq!(code(&reply), "too_large", "{reply}");
    // The session is checked first: an unknown one is refused before the token is looked at.
    let huge_token = format!("cashuB{}", "A".repeat(33 * 1024));
    // Over NIP-04: gift-wrapped twice, such a token is past the relay's 64 KiB event limit.
    let deposit = |session: &str| {
        json!({"cmd": "session_deposit", "session": session, "args": {"token": huge_token}})
            .to_string()
    };
    let reply = user
        .ask_nip04(soko.bot(), &deposit(&"0".repeat(64)))
        .await
        .json();
    assert_eq!(code(&reply), "session_unknown", "{reply}");
    // In a live session, the token's size is.
    let mut trader = User::connect(&[soko.relay_url()]).await;
    common::sessions::register_trader(&soko, &mut trader).await;
    let bat = common::sessions::embedded_bats(&soko, &trader.keys, 1)
        .await
        .remove(0);
    let id = common::sessions::open(&soko, &mut user, &bat).await;
    let reply = user.ask_nip04(soko.bot(), &deposit(&id)).await.json();
    assert_eq!(code(&reply), "too_large", "{reply}");
}

#[tokio::test]
async fn a_mint_that_answers_too_much_cannot_hold_a_session_open() {
    // An "external mint" whose /v1/info is 1 MiB: soko reads at most 256 KiB of an answer,
    // refuses the open as mint_unavailable (nothing spent), and goes on serving.
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(1024 * 1024));
    let app = axum::Router::new().route(
        "/v1/info",
        get(move || {
            let body = huge.clone();
            async move { body }
        }),
    );
    let _server = tokio::spawn(async move { axum::serve(listener, app).await });
    let soko = TestSoko::start_with(|config| {
        config.mint = soko::config::MintConfig::External {
            url: url.clone(),
            requests_per_minute: 6000,
        };
    })
    .await;
    let mut user = User::connect(&[soko.relay_url()]).await;
    let (_foreign, _dir, bat) = common::sessions::foreign_bat(&user.keys).await;
    let reply = common::sessions::try_open(&soko, &mut user, &bat).await;
    assert_eq!(code(&reply), "mint_unavailable", "{reply}");
    let pong = ask(&soko, &mut user, None, "ping", json!({})).await;
    assert_eq!(pong["ok"], true, "{pong}");
}
