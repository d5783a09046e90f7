//! USSD gateway formats: how an aggregator's callback becomes a [`Hop`], and how a screen
//! becomes its answer. Africa's Talking's format is the one in use (most African aggregators
//! copy it); another aggregator is another [`Gateway`] implementation.

use nostr_sdk::hashes::{sha256, Hash};

use crate::proto::ussd::{UssdHopArgs, UssdScreen, SCREEN_LIMIT};

/// Longest gateway session id accepted.
const MAX_SESSION_LEN: usize = 128;
/// Longest service code accepted (`*384*7#` and the like).
const MAX_SERVICE_CODE_LEN: usize = 32;
/// Longest network code accepted.
const MAX_NETWORK_LEN: usize = 16;
/// Longest accumulated input accepted: a long session of menu choices and a typed Lightning
/// address stay far below it.
const MAX_TEXT_LEN: usize = 1024;
/// E.164 numbers have at most 15 digits; 6 rules out obvious garbage.
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 6..=15;

/// One gateway callback, whatever the aggregator's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The gateway's session id.
    pub session: String,
    /// The caller's number.
    pub phone: String,
    /// The code dialled.
    pub service_code: String,
    /// The mobile network, when the gateway says.
    pub network: Option<String>,
    /// Every input of the session so far joined by `*`; empty on the first hop.
    pub text: String,
}

impl Hop {
    /// The request id of this hop: the first 32 hex characters of
    /// sha256("soko-ussd-hop\n" ‖ session ‖ "\n" ‖ position), where position is the number
    /// of inputs in `text` (0 on the first hop). A gateway retry repeats the same text, so it
    /// gets the same id and soko's request-id replay answers it again instead of acting
    /// twice; each new hop adds one input, so it gets a new id. The text itself is left out
    /// on purpose: it holds the PIN, and a hash of a 4-digit PIN is no secret.
    pub fn request_id(&self) -> String {
        let digest = sha256::Hash::hash(
            format!("soko-ussd-hop\n{}\n{}", self.session, self.position()).as_bytes(),
        );
        digest.to_string()[..32].to_owned()
    }

    /// How many inputs `text` holds: 0 for `""`, else one more than its `*` separators.
    pub fn position(&self) -> usize {
        if self.text.is_empty() {
            0
        } else {
            self.text.matches('*').count() + 1
        }
    }

    /// The `ussd_hop` arguments for this hop, to be acted on before `deadline_ms`.
    pub fn into_args(self, deadline_ms: u64) -> UssdHopArgs {
        UssdHopArgs {
            session: self.session,
            phone: self.phone,
            service_code: self.service_code,
            network: self.network,
            text: self.text,
            deadline_ms,
        }
    }
}

/// Why a gateway callback is refused (answered with HTTP 400 and this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHop {
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A required field is empty.
    #[error("field `{0}` is empty")]
    Empty(&'static str),
    /// A field is longer than any real gateway sends.
    #[error("field `{field}` is longer than {max} characters")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// The phone number is not digits with an optional leading `+`.
    #[error("field `{0}` is not a phone number (6 to 15 digits, optionally after a `+`)")]
    BadPhone(&'static str),
}

/// An aggregator's callback format.
pub trait Gateway: Send + Sync + 'static {
    /// The aggregator's name, for logs.
    fn name(&self) -> &'static str;
    /// Reads one callback body.
    fn parse(&self, body: &[u8]) -> Result<Hop, BadHop>;
    /// The answer body for `screen`, cut to what a handset shows.
    fn render(&self, screen: &UssdScreen) -> String;
    /// The answer's `Content-Type`.
    fn content_type(&self) -> &'static str {
        "text/plain; charset=utf-8"
    }
}

/// Africa's Talking: a form-encoded POST with `sessionId`, `serviceCode`, `phoneNumber`,
/// `networkCode` and `text`; the answer is plain text starting `CON ` (the session waits for
/// input) or `END ` (it ends).
#[derive(Debug, Clone, Copy, Default)]
pub struct AfricasTalking;

impl Gateway for AfricasTalking {
    fn name(&self) -> &'static str {
        "africastalking"
    }

    fn parse(&self, body: &[u8]) -> Result<Hop, BadHop> {
        let mut session = None;
        let mut service_code = None;
        let mut phone = None;
        let mut network = None;
        let mut text = None;
        for (key, value) in form_urlencoded::parse(body) {
            // The first occurrence wins; a repeated field is no reason to refuse a caller.
            let slot = match key.as_ref() {
                "sessionId" => &mut session,
                "serviceCode" => &mut service_code,
                "phoneNumber" => &mut phone,
                "networkCode" => &mut network,
                "text" => &mut text,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.into_owned());
            }
        }
        let session = required("sessionId", session, MAX_SESSION_LEN)?;
        let service_code = required("serviceCode", service_code, MAX_SERVICE_CODE_LEN)?;
        let phone = required("phoneNumber", phone, PHONE_DIGITS.end() + 1)?;
        if !is_phone(&phone) {
            return Err(BadHop::BadPhone("phoneNumber"));
        }
        // Africa's Talking always sends `text` ("" on the first hop) and usually
        // `networkCode`; a gateway that leaves out an empty field is still understood.
        let text = text.unwrap_or_default();
        limit("text", &text, MAX_TEXT_LEN)?;
        let network = network.filter(|n| !n.is_empty());
        if let Some(network) = &network {
            limit("networkCode", network, MAX_NETWORK_LEN)?;
        }
        Ok(Hop {
            session,
            phone,
            service_code,
            network,
            text,
        })
    }

    fn render(&self, screen: &UssdScreen) -> String {
        fit(if screen.end { "END " } else { "CON " }, &screen.screen)
    }
}

