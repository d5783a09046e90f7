//! Session purses on real parts: soko's embedded dev mint with blind auth (its fake Lightning
//! settles every invoice by itself), a session opened over NIP-17 from a fresh key, and plain
//! cdk wallets on sled in temp dirs redeeming what leaves it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use cdk::wallet::ReceiveOptions;
use common::sessions::{embedded_bats, open, redeem, refund_token, register_trader, with_auth};
use common::{TestSoko, User, QUIET_PERIOD, REPLY_TIMEOUT};
use nostr_sdk::prelude::*;
use serde_json::json;
use soko::money::Sats;
use soko::sessions::{Collected, PurseError, SessionError, SessionRefusal};

/// soko with blind auth, and a session opened by a fresh key; the session's user and id.
async fn soko_with_session() -> (TestSoko, User, String) {
    let soko = TestSoko::start_with(with_auth).await;
    let mut trader = User::connect(&[soko.relay_url()]).await;
    register_trader(&soko, &mut trader).await;
    let bats = embedded_bats(&soko, &trader.keys, 1).await;
    let mut private = User::connect(&[soko.relay_url()]).await;
    let id = open(&soko, &mut private, &bats[0]).await;
    (soko, private, id)
}

/// Collects `quote` until the fake backend has settled it.
async fn collect_paid(soko: &TestSoko, id: &str, quote: &str) -> Collected {
    let sessions = soko.daemon().sessions();
    let started = Instant::now();
    loop {
        let collected = sessions.collect(id, quote).await.expect("collect");
        if collected != Collected::Unpaid || started.elapsed() > REPLY_TIMEOUT {
            return collected;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A plain wallet of its own (a fresh seed) on a temp sled, at `mint_url`.
fn plain_wallet(mint_url: &str) -> (soko::wallet::Wallet, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = soko::store::Store::open(dir.path()).expect("store");
    let mut seed = [0u8; 64];
    for chunk in seed.chunks_mut(32) {
        chunk.copy_from_slice(&Keys::generate().secret_key().to_secret_bytes());
    }
    let wallet = soko::wallet::open(&store, "plain", mint_url, &seed).expect("wallet");
    (wallet, dir)
}

/// Generated keys until one's point has an odd (or even) y.
fn keys_with_odd_y(odd: bool) -> Keys {
    loop {
        let keys = Keys::generate();
        let signer = soko::wallet::signing_key(keys.secret_key()).expect("a key");
        if (signer.public_key().to_bytes()[0] == 0x03) == odd {
            return keys;
        }
    }
}

/// Rewrites (or with `None`, removes) the record of `(id, what)` in the purse tree `tree` as
/// a crash at the right moment would have left it.
fn forget(
    db: &sled::Db,
    tree: &str,
    id: &str,
    what: &str,
    edit: impl FnOnce(serde_json::Value) -> Option<serde_json::Value>,
) {
    let tree = db.open_tree(tree).unwrap();
    let key = [id.as_bytes(), &[0], what.as_bytes()].concat();
    let stored = tree
        .get(&key)
        .unwrap()
        .map(|bytes| soko::store::decode::<serde_json::Value>(&bytes).unwrap())
        .unwrap_or(serde_json::Value::Null);
    match edit(stored) {
        Some(value) => tree
            .insert(key, soko::store::encode(&value).unwrap())
            .map(drop)
            .unwrap(),
        None => tree.remove(key).map(drop).unwrap(),
    }
}

/// The ecash the metrics count in open sessions.
fn ecash(soko: &TestSoko) -> u64 {
    soko.daemon().metrics().snapshot().sessions.ecash_sat
}

#[tokio::test]
async fn an_invoice_collects_once_and_each_op_makes_one_token_that_the_refund_leaves_out() {
    let (soko, mut private, id) = soko_with_session().await;
    let sessions = soko.daemon().sessions().clone();
    let mint_url = soko.daemon().mint_url().to_owned();
    let db = soko.daemon().store().db().clone();
    assert_eq!(sessions.session_key(&id).unwrap(), Some(private.pubkey()));
    assert_eq!(sessions.session_key("no such session").unwrap(), None);

    // Nothing in it yet: no token, and no wallet made for asking.
    let empty = sessions.token(&id, Sats(1), None, "too-soon").await;
    assert!(
        matches!(
            empty,
            Err(SessionError::Wallet(cdk::Error::InsufficientFunds))
        ),
        "{empty:?}"
    );
    assert!(common::sessions::session_trees(&db, &id).is_empty());

    // An invoice into it, paid (the fake backend settles it), collected twice: one mint.
    let invoice = sessions.invoice(&id, Sats(1000)).await.unwrap();
    assert!(invoice.bolt11.starts_with("ln"), "{invoice:?}");
    assert!(invoice.expires_at > soko.clock.now(), "{invoice:?}");
    let stranger = sessions.collect(&id, "not-a-quote").await;
    assert!(
        matches!(
            stranger,
            Err(SessionError::Purse(PurseError::UnknownQuote(_)))
        ),
        "{stranger:?}"
    );
    assert_eq!(
        collect_paid(&soko, &id, &invoice.quote).await,
        Collected::Minted(Sats(1000))
    );
    assert_eq!(
        sessions.collect(&id, &invoice.quote).await.unwrap(),
        Collected::Minted(Sats(1000))
    );
    let live = sessions.live(&private.pubkey(), &id).unwrap();
    assert_eq!(sessions.balance(&live).await.unwrap(), Sats(1000));
    assert_eq!(ecash(&soko), 1000);

    // One op, one token, however often asked; the op cannot be reused for another amount.
    let plain = sessions
        .token(&id, Sats(300), None, "payout-1")
        .await
        .unwrap();
    let again = sessions
        .token(&id, Sats(300), None, "payout-1")
        .await
        .unwrap();
    assert_eq!(plain, again);
    let reused = sessions.token(&id, Sats(301), None, "payout-1").await;
    assert!(
        matches!(
            reused,
            Err(SessionError::Purse(PurseError::OpReused { .. }))
        ),
        "{reused:?}"
    );
    assert_eq!(sessions.balance(&live).await.unwrap(), Sats(700));
    assert_eq!(ecash(&soko), 700);
    assert_eq!(redeem(&mint_url, &plain).await, 300);
    // Asked again once redeemed: still that token, not a second one.
    assert_eq!(
        sessions
            .token(&id, Sats(300), None, "payout-1")
            .await
            .unwrap(),
        plain
    );
    assert_eq!(sessions.balance(&live).await.unwrap(), Sats(700));

    // A crash between the mint and its record here: the wallet's own record answers, and
    // nothing is minted again.
    forget(&db, "sessions/collected", &id, &invoice.quote, |_| None);
    assert_eq!(
        sessions.collect(&id, &invoice.quote).await.unwrap(),
        Collected::Minted(Sats(1000))
    );
    assert_eq!(sessions.balance(&live).await.unwrap(), Sats(700));

    // A crash after the token was made and before it was stored: the same token, read back
    // from the wallet's send record.
    let second = sessions
        .token(&id, Sats(50), None, "payout-2")
        .await
        .unwrap();
    forget(&db, "sessions/tokens", &id, "payout-2", |mut sent| {
        sent.as_object_mut()
            .unwrap()
            .remove("token")
            .expect("a stored token");
        Some(sent)
    });
    assert_eq!(
        sessions
            .token(&id, Sats(50), None, "payout-2")
            .await
            .unwrap(),
        second
    );
    assert_eq!(sessions.balance(&live).await.unwrap(), Sats(650));
    assert_eq!(ecash(&soko), 650);

    // A crash after the send was recorded and before it made anything (the wallet has no
    // such operation): one token is made, once.
    forget(&db, "sessions/tokens", &id, "payout-3", |_| {
        Some(json!({"operation": "00000000-0000-4000-8000-000000000000", "amount": 20}))
    });
    let third = sessions
        .token(&id, Sats(20), None, "payout-3")
        .await
        .unwrap();
    assert_eq!(
        sessions
            .token(&id, Sats(20), None, "payout-3")
            .await
            .unwrap(),
        third
    );
    assert_eq!(sessions.balance(&live).await.unwrap(), Sats(630));
    assert_eq!(redeem(&mint_url, &third).await, 20);

    // Tokens locked to an even-y and an odd-y Nostr key.
    for odd in [false, true] {
        let owner = keys_with_odd_y(odd);
        let op = format!("locked-{odd}");
        let locked = sessions
            .token(&id, Sats(100), Some(owner.public_key()), &op)
            .await
            .unwrap();
        // Every proof is locked to the owner's key, and to nothing else.
        let parsed: cdk::nuts::Token = locked.parse().unwrap();
        assert_eq!(parsed.value().unwrap(), cdk::Amount::from(100));
        let lock = soko::wallet::p2pk_lock(&owner.public_key()).unwrap();
        let secrets = parsed.token_secrets();
        assert!(!secrets.is_empty());
        for secret in secrets {
            let condition = cdk::nuts::SpendingConditions::try_from(secret).expect("locked");
            assert_eq!(condition, lock);
        }

        let (wallet, _dir) = plain_wallet(&mint_url);
        let unsigned = wallet.receive(&locked, ReceiveOptions::default()).await;
        assert!(unsigned.is_err(), "redeemed without the key: {unsigned:?}");
        let wrong = ReceiveOptions {
            p2pk_signing_keys: vec![
                soko::wallet::signing_key(Keys::generate().secret_key()).unwrap()
            ],
            ..Default::default()
        };
        let forged = wallet.receive(&locked, wrong).await;
        assert!(forged.is_err(), "redeemed with a wrong key: {forged:?}");
        let right = ReceiveOptions {
            p2pk_signing_keys: vec![soko::wallet::signing_key(owner.secret_key()).unwrap()],
            ..Default::default()
        };
        let received = wallet
            .receive(&locked, right)
            .await
            .expect("the owner redeems");
        assert_eq!(u64::from(received), 100, "odd y: {odd}");
    }
    assert_eq!(sessions.balance(&live).await.unwrap(), Sats(430));
    assert_eq!(ecash(&soko), 430);

    // Closed: the refund returns what stayed; the purse takes nothing more in, and answers
    // what it already did the same way.
    private
        .send_nip17(
            soko.bot(),
            &json!({"v": 1, "cmd": "close_session", "session": id}).to_string(),
        )
        .await;
    let mut replies = private.all_dms(Duration::from_secs(5)).await;
    replies.sort_by_key(|dm| !dm.content.starts_with("Refund"));
    assert_eq!(replies.len(), 2, "the refund and the answer: {replies:?}");
    assert_eq!(redeem(&mint_url, &refund_token(&replies[0])).await, 430);
    assert_eq!(replies[1].json()["result"]["returned_sat"], 430);
    assert!(private.next_dm(QUIET_PERIOD).await.is_none(), "one refund");
    assert_eq!(ecash(&soko), 0);
    let late = sessions.invoice(&id, Sats(10)).await;
    assert!(
        matches!(late, Err(SessionError::Refused(SessionRefusal::Closed))),
        "{late:?}"
    );
    let late = sessions.token(&id, Sats(10), None, "after-close").await;
    assert!(
        matches!(late, Err(SessionError::Refused(SessionRefusal::Closed))),
        "{late:?}"
    );
    assert_eq!(
        sessions
            .token(&id, Sats(300), None, "payout-1")
            .await
            .unwrap(),
        plain
    );
    assert_eq!(
        sessions.collect(&id, &invoice.quote).await.unwrap(),
        Collected::Minted(Sats(1000))
    );
    assert!(common::sessions::session_trees(&db, &id).is_empty());
    assert_eq!(sessions.session_key(&id).unwrap(), Some(private.pubkey()));

    // Once its tombstone goes, the purse forgets it too (no sealed token stays in sled).
    soko.advance(24 * 3600 + 1);
    sessions.cleanup().await.unwrap();
    assert_eq!(sessions.session_key(&id).unwrap(), None);
    for tree in ["sessions/collected", "sessions/tokens"] {
        let prefix = [id.as_bytes(), &[0]].concat();
        let left = db.open_tree(tree).unwrap().scan_prefix(prefix).count();
        assert_eq!(left, 0, "{tree}");
    }
    let gone = sessions.token(&id, Sats(300), None, "payout-1").await;
    assert!(
        matches!(gone, Err(SessionError::Refused(SessionRefusal::Unknown))),
        "{gone:?}"
    );
}
