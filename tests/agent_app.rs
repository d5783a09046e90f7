//! The agent app (`examples/agent-app`) in a real browser: headless Debian Chromium, driven by
//! playwright-core from `examples/agent-app/test/e2e.mjs`, opens the committed
//! `dist/agent-app.html` from disk and does the agent's day against a real soko (embedded
//! relay, dev mint) with the agent's key in a NIP-46 bunker: login with the bunker URI,
//! registration with an operator's invite, onboarding, a refused stall and a good one, a
//! product with categories; the merchant onboards (the page shows it active on soko's
//! `merchant_active` notice, without asking) and approves over USSD hops sent from here; the
//! listings on the relay are signed by the merchant's key, the product's categories its `t`
//! tags; a paid order reaches the page as a notice; a deletion is proposed and withdrawn;
//! another merchant's phone gives a link request; the product is edited (price and
//! categories);
//! a reload keeps the session; when the relay stops, the page says it cannot reach it.
//! Screenshots of each step land in `target/tmp/agent-app/`.
//!
//! Chromium (`apt-get install chromium`) and the app's node_modules (`npm ci` in
//! examples/agent-app) must be there: `.ci/run` installs both; without them this test fails
//! and says so.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod bunker;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use bunker::*;
use common::bridge::*;
use common::*;
use nostr_connect::signer::{
    NostrConnectKeys, NostrConnectRemoteSigner, NostrConnectSignerActions,
};
use nostr_sdk::nips::nip46::{NostrConnectRequest, NostrConnectURI};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::proto::nip15::{Product, Stall};

const PHONE: &str = "+254711000333";
/// The operator's merchant: onboarding its phone asks its owner for a link.
const OTHER_PHONE: &str = "+254711000444";
const PIN: &str = "4821";
/// The longest one browser step may take (each has its own 60 s wait inside the page).
const STEP_TIMEOUT: Duration = Duration::from_secs(150);

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent-app")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What the browser test needs besides cargo; a failure that says how to get it.
fn require_tools() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the agent app's tests need Node.js (`node`) on PATH"
    );
    let browser = chromium();
    assert!(
        browser.exists(),
        "the agent app's browser test needs Chromium at {} (Debian: `apt-get install -y chromium`, \
         as .ci/run does; or set CHROMIUM)",
        browser.display()
    );
    assert!(
        app_dir().join("node_modules/playwright-core").exists(),
        "the agent app's browser test needs its node_modules: run `npm ci` in examples/agent-app \
         (as .ci/run does)"
    );
    assert!(
        app_dir().join("dist/agent-app.html").exists(),
        "examples/agent-app/dist/agent-app.html is missing: run `npm run build` there and commit it"
    );
}

