//! Private sessions on real parts: soko's embedded dev mint with blind auth on and its OIDC
//! issuer on loopback (or a separate auth mint for the external path), the embedded relay,
//! sled on a temp dir, and NIP-17 from fresh keys.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::sessions::{
    ask, code, deposit, embedded_bats, foreign_bat, open, open_refunding, redeem, refund_token,
    register_trader, session_trees, token_from, try_open, with_auth,
};
use common::{TestSoko, User, QUIET_PERIOD, REPLY_TIMEOUT};
use nostr_sdk::JsonUtil;
use serde_json::json;

/// A soko whose mint is the external one at `mint_url`.
async fn soko_on(mint_url: &str) -> TestSoko {
    TestSoko::start_with(|config| {
        config.mint = soko::config::MintConfig::External {
            url: mint_url.to_owned(),
            requests_per_minute: 6000,
        };
    })
    .await
}

/// A soko with blind auth on, and a registered trader's BATs.
async fn soko_with_bats(n: u64) -> (TestSoko, User, Vec<cdk::nuts::BlindAuthToken>) {
    soko_with_bats_and(n, |_| {}).await
}

/// The same, after `adjust` edits the config.
async fn soko_with_bats_and(
    n: u64,
    adjust: impl FnOnce(&mut soko::Config),
) -> (TestSoko, User, Vec<cdk::nuts::BlindAuthToken>) {
    let soko = TestSoko::start_with(|config| {
        with_auth(config);
        adjust(config);
    })
    .await;
    let mut trader = User::connect(&[soko.relay_url()]).await;
    register_trader(&soko, &mut trader).await;
    let bats = embedded_bats(&soko, &trader.keys, n).await;
    (soko, trader, bats)
}

