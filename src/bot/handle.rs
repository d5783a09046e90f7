//! The path of one inbound event: verify → claim (persistent dedupe) → open → dispatch →
//! reply, with the claim's completion, the stored reply and the outgoing event committed in
//! one sled transaction before anything is sent.

use nostr_sdk::nips::nip04;
use nostr_sdk::{Event, EventBuilder, EventId, Keys, Kind, PublicKey, Tag, ToBech32};
use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;
use sled::Transactional;

use super::failpoint;
use super::ingest::{self, Inbound, Scheme};
use super::keyring::Keyring;
use super::outbox::Outbox;
use super::publisher::{wrap_tagged, Note};
use crate::commands::{self, CommandError};
use crate::escrow::{Cancel, Dialect};
use crate::proto::gamma;
use crate::proto::nip15::{Order, OrderStatus};
use crate::proto::{ErrorCode, Refusal, Request, Response};
use crate::store::{trees, Store, StoreError, Typed};
use crate::util::unix_now;

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
    /// The response JSON that was sent.
    pub response: String,
    /// Unix seconds.
    pub at: u64,
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
    replies: Typed<StoredReply>,
    meta: Typed<u64>,
    outbox: Outbox,
    commands: commands::Context,
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
    /// Opens the trees the handler uses.
    pub fn new(
        store: &Store,
        keyring: Keyring,
        outbox: Outbox,
        commands: commands::Context,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            keyring,
            seen: store.tree(trees::SEEN)?,
            replies: store.tree(trees::REPLIES)?,
            meta: store.tree(trees::META)?,
            outbox,
            commands,
        })
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

    /// The unix time of the newest DM handled, if any.
    pub fn checkpoint(&self) -> Result<Option<u64>, StoreError> {
        self.meta.get(CHECKPOINT_KEY)
    }

    /// Handles one event from a relay.
    pub async fn handle(&self, event: &Event) -> Result<Outcome, HandleError> {
        // Verify before anything is recorded: an event id does not commit to its signature,
        // so recording a forged copy as seen would let it censor the genuine one.
        if event.verify().is_err() {
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
        failpoint::crash("claimed", self.seen.raw());
        // Boxed: every path (commands, escrow, Gamma) nested inline overflows the
        // compiler's layout depth for this future.
        match Box::pin(self.handle_claimed(event)).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                // Let a redelivery retry instead of losing the message.
                self.seen.remove(event.id.as_bytes())?;
                Err(e)
            }
        }
    }

    async fn handle_claimed(&self, event: &Event) -> Result<Outcome, HandleError> {
        let inbound = match ingest::open(&self.keyring, event).await {
            Ok(inbound) => inbound,
            Err(ignored) => {
                tracing::debug!(event_id = %event.id, kind = %event.kind, reason = %ignored, "ignored");
                self.seen.insert(event.id.as_bytes(), &SeenState::Done)?;
                return Ok(Outcome::Ignored(ignored.to_string()));
            }
        };
        if inbound.recipient != self.keyring.bot().public_key() {
            match self.to_merchant(&inbound).await {
                ToMerchant::Reply(note) => {
                    let reply = self.seal_note(&inbound, &note).await?;
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
        let Some((response, remember_as)) = self.respond(&inbound).await? else {
            self.seen.insert(event.id.as_bytes(), &SeenState::Done)?;
            return Ok(Outcome::Ignored("a reply, not a request".to_owned()));
        };
        let reply = self.seal_reply(&inbound, &response).await?;
        let remember =
            remember_as.map(|(id, cmd)| (reply_key(&inbound.sender, &id), cmd, response));
        self.commit(event.id, &reply, remember)?;
        failpoint::crash("committed", self.seen.raw());
        self.outbox.deliver(&reply).await?;
        Ok(Outcome::Replied(reply.id))
    }

    /// The response JSON to send, and the (request id, command) to remember it under.
    async fn respond(
        &self,
        inbound: &Inbound,
    ) -> Result<Option<(String, Option<(String, String)>)>, StoreError> {
        let fallback_re = inbound.refers_to.to_hex();
        let body = match &inbound.body {
            Ok(body) => body,
            Err(refusal) => {
                return Ok(Some((
                    Response::refused(fallback_re, refusal.clone()).to_json(),
                    None,
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
            return Ok(Some((
                Response::refused(fallback_re, refusal).to_json(),
                None,
            )));
        }
        let request = match Request::parse(body) {
            Ok(request) => request,
            Err(refusal) => {
                return Ok(Some((
                    Response::refused(fallback_re, refusal).to_json(),
                    None,
                )))
            }
        };
        if let Some(id) = &request.id {
            if let Some(stored) = self.replies.get(&reply_key(&inbound.sender, id))? {
                if stored.cmd == request.cmd {
                    return Ok(Some((stored.response, None)));
                }
                let refusal = Refusal::new(
                    ErrorCode::BadRequest,
                    format!(
                        "request id {id:?} was already used for {:?}; use a new id",
                        stored.cmd
                    ),
                );
                return Ok(Some((
                    Response::refused(id.clone(), refusal).to_json(),
                    None,
                )));
            }
        }
        let re = request.id.clone().unwrap_or(fallback_re);
        let response = match request.command() {
            Err(refusal) => Response::refused(re, refusal),
            Ok(command) => match commands::execute(&self.commands, inbound.sender, command).await {
                Ok(result) => Response::ok(re, result),
                Err(CommandError::Refused(refusal)) => Response::refused(re, refusal),
                Err(CommandError::Internal(detail)) => {
                    tracing::error!(cmd = %request.cmd, error = %detail, "command failed");
                    // Not remembered: an internal failure should be retryable.
                    return Ok(Some((
                        Response::refused(
                            re,
                            Refusal::new(ErrorCode::Internal, "internal error; try again later"),
                        )
                        .to_json(),
                        None,
                    )));
                }
            },
        };
        let remember = request.id.map(|id| (id, request.cmd));
        Ok(Some((response.to_json(), remember)))
    }

    /// Order traffic to a merchant: NIP-15 JSON messages and Gamma kind-16/17 rumors.
    async fn to_merchant(&self, inbound: &Inbound) -> ToMerchant {
        let Ok(body) = &inbound.body else {
            return ToMerchant::NotAnOrderMessage;
        };
        match inbound.kind {
            gamma::KIND_ORDER => self.gamma(inbound, body).await,
            gamma::KIND_RECEIPT => {
                ToMerchant::Silent("a Gamma payment receipt: soko sees payments at the mint")
            }
            _ => match self.nip15(inbound, body).await {
                Some(reply) => ToMerchant::Reply(Note::Text(reply)),
                None => ToMerchant::NotAnOrderMessage,
            },
        }
    }

    /// A Gamma kind-16 message from a buyer: a type-1 order goes to the escrow like a NIP-15
    /// one, a type-3 `cancelled` asks to cancel; anything else is not for the merchant side.
    async fn gamma(&self, inbound: &Inbound, body: &str) -> ToMerchant {
        let buyer = inbound.sender.to_hex();
        let order_id = gamma::order_id(&inbound.tags)
            .unwrap_or_default()
            .to_owned();
        let chat = |text: String| Note::Tagged {
            kind: 14,
            tags: gamma::chat_tags(&buyer, &order_id),
            content: text,
        };
        match gamma::message_type(&inbound.tags) {
            Some(1) => {}
            Some(3) if matches!(gamma::status(&inbound.tags), Some("cancelled" | "canceled")) => {
                return ToMerchant::Reply(match self
                    .commands
                    .escrow
                    .request_cancel(inbound.recipient, inbound.sender, &order_id, None)
                    .await
                {
                    Ok(Cancel::Recorded { number }) => chat(format!(
                        "Cancel request for order #{number} recorded: the merchant or soko's operator will refund it as Cashu ecash."
                    )),
                    Ok(Cancel::Refused(why)) => chat(format!("Cannot cancel: {why}")),
                    Err(e) => {
                        tracing::error!(error = %e, "recording a cancel failed");
                        chat("soko could not record the cancel right now; please send it again in a minute".to_owned())
                    }
                });
            }
            _ => return ToMerchant::Silent("a Gamma message a merchant does not act on"),
        }
        let refuse = |why: String| {
            ToMerchant::Reply(Note::Tagged {
                kind: gamma::KIND_ORDER,
                tags: gamma::status_tags(&buyer, &order_id, gamma::Status::Cancelled),
                content: format!("Order not accepted: {why}"),
            })
        };
        let order = match gamma::parse_order(&inbound.tags, body, &inbound.recipient.to_hex()) {
            Ok(order) => order,
            Err(why) => return refuse(why),
        };
        let zone = match self.only_zone(inbound, &order) {
            Ok(zone) => zone,
            Err(e) => {
                tracing::error!(error = %e, "reading the merchant's listings failed");
                return refuse(
                    "soko could not read the shop right now; please order again in a minute"
                        .to_owned(),
                );
            }
        };
        let buyer_npub = inbound.sender.to_bech32().unwrap_or_else(|_| buyer.clone());
        match self
            .commands
            .escrow
            .place(
                inbound.recipient,
                inbound.sender,
                inbound.scheme,
                Dialect::Gamma,
                order.to_nip15(&buyer_npub, zone.as_deref()),
            )
            .await
        {
            Ok(note) => ToMerchant::Reply(note),
            Err(e) => {
                tracing::error!(error = %e, "placing an order failed");
                refuse("soko could not take the order right now (internal error); please send it again in a minute".to_owned())
            }
        }
    }

    /// When a Gamma order names no shipping option: the stall's zone, if it has just one.
    fn only_zone(
        &self,
        inbound: &Inbound,
        order: &gamma::GammaOrder,
    ) -> Result<Option<String>, crate::market::MerchantError> {
        if order.shipping.is_some() {
            return Ok(None);
        }
        let merchants = &self.commands.merchants;
        let Some((first, _)) = order.items.first() else {
            return Ok(None);
        };
        let Some(product) = merchants.product(&inbound.recipient, first)? else {
            return Ok(None);
        };
        let Some(stall) = merchants.stall(&inbound.recipient, &product.stall_id)? else {
            return Ok(None);
        };
        Ok(match stall.shipping.as_slice() {
            [only] => Some(only.id.clone()),
            _ => None,
        })
    }

    /// A NIP-15 message (JSON with a `type`) to a merchant: orders go to the escrow. `None`
    /// for anything else, which then goes through the command path.
    async fn nip15(&self, inbound: &Inbound, body: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let kind = value.get("type")?.as_u64();
        let order_id = value
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let status = |message: String| {
            serde_json::to_string(&OrderStatus {
                id: order_id.clone(),
                kind: 2,
                message,
                paid: false,
                shipped: false,
            })
            .unwrap_or_default()
        };
        if kind != Some(0) {
            return Some(status(
                "this merchant takes NIP-15 orders (type 0); other message types are not accepted"
                    .to_owned(),
            ));
        }
        let order: Order = match serde_json::from_value(value) {
            Ok(order) => order,
            Err(e) => return Some(status(format!("Order not accepted: cannot read it ({e})"))),
        };
        match self
            .commands
            .escrow
            .place(
                inbound.recipient,
                inbound.sender,
                inbound.scheme,
                Dialect::Nip15,
                order,
            )
            .await
        {
            Ok(Note::Text(reply)) => Some(reply),
            Ok(Note::Tagged { content, .. }) => Some(content),
            Err(e) => {
                tracing::error!(error = %e, "placing an order failed");
                Some(status(
                    "soko could not take the order right now (internal error); please send it again in a minute"
                        .to_owned(),
                ))
            }
        }
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

    /// One transaction: the event is done, its reply is queued, and (for requests with an
    /// id) remembered. A crash before it leaves the event unhandled; after it, the outbox
    /// sends the reply on restart.
    fn commit(
        &self,
        handled: EventId,
        reply: &Event,
        remember: Option<(Vec<u8>, String, String)>,
    ) -> Result<(), HandleError> {
        let done = self.seen.encode(&SeenState::Done)?;
        let queued = self.outbox.tree().encode(&Outbox::entry(reply))?;
        let stored = match remember {
            Some((key, cmd, response)) => Some((
                key,
                self.replies.encode(&StoredReply {
                    cmd,
                    response,
                    at: unix_now(),
                })?,
            )),
            None => None,
        };
        let checkpoint = self.meta.encode(&unix_now())?;
        (
            self.seen.raw(),
            self.outbox.tree().raw(),
            self.replies.raw(),
            self.meta.raw(),
        )
            .transaction(|(seen, outbox, replies, meta)| {
                seen.insert(handled.as_bytes(), done.clone())?;
                outbox.insert(reply.id.as_bytes(), queued.clone())?;
                if let Some((key, value)) = &stored {
                    replies.insert(key.clone(), value.clone())?;
                }
                meta.insert(CHECKPOINT_KEY, checkpoint.clone())?;
                Ok(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => HandleError::Store(e.into()),
                TransactionError::Abort(()) => HandleError::Reply("transaction aborted".into()),
            })
    }
}

/// What order traffic to a merchant gets.
enum ToMerchant {
    /// This reply.
    Reply(Note),
    /// Nothing, for this reason.
    Silent(&'static str),
    /// Not order traffic: the command path answers it.
    NotAnOrderMessage,
}

/// A NIP-15 message: a JSON object with a numeric `type` and no `cmd`.
fn looks_like_nip15(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
        v.get("type").is_some_and(serde_json::Value::is_u64) && v.get("cmd").is_none()
    })
}

/// A DM from `keys` to `to` in `scheme`, optionally referring (`e` tag) to a message.
pub async fn seal_dm(
    keys: &Keys,
    to: PublicKey,
    scheme: Scheme,
    content: &str,
    refers_to: Option<EventId>,
) -> Result<Event, String> {
    let refers: Vec<Tag> = refers_to.map(Tag::event).into_iter().collect();
    match scheme {
        Scheme::Nip04 => {
            let ciphertext =
                nip04::encrypt(keys.secret_key(), &to, content).map_err(|e| e.to_string())?;
            EventBuilder::new(Kind::EncryptedDirectMessage, ciphertext)
                .tag(Tag::public_key(to))
                .tags(refers)
                .sign_with_keys(keys)
                .map_err(|e| e.to_string())
        }
        Scheme::Nip17 => EventBuilder::private_msg(keys, to, content, refers)
            .await
            .map_err(|e| e.to_string()),
    }
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
