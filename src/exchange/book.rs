//! The public order book: one NIP-69 peer-to-peer order event (kind 38383) per listed offer,
//! signed by soko's bot key (`kinds/book.md`).
//!
//! What goes public is only what a taker needs to choose an offer: amounts, currency,
//! payment methods, status, expiry, and how much reputation is staked. The builder takes a
//! [`BookEntry`], a type with no field for a key, a session or a bill's payment details, so
//! none can reach a tag by mistake; the tests pin the exact tag list.
//!
//! Compatibility with NIP-69 readers decided two encodings:
//! - `pm` is one tag with one value, the methods joined by `,`: NIP-69's text says so, and
//!   Mostro's daemon writes and its mobile client reads it that way (`value.split(',')`).
//!   A method name therefore cannot contain a comma.
//! - The staked reputation is a tag of its own, `staked`, and not NIP-69's `rating`: Mostro's
//!   clients parse `rating` as a JSON review summary (reviews, average, days), and a count
//!   of staked tokens is not one. Readers that do not know `staked` ignore it.

use std::borrow::Cow;

use nostr_sdk::{Event, EventBuilder, Kind, Tag, TagKind, Timestamp};
use serde::{Deserialize, Serialize};

pub use crate::proto::exchange::KIND_BOOK;

use crate::money::Sats;

/// The `y` tag's first value: the platform.
pub const PLATFORM: &str = "soko";
/// Longest offer id (`d`).
pub const MAX_ID_CHARS: usize = 64;
/// Most payment methods on one offer.
pub const MAX_METHODS: usize = 5;
/// Longest payment method name, in characters.
pub const MAX_METHOD_CHARS: usize = 40;
/// Longest instance name (the `y` tag's second value).
pub const MAX_INSTANCE_CHARS: usize = 32;
/// Most digits before the decimal point of a fiat amount.
pub const MAX_FIAT_INTEGER_DIGITS: usize = 15;
/// Most digits after it (ISO 4217 minor units go up to 4).
pub const MAX_FIAT_FRACTION_DIGITS: usize = 4;
/// `premium` lies in `-PREMIUM_LIMIT..=PREMIUM_LIMIT` percent.
pub const PREMIUM_LIMIT: i32 = 100;
/// No offer is larger than all bitcoin: 21 million × 10⁸ sat.
pub const MAX_SATS: Sats = Sats(2_100_000_000_000_000);
/// Most tags [`parse`] reads; soko writes 15.
pub const MAX_TAGS: usize = 32;
/// The `network` values NIP-69 readers know.
pub const NETWORKS: [&str; 4] = ["mainnet", "testnet", "signet", "regtest"];

/// An offer's public status (the `s` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BookStatus {
    /// Listed: open to a claim.
    Pending,
    /// Claimed: a taker is on it.
    InProgress,
    /// Completed.
    Success,
    /// Cancelled by its maker, or ended by an admin.
    Canceled,
    /// Left unclaimed past its expiry.
    Expired,
}

