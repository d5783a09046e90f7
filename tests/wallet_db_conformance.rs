//! cdk-common's wallet database conformance suite, run against the sled store,
//! plus the properties soko relies on beyond it (namespace isolation,
//! durability across reopen, concurrent counters, versioned encoding).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::str::FromStr;

use cdk_common::database::{Error, WalletDatabase};
use cdk_common::mint_url::MintUrl;
use cdk_common::nuts::{CurrencyUnit, Id, Proof, SecretKey, State};
use cdk_common::secret::Secret;
use cdk_common::wallet::ProofInfo;
use cdk_common::{wallet_db_test, Amount};
use soko::store::Store;
use soko::vault::RecordKey;
use soko::wallet::SledWalletDatabase;

/// Opens a sled database that deletes its directory when the last handle drops.
fn open_sled(path: &Path) -> Store {
    Store::from_db(
        sled::Config::new()
            .path(path)
            .temporary(true)
            .open()
            .expect("open sled"),
    )
}

/// One fresh sled database per test, in its own temporary directory.
async fn provide_db(_test_name: String) -> SledWalletDatabase {
    // The suite only hands us the wallet, so no TempDir guard can outlive the
    // test: sled's temporary mode deletes the directory when the wallet's
    // last handle drops. Rooting it in cargo's target tmpdir means the rare
    // leftover (process exit racing sled's background flusher) is cleaned by
    // `cargo clean` instead of piling up in /tmp.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
        .keep();
    let db = open_sled(&dir);
    SledWalletDatabase::open(&db, "main", key()).expect("open wallet")
}

// The full default list of the suite.
wallet_db_test!(provide_db);

// The suite's P2PK tests, which its default list leaves out.
mod p2pk {
    use super::*;

    wallet_db_test!(
        provide_db,
        add_and_get_p2pk_key,
        list_p2pk_keys_empty,
        list_p2pk_keys_multiple,
        latest_p2pk_empty,
        latest_p2pk_with_keys,
    );
}

/// The record key every wallet here is sealed with: one fixed key, so a wallet reopened
/// in a test opens what it wrote.
fn key() -> RecordKey {
    RecordKey::new([42; 32]).unwrap()
}

fn proof_info(amount: u64) -> ProofInfo {
    let proof = Proof {
        amount: Amount::from(amount),
        keyset_id: Id::from_str("00916bbf7ef91a36").unwrap(),
        secret: Secret::generate(),
        c: SecretKey::generate().public_key(),
        witness: None,
        dleq: None,
        p2pk_e: None,
    };
    let mint_url = MintUrl::from_str("https://mint.example.com").unwrap();
    ProofInfo::new(proof, mint_url, State::Unspent, CurrencyUnit::Sat).unwrap()
}

