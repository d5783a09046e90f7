//! Gamma Markets (kind 16) orders, the whole way.

use super::*;
use soko::proto::gamma::KIND_LISTING;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gamma_order_runs_the_whole_way_in_kind_16_messages() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let mango = format!("{KIND_LISTING}:{}:mango", shop.merchant.to_hex());

    // Another merchant's listing is refused with a cancelled status saying why.
    let elsewhere = format!(
        "{KIND_LISTING}:{}:mango",
        Keys::generate().public_key().to_hex()
    );
    send_gamma(
        &buyer,
        &shop,
        &[
            &["subject", "order-info"],
            &["type", "1"],
            &["order", "g-0"],
            &["item", &elsewhere, "1"],
        ],
        "",
    )
    .await;
    let refused = buyer.next_dm(REPLY_TIMEOUT).await.expect("a refusal");
    assert_eq!(
        (refused.kind, refused.tag("type"), refused.tag("status")),
        (GAMMA_ORDER, Some("3"), Some("cancelled"))
    );
    assert!(
        refused.content.contains("another merchant"),
        "{}",
        refused.content
    );

    // No shipping option named: the stall's only zone is used. 500 + 100 + 10.
    send_gamma(
        &buyer,
        &shop,
        &[
            &["subject", "order-info"],
            &["type", "1"],
            &["order", "g-1"],
            &["amount", "610"],
            &["item", &mango, "1"],
            &["name", "Amina"],
            &["address", "Moi Avenue 12\nNairobi"],
        ],
        "please call on arrival",
    )
    .await;
    let request = buyer
        .next_dm(REPLY_TIMEOUT)
        .await
        .expect("a payment request");
    assert!(request.nip17);
    assert_eq!(request.from, shop.merchant);
    assert_eq!(
        (request.kind, request.tag("type"), request.tag("order")),
        (GAMMA_ORDER, Some("2"), Some("g-1"))
    );
    assert_eq!(request.tag("subject"), Some("order-payment"));
    assert_eq!(request.tag("amount"), Some("610"));
    let payment = request
        .tags
        .iter()
        .find(|t| t[0] == "payment")
        .expect("a payment tag");
    assert_eq!(payment[1], "lightning");
    assert!(payment[2].starts_with("lnbc"), "{payment:?}");

    // The fake backend pays; the order is confirmed and the code comes as a kind-14 message.
    let confirmed = buyer.next_dm(REPLY_TIMEOUT).await.expect("confirmed");
    assert_eq!(
        (
            confirmed.kind,
            confirmed.tag("type"),
            confirmed.tag("status")
        ),
        (GAMMA_ORDER, Some("3"), Some("confirmed"))
    );
    let code_dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the code");
    assert_eq!(
        (code_dm.kind, code_dm.tag("subject")),
        (Kind::PrivateDirectMessage, Some("g-1"))
    );
    let code: String = code_dm
        .content
        .split_whitespace()
        .find(|w| w.len() == 8 && w.bytes().all(|b| b.is_ascii_digit()))
        .expect("8 digits")
        .to_owned();
    let record = soko
        .daemon()
        .escrow()
        .order(&shop.merchant, 1)
        .unwrap()
        .unwrap();
    assert_eq!(record.dialect, soko::escrow::Dialect::Gamma);

    // A payment receipt from the buyer is not answered: soko saw the payment at the mint.
    send_gamma(&buyer, &shop, &[&["type", "1"]], "").await; // no order tag
    let no_order = buyer.next_dm(REPLY_TIMEOUT).await.expect("a refusal");
    assert!(no_order.content.contains("no `order` tag"));
    let receipt = soko::outbound::wrap_tagged(
        &buyer.keys,
        shop.merchant,
        17,
        &[
            vec!["p".into(), shop.merchant.to_hex()],
            vec!["order".into(), "g-1".into()],
        ],
        "",
    )
    .await
    .unwrap();
    buyer.publish(&receipt).await;
    assert!(
        buyer.all_dms(QUIET_PERIOD).await.is_empty(),
        "no reply to a receipt"
    );

    let delivered = shop.deliver(&soko, 1, &code).await;
    assert!(delivered.ok, "{delivered:?}");
    let completed = buyer.next_dm(REPLY_TIMEOUT).await.expect("completed");
    assert_eq!(
        (completed.tag("type"), completed.tag("status")),
        (Some("3"), Some("completed"))
    );

    // A second order, cancelled by the buyer with a type-3 message, then refunded.
    send_gamma(
        &buyer,
        &shop,
        &[
            &["type", "1"],
            &["order", "g-2"],
            &["item", &mango, "1"],
            &[
                "shipping",
                &format!("30406:{}:nairobi", shop.merchant.to_hex()),
            ],
        ],
        "",
    )
    .await;
    buyer.next_dm(REPLY_TIMEOUT).await.expect("payment request");
    buyer.next_dm(REPLY_TIMEOUT).await.expect("confirmed");
    buyer.next_dm(REPLY_TIMEOUT).await.expect("code");
    send_gamma(
        &buyer,
        &shop,
        &[
            &["subject", "order-info"],
            &["type", "3"],
            &["order", "g-2"],
            &["status", "cancelled"],
        ],
        "changed my mind",
    )
    .await;
    let noted = buyer.next_dm(REPLY_TIMEOUT).await.expect("cancel noted");
    assert_eq!(noted.kind, Kind::PrivateDirectMessage);
    assert!(noted.content.contains("recorded"), "{}", noted.content);
    let refund = shop.order(&soko, "order_refund", 2).await;
    assert_eq!(refund.result.unwrap()["state"], "refunded");
    let cancelled = buyer.next_dm(REPLY_TIMEOUT).await.expect("cancelled");
    assert_eq!(cancelled.tag("status"), Some("cancelled"));
    let token = buyer.next_dm(REPLY_TIMEOUT).await.expect("the token");
    assert_eq!(
        (token.kind, token.tag("subject")),
        (Kind::PrivateDirectMessage, Some("g-2"))
    );
    assert!(token.content.contains("cashu"));
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats::ZERO, Sats(610))
    );
    soko.stop().await;
}
