//! Buyers refunded: cancelled, disputed and overdue orders, as ecash or over Lightning, and across a crash.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_order_is_refunded_to_the_buyer_as_ecash() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip17(shop.merchant, &order("r-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await; // paid
    let code = delivery_code(&mut buyer).await;
    let unpaid_refund = shop.order(&soko, "order_refund", 9).await;
    let unpaid_refund = unpaid_refund.error.unwrap();
    assert!(unpaid_refund.message.contains("no order #9"));
    assert_eq!(unpaid_refund.code, soko::proto::ErrorCode::NotFound);
    // Within the delivery window, and the buyer has not asked: no refund.
    let early = shop.order(&soko, "order_refund", 1).await;
    assert!(
        early.error.unwrap().message.contains("delivery window"),
        "refused early"
    );
    // Only the buyer can cancel their own order.
    let stranger = User::connect(&[soko.relay_url()]).await;
    let mut stranger = stranger;
    let theirs = stranger
        .ask_nip17(soko.bot(), &cancel_request(&shop, "r-1", None))
        .await
        .json();
    assert_eq!(theirs["ok"], false, "{theirs}");
    let cancel = buyer
        .ask_nip17(soko.bot(), &cancel_request(&shop, "r-1", None))
        .await
        .json();
    assert_eq!(cancel["result"]["cancel_requested"], true, "{cancel}");

    let refund = shop.order(&soko, "order_refund", 1).await;
    let refund = refund.result.unwrap();
    assert_eq!(refund["refund_sat"], 610);
    assert_eq!(refund["state"], "refunded");
    assert_eq!(refund["via"], "token");
    let status = next_json(&mut buyer).await;
    assert!(
        status["message"].as_str().unwrap().contains("refunded"),
        "{status}"
    );
    let token_dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the token DM");
    assert!(token_dm.nip17);
    let token = token_dm.content.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("cashu"), "{token}");

    // The buyer redeems it at the mint.
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let wallet = soko::wallet::open(&store, "buyer", soko.daemon().mint_url(), &[4; 64]).unwrap();
    let received = wallet
        .receive(&token, cdk::wallet::ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 610);

    // Refunded is final: no delivery, no second refund.
    let deliver = shop.deliver(&soko, 1, &code).await;
    assert!(deliver.error.unwrap().message.contains("refunded"));
    let again = shop.order(&soko, "order_refund", 1).await;
    assert!(again.error.unwrap().message.contains("cannot be refunded"));
    // At the mint, the only ecash outstanding is the buyer's refund.
    let refunded = u64::from(wallet.total_balance().await.unwrap());
    assert_emptied(&soko, &embedded_mint(&soko), refunded).await;
    soko.stop().await;
}

