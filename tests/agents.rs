//! Agents at work, end to end on real parts: an agent whose client signs and decrypts only
//! through a NIP-46 bunker registers, onboards a merchant, proposes a stall and a product;
//! the merchant finishes onboarding and approves over USSD (a configured bridge key sends
//! `ussd_hop` gift wraps); the listings appear on the relay under the merchant's key; a
//! buyer orders and pays on the dev mint; the agent hears of it without the buyer's data.
//! Then every refusal: non-agents, unlinked merchants, bad content, other agents, unlinked
//! agents, rejections and deletions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod bunker;
mod common;

use std::time::Duration;

use bunker::*;
use common::bridge::*;
use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::proto::agents::REGISTRATION_KIND;
use soko::proto::nip15::{Product, Stall, KIND_PRODUCT, KIND_STALL};

const PHONE: &str = "+254711000111";
const OTHER_PHONE: &str = "+254711000222";
const PIN: &str = "4821";
/// An agent talking to soko over NIP-17: with a bunker, or with local keys.
struct Agent {
    client: Client,
    bot: PublicKey,
    inbox: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    /// Notices soko sent unasked, not yet looked at.
    notices: Vec<Value>,
    next_id: u32,
}

impl Agent {
    async fn with_signer<S: IntoNostrSigner>(signer: S, soko: &TestSoko) -> Self {
        let client = connect_client(signer, &[soko.relay_url()]).await;
        let (_, inbox) = listen_to_wraps(&client).await;
        Self {
            client,
            bot: soko.bot(),
            inbox,
            notices: Vec::new(),
            next_id: 0,
        }
    }

    /// Registers with an agent invite from the operator, under `name`.
    async fn register(&mut self, soko: &TestSoko, name: &str) {
        let created = operator(soko, "invite_create", json!({"role": "agent"})).await;
        assert!(created.ok, "{created:?}");
        let code = created.result.unwrap()["code"].as_str().unwrap().to_owned();
        let signer = self.client.signer().await.unwrap();
        let event = EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
            .tags([
                Tag::parse(["invite", code.as_str()]).unwrap(),
                Tag::parse(["role", "agent"]).unwrap(),
                Tag::parse(["name", name]).unwrap(),
                Tag::public_key(self.bot),
            ])
            .sign(&signer)
            .await
            .unwrap();
        let reply = self.ask("register", json!({ "event": event })).await;
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["result"]["role"], "agent");
    }

    /// Sends a command and waits for its reply (notices arriving meanwhile are kept).
    async fn ask(&mut self, cmd: &str, args: Value) -> Value {
        self.next_id += 1;
        let id = format!("{cmd}-{}", self.next_id);
        let request = json!({"v": 1, "id": id, "cmd": cmd, "args": args}).to_string();
        let sent = self
            .client
            .send_private_msg(self.bot, request, [])
            .await
            .unwrap();
        assert!(!sent.success.is_empty(), "DM accepted: {:?}", sent.failed);
        loop {
            let message = self.receive(REPLY_TIMEOUT).await.expect("soko answers");
            if message["re"] == id.as_str() {
                return message;
            }
            if message.get("notice").is_some() {
                self.notices.push(message);
            }
        }
    }

    /// A command that must succeed: its result.
    async fn ok(&mut self, cmd: &str, args: Value) -> Value {
        let reply = self.ask(cmd, args).await;
        assert_eq!(reply["ok"], true, "{cmd}: {reply}");
        reply["result"].clone()
    }

    /// A command that must fail: its error code and message.
    async fn refused(&mut self, cmd: &str, args: Value) -> (String, String) {
        let reply = self.ask(cmd, args).await;
        assert_eq!(reply["ok"], false, "{cmd} must be refused: {reply}");
        (
            reply["error"]["code"].as_str().unwrap().to_owned(),
            reply["error"]["message"].as_str().unwrap().to_owned(),
        )
    }

    /// The next notice of type `kind` (`proposal`, `order_paid`) within the reply timeout.
    async fn notice(&mut self, kind: &str) -> Value {
        if let Some(at) = self.notices.iter().position(|n| n["notice"] == kind) {
            return self.notices.remove(at);
        }
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline - tokio::time::Instant::now();
            let message = self
                .receive(left)
                .await
                .unwrap_or_else(|| panic!("a {kind} notice"));
            if message["notice"] == kind {
                return message;
            }
            if message.get("notice").is_some() {
                self.notices.push(message);
            }
        }
    }

    /// Every notice of type `kind` within the quiet period.
    async fn quiet(&mut self, kind: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + QUIET_PERIOD;
        while let Some(message) = self
            .receive(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            self.notices.push(message);
        }
        let (of_kind, rest): (Vec<Value>, Vec<Value>) =
            self.notices.drain(..).partition(|n| n["notice"] == kind);
        self.notices = rest;
        of_kind
    }

    /// The next message from the bot, unwrapped by the agent's signer.
    async fn receive(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notification = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .ok()?
                .ok()?;
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            if event.kind != Kind::GiftWrap {
                continue;
            }
            let Ok(gift) = self.client.unwrap_gift_wrap(&event).await else {
                continue;
            };
            if gift.sender == self.bot {
                return Some(serde_json::from_str(&gift.rumor.content).unwrap());
            }
        }
    }
}

