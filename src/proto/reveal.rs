//! A dispute's key reveal: a party shows soko its long-term key by signing a reveal event
//! with it (kind [`KIND_REVEAL`], `kinds/exchange.md`, `kinds/orders.md`), sent inside an
//! encrypted DM and never published, so only soko learns which key stands behind the party.
//! An exchange offer's reveal names it with an `offer` tag and a side `maker`/`taker`; a
//! marketplace order's with an `order` tag and a side `buyer`/`merchant` ([`Subject`]). The
//! check lives here, below the domains, because both the exchange and the escrow use it.
//!
//! [`check`] is pure: the event alone against what the caller expects. The checks run
//! cheapest and most decisive first, like registration's (`agents::registration`): a forged
//! or tampered event is refused before anything it claims is read. What it does not judge is
//! left to the caller:
//! - replay: the same event presented twice passes twice; the caller stores the ids it used
//!   ([`Revealed::event_id`]) and refuses a second use;
//! - standing: the revealed key is whatever key signed; that it is a registered user's (and
//!   which) is looked up by the caller.

use nostr_sdk::{Event, EventId, PublicKey, TagKind};

use super::exchange::KIND_REVEAL;

/// How far `created_at` may be from soko's clock, either way.
pub const WINDOW_SECS: u64 = 60;
/// Longest statement (the event's content), in bytes.
pub const MAX_STATEMENT_BYTES: usize = 2000;
/// What a reveal is about: the tag naming it, its id, and the sides that may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The tag's name (`offer`, `order`).
    pub tag: &'a str,
    /// The tag's value: the offer's or order's id.
    pub id: &'a str,
    /// The sides a reveal may speak for.
    pub sides: &'a [&'a str],
}

/// The two sides of an offer a reveal may speak for.
pub const OFFER_SIDES: [&str; 2] = ["maker", "taker"];
/// The two sides of an order a reveal may speak for.
pub const ORDER_SIDES: [&str; 2] = ["buyer", "merchant"];

impl<'a> Subject<'a> {
    /// An exchange offer.
    pub fn offer(id: &'a str) -> Self {
        Self {
            tag: "offer",
            id,
            sides: &OFFER_SIDES,
        }
    }

    /// A marketplace order (its id as `kinds/orders.md` names it in a reveal).
    pub fn order(id: &'a str) -> Self {
        Self {
            tag: "order",
            id,
            sides: &ORDER_SIDES,
        }
    }
}

/// A reveal that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revealed {
    /// The long-term key that signed it.
    pub key: PublicKey,
    /// The event's id: the caller refuses it a second time.
    pub event_id: EventId,
    /// The party's statement.
    pub statement: String,
}

/// Why a reveal is refused: one rule each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevealRefusal {
    /// The event's id or signature does not verify.
    #[error("the reveal event's id or signature does not verify")]
    BadSignature,
    /// Not the reveal kind.
    #[error("a reveal event is kind {KIND_REVEAL}, not {0}")]
    WrongKind(u16),
    /// Not addressed to this soko (exactly one `p` tag, soko's bot key).
    #[error("the reveal event must have exactly one `p` tag: this soko's bot pubkey {soko}")]
    WrongRecipient {
        /// soko's bot pubkey (hex).
        soko: String,
    },
    /// Not about this offer or order (exactly one such tag, its id).
    #[error("the reveal event must have exactly one [\"{tag}\", \"{id}\"] tag")]
    WrongSubject {
        /// The tag's name.
        tag: String,
        /// The offer or order the reveal is for.
        id: String,
    },
    /// Not for this side (exactly one `side` tag, one of the subject's, the one expected).
    #[error("the reveal event must have exactly one [\"side\", \"{side}\"] tag")]
    WrongSide {
        /// The side expected.
        side: String,
    },
    /// Outside the time window.
    #[error(
        "the reveal event's created_at ({created_at}) is {} s away from soko's clock ({now}); \
         it must be within {WINDOW_SECS} s: sign a fresh one (and check your clock)",
        created_at.abs_diff(*now)
    )]
    Stale {
        /// The event's `created_at`.
        created_at: u64,
        /// soko's clock.
        now: u64,
    },
    /// The statement is too long.
    #[error("the statement is {0} bytes; at most {MAX_STATEMENT_BYTES}")]
    TooLong(usize),
}

