//! Junk-wrap flood against an in-process soko: memory and disk before, during and after.
//!
//! Writers on `--connections` connections publish `--wraps` gift wraps of `--bytes` each,
//! addressed to the bot, every one from a fresh key (so the per-pubkey limit never applies)
//! and nothing soko can open. The figures are this process's resident memory (soko and the
//! flooding clients together: the clients hold one event at a time) and the size on disk of
//! soko's main sled Db and of the relay's events Db (`relay-events/`). `--floods N` floods N
//! times in one run, `--settle` seconds apart (the janitor compacts in between).
//! `--start-only` starts soko on an existing `--data-dir` and measures it, for a restart in a
//! fresh process.
//!
//! `--compaction-bench N` measures a compaction instead: N events of `--bytes` in a bare
//! events store, then a compaction while a writer keeps saving; it prints how long the copy
//! took, how long writers waited, and the slowest save seen meanwhile.
//!
//! ```sh
//! cargo run --release --example flood -- --data-dir /tmp/flood [--unlimited] [--handled-keep 0]
//! cargo run --release --example flood -- --data-dir /tmp/flood --start-only
//! cargo run --release --example flood -- --compaction-bench 20000
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use nostr_sdk::{Client, EventBuilder, Keys, Kind, Tag, Timestamp};
use soko::config::MintConfig;
use soko::{Config, Daemon};
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
#[command(about = "Flood soko's embedded relay with junk gift wraps and measure it")]
struct Args {
    /// Gift wraps to publish.
    #[arg(long, default_value_t = 6_000)]
    wraps: usize,
    /// Content bytes of each wrap.
    #[arg(long, default_value_t = 60_000)]
    bytes: usize,
    /// Connections the wraps are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Data dir (kept); a temp dir when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Raise the write budgets out of the way, to measure retention alone.
    #[arg(long)]
    unlimited: bool,
    /// `[relay] handled_keep_secs` for the run (default: the config's default).
    #[arg(long)]
    handled_keep: Option<u64>,
    /// Seconds to wait after the flood for retention passes.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Only start soko on --data-dir, measure, stop.
    #[arg(long)]
    start_only: bool,
    /// Floods in this run.
    #[arg(long, default_value_t = 1)]
    floods: usize,
    /// Measure a compaction of this many events instead (see the module doc).
    #[arg(long)]
    compaction_bench: Option<usize>,
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Allocated size (blocks, as `du`) of everything under `path`.
fn dir_mb(path: &Path) -> f64 {
    soko::util::size_on_disk(path) as f64 / (1024.0 * 1024.0)
}

fn report(stage: &str, dir: &Path) {
    println!(
        "{stage:<28} rss {:>8.1} MB   sled {:>8.1} MB   relay-events {:>8.1} MB",
        rss_mb(),
        dir_mb(&dir.join("sled")),
        dir_mb(&dir.join(soko::relay::EVENTS_DIR))
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(events) = args.compaction_bench {
        return compaction_bench(events, args.bytes).await;
    }
    let temp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut config = Config::default();
    config.relay.port = 0;
    config.relay.janitor_secs = 5;
    config.mint = MintConfig::EmbeddedDev { port: 0 };
    config.storage.data_dir = dir.clone();
    config.relay.max_event_bytes = config.relay.max_event_bytes.max(args.bytes + 2_000);
    if let Some(keep) = args.handled_keep {
        config.relay.handled_keep_secs = keep;
    }
    if args.unlimited {
        config.relay.connection_write_per_minute = u32::MAX;
        config.relay.write_budget_per_minute = u32::MAX;
    }

    report("before start", &dir);
    let started = Instant::now();
    let daemon = Daemon::start(config).await.context("soko starts")?;
    report(
        &format!("started ({:.1} s)", started.elapsed().as_secs_f64()),
        &dir,
    );
    if args.start_only {
        daemon.shutdown().await?;
        return Ok(());
    }
    let url = daemon.relay_url().context("embedded relay")?.clone();
    let bot = daemon.bot_public_key();

    for round in 1..=args.floods {
        let flood_start = Instant::now();
        let mut writers = JoinSet::new();
        for c in 0..args.connections {
            let url = url.clone();
            let share =
                args.wraps / args.connections + usize::from(c < args.wraps % args.connections);
            let bytes = args.bytes;
            writers.spawn(async move {
                let client = Client::default();
                client.add_relay(url).await?;
                client.connect().await;
                client.wait_for_connection(Duration::from_secs(5)).await;
                let (mut accepted, mut refused) = (0usize, 0usize);
                for i in 0..share {
                    let content: String =
                        std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), bytes).collect();
                    let wrap = EventBuilder::new(Kind::GiftWrap, content)
                        .tag(Tag::public_key(bot))
                        .custom_created_at(Timestamp::now())
                        .sign_with_keys(&Keys::generate())?;
                    match client.send_event(&wrap).await {
                        Ok(out) if !out.success.is_empty() => accepted += 1,
                        _ => refused += 1,
                    }
                }
                client.shutdown().await;
                Ok::<_, anyhow::Error>((accepted, refused))
            });
        }
        let (mut accepted, mut refused) = (0, 0);
        while let Some(done) = writers.join_next().await {
            let (a, r) = done??;
            accepted += a;
            refused += r;
        }
        println!(
            "flood: {} wraps of {} bytes on {} connections in {:.1} s: {accepted} accepted, {refused} refused",
            args.wraps,
            args.bytes,
            args.connections,
            flood_start.elapsed().as_secs_f64()
        );
        report(&format!("after flood {round}"), &dir);
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        report(&format!("{} s later", args.settle), &dir);
    }
    daemon.shutdown().await?;
    report("stopped", &dir);
    Ok(())
}

