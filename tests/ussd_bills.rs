//! A merchant pays a bill from its sales over USSD, on real parts: its balance comes from a
//! real order paid at the in-process mint and delivered over USSD; the bill becomes an
//! exchange offer funded from that balance; a registered trader in a BAT session of its own
//! claims it, pays its bond (the dev mint's fake Lightning settles it), submits a receipt;
//! the merchant confirms it from the phone; the bond comes back into the balance.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::books::reconciled;
use common::bridge::*;
use common::exchange::{exchange_config, session_balance, Trader};
use common::*;
use nostr_sdk::prelude::*;
use serde_json::json;
use soko::money::Sats;

const PHONE: &str = "+254711000111";
const PIN: &str = "4821";
const BOOK: u16 = 38383;

/// A KES rate of 100 sat a shilling, and bonds and fees small enough for one order's sales.
fn bills_config(c: &mut soko::Config) {
    exchange_config(c);
    c.rates.insert("KES".to_owned(), 1_000);
    c.exchange.min_sats = 100;
    c.exchange.maker_bond = [100, 500];
    c.exchange.taker_bond = [100, 500];
    c.exchange.platform_fee = [10, 100];
    c.exchange.taker_fee = [5, 0];
}

/// One hop; every screen fits the handset (checked by `shown`) and is kept for the caller.
async fn hop(bridge: &mut Bridge, session: &str, text: &str) -> Shown {
    let shown = bridge.hop(session, PHONE, text).await;
    assert!(
        format!("CON {}", shown.screen).chars().count() <= 182,
        "{}",
        shown.screen
    );
    shown
}

/// soko with a merchant onboarded over USSD whose balance is a real order's 1120 sat, paid
/// at the mint and delivered over USSD.
async fn merchant_with_sales() -> (TestSoko, Bridge, PublicKey) {
    let bridge_keys = Keys::generate();
    let soko = soko_with_bridge(&bridge_keys, bills_config).await;
    let mut bridge = Bridge::connect(bridge_keys, &soko).await;
    let (merchant, npub, code) = pending_merchant(&soko, PHONE, None).await.typed();

    // Onboarding, a real order paid and delivered over USSD: 1120 sat of sales.
    hop(&mut bridge, "AT-1", "").await;
    let s = format!("{code}*{PIN}*{PIN}*1");
    for text in [
        code.clone(),
        format!("{code}*{PIN}"),
        format!("{code}*{PIN}*{PIN}"),
    ] {
        hop(&mut bridge, "AT-1", &text).await;
    }
    hop(&mut bridge, "AT-1", &s).await;
    put_listings(&soko, &npub).await;
    let (mut buyer, delivery) = paid_order(&soko, merchant, "o-1").await;
    let s = format!("{s}*2");
    hop(&mut bridge, "AT-1", &s).await;
    let s = format!("{s}*1");
    hop(&mut bridge, "AT-1", &s).await;
    let done = hop(&mut bridge, "AT-1", &format!("{s}*{delivery}")).await;
    assert!(done.end, "{}", done.screen);
    assert_delivered_over_ussd(&soko, merchant, &mut buyer, Sats(1120)).await;
    (soko, bridge, merchant)
}

