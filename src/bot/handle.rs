//! The path of one inbound event: verify → claim (persistent dedupe) → open → dispatch →
//! reply, with the outgoing event, the stored reply and the claim's completion written in
//! that order before anything is sent (see `Handler::commit`).

use nostr_sdk::{Event, EventId, JsonUtil, Keys, PublicKey};
use serde::{Deserialize, Serialize};

use super::ingest::{self, Inbound};
use crate::commands::{self, CommandError};
use crate::failpoint;
use crate::inbox::{MerchantInbox, OrderMessage, ToMerchant};
use crate::outbound::{seal_dm, wrap_tagged, Keyring, Note, Outbox, MAX_EVENT_BYTES};
use crate::proto::{ErrorCode, Refusal, Request, Response};
use crate::ratelimit::CommandLimits;
use crate::store::{trees, Store, StoreError, Typed};
use crate::util::{json_size_over, unix_now};

/// Key in `meta` holding the unix time of the newest DM handled.
pub const CHECKPOINT_KEY: &[u8] = b"subscription_checkpoint";

/// Where an inbound event id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeenState {
    /// Claimed by a handler that has not finished. Cleared on start: a crash mid-way must
    /// let the redelivered event run again.
    Processing,
    /// Handled; never again.
    Done,
}

/// A reply remembered by (sender, request id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReply {
    /// The command it answered: the same id with another command is refused, not replayed.
    #[serde(default)]
    pub cmd: String,
    /// The response JSON that was sent, sealed by the vault ([`StoredReply::seal`]): it may
    /// hold an invite or activation code, or a USSD screen with a buyer's address.
    pub response: String,
    /// Unix seconds.
    pub at: u64,
}

impl StoredReply {
    /// `response` sealed for storage.
    pub fn seal(vault: &crate::vault::Vault, response: &str) -> Result<String, HandleError> {
        vault
            .seal(response)
            .map_err(|e| HandleError::Reply(format!("sealing a stored reply: {e}")))
    }

    /// The response JSON, opened. A reply stored in clear before sealing existed (a JSON
    /// object) is still replayed.
    pub fn open(&self, vault: &crate::vault::Vault) -> Option<String> {
        match vault.unseal(&self.response) {
            Ok(json) => Some(json),
            Err(_) if self.response.starts_with('{') => Some(self.response.clone()),
            Err(_) => None,
        }
    }
}

/// Failures handling an event (all internal: senders get their answers as replies).
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Building or signing the reply failed.
    #[error("building reply: {0}")]
    Reply(String),
}

/// Everything one event's handling needs; cheap to clone into a task.
#[derive(Debug, Clone)]
pub struct Handler {
    keyring: Keyring,
    seen: Typed<SeenState>,
    seen_at: Typed<()>,
    pending: Typed<String>,
    replies: Typed<StoredReply>,
    meta: Typed<u64>,
    /// The checkpoint last written (or found at start): within one second every DM would
    /// write the same value again, one sled write per DM for nothing.
    checkpoint_written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    outbox: Outbox,
    commands: commands::Context,
    inbox: MerchantInbox,
    claims: Claims,
    limits: std::sync::Arc<CommandLimits>,
}

/// How long a request waits for a twin with the same (sender, request id) still running
/// before it is told to ask again.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Requests being handled, by `replies` key. Claiming is insert-if-absent under one lock,
/// so of two events carrying one request id exactly one runs its command; the other waits
/// for it and replays the stored reply. In memory only: twins can race only within one
/// process, and a crash ends every claim together.
#[derive(Debug, Clone, Default)]
struct Claims(
    std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<Vec<u8>, tokio::sync::watch::Receiver<()>>>,
    >,
);

/// A held claim; dropping it (after the reply is committed, or on failure) wakes the waiters.
#[derive(Debug)]
struct Claim {
    claims: Claims,
    key: Vec<u8>,
    _done: tokio::sync::watch::Sender<()>,
}

impl Claims {
    /// The claim, or what to wait on while a twin holds it.
    fn try_claim(&self, key: &[u8]) -> Result<Claim, tokio::sync::watch::Receiver<()>> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = held.get(key) {
            return Err(running.clone());
        }
        let (done, running) = tokio::sync::watch::channel(());
        held.insert(key.to_vec(), running);
        Ok(Claim {
            claims: self.clone(),
            key: key.to_vec(),
            _done: done,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.claims.0.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.key);
    }
}

