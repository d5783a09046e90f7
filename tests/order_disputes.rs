//! Issues on marketplace orders on real parts (issue 14, "Marketplace orders get the same
//! path"): a buyer who paid and got nothing, or a merchant whose buyer withholds the code,
//! marks an issue with a signed reveal of its key once the delivery window has passed; the
//! other side concedes or disputes; an admin resolves. The buyer's ecash is locked (NUT-11)
//! to its revealed key, which a plain cdk wallet in the test checks; the books reconcile.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::bridge::*;
use common::sessions::redeem_with;
use common::*;
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::escrow::EscrowState;
use soko::money::Sats;

/// Two mangoes with shipping: what `paid_order` buys.
const TOTAL: u64 = 1120;
/// `[market] delivery_window_secs` by default.
const DELIVERY_WINDOW: u64 = 14 * 24 * 3600;
/// `[market] issue_answer_secs` by default.
const ANSWER_WINDOW: u64 = 3 * 24 * 3600;

/// A reveal of `keys` for the order `order_id` as `side`, dated on soko's clock.
fn reveal(soko: &TestSoko, keys: &Keys, order_id: &str, side: &str, statement: &str) -> Value {
    let event = EventBuilder::new(Kind::Custom(29471), statement)
        .tags([
            Tag::public_key(soko.bot()),
            Tag::parse(["order", order_id]).unwrap(),
            Tag::parse(["side", side]).unwrap(),
        ])
        .custom_created_at(Timestamp::from(soko.clock.now()))
        .sign_with_keys(keys)
        .unwrap();
    serde_json::to_value(&event).unwrap()
}

/// The buyer sends `cmd` to soko's bot; its answer, and the other DMs that came meanwhile.
async fn ask(soko: &TestSoko, buyer: &mut User, cmd: &str, args: Value) -> (Value, Vec<Received>) {
    let id = Keys::generate().public_key().to_hex()[..16].to_owned();
    let request = json!({"v": 1, "id": id, "cmd": cmd, "args": args}).to_string();
    buyer.send_nip04(soko.bot(), &request).await;
    let mut others = Vec::new();
    loop {
        let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("soko answers");
        if dm.from == soko.bot() {
            let answer = dm.json();
            if answer["re"] == id.as_str() {
                return (answer, others);
            }
        }
        others.push(dm);
    }
}

/// The error code of a refused answer.
fn code(answer: &Value) -> &str {
    assert_eq!(answer["ok"], false, "{answer}");
    answer["error"]["code"].as_str().unwrap()
}

/// The operator's command `cmd` for `shop`'s order 1, with `more` arguments.
async fn for_merchant(
    soko: &TestSoko,
    shop: &Shop,
    cmd: &str,
    more: Value,
) -> soko::proto::Response {
    let mut args = json!({"merchant": shop.npub, "order": 1});
    if let (Some(args), Some(more)) = (args.as_object_mut(), more.as_object()) {
        args.extend(more.clone());
    }
    operator(soko, cmd, args).await
}

/// The Cashu token in a DM, waiting for the one that carries it.
async fn token_for(buyer: &mut User, seen: Vec<Received>) -> String {
    let mut seen = seen.into_iter();
    loop {
        let dm = match seen.next() {
            Some(dm) => dm,
            None => buyer.next_dm(REPLY_TIMEOUT).await.expect("the token DM"),
        };
        if let Some(token) = dm
            .content
            .split_whitespace()
            .find(|w| w.starts_with("cashu"))
        {
            return token.to_owned();
        }
    }
}

