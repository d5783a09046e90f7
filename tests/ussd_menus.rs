//! USSD menus end to end on real parts: a nostr-sdk client holding a configured bridge key
//! sends `ussd_hop` gift wraps to soko (as the `soko-ussd` bridge does) and reads the
//! screens back; buyers order over NIP-15; the in-process mint settles the invoices; a
//! loopback LNURL-pay service receives the withdrawal.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::bridge::*;
use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::escrow::EscrowState;
use soko::money::Sats;

const PHONE: &str = "+254711000111";

/// Dials in for the first time: the activation code, PIN twice, shop name confirmed;
/// returns the session's text so far.
async fn onboard(bridge: &mut Bridge, session: &str, code: &str, pin: &str) -> String {
    let welcome = bridge.hop(session, PHONE, "").await;
    assert_eq!(
        welcome.screen,
        "Welcome to soko, Mama Duka!\nEnter the 12-digit activation code from your agent or soko's operator:"
    );
    assert!(!welcome.end);
    let choose = bridge.hop(session, PHONE, code).await;
    assert_eq!(choose.screen, "Choose a PIN of 4 to 6 digits:");
    let again = bridge.hop(session, PHONE, &format!("{code}*{pin}")).await;
    assert_eq!(again.screen, "Enter the same PIN again:");
    let name = bridge
        .hop(session, PHONE, &format!("{code}*{pin}*{pin}"))
        .await;
    assert_eq!(
        name.screen,
        "Is this your shop's name?\nMama Duka\n1 Yes, open my shop\n2 No"
    );
    let text = format!("{code}*{pin}*{pin}*1");
    let open = bridge.hop(session, PHONE, &text).await;
    assert!(
        open.screen
            .starts_with("Your shop is open!\nMama Duka\n1 Orders\n2 Confirm delivery"),
        "{}",
        open.screen
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_runs_its_shop_from_a_feature_phone() {
    let bridge_keys = Keys::generate();
    let mut soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko).await;
    let (merchant, npub, activation) = pending_merchant(&soko, PHONE, None).await.typed();

    // Pending until onboarding: no listings, no profile yet.
    let stall = json!({"id":"duka","name":"Mama Duka","currency":"sat"});
    let refused = operator(
        &soko,
        "stall_put",
        json!({"merchant": npub, "stall": stall}),
    )
    .await;
    let error = refused.error.expect("refused");
    assert!(error.message.contains("pending"), "{}", error.message);
    assert!(events_of(&soko, merchant, Kind::Metadata).await.is_empty());

    let onboarded = onboard(&mut bridge, "AT-1", &activation, "4821").await;
    let profile = events_of(&soko, merchant, Kind::Metadata).await;
    let profile = profile.first().expect("profile published on activation");
    assert!(profile.content.contains("Mama Duka"));
    put_listings(&soko, &npub).await;

    // A buyer orders and pays; the bridge is asked to text the merchant.
    let (mut buyer, code) = paid_order(&soko, merchant, "o-1").await;
    let notice = bridge.notice().await;
    assert_eq!(notice["notice"], "sms", "{notice}");
    assert_eq!(notice["args"]["phone"], PHONE);
    let sms = notice["args"]["text"].as_str().unwrap();
    assert!(
        sms.contains("order #1") && sms.contains("1120 sat"),
        "{sms}"
    );
    assert!(sms.chars().count() <= 160);
    assert!(
        !sms.contains("Amina") && !sms.contains("Moi"),
        "no buyer data: {sms}"
    );

    // Menu 1: the paid order, then its detail with the buyer's shipping details.
    let s = onboarded.as_str();
    let list = bridge.hop("AT-1", PHONE, &format!("{s}*1")).await;
    assert_eq!(
        list.screen,
        "Paid orders, newest first:\n#1 PAID 1120 sat\nReply with an order no.\n00 Back"
    );
    let detail = bridge.hop("AT-1", PHONE, &format!("{s}*1*1")).await;
    assert_eq!(
        detail.screen,
        "Order #1: PAID 1120 sat\n2 x Mango\nTo: Amina\nAddress: Moi Avenue 12\nPhone: +254722000333\nNote: Leave it at the gate\nZone: nairobi\n9 Confirm delivery\n00 Back"
    );
    bridge.hop("AT-1", PHONE, &format!("{s}*1*1*00")).await;
    let main = bridge.hop("AT-1", PHONE, &format!("{s}*1*1*00*00")).await;
    assert!(
        main.screen.starts_with("Mama Duka\n1 Orders"),
        "{}",
        main.screen
    );

    // Menu 2: a wrong code, then the buyer's code releases the escrow.
    let s = format!("{s}*1*1*00*00*2");
    let ask = bridge.hop("AT-1", PHONE, &s).await;
    assert_eq!(
        ask.screen,
        "Confirm delivery: enter the order no.:\n00 Back"
    );
    let s = format!("{s}*1");
    bridge.hop("AT-1", PHONE, &s).await;
    let wrong = bridge.hop("AT-1", PHONE, &format!("{s}*00000000")).await;
    assert_eq!(
        wrong.screen,
        "Wrong code for order #1; 4 tries left\nOrder #1: 1120 sat.\nEnter the buyer's 8-digit code:\n00 Back"
    );
    let escrow = soko.daemon().escrow().clone();
    assert_eq!(
        escrow.order(&merchant, 1).unwrap().unwrap().state,
        EscrowState::Paid
    );
    let done = bridge
        .hop("AT-1", PHONE, &format!("{s}*00000000*{code}"))
        .await;
    assert!(done.end);
    assert_eq!(
        done.screen,
        "Order #1 delivered: 1120 sat released to you. Balance: 1120 sat."
    );
    assert_delivered_over_ussd(&soko, merchant, &mut buyer, Sats(1120)).await;

    // Menu 5, in a new session: withdraw to a Lightning address typed in, confirmed.
    let mama_dir = tempfile::tempdir().unwrap();
    let (lnurlp, mama_wallet, _server) =
        lnurl_service_on(0, soko.daemon().mint_url(), mama_dir.path()).await;
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp).encode();
    let login = bridge.hop("AT-2", PHONE, "").await;
    assert_eq!(login.screen, "soko: Mama Duka\nEnter your PIN:");
    bridge.hop("AT-2", PHONE, "4821").await;
    let balance = bridge.hop("AT-2", PHONE, "4821*5").await;
    assert_eq!(
        balance.screen,
        "Balance: 1120 sat\n2 Withdraw to another address\n00 Back"
    );
    let to = bridge.hop("AT-2", PHONE, "4821*5*2").await;
    assert_eq!(
        to.screen,
        "Type the Lightning address (name@domain):\n00 Back"
    );
    let confirm = bridge
        .hop("AT-2", PHONE, &format!("4821*5*2*{lnurl}"))
        .await;
    assert!(
        confirm.screen.starts_with("Withdraw 1120 sat to lnurl1")
            && confirm.screen.ends_with("Enter your PIN to send:\n00 Back"),
        "{}",
        confirm.screen
    );
    let sent = bridge
        .hop("AT-2", PHONE, &format!("4821*5*2*{lnurl}*4821"))
        .await;
    assert!(sent.end);
    // The mint's 1% fee reserve (11) is kept back from the invoice.
    assert_eq!(sent.screen, "Sent 1109 sat (fee 0 sat). Balance: 11 sat.");
    assert_eq!(mint_paid_invoice(&mama_wallet, 1109).await, 1109);
    let (held, owed) = escrow.books().unwrap();
    let wallet = Sats::from(soko.daemon().wallet().total_balance().await.unwrap());
    assert_eq!((held, owed, wallet), (Sats::ZERO, Sats(11), Sats(11)));
    let mint = soko.daemon().dev_mint().unwrap().mint().clone();
    assert_eq!(
        outstanding_at(&mint).await,
        11 + 1109,
        "the mint's outstanding ecash is soko's 11 and mama's 1109"
    );

    // Menu 3: a new price is republished; hiding withdraws the product from sale.
    bridge.hop("AT-3", PHONE, "").await;
    bridge.hop("AT-3", PHONE, "4821").await;
    let products = bridge.hop("AT-3", PHONE, "4821*3").await;
    assert_eq!(
        products.screen,
        "Products:\n1 Mango 500 sat x1\nReply with a product no.\n00 Back"
    );
    bridge.hop("AT-3", PHONE, "4821*3*1").await;
    bridge.hop("AT-3", PHONE, "4821*3*1*1").await;
    let priced = bridge.hop("AT-3", PHONE, "4821*3*1*1*450").await;
    assert!(
        priced
            .screen
            .starts_with("Saved and published.\nMango\nPrice: 450 sat"),
        "{}",
        priced.screen
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = events_of(&soko, merchant, Kind::SetProduct).await;
    let product: Value = serde_json::from_str(&listed.first().unwrap().content).unwrap();
    assert_eq!(product["price"], 450.0);
    let hidden = bridge.hop("AT-3", PHONE, "4821*3*1*1*450*3").await;
    assert!(
        hidden.screen.starts_with("Hidden from buyers.\nMango"),
        "{}",
        hidden.screen
    );
    let deletions = events_of(&soko, merchant, Kind::EventDeletion).await;
    let coordinate = Coordinate::new(Kind::SetProduct, merchant)
        .identifier("mango")
        .to_string();
    assert!(
        deletions.iter().any(|e| e
            .tags
            .iter()
            .any(|t| t.as_slice() == ["a", coordinate.as_str()])),
        "a NIP-09 deletion of the product"
    );
    let refused = buyer
        .ask_nip04(merchant, &mango_order("o-2", 1))
        .await
        .json();
    assert!(
        refused["message"].as_str().unwrap().contains("mango"),
        "a hidden product cannot be ordered: {refused}"
    );
    let shown_again = bridge.hop("AT-3", PHONE, "4821*3*1*1*450*3*3").await;
    assert!(shown_again.screen.starts_with("Back on sale."));

    // Menu 4: the (empty) approvals store.
    bridge.hop("AT-4", PHONE, "").await;
    bridge.hop("AT-4", PHONE, "4821").await;
    let approvals = bridge.hop("AT-4", PHONE, "4821*4").await;
    assert_eq!(approvals.screen, "No pending approvals.\n00 Back");
    soko.stop().await;
}

/// The screen of the hop that set a 15-minute lock: the call ends.
fn assert_fresh_lock(end: bool, screen: &str) {
    assert!(end, "{screen}");
    assert!(
        screen.starts_with("Too many wrong PINs.") && screen.contains("UTC (in 15 min)"),
        "{screen}"
    );
}

/// soko with a trusted bridge, and a merchant onboarded at `PHONE` with PIN 4821.
async fn onboarded_shop() -> (TestSoko, Bridge) {
    let bridge_keys = Keys::generate();
    let soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko).await;
    let (_, _, activation) = pending_merchant(&soko, PHONE, None).await.typed();
    onboard(&mut bridge, "AT-1", &activation, "4821").await;
    (soko, bridge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pins_lock_and_strangers_get_nothing() {
    let (mut soko, mut bridge) = onboarded_shop().await;

    bridge.hop("AT-2", PHONE, "").await;
    let first = bridge.hop("AT-2", PHONE, "1111").await;
    assert_eq!(
        first.screen,
        "Wrong PIN. 2 tries left.\nsoko: Mama Duka\nEnter your PIN:"
    );
    let second = bridge.hop("AT-2", PHONE, "1111*2222").await;
    assert!(second.screen.starts_with("Wrong PIN. 1 try left."));
    let locked = bridge.hop("AT-2", PHONE, "1111*2222*3333").await;
    assert_fresh_lock(locked.end, &locked.screen);
    // Locked: a new dial is turned away at once, even before a PIN.
    let again = bridge.hop("AT-3", PHONE, "").await;
    assert!(again.end && again.screen.starts_with("Too many wrong PINs."));

    // A number nobody registered.
    let unknown = bridge.hop("AT-4", "+254799999999", "").await;
    assert!(unknown.end);
    assert_eq!(
        unknown.screen,
        "This number is not registered. Ask your agent or soko's operator."
    );
    // A hop of a session soko never saw.
    let lost = bridge.hop("AT-5", PHONE, "1*2").await;
    assert!(lost.end);
    assert_eq!(lost.screen, "Your session expired. Please dial again.");

    // Anyone but a configured bridge is refused.
    let mut stranger = User::connect(&[soko.relay_url()]).await;
    let request = json!({"id":"x1","cmd":"ussd_hop","args":{"session":"AT-6","phone":PHONE,
        "service_code":"*384*7#","text":"","deadline_ms": in_8s()}});
    let reply = stranger
        .ask_nip17(soko.bot(), &request.to_string())
        .await
        .json();
    assert_eq!(reply["error"]["code"], "forbidden", "{reply}");
    soko.stop().await;
}

/// The hop that sets a lock shows its whole length: the lock and its screen take one
/// reading of the clock, however long the PIN check (argon2, off the async threads) takes
/// meanwhile. Here soko's clock runs a second ahead every millisecond during that hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_locking_hop_shows_the_locks_whole_length() {
    let (mut soko, mut bridge) = onboarded_shop().await;
    bridge.hop("AT-2", PHONE, "").await;
    bridge.hop("AT-2", PHONE, "1111").await;
    bridge.hop("AT-2", PHONE, "1111*2222").await;

    let clock = soko.clock.clone();
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ticking = {
        let running = running.clone();
        tokio::spawn(async move {
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                clock.advance(1);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let locked = bridge.hop("AT-2", PHONE, "1111*2222*3333").await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    ticking.await.unwrap();
    assert_fresh_lock(locked.end, &locked.screen);
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_retried_and_expired_hops_change_nothing() {
    let bridge_keys = Keys::generate();
    let mut soko = soko_with_bridge(&bridge_keys, |c| c.ussd.session_secs = 300).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko).await;
    let (merchant, npub, activation) = pending_merchant(&soko, PHONE, None).await.typed();
    onboard(&mut bridge, "AT-1", &activation, "4821").await;
    put_listings(&soko, &npub).await;
    let (_buyer, code) = paid_order(&soko, merchant, "o-1").await;
    let escrow = soko.daemon().escrow().clone();

    for text in ["", "4821", "4821*2", "4821*2*1"] {
        bridge.hop("AT-2", PHONE, text).await;
    }
    let deliver = format!("4821*2*1*{code}");

    // Read after its deadline: soko answers END and does nothing.
    let id = Bridge::request_id("AT-2", &deliver);
    let late = bridge
        .send(&id, "AT-2", PHONE, &deliver, unix_ms() - 1)
        .await;
    let late = shown(&late);
    assert!(late.end);
    assert_eq!(late.screen, "Sorry, that took too long. Please dial again.");
    assert_eq!(
        escrow.order(&merchant, 1).unwrap().unwrap().state,
        EscrowState::Paid
    );
    assert_eq!(escrow.balance(&merchant).unwrap(), Sats::ZERO);

    // The gateway's retry of a hop (same session and text): delivered once, answered alike,
    // whether soko's request-id replay catches it or, under another id, the session does.
    let text = format!("4821*2*1*{code}");
    let id = Bridge::request_id("AT-3", &text);
    for t in ["", "4821", "4821*2", "4821*2*1"] {
        bridge.hop("AT-3", PHONE, t).await;
    }
    let first = shown(&bridge.send(&id, "AT-3", PHONE, &text, in_8s()).await);
    let retry = shown(&bridge.send(&id, "AT-3", PHONE, &text, in_8s()).await);
    let other_id = shown(
        &bridge
            .send("another-id", "AT-3", PHONE, &text, in_8s())
            .await,
    );
    assert!(first.end);
    assert_eq!(
        first.screen,
        "Order #1 delivered: 1120 sat released to you. Balance: 1120 sat."
    );
    assert_eq!(retry.screen, first.screen);
    assert_eq!(other_id.screen, first.screen);
    assert_eq!(
        escrow.balance(&merchant).unwrap(),
        Sats(1120),
        "credited once"
    );
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats(1120)));

    // A session left idle past `session_secs` is gone; its next hop changes nothing.
    bridge.hop("AT-4", PHONE, "").await;
    soko.advance(301);
    let expired = bridge.hop("AT-4", PHONE, "1111").await;
    assert!(expired.end);
    assert_eq!(expired.screen, "Your session expired. Please dial again.");
    // The PIN typed into the dead session was not counted as a wrong try.
    bridge.hop("AT-5", PHONE, "").await;
    let wrong = bridge.hop("AT-5", PHONE, "1111").await;
    assert!(
        wrong.screen.starts_with("Wrong PIN. 2 tries left."),
        "{}",
        wrong.screen
    );
    soko.stop().await;
}

/// A payout the mint has taken but not settled is already out of the balance: the command
/// reply says `pending_sat`, and the handset says it is on its way, not that it stayed in
/// the balance. Before, the command said `{"error": "…pending…"}` and the screen "Not paid
/// out (…); it stays in your balance." (false: the balance was already debited), and a
/// payee that never settled held every later payout waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclear_payout_reads_as_pending_on_the_screen_and_in_the_reply() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let bridge_keys = Keys::generate();
    let mut soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko).await;
    let (merchant, npub, activation) = pending_merchant(&soko, PHONE, None).await.typed();
    let onboarded = onboard(&mut bridge, "AT-1", &activation, "4821").await;
    put_listings(&soko, &npub).await;
    let mango = json!({"id":"mango","stall_id":"duka","name":"Mango","currency":"sat","price":500,
                       "quantity":10,"shipping":[{"id":"nairobi","cost":10}]});
    let put = operator(
        &soko,
        "product_put",
        json!({"merchant": npub, "product": mango}),
    )
    .await;
    assert!(put.ok, "{put:?}");
    let (hold, _server) = pending_payee().await;
    let set = operator(
        &soko,
        "merchant_payout",
        json!({"merchant": npub, "to": hold}),
    )
    .await;
    assert!(set.ok, "{set:?}");
    let escrow = soko.daemon().escrow().clone();

    // The operator's delivery: released, then a payout the mint leaves pending.
    let (_first, code) = paid_order(&soko, merchant, "p-1").await;
    let delivered = operator(
        &soko,
        "order_deliver",
        json!({"merchant": npub, "order": 1, "code": code}),
    )
    .await;
    assert!(delivered.ok, "{delivered:?}");
    let result = delivered.result.unwrap();
    // 1120 released; the 1% fee reserve (11) is kept back from the invoice.
    assert_eq!(result["payout"], json!({"pending_sat": 1109}), "{result}");
    assert_eq!(result["balance_sat"], 0, "{result}");
    assert_eq!(escrow.balance(&merchant).unwrap(), Sats::ZERO);

    // The merchant's own delivery over USSD: the screen tells the truth too.
    let (_second, code) = paid_order(&soko, merchant, "p-2").await;
    let s = format!("{onboarded}*2");
    let ask = bridge.hop("AT-1", PHONE, &s).await;
    assert_eq!(
        ask.screen,
        "Confirm delivery: enter the order no.:\n00 Back"
    );
    let s = format!("{s}*2");
    bridge.hop("AT-1", PHONE, &s).await;
    let done = bridge.hop("AT-1", PHONE, &format!("{s}*{code}")).await;
    assert!(done.end);
    assert_eq!(
        done.screen,
        "Order #2 delivered: 1120 sat released to you. 1109 sat is on its way to your Lightning address; the mint has not confirmed it yet. Balance: 0 sat."
    );
    assert!(!done.screen.contains("stays in your balance"));
    soko.stop().await;
}
