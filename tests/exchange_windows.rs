//! The exchange's windows, passed by moving soko's clock, against an auth mint whose fake
//! Lightning backend settles invoices a few seconds late: each window can pass before its
//! payment lands, and the payment that lands late is not lost.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::exchange::{exchange_config, offer_args, session_balance, Trader};
use common::TestSoko;
use nostr_sdk::Keys;
use serde_json::json;

/// Seconds the mint's backend takes to settle an invoice.
const SETTLE: u64 = 4;

/// soko on a slow auth mint, and a maker and a taker registered with both.
async fn slow_market() -> (
    TestSoko,
    soko::devmint::DevMint,
    tempfile::TempDir,
    Trader,
    Trader,
) {
    let (maker_keys, taker_keys) = (Keys::generate(), Keys::generate());
    let registry: HashSet<_> = [maker_keys.public_key(), taker_keys.public_key()].into();
    let (mint, dir) = common::auth::slow_auth_mint(Arc::new(registry), SETTLE).await;
    let soko = TestSoko::start_on_mint(mint.url(), exchange_config).await;
    let maker = Trader::join_as(&soko, maker_keys, Some(&mint)).await;
    let taker = Trader::join_as(&soko, taker_keys, Some(&mint)).await;
    (soko, mint, dir, maker, taker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_paid_late_or_never_taken_expires_and_keeps_every_sat() {
    let (soko, _mint, _dir, mut maker, _taker) = slow_market().await;
    let created = maker
        .ok(&soko, "offer_create", offer_args("1500", 10_000))
        .await;
    let offer = created["offer"].as_str().unwrap().to_owned();
    let invoice = created["invoice_sat"].as_u64().unwrap();
    // The 120 s window passes before the backend settles the invoice.
    soko.advance(121);
    maker.notice_with(&offer, "EXPIRED", "reputation").await;
    let late = maker.notice_with(&offer, "EXPIRED", "amount_sat").await;
    assert_eq!(
        late["amount_sat"], invoice,
        "the late payment is kept: {late}"
    );
    assert_eq!(session_balance(&soko, &mut maker).await, invoice);

    // Paid in time, but nobody takes it in 300 s: off the book, everything the maker's.
    let created = maker
        .ok(&soko, "offer_create", offer_args("1500", 10_000))
        .await;
    let second = created["offer"].as_str().unwrap().to_owned();
    maker.notice(&second, "INVOICE_PAID").await;
    soko.advance(301);
    let expired = maker.notice_with(&second, "EXPIRED", "outcome").await;
    assert_eq!(expired["outcome"], "cancelled", "{expired}");
    assert_eq!(session_balance(&soko, &mut maker).await, 2 * invoice);
    let record = soko.daemon().exchange().offer(&second).unwrap().unwrap();
    assert!(record.transfers.iter().all(|t| t.done));
    // Nothing holds the session any more: it closes and gives everything back.
    let closed = maker.ok(&soko, "close_session", json!({})).await;
    assert_eq!(closed["returned_sat"], 2 * invoice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_claims_go_back_to_the_book_and_a_silent_maker_pays_the_taker() {
    let (soko, _mint, _dir, mut maker, mut taker) = slow_market().await;
    let created = maker
        .ok(&soko, "offer_create", offer_args("1500", 20_000))
        .await;
    let offer = created["offer"].as_str().unwrap().to_owned();
    let a = created["amounts"].clone();
    let (escrow, maker_bond, taker_bond, fee, taker_fee) = (
        a["escrow"].as_u64().unwrap(),
        a["maker_bond"].as_u64().unwrap(),
        a["taker_bond"].as_u64().unwrap(),
        a["platform_fee"].as_u64().unwrap(),
        a["taker_fee"].as_u64().unwrap(),
    );
    maker.notice(&offer, "INVOICE_PAID").await;

    // 1. A claim whose bond is not paid in time: back on the book; the bond paid late is
    //    the taker's, in its session.
    taker
        .ok(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    soko.advance(301);
    taker
        .notice_with(&offer, "INVOICE_PAID", "reputation")
        .await;
    let late = taker
        .notice_with(&offer, "INVOICE_PAID", "amount_sat")
        .await;
    assert_eq!(late["amount_sat"], taker_bond + taker_fee, "{late}");
    assert_eq!(
        session_balance(&soko, &mut taker).await,
        taker_bond + taker_fee
    );

    // 2. A paid bond but no receipt in time: the bond goes to the maker, the fee to soko,
    //    and the offer is back on the book.
    taker
        .ok(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    taker.notice(&offer, "TAKER_BOND_PAID").await;
    soko.advance(301);
    taker
        .notice_with(&offer, "INVOICE_PAID", "reputation")
        .await;
    let lapsed = maker
        .notice_with(&offer, "INVOICE_PAID", "you_get_sat")
        .await;
    assert_eq!(lapsed["you_get_sat"], taker_bond, "{lapsed}");
    common::eventually(|| async {
        soko.daemon()
            .exchange()
            .offer(&offer)
            .unwrap()
            .unwrap()
            .transfers
            .iter()
            .all(|t| t.done)
    })
    .await;
    assert_eq!(
        session_balance(&soko, &mut taker).await,
        taker_bond + taker_fee
    );
    assert_eq!(
        session_balance(&soko, &mut maker).await,
        escrow + maker_bond + fee + taker_bond
    );

    // 3. A receipt the maker never answers: after 500 s the taker is paid.
    taker
        .ok(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    taker.notice(&offer, "TAKER_BOND_PAID").await;
    taker
        .ok(
            &soko,
            "receipt_submit",
            json!({"offer": offer, "text": "paid"}),
        )
        .await;
    soko.advance(501);
    let paid = taker.notice(&offer, "COMPLETED").await;
    assert_eq!(paid["you_get_sat"], escrow + taker_bond);
    common::eventually(|| async {
        soko.daemon()
            .exchange()
            .offer(&offer)
            .unwrap()
            .unwrap()
            .transfers
            .iter()
            .all(|t| t.done)
    })
    .await;
    // Every sat paid in is somewhere: three taker invoices, one maker invoice.
    let maker_has = session_balance(&soko, &mut maker).await;
    let taker_has = session_balance(&soko, &mut taker).await;
    let house = soko.daemon().exchange().house_balance().await.unwrap().0;
    assert_eq!(maker_has, maker_bond + taker_bond);
    assert_eq!(taker_has, 2 * taker_bond + taker_fee + escrow);
    assert_eq!(house, fee + 2 * taker_fee);
    assert_eq!(
        maker_has + taker_has + house,
        (escrow + maker_bond + fee) + 3 * (taker_bond + taker_fee)
    );
}
