//! Agent registration end to end: invite codes from the operator, registration events signed
//! by a real NIP-46 bunker (rust-nostr's `nostr-connect` remote signer on soko's embedded
//! relay) and sent, as NIP-17 DMs, through that signer, and every refusal with its code.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod bunker;
mod common;

use bunker::*;
use common::*;
use nostr_connect::client::NostrConnect;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::proto::agents::REGISTRATION_KIND;

/// An agent whose client signs, encrypts and decrypts only through a NIP-46 signer.
struct RemoteAgent {
    client: Client,
    me: PublicKey,
    inbox: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
}

impl RemoteAgent {
    async fn connect(signer: NostrConnect, relay: &RelayUrl) -> Self {
        let client = connect_client(signer, std::slice::from_ref(relay)).await;
        let (me, inbox) = listen_to_wraps(&client).await;
        Self { client, me, inbox }
    }

    /// A registration event signed by the bunker.
    async fn sign(&self, bot: PublicKey, code: &str, name: &str) -> Event {
        let signer = self.client.signer().await.unwrap();
        EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
            .tags([
                Tag::parse(["invite", code]).unwrap(),
                Tag::parse(["role", "agent"]).unwrap(),
                Tag::parse(["name", name]).unwrap(),
                Tag::public_key(bot),
            ])
            .sign(&signer)
            .await
            .unwrap()
    }

    /// Sends `content` to the bot as a NIP-17 DM (sealed and signed by the bunker) and
    /// returns its answer, unwrapped by the bunker.
    async fn ask(&mut self, bot: PublicKey, content: &str) -> Value {
        let sent = self
            .client
            .send_private_msg(bot, content, [])
            .await
            .unwrap();
        assert!(!sent.success.is_empty(), "DM accepted: {:?}", sent.failed);
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let notification = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .expect("soko answers")
                .unwrap();
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            if event.kind != Kind::GiftWrap {
                continue;
            }
            let gift = self.client.unwrap_gift_wrap(&event).await.unwrap();
            if gift.sender == bot {
                return serde_json::from_str(&gift.rumor.content).unwrap();
            }
        }
    }
}

/// A registration event with every part chosen by the test.
fn event(
    keys: &Keys,
    kind: u16,
    recipients: &[PublicKey],
    tags: &[(&str, &str)],
    at: Timestamp,
) -> Event {
    EventBuilder::new(Kind::Custom(kind), "")
        .tags(recipients.iter().map(|pk| Tag::public_key(*pk)))
        .tags(tags.iter().map(|(k, v)| Tag::parse([*k, *v]).unwrap()))
        .custom_created_at(at)
        .sign_with_keys(keys)
        .unwrap()
}

/// A well-formed registration of `keys` for soko's `bot` with `code`.
fn registration(keys: &Keys, bot: PublicKey, code: &str) -> Event {
    registration_as(keys, bot, code, "agent")
}

fn registration_as(keys: &Keys, bot: PublicKey, code: &str, role: &str) -> Event {
    event(
        keys,
        REGISTRATION_KIND,
        &[bot],
        &[("invite", code), ("role", role)],
        Timestamp::now(),
    )
}

/// The `register` request carrying `event` (any JSON, so tests can tamper with it).
fn register(event: impl serde::Serialize) -> String {
    json!({"v": 1, "cmd": "register", "args": {"event": event}}).to_string()
}

/// An agent invite from the operator, with extra arguments.
async fn invite(soko: &TestSoko, extra: Value) -> String {
    let mut args = json!({"role": "agent"});
    args.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let created = operator(soko, "invite_create", args).await;
    assert!(created.ok, "{created:?}");
    created.result.unwrap()["code"].as_str().unwrap().to_owned()
}