/// What happened to one event, for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its signature or id did not verify; it was not recorded, so the genuine event
    /// with the same id can still be handled.
    Forged,
    /// Already handled (or being handled).
    Duplicate,
    /// Not a message for soko, or one that cannot be answered.
    Ignored(String),
    /// Answered with this reply event.
    Replied(EventId),
}

impl Handler {
    /// Opens the trees the handler uses. Every command is counted against `limits`.
    pub fn new(
        store: &Store,
        keyring: Keyring,
        outbox: Outbox,
        commands: commands::Context,
        inbox: MerchantInbox,
        limits: CommandLimits,
    ) -> Result<Self, StoreError> {
        let meta: Typed<u64> = store.tree(trees::META)?;
        let checkpoint = meta.get(CHECKPOINT_KEY)?.unwrap_or(0);
        Ok(Self {
            keyring,
            seen: store.tree(trees::SEEN)?,
            seen_at: store.tree(trees::SEEN_AT)?,
            pending: store.tree(trees::PENDING)?,
            replies: store.tree(trees::REPLIES)?,
            meta,
            checkpoint_written: std::sync::Arc::new(checkpoint.into()),
            outbox,
            inbox,
            commands,
            claims: Claims::default(),
            limits: std::sync::Arc::new(limits),
        })
    }

    /// The identities it opens messages for.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The outbox its replies go through.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Releases claims left by a crash, so their events are handled when redelivered.
    pub fn recover(&self) -> Result<usize, StoreError> {
        let mut released = 0;
        for entry in self.seen.iter() {
            let (id, state) = entry?;
            if state == SeenState::Processing {
                self.seen.remove(&id)?;
                released += 1;
            }
        }
        Ok(released)
    }

