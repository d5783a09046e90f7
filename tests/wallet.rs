//! soko's sled-backed cdk wallet against the in-process dev mint over HTTP on loopback:
//! mint, send, receive, melt, and the amounts the mint itself saw.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use cdk::amount::{Amount, SplitTarget};
use cdk::nuts::PaymentMethod;
use cdk::wallet::{ReceiveOptions, SendOptions};
use cdk::StreamExt;
use common::TestSoko;
use soko::store::Store;

/// soko (for its dev mint) and a sled store of the test's own for wallets on that mint, all
/// from one master seed, as in the daemon: each namespace derives its own.
struct Wallets {
    soko: TestSoko,
    mint_url: String,
    store: Store,
    seed: [u8; 64],
    _dir: tempfile::TempDir,
}

impl Wallets {
    async fn start(seed: u8) -> Self {
        let soko = TestSoko::start().await;
        let mint_url = soko.daemon().mint_url().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Self {
            soko,
            mint_url,
            store,
            seed: [seed; 64],
            _dir: dir,
        }
    }

    /// The wallet `namespace`, opened (again) from the store.
    fn open(&self, namespace: &str) -> soko::wallet::Wallet {
        soko::wallet::open(&self.store, namespace, &self.mint_url, &self.seed).unwrap()
    }
}

async fn fund(wallet: &soko::wallet::Wallet, sats: u64) -> Amount {
    let quote = wallet
        .mint_quote(PaymentMethod::BOLT11, Some(Amount::from(sats)), None, None)
        .await
        .expect("mint quote");
    let minted = wallet
        .proof_stream(quote, SplitTarget::default(), None)
        .next()
        .await
        .expect("the fake backend settles the invoice")
        .expect("minting succeeds");
    Amount::from(minted.iter().map(|p| u64::from(p.amount)).sum::<u64>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_wallet_mints_sends_receives_and_melts_against_the_dev_mint() {
    let mut w = Wallets::start(1).await;
    let alice = w.open("alice");
    let bob = w.open("bob");

    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), fund(&alice, 1_000))
            .await
            .unwrap(),
        Amount::from(1_000)
    );
    assert_eq!(alice.total_balance().await.unwrap(), Amount::from(1_000));

    let token = alice
        .prepare_send(Amount::from(300), SendOptions::default())
        .await
        .unwrap()
        .confirm(None)
        .await
        .unwrap();
    let received = bob
        .receive(&token.to_string(), ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(received, Amount::from(300), "no fees on the dev mint");
    assert_eq!(bob.total_balance().await.unwrap(), Amount::from(300));
    // Bob mints too, from the same master seed: distinct derived secrets, no clash.
    assert_eq!(fund(&bob, 50).await, Amount::from(50));
    assert_eq!(bob.total_balance().await.unwrap(), Amount::from(350));
    assert_eq!(alice.total_balance().await.unwrap(), Amount::from(700));
    // Spending the same token twice is refused by the mint.
    assert!(bob
        .receive(&token.to_string(), ReceiveOptions::default())
        .await
        .is_err());

    // Melt: pay an invoice the mint issued for someone else (carol's mint quote).
    let carol = w.open("carol");
    let invoice = carol
        .mint_quote(PaymentMethod::BOLT11, Some(Amount::from(200)), None, None)
        .await
        .unwrap()
        .request;
    let quote = alice
        .melt_quote(PaymentMethod::BOLT11, invoice, None, None)
        .await
        .unwrap();
    let melted = alice
        .prepare_melt(&quote.id, HashMap::new())
        .await
        .unwrap()
        .confirm()
        .await
        .unwrap();
    assert_eq!(melted.amount(), Amount::from(200));
    let left = alice.total_balance().await.unwrap();
    assert!(
        left <= Amount::from(500) && left >= Amount::from(500 - 10),
        "700 - 200 - fee reserve change: {left}"
    );

    // The mint's own books: it issued 1000 (+ change) to alice and redeemed what was spent.
    let mint = w.soko.daemon().dev_mint().expect("dev mint").mint().clone();
    let held = u64::from(alice.total_balance().await.unwrap())
        + u64::from(bob.total_balance().await.unwrap());
    assert_eq!(
        common::outstanding_at(&mint).await,
        held,
        "outstanding ecash equals what the wallets hold"
    );

    // Reopening the same namespaces from sled keeps the balances.
    drop((alice, bob, carol));
    let alice = w.open("alice");
    assert_eq!(alice.total_balance().await.unwrap(), left);
    w.soko.stop().await;
}

