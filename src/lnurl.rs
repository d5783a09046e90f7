//! Lightning addresses and LNURL-pay links: parsing them, and asking the service behind one
//! for an invoice.
//!
//! The address comes from outside (a buyer's `refund_to`, a merchant's payout address), so
//! every request soko makes for it is to a URL someone else chose. Requests therefore go only
//! to public addresses over https (plain http to loopback only with the dev setting
//! [`Policy::allow_loopback_http`]), the host is resolved here and every address it resolves
//! to is checked and pinned for the connection (no second lookup can swap it), redirects are
//! not followed, bodies are capped, and the invoice's amount and description hash are
//! checked from the bolt11 itself. lnurl-rs is used for its types and parsing only.
//!
//! What goes wrong with a service is logged in full but reported to the sender as one
//! generic [`DestinationError::Unusable`]: the error text must not turn soko into a probe of
//! networks the sender cannot reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ::lnurl::lightning_address::LightningAddress;
use ::lnurl::lnurl::LnUrl;
use ::lnurl::LnUrlResponse;
use cdk::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescriptionRef};
use cdk_common::bitcoin::hashes::{sha256, Hash};
use reqwest::Url;

use crate::money::Sats;

/// Longest destination accepted: an e-mail-style address is at most 254 characters; a
/// bech32 LNURL of a reasonable URL stays well under this.
pub const MAX_DESTINATION_BYTES: usize = 1024;
/// Largest body read from an LNURL service (its pay request or invoice JSON).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time one request (lookup, connect and answer) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Failures resolving a payout or refund destination. The messages are safe to show the
/// sender: they say nothing about what a service answered or where it lives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Neither a Lightning address nor an LNURL.
    #[error("that is neither a Lightning address (user@domain) nor an LNURL-pay link (lnurl1…)")]
    Unreadable,
    /// Readable, but it points somewhere soko does not send requests to.
    #[error("a Lightning address must be served over https from a public address")]
    NotAllowed,
    /// The service could not be reached, or answered with something unusable.
    #[error("the Lightning address did not give a usable invoice")]
    Unusable,
    /// The amount is outside what the service accepts.
    #[error("the Lightning address accepts {min} to {max} msat, not {asked}")]
    Amount {
        /// Minimum msat.
        min: u64,
        /// Maximum msat.
        max: u64,
        /// Asked msat.
        asked: u64,
    },
}

/// Where soko may send requests for a Lightning address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Dev only (`[lnurl] allow_loopback_http`): loopback services may be reached, over http
    /// or https. Every other non-public range stays refused.
    pub allow_loopback_http: bool,
}

/// The LNURL-pay URL behind a Lightning address (`https://domain/.well-known/lnurlp/user`)
/// or a bech32 LNURL (any URL it encodes; whether soko may call it is [`Policy::check`]'s
/// question).
pub fn lnurlp_url(destination: &str) -> Result<String, DestinationError> {
    let destination = destination.trim();
    if destination.len() > MAX_DESTINATION_BYTES {
        return Err(DestinationError::Unreadable);
    }
    // `get` instead of slicing: the input is anyone's text, and byte 6 may fall inside a
    // multi-byte character.
    let lnurl_prefix = destination
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("lnurl1"));
    if lnurl_prefix {
        return LnUrl::decode(destination.to_ascii_lowercase())
            .map(|lnurl| lnurl.url)
            .map_err(|_| DestinationError::Unreadable);
    }
    // LUD-16 limits the user name to a-z, 0-9 and `-_.` (`+` is common too); the domain is
    // a host name. An internationalised e-mail address is not a Lightning address.
    let (user, domain) = destination
        .rsplit_once('@')
        .ok_or(DestinationError::Unreadable)?;
    let user_ok = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    if !(user_ok && domain_ok) {
        return Err(DestinationError::Unreadable);
    }
    LightningAddress::new(destination)
        .map(|address| address.lnurlp_url())
        .map_err(|_| DestinationError::Unreadable)
}

/// Whether `ip` is a public unicast address. Loopback, private, shared (CGNAT), link-local,
/// unique-local, multicast, unspecified, broadcast, documentation, benchmarking and reserved
/// ranges are not; IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4)
/// are judged by that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network", 0.0.0.0 included
        || a == 10                             // private
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254)              // link-local (cloud metadata lives here)
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // documentation
        || (a == 192 && b == 168)              // private
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100)   // documentation
        || (a == 203 && b == 0 && c == 113)    // documentation
        || a >= 224) // multicast, reserved and broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo: tunnels to anywhere
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only
}

