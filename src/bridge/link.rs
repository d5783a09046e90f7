//! The bridge's Nostr side: one client on soko's relays. Hops go out as NIP-17 gift wraps to
//! soko's bot key; replies and notices come back the same way and are accepted only when the
//! seal is signed by soko's key.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use nostr_sdk::prelude::*;
use tokio::sync::{broadcast::error::RecvError, watch};
use tokio::task::JoinSet;

use super::pending::{Pending, Reply};
use super::sms::SmsSender;
use super::BridgeError;
use crate::outbound::{seal_dm, Scheme};
use crate::proto::ussd::{Notice, NoticeBody, UssdScreen};
use crate::proto::PROTOCOL_VERSION;

/// How long start waits for a first relay connection (the client keeps trying after).
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Wrap ids remembered to drop the copies other relays deliver.
const SEEN_CAPACITY: usize = 4096;
/// Notices older than the bridge's start by more than this are not sent: a relay that
/// replays history must not text merchants twice. Covers clock skew between machines.
const NOTICE_SLACK: Duration = Duration::from_secs(300);
/// How long shutdown waits for SMS calls in flight.
const SMS_DRAIN: Duration = Duration::from_secs(5);

/// The connection to soko.
#[derive(Debug, Clone)]
pub struct Link {
    client: Client,
    keys: Keys,
    soko: PublicKey,
}

/// What a message from soko carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Incoming {
    /// A reply to the hop with request id `re`.
    Reply { re: String, reply: Reply },
    /// A notice.
    Notice(NoticeBody),
    /// Anything else, with why.
    Unknown(&'static str),
}