    /// Events a crash (or an internal error) interrupted: claimed, kept whole, not done.
    /// Call before [`Self::recover`]; handle them again after it. They need no relay to
    /// deliver them again, so no flood of newer events can push them out of reach.
    pub fn interrupted(&self) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        for entry in self.pending.iter() {
            let (id, json) = entry?;
            if self.seen.get(&id)? == Some(SeenState::Done) {
                self.pending.remove(&id)?;
                continue;
            }
            match Event::from_json(&json) {
                Ok(event) => events.push(event),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an unreadable interrupted event");
                    self.pending.remove(&id)?;
                }
            }
        }
        Ok(events)
    }

    /// Forgets what can no longer matter at unix time `now`, given that no inbound event
    /// created before `floor` is handled (the bot drops them before [`Self::handle`]):
    /// `seen` entries of events created before `floor` (a redelivered copy is dropped by
    /// age, so the entry is not needed to stop it) and replies stored before `floor`.
    /// Claims still in progress stay. Returns (seen, replies) removed.
    pub fn prune(&self, floor: u64) -> Result<(usize, usize), StoreError> {
        prune(&self.seen, &self.seen_at, &self.replies, floor)
    }

    /// The unix time of the newest DM handled, if any.
    pub fn checkpoint(&self) -> Result<Option<u64>, StoreError> {
        self.meta.get(CHECKPOINT_KEY)
    }

    /// Handles one event from a relay. Every line logged while it is handled, however
    /// deep (commands, escrow, wallet, cdk), carries the span `request{event=…}`, and
    /// `id=…` once known: the request id when the command has one, else the id its reply
    /// answers (`re`: the DM's, or the NIP-17 rumor's).
    pub async fn handle(&self, event: &Event) -> Result<Outcome, HandleError> {
        self.handle_checked(event, false).await
    }

    /// [`Self::handle`] for an event whose id and signature were already checked:
    /// nostr-sdk's relay pool verifies every event before it notifies (nostr-relay-pool's
    /// `verify_and_cache`, which caches only events that passed), and the embedded relay's
    /// feed carries only events the relay verified when a connection sent them, or that
    /// soko signed. The check is not made twice: it was a third of the bot's crypto per
    /// NIP-04 DM.
    pub(crate) async fn handle_verified(&self, event: &Event) -> Result<Outcome, HandleError> {
        self.handle_checked(event, true).await
    }

    async fn handle_checked(&self, event: &Event, verified: bool) -> Result<Outcome, HandleError> {
        // At error level so that it is on whenever any line is: a span's level decides
        // whether it exists at all, and the warnings and errors need the ids most.
        let span = tracing::error_span!("request", event = %event.id, id = tracing::field::Empty);
        tracing::Instrument::instrument(self.handle_traced(event, verified), span).await
    }

    async fn handle_traced(&self, event: &Event, verified: bool) -> Result<Outcome, HandleError> {
        // Verify before anything is recorded: an event id does not commit to its signature,
        // so recording a forged copy as seen would let it censor the genuine one.
        if !verified && event.verify().is_err() {
            tracing::debug!(event_id = %event.id, "dropping event with a bad id or signature");
            return Ok(Outcome::Forged);
        }
        if failpoint::is_active("before-claim") && self.seen.get(event.id.as_bytes())?.is_none() {
            failpoint::crash("before-claim", self.seen.raw());
        }
        if !self
            .seen
            .insert_if_absent(event.id.as_bytes(), &SeenState::Processing)?
        {
            return Ok(Outcome::Duplicate);
        }
        self.seen_at.insert(&seen_at_key(event), &())?;
        failpoint::crash("claimed", self.seen.raw());
        // Boxed: every path (commands, escrow, Gamma) nested inline overflows the
        // compiler's layout depth for this future.
        match Box::pin(self.handle_claimed(event)).await {
            Ok(outcome) => {
                self.pending.remove(event.id.as_bytes())?;
                Ok(outcome)
            }
            Err(e) => {
                // Let a redelivery retry instead of losing the message.
                self.seen.remove(event.id.as_bytes())?;
                Err(e)
            }
        }
    }

    async fn handle_claimed(&self, event: &Event) -> Result<Outcome, HandleError> {
        let inbound = match ingest::open(&self.keyring, event).await {
            Ok(inbound) => {
                // Kept whole until done, to be handled again after a crash (`interrupted`).
                // Only events that open: junk is finished at once and not worth a copy. A
                // crash before this line falls back to the relays' redelivery.
                self.pending.insert(event.id.as_bytes(), &event.as_json())?;
                inbound
            }
            Err(ignored) => {
                tracing::debug!(event_id = %event.id, kind = %event.kind, reason = %ignored, "ignored");
                self.seen.insert(event.id.as_bytes(), &SeenState::Done)?;
                return Ok(Outcome::Ignored(ignored.to_string()));
            }
        };
        // Recorded once: a log line shows every value a field was given.
        tracing::Span::current().record("id", correlation_id(&inbound).as_str());
        if let (false, Ok(body)) = (
            inbound.recipient == self.keyring.bot().public_key(),
            &inbound.body,
        ) {
            let message = OrderMessage {
                sender: inbound.sender,
                recipient: inbound.recipient,
                scheme: inbound.scheme,
                kind: inbound.kind,
                tags: &inbound.tags,
                body,
            };
            match self.inbox.receive(&message).await {
                ToMerchant::Reply(note) => {
                    let reply = match self.seal_note(&inbound, &note).await.and_then(fits) {
                        Ok(reply) => reply,
                        // Too large for NIP-44 (or the relay): a short note rather than a
                        // reply that fails on every redelivery.
                        Err(e) => {
                            tracing::warn!(event_id = %event.id, error = %e, "reply cannot be sealed; sending a short one");
                            self.seal_note(&inbound, &Note::Text(REPLY_TOO_LARGE.to_owned()))
                                .await?
                        }
                    };
                    self.commit(event.id, &reply, None)?;
                    failpoint::crash("committed", self.seen.raw());
                    self.outbox.deliver(&reply).await?;
                    return Ok(Outcome::Replied(reply.id));
                }
                ToMerchant::Silent(reason) => {
                    tracing::debug!(event_id = %event.id, reason, "not acted on");
                    self.seen.insert(event.id.as_bytes(), &SeenState::Done)?;
                    return Ok(Outcome::Ignored(reason.to_owned()));
                }
                ToMerchant::NotAnOrderMessage => {}
            }
        }
        // Held until the reply is committed, so a twin request replays it.
        let mut claim = None;
        let Some(Answer {
            json: response,
            remember: remember_as,
            reports_state,
        }) = self.respond(&inbound, &mut claim).await?
        else {
            self.seen.insert(event.id.as_bytes(), &SeenState::Done)?;
            return Ok(Outcome::Ignored("a reply, not a request".to_owned()));
        };
        let (reply, response) = match self.seal_reply(&inbound, &response).await.and_then(fits) {
            Ok(reply) => (reply, response),
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e, "reply cannot be sealed; sending a short refusal");
                let short = too_large_response(&response);
                (self.seal_reply(&inbound, &short).await?, short)
            }
        };
        let remember =
            remember_as.map(|(id, cmd)| (reply_key(&inbound.sender, &id), cmd, response));
        self.commit(event.id, &reply, remember)?;
        failpoint::crash("committed", self.seen.raw());
        if reports_state {
            self.outbox.deliver(&reply).await?;
        } else {
            self.outbox.deliver_unsynced(&reply).await?;
        }
        Ok(Outcome::Replied(reply.id))
    }

    /// The answer to a request, or `None` for a message that is itself an answer.
    async fn respond(
        &self,
        inbound: &Inbound,
        claim: &mut Option<Claim>,
    ) -> Result<Option<Answer>, StoreError> {
        let fallback_re = inbound.refers_to.to_hex();
        let body = match &inbound.body {
            Ok(body) => body,
            Err(refusal) => {
                return Ok(Some(Answer::plain(
                    Response::refused(fallback_re, refusal.clone()).to_json(),
                )))
            }
        };
        if is_response(body) {
            // Another bot's answer: replying with an error could ping-pong forever.
            return Ok(None);
        }
        if inbound.recipient == self.keyring.bot().public_key() && looks_like_nip15(body) {
            let refusal = Refusal::new(
                ErrorCode::BadRequest,
                "this is soko's bot, not a merchant: send NIP-15 orders to the merchant's npub (the author of its stall and products)",
            );
            return Ok(Some(Answer::plain(
                Response::refused(fallback_re, refusal).to_json(),
            )));
        }
        let request = match Request::parse(body) {
            Ok(request) => request,
            Err(refusal) => {
                return Ok(Some(Answer::plain(
                    Response::refused(fallback_re, refusal).to_json(),
                )))
            }
        };
        // Before the replay lookup and the claim: a sender over its rate costs no more than
        // this. Not remembered under the request id, so the same id runs once the window
        // has passed.
        if let Err(limited) = self
            .limits
            .check(&inbound.sender, request.session.as_deref())
        {
            tracing::debug!(
                tier = limited.tier.as_str(),
                retry_after = limited.retry_after_secs,
                "rate limited"
            );
            self.commands.metrics.rate_limited(limited.tier);
            let message = format!(
                "too many commands: at most {} per {} s in the {} tier; try again in {} s",
                limited.limit,
                limited.window_secs,
                limited.tier.as_str(),
                limited.retry_after_secs
            );
            let re = request.id.unwrap_or(fallback_re);
            return Ok(Some(Answer::plain(
                Response::rate_limited(re, message, limited.retry_after_secs).to_json(),
            )));
        }
        if let Some(id) = &request.id {
            let key = reply_key(&inbound.sender, id);
            // Claim before looking: a twin that finished has stored its reply by then, and
            // one still running is waited for.
            loop {
                match self.claims.try_claim(&key) {
                    Ok(held) => break *claim = Some(held),
                    Err(mut running) => {
                        // Resolves (with an error) once the twin's claim is dropped.
                        if tokio::time::timeout(CLAIM_WAIT, running.changed())
                            .await
                            .is_err()
                        {
                            let refusal = Refusal::new(
                                ErrorCode::Internal,
                                format!("request id {id:?} is still being handled; ask again later with the same id for its reply"),
                            );
                            return Ok(Some(Answer::plain(
                                Response::refused(id.clone(), refusal).to_json(),
                            )));
                        }
                    }
                }
            }
            if let Some(stored) = self.replies.get(&key)? {
                if stored.cmd == request.cmd {
                    // Never run the command again: it may not be idempotent.
                    let Some(response) = stored.open(self.commands.merchants.vault()) else {
                        tracing::error!("a stored reply does not open (another vault?)");
                        let refusal = Refusal::new(ErrorCode::Internal, "internal error");
                        return Ok(Some(Answer::plain(
                            Response::refused(id.clone(), refusal).to_json(),
                        )));
                    };
                    return Ok(Some(Answer::reporting(response)));
                }
                let refusal = Refusal::new(
                    ErrorCode::BadRequest,
                    format!(
                        "request id {id:?} was already used for {:?}; use a new id",
                        stored.cmd
                    ),
                );
                return Ok(Some(Answer::reporting(
                    Response::refused(id.clone(), refusal).to_json(),
                )));
            }
        }
        let re = request.id.clone().unwrap_or(fallback_re);
        let (response, reports_state) = match request.command() {
            Err(refusal) => (Response::refused(re, refusal), false),
            Ok(command) => {
                let reports_state = commands::reports_state(&command, request.session.as_deref());
                let response = match commands::execute(
                    &self.commands,
                    inbound.sender,
                    request.session.as_deref(),
                    command,
                )
                .await
                {
                    Ok(result) => Response::ok(re, result),
                    Err(CommandError::Refused(refusal)) => Response::refused(re, refusal),
                    Err(CommandError::Internal(detail)) => {
                        tracing::error!(cmd = %request.cmd, error = %detail, "command failed");
                        // Not remembered: an internal failure should be retryable.
                        return Ok(Some(Answer::plain(
                            Response::refused(
                                re,
                                Refusal::new(
                                    ErrorCode::Internal,
                                    "internal error; try again later",
                                ),
                            )
                            .to_json(),
                        )));
                    }
                };
                (response, reports_state)
            }
        };
        Ok(Some(Answer {
            json: response.to_json(),
            remember: request.id.map(|id| (id, request.cmd)),
            reports_state,
        }))
    }

    async fn seal_note(&self, inbound: &Inbound, note: &Note) -> Result<Event, HandleError> {
        match note {
            Note::Text(text) => self.seal_reply(inbound, text).await,
            Note::Tagged {
                kind,
                tags,
                content,
            } => {
                let keys: Keys = self
                    .keyring
                    .get(&inbound.recipient)
                    .ok_or_else(|| HandleError::Reply("recipient left the keyring".to_owned()))?;
                wrap_tagged(&keys, inbound.sender, *kind, tags, content)
                    .await
                    .map_err(HandleError::Reply)
            }
        }
    }

    async fn seal_reply(&self, inbound: &Inbound, response: &str) -> Result<Event, HandleError> {
        let keys: Keys = self
            .keyring
            .get(&inbound.recipient)
            .ok_or_else(|| HandleError::Reply("recipient left the keyring".to_owned()))?;
        seal_dm(
            &keys,
            inbound.sender,
            inbound.scheme,
            response,
            Some(inbound.refers_to),
        )
        .await
        .map_err(HandleError::Reply)
    }

    /// Records that the event is done, its reply queued, and (for requests with an id)
    /// remembered. A crash before it leaves the event unhandled; after it, the outbox sends
    /// the reply on restart.
    ///
    /// Written key by key, the event's `done` last, not in a transaction: a sled 0.34
    /// transaction seals and writes two IO buffers (before and after its batch manifest),
    /// each waking all of sled's IO threads, and takes the Db's global write lock; that
    /// made it the costliest step of a pong, and 14 context switches of every order. sled
    /// recovers its log as a prefix (it keeps "linearizability in the log",
    /// `pagecache/segment.rs`), so a crash part-way leaves the event not done: it is
    /// handled again, as after a crash before this call, and a remembered reply written
    /// before the crash is replayed rather than the command run twice. A reply that
    /// reports state leaves only after [`Outbox::deliver`] has flushed all of it.
    fn commit(
        &self,
        handled: EventId,
        reply: &Event,
        remember: Option<(Vec<u8>, String, String)>,
    ) -> Result<(), HandleError> {
        let done = self.seen.encode(&SeenState::Done)?;
        let queued = self.outbox.stage(reply)?;
        let stored = match remember {
            Some((key, cmd, response)) => {
                match StoredReply::seal(self.commands.merchants.vault(), &response) {
                    Ok(sealed) => Some((
                        key,
                        self.replies.encode(&StoredReply {
                            cmd,
                            response: sealed,
                            at: unix_now(),
                        })?,
                    )),
                    // Only a reply past NIP-44's 64 KiB (a long listing, a read) cannot be
                    // sealed: it is answered, not remembered, rather than kept in clear.
                    Err(e) => {
                        tracing::warn!(%cmd, error = %e, "reply not kept for replay");
                        None
                    }
                }
            }
            None => None,
        };
        // A value already written is not written again. Should that write then fail, the
        // stored checkpoint stays a second behind: more redelivery at start, which `seen`
        // drops.
        let now = unix_now();
        let checkpoint = if self
            .checkpoint_written
            .swap(now, std::sync::atomic::Ordering::Relaxed)
            != now
        {
            Some(self.meta.encode(&now)?)
        } else {
            None
        };
        if let Some((key, value)) = stored {
            self.replies
                .raw()
                .insert(key, value)
                .map_err(StoreError::from)?;
        }
        queued.insert_now(self.outbox.raw())?;
        if let Some(checkpoint) = checkpoint {
            self.meta
                .raw()
                .insert(CHECKPOINT_KEY, checkpoint)
                .map_err(StoreError::from)?;
        }
        self.seen
            .raw()
            .insert(handled.as_bytes(), done)
            .map_err(StoreError::from)?;
        Ok(())
    }
}

