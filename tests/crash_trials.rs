//! A short run of the crash-trial runner (`examples/crash_trials.rs`, README "Crash trials"):
//! the real binary killed with SIGKILL at random moments while buyers order, judged from
//! the buyers' side. The seed is printed, so a failure can be replayed with `--seed`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../examples/crash_trials.rs"]
#[allow(dead_code, missing_docs)]
mod runner;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soko_passes_a_few_crash_trials() {
    let summary = runner::run(runner::Args {
        soko: Some(env!("CARGO_BIN_EXE_soko").into()),
        trials: 2,
        buyers: 8,
        seed: None,
        window: 6,
        payment_window: 20,
        pause_ms: 300,
        stop_on_failure: false,
    })
    .await
    .expect("the trials ran");
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert!(summary.kills >= 2 && summary.orders > 0, "{summary:?}");
}
