//! Issues and disputes on real parts: a side reveals its registered key by a signed event,
//! the other concedes or disputes, an admin resolves; the ecash of the outcome is locked
//! (NUT-11) to the revealed keys, which a plain cdk wallet in the test checks.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::exchange::{exchange_config, offer_args, reveal_by, session_balance, Trader};
use common::sessions::{code, redeem_with};
use common::{operator, TestSoko};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

/// A trade of `sats` up to the taker's bond paid: the offer id and its amounts.
async fn bond_paid(
    soko: &TestSoko,
    maker: &mut Trader,
    taker: &mut Trader,
    sats: u64,
) -> (String, Value) {
    let created = maker
        .ok(soko, "offer_create", offer_args("1500", sats))
        .await;
    let offer = created["offer"].as_str().unwrap().to_owned();
    maker.notice(&offer, "INVOICE_PAID").await;
    taker.ok(soko, "offer_claim", json!({"offer": offer})).await;
    taker.notice(&offer, "TAKER_BOND_PAID").await;
    maker.notice(&offer, "TAKER_BOND_PAID").await;
    (offer, created["amounts"].clone())
}

fn sats(amounts: &Value, name: &str) -> u64 {
    amounts[name].as_u64().unwrap()
}

/// Every locked payout notice for `offer` in `trader`'s inbox (waiting for `n`).
async fn locked_payouts(trader: &mut Trader, offer: &str, state: &str, n: usize) -> Vec<Value> {
    let mut found = Vec::new();
    while found.len() < n {
        let notice = trader.notice(offer, state).await;
        if notice.get("token").is_some() {
            found.push(notice);
        }
    }
    found
}

#[tokio::test]
async fn a_conceded_issue_pays_the_revealed_maker_in_ecash_only_its_key_redeems() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mint_url = soko.daemon().mint_url().to_owned();
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;
    let (offer, a) = bond_paid(&soko, &mut maker, &mut taker, 40_000).await;

    // Without a reveal nothing happens; the client is told what revealing means.
    let bare = maker
        .ask(&soko, "offer_issue", json!({"offer": offer}))
        .await;
    assert_eq!(code(&bare), "reveal_required");
    assert!(bare["error"]["message"]
        .as_str()
        .unwrap()
        .contains("registered key"));
    // A reveal signed by a key that never registered, or for the wrong side, is refused.
    let unregistered = reveal_by(&Keys::generate(), &soko, &offer, "maker", "no bill paid");
    let refused = maker
        .ask(
            &soko,
            "offer_issue",
            json!({"offer": offer, "reveal": unregistered}),
        )
        .await;
    assert_eq!(code(&refused), "invalid", "{refused}");
    let wrong_side = maker.reveal(&soko, &offer, "taker", "no bill paid");
    let refused = maker
        .ask(
            &soko,
            "offer_issue",
            json!({"offer": offer, "reveal": wrong_side}),
        )
        .await;
    assert_eq!(code(&refused), "invalid", "{refused}");

    let reveal = maker.reveal(&soko, &offer, "maker", "the taker never paid my bill");
    let marked = maker
        .ok(
            &soko,
            "offer_issue",
            json!({"offer": offer, "reveal": reveal, "evidence": "no SMS from M-Pesa"}),
        )
        .await;
    assert_eq!(marked["state"], "MARKED_WITH_ISSUE");
    let told = taker.notice(&offer, "MARKED_WITH_ISSUE").await;
    assert!(told["text"].as_str().unwrap().contains("forfeit"), "{told}");
    // The same reveal again is refused even on another offer's path.
    let again = maker
        .ask(
            &soko,
            "offer_issue",
            json!({"offer": offer, "reveal": reveal}),
        )
        .await;
    assert_eq!(code(&again), "invalid");

    taker
        .ok(
            &soko,
            "offer_answer",
            json!({"offer": offer, "answer": "forfeit"}),
        )
        .await;
    // One token per leg: escrow and bond from the maker's wallet, the bond from the taker's.
    let payouts = locked_payouts(&mut maker, &offer, "FORFEIT", 3).await;
    let total: u64 = payouts
        .iter()
        .map(|p| p["amount_sat"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total,
        sats(&a, "escrow") + sats(&a, "maker_bond") + sats(&a, "taker_bond"),
        "escrow, the maker's bond and the taker's bond"
    );
    for payout in &payouts {
        assert_eq!(payout["locked_to"], maker.registered.pubkey().to_hex());
        let token = payout["token"].as_str().unwrap();
        // Not with no key, not with the session key, not with the taker's registered key.
        assert!(redeem_with(&mint_url, token, None).await.is_err());
        assert!(redeem_with(&mint_url, token, Some(&maker.user.keys))
            .await
            .is_err());
        assert!(redeem_with(&mint_url, token, Some(&taker.registered.keys))
            .await
            .is_err());
        let got = redeem_with(&mint_url, token, Some(&maker.registered.keys))
            .await
            .unwrap();
        assert_eq!(got, payout["amount_sat"].as_u64().unwrap());
    }
    // The sessions hold nothing of the trade any more; soko kept the two fees.
    assert_eq!(session_balance(&soko, &mut maker).await, 0);
    assert_eq!(session_balance(&soko, &mut taker).await, 0);
    assert_eq!(
        soko.daemon().exchange().house_balance().await.unwrap().0,
        sats(&a, "platform_fee") + sats(&a, "taker_fee")
    );
    let stats = soko
        .daemon()
        .exchange()
        .dispute_stats(&maker.registered.pubkey())
        .unwrap();
    assert_eq!((stats.marked, stats.won), (1, 1));
}

