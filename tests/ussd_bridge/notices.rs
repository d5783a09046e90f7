//! Notices from soko texted through the loopback SMS API.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_from_soko_are_texted_and_others_are_not() {
    let soko = TestSoko::start().await;
    let relay = soko.relay_url();
    let (url, mut calls) = sms_api().await;
    let soko_side = User::connect(std::slice::from_ref(&relay)).await;
    let stranger = User::connect(std::slice::from_ref(&relay)).await;
    let sms = SmsConfig {
        url,
        username: "sandbox".into(),
        api_key: "atsk_test_key".into(),
        from: Some("SOKO".into()),
    };
    let bridge = start_bridge(&relay, soko_side.pubkey(), DEFAULT_BUDGET, Some(sms)).await;

    let notice =
        |text: &str| json!({"v":1,"notice":"sms","args":{"phone":PHONE,"text":text}}).to_string();
    stranger
        .send_nip17(
            bridge.public_key(),
            &notice("Forged: send your PIN to 0700"),
        )
        .await;
    soko_side
        .send_nip17(bridge.public_key(), &notice("Order #3 paid: 1500 sat"))
        .await;

    let call = tokio::time::timeout(REPLY_TIMEOUT, calls.recv())
        .await
        .expect("the notice is texted")
        .unwrap();
    assert_eq!(call.api_key.as_deref(), Some("atsk_test_key"));
    assert_eq!(call.accept.as_deref(), Some("application/json"));
    let field = |name: &str| {
        call.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("username"), Some("sandbox"));
    assert_eq!(field("to"), Some(PHONE));
    assert_eq!(field("message"), Some("Order #3 paid: 1500 sat"));
    assert_eq!(field("from"), Some("SOKO"));

    // The stranger's notice never reaches the SMS API.
    assert!(
        tokio::time::timeout(QUIET_PERIOD, calls.recv())
            .await
            .is_err(),
        "only soko's notice is texted"
    );
    bridge.shutdown().await.unwrap();
}