/// The IPv4 address inside an IPv6 one that carries it: v4-mapped (`::ffff:a.b.c.d`),
/// v4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        // `::` and `::1` are v6's own unspecified and loopback, judged as v6.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// A URL soko may call, with the addresses its host may be reached at.
#[derive(Debug)]
struct Target {
    url: Url,
    /// The host name and the checked addresses to pin it to; `None` for an IP literal.
    pin: Option<(String, Vec<SocketAddr>)>,
}

impl Policy {
    /// Whether `ip` may be connected to.
    fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || (self.allow_loopback_http && is_loopback(ip))
    }

    /// What can be told from `url` alone (no lookup): its scheme, and its host if that is an
    /// IP address. A host name passes here and is judged by what it resolves to.
    pub fn check(&self, url: &str) -> Result<(), DestinationError> {
        self.parse(url).map(|_| ())
    }

    fn parse(&self, url: &str) -> Result<(Url, Option<IpAddr>), DestinationError> {
        let url = Url::parse(url).map_err(|_| DestinationError::Unreadable)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DestinationError::NotAllowed);
        }
        // The URL parser has already normalised IP hosts (`0x7f.1` is `127.0.0.1`); an IPv6
        // host keeps its brackets.
        let host = url.host_str().ok_or(DestinationError::Unreadable)?;
        let ip: Option<IpAddr> = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse()
            .ok();
        let loopback_name = host.eq_ignore_ascii_case("localhost");
        match url.scheme() {
            "https" => {}
            "http"
                if self.allow_loopback_http && (loopback_name || ip.is_some_and(is_loopback)) => {}
            _ => return Err(DestinationError::NotAllowed),
        }
        if ip.is_some_and(|ip| !self.allows(ip)) {
            return Err(DestinationError::NotAllowed);
        }
        Ok((url, ip))
    }

    /// `url` checked, its host resolved and every address it resolves to checked.
    async fn target(&self, url: &str) -> Result<Target, String> {
        let (url, ip) = self
            .parse(url)
            .map_err(|e| format!("{url:?} refused: {e}"))?;
        if ip.is_some() {
            return Ok(Target { url, pin: None });
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let addrs: Vec<SocketAddr> = tokio::time::timeout(REQUEST_TIMEOUT, lookup)
            .await
            .map_err(|_| format!("looking up {host} timed out"))?
            .map_err(|e| format!("{host} does not resolve: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{host} resolves to nothing"));
        }
        // One forbidden address refuses the host: a name that mixes public and private
        // answers is a rebinding attempt, not a misconfiguration to work around.
        if let Some(bad) = addrs.iter().find(|a| !self.allows(a.ip())) {
            return Err(format!(
                "{host} resolves to a non-public address {}",
                bad.ip()
            ));
        }
        Ok(Target {
            url,
            pin: Some((host, addrs)),
        })
    }

    /// GET `url` under this policy: the body of a 2xx answer, at most [`MAX_BODY_BYTES`].
    /// The error is for the log only.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let target = self.target(url).await?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(REQUEST_TIMEOUT);
        if let Some((host, addrs)) = &target.pin {
            builder = builder.resolve_to_addrs(host, addrs);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        let mut response = client
            .get(target.url)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!("answered with a redirect ({status}), not followed"));
        }
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("answer larger than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Asks the LNURL-pay service behind `destination` for an invoice of `amount`, and checks
    /// that the invoice is for exactly that amount and (when it carries one) that its
    /// description hash is the service's metadata's.
    pub async fn invoice_for(
        &self,
        destination: &str,
        amount: Sats,
    ) -> Result<String, DestinationError> {
        let url = lnurlp_url(destination)?;
        self.check(&url)?;
        let msats = amount.to_msats().map_err(|_| DestinationError::Unusable)?.0;
        self.fetch_invoice(&url, msats).await.map_err(|e| match e {
            Fetch::Amount { min, max } => DestinationError::Amount {
                min,
                max,
                asked: msats,
            },
            Fetch::Other(why) => {
                tracing::warn!(reason = %why, "an LNURL-pay service gave no usable invoice");
                DestinationError::Unusable
            }
        })
    }

    async fn fetch_invoice(&self, url: &str, msats: u64) -> Result<String, Fetch> {
        let body = self.get(url).await?;
        let text = std::str::from_utf8(&body).map_err(|_| "pay request is not UTF-8")?;
        let pay = match ::lnurl::decode_ln_url_response(text) {
            Ok(LnUrlResponse::LnUrlPayResponse(pay)) => pay,
            Ok(_) => return Err("not an LNURL-pay service".into()),
            Err(e) => return Err(format!("unreadable pay request: {e}").into()),
        };
        if msats < pay.min_sendable || msats > pay.max_sendable {
            return Err(Fetch::Amount {
                min: pay.min_sendable,
                max: pay.max_sendable,
            });
        }
        let mut callback = Url::parse(&pay.callback).map_err(|_| "unreadable callback URL")?;
        callback
            .query_pairs_mut()
            .append_pair("amount", &msats.to_string());
        let body = self.get(callback.as_str()).await?;
        let answer: InvoiceAnswer =
            serde_json::from_slice(&body).map_err(|e| format!("unreadable invoice answer: {e}"))?;
        check_invoice(&answer.pr, msats, &pay.metadata)?;
        Ok(answer.pr)
    }
}

