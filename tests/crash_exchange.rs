//! A whole exchange trade cut by a crash of the real binary (`SOKO_FAILPOINT`, see
//! `src/failpoint.rs`) at each point between its steps: soko restarts without the point, the
//! traders go on from where the trade stands (re-sending nothing soko accepted), and at the
//! end the money is all there, from the mint's side and soko's: what the mint issued is what
//! the two session wallets and soko's fee wallet hold, the taker got the escrow once, every
//! transfer is done and the book says `success`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use common::binary::Binary;
use common::{outstanding_at, User, REPLY_TIMEOUT};
use nostr_sdk::prelude::*;
use serde_json::{json, Value};
use soko::exchange::OfferRecord;

/// How long one step may take, restart included (the binary starts in a few seconds, the
/// fake Lightning backend settles in about one, the exchange's pass runs every second).
const STEP_TIMEOUT: Duration = Duration::from_secs(45);

/// The registration event kind (`kinds/agents.md`).
const REGISTRATION_KIND: u16 = 29470;

/// A registered trader in a BAT session of its own, with every DM it got (each once).
struct Trader {
    keys: Keys,
    user: User,
    session: String,
    seen: HashSet<EventId>,
    inbox: VecDeque<Value>,
    /// Requests sent so far.
    sent: u32,
}

impl Trader {
    /// Registers `registered` at soko through an operator's invite, logs it in at the mint's
    /// issuer for a BAT and opens a session with it from a fresh key.
    async fn join(
        soko: &Binary,
        bot: PublicKey,
        mint: &soko::devmint::DevMint,
        registered: Keys,
    ) -> Self {
        let created =
            soko::operator::call(&soko.config(), "invite_create", json!({"role": "trader"}))
                .await
                .expect("soko answers");
        assert!(created.ok, "{created:?}");
        let code = created.result.expect("a code")["code"]
            .as_str()
            .expect("a code")
            .to_owned();
        let event = EventBuilder::new(Kind::Custom(REGISTRATION_KIND), "")
            .tags([
                Tag::parse(["invite", code.as_str()]).unwrap(),
                Tag::parse(["role", "trader"]).unwrap(),
                Tag::public_key(bot),
            ])
            .sign_with_keys(&registered)
            .unwrap();
        let mut long_term = User::with_keys(registered.clone(), &[soko.relay()]).await;
        let reply = long_term
            .ask_nip17(
                bot,
                &json!({"cmd": "register", "args": {"event": event}}).to_string(),
            )
            .await
            .json();
        assert_eq!(reply["result"]["role"], "trader", "{reply}");
        long_term.client.shutdown().await;

        let cat = common::auth::login(&common::auth::token_url(mint), &registered).await;
        let bat = common::auth::bats(mint.url(), &cat, 1).await.remove(0);
        let keys = Keys::generate();
        let mut user = User::with_keys(keys.clone(), &[soko.relay()]).await;
        let opened = user
            .ask_nip17(
                bot,
                &json!({"v": 1, "cmd": "open_session", "args": {"bat": bat.to_string()}})
                    .to_string(),
            )
            .await
            .json();
        let session = opened["result"]["session"]
            .as_str()
            .unwrap_or_else(|| panic!("a session: {opened}"))
            .to_owned();
        Self {
            keys,
            user,
            session,
            seen: HashSet::new(),
            inbox: VecDeque::new(),
            sent: 0,
        }
    }

    /// Sends `cmd` in the session: the request's id, which its reply names (`re`).
    async fn send(&mut self, bot: PublicKey, cmd: &str, args: Value) -> String {
        self.sent += 1;
        let id = format!("{cmd}-{}", self.sent);
        let request = json!({"v": 1, "id": id, "cmd": cmd, "args": args, "session": self.session});
        self.user.send_nip17(bot, &request.to_string()).await;
        id
    }

    /// Takes in what arrived within `wait`; a DM seen before (the relay sends every stored
    /// one again to a new connection) is dropped.
    async fn pump(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(dm) = self
            .user
            .next_dm(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            if !self.seen.insert(dm.event_id) {
                continue;
            }
            if let Ok(value) = serde_json::from_str::<Value>(&dm.content) {
                self.inbox.push_back(value);
            }
        }
    }

