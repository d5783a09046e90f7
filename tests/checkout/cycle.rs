//! The whole way, over NIP-04 and NIP-17: order, invoice, paid, code, delivery, credit.

use super::*;

async fn full_cycle(nip17: bool) {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;

    let content = order("o-1", 2, "nairobi");
    if nip17 {
        buyer.send_nip17(shop.merchant, &content).await;
    } else {
        buyer.send_nip04(shop.merchant, &content).await;
    }
    let request = buyer.next_dm(REPLY_TIMEOUT).await.unwrap();
    assert_eq!(request.nip17, nip17, "answered in the buyer's scheme");
    assert_eq!(
        request.from, shop.merchant,
        "answered by the merchant's identity"
    );
    let request = request.json();
    assert_eq!(request["type"], 1);
    assert_eq!(request["id"], "o-1");
    // 2 × 500 + zone 100 + 2 × 10
    assert!(
        request["message"].as_str().unwrap().contains("1120 sat"),
        "{request}"
    );
    let invoice = request["payment_options"][0]["link"].as_str().unwrap();
    assert!(invoice.starts_with("lnbc"), "{invoice}");

    // The dev mint's fake backend settles the invoice; soko notices and holds the funds.
    let paid = next_json(&mut buyer).await;
    assert_eq!(
        (
            paid["type"].as_u64(),
            paid["paid"].as_bool(),
            paid["shipped"].as_bool()
        ),
        (Some(2), Some(true), Some(false))
    );
    let code = delivery_code(&mut buyer).await;
    let escrow = soko.daemon().escrow().clone();
    assert_eq!(
        escrow.order(&shop.merchant, 1).unwrap().unwrap().state,
        EscrowState::Paid
    );
    assert_books_balance(&soko).await;
    let (held, _) = escrow.books().unwrap();
    assert_eq!(held, Sats(1120));

    // Stock went down and the product was republished.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = buyer
        .client
        .fetch_events(
            Filter::new().author(shop.merchant).kind(Kind::SetProduct),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let product: Value = serde_json::from_str(&events.first().unwrap().content).unwrap();
    assert_eq!(product["quantity"], 1);

    // A wrong code is refused; the right one releases the escrow to the merchant.
    let wrong = operator(
        &soko,
        "order_deliver",
        json!({"merchant": shop.npub, "order": 1, "code": "00000000"}),
    )
    .await;
    let message = wrong.error.unwrap().message;
    assert!(
        message.contains("wrong code") && message.contains("4 tries left"),
        "{message}"
    );
    let right = shop.deliver(&soko, 1, &code).await;
    assert!(right.ok, "{right:?}");
    assert_eq!(right.result.unwrap()["balance_sat"], 1120);
    let done = next_json(&mut buyer).await;
    assert_eq!(
        (done["paid"].as_bool(), done["shipped"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(escrow.balance(&shop.merchant).unwrap(), Sats(1120));
    assert_eq!(
        escrow.order(&shop.merchant, 1).unwrap().unwrap().state,
        EscrowState::PaidOut
    );

    // soko's wallets reach its embedded mint in-process, and hear the payment from the
    // mint's own events: the whole order went by without one HTTP request to the mint.
    let mint = soko.daemon().dev_mint().unwrap();
    assert_eq!(mint.http_requests(), 0, "HTTP requests to the dev mint");
    assert!(mint.in_process_calls() > 0);
    assert_eq!(escrow.push_connections(), 1, "the in-process feed");
    assert_eq!(escrow.missed_pushes(), 0);

    // The code works once.
    let again = shop.deliver(&soko, 1, &code).await;
    assert!(again.error.unwrap().message.contains("cannot be delivered"));
    assert_books_balance(&soko).await;
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats(1120)));
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_order_over_nip04() {
    full_cycle(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_order_over_nip17() {
    full_cycle(true).await;
}
