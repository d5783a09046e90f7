//! Shopstr's pay-first checkout against a real soko: the buyer's client sends the merchant a
//! kind-14 `order-payment` rumor with a Cashu token in its `payment` tag, sealed by a
//! throwaway key and naming the buyer in `b`, as Shopstr's `cart-invoice-card.tsx` does.
//! The tokens are minted by real cdk wallets from the dev mint; the answers are read at the
//! buyer's own key, the only one Shopstr reads gift wraps for.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::binary::Binary;
use common::sessions::token_from;
use common::shopstr::*;
use common::*;
use nostr_sdk::prelude::*;
use soko::money::Sats;
use std::str::FromStr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopstr_ecash_order_is_held_in_escrow_and_answered_at_the_buyers_own_key() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    // One mango: 500 + 100 (zone) + 10 (per item) = 610 sat.
    let token = token_from(soko.daemon().mint_url(), 610).await;
    let throwaway = shopstr_pays(&buyer, shop.merchant, "5d7c-1", 1, &token).await;
    let mut throwaway_inbox = User::with_keys(throwaway, &[soko.relay_url()]).await;

    let confirmed = buyer.next_dm(REPLY_TIMEOUT).await.expect("confirmed");
    assert_eq!(confirmed.from, shop.merchant);
    let (status, text) = order_info(&confirmed, "5d7c-1");
    assert_eq!(status, Some("confirmed"), "{text}");
    let code_dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("the code");
    let (status, _) = order_info(&code_dm, "5d7c-1");
    // No status: Shopstr counts it `pending`, its lowest rank, so `confirmed` stands.
    assert_eq!(status, None);
    let code = code_in(&code_dm).expect("8 digits");
    assert!(
        throwaway_inbox.all_dms(QUIET_PERIOD).await.is_empty(),
        "nothing goes to the throwaway key"
    );

    let escrow = soko.daemon().escrow();
    let record = escrow.order(&shop.merchant, 1).unwrap().expect("order #1");
    assert_eq!(record.dialect, soko::escrow::Dialect::Shopstr);
    assert_eq!(record.buyer, buyer.pubkey());
    assert_eq!(record.state, soko::escrow::EscrowState::Paid);
    assert_eq!(escrow.books().unwrap(), (Sats(610), Sats::ZERO));
    assert_books_balance(&soko).await;

    // The same message again (another relay's copy): nothing twice.
    let again = soko::outbound::wrap_tagged(
        &Keys::generate(),
        shop.merchant,
        14,
        &[
            vec!["subject".into(), "order-payment".into()],
            vec!["order".into(), "5d7c-1".into()],
            vec!["b".into(), buyer.pubkey().to_hex()],
            vec!["payment".into(), "ecash".into(), token.clone()],
            vec![
                "item".into(),
                format!("30402:{}:mango", shop.merchant.to_hex()),
                "1".into(),
            ],
        ],
        "",
    )
    .await
    .unwrap();
    buyer.publish(&again).await;
    assert!(
        buyer.all_dms(QUIET_PERIOD).await.is_empty(),
        "answered once"
    );
    assert_eq!(escrow.books().unwrap(), (Sats(610), Sats::ZERO));

    let delivered = shop.deliver(&soko, 1, &code).await;
    assert!(delivered.ok, "{delivered:?}");
    let completed = buyer.next_dm(REPLY_TIMEOUT).await.expect("completed");
    assert_eq!(order_info(&completed, "5d7c-1").0, Some("completed"));
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats(610)));
    assert_books_balance(&soko).await;
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overpayment_comes_back_as_a_token_the_buyer_can_take() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let token = token_from(soko.daemon().mint_url(), 700).await;
    shopstr_pays(&buyer, shop.merchant, "over-1", 1, &token).await;

    let dms = buyer.all_dms(QUIET_PERIOD + REPLY_TIMEOUT / 2).await;
    let change = dms
        .iter()
        .find(|dm| dm.tag("subject") == Some("payment-change"))
        .unwrap_or_else(|| panic!("a change message: {dms:?}"));
    assert_eq!(change.tag("order"), Some("over-1"));
    let tagged = change
        .tags
        .iter()
        .find(|t| t[0] == "payment")
        .expect("a payment tag");
    assert_eq!(tagged[1], "ecash");
    assert_eq!(token_in(&change.content), tagged[2]);
    assert!(dms.iter().any(|dm| dm.tag("status") == Some("confirmed")));
    assert!(dms.iter().any(|dm| code_in(dm).is_some()));

    let mint = embedded_mint(&soko);
    assert_eq!(
        soko.daemon().escrow().books().unwrap(),
        (Sats(610), Sats::ZERO)
    );
    assert_conserved(&soko, &mint, 90).await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = buyer_wallet(&soko, dir.path());
    let back = wallet
        .receive(&tagged[2], Default::default())
        .await
        .expect("the change is good ecash");
    assert_eq!(u64::from(back), 90);
    assert_conserved(&soko, &mint, 90).await;
    soko.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_spent_reused_and_foreign_tokens_are_refused_and_make_no_order() {
    let mut soko = TestSoko::start().await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let mint_url = soko.daemon().mint_url().to_owned();
    let escrow = soko.daemon().escrow().clone();

    // Short: 500 sat for a 610 sat order. The token is not taken and comes back as it was.
    let short = token_from(&mint_url, 500).await;
    shopstr_pays(&buyer, shop.merchant, "short", 1, &short).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "short");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("short payment"), "{text}");
    assert!(
        text.contains("500 sat") && text.contains("610 sat"),
        "{text}"
    );
    assert_eq!(token_in(text), short, "the buyer's own token, untouched");

    // Spent: the buyer's wallet took the token back before soko saw it.
    let spent = token_from(&mint_url, 610).await;
    let dir = tempfile::tempdir().unwrap();
    buyer_wallet(&soko, dir.path())
        .receive(&spent, Default::default())
        .await
        .unwrap();
    shopstr_pays(&buyer, shop.merchant, "spent", 1, &spent).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "spent");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("already spent"), "{text}");

    // Another mint's ecash: refused, handed back.
    let (other, _other_dir) = external_dev_mint(0).await;
    let foreign = token_from(other.url(), 610).await;
    shopstr_pays(&buyer, shop.merchant, "foreign", 1, &foreign).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "foreign");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("a mint soko does not take"), "{text}");
    assert_eq!(token_in(text), foreign);

    // Forged: a real token's amounts and keyset with made-up secrets. The mint says the
    // proofs are unspent (it never saw them) and refuses the swap.
    let real = token_from(&mint_url, 610).await;
    let mut forged = cdk::nuts::Token::from_str(&real).unwrap();
    let cdk::nuts::Token::TokenV4(v4) = &mut forged else {
        panic!("a V4 token");
    };
    for part in &mut v4.token {
        for proof in &mut part.proofs {
            proof.secret = cdk::secret::Secret::generate();
            proof.dleq = None;
        }
    }
    shopstr_pays(&buyer, shop.merchant, "forged", 1, &forged.to_string()).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "forged");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("the mint does not take the token"), "{text}");

    assert!(
        escrow.order(&shop.merchant, 1).unwrap().is_none(),
        "no order"
    );
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats::ZERO));
    // The short token (500) and the real one behind the forgery (610) are still the buyer's;
    // the spent one is in the buyer's wallet.
    assert_conserved(&soko, &embedded_mint(&soko), 500 + 610 + 610).await;

    // A token that paid one order cannot pay a second one.
    let good = token_from(&mint_url, 610).await;
    shopstr_pays(&buyer, shop.merchant, "first", 1, &good).await;
    let dms = buyer.all_dms(QUIET_PERIOD + REPLY_TIMEOUT / 2).await;
    assert!(
        dms.iter().any(|dm| dm.tag("status") == Some("confirmed")),
        "{dms:?}"
    );
    shopstr_pays(&buyer, shop.merchant, "second", 1, &good).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "second");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("already paid for another order"), "{text}");
    assert!(
        escrow.order(&shop.merchant, 2).unwrap().is_none(),
        "one order"
    );
    assert_eq!(escrow.books().unwrap(), (Sats(610), Sats::ZERO));
    assert_conserved(&soko, &embedded_mint(&soko), 500 + 610 + 610).await;

    // Finished intakes ("spent", "forged" and "first") are kept a week, then dropped with their
    // claims on the proofs; the mint still knows the token spent, so a replay stays refused.
    assert_eq!(escrow.ecash_intakes(), 3);
    soko.advance(8 * 24 * 3600);
    escrow.tick().await.unwrap();
    assert_eq!(escrow.ecash_intakes(), 0);
    shopstr_pays(&buyer, shop.merchant, "third", 1, &good).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "third");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("already spent"), "{text}");
    assert_eq!(escrow.books().unwrap(), (Sats(610), Sats::ZERO));
    other.shutdown().await;
    soko.stop().await;
}