    /// The first message kept that `wanted` picks, taken out.
    fn take(&mut self, wanted: &dyn Fn(&Value) -> bool) -> Option<Value> {
        let i = self.inbox.iter().position(wanted)?;
        self.inbox.remove(i)
    }

    async fn reconnect(&mut self, relay: &RelayUrl) {
        self.user.client.shutdown().await;
        self.user = User::with_keys(self.keys.clone(), std::slice::from_ref(relay)).await;
    }
}

#[derive(Clone, Copy)]
enum Who {
    Maker,
    Taker,
}

/// A trade between two traders on the binary, which may crash at `point` once.
struct Run {
    soko: Binary,
    bot: PublicKey,
    maker: Trader,
    taker: Trader,
    point: &'static str,
    crashes: u32,
}

/// An offer's amounts as `offer_create` gave them, and the maker's `invoice_sat`.
struct Amounts(Value);

impl Amounts {
    fn sat(&self, name: &str) -> u64 {
        self.0[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {}", self.0))
    }

    /// What the taker's bond invoice asks.
    fn taker_invoice(&self) -> u64 {
        self.sat("taker_bond") + self.sat("taker_fee")
    }
}

/// What a [`Run`] needs kept alive: the mint its traders log in at, and soko's data dir.
struct Parts {
    mint: soko::devmint::DevMint,
    _mint_dir: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Run {
    /// soko's binary, to crash at `point` once, beside an external auth mint; a maker
    /// registered with `maker_keys` and a taker, each in a session.
    async fn start(point: &'static str, maker_keys: &Keys) -> (Self, Parts) {
        let taker_keys = Keys::generate();
        let (mint, mint_dir) =
            common::auth::external_auth_mint([maker_keys.public_key(), taker_keys.public_key()])
                .await;
        let dir = tempfile::tempdir().unwrap();
        let mut soko = Binary::in_dir(dir.path(), mint.url());
        soko.start_failing_at(point).await;
        let bot = soko::identity::bot_keys(&dir.path().join("data"))
            .unwrap()
            .public_key();
        let maker = Trader::join(&soko, bot, &mint, maker_keys.clone()).await;
        let taker = Trader::join(&soko, bot, &mint, taker_keys).await;
        let run = Self {
            soko,
            bot,
            maker,
            taker,
            point,
            crashes: 0,
        };
        let parts = Parts {
            mint,
            _mint_dir: mint_dir,
            dir,
        };
        (run, parts)
    }

    fn trader(&mut self, who: Who) -> &mut Trader {
        match who {
            Who::Maker => &mut self.maker,
            Who::Taker => &mut self.taker,
        }
    }

    async fn send(&mut self, who: Who, cmd: &str, args: Value) -> String {
        let bot = self.bot;
        self.trader(who).send(bot, cmd, args).await
    }

    /// A crash at the point: soko restarts without it, and the traders reconnect.
    async fn restart_if_crashed(&mut self) {
        if !self.soko.stopped_at_failpoint() {
            return;
        }
        self.crashes += 1;
        self.soko.start().await;
        let relay = self.soko.relay();
        self.maker.reconnect(&relay).await;
        self.taker.reconnect(&relay).await;
    }

    /// The next message to `who` that `wanted` picks, soko restarted meanwhile if it crashed.
    async fn wait_for(&mut self, who: Who, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(found) = self.trader(who).take(&wanted) {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                let (point, crashes) = (self.point, self.crashes);
                panic!(
                    "no {what} (crash at {point}, {crashes} crash(es)); kept: {:?}",
                    self.trader(who).inbox
                );
            }
            self.restart_if_crashed().await;
            self.trader(who).pump(Duration::from_millis(300)).await;
        }
    }

    /// The reply to the command `who` sent last (a command soko took before a crash is
    /// handled again at the restart: its reply may then be a refusal of the step it did).
    async fn reply(&mut self, who: Who, id: &str) -> Value {
        let re = id.to_owned();
        self.wait_for(who, &format!("reply to {id}"), move |v| {
            v.get("ok").is_some() && v["re"] == re.as_str()
        })
        .await
    }

    /// `who`'s notice about `offer` in `state`.
    async fn notice(&mut self, who: Who, offer: &str, state: &str) -> Value {
        let (offer, state_owned) = (offer.to_owned(), state.to_owned());
        self.wait_for(who, &format!("{state} notice"), move |v| {
            v.get("notice").is_some()
                && v["offer"] == offer.as_str()
                && v["state"] == state_owned.as_str()
        })
        .await
    }

