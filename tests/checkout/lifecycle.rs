//! Orders across time: a payment made while soko was down, an unpaid order that expires.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_made_while_soko_was_down_is_picked_up_on_restart() {
    // The mint must outlive soko for a payment to land while soko is down: an external
    // dev mint whose invoices settle 3 s after they are issued.
    let (mint, _mint_dir) = external_dev_mint(3).await;
    let url = mint.url().to_owned();
    let mut soko = TestSoko::start_on_mint(&url, |_| {}).await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let request = buyer
        .ask_nip04(shop.merchant, &order("o-r", 1, "nairobi"))
        .await
        .json();
    assert_eq!(request["type"], 1);
    soko.stop().await;
    {
        // Stopped before the payment: the order is still awaiting it.
        let store = soko::store::Store::open(&soko.data_dir()).unwrap();
        let orders: soko::store::Typed<soko::escrow::OrderRecord> = store.tree("orders").unwrap();
        let (_, order) = orders.iter().next().unwrap().unwrap();
        assert_eq!(order.state, EscrowState::AwaitingPayment);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    soko.restart().await;
    let mut buyer = User::with_keys(buyer.keys.clone(), &[soko.relay_url()]).await;
    // The relay still holds the type-1 request; read on to the news.
    let mut paid = false;
    for _ in 0..4 {
        let dm = buyer
            .next_dm(REPLY_TIMEOUT)
            .await
            .expect("DMs after restart");
        if dm.content.contains("\"paid\":true") {
            paid = true;
            break;
        }
    }
    assert!(paid, "the payment was noticed after the restart");
    let code = delivery_code(&mut buyer).await;
    let right = shop.deliver(&soko, 1, &code).await;
    assert!(right.ok, "{right:?}");
    let (held, owed) = soko.daemon().escrow().books().unwrap();
    let wallet = Sats::from(soko.daemon().wallet().total_balance().await.unwrap());
    assert_eq!((held, owed, wallet), (Sats::ZERO, Sats(610), Sats(610)));
    soko.stop().await;
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_expires_and_releases_its_stock() {
    // A mint whose invoices are never paid in time, and a payment window passed by moving
    // soko's clock (a real one could close before the stock check below on a slow machine).
    let (mint, _mint_dir) = external_dev_mint(3_600).await;
    let url = mint.url().to_owned();
    let mut soko = TestSoko::start_on_mint(&url, |c| {
        c.market.payment_window_secs = 600;
    })
    .await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let request = buyer
        .ask_nip17(shop.merchant, &order("x-1", 3, "nairobi"))
        .await
        .json();
    assert_eq!(request["type"], 1, "{request}");
    let held = buyer
        .ask_nip04(shop.merchant, &order("x-2", 1, "nairobi"))
        .await
        .json();
    // An unpaid order cannot be delivered.
    let early = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": "12345678"}),
    )
    .await;
    assert!(
        early.error.unwrap().message.contains("waiting for payment"),
        "delivering before payment is refused"
    );
    assert!(
        held["message"].as_str().unwrap().contains("only 0"),
        "{held}"
    );
    soko.advance(601);

    let expired = buyer.next_dm(REPLY_TIMEOUT).await.expect("expiry notice");
    assert!(expired.nip17, "told in the order's scheme");
    let expired = expired.json();
    assert!(
        expired["message"].as_str().unwrap().contains("expired"),
        "{expired}"
    );
    assert_eq!(
        soko.daemon()
            .escrow()
            .order(&shop.merchant, 1)
            .unwrap()
            .unwrap()
            .state,
        EscrowState::Expired
    );
    // The three units are back.
    let again = buyer
        .ask_nip04(shop.merchant, &order("x-3", 3, "nairobi"))
        .await
        .json();
    assert_eq!(again["type"], 1, "{again}");
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats::ZERO)
    );
    soko.stop().await;
    mint.shutdown().await;
}
