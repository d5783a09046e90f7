//! The foundation end to end: embedded relay, bot, DMs in both schemes, dedupe, restarts,
//! and every kind of bad input. Real relays, real clients, real sled on temp dirs.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use nostr_sdk::prelude::*;

fn assert_pong(reply: &Received, re: &str) {
    let json = reply.json();
    assert_eq!(json["v"], 1);
    assert_eq!(json["re"], re);
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["result"]["pong"], true);
    assert!(json["result"]["time"].as_u64().unwrap() > 1_700_000_000);
}

fn error_code(reply: &Received) -> String {
    let json = reply.json();
    assert_eq!(json["ok"], false, "{json}");
    json["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_over_nip04_is_answered_over_nip04() {
    let mut soko = TestSoko::start().await;
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let reply = alice
        .ask_nip04(soko.bot(), r#"{"id":"n4","cmd":"ping"}"#)
        .await;
    assert!(!reply.nip17, "NIP-04 in, NIP-04 out");
    assert_eq!(reply.from, soko.bot());
    assert_pong(&reply, "n4");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_over_nip17_is_answered_over_nip17() {
    let mut soko = TestSoko::start().await;
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let reply = alice.ask_nip17(soko.bot(), r#"{"cmd":"ping"}"#).await;
    assert!(reply.nip17, "gift wrap in, gift wrap out");
    assert_eq!(reply.from, soko.bot());
    let json = reply.json();
    assert_eq!(json["ok"], true);
    // Without a request id, `re` is the id of the rumor that carried the request.
    assert_eq!(json["re"].as_str().unwrap().len(), 64);
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_dm_from_two_relays_is_answered_once_even_after_restart() {
    let (_second, second_url) = extra_relay().await;
    let url = second_url.clone();
    let mut soko = TestSoko::start_with(|c| c.relays.urls = vec![url]).await;
    let mut alice = User::connect(&[soko.relay_url(), second_url.clone()]).await;

    // No request id: a second run of the command would be a new, distinct reply event.
    let dm = alice.nip04(soko.bot(), r#"{"cmd":"ping"}"#);
    let out = alice.publish(&dm).await;
    assert_eq!(
        out.success.len(),
        2,
        "both relays took the DM: {:?}",
        out.failed
    );
    let replies = alice.all_dms(QUIET_PERIOD * 2).await;
    let answered: std::collections::HashSet<EventId> = replies.iter().map(|r| r.event_id).collect();
    assert_eq!(answered.len(), 1, "answered exactly once: {replies:?}");

    soko.restart().await;
    let mut alice = User::with_keys(alice.keys.clone(), &[soko.relay_url(), second_url]).await;
    // The restarted bot resubscribes and receives the old DM again from both relays; the
    // persistent dedupe knows it. Alice only gets the stored copies of the first reply.
    let after = alice.all_dms(QUIET_PERIOD * 2).await;
    assert!(!after.is_empty(), "the relays still hold the first reply");
    assert!(
        after.iter().all(|r| answered.contains(&r.event_id)),
        "no new answer after restart: {after:?}"
    );
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_id_gets_the_first_reply() {
    let mut soko = TestSoko::start().await;
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let first = alice
        .ask_nip04(soko.bot(), r#"{"id":"r1","cmd":"ping"}"#)
        .await;
    // A fresh answer would tell another `time`.
    soko.advance(60);
    // A new event (new id) with the same request id: same answer, same `time`.
    let second = alice
        .ask_nip17(soko.bot(), r#"{"id":"r1","cmd":"ping"}"#)
        .await;
    assert_eq!(first.content, second.content);
    assert!(
        second.nip17,
        "the replay still answers in the scheme it came in"
    );
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_bot_key_and_the_relay_events() {
    let mut soko = TestSoko::start().await;
    let bot = soko.bot();
    let merchant = User::connect(&[soko.relay_url()]).await;
    let stall = EventBuilder::new(
        Kind::SetStall,
        r#"{"id":"s1","name":"Duka","currency":"sat","shipping":[]}"#,
    )
    .tag(Tag::identifier("s1"))
    .sign_with_keys(&merchant.keys)
    .unwrap();
    assert!(!merchant.publish(&stall).await.success.is_empty());

    soko.restart().await;
    assert_eq!(soko.bot(), bot, "same identity after restart");
    let reader = User::connect(&[soko.relay_url()]).await;
    let events = reader
        .client
        .fetch_events(Filter::new().kind(Kind::SetStall), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.id == stall.id),
        "stall survived the restart"
    );
    let profile = reader
        .client
        .fetch_events(
            Filter::new().kind(Kind::Metadata).author(bot),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        profile.len(),
        1,
        "the bot's profile is published (and replaced, not duplicated)"
    );
    let dm_relays = reader
        .client
        .fetch_events(
            Filter::new().kind(Kind::InboxRelays).author(bot),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(dm_relays.first().is_some_and(|e| e.content.is_empty()));
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_answers_and_soko_keeps_serving() {
    let mut soko = TestSoko::start_with(|c| c.relay.max_event_bytes = 4_096).await;
    let bot = soko.bot();
    let mut alice = User::connect(&[soko.relay_url()]).await;

    let reply = alice.ask_nip04(bot, "this is not json").await;
    assert_eq!(error_code(&reply), "bad_json");
    let reply = alice.ask_nip17(bot, r#"{"id":"u1","cmd":"fly"}"#).await;
    assert_eq!(error_code(&reply), "unknown_command");
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ping"));
    let reply = alice
        .ask_nip04(bot, r#"{"cmd":"ping","args":{"loud":true}}"#)
        .await;
    assert_eq!(error_code(&reply), "bad_request");
    let reply = alice.ask_nip04(bot, r#"{"v":9,"cmd":"ping"}"#).await;
    assert_eq!(error_code(&reply), "unsupported_version");

    // Tagged to the bot but encrypted for someone else.
    let carol = Keys::generate();
    let ciphertext = nip04::encrypt(alice.keys.secret_key(), &carol.public_key(), "hi").unwrap();
    let misdirected = EventBuilder::new(Kind::EncryptedDirectMessage, ciphertext)
        .tag(Tag::public_key(bot))
        .sign_with_keys(&alice.keys)
        .unwrap();
    alice.publish(&misdirected).await;
    let reply = alice.next_dm(REPLY_TIMEOUT).await.expect("reply");
    assert_eq!(error_code(&reply), "decrypt_failed");

    // Oversize: the relay refuses it with a reason.
    let big = alice.nip04(
        bot,
        &format!(r#"{{"cmd":"ping","pad":"{}"}}"#, "x".repeat(5_000)),
    );
    let out = alice.publish(&big).await;
    assert!(out.success.is_empty());
    let reason = out.failed.values().next().unwrap();
    assert!(reason.contains("too large"), "{reason}");

    // A kind the relay does not take.
    let note = EventBuilder::text_note("hello")
        .sign_with_keys(&alice.keys)
        .unwrap();
    let out = alice.publish(&note).await;
    assert!(out.failed.values().next().unwrap().contains("kind 1"));

    // A bad signature: the relay refuses it, and the bot never sees it.
    let genuine = alice.nip04(bot, r#"{"cmd":"ping"}"#);
    let other = alice.nip04(bot, r#"{"cmd":"ping"}"#);
    let mut forged_json: serde_json::Value = serde_json::from_str(&genuine.as_json()).unwrap();
    forged_json["sig"] = serde_json::Value::String(other.sig.to_string());
    let forged = Event::from_json(forged_json.to_string()).unwrap();
    let out = alice.publish(&forged).await;
    assert!(out.success.is_empty());
    assert!(out.failed.values().next().unwrap().contains("signature"));

    // A DM between two other people gets no answer from soko.
    let bob = User::connect(&[soko.relay_url()]).await;
    alice.send_nip04(bob.pubkey(), r#"{"cmd":"ping"}"#).await;
    assert!(
        alice.all_dms(QUIET_PERIOD).await.is_empty(),
        "nothing answered the forged or foreign DMs"
    );

    // Still serving.
    let reply = alice.ask_nip17(bot, r#"{"id":"alive","cmd":"ping"}"#).await;
    assert_pong(&reply, "alive");
    soko.stop().await;
}

/// A flush costs sled far more than its fsync, so an answer that tells nothing soko stores
/// (a pong, a refusal of the request itself) does not wait for one; an answer that reads or
/// changes state still does, one request after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_and_junk_refusals_do_not_wait_for_the_disk_and_stateful_answers_do() {
    let mut soko = TestSoko::start().await;
    let bot = soko.bot();
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let flushes = |soko: &TestSoko| soko.daemon().store().sync_flushes();
    assert_pong(
        &alice.ask_nip04(bot, r#"{"id":"warm","cmd":"ping"}"#).await,
        "warm",
    );

    let before = flushes(&soko);
    for i in 0..10 {
        let re = format!("p{i}");
        let reply = alice
            .ask_nip04(bot, &format!(r#"{{"id":"{re}","cmd":"ping"}}"#))
            .await;
        assert_pong(&reply, &re);
        let reply = alice
            .ask_nip17(bot, &format!(r#"{{"id":"j{i}","cmd":"fly"}}"#))
            .await;
        assert_eq!(error_code(&reply), "unknown_command");
        let reply = alice.ask_nip04(bot, "not json").await;
        assert_eq!(error_code(&reply), "bad_json");
    }
    let stateless = flushes(&soko) - before;

    let before = flushes(&soko);
    for i in 0..10 {
        let reply = alice
            .ask_nip04(bot, &format!(r#"{{"id":"w{i}","cmd":"whoami"}}"#))
            .await;
        assert_eq!(reply.json()["ok"], true, "{}", reply.json());
    }
    let stateful = flushes(&soko) - before;

    // Each whoami waits for a flush that began after its reply was committed, and the next
    // is asked only once that one is answered.
    assert!(stateful >= 10, "{stateful} flushes for 10 whoami");
    // Only soko's own background work may flush meanwhile (the outbox's retry pass).
    assert!(
        stateless < 10,
        "{stateless} flushes for 30 pongs and refusals"
    );
    // A replayed reply reads the store: it waits again.
    let before = flushes(&soko);
    let reply = alice.ask_nip04(bot, r#"{"id":"w0","cmd":"whoami"}"#).await;
    assert_eq!(reply.json()["ok"], true);
    assert!(flushes(&soko) > before, "a replay waits for the disk");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_copy_arriving_first_does_not_censor_the_genuine_dm() {
    use soko::bot::{Handler, Outcome};
    use soko::outbound::{Keyring, Outbox};
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let bot = Keys::generate();
    let keyring = Keyring::new(bot.clone(), Default::default());
    let outbox = Outbox::open(&store, Client::default()).unwrap();
    let vault = soko::vault::Vault::from_root([0; 32]).unwrap();
    let merchants = soko::market::Merchants::open(&store, vault.clone()).unwrap();
    let publisher = soko::outbound::Publisher::new(keyring.clone(), outbox.clone());
    // Never contacted: this test only sends a ping.
    let wallet = soko::wallet::open(&store, "t", "http://127.0.0.1:9", &[0; 64]).unwrap();
    let escrow = soko::escrow::EscrowService::open(
        &store,
        wallet,
        merchants.clone(),
        publisher.clone(),
        &vault,
        soko::escrow::Rules::default(),
        std::sync::Arc::new(soko::escrow::NoNotices),
    )
    .unwrap();
    let agents = soko::agents::Agents::open(
        &store,
        &vault,
        Default::default(),
        bot.public_key(),
        soko::clock::Clock::system(),
    )
    .unwrap();
    let desk = agents.desk(merchants.clone(), publisher.clone(), Default::default());
    let inbox = soko::inbox::MerchantInbox::new(escrow.clone(), merchants.clone());
    let sessions = soko::sessions::Sessions::open(
        &store,
        soko::sessions::SessionParts {
            verifier: None,
            mint_url: "http://127.0.0.1:9".to_owned(),
            link: soko::wallet::MintLink::Http {
                requests_per_minute: None,
            },
            seed: [0; 64],
            publisher: publisher.clone(),
            bot: bot.public_key(),
            vault: vault.clone(),
            clock: soko::clock::Clock::system(),
            metrics: Default::default(),
        },
        Default::default(),
    )
    .unwrap();
    let exchange = soko::exchange::Exchange::open(
        &store,
        soko::exchange::ExchangeParts {
            purses: std::sync::Arc::new(soko::daemon::SessionPurses(sessions.clone())),
            registered: std::sync::Arc::new(soko::daemon::RegisteredUsers(
                soko::agents::Users::open(&store, Default::default()).unwrap(),
            )),
            house: soko::wallet::open(&store, "house", "http://127.0.0.1:9", &[0; 64]).unwrap(),
            publisher: publisher.clone(),
            bot: bot.public_key(),
            vault: vault.clone(),
            seed: [0; 64],
            clock: soko::clock::Clock::system(),
            metrics: Default::default(),
            admins: Vec::new(),
        },
        Default::default(),
    )
    .unwrap();
    let ussd = soko::ussd::UssdService::open(
        &store,
        &vault,
        merchants.clone(),
        escrow.clone(),
        publisher.clone(),
        desk.clone(),
        exchange.clone(),
        sessions.clone(),
        Default::default(),
    )
    .unwrap();
    let context = soko::commands::Context {
        exchange,
        admins: Default::default(),
        merchants,
        publisher,
        escrow,
        ussd,
        catalog: soko::market::Catalog::open(&store, 10).unwrap(),
        agents,
        desk,
        clock: soko::clock::Clock::system(),
        sessions,
        metrics: Default::default(),
    };
    let limits = soko::ratelimit::CommandLimits::new(
        &Default::default(),
        std::sync::Arc::new(soko::ratelimit::KeyTiers::default()),
        soko::clock::Clock::system(),
    );
    let handler = Handler::new(&store, keyring, outbox, context, inbox, limits).unwrap();

    let alice = Keys::generate();
    let ciphertext =
        nip04::encrypt(alice.secret_key(), &bot.public_key(), r#"{"cmd":"ping"}"#).unwrap();
    let genuine = EventBuilder::new(Kind::EncryptedDirectMessage, ciphertext)
        .tag(Tag::public_key(bot.public_key()))
        .sign_with_keys(&alice)
        .unwrap();
    let mut forged_json: serde_json::Value = serde_json::from_str(&genuine.as_json()).unwrap();
    let junk = EventBuilder::text_note("x").sign_with_keys(&alice).unwrap();
    forged_json["sig"] = serde_json::Value::String(junk.sig.to_string());
    let forged = Event::from_json(forged_json.to_string()).unwrap();
    assert_eq!(forged.id, genuine.id);

    assert_eq!(handler.handle(&forged).await.unwrap(), Outcome::Forged);
    assert!(matches!(
        handler.handle(&genuine).await.unwrap(),
        Outcome::Replied(_)
    ));
    assert_eq!(handler.handle(&genuine).await.unwrap(), Outcome::Duplicate);
}

#[test]
fn config_check_names_the_bad_keys_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[relay]\nport = \"x\"\nwat = 1\n[log]\nlevel = \"=\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["relay.port", "relay.wat", "log.level"] {
        assert!(stderr.contains(key), "{key} named in: {stderr}");
    }

    let good = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
        .args(["config", "check", "--config", "relay-config/soko.toml"])
        .output()
        .unwrap();
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
        .args(["run", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn keys_show_prints_the_same_npub_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let show = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
            .args(["keys", "show", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let first = show();
    assert!(first.starts_with("npub1"), "{first}");
    assert_eq!(show(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_serves_its_nip11_document_over_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut soko = TestSoko::start().await;
    let addr = soko
        .relay_url()
        .as_str()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("application/nostr+json"));
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let info: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(info["name"], "soko");
    assert!(info["supported_nips"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(17)));
    soko.stop().await;
}
