//! Orders refused at the door, wrong delivery codes, resent orders and payments counted once.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_orders_are_explained_and_reserve_nothing() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let cases = [
        (order("a", 0, "nairobi"), "at least 1"),
        (order("b", -1, "nairobi"), "at least 1"),
        (order("c", 4, "nairobi"), "only 3"),
        (order("d", 1, "mars"), "mars"),
        (json!({"id":"e","type":0,"items":[{"product_id":"pear","quantity":1}],"shipping_id":"nairobi"}).to_string(), "pear"),
        (json!({"id":"f","type":0,"items":[],"shipping_id":"nairobi"}).to_string(), "no items"),
        (json!({"id":"g","type":0,"items":"lots"}).to_string(), "cannot read"),
    ];
    for (content, expected) in cases {
        let reply = buyer.ask_nip04(shop.merchant, &content).await.json();
        assert_eq!(
            (reply["type"].as_u64(), reply["paid"].as_bool()),
            (Some(2), Some(false)),
            "{reply}"
        );
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expected:?} in {message:?}");
    }
    // Nothing was reserved: all three mangoes can still be ordered.
    let reply = buyer
        .ask_nip17(shop.merchant, &order("h", 3, "nairobi"))
        .await
        .json();
    assert_eq!(reply["type"], 1, "{reply}");
    // …and now they are held: a fourth is refused while the first order is unpaid.
    let other = buyer
        .ask_nip04(shop.merchant, &order("i", 1, "nairobi"))
        .await
        .json();
    assert!(
        other["message"].as_str().unwrap().contains("only 0"),
        "{other}"
    );
    // An order to a key soko does not manage gets no answer from soko.
    let stranger = Keys::generate().public_key();
    buyer.send_nip04(stranger, &order("k", 1, "nairobi")).await;
    let after = buyer.all_dms(QUIET_PERIOD).await;
    assert!(
        after.iter().all(|dm| !dm.content.contains("\"id\":\"k\"")),
        "{after:?}"
    );
    // An order sent to the bot instead of a merchant is not an order.
    let to_bot = buyer
        .ask_nip04(soko.bot(), &order("j", 1, "nairobi"))
        .await
        .json();
    assert_eq!(to_bot["error"]["code"], "bad_request");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_codes_lock_the_order_and_a_resent_order_is_not_a_new_one() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let first = buyer
        .ask_nip04(shop.merchant, &order("o-9", 1, "nairobi"))
        .await
        .json();
    // The same order (same buyer, same id) in a new event: the same invoice, no new order.
    let again = buyer
        .ask_nip04(shop.merchant, &order("o-9", 1, "nairobi"))
        .await
        .json();
    assert_eq!(first["payment_options"], again["payment_options"]);
    next_json(&mut buyer).await; // paid
    let code = delivery_code(&mut buyer).await;
    assert!(
        soko.daemon()
            .escrow()
            .order(&shop.merchant, 2)
            .unwrap()
            .is_none(),
        "one order only"
    );

    for _ in 0..4 {
        let r = operator(
            &soko,
            "order_deliver",
            json!({"merchant": shop.npub, "order": 1, "code": "11111111"}),
        )
        .await;
        assert!(r.error.unwrap().message.contains("wrong code"));
    }
    let locked = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": "11111111"}),
    )
    .await;
    assert!(locked.error.unwrap().message.contains("locked"));
    let right_too_late = shop.deliver(&soko, 1, &code).await;
    assert!(right_too_late.error.is_some());
    let order = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .unwrap();
    assert_eq!(order.state, EscrowState::Disputed);
    assert_books_balance(&soko).await;
    let unknown = shop.deliver(&soko, 77, &code).await;
    let unknown = unknown.error.unwrap();
    assert!(unknown.message.contains("no order #77"));
    // One code for an order that does not exist (it was `invalid` before kinds/commands.md 1.1).
    assert_eq!(unknown.code, soko::proto::ErrorCode::NotFound);

    // The operator reviews the lock and decides for the merchant: the escrow is released
    // once, the buyer is told the order is complete.
    let held = order.total;
    let release = json!({"merchant": shop.npub, "order": 1});
    let released = operator(&soko, "order_release", release.clone()).await;
    let result = released.result.expect("released");
    assert_eq!(result["released_sat"], held.0, "{result}");
    assert_eq!(result["balance_sat"], held.0, "{result}");
    let escrow = soko.daemon().escrow().clone();
    assert_eq!(
        escrow.order(&shop.merchant, 1).unwrap().unwrap().state,
        EscrowState::PaidOut
    );
    let completed = next_json(&mut buyer).await;
    assert_eq!(completed["shipped"], true, "{completed}");
    let twice = operator(&soko, "order_release", release).await;
    assert!(
        twice
            .error
            .unwrap()
            .message
            .contains("only a disputed order"),
        "released once"
    );
    assert_eq!(escrow.balance(&shop.merchant).unwrap(), held);
    assert_books_balance(&soko).await;
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_counts_once_and_an_order_to_the_bot_is_explained() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;

    // An order sent to soko's own npub instead of the merchant's.
    let misdirected = buyer
        .ask_nip04(soko.bot(), &order("w-1", 1, "nairobi"))
        .await
        .json();
    assert_eq!(misdirected["ok"], false);
    assert!(
        misdirected["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a merchant"),
        "{misdirected}"
    );

    buyer
        .ask_nip04(shop.merchant, &order("w-2", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await; // paid
    delivery_code(&mut buyer).await;
    // The watcher sees the paid quote again and again: it is minted and counted once.
    for _ in 0..3 {
        soko.daemon().escrow().tick().await.unwrap();
    }
    let again = buyer
        .ask_nip04(shop.merchant, &order("w-2", 1, "nairobi"))
        .await
        .json();
    assert_eq!(
        (again["type"].as_u64(), again["paid"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats(610), Sats::ZERO)
    );
    assert_books_balance(&soko).await;
    assert!(
        buyer.all_dms(QUIET_PERIOD).await.is_empty(),
        "no second paid message or code"
    );
    soko.stop().await;
}
