//! The merchant paid out: over Lightning to its address, or by token DM.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_pays_the_merchant_out_to_its_lightning_address() {
    let mut soko = TestSoko::start().await;
    let mama_dir = tempfile::tempdir().unwrap();
    let (lnurlp, mama_wallet, _server) =
        lnurl_service_on(0, soko.daemon().mint_url(), mama_dir.path()).await;
    let lnurl = lnurl::lnurl::LnUrl::from_url(lnurlp).encode();
    let Shop { merchant, npub } = Mangoes {
        lightning_address: Some(lnurl),
        ..Mangoes::default()
    }
    .open(&soko.config)
    .await;

    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let request = buyer
        .ask_nip04(merchant, &order("p-1", 2, "nairobi"))
        .await
        .json();
    assert_eq!(request["type"], 1);
    next_json(&mut buyer).await; // paid
    let code = delivery_code(&mut buyer).await;
    let delivered = operator(
        &soko,
        "order_deliver",
        json!({"merchant": npub, "order": 1, "code": code}),
    )
    .await;
    assert!(delivered.ok, "{delivered:?}");
    let result = delivered.result.unwrap();
    let paid = result["payout"]["paid_sat"].as_u64().expect("paid out");
    let fee = result["payout"]["fee_sat"].as_u64().unwrap();
    // 1120 released; the mint's 1% fee reserve (11) is kept back from the invoice, and what
    // the payment did not use comes back to the balance.
    assert_eq!(paid, 1109, "{result}");
    assert_eq!(result["balance_sat"].as_u64().unwrap(), 1120 - paid - fee);

    // Mama's own wallet can mint what was paid to her invoice.
    assert_eq!(mint_paid_invoice(&mama_wallet, paid).await, paid);

    let (held, owed) = soko.daemon().escrow().books().unwrap();
    let wallet = Sats::from(soko.daemon().wallet().total_balance().await.unwrap());
    assert_eq!((held, owed), (Sats::ZERO, Sats(1120 - paid - fee)));
    assert_eq!(
        owed, wallet,
        "the books match the escrow wallet after the melt"
    );
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_that_takes_tokens_is_paid_by_token_dm() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    // The merchant's own phone wallet, a Nostr client with its own key.
    let mut mama = User::connect(&[soko.relay_url()]).await;
    let mama_npub = mama.pubkey().to_bech32().unwrap();
    let set = operator(
        &soko,
        "merchant_payout",
        json!({"merchant": shop.npub, "to": mama_npub}),
    )
    .await;
    assert_eq!(set.result.unwrap()["tokens_to"], mama_npub);
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    buyer
        .ask_nip17(shop.merchant, &order("t-1", 1, "nairobi"))
        .await;
    next_json(&mut buyer).await;
    let code = delivery_code(&mut buyer).await;
    let delivered = shop.deliver(&soko, 1, &code).await.result.unwrap();
    assert_eq!(delivered["payout"]["token_sat"], 610, "{delivered}");
    assert_eq!(delivered["balance_sat"], 0);

    let dm = mama.next_dm(REPLY_TIMEOUT).await.expect("the payout DM");
    assert!(dm.nip17);
    assert_eq!(dm.from, shop.merchant, "sent from the shop's own identity");
    let token = dm.content.lines().last().unwrap().trim().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let wallet = soko::wallet::open(&store, "mama", soko.daemon().mint_url(), &[6; 64]).unwrap();
    let received = wallet
        .receive(&token, cdk::wallet::ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 610);
    // All of it is mama's now.
    assert_emptied(&soko, &embedded_mint(&soko), 610).await;
    soko.stop().await;
}
