//! Issue 13, rate tiers: every command is counted per sender (for NIP-17 the rumor's author,
//! not the wrap's one-time key) against its tier's budget per window; over it, the command is
//! refused with `rate_limited` and `retry_after`, and not remembered under its request id.
//!
//! The anonymous and session tests run at the default numbers (100 and 1000 per 15
//! minutes); the admin and bridge test at lowered limits: 5000 pipelined round trips
//! overrun the test client's notification channel.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::sessions::{embedded_bats, open, register_trader, with_auth};
use common::{TestSoko, User, REPLY_TIMEOUT};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

/// Sends one ping per id (NIP-17 when `nip17`), all before reading any reply; the replies
/// by request id.
async fn pings(
    user: &mut User,
    bot: PublicKey,
    ids: &[String],
    nip17: bool,
) -> HashMap<String, Value> {
    pings_in(user, bot, ids, nip17, None).await
}

/// [`pings`] in `session`, when given.
async fn pings_in(
    user: &mut User,
    bot: PublicKey,
    ids: &[String],
    nip17: bool,
    session: Option<&str>,
) -> HashMap<String, Value> {
    for id in ids {
        let mut request = json!({"id": id, "cmd": "ping"});
        if let Some(session) = session {
            request["session"] = json!(session);
        }
        let request = request.to_string();
        if nip17 {
            user.send_nip17(bot, &request).await;
        } else {
            user.send_nip04(bot, &request).await;
        }
    }
    let mut replies = HashMap::new();
    while replies.len() < ids.len() {
        let Some(dm) = user.next_dm(REPLY_TIMEOUT).await else {
            panic!("{} of {} replies came", replies.len(), ids.len());
        };
        let reply = dm.json();
        replies.insert(reply["re"].as_str().unwrap().to_owned(), reply);
    }
    replies
}

/// One ping and its reply.
async fn ping(user: &mut User, bot: PublicKey, id: &str, session: Option<&str>) -> Value {
    let mut request = json!({"id": id, "cmd": "ping"});
    if let Some(session) = session {
        request["session"] = json!(session);
    }
    user.ask_nip17(bot, &request.to_string()).await.json()
}

fn ids(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}

/// The `retry_after` of a `rate_limited` refusal, checked against its message.
fn retry_after(reply: &Value) -> u64 {
    assert_eq!(reply["ok"], json!(false), "{reply}");
    assert_eq!(reply["error"]["code"], json!("rate_limited"), "{reply}");
    let seconds = reply["error"]["retry_after"].as_u64().expect("retry_after");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("try again in {seconds} s")),
        "{message}"
    );
    seconds
}

fn served(reply: &Value) -> bool {
    reply["ok"] == json!(true) && reply["result"]["pong"] == json!(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_101st_anonymous_command_in_a_window_is_refused_until_the_window_passes() {
    let soko = TestSoko::start().await;
    let bot = soko.bot();
    let mut alice = User::connect(&[soko.relay_url()]).await;

    // 100 commands, 60 as NIP-04 and 40 gift-wrapped (each wrap signed by a fresh key: the
    // limit must count alice, the rumor's author).
    let first = pings(&mut alice, bot, &ids("a", 0..60), false).await;
    let wrapped = pings(&mut alice, bot, &ids("a", 60..100), true).await;
    for (id, reply) in first.iter().chain(&wrapped) {
        assert!(served(reply), "{id}: {reply}");
    }

    let refused = ping(&mut alice, bot, "over", None).await;
    assert_eq!(refused["re"], json!("over"));
    let wait = retry_after(&refused);
    assert!((1..=900).contains(&wait), "{wait}");
    // Over NIP-04 too, and for a request without an id.
    let plain = alice.ask_nip04(bot, r#"{"cmd":"ping"}"#).await.json();
    retry_after(&plain);
    // Someone else is not affected.
    let mut bob = User::connect(&[soko.relay_url()]).await;
    assert!(served(&ping(&mut bob, bot, "b0", None).await));

    // The refusal was not remembered under "over": once the window has passed, the same
    // request id runs.
    soko.advance(wait);
    let again = ping(&mut alice, bot, "over", None).await;
    assert!(served(&again), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_and_bridges_have_the_admin_budget() {
    let bridge = Keys::generate();
    let soko = TestSoko::start_with(|config| {
        config.limits.anonymous = 3;
        config.limits.session = 5;
        config.limits.admin = 8;
        config.ussd.bridges = vec![bridge.public_key()];
    })
    .await;
    let bot = soko.bot();
    let operator_keys = soko::identity::operator_keys(&soko.data_dir()).unwrap();
    let mut operator = User::with_keys(operator_keys, &[soko.relay_url()]).await;
    let mut bridge = User::with_keys(bridge, &[soko.relay_url()]).await;
    let mut alice = User::connect(&[soko.relay_url()]).await;

    for (who, user) in [("operator", &mut operator), ("bridge", &mut bridge)] {
        let replies = pings(user, bot, &ids(who, 0..8), false).await;
        assert!(replies.values().all(served), "{who}: {replies:?}");
        let refused = ping(user, bot, &format!("{who}-over"), None).await;
        let message = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("at most 8 per 900 s in the admin tier"),
            "{refused}"
        );
        retry_after(&refused);
    }
    let replies = pings(&mut alice, bot, &ids("a", 0..3), false).await;
    assert!(replies.values().all(served), "{replies:?}");
    // Naming a session changes nothing while no session is live.
    let refused = ping(&mut alice, bot, "a-over", Some("s1")).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("anonymous tier"),
        "{refused}"
    );
    retry_after(&refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_has_the_session_budget_and_only_for_its_key() {
    // The command limits at their defaults; the relay's write budgets out of the way (1000
    // commands in a minute from one connection is past them, as it should be).
    let soko = TestSoko::start_with(|config| {
        with_auth(config);
        config.relay.connection_write_per_minute = 100_000;
        config.relay.write_budget_per_minute = 100_000;
    })
    .await;
    let bot = soko.bot();
    let mut trader = User::connect(&[soko.relay_url()]).await;
    register_trader(&soko, &mut trader).await;
    let bat = embedded_bats(&soko, &trader.keys, 1).await.remove(0);
    // Opening the session is carol's first anonymous command.
    let mut carol = User::connect(&[soko.relay_url()]).await;
    let id = open(&soko, &mut carol, &bat).await;

    let in_session = pings_in(&mut carol, bot, &ids("s", 0..1000), true, Some(&id)).await;
    for (n, reply) in &in_session {
        assert!(served(reply), "{n}: {reply}");
    }
    let refused = ping(&mut carol, bot, "s-over", Some(&id)).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 1000 per 900 s in the session tier"),
        "{refused}"
    );
    retry_after(&refused);
    // Outside the session carol has her anonymous budget, less the open.
    let outside = pings(&mut carol, bot, &ids("c", 0..99), true).await;
    assert!(outside.values().all(served));
    retry_after(&ping(&mut carol, bot, "c-over", None).await);
    // Dave naming carol's session is anonymous (and learns nothing about it).
    let mut dave = User::connect(&[soko.relay_url()]).await;
    let theirs = pings_in(&mut dave, bot, &ids("d", 0..100), true, Some(&id)).await;
    assert!(theirs
        .values()
        .all(|reply| reply["error"]["code"] == "session_unknown"));
    retry_after(&ping(&mut dave, bot, "d-over", Some(&id)).await);

    // A new window; the session has still 45 minutes to run.
    soko.advance(900);
    assert!(served(&ping(&mut carol, bot, "s-over", Some(&id)).await));
}
