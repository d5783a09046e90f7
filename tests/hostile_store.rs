//! Hostile-input suite, storage side (issue 11 items 3, 7 and 12): what an outsider — a
//! local user reading the data dir, a stranger flooding the catalog, a client racing one
//! request id — can do against a real soko (embedded relay, in-process dev mint, sled).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use nostr_sdk::prelude::*;
use serde_json::json;

/// Every file and directory under `dir`, with its mode bits.
fn modes(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        // Files can go while this walks (SQLite's -wal and -shm after the mint closes).
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        out.push((
            path.clone(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                todo.push(entry.path());
            }
        }
    }
    out
}

fn assert_private(dir: &Path) {
    let all = modes(dir);
    assert!(all.len() > 5, "{all:?}");
    let open: Vec<_> = all
        .iter()
        .filter(|(_, mode, is_dir)| mode & if *is_dir { 0o077 } else { 0o177 } != 0)
        .map(|(path, mode, _)| format!("{} {mode:o}", path.display()))
        .collect();
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

/// Item 3: under umask 022 a fresh soko used to leave its data dir 0755 and sled's and the
/// dev mint's SQLite files 0644. Now the dir is 0700 and every file in it 0600, the ones
/// made while it runs (SQLite's -wal and -shm, sled's segments) included, and a data dir
/// left loose by an older build is tightened at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_whatever_the_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let mut soko = TestSoko::start_with(|config| {
        // A data dir an older soko made: world-readable, with a world-readable file in it.
        let dir = config.storage.data_dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("notes.txt"), b"old").unwrap();
        std::fs::set_permissions(
            dir.join("notes.txt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        config.storage.data_dir = dir;
    })
    .await;
    let merchant = mango_shop(&soko).await.merchant;
    paid_order(&soko, merchant, "perm-1").await;
    let data = soko.data_dir();
    for name in [
        "sled",
        "dev-mint.sqlite",
        "dev-mint.sqlite-wal",
        "dev-mint.sqlite-shm",
        "vault.key",
        "notes.txt",
    ] {
        assert!(data.join(name).exists(), "{name} missing");
    }
    // While running: SQLite's -wal and -shm exist now.
    assert_private(&data);
    soko.stop().await;
    assert_private(&data);
}

/// Item 3: the escrow wallet's proofs used to sit in sled as clear JSON, secrets included:
/// anyone who could read the files could spend the escrow. After an order is paid, no
/// file under the data dir contains any of the wallet's proof secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proof_secret_is_readable_on_disk() {
    let mut soko = TestSoko::start().await;
    let merchant = mango_shop(&soko).await.merchant;
    paid_order(&soko, merchant, "sealed-1").await;
    let proofs = soko.daemon().wallet().get_unspent_proofs().await.unwrap();
    assert!(!proofs.is_empty(), "the escrow holds the payment");
    let secrets: Vec<String> = proofs.iter().map(|p| p.secret.to_string()).collect();
    let data = soko.data_dir();
    soko.stop().await;

    let mut scanned = 0;
    for (path, _, is_dir) in modes(&data) {
        if is_dir {
            continue;
        }
        // SQLite's -wal and -shm go away when the dev mint's last connection closes, which
        // can be just after the listing: a file that is gone holds nothing.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        scanned += bytes.len();
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a proof secret is in clear in {}",
                path.display()
            );
        }
    }
    assert!(scanned > 100_000, "scanned {scanned} bytes");
    // Sealed is not lost: the same wallet still holds them after a restart.
    soko.restart().await;
    let after = soko.daemon().wallet().get_unspent_proofs().await.unwrap();
    assert_eq!(after.len(), proofs.len());
}

/// A product listing signed by a fresh key, dated `created_at`.
fn stranger_product(name: &str, created_at: u64) -> Event {
    let keys = Keys::generate();
    let content = json!({"id": name, "stall_id": "s", "name": name,
        "currency": "sat", "price": 1, "quantity": 1});
    EventBuilder::new(Kind::SetProduct, content.to_string())
        .tag(Tag::identifier(name))
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(&keys)
        .unwrap()
}