/// The error code of a failed reply.
fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], json!(false), "{reply}");
    reply["error"]["code"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_through_a_nip46_bunker() {
    let soko = TestSoko::start().await;
    let bot = soko.bot();
    let code = invite(&soko, json!({})).await;
    let bunker = Bunker::start(&soko.relay_url()).await;
    let mut agent = RemoteAgent::connect(bunker.connect(), &soko.relay_url()).await;
    assert_eq!(agent.me, bunker.user, "the agent's key is the bunker's");

    let before = agent.ask(bot, r#"{"cmd":"whoami"}"#).await;
    assert_eq!(before["result"]["role"], "anonymous", "{before}");

    let signed = agent.sign(bot, &code, "Wanjiru").await;
    assert_eq!(signed.pubkey, bunker.user);
    assert!(signed.verify().is_ok());
    let reply = agent.ask(bot, &register(&signed)).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["result"]["role"], "agent");
    assert_eq!(reply["result"]["npub"], bunker.user.to_bech32().unwrap());
    assert_eq!(reply["result"]["name"], "Wanjiru");

    let after = agent.ask(bot, r#"{"cmd":"whoami"}"#).await;
    assert_eq!(after["result"]["role"], "agent", "{after}");
    assert_eq!(after["result"]["pubkey"], bunker.user.to_hex());

    // The same signed event in a new DM: refused, and the refusal read through the bunker.
    let replayed = agent.ask(bot, &register(&signed)).await;
    assert_eq!(error_code(&replayed), "replayed", "{replayed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_outside_the_window_or_not_for_this_soko_are_refused() {
    let soko = TestSoko::start().await;
    let bot = soko.bot();
    let code = invite(&soko, json!({})).await;
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let tags = [("invite", code.as_str()), ("role", "agent")];
    let now = Timestamp::now();

    let old = event(&alice.keys, REGISTRATION_KIND, &[bot], &tags, now - 120);
    let reply = alice.ask_nip17(bot, &register(&old)).await.json();
    assert_eq!(error_code(&reply), "stale", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("behind"));
    let ahead = event(&alice.keys, REGISTRATION_KIND, &[bot], &tags, now + 120);
    let reply = alice.ask_nip04(bot, &register(&ahead)).await.json();
    assert_eq!(error_code(&reply), "stale", "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ahead of"));

    let other_soko = Keys::generate().public_key();
    for recipients in [&[other_soko][..], &[], &[bot, other_soko]] {
        let aimed = event(&alice.keys, REGISTRATION_KIND, recipients, &tags, now);
        let reply = alice.ask_nip17(bot, &register(&aimed)).await.json();
        assert_eq!(error_code(&reply), "wrong_recipient", "{reply}");
    }
    let note = event(&alice.keys, 1, &[bot], &tags, now);
    let reply = alice.ask_nip17(bot, &register(&note)).await.json();
    assert_eq!(error_code(&reply), "wrong_kind", "{reply}");

    // Forged: content or signature changed, id kept.
    let genuine = registration(&alice.keys, bot, &code);
    let mut tampered = serde_json::to_value(&genuine).unwrap();
    tampered["content"] = json!("I am an admin");
    let reply = alice.ask_nip17(bot, &register(&tampered)).await.json();
    assert_eq!(error_code(&reply), "bad_signature", "{reply}");
    let mut resigned = serde_json::to_value(&genuine).unwrap();
    resigned["sig"] = json!(registration(&alice.keys, bot, "other").sig.to_string());
    let reply = alice.ask_nip17(bot, &register(&resigned)).await.json();
    assert_eq!(error_code(&reply), "bad_signature", "{reply}");

    // Signed by carol, sent by alice.
    let carol = Keys::generate();
    let by_carol = registration(&carol, bot, &code);
    let reply = alice.ask_nip17(bot, &register(&by_carol)).await.json();
    assert_eq!(error_code(&reply), "signer_mismatch", "{reply}");

    // None of these took the invite's only use.
    let reply = alice.ask_nip17(bot, &register(&genuine)).await.json();
    assert_eq!(reply["result"]["role"], "agent", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_codes_are_checked_and_used_once() {
    let soko = TestSoko::start().await;
    let bot = soko.bot();
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let mut bob = User::connect(&[soko.relay_url()]).await;

    let unknown = "7KQ2-M9XD-4HWA-0RTC";
    for code in [unknown, "not a code"] {
        let reply = alice
            .ask_nip17(bot, &register(registration(&alice.keys, bot, code)))
            .await
            .json();
        assert_eq!(error_code(&reply), "invite_unknown", "{reply}");
    }

    let code = invite(&soko, json!({"uses": 1})).await;
    let as_merchant = registration_as(&alice.keys, bot, &code, "merchant");
    let reply = alice.ask_nip17(bot, &register(&as_merchant)).await.json();
    assert_eq!(error_code(&reply), "invite_wrong_role", "{reply}");
    let no_invite = event(
        &alice.keys,
        REGISTRATION_KIND,
        &[bot],
        &[("role", "agent")],
        Timestamp::now(),
    );
    let reply = alice.ask_nip17(bot, &register(&no_invite)).await.json();
    assert_eq!(error_code(&reply), "invalid", "{reply}");

    // Typed loosely: lower case, spaces for dashes.
    let typed = code.to_lowercase().replace('-', " ");
    let first = registration(&alice.keys, bot, &typed);
    let request = json!({"v":1,"id":"reg-1","cmd":"register","args":{"event": first}});
    let reply = alice.ask_nip17(bot, &request.to_string()).await.json();
    assert_eq!(reply["result"]["role"], "agent", "{reply}");

    // The same request id again: the first answer, not a second registration.
    let again = alice.ask_nip17(bot, &request.to_string()).await.json();
    assert_eq!(again, reply);
    // The same event in a new request: a replay.
    let replayed = alice.ask_nip04(bot, &register(&first)).await.json();
    assert_eq!(error_code(&replayed), "replayed", "{replayed}");

    let reply = bob
        .ask_nip17(bot, &register(registration(&bob.keys, bot, &code)))
        .await
        .json();
    assert_eq!(error_code(&reply), "invite_used", "{reply}");

    // Registered already: refused without taking the fresh invite's use, which bob then gets.
    let fresh = invite(&soko, json!({})).await;
    let reply = alice
        .ask_nip17(bot, &register(registration(&alice.keys, bot, &fresh)))
        .await
        .json();
    assert_eq!(error_code(&reply), "already_registered", "{reply}");
    let reply = bob
        .ask_nip17(bot, &register(registration(&bob.keys, bot, &fresh)))
        .await
        .json();
    assert_eq!(reply["result"]["role"], "agent", "{reply}");

    let short = invite(&soko, json!({"expires_in_secs": 1})).await;
    soko.advance(2);
    let mut carol = User::connect(&[soko.relay_url()]).await;
    let reply = carol
        .ask_nip17(bot, &register(registration(&carol.keys, bot, &short)))
        .await
        .json();
    assert_eq!(error_code(&reply), "invite_expired", "{reply}");
    let whoami = carol.ask_nip17(bot, r#"{"cmd":"whoami"}"#).await.json();
    assert_eq!(whoami["result"]["role"], "anonymous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_create_invites_and_only_for_agents() {
    let dave = Keys::generate();
    let soko = TestSoko::start_with(|config| config.admins = vec![dave.public_key()]).await;
    let bot = soko.bot();
    let mut stranger = User::connect(&[soko.relay_url()]).await;
    let reply = stranger
        .ask_nip17(bot, r#"{"cmd":"invite_create","args":{"role":"agent"}}"#)
        .await
        .json();
    assert_eq!(error_code(&reply), "forbidden", "{reply}");
    let whoami = stranger.ask_nip04(bot, r#"{"cmd":"whoami"}"#).await.json();
    assert_eq!(whoami["result"]["role"], "anonymous", "{whoami}");

    for (role, why) in [("merchant", "USSD"), ("admin", "config"), ("king", "agent")] {
        let refused = operator(&soko, "invite_create", json!({ "role": role })).await;
        assert_eq!(refusal_code(&refused), "invalid");
        assert!(refused.error.unwrap().message.contains(why));
    }
    let refused = operator(&soko, "invite_create", json!({"role":"agent","uses":0})).await;
    assert_eq!(refusal_code(&refused), "invalid");

    let created = operator(
        &soko,
        "invite_create",
        json!({"role":"agent","uses":3,"expires_in_secs":3600}),
    )
    .await;
    let result = created.result.unwrap();
    assert_eq!(
        (result["role"].clone(), result["uses"].clone()),
        (json!("agent"), json!(3))
    );
    let expires_at = result["expires_at"].as_u64().unwrap();
    let now = Timestamp::now().as_secs();
    assert!((now + 3590..=now + 3610).contains(&expires_at));
    let code = result["code"].as_str().unwrap();
    assert_eq!(code.len(), 19);
    assert_eq!(code.matches('-').count(), 3);

    let operator_keys = soko::identity::operator_keys(&soko.data_dir()).unwrap();
    let whoami = operator(&soko, "whoami", json!({})).await;
    assert_eq!(whoami.result.unwrap()["role"], "admin");
    let by_admin = operator(
        &soko,
        "register",
        json!({"event": registration(&operator_keys, bot, code)}),
    )
    .await;
    assert_eq!(refusal_code(&by_admin), "already_registered");

    // An admin from the config is an admin too.
    let mut dave = User::with_keys(dave, &[soko.relay_url()]).await;
    let whoami = dave.ask_nip17(bot, r#"{"cmd":"whoami"}"#).await.json();
    assert_eq!(whoami["result"]["role"], "admin", "{whoami}");
    let reply = dave
        .ask_nip17(bot, r#"{"cmd":"invite_create","args":{"role":"agent"}}"#)
        .await
        .json();
    assert_eq!(reply["result"]["uses"], 1, "{reply}");
    assert_eq!(reply["result"]["expires_at"], Value::Null, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_racing_for_the_last_use_one_wins() {
    let soko = TestSoko::start().await;
    let bot = soko.bot();
    for round in 0..3 {
        let code = invite(&soko, json!({"uses": 1})).await;
        let mut a = User::connect(&[soko.relay_url()]).await;
        let mut b = User::connect(&[soko.relay_url()]).await;
        let (reg_a, reg_b) = (
            register(registration(&a.keys, bot, &code)),
            register(registration(&b.keys, bot, &code)),
        );
        let (reply_a, reply_b) = tokio::join!(a.ask_nip17(bot, &reg_a), b.ask_nip17(bot, &reg_b));
        let replies = [reply_a.json(), reply_b.json()];
        let won = replies.iter().filter(|r| r["ok"] == json!(true)).count();
        assert_eq!(won, 1, "round {round}: {replies:?}");
        let lost = replies.iter().find(|r| r["ok"] == json!(false)).unwrap();
        assert_eq!(error_code(lost), "invite_used");
        let mut roles = Vec::new();
        for user in [&mut a, &mut b] {
            let whoami = user.ask_nip17(bot, r#"{"cmd":"whoami"}"#).await.json();
            roles.push(whoami["result"]["role"].as_str().unwrap().to_owned());
        }
        roles.sort();
        assert_eq!(roles, ["agent", "anonymous"], "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_nonces_survive_a_restart() {
    let mut soko = TestSoko::start().await;
    let bot = soko.bot();
    let code = invite(&soko, json!({"uses": 2})).await;
    let keys = Keys::generate();
    let signed = registration(&keys, bot, &code);
    {
        let mut alice = User::with_keys(keys.clone(), &[soko.relay_url()]).await;
        let reply = alice.ask_nip17(bot, &register(&signed)).await.json();
        assert_eq!(reply["result"]["role"], "agent", "{reply}");
        alice.client.shutdown().await;
    }
    soko.restart().await;
    // A new connection also gets the stored reply from before: answers are told by `re`.
    let mut alice = User::with_keys(keys, &[soko.relay_url()]).await;
    let whoami = ask_by_id(&mut alice, bot, json!({"id":"w1","cmd":"whoami"})).await;
    assert_eq!(whoami["result"]["role"], "agent", "{whoami}");
    let request = json!({"id":"r2","cmd":"register","args":{"event": signed}});
    let replayed = ask_by_id(&mut alice, bot, request).await;
    assert_eq!(error_code(&replayed), "replayed", "{replayed}");
}

/// Sends `request` (with an `id`) over NIP-17 and returns the reply to it, skipping others.
async fn ask_by_id(user: &mut User, bot: PublicKey, request: Value) -> Value {
    user.send_nip17(bot, &request.to_string()).await;
    loop {
        let reply = user.next_dm(REPLY_TIMEOUT).await.expect("a reply").json();
        if reply["re"] == request["id"] {
            return reply;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_invites_on_a_running_soko() {
    let soko = TestSoko::start().await;
    let config_file = soko.cli_config("test.toml");
    let run = |args: &[&str]| run_cli(&config_file, args);
    let out = run(&[
        "invite",
        "create",
        "--role",
        "agent",
        "--uses",
        "2",
        "--expires",
        "600",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (created["role"].clone(), created["uses"].clone()),
        (json!("agent"), json!(2))
    );
    let code = created["code"].as_str().unwrap();
    let mut alice = User::connect(&[soko.relay_url()]).await;
    let reply = alice
        .ask_nip17(
            soko.bot(),
            &register(registration(&alice.keys, soko.bot(), code)),
        )
        .await
        .json();
    assert_eq!(reply["result"]["role"], "agent", "{reply}");

    let out = run(&["invite", "create", "--role", "merchant"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("USSD"));
}
