//! Hops relayed between the gateway and a counterpart playing soko: malformed callbacks, refusals, screens, silence, forged replies, retries, shutdown.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_callbacks_get_400_with_the_reason() {
    let soko = TestSoko::start().await;
    let bridge = start_bridge(&soko.relay_url(), soko.bot(), DEFAULT_BUDGET, None).await;
    let url = bridge.url();

    let (status, body) = post_form(
        &url,
        &[],
        &[
            ("serviceCode", SERVICE),
            ("phoneNumber", PHONE),
            ("text", ""),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("sessionId"), "{body}");

    let (status, body) = post_form(&url, &[], &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = post_form(
        &url,
        &[],
        &[
            ("sessionId", "s1"),
            ("serviceCode", SERVICE),
            ("phoneNumber", "+254711000111,+254722000222"),
            ("text", ""),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("phoneNumber"), "{body}");

    let raw = reqwest::Client::new()
        .post(&url)
        .body(vec![0xff, 0x00, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let get = reqwest::get(&url).await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

/// soko refuses hops from a key it does not list as a bridge (`forbidden`): the caller
/// gets the polite error END.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_from_soko_ends_the_session_politely() {
    let soko = TestSoko::start().await;
    let bridge = start_bridge(&soko.relay_url(), soko.bot(), DEFAULT_BUDGET, None).await;
    let (status, body) = dial(&bridge, "ATUid_refused", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("END {UNAVAILABLE}"));

    // An error code the bridge has never heard of is still an error.
    let (_peer, other) = bridged_to_counterpart(
        &soko,
        Duration::ZERO,
        Box::new(|_| Some(Err("brand_new_code"))),
    )
    .await;
    assert_eq!(
        dial(&other, "ATUid_refused2", "").await.1,
        format!("END {UNAVAILABLE}")
    );
    assert_eq!((bridge.pending_hops(), other.pending_hops()), (0, 0));
    other.shutdown().await.unwrap();
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screens_come_back_as_con_and_end_within_the_limit() {
    let soko = TestSoko::start().await;
    let (mut peer, bridge) = bridged_to_counterpart(
        &soko,
        Duration::ZERO,
        Box::new(|args| {
            Some(Ok(match args.text.as_str() {
                "" => screen("Karibu Mama Duka\n1 Orders\n2 Confirm delivery", false),
                "1" => screen(&"Order #7 Mango x3 ".repeat(20), false),
                "ok" => json!({"pong": true}),
                _ => screen("Asante. Bye", true),
            }))
        }),
    )
    .await;

    let before = unix_ms();
    let (status, body) = dial(&bridge, "ATUid_screens", "").await;
    let after = unix_ms();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "CON Karibu Mama Duka\n1 Orders\n2 Confirm delivery");

    // The hop arrived as the protocol says, from the bridge's key.
    let seen = peer.seen.recv().await.unwrap();
    assert_eq!(seen.from, bridge.public_key());
    assert_eq!((seen.request.v, seen.request.cmd.as_str()), (1, "ussd_hop"));
    assert_eq!(
        seen.request.id.as_deref(),
        Some(request_id("ATUid_screens", "").as_str())
    );
    assert_eq!(seen.args.session, "ATUid_screens");
    assert_eq!(seen.args.phone, PHONE);
    assert_eq!(seen.args.service_code, SERVICE);
    assert_eq!(seen.args.network.as_deref(), Some("63902"));
    assert_eq!(seen.args.text, "");
    let budget = DEFAULT_BUDGET.as_millis() as u64;
    assert!(
        (before + budget..=after + budget).contains(&seen.args.deadline_ms),
        "deadline {} is now + budget",
        seen.args.deadline_ms
    );

    // A screen longer than a handset shows is cut at 182 characters, prefix included.
    let (_, body) = dial(&bridge, "ATUid_screens", "1").await;
    assert_eq!(body.chars().count(), SCREEN_LIMIT);
    assert!(body.starts_with("CON Order #7 Mango x3 Order #7"), "{body}");
    assert_eq!(peer.seen.recv().await.unwrap().args.text, "1");

    let (_, body) = dial(&bridge, "ATUid_screens", "1*9").await;
    assert_eq!(body, "END Asante. Bye");

    // `ok:true` without a screen is not shown to the caller.
    let (_, body) = dial(&bridge, "ATUid_screens", "ok").await;
    assert_eq!(body, format!("END {UNAVAILABLE}"));
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_ends_politely_and_a_late_reply_changes_nothing() {
    let soko = TestSoko::start().await;
    let budget = Duration::from_millis(1500);

    // Nobody holds this key: no reply can ever come.
    let nobody = Keys::generate().public_key();
    let bridge_to_nobody = start_bridge(&soko.relay_url(), nobody, budget, None).await;
    let (status, body) = dial(&bridge_to_nobody, "ATUid_silent", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("END {TOO_SLOW}"));
    assert_eq!(bridge_to_nobody.pending_hops(), 0);
    bridge_to_nobody.shutdown().await.unwrap();

    // A slow counterpart answers, but only after the budget.
    let mut slow = counterpart(
        &soko.relay_url(),
        budget + Duration::from_millis(1000),
        Box::new(|args| Some(Ok(screen(&format!("late {}", args.text), false)))),
    )
    .await;
    let bridge = start_bridge(&soko.relay_url(), slow.keys.public_key(), budget, None).await;
    let (_, body) = dial(&bridge, "ATUid_slow", "").await;
    assert_eq!(body, format!("END {TOO_SLOW}"));
    let late = slow.sent.recv().await.unwrap();
    assert_eq!(late, request_id("ATUid_slow", ""));
    // Give the late reply time to reach the bridge: it finds no hop waiting.
    tokio::time::sleep(QUIET_PERIOD).await;
    assert_eq!(bridge.pending_hops(), 0);

    // The bridge still serves: a hop now waits long enough for the slow answer.
    let patient = start_bridge_with_keys(
        Keys::generate(),
        &soko.relay_url(),
        slow.keys.public_key(),
        Duration::from_secs(10),
        None,
    )
    .await;
    let (_, body) = dial(&patient, "ATUid_slow", "1").await;
    assert_eq!(body, "CON late 1");
    let (_, body) = dial(&bridge, "ATUid_slow", "2").await;
    assert_eq!(body, format!("END {TOO_SLOW}"));
    patient.shutdown().await.unwrap();
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_signed_by_another_key_is_ignored() {
    let soko = TestSoko::start().await;
    let relay = soko.relay_url();
    let impostor = User::connect(std::slice::from_ref(&relay)).await;
    let (forge_tx, mut forge_rx) = mpsc::unbounded_channel::<(PublicKey, String)>();
    // The real counterpart stays silent and tells the impostor the hop's id and bridge; the
    // impostor answers in its place with a screen the caller must never see.
    let mut peer = counterpart(&relay, Duration::ZERO, Box::new(|_| None)).await;
    tokio::spawn(async move {
        while let Some(seen) = peer.seen.recv().await {
            let _ = forge_tx.send((seen.from, seen.request.id.unwrap()));
        }
    });
    let (forged_tx, mut forged_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((bridge, id)) = forge_rx.recv().await {
            let reply = json!({"v":1,"re":id,"ok":true,"result":screen("Enter PIN to win", false)});
            impostor.send_nip17(bridge, &reply.to_string()).await;
            let _ = forged_tx.send(());
        }
    });

    let bridge = start_bridge(&relay, peer.keys.public_key(), Duration::from_secs(3), None).await;
    let (_, body) = dial(&bridge, "ATUid_forged", "").await;
    assert!(
        forged_rx.try_recv().is_ok(),
        "the forged reply was sent while the hop waited"
    );
    assert_eq!(body, format!("END {TOO_SLOW}"));
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_retry_reuses_the_request_id() {
    let soko = TestSoko::start().await;
    let (mut peer, bridge) = bridged_to_counterpart(
        &soko,
        Duration::from_millis(300),
        Box::new(|args| Some(Ok(screen(&format!("you typed {}", args.text), false)))),
    )
    .await;

    // The gateway retries a hop it got no answer to, sometimes while the first still waits.
    let (first, second) = tokio::join!(
        dial(&bridge, "ATUid_retry", "1*2"),
        dial(&bridge, "ATUid_retry", "1*2")
    );
    assert_eq!(first.1, "CON you typed 1*2");
    assert_eq!(second.1, "CON you typed 1*2");
    let (_, again) = dial(&bridge, "ATUid_retry", "1*2").await;
    assert_eq!(again, "CON you typed 1*2");
    let (_, next) = dial(&bridge, "ATUid_retry", "1*2*3").await;
    assert_eq!(next, "CON you typed 1*2*3");

    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(peer.seen.recv().await.unwrap().request.id.unwrap());
    }
    let expected = request_id("ATUid_retry", "1*2");
    assert_eq!(&ids[..3], &[expected.clone(), expected.clone(), expected]);
    assert_eq!(ids[3], request_id("ATUid_retry", "1*2*3"));
    assert_eq!(bridge.pending_hops(), 0);
    bridge.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_hops_in_flight_finish() {
    let soko = TestSoko::start().await;
    let (mut peer, bridge) = bridged_to_counterpart(
        &soko,
        Duration::from_millis(1500),
        Box::new(|_| Some(Ok(screen("Still here", false)))),
    )
    .await;
    let url = bridge.url();
    let in_flight = {
        let url = url.clone();
        tokio::spawn(async move { dial_url(&url, "ATUid_bye", "").await })
    };
    peer.seen.recv().await.unwrap();
    bridge.shutdown().await.unwrap();
    assert_eq!(in_flight.await.unwrap().1, "CON Still here");
    // Stopped: no more callbacks are taken.
    assert!(reqwest::Client::new().post(&url).send().await.is_err());
}