/// The number of M-Pesa paybill in KES in menu 7's list.
fn mpesa_paybill(soko: &TestSoko) -> usize {
    let providers = soko.daemon().exchange().providers().all().unwrap();
    let mut number = 0;
    for p in &providers {
        for kind in &p.kinds {
            for currency in &p.currencies {
                number += 1;
                if p.id == "mpesa" && kind.as_str() == "paybill" && currency == "KES" {
                    return number;
                }
            }
        }
    }
    panic!("no M-Pesa paybill")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_pays_a_bill_from_its_sales_and_confirms_it_by_phone() {
    let (soko, mut bridge, merchant) = merchant_with_sales().await;
    let escrow = soko.daemon().escrow().clone();
    let before = escrow.balance(&merchant).unwrap();

    // 7 Pay a bill: provider, paybill number, amount, the total confirmed with the PIN.
    let main = hop(&mut bridge, "AT-2", "").await;
    assert!(main.screen.contains("PIN"), "{}", main.screen);
    let main = hop(&mut bridge, "AT-2", PIN).await;
    assert!(
        main.screen.contains("7 Pay a bill\n8 My bills"),
        "{}",
        main.screen
    );
    let options = hop(&mut bridge, "AT-2", &format!("{PIN}*7")).await;
    assert!(
        options.screen.starts_with("Pay a bill from your balance"),
        "{}",
        options.screen
    );
    let mpesa_paybill = mpesa_paybill(&soko);
    let s = format!("{PIN}*7*{mpesa_paybill}");
    let reference = hop(&mut bridge, "AT-2", &s).await;
    assert_eq!(reference.screen, "Type the paybill number:\n00 Back");
    let s = format!("{s}*888880");
    let amount = hop(&mut bridge, "AT-2", &s).await;
    assert_eq!(amount.screen, "Amount in KES:\n00 Back");
    let s = format!("{s}*5");
    let confirm = hop(&mut bridge, "AT-2", &s).await;
    // 5 KES at 100 sat = 500 escrow; bond 100 + 5 % = 125; fee 10 + 1 % = 15.
    assert_eq!(
        confirm.screen,
        "Pay KES 5 to paybill 888880?\n640 sat from balance: 500 to payer, 125 bond back after, 15 fee\nPIN to offer it:\n00 Back"
    );
    assert_eq!(
        escrow.balance(&merchant).unwrap(),
        before,
        "nothing moved before the PIN"
    );
    let s = format!("{s}*{PIN}");
    let offered = hop(&mut bridge, "AT-2", &s).await;
    assert!(
        offered
            .screen
            .starts_with("Your bill is on offer.\nKES 5 M-Pesa: waiting for a payer"),
        "{}",
        offered.screen
    );
    assert_eq!(escrow.balance(&merchant).unwrap(), Sats(before.0 - 640));

    // The offer on the exchange, listed without an invoice.
    let offers = soko.daemon().exchange().all().unwrap();
    assert_eq!(offers.len(), 1);
    let record = &offers[0];
    let offer = record.id.clone();
    assert_eq!(record.state.name(), "INVOICE_PAID");
    assert!(record.maker_invoice.is_none());
    assert_ne!(
        record.maker.key, merchant,
        "the offer's session is not the merchant's key"
    );
    let a = record.amounts;
    assert_eq!(
        (a.escrow.0, a.maker_bond.0, a.platform_fee.0),
        (500, 125, 15)
    );

    // A trader in a session of its own claims it, its bond gets paid, it pays the bill.
    let mut taker = Trader::join(&soko).await;
    taker
        .ok(&soko, "offer_claim", json!({"offer": offer}))
        .await;
    let told = taker.notice(&offer, "TAKER_BOND_PAID").await;
    assert_eq!(told["bill"]["reference"], "888880", "{told}");
    let receipt = "Confirmed. KES 5.00 sent to 888880 account Mama Duka on 29/11/26. New M-PESA balance is KES 12,345.00. Transaction cost KES 0.00. Amount you can transact within the day is 499,995.00.";
    taker
        .ok(
            &soko,
            "receipt_submit",
            json!({"offer": offer, "text": receipt}),
        )
        .await;

    // 8 My bills: the receipt (cut to fit), confirmed with the PIN.
    let s = format!("{s}*00");
    hop(&mut bridge, "AT-2", &s).await;
    let s = format!("{s}*00");
    hop(&mut bridge, "AT-2", &s).await;
    let s = format!("{s}*8");
    let list = hop(&mut bridge, "AT-2", &s).await;
    assert!(
        list.screen
            .contains("1 KES 5 M-Pesa PAID? check and confirm"),
        "{}",
        list.screen
    );
    let s = format!("{s}*1");
    let bill = hop(&mut bridge, "AT-2", &s).await;
    assert!(
        bill.screen
            .contains("Receipt: Confirmed. KES 5.00 sent to 888880"),
        "{}",
        bill.screen
    );
    assert!(
        bill.screen.ends_with("1 Confirm paid\n2 Not paid\n00 Back"),
        "{}",
        bill.screen
    );
    let not_paid = hop(&mut bridge, "AT-2", &format!("{s}*2")).await;
    assert!(
        not_paid.screen.starts_with("Call soko's operator"),
        "{}",
        not_paid.screen
    );
    let s = format!("{s}*2*1");
    let pin = hop(&mut bridge, "AT-2", &s).await;
    assert_eq!(
        pin.screen,
        "Release 500 sat to the payer?\nPIN to confirm:\n00 Back"
    );
    let confirmed = hop(&mut bridge, "AT-2", &format!("{s}*{PIN}")).await;
    assert!(
        confirmed
            .screen
            .starts_with("Confirmed: the payer is paid.\nKES 5 M-Pesa: done"),
        "{}",
        confirmed.screen
    );

    // The taker has the escrow and its bond back; the merchant its bond: it paid escrow
    // and fee, and nothing else.
    let completed = taker.notice(&offer, "COMPLETED").await;
    assert_eq!(completed["you_get_sat"], 625, "{completed}");
    assert_eq!(session_balance(&soko, &mut taker).await, 625);
    assert_eq!(
        escrow.balance(&merchant).unwrap(),
        Sats(before.0 - 500 - 15),
        "the bond is back in the balance"
    );
    assert_eq!(reconciled(&soko).await.drift(), 0, "the books balance");

    // The book never named the merchant.
    let book = events_of(&soko, soko.bot(), Kind::Custom(BOOK)).await;
    assert!(book
        .iter()
        .any(|e| e.tags.identifier() == Some(offer.as_str())));
    for event in &book {
        let text = event.as_json();
        for form in [merchant.to_hex(), merchant.to_bech32().unwrap()] {
            assert!(!text.contains(&form), "the book names the merchant: {text}");
        }
        assert!(!text.contains("888880"), "the book shows the bill: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_nobody_takes_expires_and_the_whole_total_comes_back() {
    let (soko, mut bridge, merchant) = merchant_with_sales().await;
    let escrow = soko.daemon().escrow().clone();
    let before = escrow.balance(&merchant).unwrap();
    let option = mpesa_paybill(&soko);
    let mut text = String::new();
    hop(&mut bridge, "AT-2", "").await;
    for input in [
        PIN.to_owned(),
        "7".into(),
        option.to_string(),
        "888880".into(),
        "5".into(),
    ] {
        text = if text.is_empty() {
            input
        } else {
            format!("{text}*{input}")
        };
        hop(&mut bridge, "AT-2", &text).await;
    }
    let offered = hop(&mut bridge, "AT-2", &format!("{text}*{PIN}")).await;
    assert!(
        offered.screen.starts_with("Your bill is on offer."),
        "{}",
        offered.screen
    );
    assert_eq!(escrow.balance(&merchant).unwrap(), Sats(before.0 - 640));

    // No payer within the listing window: the offer expires and the bills pass sweeps the
    // bill's session (escrow, bond and fee, all of it) back into the balance.
    soko.advance(301);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while escrow.balance(&merchant).unwrap() != before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "swept back: {} of {before}",
            escrow.balance(&merchant).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let offers = soko.daemon().exchange().all().unwrap();
    assert_eq!(offers[0].state.name(), "EXPIRED");
    assert_eq!(reconciled(&soko).await.drift(), 0, "the books balance");

    // Both escrow moves are idempotent per key: a retry repeats nothing.
    let token = escrow
        .withdraw_token(merchant, Sats(100), "retry")
        .await
        .unwrap();
    let again = escrow
        .withdraw_token(merchant, Sats(100), "retry")
        .await
        .unwrap();
    assert_eq!(token, again, "the same token for the same key");
    assert_eq!(
        escrow.balance(&merchant).unwrap(),
        Sats(before.0 - 100),
        "debited once"
    );
    assert!(escrow
        .withdraw_token(merchant, Sats(99), "retry")
        .await
        .is_err());
    let too_much = escrow
        .withdraw_token(merchant, Sats(before.0), "more")
        .await;
    assert!(
        matches!(too_much, Err(soko::escrow::EscrowError::Refused(_))),
        "{too_much:?}"
    );
    assert_eq!(
        escrow.credit_token(merchant, &token, "back").await.unwrap(),
        Sats(100)
    );
    assert_eq!(
        escrow.credit_token(merchant, &token, "back").await.unwrap(),
        Sats(100)
    );
    assert_eq!(escrow.balance(&merchant).unwrap(), before, "credited once");
    assert_eq!(reconciled(&soko).await.drift(), 0, "the books balance");
}
