//! An agent's walkthrough against a running soko, with keys that live in a NIP-46 remote
//! signer ("bunker"): the agent program itself holds no key of the agent.
//!
//! ```sh
//! cargo run --release -- run [--config FILE] [--data-dir DIR]
//! cargo run --release --example agent -- --bunker 'bunker://…' --invite XXXX-XXXX-XXXX-XXXX
//! ```
//!
//! Without `--bunker` it starts a throwaway bunker (rust-nostr's `nostr-connect` remote
//! signer, with a fresh key) on soko's relay and uses its `bunker://` URI, so the walkthrough
//! runs on its own; without `--invite` the operator (the key in the data dir, as for
//! `soko invite create`) creates a one-use agent invite first. Then, printing every step:
//!
//! 1. it connects to the bunker and asks it for the agent's public key;
//! 2. it asks soko `whoami` (a NIP-17 DM whose seal the bunker encrypts and signs; soko's
//!    answer is unwrapped by the bunker too);
//! 3. it has the bunker sign the kind-29470 registration event carrying the invite code and
//!    sends it with `register` (`kinds/agents.md`);
//! 4. it asks `whoami` again;
//! 5. it onboards a merchant by phone (`merchant_onboard`): a new number gives a pending
//!    merchant linked to the agent; a number that is a merchant's already gives a link
//!    request, which the merchant approves in USSD menu 4;
//! 6. it proposes a stall (`propose_stall`) and waits (`--wait` seconds) for the merchant to
//!    approve it over USSD — e.g. with `cargo run --example ussd_phone -- --phone <phone>`
//!    through a running `soko-ussd`: choose a PIN, repeat it, 1 to open the shop, then 4
//!    (pending approvals), 1 (the proposal), 1 (approve);
//! 7. once the stall is published, it proposes a product of that stall the same way;
//! 8. it lists its merchants and proposals (`agent_merchants`).
//!
//! Every approval or rejection reaches the agent as a `proposal` notice (`kinds/agents.md`).

#[path = "walkthrough/mod.rs"]
mod walkthrough;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use nostr_connect::client::NostrConnect;
use nostr_connect::signer::{
    NostrConnectKeys, NostrConnectRemoteSigner, NostrConnectSignerActions,
};
use nostr_sdk::nips::nip46::{NostrConnectRequest, NostrConnectURI};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::proto::agents::REGISTRATION_KIND;

/// How long connecting to a relay may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(about = "Register as a soko agent with keys in a NIP-46 remote signer")]
struct Args {
    /// The agent's remote signer: a `bunker://<signer pubkey>?relay=…&secret=…` URI. Without
    /// it, a throwaway bunker with a fresh key runs in-process on soko's relay.
    #[arg(long)]
    bunker: Option<String>,

    /// The invite code (from `soko invite create --role agent`). Without it, the operator
    /// key in the data dir creates a one-use agent invite.
    #[arg(long)]
    invite: Option<String>,

    /// A name to register with (merchants see it in their USSD menus).
    #[arg(long, default_value = "Walkthrough agent")]
    name: String,

    /// The phone number of the merchant to onboard (`+` and 7 to 15 digits).
    #[arg(long, default_value = "+254711000111")]
    phone: String,

    /// The shop name its owner confirms over USSD.
    #[arg(long, default_value = "Mama Duka")]
    shop: String,

    /// Seconds to wait for the merchant's approval of each proposal (0: do not wait).
    #[arg(long, default_value_t = 300)]
    wait: u64,

    /// Config file of the running soko (TOML); without it the defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Data directory of the running soko; overrides [storage] data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,

