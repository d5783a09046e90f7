//! The embedded development mint: a real cdk mint with cdk's fake Lightning backend, whose
//! invoices settle by themselves, served over HTTP on loopback so any Cashu wallet can use it.
//!
//! Its database (SQLite, cdk's own backend) and seed live in the data dir, so ecash the
//! daemon holds stays valid across restarts.
//!
//! The fake backend settles each invoice from a timer in memory, which dies with the process.
//! On start, before serving, invoices it issued and had not settled are settled as it would
//! have (waiting for those not due yet, up to a few seconds). A crash of soko then looks to a
//! buyer like any other Lightning payment landing while soko was stopped.
//!
//! With [`AuthSettings`] it also does NUT-21/22 (clear and blind auth), with its own
//! development OIDC issuer on loopback ([`oidc`]) where registered users log in by a signed
//! Nostr event.

mod connector;
mod db;
pub mod oidc;

pub use connector::InProcessConnector;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cdk::cdk_payment::WaitPaymentResponse;
use cdk::mint::{MintBuilder, MintMeltLimits};
use cdk::nuts::nut17::SupportedMethods;
use cdk::nuts::nut19::{CachedEndpoint, Method as NutMethod, Path as NutPath};
use cdk::nuts::nut21::{Method, ProtectedEndpoint, RoutePath};
use cdk::nuts::{CurrencyUnit, MintQuoteState, PaymentMethod};
use cdk::types::FeeReserve;
use cdk::Mint;
use cdk_fake_wallet::FakeWallet;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use crate::clock::Clock;
use crate::identity;

