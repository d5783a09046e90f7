//! The mint's NUT-17 push of bolt11 mint-quote states: one websocket to the mint carrying a
//! subscription for every invoice soko waits on, so a payment is heard of when it lands
//! instead of by asking the mint about each invoice again and again.
//!
//! Why not cdk's own `Wallet::subscribe`: whenever its websocket is down (refused, dropped,
//! waiting to reconnect) cdk polls every subscribed quote every 2 s, outside any budget, which
//! is the request flood this replaces. Here a lost connection only says so
//! ([`FeedEvent::Lost`]) and soko's paced poller takes those invoices back.
//!
//! The task is I/O only: it keeps the set of watched quotes, subscribes them on each new
//! connection (batched, within cdk-axum's per-connection limits), and reports what the mint
//! says. What to do about it is the escrow watcher's decision.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdk::mint_url::MintUrl;
use cdk::nuts::{MintInfo, MintQuoteState, PaymentMethod};
use cdk_common::nut17::ws::{
    RawWsMessageOrResponse, WsMethodRequest, WsRequest, WsUnsubscribeRequest,
};
use cdk_common::nut17::{
    deserialize_payload_for_kind, Kind, NotificationPayload, Params, WsCommand, MAX_FILTER_LEN,
};
use cdk_common::ws_client::{WsReceiver, WsSender};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Most quotes one subscription names (cdk-axum accepts up to 1,000 filters). Kept small
/// because the mint answers a subscription with the state of every quote in it at once.
const BATCH: usize = 50;
/// Subscriptions one connection holds before it is opened again with its quotes batched
/// (cdk-axum refuses a connection's 101st subscription).
const MAX_SUBSCRIPTIONS: usize = 80;
/// First wait before reconnecting after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A connection that lived this long resets the backoff when it drops.
const STABLE: Duration = Duration::from_secs(60);
/// Quote states waiting for the watcher; past it, states are dropped (and counted): the
/// watcher's slow safety checks find what they said.
const EVENT_BUFFER: usize = 4096;

/// True when the mint's info says it pushes bolt11 mint-quote states in sat (NUT-17).
pub fn pushes_bolt11_mint_quotes(info: &MintInfo) -> bool {
    info.nuts.nut17.supported.iter().any(|m| {
        m.method == PaymentMethod::BOLT11
            && m.unit == cdk::nuts::CurrencyUnit::Sat
            && m.commands.contains(&WsCommand::Bolt11MintQuote)
    })
}

/// What the feed tells the watcher, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// A connection is up: quotes watched from now on are subscribed at once.
    Connected,
    /// The connection dropped: no quote is pushed until the mint tells its state again.
    Lost,
    /// The mint told a quote's state on the live connection (its current state right after
    /// subscribing, as NUT-17 requires, then every change).
    State {
        /// The quote.
        quote: String,
        /// Its state.
        state: MintQuoteState,
    },
}

#[derive(Debug)]
enum Command {
    Watch(String),
    Unwatch(String),
    Reconnect,
}

/// Counts since start, for logs and tests.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Connections opened.
    pub connects: AtomicU64,
    /// Connections lost or refused.
    pub failures: AtomicU64,
    /// Quotes whose subscription the mint refused (they stay polled).
    pub refused: AtomicU64,
    /// Quote states dropped because the watcher had not taken the earlier ones.
    pub dropped: AtomicU64,
}

/// A handle on the feed's task; the task ends when the handle is dropped.
#[derive(Debug)]
pub struct QuoteFeed {
    commands: mpsc::UnboundedSender<Command>,
    events: std::sync::Mutex<mpsc::Receiver<FeedEvent>>,
    stats: Arc<FeedStats>,
}