/// A swap the mint abandoned half-way (its inputs marked pending, the undo failed: SQLite
/// "database is locked" under load) leaves the token unreceivable: every wallet is told
/// "Token Pending" until the mint undoes it. The dev mint undoes such swaps while it runs,
/// not only at its next start; before, a trade's transfer retried it every pass, holding
/// both sessions, until soko restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_the_dev_mint_abandoned_is_undone_while_it_runs() {
    use cdk_common::mint::{Operation, OperationKind, Saga, SwapSagaState};

    let mut w = Wallets::start(3).await;
    let alice = w.open("alice");
    let bob = w.open("bob");
    fund(&alice, 100).await;
    let token = alice
        .prepare_send(Amount::from(40), SendOptions::default())
        .await
        .unwrap()
        .confirm(None)
        .await
        .unwrap();

    // What a swap's first step leaves at the mint when neither its last step nor its undo
    // commits: the inputs pending under the swap's id, and the swap's saga, a minute old.
    let mint = w.soko.daemon().dev_mint().expect("dev mint").mint().clone();
    let keysets = mint.keysets().keysets;
    let proofs = token.proofs(&keysets).unwrap();
    let swap = uuid::Uuid::now_v7();
    let operation = Operation::new(
        swap,
        OperationKind::Swap,
        Amount::from(40),
        Amount::from(40),
        Amount::ZERO,
        None,
        None,
    );
    let mut saga = Saga::new_swap(swap, SwapSagaState::SetupComplete);
    saga.updated_at = saga.updated_at.saturating_sub(60);
    let mut tx = mint.localstore().begin_transaction().await.unwrap();
    let mut added = tx.add_proofs(proofs, None, &operation).await.unwrap();
    tx.update_proofs_state(&mut added, cdk::nuts::State::Pending)
        .await
        .unwrap();
    tx.add_saga(&saga).await.unwrap();
    tx.commit().await.unwrap();

    let refused = bob
        .receive(&token.to_string(), ReceiveOptions::default())
        .await
        .expect_err("the inputs are pending at the mint");
    assert!(refused.to_string().contains("ending"), "{refused}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let received = loop {
        match bob
            .receive(&token.to_string(), ReceiveOptions::default())
            .await
        {
            Ok(received) => break received,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "still refused after 40 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(received, Amount::from(40));
    w.soko.stop().await;
}

/// A dev mint over HTTP whose invoices settle at once (the data in `dir`), and a wallet of
/// soko's at it, reaching it as soko reaches an external mint.
async fn wallet_at_a_dev_mint(
    dir: &std::path::Path,
    seed: u8,
) -> (soko::devmint::DevMint, soko::wallet::Wallet) {
    let mint = soko::devmint::DevMint::start_settling_after(dir, 0, 0)
        .await
        .unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let wallet = soko::wallet::open(&store, "alice", mint.url(), &[seed; 64]).unwrap();
    (mint, wallet)
}

fn active_sat_keyset(mint: &soko::devmint::DevMint) -> cdk::nuts::Id {
    mint.mint()
        .keysets()
        .keysets
        .into_iter()
        .find(|k| k.active && k.unit == cdk::nuts::CurrencyUnit::Sat)
        .unwrap()
        .id
}

/// A wallet killed while its mint request was in flight sends it again when it recovers
/// (cdk's saga replay). cdk signs each request to a locked quote (NUT-20) afresh, with
/// random auxiliary data; through soko's connector both sends are the same bytes, so the
/// mint answers the second from what it kept (NUT-19) instead of "already issued", which
/// would leave the wallet needing restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_request_sent_again_gets_the_same_signatures_from_the_mints_cache() {
    use cdk::nuts::{MintRequest, PreMintSecrets};
    use cdk::secret::Secret;
    use cdk::wallet::MintConnector;

    let dir = tempfile::tempdir().unwrap();
    let (mint, wallet) = wallet_at_a_dev_mint(dir.path(), 4).await;
    let quote = wallet
        .mint_quote(PaymentMethod::BOLT11, Some(Amount::from(64)), None, None)
        .await
        .unwrap();
    let key = quote.secret_key.clone().expect("cdk locks its quotes");
    for _ in 0..200 {
        let state = wallet
            .check_mint_quote_status(&quote.id)
            .await
            .unwrap()
            .state;
        if state == cdk::nuts::MintQuoteState::Paid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keyset = active_sat_keyset(&mint);
    let outputs =
        PreMintSecrets::from_secrets(keyset, vec![Amount::from(64)], vec![Secret::generate()])
            .unwrap()
            .blinded_messages();
    let signed = || {
        let mut request = MintRequest {
            quote: quote.id.clone(),
            outputs: outputs.clone(),
            signature: None,
        };
        request.sign(&key).unwrap();
        request
    };
    let (first, again) = (signed(), signed());
    assert_ne!(
        first.signature, again.signature,
        "cdk signs with random aux data"
    );

    let connector = wallet.mint_connector();
    let answered = connector
        .post_mint(&PaymentMethod::BOLT11, first)
        .await
        .unwrap();
    let replayed = connector
        .post_mint(&PaymentMethod::BOLT11, again)
        .await
        .expect("the replay is answered from the mint's cache");
    assert_eq!(answered.signatures, replayed.signatures);

    // The same request sent as cdk signed it is another request to the mint.
    let plain = cdk::wallet::HttpClient::new(mint.url().parse().unwrap(), None);
    let refused = plain.post_mint(&PaymentMethod::BOLT11, signed()).await;
    assert!(refused.is_err(), "{refused:?}");
    mint.shutdown().await;
}

/// cdk replays a receive's swap with its inputs as the wallet's database lists them, which
/// need not be the order first sent. Through soko's connector any order is the same request,
/// so the mint answers the replay from what it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_sent_again_with_its_inputs_reordered_gets_the_same_signatures() {
    use cdk::amount::SplitTarget;
    use cdk::nuts::{PreMintSecrets, SwapRequest};
    use cdk::wallet::MintConnector;

    let dir = tempfile::tempdir().unwrap();
    let (mint, wallet) = wallet_at_a_dev_mint(dir.path(), 5).await;
    fund(&wallet, 7).await;
    let proofs = wallet.get_unspent_proofs().await.unwrap();
    assert!(proofs.len() >= 3, "7 sats mint as 4 + 2 + 1");
    let keyset = active_sat_keyset(&mint);
    let fees = wallet
        .get_keyset_fees_and_amounts_by_id(keyset)
        .await
        .unwrap();
    let outputs = PreMintSecrets::random(keyset, Amount::from(7), &SplitTarget::default(), &fees)
        .unwrap()
        .blinded_messages();
    let mut reversed = proofs.clone();
    reversed.reverse();

    let connector = wallet.mint_connector();
    let answered = connector
        .post_swap(SwapRequest::new(proofs, outputs.clone()))
        .await
        .unwrap();
    let replayed = connector
        .post_swap(SwapRequest::new(reversed.clone(), outputs.clone()))
        .await
        .expect("the replay is answered from the mint's cache");
    assert_eq!(answered.signatures, replayed.signatures);

    let plain = cdk::wallet::HttpClient::new(mint.url().parse().unwrap(), None);
    // Not the order the connector sent (by secret): by secret, backwards.
    let mut other = reversed;
    other.sort_by(|a, b| b.secret.as_bytes().cmp(a.secret.as_bytes()));
    let refused = plain.post_swap(SwapRequest::new(other, outputs)).await;
    assert!(refused.is_err(), "{refused:?}");
    mint.shutdown().await;
}

