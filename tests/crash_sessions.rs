//! The session refund saga cut by a crash of the real binary (`SOKO_FAILPOINT`, see
//! `src/failpoint.rs`): the next start finishes it, and the ecash goes back exactly once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::binary::Binary;
use common::sessions::{redeem, refund_token, token_from};
use common::{free_port, User};
use nostr_sdk::Keys;
use serde_json::json;

async fn refund_survives_a_crash_at(point: &str) {
    let trader = Keys::generate();
    let (mint, _mint_dir) = common::auth::external_auth_mint([trader.public_key()]).await;
    let mint_url = mint.url().to_owned();
    let cat = common::auth::login(&common::auth::token_url(&mint), &trader).await;
    let bat = common::auth::bats(&mint_url, &cat, 1).await.remove(0);

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut soko = Binary::new(dir.path(), free_port(), &data_dir, &mint_url, "");
    soko.start_failing_at(point).await;
    let bot = soko::identity::bot_keys(&data_dir).unwrap().public_key();

    let keys = Keys::generate();
    let mut owner = User::with_keys(keys.clone(), &[soko.relay()]).await;
    let opened = owner
        .ask_nip17(
            bot,
            &json!({"cmd": "open_session", "args": {"bat": bat.to_string()}}).to_string(),
        )
        .await
        .json();
    let id = opened["result"]["session"]
        .as_str()
        .expect("a session")
        .to_owned();
    let token = token_from(&mint_url, 64).await;
    let deposited = owner
        .ask_nip17(
            bot,
            &json!({"cmd": "session_deposit", "session": id, "args": {"token": token}}).to_string(),
        )
        .await
        .json();
    assert_eq!(deposited["result"]["balance_sat"], 64, "{deposited}");

    owner
        .send_nip17(
            bot,
            &json!({"cmd": "close_session", "session": id}).to_string(),
        )
        .await;
    soko.crashed().await;
    owner.client.shutdown().await;

    soko.start().await;
    let mut owner = User::with_keys(keys, &[soko.relay()]).await;
    let dms = owner.all_dms(Duration::from_secs(8)).await;
    let refunds: Vec<_> = dms
        .iter()
        .filter(|dm| dm.content.starts_with("Refund from soko"))
        .collect();
    assert_eq!(
        refunds.len(),
        1,
        "one refund after a crash at {point}: {:?}",
        dms.iter().map(|dm| &dm.content).collect::<Vec<_>>()
    );
    assert_eq!(redeem(&mint_url, &refund_token(refunds[0])).await, 64);
    soko.kill();
    let store = soko::store::Store::open(&data_dir).unwrap();
    assert!(common::sessions::session_trees(store.db(), &id).is_empty());
    mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_but_not_refunded_is_refunded_once_after_the_crash() {
    refund_survives_a_crash_at("session-ending").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_queued_but_not_sent_is_sent_once_after_the_crash() {
    refund_survives_a_crash_at("session-refund-queued").await;
}