    /// Seconds to wait for each answer (from soko, and from the bunker, which may ask its
    /// owner to approve each request).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the async runtime")
        .and_then(|runtime| runtime.block_on(walkthrough(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nagent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn walkthrough(args: Args) -> Result<()> {
    let walkthrough::RunningSoko { config, bot, relay } =
        walkthrough::running_soko(args.config.as_deref(), args.data_dir.as_deref())?;
    let timeout = Duration::from_secs(args.timeout);
    println!(
        "soko agent walkthrough — relay {relay}, soko {}",
        npub(&bot)
    );

    let (uri, _local_bunker) = match &args.bunker {
        Some(text) => (
            NostrConnectURI::parse(text).context("--bunker is not a bunker:// URI")?,
            None,
        ),
        None => {
            let (uri, task) = local_bunker(&relay).await?;
            println!("\n0. No --bunker given: a throwaway bunker (fresh key) runs on soko's relay");
            println!("   {uri}");
            (uri, Some(task))
        }
    };
    if !uri.is_bunker() {
        bail!("--bunker must be a bunker:// URI (a nostrconnect:// URI is the client's side)");
    }

    let code = match &args.invite {
        Some(code) => code.clone(),
        None => {
            println!("\n   No --invite given: the operator creates a one-use agent invite");
            let answer = soko::operator::call(
                &config,
                "invite_create",
                json!({"role": "agent", "uses": 1}),
            )
            .await?;
            let result = answer
                .result
                .filter(|_| answer.ok)
                .ok_or_else(|| anyhow!("soko refused the invite: {:?}", answer.error))?;
            println!("   invite_create → {result}");
            result["code"]
                .as_str()
                .ok_or_else(|| anyhow!("no code in the answer"))?
                .to_owned()
        }
    };

    println!("\n1. Connecting to the bunker (NIP-46); this program holds no key of the agent");
    let signer = NostrConnect::new(uri, Keys::generate(), timeout, None)?;
    let me = signer
        .get_public_key()
        .await
        .context("the bunker did not answer `connect`/`get_public_key`")?;
    println!("   agent npub   {}", npub(&me));

    let mut agent = Agent::connect(signer, &relay, me).await?;

    println!("\n2. whoami");
    let answer = agent.ask(bot, "w1", "whoami", json!({}), timeout).await?;
    println!("   ← {answer}");

    println!("\n3. Registering with the invite code");
    let event = EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
        .tags([
            Tag::parse(["invite", code.as_str()])?,
            Tag::parse(["role", "agent"])?,
            Tag::parse(["name", args.name.as_str()])?,
            Tag::public_key(bot),
        ])
        .sign(&agent.client.signer().await?)
        .await
        .context("the bunker did not sign the registration event")?;
    println!("   registration event (signed by the bunker):");
    println!("   {}", event.as_json());
    let request_id = format!("reg-{}", &event.id.to_hex()[..8]);
    let answer = agent
        .ask(
            bot,
            &request_id,
            "register",
            json!({ "event": event }),
            timeout,
        )
        .await?;
    println!("   ← {answer}");
    if answer["ok"] != true {
        bail!("soko refused the registration: {}", answer["error"]);
    }

    println!("\n4. whoami");
    let answer = agent.ask(bot, "w2", "whoami", json!({}), timeout).await?;
    println!("   ← {answer}");

    let wait = Duration::from_secs(args.wait);
    println!("\n5. Onboarding the merchant with phone {}", args.phone);
    let answer = agent
        .ask(
            bot,
            "o1",
            "merchant_onboard",
            json!({"phone": args.phone, "name": args.shop}),
            timeout,
        )
        .await?;
    println!("   ← {answer}");
    let result = ok_result(&answer, "merchant_onboard")?;
    let merchant = match result["merchant"]["npub"].as_str() {
        Some(npub) => {
            println!(
                "   Linked. The owner of {} finishes onboarding by dialling soko's USSD code: \
                 a PIN, twice, then 1 to confirm the shop name.",
                args.phone
            );
            npub.to_owned()
        }
        None => {
            println!(
                "   This number is a merchant's already: soko asked its owner to approve the \
                 link (USSD menu 4: choose it, 1 Approve)."
            );
            let proposal = result["proposal"].as_u64().unwrap_or_default();
            match agent.decision(proposal, wait).await? {
                Some(notice) if notice["args"]["status"] == "approved" => notice["args"]
                    ["merchant"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no merchant in {notice}"))?
                    .to_owned(),
                Some(notice) => bail!("the merchant did not link: {notice}"),
                None => {
                    println!("   Not approved within {} s; stopping here.", args.wait);
                    return finish(agent, bot, timeout).await;
                }
            }
        }
    };

    println!("\n6. Proposing a stall to {merchant}");
    let stall = json!({"id": "duka", "name": args.shop, "currency": "sat",
        "shipping": [{"id": "local", "name": "Local delivery", "cost": 100}]});
    let answer = agent
        .ask(
            bot,
            "s1",
            "propose_stall",
            json!({"merchant": merchant, "stall": stall}),
            timeout,
        )
        .await?;
    println!("   ← {answer}");
    let proposal = ok_result(&answer, "propose_stall")?["proposal"]
        .as_u64()
        .unwrap_or_default();
    println!(
        "   Waiting up to {} s for the merchant: USSD menu 4 → 1 → 1 Approve (the owner dials \
         in first if the shop is new).",
        args.wait
    );
    match agent.decision(proposal, wait).await? {
        Some(notice) if notice["args"]["status"] == "approved" => {
            println!("   ← {notice}\n   The stall is published under the merchant's key.");
        }
        Some(notice) => {
            println!("   ← {notice}\n   Rejected: the product needs a published stall.");
            return finish(agent, bot, timeout).await;
        }
        None => {
            println!(
                "   Not approved within {} s. A product needs its stall published first, so \
                 the walkthrough stops here; approve the stall and propose the product later.",
                args.wait
            );
            return finish(agent, bot, timeout).await;
        }
    }

    println!("\n7. Proposing a product of that stall");
    let product = json!({"id": "mango", "stall_id": "duka", "name": "Mango", "currency": "sat",
        "price": 500, "quantity": 10, "shipping": [{"id": "local", "cost": 10}]});
    let answer = agent
        .ask(
            bot,
            "p1",
            "propose_product",
            json!({"merchant": merchant, "product": product}),
            timeout,
        )
        .await?;
    println!("   ← {answer}");
    let proposal = ok_result(&answer, "propose_product")?["proposal"]
        .as_u64()
        .unwrap_or_default();
    println!(
        "   Waiting up to {} s for the merchant's decision (menu 4).",
        args.wait
    );
    match agent.decision(proposal, wait).await? {
        Some(notice) => println!("   ← {notice}"),
        None => println!("   Still pending; it stays in the merchant's menu 4."),
    }
    finish(agent, bot, timeout).await
}

/// Step 8: the agent's merchants and proposals, then disconnect.
async fn finish(mut agent: Agent, bot: PublicKey, timeout: Duration) -> Result<()> {
    println!("\n8. agent_merchants");
    let answer = agent
        .ask(bot, "a1", "agent_merchants", json!({}), timeout)
        .await?;
    println!("   ← {answer}");
    agent.client.shutdown().await;
    Ok(())
}

fn ok_result<'a>(answer: &'a Value, cmd: &str) -> Result<&'a Value> {
    if answer["ok"] != true {
        bail!("soko refused {cmd}: {}", answer["error"]);
    }
    Ok(&answer["result"])
}

/// A throwaway bunker on `relay` that approves everything; returns once it answers.
async fn local_bunker(relay: &RelayUrl) -> Result<(NostrConnectURI, tokio::task::JoinHandle<()>)> {
    struct ApproveAll;
    impl NostrConnectSignerActions for ApproveAll {
        fn approve(&self, _: &PublicKey, _: &NostrConnectRequest) -> bool {
            true
        }
    }
    let keys = NostrConnectKeys {
        signer: Keys::generate(),
        user: Keys::generate(),
    };
    let secret = Keys::generate().public_key().to_hex()[..16].to_owned();
    let bunker = NostrConnectRemoteSigner::new(keys, [relay.clone()], Some(secret), None)?;
    let uri = bunker.bunker_uri();
    let task = tokio::spawn(async move {
        if let Err(e) = bunker.serve(ApproveAll).await {
            eprintln!("bunker stopped: {e}");
        }
    });
    // NIP-46 messages are ephemeral: a request sent before the bunker subscribed is lost, so
    // probe until it answers.
    for _ in 0..20 {
        let probe = NostrConnect::new(uri.clone(), Keys::generate(), Duration::from_secs(1), None)?;
        let answered = probe.get_public_key().await.is_ok();
        probe.shutdown().await;
        if answered {
            return Ok((uri, task));
        }
    }
    bail!("the local bunker did not come up on {relay}: is `soko run` running?")
}

/// The agent's relay client: its only signer is the bunker.
struct Agent {
    client: Client,
    bot: Option<PublicKey>,
    inbox: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    /// Notices soko sent while the agent waited for something else.
    notices: Vec<Value>,
}

impl Agent {
    async fn connect(signer: NostrConnect, relay: &RelayUrl, me: PublicKey) -> Result<Self> {
        let client = Client::builder().signer(signer).build();
        client.add_relay(relay.clone()).await?;
        client.connect().await;
        client.wait_for_connection(CONNECT_TIMEOUT).await;
        let inbox = client.notifications();
        // Only new gift wraps: answers from earlier runs would each cost the bunker two
        // decryptions, and they are told apart by request id anyway.
        client
            .subscribe(Filter::new().kind(Kind::GiftWrap).pubkey(me).limit(0), None)
            .await?;
        Ok(Self {
            client,
            bot: None,
            inbox,
            notices: Vec::new(),
        })
    }

    /// The `proposal` notice deciding `proposal`, if it comes within `wait`.
    async fn decision(&mut self, proposal: u64, wait: Duration) -> Result<Option<Value>> {
        let about = |n: &Value| n["notice"] == "proposal" && n["args"]["proposal"] == proposal;
        if let Some(at) = self.notices.iter().position(about) {
            return Ok(Some(self.notices.remove(at)));
        }
        let Some(bot) = self.bot else {
            return Ok(None);
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Ok(message) = tokio::time::timeout_at(deadline, self.next_from(bot)).await else {
                return Ok(None);
            };
            let message = message?;
            if about(&message) {
                return Ok(Some(message));
            }
            if message.get("notice").is_some() {
                self.notices.push(message);
            }
        }
    }

    /// The next message from soko, unwrapped by the bunker.
    async fn next_from(&mut self, bot: PublicKey) -> Result<Value> {
        loop {
            let notification = self.inbox.recv().await?;
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            if event.kind != Kind::GiftWrap {
                continue;
            }
            let gift = self.client.unwrap_gift_wrap(&event).await?;
            if gift.sender == bot {
                return Ok(serde_json::from_str(&gift.rumor.content)?);
            }
        }
    }

    /// Sends one command by NIP-17 (sealed by the bunker) and returns soko's answer to it.
    async fn ask(
        &mut self,
        bot: PublicKey,
        id: &str,
        cmd: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let request = json!({"v": 1, "id": id, "cmd": cmd, "args": args});
        println!("   → {request}");
        let sent = self
            .client
            .send_private_msg(bot, request.to_string(), [])
            .await
            .context("sending the DM (the bunker encrypts and signs its seal)")?;
        if sent.success.is_empty() {
            bail!("the relay refused the DM: {:?}", sent.failed);
        }
        self.bot = Some(bot);
        let answer = tokio::time::timeout(timeout, async {
            loop {
                let answer = self.next_from(bot).await?;
                if answer["re"] == id {
                    return anyhow::Ok(answer);
                }
                if answer.get("notice").is_some() {
                    self.notices.push(answer);
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no answer to {cmd} within {} s", timeout.as_secs()))??;
        Ok(answer)
    }
}

fn npub(key: &PublicKey) -> String {
    key.to_bech32().unwrap_or_else(|_| key.to_hex())
}