/// Checks the reveal `event` for `subject` by `side` (one of the subject's sides), addressed
/// to `bot`, at `now`. Replay is the caller's to refuse (see the module's note).
pub fn check(
    event: &Event,
    bot: &PublicKey,
    subject: Subject<'_>,
    side: &str,
    now: u64,
) -> Result<Revealed, RevealRefusal> {
    // `verify` checks that the id commits to every field and that the signature is the
    // pubkey's over that id: nothing below can be altered on a copy.
    if event.verify().is_err() {
        return Err(RevealRefusal::BadSignature);
    }
    if event.kind.as_u16() != KIND_REVEAL {
        return Err(RevealRefusal::WrongKind(event.kind.as_u16()));
    }
    let recipients: Vec<Option<PublicKey>> = event
        .tags
        .filter(TagKind::p())
        .map(|tag| tag.content().and_then(|hex| PublicKey::from_hex(hex).ok()))
        .collect();
    if recipients != [Some(*bot)] {
        return Err(RevealRefusal::WrongRecipient { soko: bot.to_hex() });
    }
    if values(event, subject.tag) != [Some(subject.id)] {
        return Err(RevealRefusal::WrongSubject {
            tag: subject.tag.to_owned(),
            id: subject.id.to_owned(),
        });
    }
    if !subject.sides.contains(&side) || values(event, "side") != [Some(side)] {
        return Err(RevealRefusal::WrongSide {
            side: side.to_owned(),
        });
    }
    let created_at = event.created_at.as_secs();
    if created_at.abs_diff(now) > WINDOW_SECS {
        return Err(RevealRefusal::Stale { created_at, now });
    }
    if event.content.len() > MAX_STATEMENT_BYTES {
        return Err(RevealRefusal::TooLong(event.content.len()));
    }
    Ok(Revealed {
        key: event.pubkey,
        event_id: event.id,
        statement: event.content.clone(),
    })
}