/// Fills a bare events store with `events` gift wraps of `bytes`, then compacts it while a
/// writer keeps saving, and prints the figures.
async fn compaction_bench(events: usize, bytes: usize) -> Result<()> {
    use nostr_database::NostrDatabase as _;
    use soko::relay::{Exempt, SledEventStore};
    let dir = tempfile::tempdir()?;
    let legacy = soko::store::Store::open(dir.path())?;
    let db = SledEventStore::open(
        dir.path(),
        &legacy,
        events + 10_000,
        None,
        Exempt::default(),
    )
    .await?;
    let to = Keys::generate().public_key();
    let wrap = move |i: usize| {
        let content: String =
            std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), bytes).collect();
        EventBuilder::new(Kind::GiftWrap, content)
            .tag(Tag::public_key(to))
            .sign_with_keys(&Keys::generate())
    };
    let filled = Instant::now();
    // Eight writers, as eight connections: their syncs share flushes.
    let mut writers = JoinSet::new();
    for w in 0..8 {
        let db = db.clone();
        writers.spawn(async move {
            for i in (w..events).step_by(8) {
                db.save_event(&wrap(i)?).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    println!(
        "filled {events} events of {bytes} bytes in {:.1} s: {:.1} MB live, {:.1} MB on disk",
        filled.elapsed().as_secs_f64(),
        db.live_bytes() as f64 / 1048576.0,
        db.disk_bytes().await as f64 / 1048576.0
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut saved, mut slowest) = (0usize, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let event = wrap(events + saved)?;
                let started = Instant::now();
                db.save_event(&event).await?;
                slowest = slowest.max(started.elapsed());
                saved += 1;
            }
            Ok::<_, anyhow::Error>((saved, slowest))
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let done = db.compact().await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (saved, slowest) = writer.await??;
    println!(
        "compaction: {} events copied in {:.2} s, {} keys replayed, writers paused {} ms; \
         {:.1} MB on disk before, {:.1} MB after",
        done.copied,
        done.copy.as_secs_f64(),
        done.replayed,
        done.paused.as_millis(),
        done.before as f64 / 1048576.0,
        done.after as f64 / 1048576.0
    );
    println!(
        "a writer saved {saved} events meanwhile; its slowest save took {} ms",
        slowest.as_millis()
    );
    Ok(())
}