/// SQLite file of the dev mint, in the data dir.
pub const DB_FILE: &str = "dev-mint.sqlite";
/// SQLite file of the dev mint's auth state (spent BATs, protected endpoints), in the data dir.
pub const AUTH_DB_FILE: &str = "dev-mint-auth.sqlite";
/// Seconds before the fake backend reports an invoice paid.
const SETTLE_AFTER_SECS: u64 = 1;
/// Longest wait at start for interrupted invoices not yet due.
const MAX_START_WAIT_SECS: u64 = 5;
/// How long shutdown waits for open HTTP connections.
const GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long answers to mint, melt and swap requests are kept for a replay: long enough for
/// a crashed soko to be restarted by hand. At most 10,000 are kept (cdk-axum's memory cache).
const REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
/// Largest single mint or melt, in sats.
const MAX_SATS: u64 = 10_000_000;
/// Requests the mint works on at once; the rest wait their turn in memory. One: each quote,
/// mint, melt and swap writes, and before [`db`]'s write turn a second writer slept in
/// SQLite's busy handler (1, 2, 5, 10 … ms, growing) instead of queueing. With 4 at once,
/// bench_orders' intake (20 × 20, 2 cores) then saw mint calls of 80–180 ms and type 1s at
/// p99 54–93 ms; with 1, p99 26–62 ms and 10–20 % more orders per second. Now that writers
/// queue, more at once could overlap only reads and signing; not measured since. The mint's
/// work per request is short (a quote, or a few blind signatures), so one at a time keeps up
/// with soko's orders.
const MAX_REQUESTS_IN_FLIGHT: usize = 1;
/// The mint's threads. Before writers queued for [`db`]'s write turn, each writer waiting for
/// SQLite's lock blocked one: bench_exchange (debug build) locked up at 100 trades at once
/// with 8 threads and needed 16. Now writers wait without a thread, and the release
/// bench_exchange completes 200 trades at once, 400 sessions, with 4 threads as with 16
/// (10.2 and 10.8 trades/s, no slow or locked query). The spare threads keep the mint
/// serving while a write that waited past the turn's bound sleeps in SQLite.
const MINT_THREADS: usize = 4;
/// How often the mint looks for swaps it abandoned half-way, and how old one must be.
const SWAP_RECOVERY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Failures starting the dev mint.
#[derive(Debug, thiserror::Error)]
pub enum DevMintError {
    /// It could not listen.
    #[error("dev mint cannot listen on 127.0.0.1:{port}: {source} (change [mint] dev_port)")]
    Listen {
        /// Port it tried.
        port: u16,
        /// Why not.
        source: std::io::Error,
    },
    /// Its seed could not be read or created.
    #[error("dev mint seed: {0}")]
    Seed(#[from] identity::IdentityError),
    /// Its database failed.
    #[error("dev mint database: {0}")]
    Database(#[from] cdk::cdk_database::Error),
    /// cdk refused the setup.
    #[error("dev mint: {0}")]
    Mint(#[from] cdk::Error),
    /// Its OIDC issuer could not start.
    #[error(transparent)]
    Oidc(#[from] oidc::OidcError),
    /// Its threads could not start.
    #[error("dev mint threads: {0}")]
    Threads(String),
}

/// NUT-21/22 on the dev mint: who may log in at its issuer, and how many BATs one request
/// may mint.
#[derive(Clone)]
pub struct AuthSettings {
    /// Who may log in (the daemon: its registered users).
    pub registry: Arc<dyn oidc::Registry>,
    /// Most BATs one `POST /v1/auth/blind/mint` may ask for.
    pub bat_max_mint: u64,
    /// Loopback port of the issuer; 0 picks a free one.
    pub issuer_port: u16,
    /// The clock login events' age is judged by.
    pub clock: Clock,
    /// The endpoints a BAT is asked for ([`blind_protected_endpoints`] for a mint other
    /// verifiers burn tokens on over HTTP; none for soko's own dev mint, whose tokens soko
    /// checks in-process, so that its wallets' recovery never needs one).
    pub blind_protected: Vec<ProtectedEndpoint>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("bat_max_mint", &self.bat_max_mint)
            .field("issuer_port", &self.issuer_port)
            .finish_non_exhaustive()
    }
}

/// The endpoints a dev mint serving other sokos asks a BAT for: `POST /v1/restore` alone. soko's own escrow
/// wallet mints, melts, swaps, checks states and subscribes, and none of that may need a BAT
/// (it has none). Restore is the one endpoint its normal operation never calls, and one a
/// holder of a BAT can call without side effects (one random output), which is how a
/// verifier that only speaks HTTP burns a BAT. cdk's wallet recovers an interrupted
/// operation whose outputs the mint signed by replaying it ([`REPLAY_WINDOW`]) and calls
/// restore only when that fails: past the window, such a recovery is refused and cdk keeps
/// the operation pending.
pub fn blind_protected_endpoints() -> Vec<ProtectedEndpoint> {
    vec![ProtectedEndpoint::new(Method::Post, RoutePath::Restore)]
}

/// The requests whose answers the mint keeps for [`REPLAY_WINDOW`] (NUT-19): a wallet that
/// crashed while one was in flight sends it again and gets the same answer, instead of
/// needing restore.
fn replayable_endpoints() -> Vec<CachedEndpoint> {
    [
        NutPath::Swap,
        NutPath::Custom("/v1/mint/bolt11".to_owned()),
        NutPath::Custom("/v1/melt/bolt11".to_owned()),
    ]
    .into_iter()
    .map(|path| CachedEndpoint::new(NutMethod::Post, path))
    .collect()
}

/// The endpoint that asks for a clear-auth token: minting BATs.
pub fn clear_protected_endpoints() -> Vec<ProtectedEndpoint> {
    vec![ProtectedEndpoint::new(
        Method::Post,
        RoutePath::MintBlindAuth,
    )]
}

/// A running dev mint; it stops on [`DevMint::shutdown`].
///
/// It runs on threads of its own. cdk's SQLite backend runs its queries on the calling
/// thread; on soko's runtime (one worker per core) two writers waiting in SQLite's busy
/// handler stopped every worker, so the transaction holding the lock could not be polled to
/// its commit (bench_exchange at 40 trades at once: no trade completed). Its writers also
/// queue for a write turn in memory instead of in SQLite ([`db`]).
#[derive(Debug)]
pub struct DevMint {
    url: String,
    mint: Arc<Mint>,
    issuer: Option<oidc::DevIssuer>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The runtime's handle, kept apart: `Drop` takes the runtime itself.
    handle: tokio::runtime::Handle,
    /// The request turns, shared by HTTP requests and in-process wallets.
    turns: Arc<Semaphore>,
    counts: Arc<Counts>,
}

/// Requests the mint served, by way.
#[derive(Debug, Default)]
struct Counts {
    http: AtomicU64,
    in_process: AtomicU64,
}

/// What the mint's own runtime hands back once the mint serves.
struct Started {
    url: String,
    mint: Arc<Mint>,
    issuer: Option<oidc::DevIssuer>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    turns: Arc<Semaphore>,
    counts: Arc<Counts>,
}

impl DevMint {
    /// Starts the mint on `127.0.0.1:port` (0 picks a free port).
    pub async fn start(data_dir: &Path, port: u16) -> Result<Self, DevMintError> {
        Self::start_settling_after(data_dir, port, SETTLE_AFTER_SECS).await
    }

    /// Same, with invoices settling `settle_after_secs` after they are issued (tests use a
    /// longer delay to have a payment land while soko is stopped).
    pub async fn start_settling_after(
        data_dir: &Path,
        port: u16,
        settle_after_secs: u64,
    ) -> Result<Self, DevMintError> {
        Self::start_with_input_fee(data_dir, port, settle_after_secs, 0).await
    }

    /// Same, charging NUT-02 input fees of `input_fee_ppk` parts per thousand sat per proof
    /// spent (tests of the escrow's fee books; real mints often charge them).
    pub async fn start_with_input_fee(
        data_dir: &Path,
        port: u16,
        settle_after_secs: u64,
        input_fee_ppk: u64,
    ) -> Result<Self, DevMintError> {
        Self::start_inner(data_dir, port, settle_after_secs, input_fee_ppk, true, None).await
    }

    /// Starts the mint with NUT-21/22 on, and its OIDC issuer (see [`AuthSettings`]).
    pub async fn start_with_auth(
        data_dir: &Path,
        port: u16,
        auth: AuthSettings,
    ) -> Result<Self, DevMintError> {
        Self::start_inner(data_dir, port, SETTLE_AFTER_SECS, 0, true, Some(auth)).await
    }

    /// [`DevMint::start_with_auth`] with invoices settling `settle_after_secs` after they are
    /// issued (tests of the exchange's windows, which must pass before a payment lands).
    pub async fn start_with_auth_settling_after(
        data_dir: &Path,
        port: u16,
        auth: AuthSettings,
        settle_after_secs: u64,
    ) -> Result<Self, DevMintError> {
        Self::start_inner(data_dir, port, settle_after_secs, 0, true, Some(auth)).await
    }

    /// Same as [`DevMint::start_settling_after`], but its info does not advertise NUT-17
    /// websockets, like a mint without them (tests of soko's polling).
    pub async fn start_without_push(
        data_dir: &Path,
        port: u16,
        settle_after_secs: u64,
    ) -> Result<Self, DevMintError> {
        Self::start_inner(data_dir, port, settle_after_secs, 0, false, None).await
    }

    async fn start_inner(
        data_dir: &Path,
        port: u16,
        settle_after_secs: u64,
        input_fee_ppk: u64,
        push: bool,
        auth: Option<AuthSettings>,
    ) -> Result<Self, DevMintError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(MINT_THREADS)
            .thread_name("dev-mint")
            .enable_all()
            .build()
            .map_err(|e| DevMintError::Threads(e.to_string()))?;
        let data_dir = data_dir.to_path_buf();
        let started = runtime
            .spawn(async move {
                serve(
                    &data_dir,
                    port,
                    settle_after_secs,
                    input_fee_ppk,
                    push,
                    auth,
                )
                .await
            })
            .await
            .map_err(|e| DevMintError::Threads(e.to_string()));
        let started = match started {
            Ok(Ok(started)) => started,
            Ok(Err(e)) | Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Self {
            url: started.url,
            mint: started.mint,
            issuer: started.issuer,
            stop: Some(started.stop),
            server: started.server,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            turns: started.turns,
            counts: started.counts,
        })
    }
}

/// Builds the mint and serves it, on the runtime this runs on.
async fn serve(
    data_dir: &Path,
    port: u16,
    settle_after_secs: u64,
    input_fee_ppk: u64,
    push: bool,
    auth: Option<AuthSettings>,
) -> Result<Started, DevMintError> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| DevMintError::Listen { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DevMintError::Listen { port, source })?;
    let url = format!("http://{addr}");

    let db = Arc::new(db::open(data_dir.join(DB_FILE)).await?);
    let mut builder = MintBuilder::new(db.clone());
    let backend = FakeWallet::new(
        FeeReserve {
            min_fee_reserve: 1.into(),
            percent_fee_reserve: 0.01,
        },
        HashMap::new(),
        HashSet::new(),
        settle_after_secs,
        CurrencyUnit::Sat,
    );
    builder
        .add_payment_processor(
            CurrencyUnit::Sat,
            PaymentMethod::BOLT11,
            MintMeltLimits::new(1, MAX_SATS),
            Arc::new(backend),
        )
        .await?;
    if input_fee_ppk > 0 {
        builder.set_unit_fee(&CurrencyUnit::Sat, input_fee_ppk)?;
    }
    let seed = identity::dev_mint_seed(data_dir)?;
    // cdk-axum serves NUT-17's `/v1/ws` either way; wallets go by the info.
    if push {
        builder =
            builder.with_supported_websockets(SupportedMethods::default_bolt11(CurrencyUnit::Sat));
    }
    // The issuer first: the mint fetches its discovery document on the first CAT.
    let issuer = match &auth {
        Some(auth) => Some(
            oidc::DevIssuer::start(
                data_dir,
                auth.issuer_port,
                auth.registry.clone(),
                auth.clock.clone(),
            )
            .await?,
        ),
        None => None,
    };
    if let (Some(auth), Some(issuer)) = (&auth, &issuer) {
        let auth_db = Arc::new(db::open_auth(data_dir.join(AUTH_DB_FILE)).await?);
        builder = builder
            .with_auth(
                auth_db,
                issuer.discovery_url(),
                issuer.client_id().to_owned(),
                clear_protected_endpoints(),
            )
            .with_blind_auth(auth.bat_max_mint, auth.blind_protected.clone());
    }
    let mint = builder
        .with_cache(Some(REPLAY_WINDOW.as_secs()), replayable_endpoints())
        .with_name("soko dev mint".to_owned())
        .with_description("Development mint: fake Lightning, worthless sats".to_owned())
        .with_urls(vec![url.clone()])
        .build_with_seed(db, &seed)
        .await?;
    mint.start().await?;
    let mint = Arc::new(mint);
    // Before the mint serves anyone, waiting for those not due yet (at most the settle
    // delay): settling while soko's first requests arrive contended for SQLite's write
    // lock, and cdk's pool then stalled every writer for 10 s at a time.
    settle_interrupted(&mint, settle_after_secs).await;

    let turns = Arc::new(Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
    let counts = Arc::new(Counts::default());
    let replays = cdk_axum::cache::HttpCache::new(REPLAY_WINDOW, REPLAY_WINDOW, None);
    let router = cdk_axum::create_mint_router_with_custom_cache(
        mint.clone(),
        replays,
        vec!["bolt11".to_owned()],
        false,
    )
    .await
    .map_err(|e| cdk::Error::Custom(format!("router: {e}")))?
    .layer(axum::middleware::from_fn_with_state(
        (Arc::clone(&turns), Arc::clone(&counts)),
        take_turn,
    ));
    tokio::spawn(recover_abandoned_swaps(
        Arc::clone(&mint),
        Arc::clone(&turns),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "dev mint server stopped");
        }
    });
    tracing::warn!(
        %url,
        "DEVELOPMENT MINT running: fake Lightning backend, invoices settle by themselves, its ecash is worthless. Use [mint] url for real money."
    );
    if let Some(issuer) = &issuer {
        tracing::warn!(
            issuer = %issuer.issuer(),
            "DEVELOPMENT OIDC ISSUER running for the dev mint's blind auth (NUT-21/22): any registered soko user logs in with a signed Nostr event, no password, no second factor. For real use, run a mint with a real OIDC provider and set [mint] url."
        );
    }
    Ok(Started {
        url,
        mint,
        issuer,
        stop,
        server,
        turns,
        counts,
    })
}