impl BookStatus {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            BookStatus::Pending => "pending",
            BookStatus::InProgress => "in-progress",
            BookStatus::Success => "success",
            BookStatus::Canceled => "canceled",
            BookStatus::Expired => "expired",
        }
    }

    fn parse(value: &str) -> Option<BookStatus> {
        [
            BookStatus::Pending,
            BookStatus::InProgress,
            BookStatus::Success,
            BookStatus::Canceled,
            BookStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// One offer as the public book shows it. Nothing here identifies the maker or the taker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookEntry {
    /// The offer's public id (`d`): ASCII letters, digits, `-` and `_`.
    pub d: String,
    /// Where the offer stands.
    pub status: BookStatus,
    /// The sats the maker offers (`amt`), at least 1.
    pub sats: Sats,
    /// The bill's amount as the maker gave it, a plain decimal: `"1500"`, `"12.50"`.
    pub fiat_amount: String,
    /// ISO 4217 code, three upper-case letters.
    pub currency: String,
    /// The providers the bill can be paid with, e.g. `"M-Pesa"`.
    pub methods: Vec<String>,
    /// Percent over the reference rate (may be 0 or negative).
    pub premium: i32,
    /// When the offer stops being claimable, unix seconds (also the NIP-40 expiration).
    pub expires_at: u64,
    /// `mainnet`, `testnet`, `signet` or `regtest`.
    pub network: String,
    /// This soko's instance name, when it has one.
    pub instance: Option<String>,
    /// Reputation tokens the maker staked on the offer.
    pub staked: u32,
}

/// A book entry or event that soko will not write or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// Not kind 38383.
    #[error("not a book event (kind {0})")]
    WrongKind(u16),
    /// soko's book events have empty content.
    #[error("a book event's content is empty")]
    Content,
    /// More tags than any book event has.
    #[error("more than {MAX_TAGS} tags")]
    TooManyTags,
    /// A required tag is absent.
    #[error("no `{0}` tag")]
    Missing(&'static str),
    /// A tag that must appear once appears again.
    #[error("more than one `{0}` tag")]
    Duplicate(&'static str),
    /// A tag with the wrong number of values, a value soko never writes, or a number not
    /// written the one canonical way.
    #[error("bad `{0}` tag")]
    Bad(&'static str),
    /// The offer id is empty, too long, or has a character outside `[A-Za-z0-9_-]`.
    #[error("offer id: 1 to {MAX_ID_CHARS} ASCII letters, digits, `-` or `_`")]
    Id,
    /// Zero sats, or more than exist.
    #[error("sats: 1 to {} sat", MAX_SATS.0)]
    Sats,
    /// Not a plain positive decimal within the bounds.
    #[error("fiat amount: a positive decimal, at most {MAX_FIAT_INTEGER_DIGITS} digits before the point and {MAX_FIAT_FRACTION_DIGITS} after")]
    FiatAmount,
    /// Not three upper-case ASCII letters.
    #[error("currency: three upper-case ASCII letters (ISO 4217)")]
    Currency,
    /// No method, too many, one too long, repeated, or with a comma or control character.
    #[error("methods: 1 to {MAX_METHODS} distinct names of 1 to {MAX_METHOD_CHARS} characters, no comma")]
    Methods,
    /// Beyond ±[`PREMIUM_LIMIT`] percent.
    #[error("premium: -{PREMIUM_LIMIT} to {PREMIUM_LIMIT} percent")]
    Premium,
    /// An expiry of 0.
    #[error("expires_at: a unix time after 0")]
    Expiry,
    /// Not one of [`NETWORKS`].
    #[error("network: mainnet, testnet, signet or regtest")]
    Network,
    /// The instance name is empty, too long, or has a character outside `[A-Za-z0-9._-]`.
    #[error("instance: 1 to {MAX_INSTANCE_CHARS} ASCII letters, digits, `.`, `-` or `_`")]
    Instance,
    /// The NIP-40 `expiration` is not the offer's `expires_at`.
    #[error("expiration differs from expires_at")]
    Expiration,
}

impl BookEntry {
    /// Whether soko may publish this entry: every field within its bounds.
    pub fn check(&self) -> Result<(), BookError> {
        let id_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.d.is_empty() || self.d.len() > MAX_ID_CHARS || !self.d.chars().all(id_char) {
            return Err(BookError::Id);
        }
        if self.sats == Sats::ZERO || self.sats > MAX_SATS {
            return Err(BookError::Sats);
        }
        check_fiat_amount(&self.fiat_amount)?;
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(BookError::Currency);
        }
        check_methods(&self.methods)?;
        if !(-PREMIUM_LIMIT..=PREMIUM_LIMIT).contains(&self.premium) {
            return Err(BookError::Premium);
        }
        if self.expires_at == 0 {
            return Err(BookError::Expiry);
        }
        if !NETWORKS.contains(&self.network.as_str()) {
            return Err(BookError::Network);
        }
        if let Some(instance) = &self.instance {
            let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if instance.is_empty()
                || instance.len() > MAX_INSTANCE_CHARS
                || !instance.chars().all(ok)
            {
                return Err(BookError::Instance);
            }
        }
        Ok(())
    }
}

fn check_fiat_amount(amount: &str) -> Result<(), BookError> {
    let (integer, fraction) = match amount.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (amount, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let integer_ok = digits(integer)
        && integer.len() <= MAX_FIAT_INTEGER_DIGITS
        // One way to write each number: no leading zero but the one before a point.
        && (integer == "0" || !integer.starts_with('0'));
    let fraction_ok = fraction.is_none_or(|f| digits(f) && f.len() <= MAX_FIAT_FRACTION_DIGITS);
    let positive = amount.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if integer_ok && fraction_ok && positive {
        Ok(())
    } else {
        Err(BookError::FiatAmount)
    }
}

fn check_methods(methods: &[String]) -> Result<(), BookError> {
    if methods.is_empty() || methods.len() > MAX_METHODS {
        return Err(BookError::Methods);
    }
    for (i, method) in methods.iter().enumerate() {
        let chars = method.chars().count();
        let fits = (1..=MAX_METHOD_CHARS).contains(&chars)
            && method.trim() == method
            && !method.chars().any(|c| c == ',' || c.is_control());
        if !fits || methods[..i].contains(method) {
            return Err(BookError::Methods);
        }
    }
    Ok(())
}

/// The tag names soko writes, in the order it writes them.
const TAGS: [&str; 15] = [
    "d",
    "k",
    "f",
    "s",
    "amt",
    "fa",
    "pm",
    "premium",
    "staked",
    "network",
    "layer",
    "expires_at",
    "expiration",
    "y",
    "z",
];

fn tag(name: &'static str, values: Vec<String>) -> Tag {
    Tag::custom(TagKind::Custom(Cow::Borrowed(name)), values)
}

/// The unsigned book event for `entry`, to be signed with soko's bot key. Refused when a
/// field is out of bounds ([`BookEntry::check`]).
pub fn event(entry: &BookEntry) -> Result<EventBuilder, BookError> {
    entry.check()?;
    let mut y = vec![PLATFORM.to_owned()];
    y.extend(entry.instance.clone());
    let tags = [
        Tag::identifier(entry.d.clone()),
        // The maker gives sats for a fiat bill paid: it sells bitcoin.
        tag("k", vec!["sell".into()]),
        tag("f", vec![entry.currency.clone()]),
        tag("s", vec![entry.status.as_str().into()]),
        tag("amt", vec![entry.sats.0.to_string()]),
        tag("fa", vec![entry.fiat_amount.clone()]),
        tag("pm", vec![entry.methods.join(",")]),
        tag("premium", vec![entry.premium.to_string()]),
        tag("staked", vec![entry.staked.to_string()]),
        tag("network", vec![entry.network.clone()]),
        tag("layer", vec!["lightning".into()]),
        tag("expires_at", vec![entry.expires_at.to_string()]),
        Tag::expiration(Timestamp::from(entry.expires_at)),
        tag("y", y),
        tag("z", vec!["order".into()]),
    ];
    Ok(EventBuilder::new(Kind::from(KIND_BOOK), "").tags(tags))
}

/// Reads a book event back into its entry, refusing anything [`event`] would not have
/// written (unknown extra tags are ignored, as NIP-69 lets platforms add their own). The
/// signature is the caller's to verify.
pub fn parse(event: &Event) -> Result<BookEntry, BookError> {
    if event.kind.as_u16() != KIND_BOOK {
        return Err(BookError::WrongKind(event.kind.as_u16()));
    }
    if !event.content.is_empty() {
        return Err(BookError::Content);
    }
    if event.tags.len() > MAX_TAGS {
        return Err(BookError::TooManyTags);
    }
    let mut found: [Option<&[String]>; TAGS.len()] = [None; TAGS.len()];
    for tag in event.tags.iter() {
        let values = tag.as_slice();
        let Some(i) = values
            .first()
            .and_then(|name| TAGS.iter().position(|t| t == name))
        else {
            continue;
        };
        if found[i].replace(&values[1..]).is_some() {
            return Err(BookError::Duplicate(TAGS[i]));
        }
    }
    let values = |name: &'static str| -> Result<&[String], BookError> {
        TAGS.iter()
            .position(|t| *t == name)
            .and_then(|i| found[i])
            .ok_or(BookError::Missing(name))
    };
    let one = |name: &'static str| -> Result<&str, BookError> {
        match values(name)? {
            [value] => Ok(value.as_str()),
            _ => Err(BookError::Bad(name)),
        }
    };
    let fixed = |name: &'static str, expected: &str| -> Result<(), BookError> {
        (one(name)? == expected)
            .then_some(())
            .ok_or(BookError::Bad(name))
    };
    fixed("k", "sell")?;
    fixed("layer", "lightning")?;
    fixed("z", "order")?;
    let instance = match values("y")? {
        [platform] if platform == PLATFORM => None,
        [platform, instance] if platform == PLATFORM => Some(instance.clone()),
        _ => return Err(BookError::Bad("y")),
    };
    let expires_at = number("expires_at", one("expires_at")?)?;
    if number("expiration", one("expiration")?)? != expires_at {
        return Err(BookError::Expiration);
    }
    let premium = one("premium")?;
    let (negative, magnitude) = match premium.strip_prefix('-') {
        Some(magnitude) => (true, magnitude),
        None => (false, premium),
    };
    let magnitude = number("premium", magnitude)?;
    if negative && magnitude == 0 {
        return Err(BookError::Bad("premium"));
    }
    let premium = i64::try_from(magnitude)
        .ok()
        .and_then(|m| i32::try_from(if negative { -m } else { m }).ok())
        .ok_or(BookError::Premium)?;
    let entry = BookEntry {
        d: one("d")?.to_owned(),
        status: BookStatus::parse(one("s")?).ok_or(BookError::Bad("s"))?,
        sats: Sats(number("amt", one("amt")?)?),
        fiat_amount: one("fa")?.to_owned(),
        currency: one("f")?.to_owned(),
        methods: one("pm")?.split(',').map(str::to_owned).collect(),
        premium,
        expires_at,
        network: one("network")?.to_owned(),
        instance,
        staked: u32::try_from(number("staked", one("staked")?)?)
            .map_err(|_| BookError::Bad("staked"))?,
    };
    entry.check()?;
    Ok(entry)
}