fn state(soko: &TestSoko, shop: &Shop) -> EscrowState {
    soko.daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .unwrap()
        .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_who_got_nothing_marks_an_issue_and_an_admin_gives_it_ecash_only_its_key_redeems() {
    let soko = TestSoko::start().await;
    let mint_url = soko.daemon().mint_url().to_owned();
    let shop = mango_shop(&soko).await;
    let (mut buyer, _code) = paid_order(&soko, shop.merchant, "o-1").await;
    // The same buyer orders with the same id at a second shop (its reveal names the order id
    // alone, so only the record of used reveals tells the two apart).
    let second = Mangoes::default().open(&soko.config).await;
    let request = buyer
        .ask_nip04(second.merchant, &mango_order("o-1", 1))
        .await;
    assert_eq!(request.json()["type"], 1, "{}", request.content);
    while state(&soko, &second) != EscrowState::Paid {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let args = |reveal: Option<Value>| {
        let mut args = json!({"merchant": shop.npub, "order_id": "o-1",
                              "evidence": "paid two weeks ago, nothing came"});
        if let Some(reveal) = reveal {
            args["reveal"] = reveal;
        }
        args
    };

    // Within the delivery window the merchant may still deliver: no issue yet.
    let good = reveal(&soko, &buyer.keys, "o-1", "buyer", "I got nothing");
    let (early, _) = ask(&soko, &mut buyer, "order_issue", args(Some(good))).await;
    assert_eq!(code(&early), "invalid", "{early}");
    assert!(early["error"]["message"]
        .as_str()
        .unwrap()
        .contains("delivery window"));
    soko.advance(DELIVERY_WINDOW);

    // No reveal, a reveal by another key, a reveal for another order, a stranger asking.
    let (bare, _) = ask(&soko, &mut buyer, "order_issue", args(None)).await;
    assert_eq!(code(&bare), "reveal_required", "{bare}");
    let someone = Keys::generate();
    let forged = reveal(&soko, &someone, "o-1", "buyer", "I got nothing");
    let (forged, _) = ask(&soko, &mut buyer, "order_issue", args(Some(forged))).await;
    assert_eq!(code(&forged), "signer_mismatch", "{forged}");
    let other = reveal(&soko, &buyer.keys, "o-2", "buyer", "I got nothing");
    let (other, _) = ask(&soko, &mut buyer, "order_issue", args(Some(other))).await;
    assert_eq!(code(&other), "invalid", "{other}");
    let mut stranger = User::connect(&[soko.relay_url()]).await;
    let theirs = reveal(&soko, &stranger.keys, "o-1", "buyer", "mine");
    let (stranger_answer, _) = ask(&soko, &mut stranger, "order_issue", args(Some(theirs))).await;
    assert_eq!(code(&stranger_answer), "not_found", "{stranger_answer}");
    assert_eq!(state(&soko, &shop), EscrowState::Paid, "nothing moved");

    // The buyer's own reveal marks the issue; the code no longer releases the money.
    let good = reveal(&soko, &buyer.keys, "o-1", "buyer", "I got nothing");
    let (marked, told) = ask(&soko, &mut buyer, "order_issue", args(Some(good.clone()))).await;
    assert_eq!(marked["ok"], true, "{marked}");
    assert_eq!(marked["result"]["state"], "issue_marked");
    assert_eq!(marked["result"]["buyer_key"], buyer.pubkey().to_hex());
    assert_eq!(state(&soko, &shop), EscrowState::IssueMarked);
    let stats = soko
        .daemon()
        .escrow()
        .dispute_stats(&buyer.pubkey())
        .unwrap();
    assert_eq!(stats.marked, 1);

    // The same reveal again, for the other shop's order of the same id, is refused.
    let replay = json!({"merchant": second.npub, "order_id": "o-1", "reveal": good});
    let (replayed, _) = ask(&soko, &mut buyer, "order_issue", replay).await;
    assert_eq!(code(&replayed), "replayed", "{replayed}");
    drop(told);

    // The merchant disputes (from the operator: soko signs with the shop's key); the admin
    // cannot settle before that, and then gives the buyer its money back.
    let disputed = for_merchant(
        &soko,
        &shop,
        "merchant_answer",
        json!({"answer": "dispute",
        "evidence": "delivered to the gate"}),
    )
    .await;
    assert!(disputed.ok, "{disputed:?}");
    let result = disputed.result.unwrap();
    assert_eq!(result["state"], "disputed");
    assert_eq!(result["merchant_key"], shop.merchant.to_hex());

    // The case holds both sides' private words: only an admin reads it, not the buyer.
    let (peek, _) = ask(
        &soko,
        &mut buyer,
        "order_issue_show",
        json!({"merchant": shop.npub, "order": 1}),
    )
    .await;
    assert_eq!(code(&peek), "forbidden", "{peek}");

    // Before deciding, the admin reads the case; the money moves only by `order_resolve`.
    let listed = operator(&soko, "order_issue_list", json!({})).await;
    assert!(listed.ok, "{listed:?}");
    let open = listed.result.unwrap();
    assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
    assert_eq!(open[0]["merchant"], shop.merchant.to_hex());
    assert_eq!(open[0]["order"], 1);
    assert!(
        open[0].get("evidence").is_none(),
        "words only one case at a time: {open}"
    );
    let shown = for_merchant(&soko, &shop, "order_issue_show", json!({})).await;
    assert!(shown.ok, "{shown:?}");
    let words: Vec<(String, String)> = shown.result.unwrap()["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|said| (said["side"].to_string(), said["text"].to_string()))
        .collect();
    for expected in [
        ("\"buyer\"", "\"I got nothing\""),
        ("\"merchant\"", "\"delivered to the gate\""),
    ] {
        assert!(
            words.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{words:?}"
        );
    }
    for bypass in ["order_refund", "order_release"] {
        let refused = for_merchant(&soko, &shop, bypass, json!({})).await;
        assert!(!refused.ok, "{bypass}: {refused:?}");
        assert!(
            format!("{refused:?}").contains("order_resolve"),
            "{bypass}: {refused:?}"
        );
    }
    assert_eq!(state(&soko, &shop), EscrowState::Disputed);

    let resolved = for_merchant(
        &soko,
        &shop,
        "order_resolve",
        json!({"outcome": "buyer_wins",
        "note": "no proof of delivery"}),
    )
    .await;
    assert!(resolved.ok, "{resolved:?}");
    let result = resolved.result.unwrap();
    assert_eq!(result["state"], "refunded", "{result}");
    assert_eq!(result["buyer_sat"], TOTAL);
    assert_eq!(result["locked_to"], buyer.pubkey().to_hex());

    // The token DM'd to the buyer is locked to its key: nobody else redeems it.
    let token = token_for(&mut buyer, Vec::new()).await;
    assert!(redeem_with(&mint_url, &token, None).await.is_err());
    assert!(redeem_with(&mint_url, &token, Some(&someone))
        .await
        .is_err());
    assert_eq!(
        redeem_with(&mint_url, &token, Some(&buyer.keys)).await,
        Ok(TOTAL)
    );

    // Once, audited once; asked again it changes nothing; another outcome is refused.
    let again = for_merchant(
        &soko,
        &shop,
        "order_resolve",
        json!({"outcome": "buyer_wins"}),
    )
    .await;
    assert!(again.ok, "{again:?}");
    let other = for_merchant(&soko, &shop, "order_resolve", json!({"outcome": "split"})).await;
    assert!(!other.ok, "{other:?}");
    let trail = soko.daemon().escrow().audit_trail(0, 10).unwrap();
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(trail[0].1.action, "order_issue_show");
    assert_eq!(trail[1].1.action, "order_resolve:buyer_wins");
    assert!(trail[1].1.detail.contains("no proof of delivery"));
    let buyer_stats = soko
        .daemon()
        .escrow()
        .dispute_stats(&buyer.pubkey())
        .unwrap();
    assert_eq!(
        (buyer_stats.marked, buyer_stats.disputed, buyer_stats.won),
        (1, 1, 1)
    );
    let shop_stats = soko
        .daemon()
        .escrow()
        .dispute_stats(&shop.merchant)
        .unwrap();
    assert_eq!((shop_stats.disputed, shop_stats.lost), (1, 1));

    // The books: the second order still held, the first gone out as the buyer's ecash.
    let books = reconciled(&soko).await;
    assert_eq!(books.drift(), 0, "{books:?}");
    let (held, owed) = assert_conserved(&soko, &embedded_mint(&soko), TOTAL).await;
    assert_eq!((held, owed), (Sats(610), Sats::ZERO));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_whose_buyer_withholds_the_code_marks_an_issue_and_wins_it() {
    let soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let (mut buyer, code_given) = paid_order(&soko, shop.merchant, "o-1").await;

    let early = for_merchant(&soko, &shop, "merchant_issue", json!({})).await;
    assert!(!early.ok, "{early:?}");
    soko.advance(DELIVERY_WINDOW);
    let marked = for_merchant(
        &soko,
        &shop,
        "merchant_issue",
        json!({"evidence": "delivered on the 3rd, the buyer keeps the code"}),
    )
    .await;
    assert!(marked.ok, "{marked:?}");
    assert_eq!(
        marked.result.unwrap()["merchant_key"],
        shop.merchant.to_hex()
    );
    // The buyer is told what it can do; the code no longer works meanwhile.
    let mut told = false;
    for dm in buyer.all_dms(QUIET_PERIOD).await {
        told |= dm.content.contains("order_answer");
    }
    assert!(told, "the buyer is told how to answer");
    let late_code = shop.deliver(&soko, 1, &code_given).await;
    assert!(!late_code.ok, "{late_code:?}");

    // The merchant cannot answer its own issue; the buyer disputes with its reveal.
    let own = for_merchant(
        &soko,
        &shop,
        "merchant_answer",
        json!({"answer": "concede"}),
    )
    .await;
    assert!(!own.ok, "{own:?}");
    let args = json!({"merchant": shop.npub, "order_id": "o-1", "answer": "dispute",
                      "reveal": reveal(&soko, &buyer.keys, "o-1", "buyer", "never came")});
    let (disputed, _) = ask(&soko, &mut buyer, "order_answer", args).await;
    assert_eq!(disputed["ok"], true, "{disputed}");
    assert_eq!(disputed["result"]["state"], "disputed");

    // The admin finds for the merchant: the total goes to its balance, as a delivery would.
    let resolved = for_merchant(
        &soko,
        &shop,
        "order_resolve",
        json!({"outcome": "merchant_wins"}),
    )
    .await;
    assert!(resolved.ok, "{resolved:?}");
    assert_eq!(state(&soko, &shop), EscrowState::PaidOut);
    assert_eq!(
        soko.daemon().escrow().balance(&shop.merchant).unwrap(),
        Sats(TOTAL)
    );
    let shop_stats = soko
        .daemon()
        .escrow()
        .dispute_stats(&shop.merchant)
        .unwrap();
    assert_eq!((shop_stats.marked, shop_stats.won), (1, 1));
    let buyer_stats = soko
        .daemon()
        .escrow()
        .dispute_stats(&buyer.pubkey())
        .unwrap();
    assert_eq!(buyer_stats.lost, 1);
    assert_eq!(reconciled(&soko).await.drift(), 0);
    let (held, owed) = assert_conserved(&soko, &embedded_mint(&soko), 0).await;
    assert_eq!((held, owed), (Sats::ZERO, Sats(TOTAL)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_issue_is_split_by_an_admin_and_a_conceded_one_needs_no_admin() {
    let soko = TestSoko::start().await;
    let mint_url = soko.daemon().mint_url().to_owned();
    let shop = mango_shop(&soko).await;
    let (mut buyer, _) = paid_order(&soko, shop.merchant, "o-1").await;
    soko.advance(DELIVERY_WINDOW);
    let marked = for_merchant(&soko, &shop, "merchant_issue", json!({})).await;
    assert!(marked.ok, "{marked:?}");
    buyer.all_dms(QUIET_PERIOD).await;

    // The buyer may still answer: the admin waits for the window.
    let waiting = for_merchant(&soko, &shop, "order_resolve", json!({"outcome": "split"})).await;
    assert!(!waiting.ok, "{waiting:?}");
    soko.advance(ANSWER_WINDOW);
    let split = for_merchant(&soko, &shop, "order_resolve", json!({"outcome": "split"})).await;
    assert!(split.ok, "{split:?}");
    let result = split.result.unwrap();
    assert_eq!(
        (
            result["buyer_sat"].as_u64(),
            result["merchant_sat"].as_u64()
        ),
        (Some(560), Some(560))
    );
    // The buyer never revealed: its part is locked to the key it ordered with.
    assert_eq!(result["locked_to"], buyer.pubkey().to_hex());
    let token = token_for(&mut buyer, Vec::new()).await;
    assert!(redeem_with(&mint_url, &token, Some(&Keys::generate()))
        .await
        .is_err());
    assert_eq!(
        redeem_with(&mint_url, &token, Some(&buyer.keys)).await,
        Ok(560)
    );
    assert_eq!(
        soko.daemon().escrow().balance(&shop.merchant).unwrap(),
        Sats(560)
    );
    assert_eq!(reconciled(&soko).await.drift(), 0);
    assert_conserved(&soko, &embedded_mint(&soko), 560).await;

    // A second order: the buyer marks, the merchant concedes, the buyer gets it all back.
    let request = buyer.ask_nip04(shop.merchant, &mango_order("o-2", 1)).await;
    assert_eq!(request.json()["type"], 1, "{}", request.content);
    while soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 2)
        .unwrap()
        .unwrap()
        .state
        != EscrowState::Paid
    {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    soko.advance(DELIVERY_WINDOW);
    let args = json!({"merchant": shop.npub, "order_id": "o-2",
                      "reveal": reveal(&soko, &buyer.keys, "o-2", "buyer", "nothing")});
    let (marked, _) = ask(&soko, &mut buyer, "order_issue", args).await;
    assert_eq!(marked["ok"], true, "{marked}");
    let conceded = operator(
        &soko,
        "merchant_answer",
        json!({"merchant": shop.npub, "order": 2, "answer": "concede"}),
    )
    .await;
    assert!(conceded.ok, "{conceded:?}");
    assert_eq!(conceded.result.unwrap()["state"], "refunded");
    let token = token_for(&mut buyer, Vec::new()).await;
    assert_eq!(
        redeem_with(&mint_url, &token, Some(&buyer.keys)).await,
        Ok(610)
    );
    assert_conserved(&soko, &embedded_mint(&soko), 560 + 610).await;
    // Concessions are not admin actions: the trail holds the split alone.
    assert_eq!(soko.daemon().escrow().audit_trail(0, 10).unwrap().len(), 1);
}

const PHONE: &str = "+254711000111";

/// A new USSD session of the merchant with `pin`, logged in at the main menu: its text.
async fn logged_in(bridge: &mut Bridge, session: &str, pin: &str) -> String {
    let login = bridge.hop(session, PHONE, "").await;
    assert!(!login.end, "{}", login.screen);
    let main = bridge.hop(session, PHONE, pin).await;
    assert!(main.screen.contains("1 Orders"), "{}", main.screen);
    pin.to_owned()
}

/// Hops `inputs` one by one after the session's text `s` (the gateway sends every step);
/// the last screen.
async fn hops(bridge: &mut Bridge, session: &str, s: &str, inputs: &[&str]) -> Shown {
    let mut text = s.to_owned();
    let mut last = None;
    for input in inputs {
        text = format!("{text}*{input}");
        last = Some(bridge.hop(session, PHONE, &text).await);
    }
    last.expect("an input")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merchant_reports_and_disputes_issues_from_its_phone() {
    let bridge_keys = Keys::generate();
    let soko = soko_with_bridge(&bridge_keys, |_| {}).await;
    let mint_url = soko.daemon().mint_url().to_owned();
    let mut bridge = Bridge::connect(bridge_keys, &soko).await;
    let (merchant, npub, activation) = pending_merchant(&soko, PHONE, None).await.typed();
    let pin = "4821";
    for (n, text) in [
        "",
        &activation,
        &format!("{activation}*{pin}"),
        &format!("{activation}*{pin}*{pin}"),
        &format!("{activation}*{pin}*{pin}*1"),
    ]
    .iter()
    .enumerate()
    {
        let shown = bridge.hop("AT-1", PHONE, text).await;
        assert!(!shown.end, "step {n}: {}", shown.screen);
    }
    Mangoes::stock(10).list(&soko.config, &npub).await;
    let (mut buyer, _) = paid_order(&soko, merchant, "o-1").await;
    let (mut quiet, _) = paid_order(&soko, merchant, "o-2").await;
    let escrow = soko.daemon().escrow().clone();
    soko.advance(DELIVERY_WINDOW);

    // The buyer of #1 got nothing and says so; the merchant sees it on its phone.
    let args = json!({"merchant": npub, "order_id": "o-1",
                      "reveal": reveal(&soko, &buyer.keys, "o-1", "buyer", "nothing came")});
    let (marked, _) = ask(&soko, &mut buyer, "order_issue", args).await;
    assert_eq!(marked["ok"], true, "{marked}");
    let s = logged_in(&mut bridge, "AT-2", pin).await;
    let detail = hops(&mut bridge, "AT-2", &s, &["1", "1"]).await;
    assert!(
        detail.screen.contains("#1: ISSUE 1120 sat"),
        "{}",
        detail.screen
    );
    assert!(
        detail.screen.contains("8 Answer issue"),
        "{}",
        detail.screen
    );
    let answer = hops(&mut bridge, "AT-2", &format!("{s}*1*1"), &["8"]).await;
    assert_eq!(
        answer.screen,
        "Order #1: the buyer says it got nothing.\n1 Agree: refund buyer\n2 Dispute: operator decides\n00 Back"
    );
    let disputed = bridge.hop("AT-2", PHONE, &format!("{s}*1*1*8*2")).await;
    assert!(disputed.end);
    assert_eq!(
        disputed.screen,
        "Order #1 disputed: soko's operator decides."
    );
    let record = escrow.order(&merchant, 1).unwrap().unwrap();
    assert_eq!(record.state, EscrowState::Disputed);
    assert_eq!(record.issue.unwrap().merchant_key, Some(merchant));

    // #2's buyer keeps the code: the merchant reports it from the phone.
    let s = logged_in(&mut bridge, "AT-3", pin).await;
    let detail = hops(&mut bridge, "AT-3", &s, &["1", "2"]).await;
    assert!(
        detail.screen.contains("8 Report: no code"),
        "{}",
        detail.screen
    );
    hops(&mut bridge, "AT-3", &format!("{s}*1*2"), &["8"]).await;
    let reported = bridge.hop("AT-3", PHONE, &format!("{s}*1*2*8*1")).await;
    assert!(reported.end, "{}", reported.screen);
    assert!(
        reported.screen.starts_with("Issue on order #2 reported"),
        "{}",
        reported.screen
    );
    assert_eq!(
        escrow.order(&merchant, 2).unwrap().unwrap().state,
        EscrowState::IssueMarked
    );
    let told = quiet.all_dms(QUIET_PERIOD).await;
    assert!(told.iter().any(|dm| dm.content.contains("order_answer")));

    // The admin decides #1 for the buyer: ecash its key alone redeems.
    let resolved = operator(
        &soko,
        "order_resolve",
        json!({"merchant": npub, "order": 1, "outcome": "buyer_wins"}),
    )
    .await;
    assert!(resolved.ok, "{resolved:?}");
    let token = token_for(&mut buyer, Vec::new()).await;
    assert!(redeem_with(&mint_url, &token, Some(&quiet.keys))
        .await
        .is_err());
    assert_eq!(
        redeem_with(&mint_url, &token, Some(&buyer.keys)).await,
        Ok(TOTAL)
    );
    assert_eq!(reconciled(&soko).await.drift(), 0);
    let (held, owed) = assert_conserved(&soko, &embedded_mint(&soko), TOTAL).await;
    assert_eq!((held, owed), (Sats(TOTAL), Sats::ZERO));
}