impl DevMint {
    /// The mint's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The mint itself, for checks of what it issued and redeemed.
    pub fn mint(&self) -> &Arc<Mint> {
        &self.mint
    }

    /// The mint's own runtime: calls into [`DevMint::mint`] that write (spending a token)
    /// belong there, for the reason given at [`DevMint`].
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }

    /// A connection to the mint for soko's own wallets, in-process (see
    /// [`InProcessConnector`]).
    pub fn connector(&self) -> Result<InProcessConnector, DevMintError> {
        let url = self
            .url
            .parse()
            .map_err(|e: cdk::mint_url::Error| cdk::Error::Custom(format!("{}: {e}", self.url)))?;
        Ok(InProcessConnector::new(
            Arc::clone(&self.mint),
            self.handle.clone(),
            Arc::clone(&self.turns),
            url,
            Arc::clone(&self.counts),
        ))
    }

    /// HTTP requests the mint has served since it started (its websocket counts once, when
    /// it opens).
    pub fn http_requests(&self) -> u64 {
        self.counts.http.load(Ordering::Relaxed)
    }

    /// Calls of in-process wallets the mint has served since it started.
    pub fn in_process_calls(&self) -> u64 {
        self.counts.in_process.load(Ordering::Relaxed)
    }

    /// Its OIDC issuer, when auth is on.
    pub fn issuer(&self) -> Option<&oidc::DevIssuer> {
        self.issuer.as_ref()
    }

    /// Stops serving and the mint's background tasks.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown waits for open connections, and wallets keep theirs alive:
        // give in-flight requests a moment, then close the rest.
        if tokio::time::timeout(GRACE, &mut self.server).await.is_err() {
            tracing::debug!("dev mint connections still open after the grace period; closing them");
            self.server.abort();
        }
        if let Err(e) = self.mint.stop().await {
            tracing::warn!(error = %e, "dev mint did not stop cleanly");
        }
        if let Some(issuer) = self.issuer.take() {
            issuer.shutdown().await;
        }
        // Drop does the rest.
    }
}