// --- The merchant's side: a USSD bridge ----------------------------------------------------

/// Walks the merchant's side of the tests on the fake bridge of `tests/common`.
impl Bridge {
    /// One hop as `soko-ussd` sends it (ids by position); its screen.
    async fn screen(&mut self, session: &str, phone: &str, text: &str) -> String {
        self.hop(session, phone, text).await.screen
    }

    /// First dial from a pending merchant's phone: the activation code the agent got, PIN
    /// twice, name confirmed.
    async fn onboard(&mut self, session: &str, phone: &str, name: &str, code: &str) {
        let code = code.replace(' ', "");
        let welcome = self.screen(session, phone, "").await;
        assert_eq!(
            welcome,
            format!("Welcome to soko, {name}!\nEnter the 12-digit activation code from your agent or soko's operator:")
        );
        self.screen(session, phone, &code).await;
        self.screen(session, phone, &format!("{code}*{PIN}")).await;
        let confirm = self
            .screen(session, phone, &format!("{code}*{PIN}*{PIN}"))
            .await;
        assert!(confirm.contains(name), "{confirm}");
        let open = self
            .screen(session, phone, &format!("{code}*{PIN}*{PIN}*1"))
            .await;
        assert!(open.starts_with("Your shop is open!"), "{open}");
    }

    /// A new session, logged in, then `inputs` one by one; returns every screen after login.
    async fn session(&mut self, session: &str, phone: &str, inputs: &[&str]) -> Vec<String> {
        let login = self.screen(session, phone, "").await;
        assert!(login.ends_with("Enter your PIN:"), "{login}");
        let mut text = PIN.to_owned();
        let main = self.screen(session, phone, &text).await;
        assert!(main.contains("4 Pending approvals"), "{main}");
        let mut screens = Vec::new();
        for input in inputs {
            text = format!("{text}*{input}");
            screens.push(self.screen(session, phone, &text).await);
        }
        screens
    }
}

// --- Fixtures ---------------------------------------------------------------------------

fn stall() -> Value {
    json!({"id":"duka","name":"Mama Duka","currency":"sat",
           "shipping":[{"id":"nairobi","name":"Nairobi","cost":100,"regions":["KE"]}]})
}

fn mango() -> Value {
    json!({"id":"mango","stall_id":"duka","name":"Mango","currency":"sat","price":500,
           "quantity":10,"shipping":[{"id":"nairobi","cost":10}]})
}

fn order(id: &str) -> String {
    json!({"id": id, "type": 0, "name": "Amina", "address": "Moi Avenue 12",
           "message": "Leave it at the gate",
           "contact": {"nostr": "npub1x", "phone": "+254722000333", "email": "amina@example.com"},
           "items": [{"product_id": "mango", "quantity": 2}],
           "shipping_id": "nairobi"})
    .to_string()
}

/// A buyer orders two mangoes and the dev mint settles the invoice.
async fn paid_order(soko: &TestSoko, merchant: PublicKey, id: &str) {
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let request = buyer.ask_nip04(merchant, &order(id)).await.json();
    assert_eq!(request["type"], 1, "{request}");
    let paid = buyer.next_dm(REPLY_TIMEOUT).await.expect("paid").json();
    assert_eq!(paid["paid"], true, "{paid}");
}

/// An agent with local keys, registered.
async fn local_agent(soko: &TestSoko, name: &str) -> Agent {
    let mut agent = Agent::with_signer(Keys::generate(), soko).await;
    agent.register(soko, name).await;
    agent
}