fn everything() -> soko::market::catalog::Query {
    soko::market::catalog::Query {
        merchant: None,
        stall: None,
        limit: 1000,
    }
}

/// Item 7: listings dated 2076 from fresh keys, past the catalog's bound, used to evict the
/// real shop (the oldest entries go first, and 2076 is newer than anything honest). Now
/// far-future listings are refused, and soko's own merchants' listings are never evicted:
/// a flood of fresh keys dated now fills the bound and leaves the shop where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_flood_from_fresh_keys_does_not_evict_the_real_shop() {
    const MAX: usize = 20;
    let mut soko = TestSoko::start_with(|c| c.market.catalog_max_entries = MAX).await;
    let merchant = mango_shop(&soko).await.merchant;
    let own = soko::market::catalog::Query {
        merchant: Some(merchant),
        ..everything()
    };
    let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let found = soko.daemon().catalog().query(&own).unwrap();
        if found.stalls.len() == 1 && found.products.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shop was never indexed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let attacker = Client::default();
    attacker.add_relay(soko.relay_url()).await.unwrap();
    attacker.connect().await;
    attacker
        .wait_for_connection(std::time::Duration::from_secs(5))
        .await;
    let year_2076 = 3_346_000_000;
    let now = Timestamp::now().as_secs();
    for n in 0..MAX + 10 {
        attacker
            .send_event(&stranger_product(&format!("far{n}"), year_2076 + n as u64))
            .await
            .unwrap();
    }
    for n in 0..MAX + 10 {
        attacker
            .send_event(&stranger_product(&format!("near{n}"), now - 100 + n as u64))
            .await
            .unwrap();
    }
    // Wait for the last listing of the flood: once it is in, everything before it was
    // handled. (Where the flood wins, it never gets in: the catalog is full of 2076.)
    let newest = format!("near{}", MAX + 9);
    let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
    let found = loop {
        let found = soko.daemon().catalog().query(&everything()).unwrap();
        if found.products.iter().any(|p| p.product.name == newest)
            || std::time::Instant::now() > deadline
        {
            break found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let shop_left = soko.daemon().catalog().query(&own).unwrap();
    assert_eq!(
        (shop_left.stalls.len(), shop_left.products.len()),
        (1, 1),
        "the real shop was evicted"
    );
    assert!(
        found
            .products
            .iter()
            .all(|p| !p.product.name.starts_with("far")),
        "a far-future listing was kept: {:?}",
        found
            .products
            .iter()
            .map(|p| &p.product.name)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        soko.daemon().catalog().len(),
        MAX,
        "the bound holds for strangers"
    );
    soko.stop().await;
}

/// Item 12: `set_payout` read the record and wrote it back whole, so an activation landing
/// in between was undone (the merchant fell back to pending). Every round races one
/// activation against one payout change; both must stick.
#[test]
fn set_payout_does_not_undo_a_concurrent_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = soko::store::Store::open(dir.path()).unwrap();
    let vault = soko::vault::Vault::from_root([7; 32]).unwrap();
    let merchants = soko::market::Merchants::open(&store, vault).unwrap();
    let agent = Keys::generate().public_key();
    let payee = Keys::generate().public_key().to_bech32().unwrap();
    let mut lost = 0;
    for round in 0..300 {
        let (pending, _) = merchants
            .add_for_agent("Duka", &format!("+2547220{round:05}"), &agent)
            .unwrap();
        let key = PublicKey::parse(&pending.npub).unwrap();
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let (m, s) = (merchants.clone(), start.clone());
        let activate = std::thread::spawn(move || {
            s.wait();
            m.activate(&key).unwrap();
        });
        let (m, s, to) = (merchants.clone(), start, payee.clone());
        let pay = std::thread::spawn(move || {
            s.wait();
            m.set_payout(&key, &to).unwrap();
        });
        activate.join().unwrap();
        pay.join().unwrap();
        let now = merchants.get(&key).unwrap();
        assert_eq!(now.tokens_to.as_deref(), Some(payee.as_str()));
        lost += usize::from(now.status != soko::market::merchants::MerchantStatus::Active);
    }
    assert_eq!(lost, 0, "{lost} of 300 activations undone by set_payout");
}