impl Drop for DevMint {
    fn drop(&mut self) {
        // A runtime dropped inside another one's task panics; this one lets go of its threads.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Settles the bolt11 invoices a previous run issued and its fake backend had not settled,
/// after waiting for the latest settle time (`settle_after_secs` after issue) if it is still
/// ahead. The payment id is the one the fake backend uses, so a settlement the backend did
/// make is not counted twice.
async fn settle_interrupted(mint: &Mint, settle_after_secs: u64) {
    let quotes = match mint.mint_quotes().await {
        Ok(quotes) => quotes,
        Err(e) => {
            tracing::warn!(error = %e, "dev mint: cannot list invoices left unsettled by a stop");
            return;
        }
    };
    let now = crate::util::unix_now();
    let unsettled: Vec<_> = quotes
        .into_iter()
        .filter(|quote| {
            quote.payment_method.is_bolt11()
                && quote.state() == MintQuoteState::Unpaid
                && quote.expiry > now
        })
        .filter_map(|quote| {
            let amount = quote.amount.clone()?;
            Some((
                quote.created_time.saturating_add(settle_after_secs),
                WaitPaymentResponse {
                    payment_id: quote.request_lookup_id.to_string(),
                    payment_identifier: quote.request_lookup_id,
                    payment_amount: amount,
                },
            ))
        })
        .collect();
    // A mint whose invoices settle much later (tests) keeps them unsettled rather than
    // holding its start for that long.
    let horizon = now.saturating_add(MAX_START_WAIT_SECS);
    let unsettled: Vec<_> = unsettled
        .into_iter()
        .filter(|(due, _)| *due <= horizon)
        .collect();
    let Some(latest) = unsettled.iter().map(|(due, _)| *due).max() else {
        return;
    };
    tracing::info!(
        invoices = unsettled.len(),
        "dev mint: settling invoices a stop interrupted"
    );
    let wait = latest.saturating_sub(now);
    if wait > 0 {
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    }
    for (_, payment) in unsettled {
        let id = payment.payment_id.clone();
        if let Err(e) = mint.pay_mint_quote_for_request_id(payment).await {
            tracing::warn!(payment = %id, error = %e, "dev mint: settling an interrupted invoice failed");
        }
    }
}

/// Gives back the inputs of swaps the mint abandoned half-way while running.
///
/// A swap marks its inputs pending, signs, then marks them spent; when that last step fails,
/// cdk undoes the first, and when the undo fails too (SQLite "database is locked" under
/// load), the inputs stay pending until cdk's recovery at the next start. Every wallet
/// receiving that token meanwhile is told "Token Pending", and a trade's transfer retried
/// it each pass, holding both sessions. Swaps only run inside requests, so once this task
/// holds every request turn, no swap is in flight and cdk's start-up recovery is safe to run.
async fn recover_abandoned_swaps(mint: Arc<Mint>, turns: Arc<Semaphore>) {
    let mut every = tokio::time::interval(SWAP_RECOVERY_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = crate::util::unix_now();
        let stale = match mint
            .localstore()
            .get_incomplete_sagas(cdk_common::mint::OperationKind::Swap)
            .await
        {
            Ok(sagas) => sagas
                .iter()
                .filter(|saga| {
                    saga.updated_at
                        .saturating_add(SWAP_RECOVERY_EVERY.as_secs())
                        <= now
                })
                .count(),
            Err(e) => {
                tracing::debug!(error = %e, "dev mint: cannot list unfinished swaps");
                continue;
            }
        };
        if stale == 0 {
            continue;
        }
        let Ok(_all_turns) = turns.acquire_many(MAX_REQUESTS_IN_FLIGHT as u32).await else {
            return;
        };
        tracing::warn!(stale, "dev mint: undoing swaps abandoned half-way");
        if let Err(e) = mint.recover_from_incomplete_sagas().await {
            tracing::warn!(error = %e, "dev mint: abandoned swaps not undone; retried later");
        }
    }
}

/// Lets a request run once it holds one of the mint's [`MAX_REQUESTS_IN_FLIGHT`] turns;
/// waiters are served in arrival order. A websocket gives its turn back once upgraded: the
/// connection lives on outside the handler.
async fn take_turn(
    axum::extract::State((turns, counts)): axum::extract::State<(Arc<Semaphore>, Arc<Counts>)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    counts.http.fetch_add(1, Ordering::Relaxed);
    // hyper drops a handler whose client hung up, at whatever await it stood: after the
    // quote was marked issued, before the answer was cached for a replay (NUT-19), or
    // between a swap's steps. A wallet killed mid-request then finds its replay refused and
    // needs restore, which an auth mint may protect. So each request runs to its end on a
    // task of its own; the connection only waits for it.
    let work = tokio::spawn(async move {
        // The semaphore is never closed, so a turn always comes.
        let _turn = turns.acquire_owned().await;
        next.run(request).await
    });
    match work.await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "dev mint request task failed");
            axum::response::IntoResponse::into_response(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use std::time::Duration;

    use cdk::nuts::{MintRequest, PreMintSecrets};
    use cdk::secret::Secret;
    use serde_json::{json, Value};

    use super::*;

    async fn get(url: &str) -> Value {
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    /// A paid quote of `amount` sats and a request minting it as one output.
    async fn paid_quote(mint: &DevMint, amount: u64) -> (String, MintRequest<String>) {
        let http = reqwest::Client::new();
        let quote: Value = http
            .post(format!("{}/v1/mint/quote/bolt11", mint.url()))
            .json(&json!({"amount": amount, "unit": "sat"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = quote["quote"].as_str().unwrap().to_owned();
        let state_url = format!("{}/v1/mint/quote/bolt11/{id}", mint.url());
        for _ in 0..200 {
            if get(&state_url).await["state"] == "PAID" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(get(&state_url).await["state"], "PAID");
        let keysets = get(&format!("{}/v1/keysets", mint.url())).await;
        let keyset = keysets["keysets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["active"] == true && k["unit"] == "sat")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let outputs =
            PreMintSecrets::from_secrets(keyset, vec![amount.into()], vec![Secret::generate()])
                .unwrap()
                .blinded_messages();
        let request = MintRequest {
            quote: id.clone(),
            outputs,
            signature: None,
        };
        (state_url, request)
    }

    /// A wallet killed while its mint request was in flight recovers by sending the same
    /// request again (cdk's saga replay): the mint must have finished it although the
    /// connection was gone, and must answer the replay with the same signatures (NUT-19),
    /// or the wallet is left needing restore, which an auth mint may protect.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_whose_client_left_still_runs_and_its_replay_gets_the_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let mint = DevMint::start_settling_after(dir.path(), 0, 0)
            .await
            .unwrap();
        let info = get(&format!("{}/v1/info", mint.url())).await;
        let cached = &info["nuts"]["19"]["cached_endpoints"];
        assert!(
            cached.as_array().is_some_and(
                |all| all.contains(&json!({"method": "POST", "path": "/v1/mint/bolt11"}))
            ),
            "NUT-19 not advertised: {info}"
        );
        let (state_url, request) = paid_quote(&mint, 64).await;
        let mint_url = format!("{}/v1/mint/bolt11", mint.url());

        // Every turn held: the request waits inside the mint, and its client gives up.
        let held = mint
            .turns
            .clone()
            .acquire_many_owned(MAX_REQUESTS_IN_FLIGHT as u32)
            .await
            .unwrap();
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let gave_up = impatient.post(&mint_url).json(&request).send().await;
        assert!(
            gave_up.is_err(),
            "the mint answered while every turn was held"
        );
        drop(held);

        let mut state = Value::Null;
        for _ in 0..200 {
            state = get(&state_url).await["state"].clone();
            if state == "ISSUED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            state, "ISSUED",
            "the abandoned request was dropped, not finished"
        );

        let replay = reqwest::Client::new()
            .post(&mint_url)
            .json(&request)
            .send()
            .await
            .unwrap();
        let status = replay.status();
        let body: Value = replay.json().await.unwrap();
        assert!(status.is_success(), "replay refused: {body}");
        assert_eq!(body["signatures"].as_array().unwrap().len(), 1, "{body}");
        mint.shutdown().await;
    }
}
