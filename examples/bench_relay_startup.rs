//! Startup time and memory of soko's embedded relay store with many stored events.
//!
//! Fills a relay store (the events' own sled Db, as soko keeps it under
//! `<data_dir>/relay-events/`) with N signed events, then opens it in a fresh process the way
//! `soko run` does at start (`[relay]` defaults: retention window, bound on outsiders'
//! events) and reports how long opening took, the process's resident memory after it
//! (`VmRSS`) and at its peak (`VmHWM`), from `/proc/self/status`, and how many events the
//! relay holds.
//!
//! The store mixes what an order-heavy soko leaves behind: DMs and gift wraps older than
//! the retention window (`--past-percent`), soko's own replies within it (`--own-percent`,
//! signed by the bot key, so exempt from the bound), and outsiders' DMs within it (the rest).
//!
//! ```sh
//! cargo run --release --example bench_relay_startup -- [--events N] [--dir PATH]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use nostr_sdk::{EventBuilder, JsonUtil as _, Keys, Kind, Tag, Timestamp};
use soko::config::Config;
use soko::relay::{Exempt, SledEventStore, EVENTS_DIR};
use soko::store::Store;

#[derive(Debug, Parser)]
#[command(about = "Startup time and RSS of soko's relay store with many events")]
struct Args {
    /// Events in the store.
    #[arg(long, default_value_t = 1_000_000)]
    events: u32,

    /// Percent of them older than the retention window.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(0..=100))]
    past_percent: u32,

    /// Percent of them signed by soko's bot key (its replies), within the window.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100))]
    own_percent: u32,

    /// Data dir to fill (kept afterwards); a temp dir, removed at the end, without it.
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Internal: only open the store in DIR with the bot key BOT (hex) and report.
    #[arg(long, hide = true, num_args = 2, value_names = ["DIR", "BOT"])]
    open_only: Option<Vec<String>>,
}

