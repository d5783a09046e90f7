//! What the bridge must never log.

use super::*;

/// Phone numbers, inputs (a PIN travels in `text`) and the bridge's key never reach the log,
/// even at TRACE level; the masked number does. The capture is process-wide, so every other
/// test of this file running meanwhile is held to the same rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_inputs_and_keys_stay_out_of_the_log() {
    let capture = Capture::default();
    let trace = LogConfig {
        level: "trace".into(),
        json: false,
    };
    soko::logging::init_with_writer(&trace, capture.clone()).unwrap();

    let soko = TestSoko::start().await;
    let relay = soko.relay_url();
    let peer = counterpart(
        &relay,
        Duration::ZERO,
        Box::new(|_| Some(Ok(screen("PIN accepted", false)))),
    )
    .await;
    let keys = Keys::generate();
    let bridge = start_bridge_with_keys(
        keys.clone(),
        &relay,
        peer.keys.public_key(),
        DEFAULT_BUDGET,
        None,
    )
    .await;
    let phone = "+254799123456";
    let pin_input = "1*987654321";
    let (_, body) = post_form(
        &bridge.url(),
        &[],
        &[
            ("sessionId", "ATUid_logs"),
            ("serviceCode", SERVICE),
            ("phoneNumber", phone),
            ("networkCode", "63902"),
            ("text", pin_input),
        ],
    )
    .await;
    assert_eq!(body, "CON PIN accepted");
    let soko_side = User::with_keys(peer.keys.clone(), std::slice::from_ref(&relay)).await;
    let notice = json!({"v":1,"notice":"sms","args":{"phone":phone,"text":"Order #9 paid"}});
    soko_side
        .send_nip17(bridge.public_key(), &notice.to_string())
        .await;

    let masked = "+2547•••••456";
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while !capture.text().contains(masked) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notice is logged with the number masked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bridge.shutdown().await.unwrap();

    let log = capture.text();
    for secret in [
        "799123456".to_owned(),
        pin_input.to_owned(),
        keys.secret_key().to_bech32().unwrap(),
        keys.secret_key().to_secret_hex(),
    ] {
        assert!(!log.contains(&secret), "the log shows a secret");
    }
}