/// A non-negative integer written the one way soko writes it: digits only, no sign, no
/// leading zero.
fn number(name: &'static str, value: &str) -> Result<u64, BookError> {
    let canonical = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    if !canonical {
        return Err(BookError::Bad(name));
    }
    value.parse().map_err(|_| BookError::Bad(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nostr_sdk::{JsonUtil, Keys};
    use proptest::prelude::*;

    fn entry() -> BookEntry {
        BookEntry {
            d: "7f3c2a91-offer".into(),
            status: BookStatus::Pending,
            sats: Sats(100_000),
            fiat_amount: "1500".into(),
            currency: "KES".into(),
            methods: vec!["M-Pesa".into(), "Airtel Money".into()],
            premium: 2,
            expires_at: 1_767_225_600,
            network: "mainnet".into(),
            instance: Some("nairobi".into()),
            staked: 3,
        }
    }

    fn sign(entry: &BookEntry) -> Event {
        event(entry)
            .unwrap()
            .sign_with_keys(&Keys::generate())
            .unwrap()
    }

    fn tags_of(event: &Event) -> Vec<Vec<String>> {
        event.tags.iter().map(|t| t.as_slice().to_vec()).collect()
    }

    fn strings(tags: &[&[&str]]) -> Vec<Vec<String>> {
        tags.iter()
            .map(|t| t.iter().map(|s| (*s).to_owned()).collect())
            .collect()
    }

    /// Signs an arbitrary tag list as a book event, for the parser's refusals.
    fn raw(tags: Vec<Vec<String>>, content: &str) -> Event {
        let tags = tags.into_iter().map(|t| Tag::parse(t).unwrap());
        EventBuilder::new(Kind::from(KIND_BOOK), content)
            .tags(tags)
            .sign_with_keys(&Keys::generate())
            .unwrap()
    }

    #[test]
    fn the_event_carries_exactly_the_documented_tags() {
        let event = sign(&entry());
        assert_eq!(event.kind, Kind::PeerToPeerOrder);
        assert_eq!(event.content, "");
        assert_eq!(
            tags_of(&event),
            strings(&[
                &["d", "7f3c2a91-offer"],
                &["k", "sell"],
                &["f", "KES"],
                &["s", "pending"],
                &["amt", "100000"],
                &["fa", "1500"],
                &["pm", "M-Pesa,Airtel Money"],
                &["premium", "2"],
                &["staked", "3"],
                &["network", "mainnet"],
                &["layer", "lightning"],
                &["expires_at", "1767225600"],
                &["expiration", "1767225600"],
                &["y", "soko", "nairobi"],
                &["z", "order"],
            ])
        );
        let mut alone = entry();
        alone.instance = None;
        let tags = tags_of(&sign(&alone));
        assert_eq!(tags.len(), TAGS.len());
        assert!(tags.contains(&strings(&[&["y", "soko"]])[0]));
        // Every tag name soko writes is listed once, in order.
        let names: Vec<&str> = tags.iter().map(|t| t[0].as_str()).collect();
        assert_eq!(names, TAGS);
    }

    #[test]
    fn the_nip40_expiration_is_the_offer_expiry() {
        let event = sign(&entry());
        assert_eq!(
            event.tags.expiration(),
            Some(&Timestamp::from(entry().expires_at))
        );
        assert!(!event.is_expired_at(&Timestamp::from(entry().expires_at - 1)));
        assert!(event.is_expired_at(&Timestamp::from(entry().expires_at + 1)));
    }

    #[test]
    fn every_status_is_written_and_read_back() {
        for (status, wire) in [
            (BookStatus::Pending, "pending"),
            (BookStatus::InProgress, "in-progress"),
            (BookStatus::Success, "success"),
            (BookStatus::Canceled, "canceled"),
            (BookStatus::Expired, "expired"),
        ] {
            let entry = BookEntry { status, ..entry() };
            let event = sign(&entry);
            assert_eq!(tags_of(&event)[3], ["s", wire]);
            assert_eq!(parse(&event).unwrap(), entry);
            assert_eq!(serde_json::to_value(status).unwrap(), wire);
        }
    }

    #[test]
    fn round_trip_through_json() {
        for instance in [None, Some("soko-1.example".to_owned())] {
            let entry = BookEntry {
                instance,
                fiat_amount: "12.50".into(),
                premium: -5,
                methods: vec!["Bank transfer".into()],
                ..entry()
            };
            let wire = sign(&entry).as_json();
            let back = Event::from_json(&wire).unwrap();
            back.verify().unwrap();
            assert_eq!(parse(&back).unwrap(), entry);
        }
    }

    /// `change` makes the entry invalid: the builder refuses it with `expected`.
    fn refused(change: impl Fn(&mut BookEntry), expected: BookError) {
        let mut bad = entry();
        change(&mut bad);
        assert_eq!(event(&bad).err(), Some(expected.clone()), "{bad:?}");
        assert_eq!(bad.check(), Err(expected));
    }

    #[test]
    fn out_of_bounds_entries_are_refused() {
        use BookError as E;
        refused(|e| e.d = String::new(), E::Id);
        refused(|e| e.d = "a".repeat(MAX_ID_CHARS + 1), E::Id);
        refused(|e| e.d = "a b".into(), E::Id);
        refused(|e| e.d = "ü".into(), E::Id);
        refused(|e| e.sats = Sats::ZERO, E::Sats);
        refused(|e| e.sats = Sats(MAX_SATS.0 + 1), E::Sats);
        for fiat in [
            "", "0", "0.00", "-5", "+5", "1,500", "015", "1.", ".5", "1.23456", "1e3", " 15",
            "1.2.3", "١٥",
        ] {
            refused(|e| e.fiat_amount = fiat.into(), E::FiatAmount);
        }
        refused(|e| e.fiat_amount = "1".repeat(16), E::FiatAmount);
        for currency in ["kes", "KE", "KESH", "K3S", "KÉS", "", "K S"] {
            refused(|e| e.currency = currency.into(), E::Currency);
        }
        refused(|e| e.methods = vec![], E::Methods);
        refused(|e| e.methods = vec!["x".into(); 2], E::Methods);
        refused(
            |e| e.methods = (0..6).map(|i| format!("m{i}")).collect(),
            E::Methods,
        );
        refused(
            |e| e.methods = vec!["M".repeat(MAX_METHOD_CHARS + 1)],
            E::Methods,
        );
        for method in ["", "M-Pesa,Till", " M-Pesa", "M-Pesa\n", "M\u{7}"] {
            refused(|e| e.methods = vec![method.into()], E::Methods);
        }
        refused(|e| e.premium = PREMIUM_LIMIT + 1, E::Premium);
        refused(|e| e.premium = -PREMIUM_LIMIT - 1, E::Premium);
        refused(|e| e.expires_at = 0, E::Expiry);
        for network in ["liquid", "Mainnet", ""] {
            refused(|e| e.network = network.into(), E::Network);
        }
        for instance in ["", "a b", "ü", "x/y"] {
            refused(|e| e.instance = Some(instance.into()), E::Instance);
        }
        refused(
            |e| e.instance = Some("i".repeat(MAX_INSTANCE_CHARS + 1)),
            E::Instance,
        );
        // The edges that are allowed.
        let mut edge = entry();
        edge.d = "a".repeat(MAX_ID_CHARS);
        edge.sats = MAX_SATS;
        edge.fiat_amount = format!("{}.{}", "9".repeat(15), "9".repeat(4));
        edge.methods = (0..MAX_METHODS)
            .map(|i| format!("{i}").repeat(MAX_METHOD_CHARS))
            .collect();
        edge.premium = -PREMIUM_LIMIT;
        edge.instance = Some("i".repeat(MAX_INSTANCE_CHARS));
        edge.staked = u32::MAX;
        assert_eq!(parse(&sign(&edge)), Ok(edge));
        let mut small = entry();
        small.fiat_amount = "0.01".into();
        small.methods = vec!["Песа".repeat(10)];
        assert_eq!(parse(&sign(&small)), Ok(small));
    }

    /// The good entry's tags with one changed by `edit` (None: removed).
    fn edited(name: &str, edit: Option<&[&str]>) -> Vec<Vec<String>> {
        let mut tags = tags_of(&sign(&entry()));
        let i = tags.iter().position(|t| t[0] == name).unwrap();
        match edit {
            Some(values) => tags[i] = values.iter().map(|s| (*s).to_owned()).collect(),
            None => {
                tags.remove(i);
            }
        }
        tags
    }

    #[test]
    fn the_parser_refuses_what_soko_would_not_write() {
        use BookError as E;
        let good = tags_of(&sign(&entry()));
        assert_eq!(parse(&raw(good.clone(), "")), Ok(entry()));
        for name in TAGS {
            assert_eq!(parse(&raw(edited(name, None), "")), Err(E::Missing(name)));
            let mut twice = good.clone();
            twice.push(good.iter().find(|t| t[0] == name).unwrap().clone());
            assert_eq!(parse(&raw(twice, "")), Err(E::Duplicate(name)), "{name}");
        }
        let bad: &[(&str, &[&str], BookError)] = &[
            ("k", &["k", "buy"], E::Bad("k")),
            ("layer", &["layer", "onchain"], E::Bad("layer")),
            ("z", &["z", "info"], E::Bad("z")),
            ("y", &["y", "mostro"], E::Bad("y")),
            ("y", &["y"], E::Bad("y")),
            ("y", &["y", "soko", "a", "b"], E::Bad("y")),
            ("s", &["s", "active"], E::Bad("s")),
            ("fa", &["fa", "100", "500"], E::Bad("fa")),
            ("pm", &["pm", "M-Pesa", "Airtel Money"], E::Bad("pm")),
            ("pm", &["pm", "M-Pesa,,Till"], E::Methods),
            ("amt", &["amt", "+100000"], E::Bad("amt")),
            ("amt", &["amt", "0100000"], E::Bad("amt")),
            ("amt", &["amt", "0"], E::Sats),
            ("amt", &["amt", "18446744073709551616"], E::Bad("amt")),
            ("premium", &["premium", "-0"], E::Bad("premium")),
            ("premium", &["premium", "+2"], E::Bad("premium")),
            ("premium", &["premium", "1.5"], E::Bad("premium")),
            ("premium", &["premium", "101"], E::Premium),
            ("premium", &["premium", "9999999999"], E::Premium),
            ("staked", &["staked", "4294967296"], E::Bad("staked")),
            ("staked", &["staked", "-1"], E::Bad("staked")),
            ("expiration", &["expiration", "1767225601"], E::Expiration),
            ("expires_at", &["expires_at", "x"], E::Bad("expires_at")),
            ("f", &["f", "kes"], E::Currency),
            ("network", &["network", "liquid"], E::Network),
            ("d", &["d", "a b"], E::Id),
        ];
        for (name, values, expected) in bad {
            assert_eq!(
                parse(&raw(edited(name, Some(values)), "")).as_ref(),
                Err(expected),
                "{values:?}"
            );
        }
        assert_eq!(parse(&raw(good.clone(), "hello")), Err(E::Content));
        let text = EventBuilder::text_note("")
            .tags(good.iter().map(|t| Tag::parse(t.clone()).unwrap()))
            .sign_with_keys(&Keys::generate())
            .unwrap();
        assert_eq!(parse(&text), Err(E::WrongKind(1)));
        // Other platforms' extra tags are ignored, within a bound.
        let mut extra = good.clone();
        extra.push(vec!["source".into(), "https://example.com".into()]);
        assert_eq!(parse(&raw(extra.clone(), "")), Ok(entry()));
        extra.extend((0..MAX_TAGS).map(|i| vec![format!("x{i}")]));
        assert_eq!(parse(&raw(extra, "")), Err(E::TooManyTags));
    }

    fn any_entry() -> impl Strategy<Value = BookEntry> {
        let status = prop_oneof![
            Just(BookStatus::Pending),
            Just(BookStatus::InProgress),
            Just(BookStatus::Success),
            Just(BookStatus::Canceled),
            Just(BookStatus::Expired),
        ];
        let fiat = ("[1-9][0-9]{0,14}", proptest::option::of("[0-9]{1,4}"))
            .prop_map(|(i, f)| f.map_or(i.clone(), |f| format!("{i}.{f}")));
        let methods = proptest::collection::btree_set("[A-Za-z][A-Za-z0-9 -]{0,38}[a-z]", 1..=5)
            .prop_map(|set| set.into_iter().collect::<Vec<_>>());
        (
            "[A-Za-z0-9_-]{1,64}",
            status,
            1..=MAX_SATS.0,
            fiat,
            "[A-Z]{3}",
            methods,
            -PREMIUM_LIMIT..=PREMIUM_LIMIT,
            1..=u64::MAX,
            proptest::sample::select(NETWORKS.to_vec()),
            proptest::option::of("[A-Za-z0-9._-]{1,32}"),
            any::<u32>(),
        )
            .prop_map(
                |(
                    d,
                    status,
                    sats,
                    fiat_amount,
                    currency,
                    methods,
                    premium,
                    expires_at,
                    network,
                    instance,
                    staked,
                )| {
                    BookEntry {
                        d,
                        status,
                        sats: Sats(sats),
                        fiat_amount,
                        currency,
                        methods,
                        premium,
                        expires_at,
                        network: network.to_owned(),
                        instance,
                        staked,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any entry within bounds survives signing, JSON and parsing unchanged, and its
        /// tags are exactly the documented names.
        #[test]
        fn any_valid_entry_round_trips(entry in any_entry()) {
            let event = sign(&entry);
            let names: Vec<String> = tags_of(&event).into_iter().map(|t| t[0].clone()).collect();
            prop_assert_eq!(names, TAGS.map(String::from).to_vec());
            let back = Event::from_json(event.as_json()).unwrap();
            prop_assert_eq!(parse(&back), Ok(entry));
        }

        /// Whatever tags an event has, parsing answers and never panics.
        #[test]
        fn the_parser_takes_anything(tags in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                proptest::sample::select(TAGS.to_vec()).prop_map(String::from),
                "[ -~]{0,12}",
            ], 1..4),
            0..20,
        )) {
            let _ = parse(&raw(tags, ""));
        }
    }
}