// --- Tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_onboards_a_merchant_whose_approved_listings_sell() {
    let bridge_keys = Keys::generate();
    let soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko)
        .await
        .naming(HopIds::ByPosition);
    let bunker = Bunker::start(&soko.relay_url()).await;
    let mut agent = Agent::with_signer(bunker.connect(), &soko).await;
    agent.register(&soko, "Juma").await;

    // Onboarding: a pending merchant, linked to the agent.
    let onboarded = agent
        .ok(
            "merchant_onboard",
            json!({"phone": PHONE, "name": "Mama Duka"}),
        )
        .await;
    assert_eq!(onboarded["link"], "linked", "{onboarded}");
    assert_eq!(onboarded["merchant"]["status"], "pending");
    let npub = onboarded["merchant"]["npub"].as_str().unwrap().to_owned();
    let merchant = PublicKey::parse(&npub).unwrap();
    let listed = agent.ok("agent_merchants", json!({})).await;
    assert_eq!(listed["merchants"][0]["npub"], npub.as_str());
    assert_eq!(listed["merchants"][0]["status"], "pending");

    // A stall may be proposed before the owner dials in; approving needs the owner.
    let stall_proposal = agent
        .ok("propose_stall", json!({"merchant": npub, "stall": stall()}))
        .await;
    assert_eq!(stall_proposal["status"], "pending", "{stall_proposal}");
    assert_eq!(stall_proposal["kind"], "stall");
    let code = onboarded["activation_code"]
        .as_str()
        .expect("the code, once");
    bridge.onboard("AT-1", PHONE, "Mama Duka", code).await;
    let listed = agent.ok("agent_merchants", json!({})).await;
    assert_eq!(listed["merchants"][0]["status"], "active", "{listed}");

    // The merchant reads and approves the stall in menu 4.
    let screens = bridge.session("AT-2", PHONE, &["4", "1", "1"]).await;
    assert_eq!(
        screens[0],
        "Pending approvals:\n1 Stall Mama Duka (sat), Juma\nReply with a no.\n00 Back"
    );
    assert_eq!(
        screens[1],
        "From agent Juma\nNew stall: Mama Duka\nCurrency: sat\nShips to Nairobi: 100 sat\n1 Approve\n2 Reject\n00 Back"
    );
    assert_eq!(screens[2], "Approved.\nNo pending approvals.\n00 Back");
    let told = agent.notice("proposal").await;
    assert_eq!(told["args"]["status"], "approved", "{told}");
    assert_eq!(told["args"]["proposal"], stall_proposal["proposal"]);
    assert_eq!(told["args"]["merchant"], npub.as_str());
    let stall_event = told["args"]["event_id"].as_str().unwrap().to_owned();

    // Then the product, now that its stall is published.
    let product_proposal = agent
        .ok(
            "propose_product",
            json!({"merchant": npub, "product": mango()}),
        )
        .await;
    let screens = bridge.session("AT-3", PHONE, &["4", "1", "1"]).await;
    assert_eq!(
        screens[0],
        "Pending approvals:\n1 Product Mango 500 sat, Juma\nReply with a no.\n00 Back"
    );
    assert!(
        screens[1].starts_with(
            "From agent Juma\nNew product: Mango\nPrice: 500 sat\nStock: 10\nStall: duka"
        ),
        "{}",
        screens[1]
    );
    assert!(screens[2].starts_with("Approved."), "{}", screens[2]);
    let told = agent.notice("proposal").await;
    assert_eq!(told["args"]["proposal"], product_proposal["proposal"]);
    assert_eq!(told["args"]["kind"], "product");
    assert_eq!(told["args"]["status"], "approved");

    // On the relay, signed by the merchant's key, valid NIP-15.
    let stalls = events_of(&soko, merchant, Kind::SetStall).await;
    let published = stalls.first().expect("the stall is on the relay");
    published.verify().unwrap();
    assert_eq!(published.id.to_hex(), stall_event);
    assert_eq!(published.tags.identifier(), Some("duka"));
    let content: Stall = serde_json::from_str(&published.content).unwrap();
    assert_eq!(
        (content.id.as_str(), content.currency.as_str()),
        ("duka", "sat")
    );
    let products = events_of(&soko, merchant, Kind::SetProduct).await;
    let published = products.first().expect("the product is on the relay");
    published.verify().unwrap();
    assert_eq!(published.pubkey, merchant);
    assert_eq!(published.tags.identifier(), Some("mango"));
    let content: Product = serde_json::from_str(&published.content).unwrap();
    assert_eq!((content.stall_id.as_str(), content.price), ("duka", 500.0));
    let overview = agent.ok("agent_merchants", json!({})).await;
    let statuses: Vec<&str> = overview["proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["approved", "approved"], "{overview}");

    // A buyer orders; the agent hears of it, without the buyer's details.
    paid_order(&soko, merchant, "o-1").await;
    let paid = agent.notice("order_paid").await;
    let args = &paid["args"];
    assert_eq!(args["merchant"], npub.as_str(), "{paid}");
    assert_eq!(args["order"], 1);
    assert_eq!(args["amount_sat"], 1120);
    assert_eq!(
        args["items"],
        json!([{"product_id":"mango","name":"Mango","quantity":2}])
    );
    assert!(args.get("buyer").is_none(), "{paid}");
    for private in [
        "Amina",
        "Moi Avenue",
        "+254722000333",
        "amina@example.com",
        "gate",
    ] {
        assert!(!paid.to_string().contains(private), "{paid}");
    }

    // The merchant shares buyer details (settings 4): the next notice carries them.
    let screens = bridge.session("AT-4", PHONE, &["6", "4"]).await;
    assert!(
        screens[0].contains("4 Buyer details to agents: off"),
        "{}",
        screens[0]
    );
    assert!(
        screens[1].contains("4 Buyer details to agents: on"),
        "{}",
        screens[1]
    );
    paid_order(&soko, merchant, "o-2").await;
    let paid = agent.notice("order_paid").await;
    assert_eq!(paid["args"]["order"], 2);
    assert_eq!(paid["args"]["buyer"]["name"], "Amina", "{paid}");
    assert_eq!(paid["args"]["buyer"]["zone"], "nairobi");

    // The merchant unlinks the agent (settings 3): no more notices, proposals or listing.
    let screens = bridge.session("AT-5", PHONE, &["6", "3", "1", "1"]).await;
    assert_eq!(
        screens[1],
        "Your agents:\n1 Juma\nReply with a no. to unlink\n00 Back"
    );
    assert!(screens[2].starts_with("Unlink Juma?"), "{}", screens[2]);
    assert_eq!(
        screens[3],
        "Agent unlinked.\nNo agents are linked to your shop.\n00 Back"
    );
    let told = agent.notice("unlinked").await;
    assert_eq!(told["args"]["merchant"], npub, "{told}");
    assert_eq!(told["args"]["withdrawn"], json!([]), "{told}");
    let (code, _) = agent
        .refused(
            "propose_product",
            json!({"merchant": npub, "product": mango()}),
        )
        .await;
    assert_eq!(code, "not_linked");
    let overview = agent.ok("agent_merchants", json!({})).await;
    assert_eq!(overview, json!({"merchants": [], "proposals": []}));
    paid_order(&soko, merchant, "o-3").await;
    assert!(
        agent.quiet("order_paid").await.is_empty(),
        "no notice after unlink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_rejections_deletions_and_unlinking() {
    let bridge_keys = Keys::generate();
    let soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko)
        .await
        .naming(HopIds::ByPosition);
    let mut juma = local_agent(&soko, "Juma").await;
    let mut wanjiru = local_agent(&soko, "Wanjiru").await;

    // Not an agent: refused before anything else, nothing learnt.
    let mut stranger = Agent::with_signer(Keys::generate(), &soko).await;
    for (cmd, args) in [
        (
            "merchant_onboard",
            json!({"phone": PHONE, "name": "Mama Duka"}),
        ),
        ("agent_merchants", json!({})),
        (
            "propose_stall",
            json!({"merchant": Keys::generate().public_key().to_hex(), "stall": stall()}),
        ),
        ("proposal_withdraw", json!({"proposal": 1})),
    ] {
        assert_eq!(stranger.refused(cmd, args).await.0, "not_an_agent", "{cmd}");
    }
    // Nor is the operator an agent.
    let as_operator = operator(&soko, "agent_merchants", json!({})).await;
    assert!(!as_operator.ok);

    // Juma onboards Mama Duka; the owner dials in.
    let onboarded = juma
        .ok(
            "merchant_onboard",
            json!({"phone": PHONE, "name": "Mama Duka"}),
        )
        .await;
    let npub = onboarded["merchant"]["npub"].as_str().unwrap().to_owned();
    let merchant = PublicKey::parse(&npub).unwrap();
    let code = onboarded["activation_code"]
        .as_str()
        .expect("the code, once");
    bridge.onboard("B-1", PHONE, "Mama Duka", code).await;

    // A merchant Juma is not linked to (the operator's): refused, nothing stored.
    let added = operator(
        &soko,
        "merchant_add",
        json!({"name": "Baba Duka", "phone": OTHER_PHONE}),
    )
    .await;
    let other_npub = added.result.unwrap()["npub"].as_str().unwrap().to_owned();
    let (code, message) = juma
        .refused(
            "propose_stall",
            json!({"merchant": other_npub, "stall": stall()}),
        )
        .await;
    assert_eq!(code, "not_linked", "{message}");

    // Another agent neither sees nor proposes for Juma's merchant.
    assert_eq!(
        wanjiru
            .refused("propose_stall", json!({"merchant": npub, "stall": stall()}))
            .await
            .0,
        "not_linked"
    );
    assert_eq!(
        wanjiru.ok("agent_merchants", json!({})).await,
        json!({"merchants": [], "proposals": []})
    );
    // Knowing the phone is not enough: Wanjiru's onboarding only asks for a link, and the
    // reply does not say whose shop it is.
    let asked = wanjiru
        .ok(
            "merchant_onboard",
            json!({"phone": PHONE, "name": "Anything"}),
        )
        .await;
    assert_eq!(asked["link"], "requested", "{asked}");
    assert!(asked.get("merchant").is_none(), "{asked}");
    let link_request = asked["proposal"].clone();
    assert_eq!(
        wanjiru
            .ok(
                "merchant_onboard",
                json!({"phone": PHONE, "name": "Anything"})
            )
            .await["proposal"],
        link_request,
        "asking again does not pile up requests"
    );
    assert_eq!(
        wanjiru
            .refused("propose_stall", json!({"merchant": npub, "stall": stall()}))
            .await
            .0,
        "not_linked"
    );
    // And Juma cannot withdraw Wanjiru's request.
    assert_eq!(
        juma.refused("proposal_withdraw", json!({"proposal": link_request}))
            .await
            .0,
        "unknown_proposal"
    );
    assert_eq!(
        juma.refused("proposal_withdraw", json!({"proposal": 987654}))
            .await
            .0,
        "unknown_proposal"
    );

    // Bad content is refused when proposed, by the operator's rules.
    let (code, _) = juma
        .refused(
            "propose_product",
            json!({"merchant": npub, "product": {"id":"mango","stall_id":"duka","currency":"sat"}}),
        )
        .await;
    assert_eq!(code, "bad_request", "missing fields");
    let (code, message) = juma
        .refused(
            "propose_product",
            json!({"merchant": npub, "product": mango()}),
        )
        .await;
    assert_eq!(code, "invalid");
    assert!(
        message.contains("does not exist"),
        "unknown stall: {message}"
    );
    let (code, message) = juma
        .refused(
            "propose_stall",
            json!({"merchant": npub, "stall": {"id":"duka","name":"Duka","currency":"bitcoin"}}),
        )
        .await;
    assert_eq!(code, "invalid");
    assert!(message.contains("currency"), "{message}");

    // The stall goes through (approved over USSD), then the product checks use it.
    let proposed = juma
        .ok("propose_stall", json!({"merchant": npub, "stall": stall()}))
        .await;
    let screens = bridge.session("B-2", PHONE, &["4"]).await;
    assert_eq!(
        screens[0],
        "Pending approvals:\n1 Link agent Wanjiru\n2 Stall Mama Duka (sat), Juma\nReply with a no.\n00 Back"
    );
    // Reject Wanjiru's link (1, 2), approve Juma's stall (now 1, 1).
    let screens = bridge
        .session("B-3", PHONE, &["4", "1", "2", "1", "1"])
        .await;
    assert!(
        screens[1].contains("Wants to be your agent"),
        "{}",
        screens[1]
    );
    assert!(
        screens[2].starts_with("Rejected.\nPending approvals:\n1 Stall"),
        "{}",
        screens[2]
    );
    assert!(screens[4].starts_with("Approved."), "{}", screens[4]);
    let told = wanjiru.notice("proposal").await;
    assert_eq!(
        (
            told["args"]["kind"].as_str(),
            told["args"]["status"].as_str()
        ),
        (Some("link"), Some("rejected")),
        "{told}"
    );
    let told = juma.notice("proposal").await;
    assert_eq!(told["args"]["proposal"], proposed["proposal"]);
    assert_eq!(
        wanjiru
            .refused("propose_stall", json!({"merchant": npub, "stall": stall()}))
            .await
            .0,
        "not_linked",
        "a rejected link links nothing"
    );

    let mut negative = mango();
    negative["price"] = json!(-5);
    let (code, message) = juma
        .refused(
            "propose_product",
            json!({"merchant": npub, "product": negative}),
        )
        .await;
    assert_eq!(code, "invalid");
    assert!(message.contains("price"), "{message}");
    let mut far = mango();
    far["shipping"] = json!([{"id":"mombasa","cost":10}]);
    let (code, message) = juma
        .refused("propose_product", json!({"merchant": npub, "product": far}))
        .await;
    assert_eq!(code, "invalid");
    assert!(
        message.contains("mombasa"),
        "shipping zone not in the stall: {message}"
    );

    // A rejected product: the agent is told, nothing is published.
    let proposed = juma
        .ok(
            "propose_product",
            json!({"merchant": npub, "product": mango()}),
        )
        .await;
    let screens = bridge.session("B-4", PHONE, &["4", "1", "2"]).await;
    assert!(screens[2].starts_with("Rejected."), "{}", screens[2]);
    let told = juma.notice("proposal").await;
    assert_eq!(told["args"]["proposal"], proposed["proposal"]);
    assert_eq!(told["args"]["status"], "rejected");
    assert!(events_of(&soko, merchant, Kind::SetProduct)
        .await
        .is_empty());

    // Approved this time; then a deletion proposal removes it.
    juma.ok(
        "propose_product",
        json!({"merchant": npub, "product": mango()}),
    )
    .await;
    bridge.session("B-5", PHONE, &["4", "1", "1"]).await;
    juma.notice("proposal").await;
    assert_eq!(events_of(&soko, merchant, Kind::SetProduct).await.len(), 1);
    for (args, why) in [
        (
            json!({"merchant": npub, "kind": KIND_STALL, "id": "duka"}),
            "still has products",
        ),
        (
            json!({"merchant": npub, "kind": KIND_PRODUCT, "id": "pawpaw"}),
            "no product",
        ),
        (
            json!({"merchant": npub, "kind": 1, "id": "mango"}),
            "not a listing",
        ),
    ] {
        let (code, message) = juma.refused("propose_delete", args).await;
        assert_eq!(code, "invalid");
        assert!(message.contains(why), "{message}");
    }
    let deletion = juma
        .ok(
            "propose_delete",
            json!({"merchant": npub, "kind": KIND_PRODUCT, "id": "mango"}),
        )
        .await;
    assert_eq!(deletion["kind"], "delete");
    let screens = bridge.session("B-6", PHONE, &["4", "1", "1"]).await;
    assert_eq!(
        screens[1],
        "From agent Juma\nDelete product Mango: buyers no longer see it.\n1 Approve\n2 Reject\n00 Back"
    );
    let told = juma.notice("proposal").await;
    assert_eq!(told["args"]["status"], "approved");
    let deletions = events_of(&soko, merchant, Kind::EventDeletion).await;
    let coordinate = Coordinate::new(Kind::SetProduct, merchant)
        .identifier("mango")
        .to_string();
    assert!(
        deletions
            .iter()
            .any(|d| d.id.to_hex() == told["args"]["event_id"]
                && d.tags
                    .iter()
                    .any(|t| t.as_slice() == ["a", coordinate.as_str()])),
        "a kind-5 deletion of the product by the merchant"
    );

    // Decided proposals leave the list.
    let screens = bridge.session("B-7", PHONE, &["4"]).await;
    assert_eq!(screens[0], "No pending approvals.\n00 Back");

    // Withdrawn by the agent: never approvable.
    let pending = juma
        .ok(
            "propose_product",
            json!({"merchant": npub, "product": mango()}),
        )
        .await;
    let withdrawn = juma
        .ok(
            "proposal_withdraw",
            json!({"proposal": pending["proposal"]}),
        )
        .await;
    assert_eq!(withdrawn["status"], "withdrawn");
    let again = juma
        .ok(
            "proposal_withdraw",
            json!({"proposal": pending["proposal"]}),
        )
        .await;
    assert_eq!(again, withdrawn, "withdrawing again changes nothing");

    // Unlinked over USSD: the pending proposal is withdrawn, never approvable.
    let pending = juma
        .ok(
            "propose_product",
            json!({"merchant": npub, "product": mango()}),
        )
        .await;
    let screens = bridge
        .session("B-8", PHONE, &["6", "3", "1", "1", "00", "00", "4"])
        .await;
    assert!(screens[3].starts_with("Agent unlinked."), "{}", screens[3]);
    assert_eq!(
        screens[6], "No pending approvals.\n00 Back",
        "withdrawn on unlink"
    );
    let told = juma.notice("unlinked").await;
    assert_eq!(
        told["args"]["withdrawn"],
        json!([pending["proposal"]]),
        "{told}"
    );
    assert_eq!(
        juma.refused("propose_stall", json!({"merchant": npub, "stall": stall()}))
            .await
            .0,
        "not_linked"
    );
    assert_eq!(
        juma.ok("agent_merchants", json!({})).await,
        json!({"merchants": [], "proposals": []})
    );
    let withdrawn = juma
        .ok(
            "proposal_withdraw",
            json!({"proposal": pending["proposal"]}),
        )
        .await;
    assert_eq!(withdrawn["status"], "withdrawn", "by the unlink");
    assert!(withdrawn.get("merchant").is_none(), "{withdrawn}");
    assert!(
        juma.quiet("proposal").await.is_empty(),
        "no decision to tell"
    );
}

