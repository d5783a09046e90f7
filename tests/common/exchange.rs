//! The exchange for tests: registered traders, each trading from a private session of its
//! own (a fresh key), and their notices kept apart from command replies.

use std::collections::VecDeque;
use std::time::Duration;

use nostr_sdk::prelude::*;
use serde_json::{json, Value};

use super::sessions::{embedded_bats, open, register_trader};
use super::{TestSoko, User, REPLY_TIMEOUT};

/// How long a test waits for a notice (the fake Lightning backend settles in about a second,
/// and the exchange's pass runs every second).
pub const NOTICE_TIMEOUT: Duration = Duration::from_secs(20);

/// A registered trader with a session of its own.
pub struct Trader {
    /// The long-term registered key (revealed only in a dispute).
    pub registered: User,
    /// The session's fresh key.
    pub user: User,
    /// The session id.
    pub session: String,
    /// Notices received while waiting for replies.
    notices: VecDeque<Value>,
    /// Plain-text DMs (session refunds) received meanwhile.
    texts: VecDeque<String>,
}

impl Trader {
    /// Registers a trader, gets it a BAT and opens a session from a fresh key.
    pub async fn join(soko: &TestSoko) -> Self {
        Self::join_as(soko, Keys::generate(), None).await
    }

    /// Registers `keys` as a trader and opens a session with a BAT of `mint` (soko's
    /// embedded dev mint when `None`).
    pub async fn join_as(
        soko: &TestSoko,
        keys: Keys,
        mint: Option<&soko::devmint::DevMint>,
    ) -> Self {
        let mut registered = User::with_keys(keys, &[soko.relay_url()]).await;
        register_trader(soko, &mut registered).await;
        Self::with_session(soko, registered, mint).await
    }

    /// A new session for the same registered trader.
    pub async fn with_session(
        soko: &TestSoko,
        registered: User,
        mint: Option<&soko::devmint::DevMint>,
    ) -> Self {
        let bat = match mint {
            None => embedded_bats(soko, &registered.keys, 1).await.remove(0),
            Some(mint) => {
                let cat = super::auth::login(&super::auth::token_url(mint), &registered.keys).await;
                super::auth::bats(mint.url(), &cat, 1).await.remove(0)
            }
        };
        let mut user = User::connect(&[soko.relay_url()]).await;
        let session = open(soko, &mut user, &bat).await;
        Self {
            registered,
            user,
            session,
            notices: VecDeque::new(),
            texts: VecDeque::new(),
        }
    }

    /// Sends `cmd` in the session; the reply (notices arriving meanwhile are kept).
    pub async fn ask(&mut self, soko: &TestSoko, cmd: &str, args: Value) -> Value {
        let request = json!({"v": 1, "cmd": cmd, "args": args, "session": self.session});
        self.user.send_nip17(soko.bot(), &request.to_string()).await;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let dm = self.user.next_dm(left).await.expect("a reply");
            match serde_json::from_str::<Value>(&dm.content) {
                Ok(value) if value.get("notice").is_some() => self.notices.push_back(value),
                Ok(value) => return value,
                Err(_) => self.texts.push_back(dm.content),
            }
        }
    }

    /// `ask`, which must succeed: its result.
    pub async fn ok(&mut self, soko: &TestSoko, cmd: &str, args: Value) -> Value {
        let reply = self.ask(soko, cmd, args).await;
        assert_eq!(reply["ok"], true, "{cmd}: {reply}");
        reply["result"].clone()
    }

    /// The next notice about `offer` in `state`, skipping others about it.
    pub async fn notice(&mut self, offer: &str, state: &str) -> Value {
        self.notice_with(offer, state, "state").await
    }

    /// The next notice about `offer` in `state` that has `field` (notices are gift wraps,
    /// and may arrive in any order).
    pub async fn notice_with(&mut self, offer: &str, state: &str, field: &str) -> Value {
        let wanted =
            |n: &Value| n["offer"] == offer && n["state"] == state && n.get(field).is_some();
        if let Some(i) = self.notices.iter().position(wanted) {
            return self.notices.remove(i).expect("found");
        }
        let deadline = tokio::time::Instant::now() + NOTICE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(dm) = self.user.next_dm(left).await else {
                panic!("no {state} notice for {offer}; kept: {:?}", self.notices);
            };
            let Ok(value) = serde_json::from_str::<Value>(&dm.content) else {
                self.texts.push_back(dm.content);
                continue;
            };
            if wanted(&value) {
                return value;
            }
            self.notices.push_back(value);
        }
    }

    /// The next plain-text DM (a session refund), received meanwhile or within the timeout.
    pub async fn text(&mut self) -> String {
        if let Some(text) = self.texts.pop_front() {
            return text;
        }
        let deadline = tokio::time::Instant::now() + NOTICE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let dm = self.user.next_dm(left).await.expect("a text DM");
            if serde_json::from_str::<Value>(&dm.content).is_err() {
                return dm.content;
            }
            if let Ok(value) = serde_json::from_str::<Value>(&dm.content) {
                self.notices.push_back(value);
            }
        }
    }

    /// A reveal event for `offer` signed by the registered key.
    pub fn reveal(&self, soko: &TestSoko, offer: &str, side: &str, statement: &str) -> Value {
        reveal_by(&self.registered.keys, soko, offer, side, statement)
    }
}