/// A token made by a swap (50 sat is no proof a wallet of 1000 holds), and its maker stopped
/// before it recorded the token. cdk's recovery on the next open forgets that send: the
/// proofs it reserved, the swap's inputs, are spent. soko's recovery keeps the token first,
/// so the maker answers with that same token instead of making a second one (the exchange's
/// crash trial lost 50 sat so: a fee paid twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_a_stop_kept_from_being_recorded_is_read_back_not_made_again() {
    let mut w = Wallets::start(3).await;
    let alice = w.open("alice");
    fund(&alice, 1_000).await;
    // Consolidated to one proof per power of two of 1000: 512, 256, 128, 64, 32, 8.
    let proofs = alice.get_unspent_proofs().await.unwrap();
    alice
        .swap(
            None,
            SplitTarget::Values(Vec::new()),
            proofs,
            None,
            false,
            false,
        )
        .await
        .unwrap();
    let prepared = alice
        .prepare_send(Amount::from(50), SendOptions::default())
        .await
        .unwrap();
    assert!(
        !prepared.proofs_to_swap().is_empty(),
        "the token needs a swap"
    );
    let operation = prepared.operation_id();
    let token = prepared.confirm(None).await.unwrap().to_string();
    drop(alice);

    let alice = w.open("alice");
    soko::wallet::recover(&alice).await.unwrap();
    assert!(
        alice
            .localstore
            .get_saga(&operation)
            .await
            .unwrap()
            .is_none(),
        "cdk's recovery forgot the send"
    );
    let read = soko::wallet::recorded_token(&alice, &operation.to_string())
        .await
        .unwrap();
    assert_eq!(read.as_deref(), Some(token.as_str()));
    assert_eq!(alice.total_balance().await.unwrap(), Amount::from(950));
    // Kept sealed: the store holds no token in clear.
    let cashu = token.as_bytes();
    for name in w.store.db().tree_names() {
        let tree = w.store.db().open_tree(&name).unwrap();
        for entry in tree.iter() {
            let (_, value) = entry.unwrap();
            assert!(
                !value.windows(cashu.len()).any(|w| w == cashu),
                "token in clear"
            );
        }
    }
    // Once the receiver took it, the next recovery forgets the kept copy.
    let bob = w.open("bob");
    assert_eq!(
        bob.receive(&token, ReceiveOptions::default())
            .await
            .unwrap(),
        Amount::from(50)
    );
    drop(alice);
    let alice = w.open("alice");
    soko::wallet::recover(&alice).await.unwrap();
    assert!(alice
        .localstore
        .kv_list("soko", "made_tokens")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(alice.total_balance().await.unwrap(), Amount::from(950));
    w.soko.stop().await;
}