impl QuoteFeed {
    /// Starts the feed for the mint at `mint_url` (its websocket is `/v1/ws`). Needs a tokio
    /// runtime. `wake` is notified whenever the mint tells a quote is no longer unpaid, so
    /// that the watcher acts on it at once rather than on its next pass.
    pub fn start(mint_url: &MintUrl, wake: Arc<Notify>) -> Result<Self, String> {
        let mut url = mint_url
            .join_paths(&["v1", "ws"])
            .map_err(|e| e.to_string())?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|()| format!("cannot make a websocket URL of {mint_url}"))?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let (sender, events) = mpsc::channel(EVENT_BUFFER);
        let stats = Arc::new(FeedStats::default());
        tokio::spawn(run(url.to_string(), receiver, sender, stats.clone(), wake));
        Ok(Self {
            commands,
            events: std::sync::Mutex::new(events),
            stats,
        })
    }

    /// Follows the embedded dev mint's own payment events in-process (cdk's pubsub, the
    /// source its websocket forwards), with no websocket, HTTP or JSON in between. The task
    /// runs on the mint's runtime: subscribing makes cdk read the quote's state from SQLite
    /// there, which must not block soko's own workers (see [`crate::devmint::DevMint`]).
    pub fn in_process(
        mint: Arc<cdk::Mint>,
        runtime: &tokio::runtime::Handle,
        wake: Arc<Notify>,
    ) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (sender, events) = mpsc::channel(EVENT_BUFFER);
        let stats = Arc::new(FeedStats::default());
        runtime.spawn(follow_in_process(
            mint,
            receiver,
            sender,
            stats.clone(),
            wake,
        ));
        Self {
            commands,
            events: std::sync::Mutex::new(events),
            stats,
        }
    }

    /// Subscribes `quote` (now if connected, else on the next connection). A quote id
    /// longer than NUT-17 allows is never subscribed: it stays polled.
    pub fn watch(&self, quote: String) {
        if quote.len() <= MAX_FILTER_LEN {
            let _ = self.commands.send(Command::Watch(quote));
        }
    }

    /// Stops watching `quote`.
    pub fn unwatch(&self, quote: String) {
        let _ = self.commands.send(Command::Unwatch(quote));
    }

    /// Drops the connection and opens a new one (a push went missing: the connection may
    /// be dead without either side having noticed).
    pub fn reconnect(&self) {
        let _ = self.commands.send(Command::Reconnect);
    }

    /// What happened since the last call, oldest first.
    pub fn events(&self) -> Vec<FeedEvent> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        while let Ok(event) = events.try_recv() {
            out.push(event);
        }
        out
    }

    /// Counts since start.
    pub fn stats(&self) -> &FeedStats {
        &self.stats
    }
}

/// The in-process feed: one pubsub subscription per watched quote, all delivering to one
/// channel. Nothing can drop between soko and the mint here, so the feed is connected
/// once, for good; a "reconnect" (a payment a check found first) subscribes every quote
/// again, which makes the mint tell each one's state anew.
async fn follow_in_process(
    mint: Arc<cdk::Mint>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<FeedEvent>,
    stats: Arc<FeedStats>,
    wake: Arc<Notify>,
) {
    use cdk_common::subscription::SubId;

    stats.connects.fetch_add(1, Ordering::Relaxed);
    if events.send(FeedEvent::Connected).await.is_err() {
        return;
    }
    let pubsub = mint.pubsub_manager();
    let (pushed, mut pushes) = mpsc::channel(EVENT_BUFFER);
    let mut subs = HashMap::new();
    let mut next: u64 = 0;
    let mut subscribe = |quote: &str| {
        next += 1;
        let params = Params {
            kind: Kind::Bolt11MintQuote,
            filters: vec![quote.to_owned()],
            id: Arc::new(SubId::from(format!("soko-{next}"))),
        };
        pubsub.subscribe_with(params, &pushed, None)
    };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Watch(quote)) => {
                    if subs.contains_key(&quote) {
                        continue;
                    }
                    match subscribe(&quote) {
                        Ok(sub) => {
                            subs.insert(quote, sub);
                        }
                        Err(e) => {
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "the dev mint refused a subscription; that invoice is polled");
                        }
                    }
                }
                Some(Command::Unwatch(quote)) => {
                    subs.remove(&quote);
                }
                Some(Command::Reconnect) => {
                    let quotes: Vec<String> = subs.keys().cloned().collect();
                    subs.clear();
                    for quote in quotes {
                        if let Ok(sub) = subscribe(&quote) {
                            subs.insert(quote, sub);
                        }
                    }
                }
            },
            Some((_, event)) = pushes.recv() => {
                let NotificationPayload::MintQuoteBolt11Response(quote) = event.into_inner() else {
                    continue;
                };
                let id = quote.quote.to_string();
                if subs.contains_key(&id) {
                    tell(id, quote.state, &events, &stats, &wake);
                }
            }
        }
    }
}

