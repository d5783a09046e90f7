//! Attacks on soko's embedded relay from outside: oversized websocket frames, floods of junk
//! gift wraps from fresh keys, redelivery pushed out of the subscription window, and junk
//! written to push soko's own shops out of the bounded store.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{assert_serves, mango_shop, TestSoko, User, REPLY_TIMEOUT};
use nostr_sdk::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a raw websocket to `url` by hand, as any outsider can: no client library between
/// the attacker and the relay's limits.
async fn raw_websocket(url: &RelayUrl) -> TcpStream {
    let authority = url
        .as_str()
        .trim_start_matches("ws://")
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).await.expect("connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("response");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// One masked client text frame (mask 0, so the payload goes as is).
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_frame_closes_the_connection_unread_and_soko_keeps_serving() {
    let soko = TestSoko::start().await;
    let attacker = Keys::generate();
    // A genuine, signed event just under tungstenite's default 16 MiB frame limit: today it
    // is buffered, parsed and its signature checked before the relay's 64 KiB rule refuses it.
    let huge = EventBuilder::new(Kind::EncryptedDirectMessage, "x".repeat((16 << 20) - 4096))
        .tag(Tag::public_key(soko.bot()))
        .sign_with_keys(&attacker)
        .expect("sign");
    let message = ClientMessage::event(huge).as_json();
    let frame = text_frame(message.as_bytes());

    let stream = raw_websocket(&soko.relay_url()).await;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The relay may hang up before all of it is written: that is the point.
        let _ = write.write_all(&frame).await;
        let _ = write.flush().await;
        write
    });
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        closed.is_ok(),
        "the relay kept the connection open after a 16 MiB frame (it answered {answer:?})"
    );
    assert!(
        !answer.contains("OK"),
        "the oversized event was read and judged: {answer:?}"
    );
    drop(writer.await);

    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let reply = tokio::time::timeout(
        REPLY_TIMEOUT * 2,
        buyer.ask_nip04(soko.bot(), r#"{"v":1,"id":"p1","cmd":"ping"}"#),
    )
    .await
    .expect("soko still answers");
    assert!(reply.content.contains("\"ok\":true"), "{}", reply.content);
}

/// A junk gift wrap to `to` from a fresh key: nothing anyone can open.
fn junk_wrap(to: PublicKey, bytes: usize, at: Timestamp) -> Event {
    EventBuilder::new(Kind::GiftWrap, "j".repeat(bytes))
        .tag(Tag::public_key(to))
        .custom_created_at(at)
        .sign_with_keys(&Keys::generate())
        .expect("sign")
}

/// Publishes `events` over one connection; returns how many the relay accepted.
async fn flood(url: &RelayUrl, events: &[Event]) -> usize {
    let client = Client::default();
    client.add_relay(url.clone()).await.expect("add relay");
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    let mut accepted = 0;
    for event in events {
        if let Ok(out) = client.send_event(event).await {
            accepted += usize::from(!out.success.is_empty());
        }
    }
    client.shutdown().await;
    accepted
}