/// The invoice must be for exactly `msats` and, when it commits to a description hash, to
/// the hash of the service's `metadata` (LUD-06). lnurl-rs checks the amount too; soko does
/// not rely on a dependency for the check that stops it paying the wrong amount.
fn check_invoice(pr: &str, msats: u64, metadata: &str) -> Result<(), String> {
    let invoice = Bolt11Invoice::from_str(pr).map_err(|e| format!("not a bolt11 invoice: {e}"))?;
    if invoice.amount_milli_satoshis() != Some(msats) {
        return Err(format!(
            "invoice for {:?} msat, {msats} asked",
            invoice.amount_milli_satoshis()
        ));
    }
    if let Bolt11InvoiceDescriptionRef::Hash(hash) = invoice.description() {
        let expected = sha256::Hash::hash(metadata.as_bytes());
        if hash.0 != expected {
            return Err("invoice description hash is not the metadata's".to_owned());
        }
    }
    Ok(())
}

/// What an LNURL-pay callback answers (LUD-06); other fields are not needed.
#[derive(serde::Deserialize)]
struct InvoiceAnswer {
    pr: String,
}

enum Fetch {
    Amount { min: u64, max: u64 },
    Other(String),
}

impl From<String> for Fetch {
    fn from(why: String) -> Self {
        Fetch::Other(why)
    }
}