/// `prefix` + `screen`, cut to [`SCREEN_LIMIT`] characters (not bytes: a cut never splits a
/// character).
pub fn fit(prefix: &str, screen: &str) -> String {
    let room = SCREEN_LIMIT.saturating_sub(prefix.chars().count());
    let mut out = String::with_capacity(prefix.len() + screen.len().min(SCREEN_LIMIT * 4));
    out.push_str(prefix);
    out.extend(screen.chars().take(room));
    out
}

/// True for 6 to 15 digits with an optional leading `+`: nothing that could smuggle a second
/// recipient or a separator into a gateway or SMS API call.
pub fn is_phone(phone: &str) -> bool {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    PHONE_DIGITS.contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

fn required(field: &'static str, value: Option<String>, max: usize) -> Result<String, BadHop> {
    let value = value.ok_or(BadHop::Missing(field))?;
    if value.is_empty() {
        return Err(BadHop::Empty(field));
    }
    limit(field, &value, max)?;
    Ok(value)
}

fn limit(field: &'static str, value: &str, max: usize) -> Result<(), BadHop> {
    if value.chars().count() > max {
        return Err(BadHop::TooLong { field, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &[u8] =
        b"sessionId=ATUid_1&serviceCode=%2A384%2A7%23&phoneNumber=%2B254711000111&networkCode=63902&text=";

    #[test]
    fn africas_talking_callbacks_parse() {
        let hop = AfricasTalking.parse(FIRST);
        assert_eq!(
            hop,
            Ok(Hop {
                session: "ATUid_1".into(),
                phone: "+254711000111".into(),
                service_code: "*384*7#".into(),
                network: Some("63902".into()),
                text: String::new(),
            })
        );
        let later = AfricasTalking
            .parse(b"sessionId=s&serviceCode=*1%23&phoneNumber=254711000111&text=1*2")
            .map(|h| (h.text, h.network));
        assert_eq!(later, Ok(("1*2".to_owned(), None)));
    }

    #[test]
    fn bad_callbacks_say_what_is_wrong() {
        let parse = |body: &str| AfricasTalking.parse(body.as_bytes());
        assert_eq!(
            parse("serviceCode=*1%23&phoneNumber=%2B254711000111&text="),
            Err(BadHop::Missing("sessionId"))
        );
        assert_eq!(
            parse("sessionId=&serviceCode=*1%23&phoneNumber=%2B254711000111"),
            Err(BadHop::Empty("sessionId"))
        );
        assert_eq!(
            parse("sessionId=s&serviceCode=*1%23&phoneNumber=%2B2547,%2B2548"),
            Err(BadHop::BadPhone("phoneNumber"))
        );
        assert_eq!(
            parse(&format!(
                "sessionId=s&serviceCode=*1%23&phoneNumber=%2B254711000111&text={}",
                "1*".repeat(600)
            )),
            Err(BadHop::TooLong {
                field: "text",
                max: MAX_TEXT_LEN
            })
        );
        assert_eq!(parse(""), Err(BadHop::Missing("sessionId")));
        assert!(AfricasTalking.parse(&[0xff, 0xfe, b'=', 0x80]).is_err());
    }

    #[test]
    fn request_ids_follow_the_rule() {
        let hop = |session: &str, text: &str| Hop {
            session: session.into(),
            phone: "+254711000111".into(),
            service_code: "*1#".into(),
            network: None,
            text: text.into(),
        };
        // `printf 'soko-ussd-hop\nATUid_1\n2' | sha256sum`, cut to 32 characters.
        assert_eq!(
            hop("ATUid_1", "1*2").request_id(),
            "1dc041d27cd0b3368334b3a304b9c259"
        );
        assert_eq!(hop("a", "").request_id().len(), 32);
        // The PIN is not in it: the same hop of the session, whatever was typed.
        assert_eq!(hop("a", "4821").request_id(), hop("a", "0000").request_id());
        assert_eq!(
            hop("a", "4821*5*1").request_id(),
            hop("a", "9999*5*1").request_id()
        );
        // Each hop adds an input (possibly empty), so each hop has its own id.
        let ids: Vec<String> = ["", "4821", "4821*", "4821**", "4821***1"]
            .iter()
            .map(|t| hop("a", t).request_id())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(!ids[i + 1..].contains(id), "{i}");
        }
        assert_ne!(hop("a", "1").request_id(), hop("b", "1").request_id());
        // The separator keeps ("a1", "") and ("a", "1") apart.
        assert_ne!(hop("a1", "").request_id(), hop("a", "1").request_id());
    }

    #[test]
    fn screens_are_cut_to_the_handset_limit_by_characters() {
        let long = "é".repeat(300);
        let body = AfricasTalking.render(&UssdScreen {
            screen: long,
            end: false,
        });
        assert_eq!(body.chars().count(), SCREEN_LIMIT);
        assert!(body.starts_with("CON éé"));
        let short = AfricasTalking.render(&UssdScreen {
            screen: "Bye".into(),
            end: true,
        });
        assert_eq!(short, "END Bye");
        let exact = "x".repeat(SCREEN_LIMIT - 4);
        assert_eq!(fit("CON ", &exact).chars().count(), SCREEN_LIMIT);
        assert_eq!(fit("CON ", &format!("{exact}y")), format!("CON {exact}"));
    }

    #[test]
    fn phones_are_digits_only() {
        assert!(is_phone("+254711000111"));
        assert!(is_phone("254711000111"));
        assert!(!is_phone("+2547 1100"));
        assert!(!is_phone("+"));
        assert!(!is_phone("+254711000111,+254722000222"));
        assert!(!is_phone("１２３４５６７"));
    }
}