/// A stop between a send's swap and its token leaves the swap's send proofs put aside
/// (`Reserved`, owned by no operation) and the send rolled back: no token holds them. The
/// swap below leaves the same state; recovery gives them back to the balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_put_aside_for_a_token_never_made_come_back_on_recovery() {
    let mut w = Wallets::start(4).await;
    let alice = w.open("alice");
    fund(&alice, 1_000).await;
    let proofs = alice.get_unspent_proofs().await.unwrap();
    let aside = alice
        .swap(
            Some(Amount::from(50)),
            SplitTarget::None,
            proofs,
            None,
            false,
            false,
        )
        .await
        .unwrap()
        .expect("send proofs");
    assert_eq!(aside.iter().map(|p| u64::from(p.amount)).sum::<u64>(), 50);
    assert_eq!(alice.total_balance().await.unwrap(), Amount::from(950));
    drop(alice);

    let alice = w.open("alice");
    soko::wallet::recover(&alice).await.unwrap();
    assert_eq!(alice.total_balance().await.unwrap(), Amount::from(1_000));
    // They are spendable: all 1000 go in one token, and the mint takes it.
    let all = alice
        .prepare_send(Amount::from(1_000), SendOptions::default())
        .await
        .unwrap()
        .confirm(None)
        .await
        .unwrap();
    let bob = w.open("bob");
    assert_eq!(
        bob.receive(&all.to_string(), ReceiveOptions::default())
            .await
            .unwrap(),
        Amount::from(1_000)
    );
    w.soko.stop().await;
}