/// The `t` tags (categories) of the newest `kind` event `merchant` has on the relay for `d`.
async fn categories_on_relay(
    soko: &TestSoko,
    merchant: PublicKey,
    kind: Kind,
    d: &str,
) -> Vec<String> {
    let events = events_of(soko, merchant, kind).await;
    let newest = events
        .iter()
        .filter(|e| e.tags.identifier() == Some(d))
        .max_by_key(|e| e.created_at)
        .unwrap_or_else(|| panic!("a {kind} for {d} on the relay"));
    newest.verify().unwrap();
    assert_eq!(newest.pubkey, merchant, "signed by the merchant's key");
    newest
        .tags
        .iter()
        .filter(|t| t.kind() == TagKind::t())
        .filter_map(|t| t.content().map(str::to_owned))
        .collect()
}

/// The merchant approves the oldest pending proposal in menu 4; the detail screen.
async fn approve_first(bridge: &mut Bridge, session: &str) -> String {
    let screens = bridge.session(session, PHONE, &["4", "1", "1"]).await;
    assert!(screens[2].starts_with("Approved."), "{}", screens[2]);
    screens[1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hears_of_activation_and_product_categories_reach_both_listing_forms() {
    let bridge_keys = Keys::generate();
    let soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko)
        .await
        .naming(HopIds::ByPosition);
    let mut agent = local_agent(&soko, "Juma").await;
    let onboarded = agent
        .ok(
            "merchant_onboard",
            json!({"phone": PHONE, "name": "Mama Duka"}),
        )
        .await;
    let npub = onboarded["merchant"]["npub"].as_str().unwrap().to_owned();
    let merchant = PublicKey::parse(&npub).unwrap();
    let code = onboarded["activation_code"].as_str().unwrap().to_owned();

    // The owner finishes onboarding: the agent is told at once, once.
    bridge.onboard("AC-1", PHONE, "Mama Duka", &code).await;
    let active = agent.notice("merchant_active").await;
    assert_eq!(
        active,
        json!({"v": 1, "notice": "merchant_active", "args": {"merchant": npub, "shop": "Mama Duka"}})
    );
    assert!(
        agent.quiet("merchant_active").await.is_empty(),
        "one notice per activation"
    );

    agent
        .ok("propose_stall", json!({"merchant": npub, "stall": stall()}))
        .await;
    approve_first(&mut bridge, "AC-2").await;
    agent.notice("proposal").await;

    // Categories beside the product, normalized; the proposal and the merchant show them.
    let proposal = agent
        .ok(
            "propose_product",
            json!({"merchant": npub, "product": mango(),
                   "categories": [" Fruit ", "organic", "FRUIT"]}),
        )
        .await;
    assert_eq!(
        proposal["categories"],
        json!(["fruit", "organic"]),
        "{proposal}"
    );
    let detail = approve_first(&mut bridge, "AC-3").await;
    assert!(detail.contains("Categories: fruit, organic"), "{detail}");
    agent.notice("proposal").await;
    let overview = agent.ok("agent_merchants", json!({})).await;
    assert_eq!(
        overview["proposals"][0]["categories"],
        json!(["fruit", "organic"]),
        "{overview}"
    );
    let both = [Kind::SetProduct, Kind::Custom(30402)];
    for kind in both {
        assert_eq!(
            categories_on_relay(&soko, merchant, kind, "mango").await,
            ["fruit", "organic"],
            "{kind}"
        );
    }
    let published = events_of(&soko, merchant, Kind::SetProduct).await;
    assert!(
        published.iter().all(|e| !e.content.contains("categories")),
        "NIP-15 content carries no categories"
    );

    // An update without categories keeps them (an agent changing the price need not repeat
    // them); one with categories replaces them.
    let mut cheaper = mango();
    cheaper["price"] = json!(450);
    let kept = agent
        .ok(
            "propose_product",
            json!({"merchant": npub, "product": cheaper}),
        )
        .await;
    assert_eq!(kept["categories"], json!(["fruit", "organic"]), "{kept}");
    approve_first(&mut bridge, "AC-4").await;
    agent.notice("proposal").await;
    assert_eq!(
        categories_on_relay(&soko, merchant, Kind::Custom(30402), "mango").await,
        ["fruit", "organic"]
    );
    agent
        .ok(
            "propose_product",
            json!({"merchant": npub, "product": cheaper, "categories": ["matunda"]}),
        )
        .await;
    approve_first(&mut bridge, "AC-5").await;
    agent.notice("proposal").await;
    for kind in both {
        assert_eq!(
            categories_on_relay(&soko, merchant, kind, "mango").await,
            ["matunda"],
            "{kind}"
        );
    }

    // Bad categories are refused with the reason, and nothing is recorded.
    let before = agent.ok("agent_merchants", json!({})).await["proposals"]
        .as_array()
        .unwrap()
        .len();
    let eleven: Vec<String> = (0..11).map(|n| format!("c{n}")).collect();
    for (bad, why) in [
        (
            json!(eleven),
            "a product has at most 10 categories; 11 given",
        ),
        (
            json!(["fruit", "  "]),
            "category \"  \" must be 1 to 32 characters",
        ),
        (json!(["x".repeat(33)]), "must be 1 to 32 characters"),
    ] {
        let (code, message) = agent
            .refused(
                "propose_product",
                json!({"merchant": npub, "product": mango(), "categories": bad}),
            )
            .await;
        assert_eq!(code, "invalid", "{message}");
        assert!(message.contains(why), "{message}");
    }
    let after = agent.ok("agent_merchants", json!({})).await["proposals"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "a refused proposal is not stored");

    // The operator's product_put: same rules; `[]` clears them, and none given keeps them.
    let refused = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": mango(), "categories": ["ok", "bad\u{7}"]}),
    )
    .await;
    assert_eq!(refusal_code(&refused), "invalid");
    let put = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": mango(), "categories": ["Fruit", "local"]}),
    )
    .await;
    assert!(put.ok, "{put:?}");
    let put = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": cheaper}),
    )
    .await;
    assert!(put.ok, "{put:?}");
    for kind in both {
        assert_eq!(
            categories_on_relay(&soko, merchant, kind, "mango").await,
            ["fruit", "local"],
            "{kind}"
        );
    }
    let put = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": mango(), "categories": []}),
    )
    .await;
    assert!(put.ok, "{put:?}");
    for kind in both {
        assert!(
            categories_on_relay(&soko, merchant, kind, "mango")
                .await
                .is_empty(),
            "{kind}"
        );
    }
}

