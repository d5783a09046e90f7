//! The DM pipeline under concurrency: soko's replies reach its own relay in-process (not
//! through the bot's websocket) and every other relay through its client, are kept by its
//! relay across a restart, copies of one DM arriving at once on many connections and
//! relays are answered once, and the bot hears its own relay in-process (not through its
//! websocket either).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use nostr_sdk::prelude::*;

/// Events with these ids that `relay` holds, asked by a fresh client.
async fn held(relay: &RelayUrl, ids: &[EventId]) -> HashSet<EventId> {
    let reader = connect_client(Keys::generate(), std::slice::from_ref(relay)).await;
    let events = reader
        .fetch_events(
            Filter::new().ids(ids.iter().copied()),
            Duration::from_secs(5),
        )
        .await
        .expect("fetch");
    reader.shutdown().await;
    events.into_iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_an_external_relay_and_stay_on_sokos_own_across_a_restart() {
    let (_external, external_url) = extra_relay().await;
    let url = external_url.clone();
    let mut soko = TestSoko::start_with(|c| c.relays.urls = vec![url]).await;

    // Alice knows only the external relay: soko's replies must be sent there too.
    let mut alice = User::connect(std::slice::from_ref(&external_url)).await;
    let by_nip04 = alice
        .ask_nip04(soko.bot(), r#"{"id":"a1","cmd":"ping"}"#)
        .await;
    let by_nip17 = alice
        .ask_nip17(soko.bot(), r#"{"id":"a2","cmd":"ping"}"#)
        .await;
    assert_eq!(
        (by_nip04.nip17, by_nip04.json()["re"].as_str()),
        (false, Some("a1"))
    );
    assert_eq!(
        (by_nip17.nip17, by_nip17.json()["re"].as_str()),
        (true, Some("a2"))
    );
    assert_eq!(by_nip04.json()["ok"], true, "{}", by_nip04.content);

    let replies = [by_nip04.event_id, by_nip17.event_id];
    let own = soko.relay_url();
    assert_eq!(
        held(&own, &replies).await.len(),
        2,
        "soko's relay keeps its replies"
    );
    // Each reply leaves the outbox once a relay has taken it (soko's own: once on disk).
    let outbox = soko
        .daemon()
        .store()
        .db()
        .open_tree(soko::store::trees::OUTBOX)
        .expect("outbox tree");
    eventually(|| {
        let outbox = outbox.clone();
        async move { outbox.is_empty() }
    })
    .await;
    // A tree keeps its Db, and the Db's lock, open.
    drop(outbox);
    soko.restart().await;
    assert_eq!(
        held(&soko.relay_url(), &replies).await.len(),
        2,
        "and still has them after a restart"
    );
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_dm_sent_at_once_on_many_connections_and_relays_are_answered_once() {
    let (_external, external_url) = extra_relay().await;
    let url = external_url.clone();
    let mut soko = TestSoko::start_with(|c| c.relays.urls = vec![url]).await;
    let relays = [soko.relay_url(), external_url];
    let mut alice = User::connect(&relays[..1]).await;

    // No request id: were either copy handled twice, the second run would be a second,
    // distinct reply (a fresh gift wrap, or a new kind 4), not a replayed one.
    let dm = alice.nip04(soko.bot(), r#"{"cmd":"ping"}"#);
    let wrap = alice.nip17(soko.bot(), r#"{"cmd":"ping"}"#).await;

    let mut senders = Vec::new();
    for _ in 0..10 {
        senders.push(connect_client(Keys::generate(), &relays).await);
    }
    let mut sending = tokio::task::JoinSet::new();
    for sender in &senders {
        for event in [dm.clone(), wrap.clone()] {
            let sender = sender.clone();
            sending.spawn(async move { sender.send_event(&event).await });
        }
    }
    while let Some(sent) = sending.join_next().await {
        let out = sent.expect("task").expect("send");
        assert!(!out.success.is_empty(), "a relay took it: {:?}", out.failed);
    }

    let replies = alice.all_dms(QUIET_PERIOD * 2).await;
    let distinct: HashMap<EventId, bool> = replies.iter().map(|r| (r.event_id, r.nip17)).collect();
    let mut schemes: Vec<bool> = distinct.values().copied().collect();
    schemes.sort_unstable();
    assert_eq!(
        schemes,
        vec![false, true],
        "one answer in each scheme, each once: {replies:?}"
    );
    assert!(
        replies.iter().all(|r| r.json()["ok"] == true),
        "pongs: {replies:?}"
    );
    for sender in senders {
        sender.shutdown().await;
    }
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_pinging_all_at_once_get_every_answer_once_in_its_scheme() {
    const SENDERS: usize = 12;
    const PINGS: usize = 6;
    let mut soko = TestSoko::start().await;
    let bot = soko.bot();
    let relay = soko.relay_url();

    let mut users = tokio::task::JoinSet::new();
    for n in 0..SENDERS {
        let relay = relay.clone();
        users.spawn(async move {
            let mut user = User::connect(std::slice::from_ref(&relay)).await;
            // Every ping sent before any answer is read: they are handled side by side.
            for p in 0..PINGS {
                let body = format!(r#"{{"id":"u{n}-p{p}","cmd":"ping"}}"#);
                if p % 2 == 0 {
                    user.send_nip04(bot, &body).await;
                } else {
                    user.send_nip17(bot, &body).await;
                }
            }
            let mut answers: HashMap<String, Vec<bool>> = HashMap::new();
            while answers.values().map(Vec::len).sum::<usize>() < PINGS {
                let Some(reply) = user.next_dm(REPLY_TIMEOUT).await else {
                    break;
                };
                assert_eq!(reply.json()["ok"], true, "{}", reply.content);
                let re = reply.json()["re"].as_str().unwrap_or_default().to_owned();
                answers.entry(re).or_default().push(reply.nip17);
            }
            // Anything more would be a second answer to some ping.
            if let Some(extra) = user.next_dm(QUIET_PERIOD).await {
                panic!("sender {n} got one answer too many: {extra:?}");
            }
            (n, answers)
        });
    }
    while let Some(joined) = users.join_next().await {
        let (n, answers) = joined.expect("sender");
        let expected: HashMap<String, Vec<bool>> = (0..PINGS)
            .map(|p| (format!("u{n}-p{p}"), vec![p % 2 == 1]))
            .collect();
        assert_eq!(
            answers, expected,
            "sender {n}: each ping once, in its scheme"
        );
    }
    soko.stop().await;
}

/// The bot takes its own relay's events from the relay's feed, in-process: on its websocket
/// to that relay it hears only what the relay stored before it started (up to EOSE), then
/// nothing more, however many DMs come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_hears_its_own_relay_in_process() {
    let mut soko = TestSoko::start().await;
    let own = soko.relay_url();
    let mut alice = User::connect(std::slice::from_ref(&own)).await;
    let first = alice
        .ask_nip04(soko.bot(), r#"{"id":"w0","cmd":"ping"}"#)
        .await;
    assert_eq!(first.json()["ok"], true, "{}", first.content);

    let connection = soko
        .daemon()
        .relay_client()
        .relay(&own)
        .await
        .expect("the bot is connected to its own relay");
    // No long-lived subscription there, and those for what the relay stored close at its
    // EOSE (which a loaded machine may take a moment to send).
    eventually(|| {
        let connection = connection.clone();
        async move {
            let mut open = connection.subscriptions().await.len();
            for name in ["nip04", "nip17", "listings", "deletions"] {
                let id = SubscriptionId::new(format!("soko-{name}-stored"));
                open += usize::from(connection.subscription(&id).await.is_some());
            }
            open == 0
        }
    })
    .await;
    // The relay reads a CLOSE from the bot's connection in its own time: one more round
    // trip in each scheme lets it (one gift wrap came through on a loaded machine without).
    for (nip17, id) in [(false, "w1"), (true, "w2")] {
        let request = format!(r#"{{"id":"{id}","cmd":"ping"}}"#);
        let reply = if nip17 {
            alice.ask_nip17(soko.bot(), &request).await
        } else {
            alice.ask_nip04(soko.bot(), &request).await
        };
        assert_eq!(reply.json()["re"].as_str(), Some(id), "{}", reply.content);
    }
    let before = connection.stats().bytes_received();
    for n in 0..5 {
        for (nip17, id) in [(false, format!("n{n}")), (true, format!("g{n}"))] {
            let request = format!(r#"{{"id":"{id}","cmd":"ping"}}"#);
            let reply = if nip17 {
                alice.ask_nip17(soko.bot(), &request).await
            } else {
                alice.ask_nip04(soko.bot(), &request).await
            };
            assert_eq!(
                (reply.nip17, reply.json()["re"].as_str()),
                (nip17, Some(id.as_str())),
                "{}",
                reply.content
            );
        }
    }
    // Fewer bytes than one event: its id, author and signature alone are 256 hex digits.
    let heard = connection.stats().bytes_received() - before;
    assert!(
        heard < 256,
        "the relay sent the bot's connection {heard} bytes while 10 DMs came"
    );
    soko.stop().await;
}
