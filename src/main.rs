//! The `soko` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use nostr_sdk::ToBech32;
use soko::{Config, Daemon};

/// soko: a marketplace and escrow bot that talks only Nostr.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon: embedded relay, dev mint (by default) and the bot. Ctrl-C stops it.
    Run(Paths),
    /// Show the bot's identity.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Manage merchants of a running soko (sent to it as operator DMs over its relay).
    Merchant {
        #[command(subcommand)]
        action: MerchantAction,
    },
    /// Invite codes of a running soko (sent to it as operator DMs over its relay).
    Invite {
        #[command(subcommand)]
        action: InviteAction,
    },
}

#[derive(Subcommand)]
enum InviteAction {
    /// Create an invite code for a role; prints the code (shown only this once).
    Create {
        #[command(flatten)]
        paths: Paths,
        /// The role it grants: `agent` or `trader` (admins are listed in the config,
        /// merchants are onboarded by phone).
        #[arg(long)]
        role: String,
        /// How many registrations it allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Seconds from now after which it no longer works (default: never).
        #[arg(long, value_name = "SECS")]
        expires: Option<u64>,
    },
}

/// One order of one merchant.
#[derive(clap::Args)]
struct OrderRef {
    #[command(flatten)]
    paths: Paths,
    /// The merchant's npub.
    #[arg(long)]
    merchant: String,
    /// soko's order number (as in the buyer's messages, without `#`).
    #[arg(long)]
    order: u64,
}

#[derive(Subcommand)]
enum MerchantAction {
    /// Create a merchant with a Nostr identity soko manages; prints its npub, and for one
    /// with --phone its one-time USSD activation code (shown only here: hand it to the owner).
    Add {
        #[command(flatten)]
        paths: Paths,
        /// Shop name.
        #[arg(long)]
        name: String,
        /// Lightning address payouts go to (user@domain).
        #[arg(long)]
        lightning_address: Option<String>,
        /// Phone number, for USSD (stored encrypted).
        #[arg(long)]
        phone: Option<String>,
    },
    /// List merchants.
    List(Paths),
    /// Create or replace a stall from a NIP-15 stall JSON file, and publish it.
    Stall {
        #[command(flatten)]
        paths: Paths,
        /// The merchant's npub.
        #[arg(long)]
        merchant: String,
        /// JSON file with the stall (kind 30017 content).
        file: PathBuf,
    },
    /// Present the buyer's delivery code for an order: releases the escrow to the merchant.
    Deliver {
        #[command(flatten)]
        paths: Paths,
        /// The merchant's npub.
        #[arg(long)]
        merchant: String,
        /// soko's order number (as in the buyer's messages, without `#`).
        #[arg(long)]
        order: u64,
        /// The code the buyer gave. Leave it out (or give `-`) to type it at a prompt or pipe
        /// it on stdin: a code on the command line can be read by every local user (`ps`,
        /// /proc) while the command runs.
        #[arg(long)]
        code: Option<String>,
    },
    /// Refund an order to its buyer (after the buyer asked to cancel, past the delivery
    /// window, or when disputed).
    Refund(OrderRef),
    /// Hold a paid order for review: the delivery code no longer releases it.
    Dispute(OrderRef),
    /// Decide a disputed order for the merchant: the escrow is released to it.
    Release(OrderRef),
    /// Where the merchant's payouts go: a Lightning address, an LNURL-pay link, or an npub
    /// that receives Cashu tokens by DM.
    Payout {
        #[command(flatten)]
        paths: Paths,
        /// The merchant's npub.
        #[arg(long)]
        merchant: String,
        /// user@domain, lnurl1…, or npub1….
        #[arg(long)]
        to: String,
    },
    /// Create or replace a product from a NIP-15 product JSON file, and publish it.
    Product {
        #[command(flatten)]
        paths: Paths,
        /// The merchant's npub.
        #[arg(long)]
        merchant: String,
        /// JSON file with the product (kind 30018 content).
        file: PathBuf,
    },
    /// Lift a merchant's USSD PIN lock; with --new-code also forget its PIN and print a new
    /// one-time activation code.
    UssdReset {
        #[command(flatten)]
        paths: Paths,
        /// The merchant's npub.
        #[arg(long)]
        merchant: String,
        /// Forget the PIN and issue a new activation code.
        #[arg(long)]
        new_code: bool,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Print the bot's npub (creating its key on first use).
    Show(Paths),
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate a config file and print every problem with its key path; exit 2 if any.
    Check {
        /// The file to check.
        #[arg(long, default_value = "relay-config/soko.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct Paths {
    /// Config file (TOML); without it the defaults of relay-config/soko.toml apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory; overrides [storage] data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Exit code for bad usage or configuration (clap uses 2 for usage errors too).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            action: ConfigAction::Check { config },
        } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Keys {
            action: KeysAction::Show(paths),
        } => with_config(&paths, |config| {
            let keys = soko::identity::bot_keys(&config.storage.data_dir)?;
            println!("{}", keys.public_key().to_bech32()?);
            Ok(())
        }),
        Command::Merchant { action } => {
            let (paths, cmd, args) = match action {
                MerchantAction::Add {
                    paths,
                    name,
                    lightning_address,
                    phone,
                } => (
                    paths,
                    "merchant_add",
                    Ok(serde_json::json!({
                        "name": name,
                        "lightning_address": lightning_address,
                        "phone": phone,
                    })),
                ),
                MerchantAction::List(paths) => (paths, "merchant_list", Ok(serde_json::json!({}))),
                MerchantAction::Deliver {
                    paths,
                    merchant,
                    order,
                    code,
                } => (
                    paths,
                    "order_deliver",
                    read_secret(code, "delivery code").map(|code| {
                        serde_json::json!({ "merchant": merchant, "order": order, "code": code })
                    }),
                ),
                MerchantAction::Refund(r) => (
                    r.paths,
                    "order_refund",
                    Ok(serde_json::json!({ "merchant": r.merchant, "order": r.order })),
                ),
                MerchantAction::Dispute(r) => (
                    r.paths,
                    "order_dispute",
                    Ok(serde_json::json!({ "merchant": r.merchant, "order": r.order })),
                ),
                MerchantAction::Release(r) => (
                    r.paths,
                    "order_release",
                    Ok(serde_json::json!({ "merchant": r.merchant, "order": r.order })),
                ),
                MerchantAction::Payout {
                    paths,
                    merchant,
                    to,
                } => (
                    paths,
                    "merchant_payout",
                    Ok(serde_json::json!({ "merchant": merchant, "to": to })),
                ),
                MerchantAction::Stall {
                    paths,
                    merchant,
                    file,
                } => (paths, "stall_put", read_listing(&file, "stall", merchant)),
                MerchantAction::Product {
                    paths,
                    merchant,
                    file,
                } => (
                    paths,
                    "product_put",
                    read_listing(&file, "product", merchant),
                ),
                MerchantAction::UssdReset {
                    paths,
                    merchant,
                    new_code,
                } => (
                    paths,
                    "ussd_reset",
                    Ok(serde_json::json!({ "merchant": merchant, "new_code": new_code })),
                ),
            };
            with_config(&paths, |config| {
                let args = args?;
                let runtime =
                    tokio::runtime::Runtime::new().context("starting the async runtime")?;
                let response = runtime.block_on(soko::operator::call(&config, cmd, args))?;
                match (response.result, response.error) {
                    (Some(result), _) if response.ok => {
                        println!("{}", serde_json::to_string_pretty(&result)?);
                        Ok(())
                    }
                    (_, Some(error)) => anyhow::bail!("{:?}: {}", error.code, error.message),
                    _ => anyhow::bail!("soko sent a malformed answer"),
                }
            })
        }
        Command::Invite {
            action:
                InviteAction::Create {
                    paths,
                    role,
                    uses,
                    expires,
                },
        } => operator_command(
            &paths,
            "invite_create",
            serde_json::json!({ "role": role, "uses": uses, "expires_in_secs": expires }),
        ),
        Command::Run(paths) => with_config(&paths, |config| {
            soko::logging::init(&config.log).map_err(anyhow::Error::msg)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run(config))
        }),
    }
}

