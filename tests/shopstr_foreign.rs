//! Shopstr's pay-first checkout with ecash of another mint on `[mint] foreign_allow`: the
//! token is melted at its mint to pay an invoice of soko's mint, the fees told to the buyer.
//!
//! Two real cdk dev mints on loopback. soko's own mint is started with invoices that would
//! settle by themselves only after an hour, so within a test none of its invoices is paid
//! except by [`LinkedLightning`]: the Lightning network between the two fake backends. It
//! pays an invoice of soko's mint when, and only when, the other mint reports a melt of that
//! very invoice paid, for the melt's amount. So an order here is paid because the buyer's
//! token was melted for soko's invoice, not by a timer.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cdk::cdk_payment::WaitPaymentResponse;
use cdk::nuts::{MeltQuoteState, MintQuoteState};
use common::binary::Binary;
use common::sessions::token_from;
use common::shopstr::*;
use common::*;
use nostr_sdk::prelude::*;
use soko::devmint::DevMint;
use soko::money::Sats;

/// Seconds after which soko's own mint would settle an invoice by itself: past any test.
const NEVER: u64 = 3600;

/// Carries payments from melts at `from` to invoices of `to`.
struct LinkedLightning {
    task: tokio::task::JoinHandle<()>,
}

impl LinkedLightning {
    fn between(from: Arc<cdk::Mint>, to: Arc<cdk::Mint>) -> Self {
        let task = tokio::spawn(async move {
            loop {
                let paid: Vec<(String, u64)> = from
                    .melt_quotes()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|q| q.state == MeltQuoteState::Paid)
                    .map(|q| (q.request.to_string(), q.amount().value()))
                    .collect();
                for quote in to.mint_quotes().await.unwrap_or_default() {
                    if quote.state() != MintQuoteState::Unpaid {
                        continue;
                    }
                    let Some((_, amount)) = paid.iter().find(|(r, _)| *r == quote.request) else {
                        continue;
                    };
                    assert_eq!(
                        quote.amount.clone().map(|a| a.value()),
                        Some(*amount),
                        "the melt paid the invoice's amount"
                    );
                    to.pay_mint_quote_for_request_id(WaitPaymentResponse {
                        payment_id: quote.request_lookup_id.to_string(),
                        payment_identifier: quote.request_lookup_id.clone(),
                        payment_amount: quote.amount.clone().expect("an amount"),
                    })
                    .await
                    .expect("settled");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { task }
    }
}

impl Drop for LinkedLightning {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Paid melts at `mint`: (invoice, amount).
async fn paid_melts(mint: &cdk::Mint) -> Vec<(String, u64)> {
    mint.melt_quotes()
        .await
        .unwrap()
        .into_iter()
        .filter(|q| q.state == MeltQuoteState::Paid)
        .map(|q| (q.request.to_string(), q.amount().value()))
        .collect()
}

/// Invoices of `mint` whose ecash was minted: (invoice, amount).
async fn issued_invoices(mint: &cdk::Mint) -> Vec<(String, u64)> {
    mint.mint_quotes()
        .await
        .unwrap()
        .into_iter()
        .filter(|q| q.state() == MintQuoteState::Issued)
        .map(|q| (q.request.clone(), q.amount.map(|a| a.value()).unwrap_or(0)))
        .collect()
}

/// The normalised URL a config lists.
fn listed(mint: &DevMint) -> String {
    mint.url()
        .parse::<cdk::mint_url::MintUrl>()
        .unwrap()
        .to_string()
}

/// soko's binary in `dir` on its mint `own`, taking the ecash of `other` too.
fn binary_allowing(dir: &std::path::Path, own: &DevMint, other: &DevMint) -> Binary {
    Binary::in_dir_with_mint_keys(
        dir,
        own.url(),
        &format!("foreign_allow = [\"{}\"]", listed(other)),
    )
}

/// The sats in a message's text just before `what` (e.g. "sat reached soko's mint").
fn sats_before(text: &str, what: &str) -> u64 {
    let at = text
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} in {text}"));
    text[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number before {what:?} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_an_allowed_mint_is_melted_to_pay_soko_and_the_fee_is_told() {
    let (own, _own_dir) = external_dev_mint(NEVER).await;
    let (other, _other_dir) = external_dev_mint(0).await;
    let _lightning = LinkedLightning::between(other.mint().clone(), own.mint().clone());
    let other_url = listed(&other);
    let mut soko =
        TestSoko::start_on_mint(own.url(), |c| c.foreign_mints.allow = vec![other_url]).await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;

    // One mango: 610 sat. The token holds 700 sat of the other mint.
    let token = token_from(other.url(), 700).await;
    let before_other = outstanding_at(other.mint()).await;
    shopstr_pays(&buyer, shop.merchant, "far-1", 1, &token).await;

    let dms = buyer.all_dms(QUIET_PERIOD + REPLY_TIMEOUT).await;
    assert!(
        dms.iter().any(|dm| dm.tag("status") == Some("confirmed")),
        "{dms:?}"
    );
    assert_eq!(dms.iter().filter_map(code_in).count(), 1, "{dms:?}");
    let told = dms
        .iter()
        .find(|dm| dm.content.contains("that mint's fees"))
        .unwrap_or_else(|| panic!("the fees told: {dms:?}"));
    let fees = sats_before(&told.content, "sat and");
    let arrived = sats_before(&told.content, "sat reached soko's mint");
    assert!(told.content.contains("held 700 sat"), "{}", told.content);
    assert!(fees > 0, "the Lightning fee reserve: {}", told.content);
    assert!(arrived >= 610, "{}", told.content);

    // The melt paid soko's invoice, and only the melt: one invoice of soko's mint minted,
    // for the amount of the one melt paid at the other mint.
    let melts = paid_melts(other.mint()).await;
    assert_eq!(melts.len(), 1, "{melts:?}");
    assert_eq!(issued_invoices(own.mint()).await, melts);
    assert_eq!(melts[0].1, arrived);

    // The overpayment comes back as ecash of soko's mint; the unused fee reserve as ecash of
    // the other mint.
    let changes: Vec<&Received> = dms
        .iter()
        .filter(|dm| dm.tag("subject") == Some("payment-change"))
        .collect();
    let over = changes
        .iter()
        .find(|dm| dm.content.contains("more than its total"))
        .unwrap_or_else(|| panic!("the overpayment back: {dms:?}"));
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let at_own = soko::wallet::open(&store, "buyer-own", own.url(), &[21; 64]).unwrap();
    let back = at_own
        .receive(token_in(&over.content), Default::default())
        .await
        .expect("the overpayment is ecash of soko's mint");
    assert_eq!(u64::from(back), arrived - 610);
    let at_other = soko::wallet::open(&store, "buyer-other", other.url(), &[22; 64]).unwrap();
    let reserve_back = match changes.iter().find(|dm| dm.content.contains("fee reserve")) {
        Some(dm) => u64::from(
            at_other
                .receive(token_in(&dm.content), Default::default())
                .await
                .expect("the change is ecash of the other mint"),
        ),
        None => 0,
    };
    // Every sat of the token accounted for: the fees, the order, the overpayment, the change.
    assert_eq!(fees + arrived + reserve_back, 700, "{}", told.content);
    // The other mint burnt the 700 and issued only the change back.
    assert_eq!(
        outstanding_at(other.mint()).await,
        before_other - 700 + reserve_back
    );

    // soko's books: the order's total held, matching its wallet and its mint.
    let escrow = soko.daemon().escrow();
    let record = escrow.order(&shop.merchant, 1).unwrap().expect("order #1");
    assert_eq!(record.state, soko::escrow::EscrowState::Paid);
    assert_eq!(escrow.books().unwrap(), (Sats(610), Sats::ZERO));
    assert_conserved(&soko, own.mint(), arrived - 610).await;
    soko.stop().await;
    other.shutdown().await;
    own.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_after_fees_unlisted_and_unreachable_mints_hand_the_token_back() {
    let (own, _own_dir) = external_dev_mint(NEVER).await;
    let (other, _other_dir) = external_dev_mint(0).await;
    let (gone, _gone_dir) = external_dev_mint(0).await;
    let (unlisted, _unlisted_dir) = external_dev_mint(0).await;
    let _lightning = LinkedLightning::between(other.mint().clone(), own.mint().clone());
    let allow = vec![listed(&other), listed(&gone)];
    let mut soko = TestSoko::start_on_mint(own.url(), |c| c.foreign_mints.allow = allow).await;
    let shop = mango_shop(&soko).await;
    let mut buyer = User::connect(&[soko.relay_url()]).await;
    let escrow = soko.daemon().escrow().clone();

    // 612 sat for a 610 sat order: enough at face value, short after the Lightning fee
    // reserve. Refused before anything is melted; the buyer's own token comes back.
    let short = token_from(other.url(), 612).await;
    shopstr_pays(&buyer, shop.merchant, "short", 1, &short).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "short");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("short payment"), "{text}");
    assert!(text.contains("Lightning reserve"), "{text}");
    assert_eq!(token_in(text), short, "the buyer's own token");
    assert!(paid_melts(other.mint()).await.is_empty(), "nothing melted");

    // A mint not on the list: refused as before.
    let foreign = token_from(unlisted.url(), 700).await;
    shopstr_pays(&buyer, shop.merchant, "unlisted", 1, &foreign).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "unlisted");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("a mint soko does not take"), "{text}");
    assert_eq!(token_in(text), foreign);

    // A listed mint that cannot be reached: a clear answer and the token back.
    let stranded = token_from(gone.url(), 700).await;
    gone.shutdown().await;
    shopstr_pays(&buyer, shop.merchant, "gone", 1, &stranded).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT * 2).await.expect("refused");
    let (status, text) = order_info(&dm, "gone");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("cannot be reached"), "{text}");
    assert_eq!(token_in(text), stranded);