    /// Sends `cmd` once and waits for its reply.
    async fn ask(&mut self, who: Who, cmd: &str, args: Value) -> Value {
        let id = self.send(who, cmd, args).await;
        self.reply(who, &id).await
    }

    /// The maker's offer of 20000 sat for an M-Pesa bill, paid and listed: its id, and its
    /// amounts with the maker's `invoice_sat`.
    async fn listed_offer(&mut self) -> (String, Amounts) {
        let created = self
            .ask(
                Who::Maker,
                "offer_create",
                json!({
                    "fiat_amount": "1500",
                    "currency": "KES",
                    "provider": "mpesa",
                    "bill": {"kind": "paybill", "reference": "888880", "note": "account 12345"},
                    "sats": 20_000,
                }),
            )
            .await;
        assert_eq!(created["ok"], true, "{created}");
        let offer = created["result"]["offer"].as_str().unwrap().to_owned();
        let mut amounts = created["result"]["amounts"].clone();
        amounts["invoice_sat"] = created["result"]["invoice_sat"].clone();
        self.notice(Who::Maker, &offer, "INVOICE_PAID").await;
        (offer, Amounts(amounts))
    }

    /// `who`'s session balance as soko counts it.
    async fn balance(&mut self, who: Who) -> u64 {
        let status = self.ask(who, "session_status", json!({})).await;
        assert_eq!(status["ok"], true, "{status}");
        status["result"]["balance_sat"].as_u64().expect("a balance")
    }
}

/// The latest book event for `offer` on soko's relay.
async fn book_status(relay: &RelayUrl, bot: PublicKey, offer: &str) -> Option<String> {
    let reader = User::connect(std::slice::from_ref(relay)).await;
    let events = reader
        .client
        .fetch_events(
            Filter::new()
                .author(bot)
                .kind(Kind::Custom(38383))
                .identifier(offer),
            Duration::from_secs(3),
        )
        .await
        .expect("fetch events");
    reader.client.shutdown().await;
    let latest = events.into_iter().max_by_key(|e| e.created_at)?;
    latest
        .tags
        .iter()
        .find(|t| t.kind().to_string() == "s")
        .and_then(|t| t.content())
        .map(str::to_owned)
}

async fn trade_survives_a_crash_at(point: &'static str) {
    let maker_keys = Keys::generate();
    let (mut run, parts) = Run::start(point, &maker_keys).await;
    let (mint, bot, data_dir) = (&parts.mint, run.bot, parts.dir.path().join("data"));
    use Who::{Maker, Taker};

    let (offer, amounts) = run.listed_offer().await;
    let sat = |name: &str| amounts.sat(name);
    let (maker_invoice, taker_invoice) = (amounts.sat("invoice_sat"), amounts.taker_invoice());

    // A claim soko took before a crash is not claimed again: the bond notice tells.
    run.ask(Taker, "offer_claim", json!({"offer": offer})).await;
    let bond_paid = run.notice(Taker, &offer, "TAKER_BOND_PAID").await;
    assert_eq!(bond_paid["bill"]["reference"], "888880", "{bond_paid}");
    // Whatever crashed, the trade holds the taker's session: it cannot walk off with its
    // bond, nor can its session end under the escrow coming to it.
    let close = run.ask(Taker, "close_session", json!({})).await;
    assert_eq!(
        close["error"]["code"], "busy",
        "the taker left mid-trade after a crash at {point}: {close}"
    );

    run.ask(
        Taker,
        "receipt_submit",
        json!({"offer": offer, "text": "paid"}),
    )
    .await;
    run.notice(Maker, &offer, "RECEIPT_SUBMITTED").await;
    run.ask(Maker, "receipt_confirm", json!({"offer": offer}))
        .await;
    let to_taker = run.notice(Taker, &offer, "COMPLETED").await;
    assert_eq!(
        to_taker["you_get_sat"].as_u64(),
        Some(sat("escrow") + sat("taker_bond")),
        "{to_taker}"
    );
    run.notice(Maker, &offer, "COMPLETED").await;
    assert!(
        run.crashes == 1,
        "soko crashed {} times at {point}",
        run.crashes
    );

    // The transfers a crash interrupted finish on the exchange's pass.
    let (maker_holds, taker_holds) = (sat("maker_bond"), sat("escrow") + sat("taker_bond"));
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    let (mut maker_has, mut taker_has);
    loop {
        maker_has = run.balance(Maker).await;
        taker_has = run.balance(Taker).await;
        if (maker_has, taker_has) == (maker_holds, taker_holds)
            || tokio::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        (maker_has, taker_has),
        (maker_holds, taker_holds),
        "session balances (maker keeps its bond, the taker gets escrow and its bond once) after a crash at {point}"
    );
    // The mint issued the two invoices and nothing more; what it issued is all held: the
    // sessions, and the fees in soko's fee wallet.
    let issued = outstanding_at(mint.mint()).await;
    assert_eq!(
        issued,
        maker_invoice + taker_invoice,
        "issued after a crash at {point}"
    );
    let fees = issued - maker_has - taker_has;
    assert_eq!(
        fees,
        sat("platform_fee") + sat("taker_fee"),
        "fees after a crash at {point}"
    );
    let relay = run.soko.relay();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let status = book_status(&relay, bot, &offer).await;
        if status.as_deref() == Some("success") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the book says {status:?} after a crash at {point}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    run.soko.kill();
    let store = soko::store::Store::open(&data_dir).unwrap();
    let offers = store.tree::<OfferRecord>("exchange/offers").unwrap();
    let record = offers.get(offer.as_bytes()).unwrap().expect("the offer");
    assert_eq!(record.state, soko::exchange::OfferState::Completed);
    assert!(!record.transfers.is_empty());
    assert!(
        record.transfers.iter().all(|t| t.done),
        "a transfer left undone: {:?}",
        record.transfers
    );
    let open = store.tree::<u64>("exchange/open").unwrap();
    assert!(open.get(offer.as_bytes()).unwrap().is_none(), "still open");
    assert_eq!(offers.iter().count(), 1, "one offer, made once");
    drop(store);
    parts.mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_maker_paid_before_the_offer_is_listed() {
    trade_survives_a_crash_at("exchange-maker-collected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_listing_before_the_book_is_told() {
    trade_survives_a_crash_at("exchange-listed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_claim_before_the_taker_is_held() {
    trade_survives_a_crash_at("exchange-claimed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_bond_is_minted_before_it_counts() {
    trade_survives_a_crash_at("exchange-bond-collected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_bond_is_paid_before_the_bill_is_sent() {
    trade_survives_a_crash_at("exchange-bond-paid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_receipt_before_the_maker_is_told() {
    trade_survives_a_crash_at("exchange-receipt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_end_is_recorded_before_any_ecash_moves() {
    trade_survives_a_crash_at("exchange-ended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_token_is_made_before_it_is_taken() {
    trade_survives_a_crash_at("exchange-token-made").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_transfer_is_made_before_it_is_marked_done() {
    trade_survives_a_crash_at("exchange-transfer").await;
}

/// One trade among several, driven step by step from what its traders received.
struct Trade {
    maker: Trader,
    taker: Trader,
    /// 0 create sent … 5 done.
    phase: u8,
    /// The next command to send, and who sends it (sent again only if the relay did not
    /// take it).
    outbox: Option<(Who, &'static str, Value)>,
    create_id: Option<String>,
    offer: String,
    amounts: Value,
}

impl Trade {
    fn trader(&mut self, who: Who) -> &mut Trader {
        match who {
            Who::Maker => &mut self.maker,
            Who::Taker => &mut self.taker,
        }
    }

    fn is_notice(v: &Value, offer: &str, state: &str) -> bool {
        v.get("notice").is_some() && v["offer"] == offer && v["state"] == state
    }

    /// Moves the trade on by what arrived.
    fn advance(&mut self) {
        let offer = self.offer.clone();
        match self.phase {
            0 => {
                let Some(id) = self.create_id.clone() else {
                    return;
                };
                if let Some(reply) = self.maker.take(&|v| v["re"] == id.as_str()) {
                    assert_eq!(reply["ok"], true, "{reply}");
                    self.offer = reply["result"]["offer"].as_str().unwrap().to_owned();
                    self.amounts = reply["result"]["amounts"].clone();
                    self.phase = 1;
                }
            }
            1 if self
                .maker
                .take(&|v| Self::is_notice(v, &offer, "INVOICE_PAID"))
                .is_some() =>
            {
                self.outbox = Some((Who::Taker, "offer_claim", json!({"offer": offer})));
                self.phase = 2;
            }
            2 if self
                .taker
                .take(&|v| Self::is_notice(v, &offer, "TAKER_BOND_PAID"))
                .is_some() =>
            {
                self.outbox = Some((
                    Who::Taker,
                    "receipt_submit",
                    json!({"offer": offer, "text": "paid"}),
                ));
                self.phase = 3;
            }
            3 if self
                .maker
                .take(&|v| Self::is_notice(v, &offer, "RECEIPT_SUBMITTED"))
                .is_some() =>
            {
                self.outbox = Some((Who::Maker, "receipt_confirm", json!({"offer": offer})));
                self.phase = 4;
            }
            4 => {
                let done = |t: &Trader| {
                    t.inbox
                        .iter()
                        .any(|v| Self::is_notice(v, &offer, "COMPLETED"))
                };
                if done(&self.maker) && done(&self.taker) {
                    self.phase = 5;
                }
            }
            _ => {}
        }
    }

    /// Sends the pending command if the relay takes it.
    async fn send(&mut self, bot: PublicKey) {
        let Some((who, cmd, args)) = self.outbox.clone() else {
            return;
        };
        let trader = self.trader(who);
        let id = format!("{cmd}-{}", trader.sent + 1);
        let request =
            json!({"v": 1, "id": id, "cmd": cmd, "args": args, "session": trader.session});
        let wrap = trader.user.nip17(bot, &request.to_string()).await;
        let taken =
            tokio::time::timeout(Duration::from_secs(2), trader.user.client.send_event(&wrap))
                .await
                .is_ok_and(|out| out.is_ok_and(|out| !out.success.is_empty()));
        if taken {
            trader.sent += 1;
            if cmd == "offer_create" {
                self.create_id = Some(id);
            }
            self.outbox = None;
        }
    }
}

/// A trade that ends in a conceded issue, cut by a crash at `point` while its end is
/// settled: the maker, who revealed its registered key, gets escrow and both bonds as ecash
/// locked to that key, each leg once; soko keeps the two fees once; the sessions hold nothing.
async fn forfeit_survives_a_crash_at(point: &'static str) {
    let maker_keys = Keys::generate();
    let (mut run, parts) = Run::start(point, &maker_keys).await;
    let (mint, bot, data_dir) = (&parts.mint, run.bot, parts.dir.path().join("data"));
    let mint_url = mint.url().to_owned();
    use Who::{Maker, Taker};

    let (offer, amounts) = run.listed_offer().await;
    let sat = |name: &str| amounts.sat(name);
    let (maker_invoice, taker_invoice) = (amounts.sat("invoice_sat"), amounts.taker_invoice());
    run.ask(Taker, "offer_claim", json!({"offer": offer})).await;
    run.notice(Taker, &offer, "TAKER_BOND_PAID").await;

    let reveal = EventBuilder::new(Kind::Custom(29471), "the taker never paid my bill")
        .tags([
            Tag::public_key(bot),
            Tag::parse(["offer", offer.as_str()]).unwrap(),
            Tag::parse(["side", "maker"]).unwrap(),
        ])
        .sign_with_keys(&maker_keys)
        .unwrap();
    let marked = run
        .ask(
            Maker,
            "offer_issue",
            json!({"offer": offer, "reveal": reveal}),
        )
        .await;
    assert_eq!(marked["ok"], true, "{marked}");
    run.notice(Taker, &offer, "MARKED_WITH_ISSUE").await;
    // The crash comes while the forfeit is settled; asked again after it, soko answers
    // with the offer as it stands.
    run.ask(
        Taker,
        "offer_answer",
        json!({"offer": offer, "answer": "forfeit"}),
    )
    .await;

    // The legs locked to the maker's key, each once (a notice sent again after the crash
    // carries the same token).
    let owed = sat("escrow") + sat("maker_bond") + sat("taker_bond");
    let mut tokens: Vec<(String, u64)> = Vec::new();
    while tokens.iter().map(|(_, sats)| sats).sum::<u64>() < owed {
        let payout = run
            .wait_for(Maker, "a locked FORFEIT payout", |v| {
                v["state"] == "FORFEIT" && v.get("token").is_some()
            })
            .await;
        assert_eq!(payout["locked_to"], maker_keys.public_key().to_hex());
        let token = payout["token"].as_str().unwrap().to_owned();
        if !tokens.iter().any(|(t, _)| *t == token) {
            tokens.push((token, payout["amount_sat"].as_u64().unwrap()));
        }
    }
    assert_eq!(
        run.crashes, 1,
        "soko crashed {} times at {point}",
        run.crashes
    );
    let mut redeemed = 0;
    for (token, sats) in &tokens {
        let got = common::sessions::redeem_with(&mint_url, token, Some(&maker_keys))
            .await
            .unwrap_or_else(|e| panic!("a locked token after a crash at {point}: {e}"));
        assert_eq!(got, *sats);
        redeemed += got;
    }
    assert_eq!(redeemed, owed, "the maker's legs after a crash at {point}");

    // The fee transfers a crash interrupted finish on the exchange's pass.
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let held = run.balance(Maker).await + run.balance(Taker).await;
        let fees = outstanding_at(mint.mint()).await - redeemed - held;
        if (held, fees) == (0, sat("platform_fee") + sat("taker_fee")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions hold {held}, soko's fees {fees} after a crash at {point}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        outstanding_at(mint.mint()).await,
        maker_invoice + taker_invoice,
        "issued after a crash at {point}"
    );

    run.soko.kill();
    let store = soko::store::Store::open(&data_dir).unwrap();
    let offers = store.tree::<OfferRecord>("exchange/offers").unwrap();
    let record = offers.get(offer.as_bytes()).unwrap().expect("the offer");
    assert_eq!(record.state, soko::exchange::OfferState::Forfeit);
    assert!(
        record.transfers.iter().all(|t| t.done),
        "a transfer left undone: {:?}",
        record.transfers
    );
    drop(store);
    parts.mint.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_forfeit_is_recorded_before_any_ecash_moves() {
    forfeit_survives_a_crash_at("exchange-ended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_locked_token_is_made_before_its_notice() {
    forfeit_survives_a_crash_at("exchange-transfer").await;
}

/// A locked token is made by a swap, and cdk's recovery forgets such a send at the next
/// start (its reserved proofs, the swap's inputs, are spent): soko must still answer with
/// that token, not make a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_swapped_token_is_made_before_it_is_recorded() {
    forfeit_survives_a_crash_at("session-swapped-token-made").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_forfeits_fee_token_is_made_before_soko_takes_it() {
    forfeit_survives_a_crash_at("exchange-token-made").await;
}

/// A small deterministic generator for the kill schedule (its seed is printed).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Several trades at once while soko is killed (SIGKILL, no failpoint) at random moments and
/// restarted: every trade completes, every sat the mint issued is in a session or soko's fee
/// wallet, each taker got its escrow once and soko the fees of each trade once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_survive_kill_9_at_random_moments() {
    const TRADES: usize = 3;
    const KILLS: usize = 4;
    let mut seed = u64::from_le_bytes(
        Keys::generate().secret_key().to_secret_bytes()[..8]
            .try_into()
            .unwrap(),
    ) | 1;
    eprintln!("kill schedule seed {seed}");
    let registered: Vec<Keys> = (0..2 * TRADES).map(|_| Keys::generate()).collect();
    let (mint, _mint_dir) =
        common::auth::external_auth_mint(registered.iter().map(|k| k.public_key())).await;
    let mint_url = mint.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut soko = Binary::in_dir(dir.path(), &mint_url);
    soko.start().await;
    let bot = soko::identity::bot_keys(&data_dir).unwrap().public_key();
    let mut trades = Vec::new();
    for pair in registered.chunks(2) {
        let maker = Trader::join(&soko, bot, &mint, pair[0].clone()).await;
        let taker = Trader::join(&soko, bot, &mint, pair[1].clone()).await;
        trades.push(Trade {
            maker,
            taker,
            phase: 0,
            outbox: Some((
                Who::Maker,
                "offer_create",
                json!({
                    "fiat_amount": "1500",
                    "currency": "KES",
                    "provider": "mpesa",
                    "bill": {"kind": "paybill", "reference": "888880"},
                    "sats": 20_000,
                }),
            )),
            create_id: None,
            offer: String::new(),
            amounts: Value::Null,
        });
    }

    // Kills spread over the first seconds of the trades (a whole trade takes a few).
    let start = tokio::time::Instant::now();
    let mut kills: Vec<Duration> = (0..KILLS)
        .map(|_| Duration::from_millis(500 + next(&mut seed) % 18_000))
        .collect();
    kills.sort();
    eprintln!("kills at {kills:?}");
    let deadline = start + Duration::from_secs(150);
    while trades.iter().any(|t| t.phase < 5) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "trades stuck at phases {:?} (kill seed {seed})",
            trades.iter().map(|t| t.phase).collect::<Vec<_>>()
        );
        if kills.first().is_some_and(|at| start.elapsed() >= *at) {
            kills.remove(0);
            eprintln!(
                "kill -9 at {:?}, trades at phases {:?}",
                start.elapsed(),
                trades.iter().map(|t| t.phase).collect::<Vec<_>>()
            );
            soko.kill();
            tokio::time::sleep(Duration::from_millis(next(&mut seed) % 1_000)).await;
            soko.start().await;
            let relay = soko.relay();
            for trade in &mut trades {
                trade.maker.reconnect(&relay).await;
                trade.taker.reconnect(&relay).await;
            }
        }
        for trade in &mut trades {
            trade.send(bot).await;
            trade.maker.pump(Duration::from_millis(50)).await;
            trade.taker.pump(Duration::from_millis(50)).await;
            trade.advance();
        }
    }
    // The rest of the kills, after the trades: they must not undo anything.
    for _ in kills {
        soko.kill();
        soko.start().await;
    }

    // Transfers a kill interrupted finish on the exchange's pass.
    let relay = soko.relay();
    let mut held = 0;
    for trade in &mut trades {
        trade.maker.reconnect(&relay).await;
        trade.taker.reconnect(&relay).await;
        let sat = |name: &str| trade.amounts[name].as_u64().unwrap();
        let taker_gets = sat("escrow") + sat("taker_bond");
        let settle_by = tokio::time::Instant::now() + STEP_TIMEOUT;
        let taker_has = loop {
            let id = trade.taker.send(bot, "session_status", json!({})).await;
            let mut reply = None;
            for _ in 0..50 {
                trade.taker.pump(Duration::from_millis(200)).await;
                reply = trade.taker.take(&|v| v["re"] == id.as_str());
                if reply.is_some() {
                    break;
                }
            }
            let has = reply.expect("a status")["result"]["balance_sat"]
                .as_u64()
                .unwrap();
            if has == taker_gets || tokio::time::Instant::now() > settle_by {
                break has;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        assert_eq!(
            taker_has, taker_gets,
            "the taker of {} got its escrow once",
            trade.offer
        );
        let id = trade.maker.send(bot, "session_status", json!({})).await;
        let mut reply = None;
        for _ in 0..50 {
            trade.maker.pump(Duration::from_millis(200)).await;
            reply = trade.maker.take(&|v| v["re"] == id.as_str());
            if reply.is_some() {
                break;
            }
        }
        held += taker_has
            + reply.expect("a status")["result"]["balance_sat"]
                .as_u64()
                .unwrap();
    }
    soko.kill();

    let store = soko::store::Store::open(&data_dir).unwrap();
    let offers = store.tree::<OfferRecord>("exchange/offers").unwrap();
    let mut fees = 0;
    let mut extra = 0;
    for entry in offers.iter() {
        let (_, record) = entry.unwrap();
        assert!(
            record.transfers.iter().all(|t| t.done),
            "a transfer of {} left undone: {:?}",
            record.id,
            record.transfers
        );
        if record.state == soko::exchange::OfferState::Completed {
            fees += record.amounts.platform_fee.0 + record.amounts.taker_fee.0;
        } else {
            // An offer made twice (a kill between its commit and the reply's): its ecash
            // stays in the maker's session.
            extra += 1;
        }
    }
    let completed = trades.iter().filter(|t| {
        offers
            .get(t.offer.as_bytes())
            .unwrap()
            .is_some_and(|r| r.state == soko::exchange::OfferState::Completed)
    });
    assert_eq!(completed.count(), TRADES);
    eprintln!("{extra} offer(s) made again by a command handled twice");
    // What the mint issued is held by the sessions and soko's fee wallet: the difference is
    // the fee wallet, which holds the fees of the completed trades, once each.
    let issued = outstanding_at(mint.mint()).await;
    assert_eq!(
        issued - held,
        fees,
        "fees (issued {issued}, sessions {held}, seed {seed})"
    );
    drop(store);
    mint.shutdown().await;
}