/// What [`Handler::respond`] answers a request with.
struct Answer {
    /// The response JSON.
    json: String,
    /// The (request id, command) it is remembered under, to be replayed.
    remember: Option<(String, String)>,
    /// Whether it tells anything soko stores (a command's result, a replayed reply), so
    /// that it may leave only once that is on disk. A pong or a refusal of the request
    /// itself tells nothing a crash could take back: its request is kept by a relay and
    /// would only be answered again.
    reports_state: bool,
}

impl Answer {
    /// An answer from the request alone: a refusal of the request itself.
    fn plain(json: String) -> Self {
        Self {
            json,
            remember: None,
            reports_state: false,
        }
    }

    /// An answer read from what soko stores, not remembered again.
    fn reporting(json: String) -> Self {
        Self {
            json,
            remember: None,
            reports_state: true,
        }
    }
}

/// What a buyer gets when soko's answer cannot be sealed (NIP-44 carries at most 65,535
/// bytes).
const REPLY_TOO_LARGE: &str =
    "too_large: soko's answer to your message is too large to send; send a shorter message";

/// The event, if relays will take it (see [`MAX_EVENT_BYTES`]).
fn fits(event: Event) -> Result<Event, HandleError> {
    if let Some(size) = json_size_over(&event, MAX_EVENT_BYTES) {
        return Err(HandleError::Reply(format!("the reply is {size} bytes")));
    }
    Ok(event)
}