/// How a connection ended.
enum End {
    /// The handle was dropped: the task ends.
    Closed,
    /// Too many subscriptions: open again at once with the quotes batched.
    Rebatch,
    /// It failed or was asked to reconnect.
    Failed(String),
}

async fn run(
    url: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<FeedEvent>,
    stats: Arc<FeedStats>,
    wake: Arc<Notify>,
) {
    let mut watched: HashSet<String> = HashSet::new();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let why = match cdk_common::ws_client::connect(&url, &[]).await {
            Ok((mut sender, mut receiver)) => {
                stats.connects.fetch_add(1, Ordering::Relaxed);
                let opened = Instant::now();
                if events.send(FeedEvent::Connected).await.is_err() {
                    return;
                }
                let connection = Connection {
                    wake: Arc::clone(&wake),
                    ..Connection::default()
                };
                let end = connection
                    .serve(
                        &mut sender,
                        &mut receiver,
                        &mut commands,
                        &mut watched,
                        &events,
                        &stats,
                    )
                    .await;
                let _ = sender.close().await;
                if events.send(FeedEvent::Lost).await.is_err() {
                    return;
                }
                if opened.elapsed() >= STABLE {
                    backoff = FIRST_BACKOFF;
                }
                match end {
                    End::Closed => return,
                    End::Rebatch => {
                        tracing::debug!(
                            quotes = watched.len(),
                            "reopening the mint's websocket to batch its subscriptions"
                        );
                        continue;
                    }
                    End::Failed(why) => why,
                }
            }
            Err(e) => e.to_string(),
        };
        stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            error = %why,
            retry_in_secs = backoff.as_secs(),
            "the mint's websocket (NUT-17) is down; its invoices are polled meanwhile"
        );
        // Commands still count while waiting, so the next connection subscribes the quotes
        // watched now, and a dropped handle ends the task.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Watch(quote)) => {
                        watched.insert(quote);
                    }
                    Some(Command::Unwatch(quote)) => {
                        watched.remove(&quote);
                    }
                    Some(Command::Reconnect) => {}
                },
            }
        }
        backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
    }
}

/// One connection's subscriptions.
#[derive(Default)]
struct Connection {
    /// Subscription id → the quotes it names that are still watched.
    subs: HashMap<String, HashSet<String>>,
    /// Quote → its subscription.
    sub_of: HashMap<String, String>,
    /// JSON-RPC request id → the subscription it asked for.
    pending: HashMap<usize, String>,
    next_request: usize,
    next_sub: u64,
    /// Notified when the mint tells a quote is no longer unpaid.
    wake: Arc<Notify>,
}