/// A secret given on the command line, or else (absent or `-`) the first line of stdin,
/// after a prompt on stderr when stdin is a terminal.
fn read_secret(given: Option<String>, what: &str) -> anyhow::Result<String> {
    use std::io::{IsTerminal, Write};
    if let Some(given) = given.filter(|g| g != "-") {
        return Ok(given);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{what}: ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from stdin"))?;
    let secret = line.trim();
    anyhow::ensure!(!secret.is_empty(), "no {what} on stdin");
    Ok(secret.to_owned())
}

/// `{"merchant": …, "<field>": <the file's JSON>}`.
fn read_listing(
    file: &PathBuf,
    field: &str,
    merchant: String,
) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let listing: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    Ok(serde_json::json!({ "merchant": merchant, field: listing }))
}

/// Sends one operator command to the running soko and prints its result.
fn operator_command(paths: &Paths, cmd: &str, args: serde_json::Value) -> ExitCode {
    with_config(paths, |config| {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        let response = runtime.block_on(soko::operator::call(&config, cmd, args))?;
        match (response.result, response.error) {
            (Some(result), _) if response.ok => {
                println!("{}", serde_json::to_string_pretty(&result)?);
                Ok(())
            }
            (_, Some(error)) => anyhow::bail!("{:?}: {}", error.code, error.message),
            _ => anyhow::bail!("soko sent a malformed answer"),
        }
    })
}

fn with_config(paths: &Paths, f: impl FnOnce(Config) -> anyhow::Result<()>) -> ExitCode {
    let config = match Config::resolve(paths.config.as_deref(), paths.data_dir.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            let file = paths.config.as_deref().unwrap_or(std::path::Path::new(""));
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match f(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soko: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let daemon = Daemon::start(config).await?;
    println!("soko is running");
    println!("  bot    {}", daemon.npub());
    match daemon.relay_url() {
        Some(url) => println!(
            "  relay  {url}\n  agents file://{}?relay={url}&bot={}",
            std::env::current_dir()
                .unwrap_or_default()
                .join("examples/agent-app/dist/agent-app.html")
                .display(),
            daemon.npub()
        ),
        None => println!("  relay  (embedded relay disabled)"),
    }
    if daemon.is_dev_mint() {
        println!(
            "  mint   {} (embedded DEV mint: fake Lightning, worthless sats)",
            daemon.mint_url()
        );
        if let Some(issuer) = daemon.dev_mint().and_then(|m| m.issuer()) {
            println!(
                "  oidc   {} (DEV issuer for the mint's blind auth: registered users log in with a signed Nostr event at {})",
                issuer.discovery_url(),
                issuer.token_url()
            );
        }
    } else {
        println!("  mint   {}", daemon.mint_url());
    }
    println!("Ctrl-C to stop.");
    soko::util::wait_for_signal()
        .await
        .context("waiting for Ctrl-C or SIGTERM")?;
    println!("stopping…");
    daemon.shutdown().await?;
    Ok(())
}