    assert!(
        escrow.order(&shop.merchant, 1).unwrap().is_none(),
        "no order"
    );
    assert_eq!(escrow.books().unwrap(), (Sats::ZERO, Sats::ZERO));
    assert!(issued_invoices(own.mint()).await.is_empty());

    // The short token is still the buyer's, whole.
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let wallet = soko::wallet::open(&store, "buyer", other.url(), &[23; 64]).unwrap();
    let kept = wallet.receive(&short, Default::default()).await.unwrap();
    assert_eq!(u64::from(kept), 612);
    soko.stop().await;
    unlisted.shutdown().await;
    other.shutdown().await;
    own.shutdown().await;
}

/// soko crashes at `point` while taking a token of another mint; the next start finishes it
/// once: one melt, one order, one mint of the invoice, the fees told and the overpayment
/// handed back once each.
async fn a_crash_while_melting_at(point: &str) {
    let (own, _own_dir) = external_dev_mint(NEVER).await;
    let (other, _other_dir) = external_dev_mint(0).await;
    let _lightning = LinkedLightning::between(other.mint().clone(), own.mint().clone());
    let dir = tempfile::tempdir().unwrap();
    let mut soko = binary_allowing(dir.path(), &own, &other);
    let config = soko.config();
    soko.start().await;
    let merchant = Mangoes::stock(5).open(&config).await.merchant;
    soko.kill();

    let token = token_from(other.url(), 700).await;
    soko.start_failing_at(point).await;
    let keys = Keys::generate();
    let buyer = User::with_keys(keys.clone(), &[soko.relay()]).await;
    shopstr_pays(&buyer, merchant, "crash-far", 1, &token).await;
    soko.crashed().await;
    buyer.client.shutdown().await;
    // Where the crash came: after the melt, or before it.
    let melted_before = paid_melts(other.mint()).await.len();
    assert_eq!(
        melted_before,
        usize::from(point == "ecash-melted"),
        "{point}"
    );

    soko.start().await;
    let mut buyer = User::with_keys(keys, &[soko.relay()]).await;
    let dms = buyer.all_dms(REPLY_TIMEOUT + QUIET_PERIOD).await;
    let codes: Vec<String> = dms.iter().filter_map(code_in).collect();
    assert_eq!(codes.len(), 1, "one code: {dms:?}");
    let told: Vec<&Received> = dms
        .iter()
        .filter(|dm| dm.content.contains("that mint's fees"))
        .collect();
    assert_eq!(told.len(), 1, "the fees told once: {dms:?}");
    let arrived = sats_before(&told[0].content, "sat reached soko's mint");
    let overpayments = dms
        .iter()
        .filter(|dm| dm.content.contains("more than its total"))
        .count();
    assert_eq!(overpayments, 1, "{dms:?}");

    // One melt, one mint of soko's invoice, for the same amount.
    let melts = paid_melts(other.mint()).await;
    assert_eq!(melts.len(), 1, "{melts:?}");
    assert_eq!(issued_invoices(own.mint()).await, melts);
    // soko's mint issued exactly what arrived: 610 held, the rest handed back.
    assert_eq!(outstanding_at(own.mint()).await, arrived);

    only_order_one_delivers(&config, merchant, &codes[0]).await;
    soko.kill();
    other.shutdown().await;
    own.shutdown().await;
}

