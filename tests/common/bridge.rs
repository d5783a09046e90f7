//! A fake USSD bridge: a nostr-sdk client holding a key listed in soko's `[ussd] bridges`
//! that sends `ussd_hop` gift wraps the way `soko-ussd` does and reads the screens back.

use nostr_sdk::hashes::{sha256, Hash};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};

use super::{TestSoko, User, REPLY_TIMEOUT};

/// How the bridge names a hop's request: a retry of the same hop has the same id.
pub enum HopIds {
    /// A hash of the session and the whole text.
    ByText,
    /// What `soko-ussd` sends (kinds/ussd.md): a hash of the session and the hop's position,
    /// never its text (which holds the PIN).
    ByPosition,
}

/// A USSD bridge: its own key, listed in soko's `[ussd] bridges`.
pub struct Bridge {
    pub user: User,
    pub bot: PublicKey,
    /// Notices soko pushed unasked (SMS requests).
    pub notices: Vec<Value>,
    ids: HopIds,
}

/// What a hop came back with.
#[derive(Debug)]
pub struct Shown {
    pub screen: String,
    pub end: bool,
}

impl Bridge {
    /// Connects with `keys` to `soko`'s relay; hops are named [`HopIds::ByText`].
    pub async fn connect(keys: Keys, soko: &TestSoko) -> Self {
        Self {
            user: User::with_keys(keys, &[soko.relay_url()]).await,
            bot: soko.bot(),
            notices: Vec::new(),
            ids: HopIds::ByText,
        }
    }

    /// The same bridge naming its hops by `ids`.
    pub fn naming(self, ids: HopIds) -> Self {
        Self { ids, ..self }
    }

    /// The [`HopIds::ByText`] request id.
    pub fn request_id(session: &str, text: &str) -> String {
        let hash = sha256::Hash::hash(format!("{session}\n{text}").as_bytes());
        hash.to_string()[..32].to_owned()
    }

    /// The [`HopIds::ByPosition`] request id.
    pub fn position_id(session: &str, text: &str) -> String {
        let position = if text.is_empty() {
            0
        } else {
            text.split('*').count()
        };
        sha256::Hash::hash(format!("soko-ussd-hop\n{session}\n{position}").as_bytes()).to_string()
            [..32]
            .to_owned()
    }

    /// Sends one hop with an explicit request id and deadline; returns the response.
    pub async fn send(
        &mut self,
        id: &str,
        session: &str,
        phone: &str,
        text: &str,
        deadline_ms: u64,
    ) -> Value {
        let request = json!({"v":1,"id":id,"cmd":"ussd_hop","args":{
            "session":session,"phone":phone,"service_code":"*384*7#","network":"63902",
            "text":text,"deadline_ms":deadline_ms}});
        self.user.send_nip17(self.bot, &request.to_string()).await;
        loop {
            let dm = self
                .user
                .next_dm(REPLY_TIMEOUT)
                .await
                .expect("soko answers the hop");
            assert!(dm.nip17, "answered as a gift wrap");
            let value = dm.json();
            if value.get("notice").is_some() {
                self.notices.push(value);
            } else if value["re"] == id {
                return value;
            }
        }
    }

    /// One hop as the gateway sends it, within its deadline.
    pub async fn hop(&mut self, session: &str, phone: &str, text: &str) -> Shown {
        let id = match self.ids {
            HopIds::ByText => Self::request_id(session, text),
            HopIds::ByPosition => Self::position_id(session, text),
        };
        let response = self.send(&id, session, phone, text, in_8s()).await;
        shown(&response)
    }

    /// Waits for an SMS notice.
    pub async fn notice(&mut self) -> Value {
        if let Some(notice) = self.notices.pop() {
            return notice;
        }
        let dm = self
            .user
            .next_dm(REPLY_TIMEOUT)
            .await
            .expect("an SMS notice");
        dm.json()
    }
}

/// The screen of a successful hop response; it must fit the handset with its `CON `/`END `.
pub fn shown(response: &Value) -> Shown {
    assert_eq!(response["ok"], true, "{response}");
    let screen = response["result"]["screen"]
        .as_str()
        .expect("a screen")
        .to_owned();
    let end = response["result"]["end"].as_bool().expect("end");
    let prefixed = format!("{}{screen}", if end { "END " } else { "CON " });
    assert!(
        prefixed.chars().count() <= 182,
        "within the handset's limit: {prefixed}"
    );
    Shown { screen, end }
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A hop deadline 8 s from now, as gateways give.
pub fn in_8s() -> u64 {
    unix_ms() + 8_000
}

/// soko with `bridge` trusted and `adjust` applied.
pub async fn soko_with_bridge(bridge: &Keys, adjust: impl FnOnce(&mut soko::Config)) -> TestSoko {
    let key = bridge.public_key();
    TestSoko::start_with(|c| {
        c.ussd.bridges = vec![key];
        adjust(c);
    })
    .await
}