impl Connection {
    async fn serve(
        mut self,
        sender: &mut WsSender,
        receiver: &mut WsReceiver,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        watched: &mut HashSet<String>,
        events: &mpsc::Sender<FeedEvent>,
        stats: &FeedStats,
    ) -> End {
        let wake = Arc::clone(&self.wake);
        let all: Vec<String> = watched.iter().cloned().collect();
        for batch in all.chunks(BATCH) {
            if let Err(e) = self.subscribe(sender, batch).await {
                return End::Failed(e);
            }
        }
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return End::Closed,
                    Some(Command::Watch(quote)) => {
                        if !watched.insert(quote.clone()) {
                            continue;
                        }
                        if self.subs.len() >= MAX_SUBSCRIPTIONS {
                            return End::Rebatch;
                        }
                        if let Err(e) = self.subscribe(sender, &[quote]).await {
                            return End::Failed(e);
                        }
                    }
                    Some(Command::Unwatch(quote)) => {
                        watched.remove(&quote);
                        if let Err(e) = self.unsubscribe(sender, &quote).await {
                            return End::Failed(e);
                        }
                    }
                    Some(Command::Reconnect) => {
                        return End::Failed("a push went missing".to_owned());
                    }
                },
                message = receiver.recv() => match message {
                    None => return End::Failed("closed by the mint".to_owned()),
                    Some(Err(e)) => return End::Failed(e.to_string()),
                    Some(Ok(text)) => self.handle(&text, events, stats, &wake),
                },
            }
        }
    }

    async fn subscribe(&mut self, sender: &mut WsSender, quotes: &[String]) -> Result<(), String> {
        if quotes.is_empty() {
            return Ok(());
        }
        self.next_sub += 1;
        let sub = format!("soko-{}", self.next_sub);
        let params = Params {
            kind: Kind::Bolt11MintQuote,
            filters: quotes.to_vec(),
            id: sub.clone(),
        };
        let id = self.request_id();
        let request: WsRequest<String> = (WsMethodRequest::Subscribe(params), id).into();
        let text = serde_json::to_string(&request).map_err(|e| e.to_string())?;
        sender.send(text).await.map_err(|e| e.to_string())?;
        self.pending.insert(id, sub.clone());
        for quote in quotes {
            self.sub_of.insert(quote.clone(), sub.clone());
        }
        self.subs.insert(sub, quotes.iter().cloned().collect());
        Ok(())
    }

    /// Takes `quote` out of its subscription, and ends the subscription once it names no
    /// watched quote.
    async fn unsubscribe(&mut self, sender: &mut WsSender, quote: &str) -> Result<(), String> {
        let Some(sub) = self.sub_of.remove(quote) else {
            return Ok(());
        };
        let empty = self.subs.get_mut(&sub).is_none_or(|quotes| {
            quotes.remove(quote);
            quotes.is_empty()
        });
        if !empty {
            return Ok(());
        }
        self.subs.remove(&sub);
        let id = self.request_id();
        let request: WsRequest<String> = (
            WsMethodRequest::Unsubscribe(WsUnsubscribeRequest { sub_id: sub }),
            id,
        )
            .into();
        let text = serde_json::to_string(&request).map_err(|e| e.to_string())?;
        sender.send(text).await.map_err(|e| e.to_string())
    }

    fn request_id(&mut self) -> usize {
        self.next_request += 1;
        self.next_request
    }

    /// One message from the mint. Anything malformed or unasked for is skipped: it cannot
    /// make soko act, since a pushed state only makes the watcher check that order now.
    fn handle(
        &mut self,
        text: &str,
        events: &mpsc::Sender<FeedEvent>,
        stats: &FeedStats,
        wake: &Notify,
    ) {
        let message = match serde_json::from_str::<RawWsMessageOrResponse<String>>(text) {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!(error = %e, "unreadable message on the mint's websocket");
                return;
            }
        };
        match message {
            RawWsMessageOrResponse::Response(response) => {
                self.pending.remove(&response.id);
            }
            RawWsMessageOrResponse::ErrorResponse(error) => {
                let Some(sub) = self.pending.remove(&error.id) else {
                    return;
                };
                // Its quotes stay watched but unsubscribed: the poller keeps checking them,
                // and the others are not held up.
                let quotes = self.subs.remove(&sub).unwrap_or_default();
                for quote in &quotes {
                    self.sub_of.remove(quote);
                }
                stats
                    .refused
                    .fetch_add(quotes.len() as u64, Ordering::Relaxed);
                tracing::warn!(
                    quotes = quotes.len(),
                    error = %error.error.message,
                    "the mint refused a NUT-17 subscription; those invoices are polled"
                );
            }
            RawWsMessageOrResponse::Notification(notification) => {
                let params = notification.params;
                let Some(quotes) = self.subs.get(&params.sub_id) else {
                    return;
                };
                let payload = deserialize_payload_for_kind::<String, serde_json::Error>(
                    &Kind::Bolt11MintQuote,
                    params.payload,
                );
                let Ok(NotificationPayload::MintQuoteBolt11Response(quote)) = payload else {
                    tracing::debug!("unexpected payload on the mint's websocket");
                    return;
                };
                if !quotes.contains(&quote.quote) {
                    return;
                }
                tell(quote.quote, quote.state, events, stats, wake);
            }
        }
    }
}