/// Item 12: two events carrying one request id, handled at once, both ran their command
/// (the stored reply was looked up before either had stored one). Now the (sender, request
/// id) claim is atomic: of eight copies sent at once exactly one runs, and every copy gets
/// its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_sent_many_times_at_once_runs_once() {
    let mut soko = TestSoko::start().await;
    let operator_keys = soko::identity::operator_keys(&soko.data_dir()).unwrap();
    let mut op = User::with_keys(operator_keys, &[soko.relay_url()]).await;
    let body = json!({"v": 1, "id": "twin-1", "cmd": "merchant_add", "args": {"name": "Twin"}})
        .to_string();
    let copies: Vec<Event> = (0..8).map(|_| op.nip04(soko.bot(), &body)).collect();
    let mut sends = tokio::task::JoinSet::new();
    for event in copies {
        let client = op.client.clone();
        sends.spawn(async move { client.send_event(&event).await });
    }
    while let Some(sent) = sends.join_next().await {
        assert!(!sent.unwrap().unwrap().success.is_empty());
    }
    let mut npubs = Vec::new();
    while npubs.len() < 8 {
        let reply = op
            .next_dm(REPLY_TIMEOUT)
            .await
            .expect("a reply per copy")
            .json();
        assert_eq!(reply["ok"], true, "{reply}");
        npubs.push(reply["result"]["npub"].as_str().unwrap().to_owned());
    }
    npubs.dedup();
    assert_eq!(npubs.len(), 1, "the command ran more than once: {npubs:?}");
    let list = operator(&soko, "merchant_list", json!({})).await;
    let twins = list.result.unwrap().to_string().matches("\"Twin\"").count();
    assert_eq!(twins, 1, "merchants created");
    soko.stop().await;
}

/// Item 12: `soko merchant deliver --code CODE` put the buyer's code where every local
/// user sees it (`ps`, /proc/PID/cmdline), and `--code` was required. Without `--code` the
/// code is now read from stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_the_delivery_code_on_stdin() {
    let mut soko = TestSoko::start().await;
    let merchant = mango_shop(&soko).await.merchant;
    let (_buyer, code) = paid_order(&soko, merchant, "stdin-1").await;
    let config_file = soko.cli_config("cli.toml");
    let npub = merchant.to_bech32().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
            .args([
                "merchant",
                "deliver",
                "--merchant",
                &npub,
                "--order",
                "1",
                "--config",
            ])
            .arg(&config_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{code}").unwrap();
        drop(stdin);
        (child.wait_with_output().unwrap(), cmdline, code)
    })
    .await
    .unwrap();
    let (out, cmdline, code) = out;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!cmdline.windows(code.len()).any(|w| w == code.as_bytes()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1120"), "credited: {stdout}");
    soko.stop().await;
}

/// Item 12: `soko run` with the embedded dev mint (whose fake Lightning pays its own
/// invoices) started just as well on a public address, with one log line to warn. Now it
/// refuses, naming the setting, unless the file says `[mint] dev_public = true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soko_run_refuses_the_dev_mint_where_others_can_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let exposed = [
        "[relay]\nbind = \"0.0.0.0\"\nport = 0\n".to_owned(),
        "[relay]\nport = 0\n[relays]\nurls = [\"wss://relay.example\"]\n[mint]\nembedded_dev = true\n"
            .to_owned(),
    ];
    for (i, text) in exposed.iter().enumerate() {
        let file = dir.path().join(format!("exposed-{i}.toml"));
        let data = dir.path().join(format!("data-{i}"));
        std::fs::write(&file, format!("{text}[storage]\ndata_dir = {data:?}\n")).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
            .args(["run", "--config"])
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "soko ran the dev mint with {text:?}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("DEV mint") && stderr.contains("dev_public"),
            "{stderr}"
        );
        assert!(!data.join("dev-mint.sqlite").exists());
    }
    // Said in the file, it is allowed.
    let file = dir.path().join("demo.toml");
    std::fs::write(
        &file,
        "[relay]\nbind = \"0.0.0.0\"\n[mint]\ndev_public = true\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_soko"))
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
