//! `soko run` as a child process, for the tests that kill it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nostr_sdk::RelayUrl;
use soko::Config;

use super::REPLY_TIMEOUT;

/// `soko run` as a child process, its output in files of `dir` (printed if the test fails).
pub struct Binary {
    config_file: PathBuf,
    dir: PathBuf,
    starts: u32,
    child: Option<Child>,
}

impl Binary {
    /// A config in `dir` for soko on relay port `relay_port` with its data in `data_dir`, using
    /// the mint at `mint_url`; `extra` is appended to the TOML.
    pub fn new(dir: &Path, relay_port: u16, data_dir: &Path, mint_url: &str, extra: &str) -> Self {
        Self::with_mint_keys(dir, relay_port, data_dir, mint_url, "", extra)
    }

    /// Same as [`Binary::in_dir`], with `mint_keys` (TOML lines) added under `[mint]`.
    pub fn in_dir_with_mint_keys(dir: &Path, mint_url: &str, mint_keys: &str) -> Self {
        Self::with_mint_keys(
            dir,
            super::free_port(),
            &dir.join("data"),
            mint_url,
            mint_keys,
            "",
        )
    }

    fn with_mint_keys(
        dir: &Path,
        relay_port: u16,
        data_dir: &Path,
        mint_url: &str,
        mint_keys: &str,
        extra: &str,
    ) -> Self {
        let toml = format!(
            "[relay]\nport = {relay_port}\n[mint]\nurl = \"{mint_url}\"\n{mint_keys}\n[storage]\ndata_dir = \"{}\"\n[log]\nlevel = \"info,soko=debug\"\n{extra}",
            data_dir.display()
        );
        let config_file = dir.join("soko.toml");
        std::fs::write(&config_file, toml).expect("config written");
        Self {
            config_file,
            dir: dir.to_path_buf(),
            starts: 0,
            child: None,
        }
    }

    /// The usual one: everything in `dir` (data in `dir/data`), a free relay port, the mint
    /// at `mint_url`.
    pub fn in_dir(dir: &Path, mint_url: &str) -> Self {
        Self::new(dir, super::free_port(), &dir.join("data"), mint_url, "")
    }

    /// The config the binary runs with.
    pub fn config(&self) -> Config {
        Config::load(&self.config_file).expect("config loads")
    }

    /// The embedded relay's URL.
    pub fn relay(&self) -> RelayUrl {
        RelayUrl::parse(&format!("ws://127.0.0.1:{}", self.config().relay.port)).expect("url")
    }

    /// Starts `soko run` and waits until it says it runs.
    pub async fn start(&mut self) {
        self.spawn(None).await;
    }

    /// Starts `soko run` with `failpoints` active (`SOKO_FAILPOINT`) and waits until it says
    /// it runs.
    pub async fn start_failing_at(&mut self, failpoints: &str) {
        self.spawn(Some(failpoints)).await;
    }

    async fn spawn(&mut self, failpoints: Option<&str>) {
        self.starts += 1;
        let out = self.dir.join(format!("run-{}.out", self.starts));
        let err = self.dir.join(format!("run-{}.err", self.starts));
        // `SOKO_BIN` runs another build of the binary (e.g. a copy kept for a stress loop
        // while the shared target dir is rebuilt).
        let binary =
            std::env::var("SOKO_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_soko").to_owned());
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config_file)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&err).expect("err file"));
        if let Some(points) = failpoints {
            command.env("SOKO_FAILPOINT", points);
        }
        let mut child = command.spawn().expect("soko spawns");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("soko is running")
        {
            if let Some(status) = child.try_wait().expect("child status") {
                panic!(
                    "soko exited ({status}): {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            assert!(tokio::time::Instant::now() < deadline, "soko did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// Waits for the process to abort at its failpoint.
    pub async fn crashed(&mut self) {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            // Left in `self.child` until it exits, so that a failed wait still kills it.
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("child status") {
                self.child = None;
                assert!(!status.success(), "soko stopped by itself: {status}");
                let err = self.dir.join(format!("run-{}.err", self.starts));
                let text = std::fs::read_to_string(err).unwrap_or_default();
                assert!(text.contains("SOKO_FAILPOINT: crashing at"), "{text}");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "soko did not reach its failpoint"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True once the process aborted at its failpoint (checked, not waited for); false while
    /// it runs.
    pub fn stopped_at_failpoint(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        let Some(status) = child.try_wait().expect("child status") else {
            return false;
        };
        self.child = None;
        assert!(!status.success(), "soko stopped by itself: {status}");
        let err = self.dir.join(format!("run-{}.err", self.starts));
        let text = std::fs::read_to_string(err).unwrap_or_default();
        assert!(text.contains("SOKO_FAILPOINT: crashing at"), "{text}");
        true
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // The daemon's own account of each run, to tell what it did before the kill.
            for run in 1..=self.starts {
                for ext in ["out", "err"] {
                    let path = self.dir.join(format!("run-{run}.{ext}"));
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    eprintln!("--- {} ---\n{text}", path.display());
                }
            }
        }
    }
}