/// Runs `node ARGS` in the app's folder; it must succeed.
fn node(args: &[&str]) {
    let out = Command::new("node")
        .args(args)
        .current_dir(app_dir())
        .output()
        .expect("the agent app's checks need Node.js (`node`) on PATH");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_ui_string_is_in_english_and_swahili() {
    node(&["test/strings.mjs"]);
}

#[test]
fn the_pages_form_checks_follow_sokos_listing_rules() {
    node(&["--test", "test/rules.test.mjs"]);
}

/// The e2e script, and its `STEP` lines as they come.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    steps: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Browser {
    fn start(vars: &[(&str, String)]) -> Self {
        let mut command = Command::new("node");
        command
            .arg("test/e2e.mjs")
            .current_dir(app_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in vars {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("node starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, steps) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("browser: {line}");
                if let Some(step) = line.strip_prefix("STEP ") {
                    if tx.send(step.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Self {
            child,
            stdin,
            steps,
        }
    }

    /// Waits for the step `name`; its data.
    async fn step(&mut self, name: &str) -> Value {
        let line = tokio::time::timeout(STEP_TIMEOUT, self.steps.recv())
            .await
            .unwrap_or_else(|_| panic!("the browser did not reach {name:?} in time"))
            .unwrap_or_else(|| {
                panic!("the browser script ended before {name:?} (its errors are above)")
            });
        let (got, data) = line.split_once(' ').unwrap_or((line.as_str(), "{}"));
        assert_eq!(got, name, "browser steps out of order: {line}");
        serde_json::from_str(data).expect("step data is JSON")
    }

    /// Lets the page go on after the merchant's part.
    fn go(&mut self) {
        self.stdin.write_all(b"GO\n").expect("the browser listens");
        self.stdin.flush().expect("the browser listens");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The merchant's handset, through a trusted USSD bridge (hops named by position, as
/// `soko-ussd` names them).
async fn screen(bridge: &mut Bridge, session: &str, text: &str) -> String {
    bridge.hop(session, PHONE, text).await.screen
}

/// A logged-in session, then `inputs` one by one; the last screen.
async fn menu(bridge: &mut Bridge, session: &str, inputs: &[&str]) -> String {
    let login = screen(bridge, session, "").await;
    assert!(login.ends_with("Enter your PIN:"), "{login}");
    let mut text = PIN.to_owned();
    let mut last = screen(bridge, session, &text).await;
    for input in inputs {
        text = format!("{text}*{input}");
        last = screen(bridge, session, &text).await;
    }
    last
}

/// An event's `t` tags: a NIP-15 product's categories.
fn categories(event: &Event) -> Vec<String> {
    event
        .tags
        .iter()
        .filter(|t| t.kind() == TagKind::t())
        .filter_map(|t| t.content().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_does_the_whole_day_in_the_browser() {
    require_tools();
    let started = Instant::now();
    let bridge_keys = Keys::generate();
    let mut soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko)
        .await
        .naming(HopIds::ByPosition);
    let bunker = Bunker::start(&soko.relay_url()).await;
    let created = operator(&soko, "invite_create", json!({"role": "agent"})).await;
    assert!(created.ok, "{created:?}");
    let invite = created.result.unwrap()["code"].as_str().unwrap().to_owned();
    let added = operator(
        &soko,
        "merchant_add",
        json!({"name": "Baba Duka", "phone": OTHER_PHONE}),
    )
    .await;
    assert!(added.ok, "{added:?}");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-app");
    let _ = std::fs::remove_dir_all(&shots);

    let mut browser = Browser::start(&[
        (
            "APP",
            app_dir().join("dist/agent-app.html").display().to_string(),
        ),
        ("RELAY", soko.relay_url().to_string()),
        ("BOT", soko.bot().to_bech32().unwrap()),
        ("BUNKER", bunker.uri.to_string()),
        ("INVITE", invite),
        ("PHONE", PHONE.to_owned()),
        ("OTHER_PHONE", OTHER_PHONE.to_owned()),
        ("SHOTS", shots.display().to_string()),
        ("CHROMIUM", chromium().display().to_string()),
    ]);

    browser.step("registered").await;
    let onboarded = browser.step("onboarded").await;
    let npub = onboarded["npub"].as_str().expect("the merchant's npub");
    let merchant = PublicKey::parse(npub).unwrap();
    // The owner dials in with the code the page showed, sets a PIN and opens the shop.
    let code = onboarded["code"].as_str().unwrap().replace(' ', "");
    assert_eq!(code.len(), 12, "{onboarded}");
    let welcome = screen(&mut bridge, "AA-1", "").await;
    assert!(welcome.contains("Mama Duka"), "{welcome}");
    for text in [
        code.clone(),
        format!("{code}*{PIN}"),
        format!("{code}*{PIN}*{PIN}"),
    ] {
        screen(&mut bridge, "AA-1", &text).await;
    }
    let open = screen(&mut bridge, "AA-1", &format!("{code}*{PIN}*{PIN}*1")).await;
    assert!(open.starts_with("Your shop is open!"), "{open}");
    browser.go();

    // soko's refusal reached the page as a sentence; nothing was proposed by it.
    let refused = browser.step("refused").await;
    let text = refused["text"].as_str().unwrap();
    assert!(
        text.starts_with("soko refused: ") && text.contains("XYZ"),
        "{text}"
    );

    browser.step("stall-proposed").await;
    let approved = menu(&mut bridge, "AA-2", &["4", "1", "1"]).await;
    assert!(approved.starts_with("Approved."), "{approved}");
    browser.go();

    browser.step("product-proposed").await;
    let approved = menu(&mut bridge, "AA-3", &["4", "1", "1"]).await;
    assert!(approved.starts_with("Approved."), "{approved}");

    // On the relay, under the merchant's key, what the page proposed.
    let stalls = events_of(&soko, merchant, Kind::SetStall).await;
    let stall = stalls.first().expect("the stall is on the relay");
    stall.verify().unwrap();
    assert_eq!(stall.pubkey, merchant);
    let content: Stall = serde_json::from_str(&stall.content).unwrap();
    assert_eq!(
        (content.id.as_str(), content.currency.as_str()),
        ("duka", "sat")
    );
    assert_eq!(content.shipping[0].id, "nairobi");
    assert_eq!(content.shipping[0].regions, ["KE"]);
    let products = events_of(&soko, merchant, Kind::SetProduct).await;
    let product = products.first().expect("the product is on the relay");
    product.verify().unwrap();
    assert_eq!(product.pubkey, merchant);
    let content: Product = serde_json::from_str(&product.content).unwrap();
    assert_eq!(
        (content.stall_id.as_str(), content.price, content.quantity),
        ("duka", 500.0, Some(10))
    );
    assert_eq!(content.images, ["https://example.com/mango.jpg"]);
    assert_eq!(content.shipping[0].id, "nairobi");
    // The categories typed in the form, normalized, as the 30018's `t` tags.
    assert_eq!(categories(product), ["fruit", "organic"]);
    browser.go();

    // A buyer orders two mangoes; the page shows the paid-order notice.
    browser.step("listed").await;
    paid_order(&soko, merchant, "o-1").await;
    browser.go();

    // The agent edits the product's price; the merchant approves the change.
    browser.step("product-edited").await;
    let approved = menu(&mut bridge, "AA-4", &["4", "1", "1"]).await;
    assert!(approved.starts_with("Approved."), "{approved}");
    eventually(|| async {
        let products = events_of(&soko, merchant, Kind::SetProduct).await;
        products.iter().any(|e| {
            serde_json::from_str::<Product>(&e.content).is_ok_and(|p| p.price == 450.0)
                && categories(e) == ["fruit", "local"]
                && e.pubkey == merchant
                && e.verify().is_ok()
        })
    })
    .await;
    browser.go();

    // The relay stops: the page must say it cannot reach it.
    browser.step("reloaded").await;
    soko.stop().await;
    browser.go();

    let done = browser.step("done").await;
    assert_eq!(done["npub"], npub);
    let status = browser.child.wait().expect("the browser script ends");
    assert!(status.success(), "the browser script failed: {status}");
    let taken = std::fs::read_dir(&shots).map(|d| d.count()).unwrap_or(0);
    assert!(
        taken >= 10,
        "screenshots of each step in {}",
        shots.display()
    );
    println!(
        "agent app e2e: {:.1} s, {taken} screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
    drop(bunker);
}

/// The signer app's owner approves every request (a test has nobody to ask).
struct ApproveAll;

impl NostrConnectSignerActions for ApproveAll {
    fn approve(&self, _client: &PublicKey, _request: &NostrConnectRequest) -> bool {
        true
    }
}

/// The other login: the page's `nostrconnect://` offer (its QR code) taken by a signer app,
/// here rust-nostr's remote signer started from the URI the page shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_app_takes_the_pages_nostrconnect_offer() {
    require_tools();
    let soko = TestSoko::start().await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-app-connect");
    let _ = std::fs::remove_dir_all(&shots);
    let mut browser = Browser::start(&[
        ("MODE", "connect".to_owned()),
        (
            "APP",
            app_dir().join("dist/agent-app.html").display().to_string(),
        ),
        ("RELAY", soko.relay_url().to_string()),
        ("BOT", soko.bot().to_bech32().unwrap()),
        ("SHOTS", shots.display().to_string()),
        ("CHROMIUM", chromium().display().to_string()),
    ]);
    let offer = browser.step("offer").await;
    let text = offer["uri"].as_str().expect("the offer");
    let uri = NostrConnectURI::parse(text).expect("a signer app reads the offer");
    assert!(!uri.is_bunker(), "{text}");
    assert_eq!(uri.relays(), [soko.relay_url()], "{text}");
    // The secret the signer must show back (rust-nostr takes it apart from the URI).
    let secret = text
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .expect("the offer has a secret")
        .to_owned();
    let keys = NostrConnectKeys {
        signer: Keys::generate(),
        user: Keys::generate(),
    };
    let user = keys.user.public_key();
    let signer = NostrConnectRemoteSigner::from_uri(uri, keys, Some(secret), None).unwrap();
    let serving = tokio::spawn(async move { signer.serve(ApproveAll).await });
    browser.go();

    // Logged in as the signer's user, and soko answered whoami for that key (an anonymous
    // key is asked to register).
    let done = browser.step("done").await;
    assert_eq!(done["me"], user.to_bech32().unwrap(), "{done}");
    let status = browser.child.wait().expect("the browser script ends");
    assert!(status.success(), "the browser script failed: {status}");
    serving.abort();
}