/// An agent app reopened on a backlog of notices asks its signer to open them all at once:
/// two NIP-46 requests per notice, past the relay's 120 a minute per pubkey, from the app's
/// key and, answered, from the signer's. Those ephemeral requests and answers are not the
/// per-pubkey budget's to stop (kinds/relay.md): every one gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_answers_a_backlog_past_the_per_pubkey_budget() {
    let soko = TestSoko::start().await;
    let bunker = Bunker::start(&soko.relay_url()).await;
    let app = std::sync::Arc::new(bunker.connect());
    let peer = soko.bot();
    let backlog = 80;
    let mut sealing = tokio::task::JoinSet::new();
    for i in 0..backlog {
        let app = app.clone();
        sealing.spawn(async move {
            let text = format!("notice {i}");
            let sealed = app.nip44_encrypt(&peer, &text).await?;
            Ok::<_, SignerError>((text, sealed))
        });
    }
    let mut opening = tokio::task::JoinSet::new();
    while let Some(sealed) = sealing.join_next().await {
        let (text, sealed) = sealed.unwrap().expect("the signer seals every notice");
        let app = app.clone();
        opening.spawn(async move { (text, app.nip44_decrypt(&peer, &sealed).await) });
    }
    let mut opened = 0;
    while let Some(done) = opening.join_next().await {
        let (text, plain) = done.unwrap();
        assert_eq!(plain.expect("the signer opens every notice"), text);
        opened += 1;
    }
    assert_eq!(opened, backlog, "{} requests each way", 2 * backlog);
}