#[tokio::test]
async fn namespaces_in_one_db_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    let alice = SledWalletDatabase::open(&db, "alice", key()).unwrap();
    let bob = SledWalletDatabase::open(&db, "bob", key()).unwrap();

    let proof = proof_info(64);
    alice
        .update_proofs(vec![proof.clone()], vec![])
        .await
        .unwrap();
    alice.kv_write("app", "sub", "k", b"v").await.unwrap();
    alice.increment_derivation_counter("p2pk", 7).await.unwrap();

    assert_eq!(
        alice
            .get_proofs(None, None, None, None)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(bob
        .get_proofs(None, None, None, None)
        .await
        .unwrap()
        .is_empty());
    assert!(bob
        .get_proofs_by_ys(vec![proof.y])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(bob.get_balance(None, None, None).await.unwrap(), 0);
    assert_eq!(bob.kv_read("app", "sub", "k").await.unwrap(), None);
    assert_eq!(
        bob.increment_derivation_counter("p2pk", 0).await.unwrap(),
        0
    );

    let names: Vec<String> = db
        .db()
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(
        names.contains(&"wallet/alice/proofs".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"wallet/bob/proofs".to_owned()), "{names:?}");
}

#[tokio::test]
async fn invalid_namespaces_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    for bad in ["", "a/b", "white space", &"x".repeat(129)] {
        assert!(
            SledWalletDatabase::open(&db, bad, key()).is_err(),
            "{bad:?} accepted"
        );
    }
    assert!(SledWalletDatabase::open(&db, "npub1abc:session-2.x_y", key()).is_ok());
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let proof = proof_info(8);
    {
        let db = Store::open(dir.path()).unwrap();
        let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
        wallet
            .update_proofs(vec![proof.clone()], vec![])
            .await
            .unwrap();
        wallet
            .increment_keyset_counter(&proof.proof.keyset_id, 3)
            .await
            .unwrap();
    }
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    let stored = wallet.get_proofs_by_ys(vec![proof.y]).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].proof.secret, proof.proof.secret);
    assert_eq!(
        wallet
            .increment_keyset_counter(&proof.proof.keyset_id, 0)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_are_atomic_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    let keyset_id = Id::from_str("00916bbf7ef91a36").unwrap();

    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let wallet = wallet.clone();
            tokio::spawn(async move { wallet.increment_keyset_counter(&keyset_id, 1).await })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=32).collect::<Vec<u32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_share_a_proof() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    let proofs: Vec<ProofInfo> = (0..4).map(|_| proof_info(1)).collect();
    let ys: Vec<_> = proofs.iter().map(|p| p.y).collect();
    wallet.update_proofs(proofs, vec![]).await.unwrap();

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let wallet = wallet.clone();
            let ys = ys.clone();
            tokio::spawn(async move {
                let op = uuid::Uuid::new_v4();
                wallet.reserve_proofs(ys, &op).await.map(|_| op)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(op) => winners.push(op),
            Err(Error::ProofNotUnspent) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one operation gets all proofs");
    assert_eq!(
        wallet.get_reserved_proofs(&winners[0]).await.unwrap().len(),
        4
    );
}

/// Transactions, CAS and flushes from many threads at once must neither
/// deadlock (sled 0.34's flush_async did) nor lose an update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_concurrent_workload_completes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();

    let tasks: Vec<_> = (0..16u32)
        .map(|i| {
            let wallet = wallet.clone();
            tokio::spawn(async move {
                for round in 0..10u32 {
                    let proof = proof_info(1);
                    let y = proof.y;
                    wallet.update_proofs(vec![proof], vec![]).await.unwrap();
                    let op = uuid::Uuid::new_v4();
                    wallet.reserve_proofs(vec![y], &op).await.unwrap();
                    wallet
                        .increment_derivation_counter("shared", 1)
                        .await
                        .unwrap();
                    let key = format!("k{i}-{round}");
                    wallet.kv_write("stress", "", &key, b"v").await.unwrap();
                    wallet.release_proofs(&op).await.unwrap();
                    wallet
                        .update_proofs_state(vec![y], State::Spent)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("workload deadlocked");

    assert_eq!(
        wallet
            .increment_derivation_counter("shared", 0)
            .await
            .unwrap(),
        160
    );
    assert_eq!(wallet.kv_list("stress", "").await.unwrap().len(), 160);
    let spent = wallet
        .get_proofs(None, None, Some(vec![State::Spent]), None)
        .await
        .unwrap();
    assert_eq!(spent.len(), 160);
}

#[tokio::test]
async fn unknown_encoding_version_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    let proof = proof_info(2);
    wallet
        .update_proofs(vec![proof.clone()], vec![])
        .await
        .unwrap();

    // Simulate a record written by a future build with a new encoding.
    let tree = db.db().open_tree("wallet/main/proofs").unwrap();
    let mut future = tree.get(proof.y.to_bytes()).unwrap().unwrap().to_vec();
    future[0] = 9;
    tree.insert(proof.y.to_bytes(), future).unwrap();

    let err = wallet.get_proofs(None, None, None, None).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("unknown encoding version 9"), "{message}");
    assert!(!message.contains(&proof.proof.secret.to_string()));
}

#[tokio::test]
async fn debug_output_shows_no_wallet_contents() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    let proof = proof_info(4);
    wallet
        .update_proofs(vec![proof.clone()], vec![])
        .await
        .unwrap();
    let debug = format!("{wallet:?}");
    assert_eq!(debug, r#"SledWalletDatabase { namespace: "main", .. }"#);
}

/// Proof secrets never reach sled in clear: the raw tree holds no secret, the record opens
/// only with its key, and a clear record an older build wrote is read and sealed on open.
#[tokio::test]
async fn proofs_are_sealed_at_rest_and_clear_ones_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    let proof = proof_info(16);
    let secret = proof.proof.secret.to_string();
    wallet
        .update_proofs(vec![proof.clone()], vec![])
        .await
        .unwrap();
    let tree = db.db().open_tree("wallet/main/proofs").unwrap();
    let raw = tree.get(proof.y.to_bytes()).unwrap().unwrap();
    assert_eq!(raw[0], 2, "sealed encoding");
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
    drop(wallet);
    assert!(
        SledWalletDatabase::open(&db, "main", RecordKey::new([1; 32]).unwrap())
            .unwrap()
            .get_proofs(None, None, None, None)
            .await
            .is_err(),
        "another key opens nothing"
    );

    // A record as the build before sealing wrote it: version 1, clear JSON.
    let old = proof_info(32);
    let mut clear = vec![1u8];
    clear.extend(serde_json::to_vec(&old).unwrap());
    tree.insert(old.y.to_bytes(), clear).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    let raw = tree.get(old.y.to_bytes()).unwrap().unwrap();
    assert_eq!(raw[0], 2, "migrated on open");
    let old_secret = old.proof.secret.to_string();
    assert!(!raw
        .windows(old_secret.len())
        .any(|w| w == old_secret.as_bytes()));
    let stored = wallet.get_proofs_by_ys(vec![old.y]).await.unwrap();
    assert_eq!(stored[0].proof.secret, old.proof.secret);
    assert_eq!(wallet.get_balance(None, None, None).await.unwrap(), 48);
}

fn mint_quote(id: &str) -> cdk_common::wallet::MintQuote {
    cdk_common::wallet::MintQuote::new(
        id.to_owned(),
        MintUrl::from_str("https://mint.example.com").unwrap(),
        cdk_common::PaymentMethod::Known(cdk_common::nut00::KnownMethod::Bolt11),
        Some(Amount::from(100)),
        CurrencyUnit::Sat,
        format!("lnbc-{id}"),
        u64::MAX,
        None,
    )
}

async fn used_by(wallet: &SledWalletDatabase, id: &str) -> Option<String> {
    wallet
        .get_mint_quote(id)
        .await
        .unwrap()
        .expect("the quote is stored")
        .used_by_operation
}

/// cdk reserves a quote for an operation and releases the operation's quotes when it ends
/// (after every mint). Releasing reads only the quotes the operation may hold (issue 16:
/// it used to decrypt every quote the wallet ever had), so each way a quote comes to be
/// held must be released: reserved, saved already held, moved to another operation, and
/// held by a build from before the hints.
#[tokio::test]
async fn quote_reservations_are_released_however_they_were_made() {
    let dir = tempfile::tempdir().unwrap();
    let (op_a, op_b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    {
        let db = Store::open(dir.path()).unwrap();
        let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
        for id in ["reserved", "saved-held", "moved", "bystander"] {
            wallet.add_mint_quote(mint_quote(id)).await.unwrap();
        }
        wallet.reserve_mint_quote("reserved", &op_a).await.unwrap();
        assert!(matches!(
            wallet.reserve_mint_quote("reserved", &op_b).await,
            Err(Error::QuoteAlreadyInUse)
        ));
        let mut held = wallet.get_mint_quote("saved-held").await.unwrap().unwrap();
        held.used_by_operation = Some(op_a.to_string());
        wallet.add_mint_quote(held).await.unwrap();
        wallet.reserve_mint_quote("moved", &op_a).await.unwrap();
        let mut moved = wallet.get_mint_quote("moved").await.unwrap().unwrap();
        moved.used_by_operation = Some(op_b.to_string());
        wallet.add_mint_quote(moved).await.unwrap();
        wallet.reserve_mint_quote("bystander", &op_b).await.unwrap();

        wallet.release_mint_quote(&op_a).await.unwrap();
        assert_eq!(used_by(&wallet, "reserved").await, None);
        assert_eq!(used_by(&wallet, "saved-held").await, None);
        assert_eq!(used_by(&wallet, "moved").await, Some(op_b.to_string()));
        assert_eq!(used_by(&wallet, "bystander").await, Some(op_b.to_string()));
        wallet.release_mint_quote(&op_a).await.unwrap();

        // A quote held by op_a again, then the hints lost, as a build before them left it.
        wallet.reserve_mint_quote("reserved", &op_a).await.unwrap();
        db.db().drop_tree("wallet/main/quote_ops").unwrap();
        db.db().flush().unwrap();
    }
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    wallet.release_mint_quote(&op_a).await.unwrap();
    assert_eq!(used_by(&wallet, "reserved").await, None, "hinted at open");
    wallet.release_mint_quote(&op_b).await.unwrap();
    assert_eq!(used_by(&wallet, "moved").await, None);
    assert_eq!(used_by(&wallet, "bystander").await, None);
    wallet.reserve_mint_quote("reserved", &op_b).await.unwrap();
    assert_eq!(used_by(&wallet, "reserved").await, Some(op_b.to_string()));
}

/// Melt quotes are released the same way.
#[tokio::test]
async fn melt_quote_reservations_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    let quote = cdk_common::wallet::MeltQuote {
        id: "melt".to_owned(),
        mint_url: Some(MintUrl::from_str("https://mint.example.com").unwrap()),
        unit: CurrencyUnit::Sat,
        amount: Amount::from(10),
        request: "lnbc-melt".to_owned(),
        fee_reserve: Amount::from(1),
        state: cdk_common::MeltQuoteState::Unpaid,
        expiry: u64::MAX,
        payment_proof: None,
        estimated_blocks: None,
        fee_index: None,
        payment_method: cdk_common::PaymentMethod::Known(cdk_common::nut00::KnownMethod::Bolt11),
        used_by_operation: None,
        version: 0,
    };
    wallet.add_melt_quote(quote).await.unwrap();
    let op = uuid::Uuid::new_v4();
    wallet.reserve_melt_quote("melt", &op).await.unwrap();
    let stored = |w: &SledWalletDatabase| {
        let w = w.clone();
        async move {
            w.get_melt_quote("melt")
                .await
                .unwrap()
                .unwrap()
                .used_by_operation
        }
    };
    assert_eq!(stored(&wallet).await, Some(op.to_string()));
    wallet.release_melt_quote(&op).await.unwrap();
    assert_eq!(stored(&wallet).await, None);
}

/// What the wallet flushes on its own (issue 16: each flush was a group commit on every
/// order's path). A counter read (cdk bumps by zero) and a derivation bump wait for the
/// record they derive; a new mint quote waits for whatever hands out its invoice; a change
/// to a known quote and a keyset counter bump are flushed before the call returns. All of
/// it is kept.
#[tokio::test]
async fn only_what_nothing_later_covers_is_flushed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let keyset = Id::from_str("00916bbf7ef91a36").unwrap();
    {
        let db = Store::open(dir.path()).unwrap();
        let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
        let flushes = |expected: u64, what: &str| {
            assert_eq!(db.sync_flushes(), expected, "{what}");
        };
        flushes(0, "opened");
        assert_eq!(
            wallet
                .increment_derivation_counter("nut20_quote", 0)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            wallet.increment_keyset_counter(&keyset, 0).await.unwrap(),
            0
        );
        flushes(0, "counter reads");
        let names = |db: &Store| -> Vec<String> {
            db.db()
                .tree_names()
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        };
        for tree in [
            "wallet/main/derivation_counters",
            "wallet/main/keyset_counters",
        ] {
            assert!(names(&db).contains(&tree.to_owned()), "{tree}");
            assert!(
                db.db().open_tree(tree).unwrap().is_empty(),
                "{tree}: a read wrote"
            );
        }
        assert_eq!(
            wallet
                .increment_derivation_counter("nut20_quote", 1)
                .await
                .unwrap(),
            1
        );
        flushes(0, "a derivation bump");
        wallet.add_mint_quote(mint_quote("q1")).await.unwrap();
        flushes(0, "a new quote");
        let mut paid = wallet.get_mint_quote("q1").await.unwrap().unwrap();
        paid.amount_paid = Amount::from(100);
        wallet.add_mint_quote(paid).await.unwrap();
        flushes(1, "a change to a known quote");
        wallet.add_mint_quote(mint_quote("q2")).await.unwrap();
        assert_eq!(
            wallet
                .increment_derivation_counter("nut20_quote", 1)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            wallet.increment_keyset_counter(&keyset, 3).await.unwrap(),
            3
        );
        flushes(2, "a keyset counter bump");
    }
    let db = Store::open(dir.path()).unwrap();
    let wallet = SledWalletDatabase::open(&db, "main", key()).unwrap();
    assert!(wallet.get_mint_quote("q2").await.unwrap().is_some());
    assert_eq!(
        wallet
            .increment_derivation_counter("nut20_quote", 0)
            .await
            .unwrap(),
        2
    );
}
