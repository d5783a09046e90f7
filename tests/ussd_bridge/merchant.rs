//! A merchant running a shop through the bridge against a real soko.

use super::*;

/// Issue 5's walk on real parts only: Africa's Talking callbacks over HTTP → the bridge →
/// soko's menus over the embedded relay and back; the paid order's SMS through a loopback
/// SMS API; delivery with the buyer's code; a withdrawal to a loopback LNURL payee, checked
/// at the mint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_runs_a_shop_through_the_bridge() {
    let bridge_keys = Keys::generate();
    let trusted = bridge_keys.public_key();
    let soko = TestSoko::start_with(|c| c.ussd.bridges = vec![trusted]).await;
    let (sms_url, mut texts) = sms_api().await;
    let sms = SmsConfig {
        url: sms_url,
        username: "sandbox".into(),
        api_key: "atsk_test_key".into(),
        from: None,
    };
    let relay = soko.relay_url();
    let bridge =
        start_bridge_with_keys(bridge_keys, &relay, soko.bot(), DEFAULT_BUDGET, Some(sms)).await;
    let (merchant, npub, activation) = pending_merchant(&soko, PHONE, None).await.typed();

    // Onboarding: the activation code, a PIN twice, the shop's name confirmed.
    assert_eq!(
        walk(&bridge, "ATUid_1", &[""]).await,
        "CON Welcome to soko, Mama Duka!\nEnter the 12-digit activation code from your agent or soko's operator:"
    );
    assert_eq!(
        walk(&bridge, "ATUid_1", &[&activation]).await,
        "CON Choose a PIN of 4 to 6 digits:"
    );
    assert_eq!(
        walk(&bridge, "ATUid_1", &[&format!("{activation}*4821")]).await,
        "CON Enter the same PIN again:"
    );
    assert_eq!(
        walk(&bridge, "ATUid_1", &[&format!("{activation}*4821*4821")]).await,
        "CON Is this your shop's name?\nMama Duka\n1 Yes, open my shop\n2 No"
    );
    let open = walk(&bridge, "ATUid_1", &[&format!("{activation}*4821*4821*1")]).await;
    assert!(
        open.starts_with("CON Your shop is open!\nMama Duka\n1 Orders"),
        "{open}"
    );

    // A buyer pays an order: the merchant is texted through the aggregator's SMS API.
    put_listings(&soko, &npub).await;
    let (mut buyer, code) = paid_order(&soko, merchant, "o-1").await;
    let text = tokio::time::timeout(REPLY_TIMEOUT, texts.recv())
        .await
        .expect("the paid order is texted")
        .unwrap();
    let field = |name: &str| {
        text.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("to").as_deref(), Some(PHONE));
    let message = field("message").unwrap();
    assert!(
        message.contains("order #1") && message.contains("1120 sat"),
        "{message}"
    );
    assert!(!message.contains("Amina"), "no buyer data in an SMS");

    // Menu 1 in a new session: the paid order and its detail.
    assert_eq!(
        walk(&bridge, "ATUid_2", &[""]).await,
        "CON soko: Mama Duka\nEnter your PIN:"
    );
    assert_eq!(
        walk(&bridge, "ATUid_2", &["4821", "4821*1"]).await,
        "CON Paid orders, newest first:\n#1 PAID 1120 sat\nReply with an order no.\n00 Back"
    );
    let detail = walk(&bridge, "ATUid_2", &["4821*1*1"]).await;
    assert!(
        detail.starts_with("CON Order #1: PAID 1120 sat\n2 x Mango\nTo: Amina"),
        "{detail}"
    );

    // Menu 2: a wrong code is explained, the buyer's code releases the escrow.
    let wrong = walk(
        &bridge,
        "ATUid_3",
        &["", "4821", "4821*2", "4821*2*1", "4821*2*1*00000000"],
    )
    .await;
    assert!(
        wrong.starts_with("CON Wrong code for order #1; 4 tries left"),
        "{wrong}"
    );
    let escrow = soko.daemon().escrow().clone();
    assert_eq!(
        escrow.order(&merchant, 1).unwrap().unwrap().state,
        EscrowState::Paid
    );
    assert_eq!(
        walk(&bridge, "ATUid_3", &[&format!("4821*2*1*00000000*{code}")]).await,
        "END Order #1 delivered: 1120 sat released to you. Balance: 1120 sat."
    );
    assert_delivered_over_ussd(&soko, merchant, &mut buyer, Sats(1120)).await;

    // Menu 5: withdraw to a Lightning address typed in, after a confirmation screen.
    let mama_dir = tempfile::tempdir().unwrap();
    let (lnurlp, mama, _server) =
        lnurl_service_on(0, soko.daemon().mint_url(), mama_dir.path()).await;
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp).encode();
    let to_address = format!("4821*5*2*{lnurl}");
    let confirm = walk(
        &bridge,
        "ATUid_4",
        &["", "4821", "4821*5", "4821*5*2", &to_address],
    )
    .await;
    assert!(
        confirm.starts_with("CON Withdraw 1120 sat to lnurl1")
            && confirm.ends_with("Enter your PIN to send:\n00 Back"),
        "{confirm}"
    );
    let wrong_pin = walk(&bridge, "ATUid_4", &[&format!("{to_address}*1111")]).await;
    assert!(
        wrong_pin.starts_with("CON Wrong PIN. 2 tries left."),
        "{wrong_pin}"
    );
    assert_eq!(
        escrow.balance(&merchant).unwrap(),
        Sats(1120),
        "nothing sent"
    );
    assert_eq!(
        walk(&bridge, "ATUid_4", &[&format!("{to_address}*1111*4821")]).await,
        "END Sent 1109 sat (fee 0 sat). Balance: 11 sat."
    );
    assert_eq!(mint_paid_invoice(&mama, 1109).await, 1109);
    let wallet = Sats::from(soko.daemon().wallet().total_balance().await.unwrap());
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats(11)));
    assert_eq!(wallet, Sats(11), "soko's wallet holds the fee reserve left");
    let mint = soko.daemon().dev_mint().unwrap().mint().clone();
    assert_eq!(outstanding_at(&mint).await, 11 + 1109);
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