/// A reveal event (kind 29471) for `offer` signed by `keys`.
pub fn reveal_by(keys: &Keys, soko: &TestSoko, offer: &str, side: &str, statement: &str) -> Value {
    let event = EventBuilder::new(Kind::Custom(29471), statement)
        .tags([
            Tag::public_key(soko.bot()),
            Tag::parse(["offer", offer]).expect("tag"),
            Tag::parse(["side", side]).expect("tag"),
        ])
        .sign_with_keys(keys)
        .expect("signed");
    serde_json::to_value(&event).expect("json")
}

/// A bill on M-Pesa of `fiat` KES for `sats`.
pub fn offer_args(fiat: &str, sats: u64) -> Value {
    json!({
        "fiat_amount": fiat,
        "currency": "KES",
        "provider": "mpesa",
        "bill": {"kind": "paybill", "reference": "888880", "note": "account 12345"},
        "sats": sats,
    })
}

/// A config with blind auth on (the exchange runs in sessions).
pub fn exchange_config(config: &mut soko::Config) {
    super::sessions::with_auth(config);
}

/// The sats in session `id`'s wallet as soko counts them.
pub async fn session_balance(soko: &TestSoko, trader: &mut Trader) -> u64 {
    let status = trader.ok(soko, "session_status", json!({})).await;
    status["balance_sat"].as_u64().expect("a balance")
}

/// A whole trade: `maker` offers with `create`, `taker` claims with `claim` (plus the
/// offer), pays the bill, the maker confirms. The offer id and each side's COMPLETED notice.
pub async fn whole_trade(
    soko: &TestSoko,
    maker: &mut Trader,
    taker: &mut Trader,
    create: Value,
    mut claim: Value,
) -> (String, Value, Value) {
    let created = maker.ok(soko, "offer_create", create).await;
    let offer = created["offer"].as_str().expect("an offer").to_owned();
    maker.notice(&offer, "INVOICE_PAID").await;
    claim["offer"] = json!(offer);
    taker.ok(soko, "offer_claim", claim).await;
    taker.notice(&offer, "TAKER_BOND_PAID").await;
    taker
        .ok(
            soko,
            "receipt_submit",
            json!({"offer": offer, "text": "paid"}),
        )
        .await;
    maker.notice(&offer, "RECEIPT_SUBMITTED").await;
    maker
        .ok(soko, "receipt_confirm", json!({"offer": offer}))
        .await;
    let to_maker = maker.notice(&offer, "COMPLETED").await;
    let to_taker = taker.notice(&offer, "COMPLETED").await;
    (offer, to_maker, to_taker)
}
