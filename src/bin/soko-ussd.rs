//! `soko-ussd`: the USSD bridge. Takes a USSD gateway's HTTP callbacks (Africa's Talking
//! format) and relays each hop to soko over Nostr; see kinds/ussd.md.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use nostr_sdk::{PublicKey, ToBech32};
use soko::bridge::{
    Bridge, BridgeConfig, GatewayAuth, GatewaySecret, SmsConfig, AFRICAS_TALKING_SMS_URL,
};
use soko::config::LogConfig;

/// The USSD bridge: a gateway's HTTP callbacks in, soko's screens out, over Nostr.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// soko's bot key (npub or hex), as `soko keys show` prints it.
    #[arg(long, required_unless_present = "print_npub")]
    soko: Option<String>,
    /// soko's relay; repeat for several.
    #[arg(long = "relay", default_value = "ws://127.0.0.1:7447")]
    relays: Vec<String>,
    /// Where the gateway's callbacks come in (the path is /ussd).
    #[arg(long, default_value = soko::bridge::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Data directory: holds the bridge's key (bridge.nsec, created on first run).
    #[arg(long, default_value = "soko-ussd-data")]
    data_dir: PathBuf,
    /// How long soko gets to answer a hop before the caller is told to dial again (ms).
    /// Gateways drop a hop after 10 to 20 seconds.
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    budget_ms: u64,
    /// SMS API endpoint for soko's notices (Africa's Talking's; the sandbox is
    /// https://api.sandbox.africastalking.com/version1/messaging).
    #[arg(long, default_value = AFRICAS_TALKING_SMS_URL)]
    sms_url: String,
    /// SMS API username; with --sms-api-key-file, notices are sent as SMS (else only logged).
    #[arg(long, requires = "sms_api_key_file")]
    sms_username: Option<String>,
    /// File holding the SMS API key (kept out of the command line, where `ps` shows it).
    #[arg(long, requires = "sms_username")]
    sms_api_key_file: Option<PathBuf>,
    /// Registered sender id or short code for SMS (`from`); the account's default otherwise.
    #[arg(long)]
    sms_from: Option<String>,
    /// Log filter, e.g. `info` or `soko=debug,warn`.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Print the bridge's npub (creating its key on first use) and exit.
    #[arg(long)]
    print_npub: bool,
    /// File holding the gateway secret, the last part of the callback URL
    /// (`/ussd/<secret>`) or the `X-Soko-Gateway-Secret` header; created with a random
    /// secret on first run. Default: gateway.secret in the data directory.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Take callbacks without a gateway secret: local development only, refused unless
    /// --listen is a loopback address.
    #[arg(long, conflicts_with = "secret_file")]
    no_gateway_secret: bool,
    /// Take callbacks only from this address or network (e.g. 196.201.214.0/24, your
    /// gateway's published range); repeat for several. Default: any address.
    #[arg(long = "allow-from")]
    allow_from: Vec<String>,
}

/// The gateway secret's file in the data directory.
const SECRET_FILE: &str = "gateway.secret";

/// Exit code for bad usage or configuration, as `soko`'s.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = LogConfig {
        level: cli.log_level.clone(),
        json: cli.log_json,
    };
    if let Err(e) = soko::logging::init(&log) {
        eprintln!("soko-ussd: --log-level: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let config = match configure(&cli) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soko-ussd: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soko-ussd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The bridge's config from the command line; `None` when there is nothing to run.
fn configure(cli: &Cli) -> anyhow::Result<Option<BridgeConfig>> {
    let keys = soko::identity::bridge_keys(&cli.data_dir)?;
    if cli.print_npub {
        println!("{}", keys.public_key().to_bech32()?);
        return Ok(None);
    }
    let soko_key = cli.soko.as_deref().context("--soko is required")?;
    let soko = PublicKey::parse(soko_key)
        .with_context(|| format!("--soko {soko_key:?} is not a Nostr public key"))?;
    let mut config = BridgeConfig::new(keys, soko, cli.relays.clone());
    config.listen = cli.listen;
    config.budget = Duration::from_millis(cli.budget_ms);
    config.auth = GatewayAuth {
        secret: if cli.no_gateway_secret {
            anyhow::ensure!(
                cli.listen.ip().is_loopback(),
                "--no-gateway-secret is for local development: it is refused on {} (anyone who reaches the bridge could act as any merchant)",
                cli.listen
            );
            None
        } else {
            let path = cli
                .secret_file
                .clone()
                .unwrap_or_else(|| cli.data_dir.join(SECRET_FILE));
            Some(gateway_secret(&path)?)
        },
        allow_from: cli
            .allow_from
            .iter()
            .map(|net| parse_net(net))
            .collect::<anyhow::Result<_>>()?,
    };
    if let (Some(username), Some(key_file)) = (&cli.sms_username, &cli.sms_api_key_file) {
        config.sms = Some(SmsConfig {
            url: cli.sms_url.clone(),
            username: username.clone(),
            api_key: read_api_key(key_file)?,
            from: cli.sms_from.clone(),
        });
    }
    Ok(Some(config))
}

/// Reads the gateway secret, creating the file (mode 0600) with a random one on first run.
fn gateway_secret(path: &Path) -> anyhow::Result<GatewaySecret> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(file = %path.display(), "the gateway secret file is readable by others; chmod 600 it");
            }
            GatewaySecret::parse(&text).with_context(|| format!("--secret-file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = GatewaySecret::generate();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(file, "{}", secret.reveal())?;
            file.sync_all()?;
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("--secret-file {}", path.display())),
    }
}

/// An address or a network, for --allow-from.
fn parse_net(text: &str) -> anyhow::Result<ipnet::IpNet> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    let addr: std::net::IpAddr = text
        .parse()
        .with_context(|| format!("--allow-from {text:?} is not an address or a network"))?;
    Ok(addr.into())
}

fn read_api_key(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--sms-api-key-file {}", path.display()))?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "the SMS API key file is readable by others; chmod 600 it");
    }
    let key = text.trim();
    anyhow::ensure!(!key.is_empty(), "{} is empty", path.display());
    Ok(key.to_owned())
}

async fn run(config: BridgeConfig) -> anyhow::Result<()> {
    let relays = config.relays.join(" ");
    let sms = config.sms.is_some();
    let secret = config.auth.secret.is_some();
    let bridge = Bridge::start(config).await?;
    println!("soko-ussd is running");
    println!("  bridge    {}", bridge.public_key().to_bech32()?);
    // The full URL (secret included) goes to the terminal once, for the gateway's
    // dashboard; never to the log.
    println!("  callback  {}", bridge.url());
    if !secret {
        println!(
            "  WARNING   no gateway secret: anyone who reaches {} can act as any merchant",
            bridge.bare_url()
        );
    }
    println!("  relays    {relays}");
    if sms {
        println!("  sms       notices are sent as SMS");
    } else {
        println!("  sms       notices are only logged (no --sms-username)");
    }
    println!("Add the bridge key to soko's config: [ussd] bridges = [\"<bridge npub>\"].");
    println!("Ctrl-C to stop.");
    soko::util::wait_for_signal()
        .await
        .context("waiting for Ctrl-C or SIGTERM")?;
    println!("stopping…");
    bridge.shutdown().await?;
    Ok(())
}
