//! The USSD hop protocol between the `soko-ussd` bridge and soko (kinds/ussd.md).
//!
//! A hop travels as the `ussd_hop` command in soko's command envelope, inside a NIP-17 gift
//! wrap from the bridge's own key to soko's bot key; the reply is the usual response
//! envelope whose `result` is a [`UssdScreen`]. soko pushes [`Notice`]s to bridges the
//! same way, without a request id.

use serde::{Deserialize, Serialize};

/// The longest screen a handset shows, counted with the `CON `/`END ` prefix.
pub const SCREEN_LIMIT: usize = 182;

/// `ussd_hop` arguments: one gateway callback, as the bridge received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UssdHopArgs {
    /// The gateway's session id (Africa's Talking `sessionId`).
    pub session: String,
    /// The caller's number, E.164 (`phoneNumber`).
    pub phone: String,
    /// The code dialled (`serviceCode`).
    pub service_code: String,
    /// The mobile network (`networkCode`), when the gateway gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Every input of the session so far joined by `*` (`text`); empty on the first hop.
    pub text: String,
    /// Unix milliseconds after which the bridge has already answered the gateway: soko must
    /// not act on a hop it reads later.
    pub deadline_ms: u64,
}

/// `ussd_reset` arguments (operator only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UssdResetArgs {
    /// The merchant (npub or hex).
    pub merchant: String,
    /// Also forget the PIN and issue a new activation code (a merchant who forgot its PIN,
    /// lost its phone, or never got its code).
    #[serde(default)]
    pub new_code: bool,
}

/// `ussd_reset` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UssdReset {
    /// The merchant (npub).
    pub merchant: String,
    /// Always true: the lock and the wrong-PIN counts are cleared.
    pub unlocked: bool,
    /// The new one-time activation code, with `new_code`: shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_code: Option<String>,
}

/// `ussd_hop` result: the next screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UssdScreen {
    /// The text shown, without the `CON `/`END ` prefix; with the prefix it fits
    /// [`SCREEN_LIMIT`].
    pub screen: String,
    /// True when the session ends with this screen (`END`), false when it waits for input
    /// (`CON`).
    pub end: bool,
}

/// A message soko pushes to a bridge unasked: `{"v":1,"notice":"sms","args":{…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", content = "args", rename_all = "snake_case")]
pub enum NoticeBody {
    /// Tell a merchant something by SMS (e.g. a new paid order).
    Sms(SmsNotice),
}

/// The envelope of a [`NoticeBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Protocol version, 1.
    pub v: u32,
    /// The notice.
    #[serde(flatten)]
    pub body: NoticeBody,
}

/// An SMS to send to a merchant's phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsNotice {
    /// The merchant's number, E.164.
    pub phone: String,
    /// The message, at most 160 characters.
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_have_their_wire_shape() {
        let notice = Notice {
            v: 1,
            body: NoticeBody::Sms(SmsNotice {
                phone: "+254700000001".into(),
                text: "Order #3 paid".into(),
            }),
        };
        let json = serde_json::to_string(&notice).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"v":1,"notice":"sms","args":{"phone":"+254700000001","text":"Order #3 paid"}}"#
        );
        assert_eq!(serde_json::from_str::<Notice>(&json).ok(), Some(notice));
    }
}