/// The melt went through before the crash; the restart must not melt again or lose it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_melt_and_the_mint_loses_nothing() {
    a_crash_while_melting_at("ecash-melted").await;
}

/// Quoted, the melt not yet asked for: the restart melts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_quotes_and_the_melt_loses_nothing() {
    a_crash_while_melting_at("ecash-quoted").await;
}

/// A token recorded while its mint was on the list, and the mint dropped from the list before
/// soko used it (a crash, a new config, a restart): it goes back untouched, nothing melted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_a_mint_dropped_from_the_list_before_use_goes_back() {
    let (own, _own_dir) = external_dev_mint(NEVER).await;
    let (other, _other_dir) = external_dev_mint(0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut soko = binary_allowing(dir.path(), &own, &other);
    let config = soko.config();
    soko.start().await;
    let merchant = Mangoes::stock(5).open(&config).await.merchant;
    let token = token_from(other.url(), 700).await;
    soko.kill();
    soko.start_failing_at("ecash-recorded").await;
    let keys = Keys::generate();
    let buyer = User::with_keys(keys.clone(), &[soko.relay()]).await;
    shopstr_pays(&buyer, merchant, "dropped", 1, &token).await;
    soko.crashed().await;
    buyer.client.shutdown().await;
    drop(soko);

    let mut soko = Binary::in_dir(dir.path(), own.url());
    soko.start().await;
    let mut buyer = User::with_keys(keys, &[soko.relay()]).await;
    let dm = buyer.next_dm(REPLY_TIMEOUT).await.expect("refused");
    let (status, text) = order_info(&dm, "dropped");
    assert_eq!(status, Some("canceled"), "{text}");
    assert!(text.contains("a mint soko does not take"), "{text}");
    assert_eq!(token_in(text), token, "the buyer's own token");
    assert!(paid_melts(other.mint()).await.is_empty(), "nothing melted");
    soko.kill();
    other.shutdown().await;
    own.shutdown().await;
}