impl Link {
    /// Connects to `relays` and subscribes to the gift wraps addressed to the bridge.
    pub async fn connect(
        keys: Keys,
        soko: PublicKey,
        relays: &[String],
    ) -> Result<Self, BridgeError> {
        if relays.is_empty() {
            return Err(BridgeError::NoRelay);
        }
        let client = Client::builder().signer(keys.clone()).build();
        for url in relays {
            client
                .add_relay(url.as_str())
                .await
                .map_err(|e| BridgeError::Relay {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        }
        client.connect().await;
        client.wait_for_connection(CONNECT_WAIT).await;
        // Live messages only (limit 0): replies matter only while a hop waits, and replaying
        // stored notices would text merchants again after every restart. The client
        // re-sends this subscription whenever it reconnects.
        let filter = Filter::new()
            .kind(Kind::GiftWrap)
            .pubkey(keys.public_key())
            .limit(0);
        let failure = match client.subscribe(filter, None).await {
            Ok(output) if !output.success.is_empty() => None,
            Ok(_) => Some("no relay took the subscription".to_owned()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = failure {
            client.shutdown().await;
            return Err(BridgeError::Relay {
                url: relays.join(" "),
                reason,
            });
        }
        Ok(Self { client, keys, soko })
    }

    /// Seals `content` to soko and publishes it; succeeds when at least one relay took it.
    pub async fn send(&self, content: &str) -> Result<(), String> {
        let wrap = seal_dm(&self.keys, self.soko, Scheme::Nip17, content, None).await?;
        let output = self
            .client
            .send_event(&wrap)
            .await
            .map_err(|e| e.to_string())?;
        if output.success.is_empty() {
            let reasons: Vec<&String> = output.failed.values().collect();
            return Err(format!("no relay accepted the hop: {reasons:?}"));
        }
        Ok(())
    }

    /// Routes replies to waiting hops and notices to `sms` until `stop` is set.
    pub async fn listen(self, pending: Pending, sms: SmsSender, mut stop: watch::Receiver<bool>) {
        let mut notifications = self.client.notifications();
        let started = Timestamp::now();
        let mut seen = Seen::default();
        let mut sms_tasks = JoinSet::new();
        while !*stop.borrow() {
            tokio::select! {
                _ = stop.changed() => break,
                Some(_) = sms_tasks.join_next(), if !sms_tasks.is_empty() => {}
                notification = notifications.recv() => match notification {
                    Ok(RelayPoolNotification::Event { event, .. }) => {
                        if event.kind != Kind::GiftWrap || !seen.insert(event.id) {
                            continue;
                        }
                        if let Some(sms_notice) = self.open(&event, &pending, started).await {
                            let sms = sms.clone();
                            sms_tasks.spawn(async move { sms.deliver(&sms_notice).await });
                        }
                    }
                    Ok(RelayPoolNotification::Shutdown) | Err(RecvError::Closed) => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "bridge fell behind its relays; some messages were dropped");
                    }
                }
            }
        }
        let drained = tokio::time::timeout(SMS_DRAIN, async {
            while sms_tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("SMS calls still running at shutdown were abandoned");
        }
        self.client.shutdown().await;
    }

    /// Opens a wrap: hands a reply to its hop, returns an SMS to send, drops the rest.
    async fn open(
        &self,
        event: &Event,
        pending: &Pending,
        started: Timestamp,
    ) -> Option<crate::proto::ussd::SmsNotice> {
        let gift = match UnwrappedGift::from_gift_wrap(&self.keys, event).await {
            Ok(gift) => gift,
            Err(e) => {
                tracing::debug!(wrap = %event.id, error = %e, "gift wrap does not open");
                return None;
            }
        };
        if gift.sender != self.soko {
            let sender = gift.sender.to_bech32().unwrap_or_default();
            tracing::warn!(%sender, "ignored a message from a key that is not soko's");
            return None;
        }
        if gift.rumor.kind != Kind::PrivateDirectMessage {
            tracing::warn!(kind = %gift.rumor.kind, "ignored a message from soko of an unexpected kind");
            return None;
        }
        match classify(&gift.rumor.content) {
            Incoming::Reply { re, reply } => {
                let hop = short(&re);
                if pending.deliver(&re, &reply) == 0 {
                    tracing::debug!(%hop, "reply for no waiting hop (late, or a duplicate)");
                }
                None
            }
            Incoming::Notice(NoticeBody::Sms(sms)) => {
                if gift.rumor.created_at + NOTICE_SLACK < started {
                    tracing::info!("skipped an SMS notice from before this bridge started");
                    return None;
                }
                Some(sms)
            }
            Incoming::Unknown(why) => {
                tracing::warn!(
                    why,
                    "ignored a message from soko the bridge does not understand"
                );
                None
            }
        }
    }
}

/// The first characters of a request id, enough to follow a hop through the logs. Never the
/// whole id: with the session id, it would let a log reader test guesses of the inputs.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Reads a message from soko. Replies are read loosely (`re`, `ok`, `result`, `error.code`)
/// so an error code newer than this build is still an error, not an unreadable message.
fn classify(content: &str) -> Incoming {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(content) else {
        return Incoming::Unknown("not a JSON object");
    };
    if fields.get("v").and_then(serde_json::Value::as_u64) != Some(u64::from(PROTOCOL_VERSION)) {
        return Incoming::Unknown("unsupported envelope version");
    }
    if fields.contains_key("notice") {
        return match serde_json::from_value::<Notice>(serde_json::Value::Object(fields)) {
            Ok(notice) => Incoming::Notice(notice.body),
            Err(_) => Incoming::Unknown("unknown or malformed notice"),
        };
    }
    let (Some(re), Some(ok)) = (
        fields.get("re").and_then(serde_json::Value::as_str),
        fields.get("ok").and_then(serde_json::Value::as_bool),
    ) else {
        return Incoming::Unknown("neither a reply nor a notice");
    };
    let reply = if ok {
        fields
            .get("result")
            .cloned()
            .and_then(|result| serde_json::from_value::<UssdScreen>(result).ok())
            .map_or(Reply::Unreadable, Reply::Screen)
    } else {
        let code = fields
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown");
        Reply::Refused(code.to_owned())
    };
    Incoming::Reply {
        re: re.to_owned(),
        reply,
    }
}

/// A bounded set of recently seen wrap ids.
#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<EventId>,
    order: VecDeque<EventId>,
}

impl Seen {
    /// True when `id` is new.
    fn insert(&mut self, id: EventId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ussd::SmsNotice;

    #[test]
    fn replies_and_notices_are_told_apart() {
        assert_eq!(
            classify(r#"{"v":1,"re":"ab","ok":true,"result":{"screen":"1 Orders","end":false}}"#),
            Incoming::Reply {
                re: "ab".into(),
                reply: Reply::Screen(UssdScreen {
                    screen: "1 Orders".into(),
                    end: false
                })
            }
        );
        assert_eq!(
            classify(
                r#"{"v":1,"re":"ab","ok":false,"error":{"code":"some_new_code","message":"x"}}"#
            ),
            Incoming::Reply {
                re: "ab".into(),
                reply: Reply::Refused("some_new_code".into())
            }
        );
        assert_eq!(
            classify(r#"{"v":1,"re":"ab","ok":true,"result":{"pong":true}}"#),
            Incoming::Reply {
                re: "ab".into(),
                reply: Reply::Unreadable
            }
        );
        assert_eq!(
            classify(r#"{"v":1,"notice":"sms","args":{"phone":"+254711000111","text":"hi"}}"#),
            Incoming::Notice(NoticeBody::Sms(SmsNotice {
                phone: "+254711000111".into(),
                text: "hi".into()
            }))
        );
    }

    #[test]
    fn anything_else_is_unknown() {
        for content in [
            "hello",
            "[1]",
            r#"{"v":2,"re":"ab","ok":true,"result":{"screen":"x","end":true}}"#,
            r#"{"v":1,"notice":"fax","args":{}}"#,
            r#"{"v":1,"cmd":"ping"}"#,
        ] {
            assert!(
                matches!(classify(content), Incoming::Unknown(_)),
                "{content}"
            );
        }
    }

    #[test]
    fn seen_ids_are_bounded() {
        let mut seen = Seen::default();
        let id = |n: u64| EventId::from_byte_array(sha256_bytes(n));
        assert!(seen.insert(id(0)));
        assert!(!seen.insert(id(0)));
        for n in 1..=SEEN_CAPACITY as u64 {
            seen.insert(id(n));
        }
        assert_eq!(seen.ids.len(), SEEN_CAPACITY);
        assert!(seen.insert(id(0)), "the oldest id was forgotten");
    }

    fn sha256_bytes(n: u64) -> [u8; 32] {
        use nostr_sdk::hashes::{sha256, Hash};
        sha256::Hash::hash(&n.to_be_bytes()).to_byte_array()
    }

    #[test]
    fn short_ids_never_panic() {
        assert_eq!(short("0123456789abcdef"), "01234567");
        assert_eq!(short("ab"), "ab");
    }
}