/// A short refusal in place of a command response that cannot be sealed, answering the same
/// request id.
fn too_large_response(response: &str) -> String {
    let re = serde_json::from_str::<Response>(response)
        .map(|r| r.re)
        .unwrap_or_default();
    Response::refused(
        crate::proto::nip15::clip_echo(&re, 128),
        Refusal::new(
            ErrorCode::TooLarge,
            "the answer is too large to send; ask for less (e.g. a smaller \"limit\")",
        ),
    )
    .to_json()
}

/// What a request is known by to its sender: its request id when it is a command with one,
/// else the id its reply answers (`re`). The envelope is parsed again later; a DM is small.
fn correlation_id(inbound: &Inbound) -> String {
    inbound
        .body
        .as_ref()
        .ok()
        .and_then(|body| Request::parse(body).ok())
        .and_then(|request| request.id)
        .unwrap_or_else(|| inbound.refers_to.to_hex())
}

/// A NIP-15 message: a JSON object with a numeric `type` and no `cmd`.
fn looks_like_nip15(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
        v.get("type").is_some_and(serde_json::Value::is_u64) && v.get("cmd").is_none()
    })
}

/// See [`Handler::prune`].
fn prune(
    seen: &Typed<SeenState>,
    seen_at: &Typed<()>,
    replies: &Typed<StoredReply>,
    floor: u64,
) -> Result<(usize, usize), StoreError> {
    let mut forgotten = 0;
    for entry in seen_at.raw().range(..floor.to_be_bytes().to_vec()) {
        let (key, _) = entry.map_err(StoreError::from)?;
        let id = key.get(8..).unwrap_or_default();
        if seen.get(id)? == Some(SeenState::Processing) {
            continue;
        }
        seen.remove(id)?;
        seen_at.remove(&key)?;
        forgotten += 1;
    }
    let mut dropped = 0;
    for entry in replies.raw().iter() {
        let (key, bytes) = entry.map_err(StoreError::from)?;
        // An unreadable reply is kept: pruning is no place to judge formats.
        if replies.decode(&bytes).is_ok_and(|r| r.at < floor) {
            replies.remove(&key)?;
            dropped += 1;
        }
    }
    Ok((forgotten, dropped))
}