/// The values of every `name` tag (`None` for one without a value).
fn values<'a>(event: &'a Event, name: &str) -> Vec<Option<&'a str>> {
    event
        .tags
        .iter()
        .map(|tag| tag.as_slice())
        .filter(|tag| tag.first().map(String::as_str) == Some(name))
        .map(|tag| tag.get(1).map(String::as_str))
        .collect()
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use nostr_sdk::{EventBuilder, JsonUtil, Keys, Kind, Tag, Timestamp};

    const NOW: u64 = 1_800_000_000;
    const OFFER: &str = "offer-7f3a";

    fn tag(parts: &[&str]) -> Tag {
        Tag::parse(parts.iter().copied()).expect("a tag")
    }

    /// A reveal by `keys` with `tags`, `content` and `created_at`, of `kind`.
    fn event(keys: &Keys, kind: u16, tags: Vec<Tag>, content: &str, created_at: u64) -> Event {
        EventBuilder::new(Kind::Custom(kind), content)
            .tags(tags)
            .custom_created_at(Timestamp::from(created_at))
            .sign_with_keys(keys)
            .expect("signed")
    }

    fn good_tags(bot: &PublicKey) -> Vec<Tag> {
        vec![
            Tag::public_key(*bot),
            tag(&["offer", OFFER]),
            tag(&["side", "taker"]),
        ]
    }

    #[test]
    fn a_valid_reveal_names_its_signer() {
        let (party, bot) = (Keys::generate(), Keys::generate().public_key());
        let reveal = event(
            &party,
            KIND_REVEAL,
            good_tags(&bot),
            "I paid the bill",
            NOW - 30,
        );
        let revealed = check(&reveal, &bot, Subject::offer(OFFER), "taker", NOW).expect("valid");
        assert_eq!(revealed.key, party.public_key());
        assert_eq!(revealed.event_id, reveal.id);
        assert_eq!(revealed.statement, "I paid the bill");
        // Other tags are the party's business; the window holds both ways, to its edge.
        let mut tags = good_tags(&bot);
        tags.push(tag(&["t", "evidence"]));
        let ahead = event(&party, KIND_REVEAL, tags, "", NOW + WINDOW_SECS);
        assert!(check(&ahead, &bot, Subject::offer(OFFER), "taker", NOW).is_ok());
        let long = "x".repeat(MAX_STATEMENT_BYTES);
        let full = event(&party, KIND_REVEAL, good_tags(&bot), &long, NOW);
        assert!(check(&full, &bot, Subject::offer(OFFER), "taker", NOW).is_ok());
    }

    #[test]
    fn each_rule_broken_once_is_refused_for_that_rule() {
        let (party, bot) = (Keys::generate(), Keys::generate().public_key());
        let other = Keys::generate().public_key();
        let with = |tags: Vec<Tag>| event(&party, KIND_REVEAL, tags, "", NOW);
        let refused = |e: &Event| check(e, &bot, Subject::offer(OFFER), "taker", NOW).unwrap_err();

        // A tampered copy: the statement changed under the original id and signature.
        let mut tampered = event(&party, KIND_REVEAL, good_tags(&bot), "I paid", NOW);
        tampered.content = "I did not pay".to_owned();
        assert_eq!(refused(&tampered), RevealRefusal::BadSignature);
        let mut resigned = tampered.clone();
        resigned.pubkey = other;
        assert_eq!(refused(&resigned), RevealRefusal::BadSignature);

        let registration = event(&party, 29470, good_tags(&bot), "", NOW);
        assert_eq!(refused(&registration), RevealRefusal::WrongKind(29470));

        let wrong_p = RevealRefusal::WrongRecipient { soko: bot.to_hex() };
        let mut tags = good_tags(&bot);
        tags[0] = Tag::public_key(other);
        assert_eq!(refused(&with(tags)), wrong_p);
        let mut tags = good_tags(&bot);
        tags.push(Tag::public_key(other));
        assert_eq!(refused(&with(tags)), wrong_p);
        assert_eq!(refused(&with(good_tags(&bot)[1..].to_vec())), wrong_p);

        let wrong_offer = RevealRefusal::WrongSubject {
            tag: "offer".to_owned(),
            id: OFFER.to_owned(),
        };
        let mut tags = good_tags(&bot);
        tags[1] = tag(&["offer", "offer-other"]);
        assert_eq!(refused(&with(tags)), wrong_offer);
        let mut tags = good_tags(&bot);
        tags.push(tag(&["offer", OFFER]));
        assert_eq!(refused(&with(tags)), wrong_offer);
        let mut tags = good_tags(&bot);
        tags.remove(1);
        assert_eq!(refused(&with(tags)), wrong_offer);

        let wrong_side = RevealRefusal::WrongSide {
            side: "taker".to_owned(),
        };
        let mut tags = good_tags(&bot);
        tags[2] = tag(&["side", "maker"]);
        assert_eq!(refused(&with(tags)), wrong_side);
        let mut tags = good_tags(&bot);
        tags.push(tag(&["side", "maker"]));
        assert_eq!(refused(&with(tags)), wrong_side);
        // A caller asking for a side that is none is refused too, even if the event says it.
        let mut tags = good_tags(&bot);
        tags[2] = tag(&["side", "judge"]);
        assert_eq!(
            check(&with(tags), &bot, Subject::offer(OFFER), "judge", NOW).unwrap_err(),
            RevealRefusal::WrongSide {
                side: "judge".to_owned()
            }
        );

        let old = event(
            &party,
            KIND_REVEAL,
            good_tags(&bot),
            "",
            NOW - WINDOW_SECS - 1,
        );
        assert_eq!(
            refused(&old),
            RevealRefusal::Stale {
                created_at: NOW - WINDOW_SECS - 1,
                now: NOW
            }
        );
        let ahead = event(
            &party,
            KIND_REVEAL,
            good_tags(&bot),
            "",
            NOW + WINDOW_SECS + 1,
        );
        assert!(matches!(refused(&ahead), RevealRefusal::Stale { .. }));

        let long = "é".repeat(MAX_STATEMENT_BYTES / 2 + 1);
        let wordy = event(&party, KIND_REVEAL, good_tags(&bot), &long, NOW);
        assert_eq!(
            refused(&wordy),
            RevealRefusal::TooLong(MAX_STATEMENT_BYTES + 2)
        );
    }

    #[test]
    fn an_order_reveal_names_the_order_and_a_buyer_or_merchant_side() {
        let (party, bot) = (Keys::generate(), Keys::generate().public_key());
        let order_tags = |side: &str| {
            vec![
                Tag::public_key(bot),
                tag(&["order", "42"]),
                tag(&["side", side]),
            ]
        };
        let buyer = event(
            &party,
            KIND_REVEAL,
            order_tags("buyer"),
            "nothing came",
            NOW,
        );
        let revealed = check(&buyer, &bot, Subject::order("42"), "buyer", NOW).expect("valid");
        assert_eq!(revealed.key, party.public_key());
        // An offer's reveal is not an order's, nor the other way round.
        assert_eq!(
            check(&buyer, &bot, Subject::offer("42"), "taker", NOW).unwrap_err(),
            RevealRefusal::WrongSubject {
                tag: "offer".to_owned(),
                id: "42".to_owned()
            }
        );
        let offer = event(&party, KIND_REVEAL, good_tags(&bot), "", NOW);
        assert!(matches!(
            check(&offer, &bot, Subject::order(OFFER), "taker", NOW).unwrap_err(),
            RevealRefusal::WrongSubject { .. }
        ));
        // The other order's reveal, or the other side's, is refused.
        assert!(check(&buyer, &bot, Subject::order("43"), "buyer", NOW).is_err());
        assert_eq!(
            check(&buyer, &bot, Subject::order("42"), "merchant", NOW).unwrap_err(),
            RevealRefusal::WrongSide {
                side: "merchant".to_owned()
            }
        );
        // An offer's sides are no order's.
        let taker = event(&party, KIND_REVEAL, order_tags("taker"), "", NOW);
        assert!(matches!(
            check(&taker, &bot, Subject::order("42"), "taker", NOW).unwrap_err(),
            RevealRefusal::WrongSide { .. }
        ));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let (party, bot) = (Keys::generate(), Keys::generate().public_key());
        let odd_tags = [
            vec![tag(&["p"]), tag(&["offer"]), tag(&["side"])],
            vec![
                tag(&["p", "not hex"]),
                tag(&["offer", ""]),
                tag(&["side", ""]),
            ],
            vec![tag(&["p", &bot.to_hex(), "extra", "more"]), tag(&["offer"])],
            vec![
                tag(&["", ""]),
                tag(&["offer", OFFER, OFFER]),
                tag(&["side", "taker", "x"]),
            ],
            Vec::new(),
        ];
        for tags in odd_tags {
            let e = event(&party, KIND_REVEAL, tags, "\u{0}\u{ffff}", NOW);
            assert!(check(&e, &bot, Subject::offer(OFFER), "taker", NOW).is_err());
            assert!(check(&e, &bot, Subject::offer(""), "", 0).is_err());
            assert!(check(&e, &bot, Subject::offer(OFFER), "taker", u64::MAX).is_err());
        }
        // Nonsense in every field, parsed from JSON as it would arrive in a DM.
        let junk = r#"{"id":"0000000000000000000000000000000000000000000000000000000000000000",
            "pubkey":"79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            "created_at":18446744073709551615,"kind":65535,"tags":[["p"],[""],["side"]],
            "content":"","sig":"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}"#;
        let e = Event::from_json(junk).expect("well-formed JSON of an event");
        assert_eq!(
            check(&e, &bot, Subject::offer(OFFER), "taker", NOW).unwrap_err(),
            RevealRefusal::BadSignature
        );
        // A created_at at the end of time against a clock at zero, and the other way round.
        let late = event(&party, KIND_REVEAL, good_tags(&bot), "", u64::MAX);
        assert!(matches!(
            check(&late, &bot, Subject::offer(OFFER), "taker", 0).unwrap_err(),
            RevealRefusal::Stale { .. }
        ));
        let early = event(&party, KIND_REVEAL, good_tags(&bot), "", 0);
        assert!(matches!(
            check(&early, &bot, Subject::offer(OFFER), "taker", u64::MAX).unwrap_err(),
            RevealRefusal::Stale { .. }
        ));
    }
}