/// Gift wraps to `to` the relay holds, as any client sees them.
async fn wraps_held(url: &RelayUrl, to: PublicKey) -> usize {
    let client = Client::default();
    client.add_relay(url.clone()).await.expect("add relay");
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    let events = client
        .fetch_events(
            Filter::new().kind(Kind::GiftWrap).pubkey(to).limit(10_000),
            Duration::from_secs(10),
        )
        .await
        .expect("fetch");
    client.shutdown().await;
    events.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_wraps_to_soko_are_not_kept_once_handled() {
    let mut soko = TestSoko::start_with(|c| {
        c.relay.janitor_secs = 1;
        c.relay.handled_keep_secs = 0;
    })
    .await;
    let url = soko.relay_url();
    let junk: Vec<Event> = (0..60)
        .map(|_| junk_wrap(soko.bot(), 2_000, Timestamp::now()))
        .collect();
    assert_eq!(
        flood(&url, &junk).await,
        60,
        "the flood is within every budget"
    );
    // Handled (dropped: nothing in them opens), then removed by the next retention pass.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut held = wraps_held(&url, soko.bot()).await;
    while held > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        held = wraps_held(&url, soko.bot()).await;
    }
    assert_eq!(held, 0, "junk wraps soko has handled are still stored");
    soko.restart().await;
    assert_eq!(wraps_held(&soko.relay_url(), soko.bot()).await, 0);
    // Soko still answers, over NIP-17 too.
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let reply = buyer.ask_nip17(soko.bot(), r#"{"cmd":"ping"}"#).await;
    assert!(reply.content.contains("\"ok\":true"), "{}", reply.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_keys_do_not_escape_the_connection_and_overall_write_budgets() {
    let soko = TestSoko::start_with(|c| {
        c.relay.connection_write_per_minute = 20;
        c.relay.write_budget_per_minute = 30;
    })
    .await;
    let url = soko.relay_url();
    let to = Keys::generate().public_key();
    let wraps = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|_| junk_wrap(to, 100, Timestamp::now()))
            .collect()
    };
    // Buckets refill (one token per 3 s and per 2 s): a slow machine may see one more.
    let first = flood(&url, &wraps(40)).await;
    assert!(
        (20..=22).contains(&first),
        "one connection wrote {first} of 40 past a budget of 20"
    );
    let second = flood(&url, &wraps(40)).await;
    assert!(
        first + second <= 33,
        "writers together wrote {} past an overall budget of 30",
        first + second
    );
    // The budget refills; soko's own replies (gift wraps from fresh keys too) get through.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut buyer = User::connect(&[url]).await;
    let reply = buyer.ask_nip04(soko.bot(), r#"{"cmd":"ping"}"#).await;
    assert!(reply.content.contains("\"ok\":true"), "{}", reply.content);
    let reply = buyer.ask_nip17(soko.bot(), r#"{"cmd":"ping"}"#).await;
    assert!(reply.content.contains("\"ok\":true"), "{}", reply.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed() {
    let soko = TestSoko::start_with(|c| c.relay.max_connections = 4).await;
    let url = soko.relay_url();
    let authority = url
        .as_str()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut stream = TcpStream::connect(&authority).await.expect("connect");
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let _ = stream.write_all(request.as_bytes()).await;
        let mut head = [0u8; 12];
        match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await {
            Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 101") => open.push(stream),
            _ => refused += 1,
        }
    }
    // The bot holds one connection of the four.
    assert!(
        open.len() <= 3,
        "{} connections open past a cap of 4",
        open.len()
    );
    assert!(refused >= 5, "only {refused} of 8 refused");
    drop(open);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_serves(&soko, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_event_is_answered_after_a_flood_and_a_restart() {
    let mut soko = TestSoko::start_with(|c| {
        c.relay.connection_write_per_minute = 10_000;
        c.relay.write_budget_per_minute = 10_000;
        // Keep the flood in the relay, as an external relay would.
        c.relay.handled_keep_secs = 30 * 24 * 3600;
    })
    .await;
    let url = soko.relay_url();
    let mut buyer = User::connect(std::slice::from_ref(&url)).await;
    let asked = buyer
        .nip17(soko.bot(), r#"{"v":1,"id":"interrupted-1","cmd":"ping"}"#)
        .await;
    buyer.publish(&asked).await;
    let first = buyer.next_dm(REPLY_TIMEOUT).await.expect("first answer");
    assert!(first.content.contains("interrupted-1"), "{}", first.content);

    // More than the 500 events a relay answers a resubscription with, all newer than the
    // buyer's wrap (which NIP-59 dated up to two days back).
    let later = Timestamp::from(Timestamp::now().as_secs() + 300);
    let junk: Vec<Event> = (0..600)
        .map(|_| junk_wrap(soko.bot(), 100, later))
        .collect();
    assert_eq!(flood(&url, &junk).await, 600);
    tokio::time::sleep(Duration::from_secs(2)).await;
    soko.stop().await;

    // What a crash in the middle of handling the buyer's wrap leaves: the claim, and the
    // event kept with it.
    {
        let store = soko::store::Store::open(&soko.data_dir()).expect("store");
        let seen: soko::store::Typed<soko::bot::SeenState> =
            store.tree(soko::store::trees::SEEN).expect("seen");
        seen.insert(asked.id.as_bytes(), &soko::bot::SeenState::Processing)
            .expect("claim");
        let pending: soko::store::Typed<String> = store.tree("seen/pending").expect("pending");
        pending
            .insert(asked.id.as_bytes(), &asked.as_json())
            .expect("keep");
        store.db().flush().expect("flush");
    }
    soko.restart().await;
    let mut buyer = User::with_keys(buyer.keys.clone(), &[soko.relay_url()]).await;
    let answers = buyer.all_dms(REPLY_TIMEOUT).await;
    assert!(
        answers
            .iter()
            .any(|dm| dm.content.contains("interrupted-1") && dm.event_id != first.event_id),
        "the interrupted request was not handled again: {answers:?}"
    );
}

/// Every event the relay at `url` holds, as a plain client sees them.
async fn everything_held(url: &RelayUrl) -> Events {
    let client = Client::default();
    client.add_relay(url.clone()).await.expect("add relay");
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    let events = client
        .fetch_events(Filter::new().limit(10_000), Duration::from_secs(10))
        .await
        .expect("fetch");
    client.shutdown().await;
    events
}

/// The stall (30017) and product (30018) `merchant` has on the relay at `url`.
async fn shop_held(url: &RelayUrl, merchant: PublicKey) -> (usize, usize) {
    let held = everything_held(url).await;
    let of = |kind: Kind| {
        held.iter()
            .filter(|e| e.pubkey == merchant && e.kind == kind)
            .count()
    };
    (of(Kind::SetStall), of(Kind::SetProduct))
}

/// Mama Duka's shop (its stall and product), once it is on the relay at `url`.
async fn shop_on_relay(soko: &TestSoko, url: &RelayUrl) -> PublicKey {
    let merchant = mango_shop(soko).await.merchant;
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while shop_held(url, merchant).await != (1, 1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shop never reached the relay"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    merchant
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_past_the_store_bound_does_not_evict_sokos_own_shops() {
    const BOUND: usize = 50;
    let mut soko = TestSoko::start_with(|c| {
        c.relay.max_stored_events = BOUND;
        c.relay.connection_write_per_minute = 10_000;
        c.relay.write_budget_per_minute = 10_000;
    })
    .await;
    let url = soko.relay_url();
    let merchant = shop_on_relay(&soko, &url).await;
    let bot = soko.bot();
    let bot_events = |held: &Events| held.iter().filter(|e| e.pubkey == bot).count();
    let bot_before = bot_events(&everything_held(&url).await);

    // Junk nobody handles (addressed to no one soko knows), all newer than the shop, from a
    // fresh key each: within every budget here, as 20,000 are in 17 minutes by default.
    let nobody = Keys::generate().public_key();
    let later = Timestamp::from(Timestamp::now().as_secs() + 60);
    let junk: Vec<Event> = (0..BOUND * 3)
        .map(|_| junk_wrap(nobody, 100, later))
        .collect();
    assert_eq!(flood(&url, &junk).await, BOUND * 3);

    for round in ["after the flood", "after a restart"] {
        let url = soko.relay_url();
        assert_eq!(
            shop_held(&url, merchant).await,
            (1, 1),
            "{round}: the merchant's stall and product were evicted by junk"
        );
        let held = everything_held(&url).await;
        assert!(
            bot_events(&held) >= bot_before,
            "{round}: the bot's own events were evicted ({} of {bot_before} left)",
            bot_events(&held)
        );
        let outsiders = held
            .iter()
            .filter(|e| e.pubkey != merchant && e.pubkey != bot)
            .count();
        assert!(
            outsiders <= BOUND,
            "{round}: the relay holds {outsiders} outsider events past a bound of {BOUND}"
        );
        assert!(
            outsiders >= BOUND * 9 / 10,
            "{round}: only {outsiders} outsider events kept under a bound of {BOUND}"
        );
        soko.restart().await;
    }
}

/// What soko's relay events take on disk, wherever they are kept: their own Db
/// (`relay-events/`) and soko's main one (`sled/`, where they used to be).
fn events_on_disk(soko: &TestSoko) -> u64 {
    let dir = soko.data_dir();
    soko::util::size_on_disk(&dir.join("relay-events"))
        + soko::util::size_on_disk(&dir.join("sled"))
}

/// Floods `url` with `events` over `connections` connections at once.
async fn flood_on(url: &RelayUrl, events: Vec<Event>, connections: usize) -> usize {
    let share = events.len().div_ceil(connections);
    let mut writers = tokio::task::JoinSet::new();
    for chunk in events.chunks(share) {
        let (url, chunk) = (url.clone(), chunk.to_vec());
        writers.spawn(async move { flood(&url, &chunk).await });
    }
    let mut accepted = 0;
    while let Some(done) = writers.join_next().await {
        accepted += done.expect("writer");
    }
    accepted
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_floods_do_not_grow_the_relays_files_flood_after_flood() {
    // At most BOUND junk wraps live (about 12 MB): soko rewrites its events' Db once its
    // files pass 3 × that, 8 MiB, and 8 MiB more than its last rewrite left (a copy of
    // those 12 MB took 25 to 32 MiB), so once a flood is over and a janitor pass has run
    // they take at most about 40 MiB, plus soko's own state (under 1 MiB here) and rounding.
    // (With the 64 MiB floor of before they reached 60 MiB by the third flood.)
    // Each flood writes 72 MB; before the events had a Db of their own that compacts, the
    // files grew by about 20 MiB a flood (37, 58, 75, 102 MiB after the first four).
    const BOUND: usize = 200;
    const WRAPS: usize = 1_200;
    const ALLOWED: u64 = 40 * MIB + 8 * MIB;
    let soko = TestSoko::start_with(|c| {
        c.relay.max_stored_events = BOUND;
        c.relay.janitor_secs = 1;
        c.relay.connection_write_per_minute = 100_000;
        c.relay.write_budget_per_minute = 100_000;
    })
    .await;
    let url = soko.relay_url();
    let nobody = Keys::generate().public_key();
    let mut sizes = Vec::new();
    for round in 1..=6 {
        let junk: Vec<Event> = (0..WRAPS)
            .map(|_| junk_wrap(nobody, 60_000, Timestamp::now()))
            .collect();
        assert_eq!(flood_on(&url, junk, 4).await, WRAPS, "flood {round}");
        // A few janitor passes: the one that compacts may start late on a loaded machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut size = events_on_disk(&soko);
        while size > ALLOWED && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            size = events_on_disk(&soko);
        }
        sizes.push(size / MIB);
        assert!(
            size <= ALLOWED,
            "after flood {round} of {WRAPS} junk wraps of 60 KB the relay's events take {} MiB \
             on disk (bound {} MiB; after each flood: {sizes:?} MiB)",
            size / MIB,
            ALLOWED / MIB
        );
    }
    let held = everything_held(&url).await;
    assert!(
        held.iter().filter(|e| e.pubkey != soko.bot()).count() <= BOUND,
        "the bound still holds"
    );
    eprintln!("relay events on disk after each flood: {sizes:?} MiB");
}

/// What a compaction cut short at some step leaves on disk, made from a stopped soko's
/// complete generation `gen` under `root`.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The new generation half written, the pointer untouched.
    HalfCopied,
    /// The new generation complete and its pointer written, not yet renamed.
    PointerNotRenamed,
    /// The pointer renamed to the new generation, the old one not yet removed.
    OldNotRemoved,
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Leaves `cut` on disk; returns the generation the next start must use.
fn leave(root: &std::path::Path, gen: u64, cut: Cut) -> u64 {
    let (old, new) = (
        root.join(format!("gen-{gen}")),
        root.join(format!("gen-{}", gen + 1)),
    );
    match cut {
        Cut::HalfCopied => {
            copy_dir(&old, &new);
            // Every file cut to half, as a copy stopped midway would leave it.
            fn halve(dir: &std::path::Path) {
                for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        halve(&path);
                    } else {
                        let len = std::fs::metadata(&path).expect("meta").len();
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(len / 2))
                            .expect("truncate");
                    }
                }
            }
            halve(&new);
            gen
        }
        Cut::PointerNotRenamed => {
            copy_dir(&old, &new);
            std::fs::write(root.join("CURRENT.tmp"), format!("{}\n", gen + 1)).expect("tmp");
            gen
        }
        Cut::OldNotRemoved => {
            copy_dir(&old, &new);
            std::fs::write(root.join("CURRENT"), format!("{}\n", gen + 1)).expect("pointer");
            gen + 1
        }
    }
}

fn pointer(root: &std::path::Path) -> u64 {
    std::fs::read_to_string(root.join("CURRENT"))
        .expect("CURRENT")
        .trim()
        .parse()
        .expect("a generation number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_cut_short_at_any_step_opens_to_a_complete_store() {
    let mut soko = TestSoko::start_with(|c| {
        c.relay.connection_write_per_minute = 10_000;
        c.relay.write_budget_per_minute = 10_000;
    })
    .await;
    let url = soko.relay_url();
    let merchant = shop_on_relay(&soko, &url).await;
    // Others' events the relay acknowledged, addressed to nobody soko knows (kept).
    let nobody = Keys::generate().public_key();
    let theirs: Vec<Event> = (0..50)
        .map(|_| junk_wrap(nobody, 1_000, Timestamp::now()))
        .collect();
    assert_eq!(flood(&url, &theirs).await, 50);
    let bot = soko.bot();
    let ours = |held: &Events| {
        held.iter()
            .filter(|e| e.pubkey == bot || e.pubkey == merchant)
            .count()
    };
    let ours_before = ours(&everything_held(&url).await);
    assert!(ours_before >= 2, "soko's own events: {ours_before}");

    let root = soko.data_dir().join("relay-events");
    for cut in [Cut::HalfCopied, Cut::PointerNotRenamed, Cut::OldNotRemoved] {
        soko.stop().await;
        let gen = pointer(&root);
        let expected = leave(&root, gen, cut);
        soko.restart().await;
        let url = soko.relay_url();
        let held = everything_held(&url).await;
        // soko's own replaceable events are published again on start (new ids): they are
        // counted; the others' are checked one by one.
        let lost = theirs.iter().filter(|e| !held.contains(e)).count();
        assert_eq!(lost, 0, "{cut:?}: acknowledged events lost");
        assert_eq!(shop_held(&url, merchant).await, (1, 1), "{cut:?}");
        assert!(ours(&held) >= ours_before, "{cut:?}");
        assert_eq!(pointer(&root), expected, "{cut:?}");
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["CURRENT".to_owned(), format!("gen-{expected}")],
            "{cut:?}: leftovers kept"
        );
        // Soko still answers, and what it writes now survives a restart.
        assert_serves(&soko, url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_from_before_keeps_its_relay_events() {
    let mut soko = TestSoko::start().await;
    let url = soko.relay_url();
    let merchant = shop_on_relay(&soko, &url).await;
    let nobody = Keys::generate().public_key();
    let theirs: Vec<Event> = (0..20)
        .map(|_| junk_wrap(nobody, 500, Timestamp::now()))
        .collect();
    assert_eq!(flood(&url, &theirs).await, 20);
    soko.stop().await;

    // What an older soko left: the relay's events in a tree of its main Db, nothing else.
    let dir = soko.data_dir();
    let root = dir.join("relay-events");
    {
        let gen = root.join(format!("gen-{}", pointer(&root)));
        let events = soko::store::Store::open(&gen).expect("events Db");
        let main = soko::store::Store::open(&dir).expect("main Db");
        let old = main
            .db()
            .open_tree(soko::store::trees::RELAY_EVENTS)
            .expect("old tree");
        for entry in events.db().open_tree("events").expect("events").iter() {
            let (key, value) = entry.expect("entry");
            old.insert(key, value).expect("insert");
        }
        main.db().flush().expect("flush");
    }
    std::fs::remove_dir_all(&root).expect("remove");

    soko.restart().await;
    let url = soko.relay_url();
    let held = everything_held(&url).await;
    let lost = theirs.iter().filter(|e| !held.contains(e)).count();
    assert_eq!(lost, 0, "acknowledged events lost in the move");
    assert_eq!(shop_held(&url, merchant).await, (1, 1));
    soko.stop().await;
    assert_eq!(pointer(&root), 1);
    let main = soko::store::Store::open(&dir).expect("main Db");
    assert!(
        !main
            .db()
            .tree_names()
            .iter()
            .any(|name| name == soko::store::trees::RELAY_EVENTS.as_bytes()),
        "the old tree is still in the main Db"
    );
}
