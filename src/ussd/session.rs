//! One USSD session as soko keeps it, and how a hop's `text` turns into the latest input.
//!
//! Africa's Talking sends every input of the session so far joined by `*` (`""` on the
//! first hop). soko remembers what it already consumed, so the new input is what follows
//! it; a hop whose text is what was consumed is a retry and gets the same screen again.

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};

use super::menu::Menu;
use super::screen::Screen;

/// A session, stored sealed (it may hold a PIN being set and shows buyers' details).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The merchant the phone number belongs to (stored as hex).
    pub merchant: PublicKey,
    /// Where the merchant is.
    pub menu: Menu,
    /// The `text` consumed so far.
    pub consumed: String,
    /// The last screen sent, for retries.
    pub last: Screen,
    /// Unix seconds after which the session is gone.
    pub expires_at: u64,
    /// Wrong PINs and activation codes typed in this session: at `pin_tries` it ends.
    #[serde(default)]
    pub wrong: u32,
}

/// What a hop's `text` means for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// The same text again: a gateway retry; answer the last screen.
    Retry,
    /// A new input.
    Input(String),
    /// A text that does not continue the session (an older hop arriving late): answer the
    /// last screen, change nothing.
    Stale,
}

/// The new input in `text`, given what was consumed.
pub fn latest_input(consumed: &str, text: &str) -> Hop {
    if text == consumed {
        return Hop::Retry;
    }
    if consumed.is_empty() {
        return Hop::Input(text.to_owned());
    }
    match text
        .strip_prefix(consumed)
        .and_then(|rest| rest.strip_prefix('*'))
    {
        Some(input) => Hop::Input(input.to_owned()),
        None => Hop::Stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_input_follows_what_was_consumed() {
        assert_eq!(latest_input("", "1234"), Hop::Input("1234".into()));
        assert_eq!(latest_input("1234", "1234*1"), Hop::Input("1".into()));
        assert_eq!(latest_input("1234*1", "1234*1*"), Hop::Input(String::new()));
        // An input may itself hold `*`: everything after the consumed part is the input.
        assert_eq!(latest_input("1", "1*2*3"), Hop::Input("2*3".into()));
        assert_eq!(latest_input("1234*1", "1234*1"), Hop::Retry);
        assert_eq!(latest_input("", ""), Hop::Retry);
        assert_eq!(latest_input("1234*1", "1234"), Hop::Stale);
        assert_eq!(latest_input("1234*1", "9999*1*2"), Hop::Stale);
        assert_eq!(latest_input("12", "123"), Hop::Stale);
    }

    #[test]
    fn a_session_keeps_its_merchant_as_the_hex_an_older_soko_wrote() {
        let merchant = nostr_sdk::Keys::generate().public_key();
        let session = Session {
            merchant,
            menu: super::super::menu::first(true),
            consumed: String::new(),
            last: Screen::end("bye"),
            expires_at: 1,
            wrong: 0,
        };
        let mut stored = serde_json::to_value(&session).unwrap_or_default();
        assert_eq!(stored["merchant"], serde_json::json!(merchant.to_hex()));
        assert_eq!(
            serde_json::from_value::<Session>(stored.clone()).ok(),
            Some(session)
        );
        stored["merchant"] = serde_json::json!("not a key");
        assert!(serde_json::from_value::<Session>(stored).is_err());
    }
}