/// Each admin outcome over a disputed trade: who gets what, locked to whom.
#[tokio::test]
async fn admins_resolve_disputes_and_every_action_is_audited() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mint_url = soko.daemon().mint_url().to_owned();
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;
    for (outcome, maker_gets, taker_gets) in [
        ("taker_wins", 0u64, 1u64),
        ("split", 2, 2),
        ("return", 3, 3),
    ] {
        let (offer, a) = bond_paid(&soko, &mut maker, &mut taker, 30_000).await;
        taker
            .ok(
                &soko,
                "receipt_submit",
                json!({"offer": offer, "text": "paid, ref QX12"}),
            )
            .await;
        maker.notice(&offer, "RECEIPT_SUBMITTED").await;
        let reveal = taker.reveal(&soko, &offer, "taker", "I paid, the maker will not confirm");
        taker
            .ok(
                &soko,
                "offer_issue",
                json!({"offer": offer, "reveal": reveal}),
            )
            .await;
        maker.notice(&offer, "MARKED_WITH_ISSUE").await;
        // Disputing needs the maker's own reveal.
        let bare = maker
            .ask(
                &soko,
                "offer_answer",
                json!({"offer": offer, "answer": "dispute"}),
            )
            .await;
        assert_eq!(code(&bare), "reveal_required");
        let reveal = maker.reveal(&soko, &offer, "maker", "nothing arrived");
        let disputed = maker
            .ok(
                &soko,
                "offer_answer",
                json!({"offer": offer, "answer": "dispute", "reveal": reveal}),
            )
            .await;
        assert_eq!(disputed["state"], "DISPUTED");

        let listed = operator(&soko, "dispute_list", json!({})).await;
        assert!(listed.result.unwrap()["disputes"]
            .to_string()
            .contains(&offer));
        let shown = operator(&soko, "dispute_show", json!({"offer": offer})).await;
        let shown = shown.result.expect("shown");
        assert_eq!(shown["maker_key"], maker.registered.pubkey().to_hex());
        assert_eq!(shown["taker_key"], taker.registered.pubkey().to_hex());
        assert_eq!(shown["receipt"]["text"], "paid, ref QX12");
        assert!(shown["evidence"].to_string().contains("nothing arrived"));

        let resolved = operator(
            &soko,
            "dispute_resolve",
            json!({"offer": offer, "outcome": outcome}),
        )
        .await;
        assert!(resolved.ok, "{resolved:?}");
        let (escrow, mb, tb, fee, tf) = (
            sats(&a, "escrow"),
            sats(&a, "maker_bond"),
            sats(&a, "taker_bond"),
            sats(&a, "platform_fee"),
            sats(&a, "taker_fee"),
        );
        let (to_maker, to_taker) = match (maker_gets, taker_gets) {
            (0, 1) => (0, escrow + mb + tb),
            (2, 2) => (escrow / 2 + mb, escrow - escrow / 2 + tb),
            _ => (escrow + mb + fee, tb + tf),
        };
        let (maker_keys, taker_keys) =
            (maker.registered.keys.clone(), taker.registered.keys.clone());
        for (trader, expected, other) in [
            (&mut maker, to_maker, &taker_keys),
            (&mut taker, to_taker, &maker_keys),
        ] {
            if expected == 0 {
                continue;
            }
            let mut got = 0;
            while got < expected {
                let payout = locked_payouts(trader, &offer, "RESOLVED", 1)
                    .await
                    .remove(0);
                let token = payout["token"].as_str().unwrap();
                assert!(redeem_with(&mint_url, token, Some(other)).await.is_err());
                got += redeem_with(&mint_url, token, Some(&trader.registered.keys))
                    .await
                    .unwrap();
            }
            assert_eq!(got, expected, "{outcome}");
        }
    }
    let trail = soko.daemon().exchange().audit_trail().unwrap();
    let actions: Vec<_> = trail.iter().map(|(_, e)| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "show",
            "resolve:taker_wins",
            "show",
            "resolve:split",
            "show",
            "resolve:return"
        ]
    );
    let stats = soko
        .daemon()
        .exchange()
        .dispute_stats(&maker.registered.pubkey())
        .unwrap();
    assert_eq!((stats.disputed, stats.lost), (3, 1));
}

#[tokio::test]
async fn an_unanswered_issue_goes_to_the_admins() {
    let soko = TestSoko::start_with(exchange_config).await;
    let mut maker = Trader::join(&soko).await;
    let mut taker = Trader::join(&soko).await;
    let (offer, _) = bond_paid(&soko, &mut maker, &mut taker, 20_000).await;
    let reveal = taker.reveal(&soko, &offer, "taker", "the paybill number is wrong");
    taker
        .ok(
            &soko,
            "offer_issue",
            json!({"offer": offer, "reveal": reveal}),
        )
        .await;
    soko.advance(251);
    taker.notice(&offer, "DISPUTED").await;
    maker.notice(&offer, "DISPUTED").await;
    // The answer window is over.
    let late = maker
        .ask(
            &soko,
            "offer_answer",
            json!({"offer": offer, "answer": "forfeit"}),
        )
        .await;
    assert_eq!(code(&late), "invalid");
}