#[tokio::test]
async fn the_whole_path_from_login_to_refund_leaves_nothing_behind() {
    let soko = TestSoko::start_with(with_auth).await;
    let mut trader = User::connect(&[soko.relay_url()]).await;
    register_trader(&soko, &mut trader).await;
    let mint = soko.daemon().dev_mint().unwrap();
    let cat = common::auth::login(&common::auth::token_url(mint), &trader.keys).await;
    let bats = common::auth::bats(mint.url(), &cat, 1).await;
    let mint_url = soko.daemon().mint_url().to_owned();

    // A fresh key, unrelated to the trader's, opens the session over NIP-17.
    let mut private = User::connect(&[soko.relay_url()]).await;
    let reply = try_open(&soko, &mut private, &bats[0]).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let id = reply["result"]["session"].as_str().unwrap().to_owned();
    let expires_at = reply["result"]["expires_at"].as_u64().unwrap();
    assert_eq!(id.len(), 64);
    assert!(expires_at > soko.clock.now() + 3590 && expires_at <= soko.clock.now() + 3600);

    // A command inside it: ecash in, the balance shows it.
    let token = token_from(&mint_url, 100).await;
    let deposited = ask(
        &soko,
        &mut private,
        Some(&id),
        "session_deposit",
        json!({"token": token}),
    )
    .await;
    assert_eq!(deposited["result"]["balance_sat"], 100, "{deposited}");
    let status = ask(&soko, &mut private, Some(&id), "session_status", json!({})).await;
    assert_eq!(status["result"]["balance_sat"], 100, "{status}");
    assert!(!session_trees(soko.daemon().store().db(), &id).is_empty());

    // Expiry, by moving the clock: the session refuses commands, cleanup refunds it.
    soko.advance(3601);
    let late = ask(&soko, &mut private, Some(&id), "session_status", json!({})).await;
    assert_eq!(code(&late), "session_expired");
    let report = soko.daemon().sessions().cleanup().await.unwrap();
    assert_eq!((report.expired, report.refunded, report.deleted), (1, 1, 1));
    let dm = private.next_dm(REPLY_TIMEOUT).await.expect("the refund DM");
    assert!(dm.nip17 && dm.from == soko.bot(), "{dm:?}");
    assert!(
        dm.content.contains("your session expired"),
        "{}",
        dm.content
    );
    assert_eq!(redeem(&mint_url, &refund_token(&dm)).await, 100);
    assert!(
        private.next_dm(QUIET_PERIOD).await.is_none(),
        "exactly one refund"
    );

    // The session's wallet trees are gone; a second pass finds nothing to do.
    assert!(session_trees(soko.daemon().store().db(), &id).is_empty());
    let again = soko.daemon().sessions().cleanup().await.unwrap();
    assert_eq!((again.refunded, again.deleted, again.failed), (0, 0, 0));
    let gone = ask(&soko, &mut private, Some(&id), "session_status", json!({})).await;
    assert_eq!(code(&gone), "session_expired");

    // Privacy, on the relay: every event about the session key (its wraps, soko's replies
    // and the refund) names neither the trader's registered key nor its login.
    let session_key = private.keys.public_key();
    let reader = User::connect(&[soko.relay_url()]).await;
    let everything = reader
        .client
        .fetch_events(nostr_sdk::Filter::new(), Duration::from_secs(3))
        .await
        .unwrap();
    let mut about_session = 0;
    for event in everything.iter() {
        let json = event.as_json();
        if event.pubkey == session_key || json.contains(&session_key.to_hex()) {
            about_session += 1;
            assert!(
                event.pubkey != trader.keys.public_key()
                    && !json.contains(&trader.keys.public_key().to_hex()),
                "{json}"
            );
        }
        assert!(!json.contains(&cat), "the CAT is on the relay");
    }
    assert!(about_session >= 6, "the session's DMs are on the relay");

    // In the data dir's files (sled, the dev mint's databases): no CAT, no id of the login.
    let claims = cat.split('.').nth(1).unwrap();
    for entry in walk(&soko.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !contains(&bytes, cat.as_bytes()) && !contains(&bytes, claims.as_bytes()),
            "{} holds the CAT",
            entry.display()
        );
    }

    // Privacy, in sled: nothing soko stores about the session names the registered key.
    let db = soko.daemon().store().db();
    let registered_hex = trader.keys.public_key().to_hex();
    let registered_bytes = trader.keys.public_key().to_bytes();
    for name in db.tree_names() {
        let name_text = String::from_utf8_lossy(&name).into_owned();
        if !(name_text.starts_with("sessions") || name_text.starts_with("wallet/session:")) {
            continue;
        }
        let tree = db.open_tree(&name).unwrap();
        for entry in tree.iter() {
            let (key, value) = entry.unwrap();
            for bytes in [&key[..], &value[..]] {
                assert!(
                    !contains(bytes, registered_hex.as_bytes())
                        && !contains(bytes, &registered_bytes),
                    "tree {name_text} names the trader's registered key"
                );
            }
        }
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_token_opens_one_session_only() {
    let (soko, _trader, bats) = soko_with_bats(1).await;
    let bat = bats[0].to_string();
    let mut first = User::connect(&[soko.relay_url()]).await;
    open(&soko, &mut first, &bats[0]).await;

    let again = try_open(&soko, &mut first, &bat).await;
    assert_eq!(code(&again), "bat_spent");
    let mut other = User::connect(&[soko.relay_url()]).await;
    let stolen = try_open(&soko, &mut other, &bat).await;
    assert_eq!(code(&stolen), "bat_spent");
}

#[tokio::test]
async fn forged_foreign_and_junk_tokens_are_refused() {
    let (soko, _trader, bats) = soko_with_bats(2).await;
    let mut user = User::connect(&[soko.relay_url()]).await;

    // A DLEQ proof that does not verify (its `s` swapped for another token's).
    let mut forged = bats[0].clone();
    let other_dleq = bats[1].auth_proof.dleq.clone().unwrap();
    forged.auth_proof.dleq.as_mut().unwrap().s = other_dleq.s;
    let reply = try_open(&soko, &mut user, &forged).await;
    assert_eq!(code(&reply), "bat_invalid");
    assert!(reply["error"]["message"].as_str().unwrap().contains("DLEQ"));

    // Without its DLEQ proof.
    let bare = bats[0].without_dleq().to_string();
    let reply = try_open(&soko, &mut user, &bare).await;
    assert_eq!(code(&reply), "bat_invalid");

    // From another mint.
    let (_foreign, _dir, foreign_bat) = foreign_bat(&user.keys).await;
    let reply = try_open(&soko, &mut user, &foreign_bat).await;
    assert_eq!(code(&reply), "bat_invalid");

    // Not a token at all, and one too long to look at.
    for junk in ["cashuAeyJ0b2tlbiI6W119", "authA!!!", &"authA".repeat(500)] {
        let reply = try_open(&soko, &mut user, junk).await;
        assert!(
            ["bat_invalid", "too_large"].contains(&code(&reply)),
            "{reply}"
        );
    }

    // None of that spent the genuine tokens.
    open(&soko, &mut user, &bats[0]).await;
}

#[tokio::test]
async fn a_session_answers_only_its_key_and_only_while_open() {
    let (soko, _trader, bats) = soko_with_bats(2).await;
    let mut owner = User::connect(&[soko.relay_url()]).await;
    let id = open(&soko, &mut owner, &bats[0]).await;

    // Another key naming it learns nothing: it is not told apart from an unknown id.
    let mut other = User::connect(&[soko.relay_url()]).await;
    let theirs = ask(&soko, &mut other, Some(&id), "session_status", json!({})).await;
    assert_eq!(code(&theirs), "session_unknown");
    let unknown = ask(&soko, &mut other, Some(&"0".repeat(64)), "ping", json!({})).await;
    assert_eq!(code(&unknown), "session_unknown");
    // A session command without a session.
    let bare = ask(&soko, &mut owner, None, "session_status", json!({})).await;
    assert_eq!(code(&bare), "session_required");
    // Any command may run in a session; ping does.
    let ping = ask(&soko, &mut owner, Some(&id), "ping", json!({})).await;
    assert_eq!(ping["ok"], true, "{ping}");
    // A session that never held ecash has no wallet in sled (not even for its status).
    let status = ask(&soko, &mut owner, Some(&id), "session_status", json!({})).await;
    assert_eq!(status["result"]["balance_sat"], 0, "{status}");
    assert!(session_trees(soko.daemon().store().db(), &id).is_empty());

    // Closed: the answer comes with the refund state, then the session is closed.
    let closed = ask(&soko, &mut owner, Some(&id), "close_session", json!({})).await;
    assert_eq!(closed["result"]["returned_sat"], 0, "{closed}");
    assert_eq!(closed["result"]["refund"], "done", "{closed}");
    let after = ask(&soko, &mut owner, Some(&id), "session_status", json!({})).await;
    assert_eq!(code(&after), "session_closed");
    let twice = ask(&soko, &mut owner, Some(&id), "close_session", json!({})).await;
    assert_eq!(code(&twice), "session_closed");

    // Expired, by the clock, checked on the command itself (no cleanup pass yet).
    let second = open(&soko, &mut owner, &bats[1]).await;
    soko.advance(3600);
    let expired = ask(&soko, &mut owner, Some(&second), "ping", json!({})).await;
    assert_eq!(code(&expired), "session_expired");
}

#[tokio::test]
async fn closing_a_session_returns_its_ecash_by_dm() {
    let (soko, _trader, bats) = soko_with_bats(1).await;
    let mint_url = soko.daemon().mint_url().to_owned();
    let mut owner = User::connect(&[soko.relay_url()]).await;
    let id = open(&soko, &mut owner, &bats[0]).await;
    for amount in [40, 2] {
        let token = token_from(&mint_url, amount).await;
        let reply = ask(
            &soko,
            &mut owner,
            Some(&id),
            "session_deposit",
            json!({"token": token}),
        )
        .await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    // A token already taken is refused, not counted twice.
    let spent = token_from(&mint_url, 5).await;
    ask(
        &soko,
        &mut owner,
        Some(&id),
        "session_deposit",
        json!({"token": spent}),
    )
    .await;
    let replay = ask(
        &soko,
        &mut owner,
        Some(&id),
        "session_deposit",
        json!({"token": spent}),
    )
    .await;
    assert_eq!(code(&replay), "invalid");

    owner
        .send_nip17(
            soko.bot(),
            &json!({"v":1,"cmd":"close_session","session":id}).to_string(),
        )
        .await;
    let mut replies = owner.all_dms(Duration::from_secs(5)).await;
    replies.sort_by_key(|dm| !dm.content.starts_with("Refund"));
    assert_eq!(replies.len(), 2, "the refund and the answer: {replies:?}");
    assert_eq!(redeem(&mint_url, &refund_token(&replies[0])).await, 47);
    assert!(replies[0].content.contains("your session is closed"));
    let answer = replies[1].json();
    assert_eq!(answer["result"]["returned_sat"], 47, "{answer}");
    assert!(session_trees(soko.daemon().store().db(), &id).is_empty());
}

#[tokio::test]
async fn a_held_session_outlives_its_expiry_until_released() {
    let (soko, _trader, bats) = soko_with_bats(1).await;
    let mut owner = User::connect(&[soko.relay_url()]).await;
    let id = open(&soko, &mut owner, &bats[0]).await;
    let sessions = soko.daemon().sessions();
    sessions.hold(&id, "dispute:42").unwrap();

    soko.advance(4000);
    let report = sessions.cleanup().await.unwrap();
    assert_eq!((report.held, report.expired, report.deleted), (1, 0, 0));

    sessions.release(&id, "dispute:42").unwrap();
    let report = sessions.cleanup().await.unwrap();
    assert_eq!((report.held, report.expired, report.deleted), (0, 1, 1));
}

#[tokio::test]
async fn without_blind_auth_no_session_opens() {
    // The default dev mint issues no BATs; a token of another mint cannot stand in.
    let soko = TestSoko::start().await;
    let mut user = User::connect(&[soko.relay_url()]).await;
    let (_foreign, _dir, bat) = foreign_bat(&user.keys).await;
    let reply = try_open(&soko, &mut user, &bat).await;
    assert_eq!(code(&reply), "auth_unsupported");
}

#[tokio::test]
async fn an_external_auth_mint_checks_and_burns_tokens_over_http() {
    let trader = nostr_sdk::Keys::generate();
    let (mint, _dir) = common::auth::external_auth_mint([trader.public_key()]).await;
    let mint_url = mint.url().to_owned();
    let soko = soko_on(&mint_url).await;
    let cat = common::auth::login(&common::auth::token_url(&mint), &trader).await;
    let bats = common::auth::bats(&mint_url, &cat, 3).await;

    let mut user = User::connect(&[soko.relay_url()]).await;
    let id = open(&soko, &mut user, &bats[0]).await;
    let status = ask(&soko, &mut user, Some(&id), "session_status", json!({})).await;
    assert_eq!(status["result"]["balance_sat"], 0, "{status}");

    // Burned at the mint: a replay is refused by the mint too (another soko, same mint).
    let mut other = User::connect(&[soko.relay_url()]).await;
    let replay = try_open(&soko, &mut other, &bats[0]).await;
    assert_eq!(code(&replay), "bat_spent");
    let elsewhere = soko_on(&mint_url).await;
    let mut third = User::connect(&[elsewhere.relay_url()]).await;
    let at_mint = try_open(&elsewhere, &mut third, &bats[0]).await;
    assert_eq!(code(&at_mint), "bat_spent");

    // With the mint down, a replay is still refused (soko kept its Y), and a fresh token
    // is not spent: the sender may try again.
    mint.shutdown().await;
    let replay = try_open(&soko, &mut other, &bats[0]).await;
    assert_eq!(code(&replay), "bat_spent");
    let down = try_open(&soko, &mut other, &bats[1]).await;
    assert_eq!(code(&down), "mint_unavailable");
}

#[tokio::test]
async fn a_refund_address_is_paid_over_lightning_and_the_change_comes_as_a_token() {
    // The tests' config lets soko pay LNURL services on loopback.
    let (soko, _trader, mut bats) = soko_with_bats(1).await;
    let bat = bats.remove(0);
    let mint_url = soko.daemon().mint_url().to_owned();
    let mama_dir = tempfile::tempdir().unwrap();
    let (url, mama, _service) = common::lnurl_service_on(0, &mint_url, mama_dir.path()).await;
    let address = lnurl::lnurl::LnUrl::from_url(url).encode();

    // A refund address that soko may not pay is refused before the token is spent.
    let mut owner = User::connect(&[soko.relay_url()]).await;
    let refused = open_refunding(&soko, &mut owner, &bat, "not an address").await;
    assert_eq!(code(&refused), "invalid");

    let opened = open_refunding(&soko, &mut owner, &bat, &address).await;
    assert_eq!(opened["ok"], true, "{opened}");
    let id = opened["result"]["session"].as_str().unwrap().to_owned();
    deposit(&soko, &mut owner, &id, 200).await;

    owner
        .send_nip17(
            soko.bot(),
            &json!({"v":1,"cmd":"close_session","session":id}).to_string(),
        )
        .await;
    let dms = owner.all_dms(Duration::from_secs(6)).await;
    let answer = dms
        .iter()
        .find(|dm| dm.content.starts_with('{'))
        .expect("the answer")
        .json();
    assert_eq!(answer["result"]["refund"], "done", "{answer}");
    let returned = answer["result"]["returned_sat"].as_u64().unwrap();
    let change: u64 = match dms.iter().find(|dm| dm.content.starts_with("Refund")) {
        Some(dm) => redeem(&mint_url, &refund_token(dm)).await,
        None => 0,
    };
    // The fake backend settles mama's invoice a second after it is issued.
    let mut paid = 0;
    for _ in 0..50 {
        paid = common::mint_paid_invoice(&mama, returned - change).await;
        if paid > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quotes: Vec<_> = mama
        .check_all_mint_quotes()
        .await
        .unwrap()
        .into_iter()
        .map(|q| (q.amount, q.state))
        .collect();
    assert!(
        paid > 0 && paid + change == returned,
        "{paid} + {change} != {returned}: {quotes:?} {dms:?}"
    );
    assert!(
        (190..=200).contains(&returned),
        "returned {returned} of 200"
    );
    assert!(session_trees(soko.daemon().store().db(), &id).is_empty());
}

#[tokio::test]
async fn a_refund_address_that_keeps_failing_gets_a_token_instead() {
    // The tests' config lets soko pay LNURL services on loopback.
    let (soko, _trader, mut bats) = soko_with_bats(1).await;
    let bat = bats.remove(0);
    let mint_url = soko.daemon().mint_url().to_owned();
    // Nothing listens there.
    let address =
        lnurl::lnurl::LnUrl::from_url(common::lnurlp_url_on(common::free_port())).encode();

    let mut owner = User::connect(&[soko.relay_url()]).await;
    let opened = open_refunding(&soko, &mut owner, &bat, &address).await;
    let id = opened["result"]["session"].as_str().unwrap().to_owned();
    deposit(&soko, &mut owner, &id, 30).await;

    let closed = ask(&soko, &mut owner, Some(&id), "close_session", json!({})).await;
    assert_eq!(closed["result"]["refund"], "pending", "{closed}");
    assert_eq!(closed["result"]["returned_sat"], 0, "{closed}");
    // One try a pass: the second and third fail too, the fourth pass sends a token.
    for pass in 2..=3 {
        let report = soko.daemon().sessions().cleanup().await.unwrap();
        assert_eq!((report.failed, report.refunded), (0, 0), "pass {pass}");
    }
    assert!(owner.next_dm(QUIET_PERIOD).await.is_none(), "no token yet");
    let report = soko.daemon().sessions().cleanup().await.unwrap();
    assert_eq!((report.refunded, report.deleted), (1, 1));
    let dm = owner.next_dm(REPLY_TIMEOUT).await.expect("the token");
    assert_eq!(redeem(&mint_url, &refund_token(&dm)).await, 30);
}

#[tokio::test]
async fn an_external_mint_that_protects_nothing_usable_opens_no_session() {
    // NUT-22 on, but no endpoint asks for a BAT: soko could not burn one over HTTP.
    let trader = nostr_sdk::Keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let mint = soko::devmint::DevMint::start_with_auth(
        dir.path(),
        0,
        soko::devmint::AuthSettings {
            registry: std::sync::Arc::new(
                [trader.public_key()]
                    .into_iter()
                    .collect::<std::collections::HashSet<_>>(),
            ),
            bat_max_mint: soko::config::DEFAULT_BAT_MAX_MINT,
            issuer_port: 0,
            clock: soko::clock::Clock::system(),
            blind_protected: Vec::new(),
        },
    )
    .await
    .unwrap();
    let mint_url = mint.url().to_owned();
    let soko = soko_on(&mint_url).await;
    let cat = common::auth::login(&common::auth::token_url(&mint), &trader).await;
    let bat = common::auth::bats(&mint_url, &cat, 1).await.remove(0);
    let mut user = User::connect(&[soko.relay_url()]).await;
    let reply = try_open(&soko, &mut user, &bat).await;
    assert_eq!(code(&reply), "auth_unsupported");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("protects no endpoint"),
        "{reply}"
    );
}

#[tokio::test]
async fn session_wallets_are_isolated_and_reopen_after_eviction() {
    // One wallet open at a time: every switch between sessions reopens one from sled.
    let (soko, _trader, bats) =
        soko_with_bats_and(2, |config| config.sessions.open_wallets = 1).await;
    let mint_url = soko.daemon().mint_url().to_owned();
    let mut first = User::connect(&[soko.relay_url()]).await;
    let mut second = User::connect(&[soko.relay_url()]).await;
    let a = open(&soko, &mut first, &bats[0]).await;
    let b = open(&soko, &mut second, &bats[1]).await;
    for (first_turn, amount) in [(true, 11), (false, 22), (true, 4)] {
        let (user, id) = if first_turn {
            (&mut first, &a)
        } else {
            (&mut second, &b)
        };
        let token = token_from(&mint_url, amount).await;
        let reply = ask(
            &soko,
            user,
            Some(id),
            "session_deposit",
            json!({"token": token}),
        )
        .await;
        assert_eq!(reply["ok"], true, "{reply}");
    }
    assert_eq!(soko.daemon().sessions().open_wallets(), 1);
    let status_a = ask(&soko, &mut first, Some(&a), "session_status", json!({})).await;
    let status_b = ask(&soko, &mut second, Some(&b), "session_status", json!({})).await;
    assert_eq!(status_a["result"]["balance_sat"], 15, "{status_a}");
    assert_eq!(status_b["result"]["balance_sat"], 22, "{status_b}");

    // Closing one returns its own ecash only; the other's stays.
    first
        .send_nip17(
            soko.bot(),
            &json!({"v":1,"cmd":"close_session","session":a}).to_string(),
        )
        .await;
    let dms = first.all_dms(Duration::from_secs(4)).await;
    let refund = dms
        .iter()
        .find(|dm| dm.content.starts_with("Refund"))
        .expect("the refund");
    assert_eq!(redeem(&mint_url, &refund_token(refund)).await, 15);
    let still = ask(&soko, &mut second, Some(&b), "session_status", json!({})).await;
    assert_eq!(still["result"]["balance_sat"], 22, "{still}");
}