const DAY: u64 = 24 * 3600;

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(open) = &args.open_only {
        let [dir, bot] = open.as_slice() else {
            bail!("--open-only DIR BOT");
        };
        return runtime.block_on(open_only(Path::new(dir), bot));
    }
    if args.past_percent + args.own_percent > 100 {
        bail!("--past-percent + --own-percent exceed 100");
    }
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temp data dir")?),
    };
    let dir = match (&args.dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_path_buf(),
        (None, None) => bail!("no data dir"),
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let bot = Keys::generate();
    println!("soko relay store startup benchmark");
    let config = Config::default().relay;
    println!(
        "  store       {} events: {}% DMs and gift wraps past the retention window ({} s, \
         wraps 2 days more), {}% soko's own replies within it, {}% outsiders' DMs within it \
         (bound max_stored_events = {})",
        args.events,
        args.past_percent,
        config.retention_secs,
        args.own_percent,
        100 - args.past_percent - args.own_percent,
        config.max_stored_events
    );
    println!("  cores       {cores}");

    let started = Instant::now();
    let bytes = runtime.block_on(fill(&dir, &args, &bot))?;
    let disk = soko::util::size_on_disk(&dir.join(EVENTS_DIR));
    println!(
        "  filled      in {:.1} s: {} MiB of event JSON, {} MiB on disk",
        started.elapsed().as_secs_f64(),
        bytes >> 20,
        disk >> 20
    );

    // A fresh process: its memory is the open's alone.
    let output = Command::new(std::env::current_exe()?)
        .arg("--open-only")
        .arg(&dir)
        .arg(bot.public_key().to_hex())
        .output()
        .context("running the opening process")?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        bail!(
            "opening failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if let Some(temp) = temp {
        temp.close().context("removing the temp data dir")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the events straight into the store's Db (the first generation, as an empty store
/// creates it); returns the bytes of JSON written.
async fn fill(dir: &Path, args: &Args, bot: &Keys) -> Result<usize> {
    {
        // Creates the layout (relay-events/CURRENT naming gen-1), then lets go of it.
        let legacy = Store::open(dir)?;
        SledEventStore::open(dir, &legacy, 1, None, Exempt::default()).await?;
    }
    let generation = Store::open(&dir.join(EVENTS_DIR).join("gen-1"))?;
    let tree = generation.tree::<String>("events")?;
    let now = Timestamp::now().as_secs();
    let retention = Config::default().relay.retention_secs;
    let past = u64::from(args.events) * u64::from(args.past_percent) / 100;
    let own = u64::from(args.events) * u64::from(args.own_percent) / 100;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u64;
    let chunk = 20_000u64;
    // DM senders and recipients from a pool (signing is what the fill spends its time on);
    // gift wraps, as in NIP-59, each with a key of its own.
    let people: std::sync::Arc<Vec<Keys>> =
        std::sync::Arc::new((0..1_000).map(|_| Keys::generate()).collect());
    let mut bytes = 0;
    let mut at = 0u64;
    while at < u64::from(args.events) {
        let end = (at + chunk).min(u64::from(args.events));
        let per = (end - at).div_ceil(threads);
        let mut workers = Vec::new();
        for t in 0..threads {
            let (from, to) = (at + t * per, (at + (t + 1) * per).min(end));
            let (bot, people) = (bot.clone(), people.clone());
            workers.push(std::thread::spawn(move || {
                (from..to)
                    .map(|n| event(n, past, own, &bot, &people, now, retention))
                    .collect::<Result<Vec<_>>>()
            }));
        }
        let mut batch = sled::Batch::default();
        for worker in workers {
            let signed = worker
                .join()
                .map_err(|_| anyhow!("a signing thread panicked"))??;
            for (id, json) in signed {
                bytes += json.len();
                batch.insert(id.to_vec(), tree.encode(&json)?);
            }
        }
        tree.raw().apply_batch(batch)?;
        at = end;
    }
    generation.flush().await?;
    Ok(bytes)
}

/// Event `n`: the first `past` are old DMs (even) and wraps (odd) of outsiders, the next
/// `own` are the bot's replies within the window, the rest outsiders' DMs within it.
fn event(
    n: u64,
    past: u64,
    own: u64,
    bot: &Keys,
    people: &[Keys],
    now: u64,
    retention: u64,
) -> Result<([u8; 32], String)> {
    let spread = |n: u64, days: u64| n % (days * DAY);
    let person = |k: u64| people[(k % people.len() as u64) as usize].clone();
    let (keys, kind, created_at) = if n < past {
        let kind = if n % 2 == 0 {
            Kind::EncryptedDirectMessage
        } else {
            Kind::GiftWrap
        };
        // Past the window, wraps past their two extra days, up to 30 days back.
        let age = retention + 3 * DAY + spread(n, 30);
        let author = if kind == Kind::GiftWrap {
            Keys::generate()
        } else {
            person(n)
        };
        (author, kind, now - age)
    } else if n < past + own {
        let age = spread(n, 6) % retention.max(1);
        (bot.clone(), Kind::EncryptedDirectMessage, now - age)
    } else {
        let age = spread(n, 6) % retention.max(1);
        (person(n), Kind::EncryptedDirectMessage, now - age)
    };
    let content = format!("{n:012}").repeat(16);
    let event = EventBuilder::new(kind, content)
        .tag(Tag::public_key(person(n / 7).public_key()))
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(&keys)?;
    Ok((event.id.to_bytes(), event.as_json()))
}

/// The child: opens the store as soko's start does, and reports.
async fn open_only(dir: &Path, bot: &str) -> Result<ExitCode> {
    let config = Config::default().relay;
    let ours = Exempt::default();
    ours.write()
        .map_err(|_| anyhow!("poisoned"))?
        .insert(nostr_sdk::PublicKey::from_hex(bot)?);
    let before = status_kib("VmRSS")?;
    let started = Instant::now();
    let legacy = Store::open(dir)?;
    let events = SledEventStore::open(
        dir,
        &legacy,
        config.max_stored_events,
        Some(config.retention_secs),
        ours,
    )
    .await?;
    let opened = started.elapsed();
    let rss = status_kib("VmRSS")?;
    let peak = status_kib("VmHWM")?;
    println!(
        "  open        {:.2} s to open the store (as soko's start does); {} events held",
        opened.as_secs_f64(),
        events.len().await
    );
    println!(
        "  memory      RSS {} MiB after opening (peak {} MiB; {} MiB before)",
        rss >> 10,
        peak >> 10,
        before >> 10
    );
    let disk = soko::util::size_on_disk(&dir.join(EVENTS_DIR));
    println!("  disk after  {} MiB", disk >> 20);
    Ok(ExitCode::SUCCESS)
}

/// A `kB` line of `/proc/self/status`.
fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .ok_or_else(|| anyhow!("{field} not in /proc/self/status"))
}