/// soko crashes at `point` while taking a Shopstr order; the next start finishes it once:
/// one code, one order, the token's value held and nothing lost at the mint.
async fn a_crash_while_taking_ecash_at(point: &str) {
    let (mint, _mint_dir) = external_dev_mint(0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut soko = Binary::in_dir(dir.path(), mint.url());
    let config = soko.config();
    soko.start().await;
    let merchant = Mangoes::stock(5).open(&config).await.merchant;
    soko.kill();

    let token = token_from(mint.url(), 700).await;
    let issued = outstanding_at(mint.mint()).await;
    soko.start_failing_at(point).await;
    let keys = Keys::generate();
    let buyer = User::with_keys(keys.clone(), &[soko.relay()]).await;
    shopstr_pays(&buyer, merchant, "crash-1", 1, &token).await;
    soko.crashed().await;
    buyer.client.shutdown().await;

    soko.start().await;
    let mut buyer = User::with_keys(keys, &[soko.relay()]).await;
    let dms = buyer.all_dms(REPLY_TIMEOUT).await;
    let codes: Vec<String> = dms.iter().filter_map(code_in).collect();
    assert_eq!(codes.len(), 1, "one code after a crash at {point}: {dms:?}");
    let changes: Vec<&Received> = dms
        .iter()
        .filter(|dm| dm.tag("subject") == Some("payment-change"))
        .collect();
    assert_eq!(changes.len(), 1, "the 90 sat change once: {dms:?}");
    let store_dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(store_dir.path()).unwrap();
    let wallet = soko::wallet::open(&store, "buyer", mint.url(), &[12; 64]).unwrap();
    let change = wallet
        .receive(token_in(&changes[0].content), Default::default())
        .await
        .expect("the change is good ecash");
    assert_eq!(u64::from(change), 90);
    // Swaps neither mint nor burn: the buyer's 700 sat are now soko's 610 and the change.
    assert_eq!(outstanding_at(mint.mint()).await, issued);

    // Exactly one order #1, paid, and its code releases it.
    only_order_one_delivers(&config, merchant, &codes[0]).await;
    soko.kill();
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_redeeming_the_token_and_recording_the_order_loses_nothing() {
    a_crash_while_taking_ecash_at("ecash-redeemed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_recording_the_token_before_redeeming_it_loses_nothing() {
    a_crash_while_taking_ecash_at("ecash-recorded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_recording_the_order_before_the_change_loses_nothing() {
    a_crash_while_taking_ecash_at("ecash-ordered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_the_change_prepared_but_not_made_loses_nothing() {
    a_crash_while_taking_ecash_at("ecash-change-prepared").await;
}