impl From<&str> for Fetch {
    fn from(why: &str) -> Self {
        Fetch::Other(why.to_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_and_lnurls_resolve_to_their_urls() {
        assert_eq!(
            lnurlp_url("mama@duka.example"),
            Ok("https://duka.example/.well-known/lnurlp/mama".to_owned())
        );
        let lnurl =
            LnUrl::from_url("http://127.0.0.1:9/.well-known/lnurlp/mama".to_owned()).encode();
        assert_eq!(
            lnurlp_url(&lnurl.to_uppercase()),
            Ok("http://127.0.0.1:9/.well-known/lnurlp/mama".to_owned())
        );
        assert!(lnurlp_url("not an address").is_err());
        assert!(lnurlp_url("lnurl1garbage").is_err());
        assert_eq!(
            lnurlp_url(" Mama.Duka+tips@pay.duka-1.example "),
            Ok("https://pay.duka-1.example/.well-known/lnurlp/Mama.Duka+tips".to_owned())
        );
        for bad in [
            "mama@",
            "@duka.example",
            "ma ma@duka.example",
            "mama@duka.example/x",
            "mama@[::1]",
        ] {
            assert!(lnurlp_url(bad).is_err(), "{bad}");
        }
    }

    // Issue 11: `destination[..6]` panicked when byte 6 fell inside a character.
    #[test]
    fn multi_byte_text_is_refused_not_a_panic() {
        for text in ["a€€@x.y", "lnurlé@x", "€€€", "ééééé", "lnurl\u{1F600}"] {
            assert_eq!(
                lnurlp_url(text),
                Err(DestinationError::Unreadable),
                "{text}"
            );
        }
    }

    #[test]
    fn overlong_destinations_are_refused() {
        let long = format!("{}@duka.example", "a".repeat(MAX_DESTINATION_BYTES));
        assert_eq!(lnurlp_url(&long), Err(DestinationError::Unreadable));
    }

    #[test]
    fn non_public_ranges_are_refused() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_public(ip), "{ip} counted as public");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "::ffff:1.1.1.1",
            "2606:4700:4700::1111",
            "2002:0101:0101::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_public(ip), "{ip} counted as non-public");
        }
    }

    #[test]
    fn only_https_to_public_hosts_unless_the_dev_setting_allows_loopback() {
        let strict = Policy::default();
        let dev = Policy {
            allow_loopback_http: true,
        };
        assert_eq!(strict.check("https://duka.example/x"), Ok(()));
        assert_eq!(strict.check("https://1.1.1.1/x"), Ok(()));
        for url in [
            "http://duka.example/x",
            "http://127.0.0.1:9/x",
            "https://127.0.0.1:9/x",
            "https://[::1]/x",
            "https://[::ffff:7f00:1]/x",
            "https://169.254.169.254/latest",
            "https://10.0.0.1/x",
            "https://user:pw@duka.example/x",
            "ftp://duka.example/x",
            "file:///etc/passwd",
        ] {
            assert!(strict.check(url).is_err(), "{url} allowed");
        }
        assert_eq!(dev.check("http://127.0.0.1:9/x"), Ok(()));
        assert_eq!(dev.check("http://localhost:9/x"), Ok(()));
        assert_eq!(dev.check("https://[::1]:9/x"), Ok(()));
        for url in [
            "http://duka.example/x",
            "http://10.0.0.1/x",
            "https://192.168.1.1/x",
        ] {
            assert!(dev.check(url).is_err(), "{url} allowed in dev");
        }
    }

    fn invoice(msats: u64, description: Result<&str, &str>) -> String {
        use cdk::lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
        use cdk_common::bitcoin::secp256k1::{Secp256k1, SecretKey};
        let secp = Secp256k1::new();
        let key = SecretKey::from_slice(&[7; 32]).unwrap();
        let builder = InvoiceBuilder::new(Currency::Regtest);
        let builder = match description {
            Ok(text) => builder.description(text.to_owned()),
            Err(hashed) => builder.description_hash(sha256::Hash::hash(hashed.as_bytes())),
        };
        builder
            .payment_hash(sha256::Hash::hash(b"preimage"))
            .payment_secret(PaymentSecret([1; 32]))
            .current_timestamp()
            .min_final_cltv_expiry_delta(144)
            .amount_milli_satoshis(msats)
            .build_signed(|hash| secp.sign_ecdsa_recoverable(hash, &key))
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_invoice_must_be_for_the_amount_and_the_metadata() {
        let metadata = r#"[["text/plain","mama"]]"#;
        assert_eq!(
            check_invoice(&invoice(5_000, Ok("x")), 5_000, metadata),
            Ok(())
        );
        assert_eq!(
            check_invoice(&invoice(5_000, Err(metadata)), 5_000, metadata),
            Ok(())
        );
        assert!(check_invoice(&invoice(6_000, Ok("x")), 5_000, metadata).is_err());
        assert!(check_invoice(&invoice(5_000, Err("other")), 5_000, metadata).is_err());
        assert!(check_invoice("lnbc1garbage", 5_000, metadata).is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let err = Policy::default()
            .target("https://localhost:9/.well-known/lnurlp/mama")
            .await
            .unwrap_err();
        assert!(err.contains("non-public"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_is_an_address_or_a_refusal(text in any::<String>()) {
            let _ = lnurlp_url(&text);
            let _ = Policy::default().check(&text);
        }

        #[test]
        fn lnurl_prefixed_text_never_panics(tail in "\\PC{0,40}") {
            for prefix in ["lnurl", "LNURL1", "lnurl1", "lnur"] {
                let _ = lnurlp_url(&format!("{prefix}{tail}"));
            }
        }

        #[test]
        fn any_address_is_judged(ip in any::<IpAddr>()) {
            // Judged by the embedded v4 when there is one, consistently.
            if let IpAddr::V6(v6) = ip {
                if let Some(v4) = embedded_v4(v6) {
                    prop_assert_eq!(is_public(ip), is_public_v4(v4));
                }
            }
            prop_assert!(!(is_public(ip) && is_loopback(ip)));
        }
    }
}