/// The gateway's budget runs out while soko is still at work (paying the merchant out to a
/// slow LNURL payee): the caller gets the polite END at once, soko finishes the delivery
/// whole, and the next dial shows it done, paid once, the code spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soko_slower_than_the_gateway_leaves_nothing_half_done() {
    let bridge_keys = Keys::generate();
    let trusted = bridge_keys.public_key();
    let soko = TestSoko::start_with(|c| c.ussd.bridges = vec![trusted]).await;
    let relay = soko.relay_url();
    let mama_dir = tempfile::tempdir().unwrap();
    let (lnurlp, mama, _server) = lnurl_service_slow(
        0,
        soko.daemon().mint_url(),
        mama_dir.path(),
        Duration::from_secs(4),
    )
    .await;
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp).encode();
    let (merchant, npub, activation) = pending_merchant(&soko, PHONE, Some(&lnurl)).await.typed();

    // Onboarding and the way to the code prompt, through a bridge with the usual budget.
    let bridge = start_bridge_with_keys(
        bridge_keys.clone(),
        &relay,
        soko.bot(),
        DEFAULT_BUDGET,
        None,
    )
    .await;
    walk(
        &bridge,
        "ATUid_1",
        &[
            "",
            &activation,
            &format!("{activation}*4821"),
            &format!("{activation}*4821*4821"),
            &format!("{activation}*4821*4821*1"),
        ],
    )
    .await;
    put_listings(&soko, &npub).await;
    let (_buyer, code) = paid_order(&soko, merchant, "o-1").await;
    let prompt = walk(&bridge, "ATUid_2", &["", "4821", "4821*2", "4821*2*1"]).await;
    assert!(
        prompt.contains("Enter the buyer's 8-digit code"),
        "{prompt}"
    );
    bridge.shutdown().await.unwrap();

    // The same session goes on through a restarted bridge (it keeps no state) whose budget
    // is shorter than soko's payout takes.
    let hurried = start_bridge_with_keys(
        bridge_keys.clone(),
        &relay,
        soko.bot(),
        Duration::from_millis(1500),
        None,
    )
    .await;
    let (status, body) = dial(&hurried, "ATUid_2", &format!("4821*2*1*{code}")).await;
    assert_eq!((status, body), (StatusCode::OK, format!("END {TOO_SLOW}")));
    assert_eq!(hurried.pending_hops(), 0, "the bridge forgot the hop");
    hurried.shutdown().await.unwrap();

    // soko carried on: the escrow released and the payout went through, each exactly once.
    let escrow = soko.daemon().escrow().clone();
    let mut paid = 0;
    for _ in 0..100 {
        paid = mint_paid_invoice(&mama, 1109).await;
        if paid > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(paid, 1109, "mama paid once, less the fee reserve");
    assert_eq!(
        escrow.order(&merchant, 1).unwrap().unwrap().state,
        EscrowState::PaidOut
    );
    let settled = async {
        loop {
            if escrow.books().unwrap() == (Sats::ZERO, Sats(11)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, settled)
        .await
        .expect("the payout's books settle: nothing held, the unused fee reserve owed");
    let mint = soko.daemon().dev_mint().unwrap().mint().clone();
    assert_eq!(outstanding_at(&mint).await, 11 + 1109);

    // Dialling again: the order is done and the code releases nothing more.
    let bridge =
        start_bridge_with_keys(bridge_keys, &relay, soko.bot(), DEFAULT_BUDGET, None).await;
    let again = walk(&bridge, "ATUid_3", &["", "4821", "4821*2", "4821*2*1"]).await;
    assert!(
        again.starts_with("CON Order #1 is not waiting for delivery"),
        "{again}"
    );
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats(11)));
    assert_eq!(mint_paid_invoice(&mama, 1109).await, 1109);
    bridge.shutdown().await.unwrap();
}