/// Hands a quote's state to the watcher, waking it when the quote is no longer unpaid.
fn tell(
    quote: String,
    state: MintQuoteState,
    events: &mpsc::Sender<FeedEvent>,
    stats: &FeedStats,
    wake: &Notify,
) {
    if events.try_send(FeedEvent::State { quote, state }).is_err() {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
    if state != MintQuoteState::Unpaid {
        wake.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cdk::nuts::nut17::SupportedMethods;
    use cdk::nuts::CurrencyUnit;

    fn notification(sub: &str, quote: &str, state: &str) -> String {
        serde_json::json!({"jsonrpc": "2.0", "method": "subscribe", "params": {"subId": sub,
            "payload": {"quote": quote, "request": "lnbc1", "state": state, "expiry": 1}}})
        .to_string()
    }

    #[test]
    fn only_states_of_subscribed_quotes_reach_the_watcher() {
        let (sender, mut events) = mpsc::channel(8);
        let stats = FeedStats::default();
        let mut connection = Connection::default();
        connection
            .subs
            .insert("soko-1".into(), HashSet::from(["q1".to_owned()]));
        connection.sub_of.insert("q1".into(), "soko-1".into());
        for text in [
            notification("soko-1", "q1", "UNPAID"),
            notification("soko-1", "q2", "PAID"),
            notification("soko-9", "q1", "PAID"),
            "{not json".to_owned(),
            notification("soko-1", "q1", "PAID"),
        ] {
            connection.handle(&text, &sender, &stats, &Notify::new());
        }
        let mut told = Vec::new();
        while let Ok(event) = events.try_recv() {
            told.push(event);
        }
        let state = |state| FeedEvent::State {
            quote: "q1".into(),
            state,
        };
        assert_eq!(
            told,
            vec![state(MintQuoteState::Unpaid), state(MintQuoteState::Paid)]
        );
    }

    #[test]
    fn a_refused_subscription_leaves_the_others() {
        let (sender, _events) = mpsc::channel(8);
        let stats = FeedStats::default();
        let mut connection = Connection::default();
        for (sub, quote, request) in [("soko-1", "q1", 1), ("soko-2", "q2", 2)] {
            connection
                .subs
                .insert(sub.into(), HashSet::from([quote.to_owned()]));
            connection.sub_of.insert(quote.into(), sub.into());
            connection.pending.insert(request, sub.into());
        }
        let refusal = serde_json::json!({"jsonrpc": "2.0", "id": 2,
            "error": {"code": -32602, "message": "Invalid params"}});
        connection.handle(&refusal.to_string(), &sender, &stats, &Notify::new());
        assert!(connection.subs.contains_key("soko-1"));
        assert!(!connection.subs.contains_key("soko-2"));
        assert!(!connection.sub_of.contains_key("q2"));
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn states_past_the_buffer_are_dropped_and_counted() {
        let (sender, _events) = mpsc::channel(1);
        let stats = FeedStats::default();
        let mut connection = Connection::default();
        connection
            .subs
            .insert("soko-1".into(), HashSet::from(["q1".to_owned()]));
        for _ in 0..3 {
            connection.handle(
                &notification("soko-1", "q1", "UNPAID"),
                &sender,
                &stats,
                &Notify::new(),
            );
        }
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 2);
    }

    /// The feed against a real mint (the dev mint: cdk behind cdk-axum): more quotes than
    /// one connection may subscribe one by one, so the feed reopens its connection once
    /// with them batched; every quote's state is told, a payment is pushed, and an
    /// unwatched quote's is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_feed_follows_more_quotes_than_one_connection_takes() {
        use cdk::nuts::{MintQuoteBolt11Request, MintQuoteState};
        use cdk_common::mint_quote::{MintQuoteRequest, MintQuoteResponse};

        let dir = tempfile::tempdir().unwrap();
        let mint = crate::devmint::DevMint::start_settling_after(dir.path(), 0, 3_600)
            .await
            .unwrap();
        let mut quotes = Vec::new();
        for _ in 0..MAX_SUBSCRIPTIONS + 20 {
            let request = MintQuoteRequest::Bolt11(MintQuoteBolt11Request {
                amount: 10.into(),
                unit: CurrencyUnit::Sat,
                description: None,
                pubkey: None,
            });
            let Ok(MintQuoteResponse::Bolt11(quote)) = mint.mint().get_mint_quote(request).await
            else {
                panic!("a bolt11 quote");
            };
            quotes.push(quote.quote.to_string());
        }
        let feed = QuoteFeed::start(&mint.url().parse().unwrap(), Arc::default()).unwrap();
        let mut told: HashMap<String, MintQuoteState> = HashMap::new();
        let mut connected = false;
        let mut follow = |feed: &QuoteFeed| {
            for event in feed.events() {
                match event {
                    FeedEvent::Connected => connected = true,
                    FeedEvent::Lost => told.clear(),
                    FeedEvent::State { quote, state } => {
                        told.insert(quote, state);
                    }
                }
            }
            (connected, told.clone())
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !follow(&feed).0 {
            assert!(Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for quote in &quotes {
            feed.watch(quote.clone());
        }
        loop {
            let (_, told) = follow(&feed);
            if quotes
                .iter()
                .all(|q| told.get(q) == Some(&MintQuoteState::Unpaid))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} quotes told",
                told.len(),
                quotes.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(feed.stats().connects.load(Ordering::Relaxed), 2);

        feed.unwatch(quotes[1].clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        for quote in &quotes[..2] {
            let stored = mint
                .mint()
                .mint_quotes()
                .await
                .unwrap()
                .into_iter()
                .find(|q| q.id.to_string() == *quote)
                .unwrap();
            mint.mint()
                .pay_mint_quote_for_request_id(cdk::cdk_payment::WaitPaymentResponse {
                    payment_id: stored.request_lookup_id.to_string(),
                    payment_identifier: stored.request_lookup_id.clone(),
                    payment_amount: stored.amount.clone().unwrap(),
                })
                .await
                .unwrap();
        }
        loop {
            let (_, told) = follow(&feed);
            if told.get(&quotes[0]) == Some(&MintQuoteState::Paid) {
                assert_eq!(told.get(&quotes[1]), Some(&MintQuoteState::Unpaid));
                break;
            }
            assert!(Instant::now() < deadline, "the payment was not pushed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(feed);
        mint.shutdown().await;
    }

    #[test]
    fn only_a_mint_pushing_bolt11_mint_quotes_in_sat_counts() {
        let mut info = MintInfo::default();
        assert!(!pushes_bolt11_mint_quotes(&info));
        info.nuts = info
            .nuts
            .clone()
            .nut17(vec![SupportedMethods::default_bolt11(CurrencyUnit::Sat)]);
        assert!(pushes_bolt11_mint_quotes(&info));
        info.nuts = info.nuts.clone().nut17(vec![SupportedMethods::new(
            PaymentMethod::BOLT11,
            CurrencyUnit::Sat,
            vec![WsCommand::ProofState],
        )]);
        assert!(!pushes_bolt11_mint_quotes(&info));
        info.nuts = info
            .nuts
            .clone()
            .nut17(vec![SupportedMethods::default_bolt11(CurrencyUnit::Usd)]);
        assert!(!pushes_bolt11_mint_quotes(&info));
    }
}
