//! A feature phone and its USSD gateway in the terminal: dials a running `soko-ussd` the way
//! Africa's Talking does and shows each screen as a handset would.
//!
//! ```sh
//! cargo run --example ussd_phone -- --phone +254711000111
//! ```
//!
//! The bridge takes callbacks only at `/ussd/<gateway secret>`: by default the secret is read
//! from `soko-ussd-data/gateway.secret`, the bridge's own file (or pass `--url` whole).
//!
//! Type the digits of your choice and Enter; an empty line is the handset's Cancel.
use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;
use soko::proto::ussd::SCREEN_LIMIT;

/// Screen width of a typical feature phone, in characters.
const WIDTH: usize = 24;
/// Gateways give up on a hop after about 20 seconds.
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(20);

/// A terminal feature phone that dials soko's USSD bridge.
#[derive(Parser)]
struct Args {
    /// The bridge's callback URL, without the secret when --secret-file is read.
    #[arg(long, default_value = "http://127.0.0.1:8090/ussd")]
    url: String,
    /// The bridge's gateway secret file, appended to --url as the gateway does; a missing
    /// file means --url is used as it is (a bridge run with --no-gateway-secret).
    #[arg(long, default_value = "soko-ussd-data/gateway.secret")]
    secret_file: std::path::PathBuf,
    /// The phone number calling (E.164).
    #[arg(long, default_value = "+254711000111")]
    phone: String,
    /// The USSD code dialled.
    #[arg(long, default_value = "*384*7#")]
    service_code: String,
    /// The network code the gateway reports.
    #[arg(long, default_value = "63902")]
    network: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    match std::fs::read_to_string(&args.secret_file) {
        Ok(secret) => args.url = format!("{}/{}", args.url.trim_end_matches('/'), secret.trim()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("--secret-file {}", args.secret_file.display()))
        }
    }
    let http = reqwest::Client::builder()
        .timeout(GATEWAY_TIMEOUT)
        .build()?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        dial(&args, &http, &mut lines).await?;
        match prompt(&mut lines, "Dial again? [Y/n] ")? {
            Some(answer) if !answer.trim().eq_ignore_ascii_case("n") => continue,
            _ => return Ok(()),
        }
    }
}

/// One session: from dialling to `END` (or Cancel).
async fn dial(
    args: &Args,
    http: &reqwest::Client,
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
) -> anyhow::Result<()> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let session = format!("ATUid_sim{nanos:x}");
    println!("\nDialling {} from {} …", args.service_code, args.phone);
    let mut inputs: Vec<String> = Vec::new();
    loop {
        // Africa's Talking sends every input of the session so far, joined by `*`.
        let text = inputs.join("*");
        let form = [
            ("sessionId", session.as_str()),
            ("serviceCode", args.service_code.as_str()),
            ("phoneNumber", args.phone.as_str()),
            ("networkCode", args.network.as_str()),
            ("text", text.as_str()),
        ];
        let response = match http.post(&args.url).form(&form).send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                show("Connection problem or invalid MMI code.", true);
                return Ok(());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("is soko-ussd listening on {}?", args.url))
            }
        };
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            println!(
                "The bridge refused the request (HTTP {status}): {}",
                body.trim()
            );
            return Ok(());
        }
        // What the handset gets is cut at the USSD limit, prefix included.
        let body: String = body.chars().take(SCREEN_LIMIT).collect();
        let (screen, end) = match (body.strip_prefix("CON "), body.strip_prefix("END ")) {
            (Some(screen), _) => (screen, false),
            (_, Some(screen)) => (screen, true),
            _ => {
                println!("The bridge broke the protocol (no CON/END): {body:?}");
                return Ok(());
            }
        };
        show(screen, end);
        println!("  ({} of {SCREEN_LIMIT} characters)", body.chars().count());
        if end {
            return Ok(());
        }
        match prompt(lines, "Reply> ")? {
            Some(input) if !input.trim().is_empty() => inputs.push(input.trim().to_owned()),
            _ => {
                println!("Cancelled.");
                return Ok(());
            }
        }
    }
}

/// Draws a screen inside a handset-sized box.
fn show(screen: &str, end: bool) {
    println!("┌{}┐", "─".repeat(WIDTH + 2));
    for line in screen.lines().flat_map(wrap) {
        let pad = WIDTH - line.chars().count();
        println!("│ {line}{} │", " ".repeat(pad));
    }
    let footer = if end {
        "[ OK ]"
    } else {
        "[ Cancel ]  [ Send ]"
    };
    println!("├{}┤", "─".repeat(WIDTH + 2));
    println!("│ {footer:^WIDTH$} │");
    println!("└{}┘", "─".repeat(WIDTH + 2));
}

/// Word-wraps one line to the screen width; words longer than a line are split.
fn wrap(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for word in line.split(' ') {
        let mut chars: Vec<char> = word.chars().collect();
        while chars.len() > WIDTH {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            out.push(chars.drain(..WIDTH).collect());
        }
        let len = current.chars().count();
        if len > 0 && len + 1 + chars.len() > WIDTH {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.extend(chars);
    }
    out.push(current);
    out
}

/// Prints `label` and reads a line; `None` at end of input.
fn prompt(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    label: &str,
) -> anyhow::Result<Option<String>> {
    print!("{label}");
    std::io::stdout().flush()?;
    lines.next().transpose().map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wrap_to_the_screen() {
        assert_eq!(wrap("1 Orders"), vec!["1 Orders"]);
        assert_eq!(
            wrap("Order #7 Mango x3 delivered to Nairobi"),
            vec!["Order #7 Mango x3", "delivered to Nairobi"]
        );
        let long = "x".repeat(WIDTH + 3);
        assert_eq!(wrap(&long), vec!["x".repeat(WIDTH), "xxx".to_owned()]);
        assert!(wrap(&"ab cd ".repeat(40))
            .iter()
            .all(|l| l.chars().count() <= WIDTH));
    }
}