/// `seen/at` key: `created_at` (big-endian, so keys sort by time) ‖ event id.
fn seen_at_key(event: &Event) -> Vec<u8> {
    let mut key = event.created_at.as_secs().to_be_bytes().to_vec();
    key.extend_from_slice(event.id.as_bytes());
    key
}

/// Whether soko is done with an inbound event, read from `store`: the embedded relay's
/// retention drops such events addressed to soko's keys.
pub fn handled(store: &Store) -> Result<crate::relay::Handled, StoreError> {
    let seen: Typed<SeenState> = store.tree(trees::SEEN)?;
    Ok(std::sync::Arc::new(move |id: &EventId| {
        matches!(seen.get(id.as_bytes()), Ok(Some(SeenState::Done)))
    }))
}

/// `replies` key: sender ‖ request id.
fn reply_key(sender: &PublicKey, request_id: &str) -> Vec<u8> {
    let mut key = sender.to_bytes().to_vec();
    key.extend_from_slice(request_id.as_bytes());
    key
}

/// True for content shaped like a [`Response`] (has `re` and `ok`).
fn is_response(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.contains_key("re") && o.contains_key("ok"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use nostr_sdk::Timestamp;

    use super::*;
    use nostr_sdk::{EventBuilder, Kind};

    #[test]
    fn prune_forgets_old_ids_and_replies_but_not_claims() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let seen: Typed<SeenState> = store.tree(trees::SEEN)?;
        let seen_at: Typed<()> = store.tree(trees::SEEN_AT)?;
        let replies: Typed<StoredReply> = store.tree(trees::REPLIES)?;
        let keys = Keys::generate();
        let at = |t: u64| {
            EventBuilder::new(Kind::EncryptedDirectMessage, "x")
                .custom_created_at(Timestamp::from(t))
                .sign_with_keys(&keys)
        };
        let (old, claimed, recent) = (at(100)?, at(150)?, at(300)?);
        for (event, state) in [
            (&old, SeenState::Done),
            (&claimed, SeenState::Processing),
            (&recent, SeenState::Done),
        ] {
            seen.insert(event.id.as_bytes(), &state)?;
            seen_at.insert(&seen_at_key(event), &())?;
        }
        let reply = |at: u64| StoredReply {
            cmd: "ping".to_owned(),
            response: "{}".to_owned(),
            at,
        };
        replies.insert(b"old", &reply(100))?;
        replies.insert(b"new", &reply(300))?;

        assert_eq!(prune(&seen, &seen_at, &replies, 200)?, (1, 1));
        assert_eq!(seen.get(old.id.as_bytes())?, None);
        assert_eq!(
            seen.get(claimed.id.as_bytes())?,
            Some(SeenState::Processing)
        );
        assert_eq!(seen.get(recent.id.as_bytes())?, Some(SeenState::Done));
        assert!(replies.get(b"old")?.is_none());
        assert!(replies.get(b"new")?.is_some());
        // Once the claim is finished, its entry goes at the next pass.
        seen.insert(claimed.id.as_bytes(), &SeenState::Done)?;
        assert_eq!(prune(&seen, &seen_at, &replies, 200)?, (1, 0));
        assert_eq!(seen_at.len(), 1);
        Ok(())
    }
}