fn cancel_request(shop: &Shop, order_id: &str, refund_to: Option<&str>) -> String {
    json!({"v": 1, "cmd": "order_cancel",
           "args": {"merchant": shop.npub, "order_id": order_id, "refund_to": refund_to}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_with_a_lightning_address_is_refunded_over_lightning() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let amina_dir = tempfile::tempdir().unwrap();
    let (amina_lnurl, amina_wallet, _server) =
        lnurl_service_on(0, soko.daemon().mint_url(), amina_dir.path()).await;
    let amina_lnurl = lnurl::lnurl::LnUrl::from_url(amina_lnurl).encode();
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip04(shop.merchant, &order("ln-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await; // paid
    delivery_code(&mut buyer).await;

    let bad = buyer
        .ask_nip04(
            soko.bot(),
            &cancel_request(&shop, "ln-1", Some("not an address")),
        )
        .await
        .json();
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("neither a Lightning address"),
        "{bad}"
    );
    let cancel = buyer
        .ask_nip04(
            soko.bot(),
            &cancel_request(&shop, "ln-1", Some(&amina_lnurl)),
        )
        .await
        .json();
    assert_eq!(cancel["result"]["refund_via"], "lightning", "{cancel}");
    let refund = shop.order(&soko, "order_refund", 1).await.result.unwrap();
    assert_eq!(
        (refund["state"].as_str(), refund["via"].as_str()),
        (Some("refunded"), Some("lightning"))
    );

    let status = next_json(&mut buyer).await;
    assert!(status["message"].as_str().unwrap().contains("refunded"));
    let note = buyer.next_dm(REPLY_TIMEOUT).await.expect("the refund note");
    assert!(!note.nip17, "the buyer ordered over NIP-04");
    assert!(note.content.contains("over Lightning"), "{}", note.content);

    // The buyer's wallet mints what the invoice paid: 610 less the mint's 1% fee reserve.
    let quote = amina_wallet
        .check_all_mint_quotes()
        .await
        .unwrap()
        .into_iter()
        .find(|q| q.state == cdk::nuts::MintQuoteState::Paid)
        .expect("the buyer's invoice is paid");
    amina_wallet
        .mint(&quote.id, cdk::amount::SplitTarget::default(), None)
        .await
        .unwrap();
    let received = u64::from(amina_wallet.total_balance().await.unwrap());
    assert_eq!(received, 610 - 6);
    // The unused fee reserve is booked to soko's fees account; the books still balance.
    let (held, owed) = soko.daemon().escrow().books().unwrap();
    assert_eq!(held, Sats::ZERO);
    assert_eq!(
        owed,
        Sats::from(soko.daemon().wallet().total_balance().await.unwrap())
    );
    assert_eq!(received + owed.0, 610, "nothing lost on the way");
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disputed_and_overdue_orders_are_refundable_without_a_cancel() {
    let mut soko = TestSoko::start_with(|c| c.market.delivery_window_secs = 600).await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip17(shop.merchant, &order("d-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await;
    let code = delivery_code(&mut buyer).await;
    buyer
        .ask_nip17(shop.merchant, &order("d-2", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await;
    delivery_code(&mut buyer).await;

    let disputed = shop.order(&soko, "order_dispute", 1).await;
    assert_eq!(disputed.result.unwrap()["state"], "disputed");
    let status = next_json(&mut buyer).await;
    assert!(status["message"].as_str().unwrap().contains("under review"));
    // The code no longer releases a disputed order.
    let deliver = shop.deliver(&soko, 1, &code).await;
    assert!(deliver.error.unwrap().message.contains("under review"));
    let refund = shop.order(&soko, "order_refund", 1).await;
    assert_eq!(refund.result.unwrap()["state"], "refunded");

    // Order 2: refused inside its window, refundable once it has passed.
    let early = shop.order(&soko, "order_refund", 2).await;
    assert!(early.error.unwrap().message.contains("delivery window"));
    soko.advance(601);
    let late = shop.order(&soko, "order_refund", 2).await;
    assert_eq!(late.result.unwrap()["refund_sat"], 610);
    // Outstanding at the mint: the buyer's two refund tokens, not yet redeemed.
    assert_emptied(&soko, &embedded_mint(&soko), 1220).await;
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_token_made_just_before_a_crash_is_the_one_sent_after_restart() {
    let (mint, _mint_dir) = external_dev_mint(1).await;
    let mint_url = mint.url().to_owned();
    let url = mint_url.clone();
    let mut soko = TestSoko::start_on_mint(&url, |_| {}).await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip17(shop.merchant, &order("c-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await;
    delivery_code(&mut buyer).await;
    let cancel = buyer
        .ask_nip17(soko.bot(), &cancel_request(&shop, "c-1", None))
        .await
        .json();
    assert_eq!(cancel["result"]["cancel_requested"], true);
    soko.stop().await;

    // Where a crash can land: the refund recorded its send operation, the wallet made the
    // token, and the process died before the token reached the outbox.
    let made = {
        let data_dir = soko.data_dir();
        let store = soko::store::Store::open(&data_dir).unwrap();
        let seed = soko::identity::wallet_seed(&data_dir).unwrap();
        let wallet = soko::wallet::open(&store, "escrow", &mint_url, &seed).unwrap();
        let prepared = wallet
            .prepare_send(610.into(), cdk::wallet::SendOptions::default())
            .await
            .unwrap();
        let operation = prepared.operation_id().to_string();
        let token = prepared.confirm(None).await.unwrap().to_string();
        let orders: soko::store::Typed<soko::escrow::OrderRecord> = store.tree("orders").unwrap();
        let key = [shop.merchant.to_bytes().as_slice(), &1u64.to_be_bytes()].concat();
        let mut record = orders.get(&key).unwrap().unwrap();
        record.state = EscrowState::Refunding;
        record.refund = Some(soko::escrow::RefundPlan::Token {
            operation: Some(operation),
            note: None,
        });
        orders.insert(&key, &record).unwrap();
        let refunding: soko::store::Typed<u64> = store.tree("refunding").unwrap();
        refunding.insert(&key, &0).unwrap();
        store.flush().await.unwrap();
        token
    };

    soko.restart().await;
    let mut buyer = User::with_keys(buyer.keys.clone(), &[soko.relay_url()]).await;
    let mut sent = None;
    for _ in 0..8 {
        let dm = buyer
            .next_dm(REPLY_TIMEOUT)
            .await
            .expect("DMs after restart");
        if dm.content.contains("cashu") {
            sent = dm.content.lines().last().map(|l| l.trim().to_owned());
            break;
        }
    }
    assert_eq!(
        sent.as_deref(),
        Some(made.as_str()),
        "the token made before the crash, not a new one"
    );
    let record = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .unwrap();
    assert_eq!(record.state, EscrowState::Refunded);
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats::ZERO)
    );
    assert_eq!(
        u64::from(soko.daemon().wallet().total_balance().await.unwrap()),
        0,
        "exactly one refund left the wallet"
    );
    soko.stop().await;
    mint.shutdown().await;
}
