//! The merchant inbox: order traffic a buyer's client sends to a merchant's npub. NIP-15
//! JSON orders (type 0) and Gamma (NIP-17 kind 16) orders go to the escrow, a Gamma cancel
//! asks the escrow to cancel; anything else is not order traffic and goes on to the command
//! path. The bot opens the message and commits and sends what this returns.

use nostr_sdk::{PublicKey, ToBech32};

use crate::escrow::{Dialect, EscrowError, EscrowService};
use crate::market::Merchants;
use crate::outbound::{Note, Scheme};
use crate::proto::nip15::{clip_echo, Order, OrderStatus, MAX_ORDER_ID_BYTES};
use crate::proto::{gamma, gamma_listing, shopstr};

/// A decrypted message to one of the merchants soko keeps.
#[derive(Debug, Clone, Copy)]
pub struct OrderMessage<'a> {
    /// Its author (the buyer).
    pub sender: PublicKey,
    /// The merchant it is addressed to.
    pub recipient: PublicKey,
    /// How it was encrypted; replies use the same scheme.
    pub scheme: Scheme,
    /// 4 for NIP-04, or the rumor's kind (14, or 16/17 for Gamma order messages).
    pub kind: u16,
    /// Its tags (the rumor's, for NIP-17): Gamma order messages carry their data there.
    pub tags: &'a [Vec<String>],
    /// The plaintext.
    pub body: &'a str,
}

/// What order traffic to a merchant gets.
#[derive(Debug)]
pub enum ToMerchant {
    /// This reply.
    Reply(Note),
    /// Nothing, for this reason.
    Silent(&'static str),
    /// Not order traffic: the command path answers it.
    NotAnOrderMessage,
}

/// Where order traffic to merchants goes.
#[derive(Debug, Clone)]
pub struct MerchantInbox {
    escrow: EscrowService,
    merchants: Merchants,
}

impl MerchantInbox {
    /// An inbox handing orders to `escrow`, reading shops from `merchants`.
    pub fn new(escrow: EscrowService, merchants: Merchants) -> Self {
        Self { escrow, merchants }
    }

    /// Order traffic to a merchant: NIP-15 JSON messages and Gamma kind-16/17 rumors.
    pub async fn receive(&self, message: &OrderMessage<'_>) -> ToMerchant {
        let body = message.body;
        match message.kind {
            gamma::KIND_ORDER => self.gamma(message, body).await,
            gamma::KIND_RECEIPT => {
                ToMerchant::Silent("a Gamma payment receipt: soko sees payments at the mint")
            }
            14 if shopstr::read(message.tags, body, &message.recipient.to_hex()).is_some() => {
                self.shopstr(message, body).await
            }
            _ => match self.nip15(message, body).await {
                Some(reply) => ToMerchant::Reply(Note::Text(reply)),
                None => ToMerchant::NotAnOrderMessage,
            },
        }
    }

    /// A Gamma kind-16 message from a buyer: a type-1 order goes to the escrow like a NIP-15
    /// one, a type-3 `cancelled` asks to cancel; anything else is not for the merchant side.
    async fn gamma(&self, message: &OrderMessage<'_>, body: &str) -> ToMerchant {
        let buyer = message.sender.to_hex();
        // Echoed in every answer: clipped, so an oversized id cannot make them unsendable.
        let order_id = clip_echo(
            gamma::order_id(message.tags).unwrap_or_default(),
            MAX_ORDER_ID_BYTES,
        );
        let chat = |text: String| Note::Tagged {
            kind: 14,
            tags: gamma::chat_tags(&buyer, &order_id),
            content: text,
        };
        match gamma::message_type(message.tags) {
            Some(1) => {}
            Some(3) if matches!(gamma::status(message.tags), Some("cancelled" | "canceled")) => {
                return ToMerchant::Reply(match self
                    .escrow
                    .request_cancel(message.recipient, message.sender, &order_id, None)
                    .await
                {
                    Ok(number) => chat(format!(
                        "Cancel request for order #{number} recorded: the merchant or soko's operator will refund it as Cashu ecash."
                    )),
                    Err(EscrowError::Refused(why)) => chat(format!("Cannot cancel: {why}")),
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
        let mut order = match gamma::parse_order(message.tags, body, &message.recipient.to_hex()) {
            Ok(order) => order,
            Err(why) => return refuse(why),
        };
        let zone = match self.zone(message, &order) {
            Ok(zone) => zone,
            Err(e) => {
                tracing::error!(error = %e, "reading the merchant's listings failed");
                return refuse(
                    "soko could not read the shop right now; please order again in a minute"
                        .to_owned(),
                );
            }
        };
        let buyer_npub = message.sender.to_bech32().unwrap_or_else(|_| buyer.clone());
        order.shipping = None;
        let order = order.to_nip15(&buyer_npub, zone.as_deref());
        if let Err(oversize) = order.check_bounds() {
            return refuse(format!("too_large: {oversize}"));
        }
        match self
            .escrow
            .place(
                message.recipient,
                message.sender,
                message.scheme,
                Dialect::Gamma,
                order,
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

    /// The shipping zone of a Gamma order, in the stall of its first item: the one its
    /// 30406 shipping option names (by the `d` soko publishes for the zone, or the zone id),
    /// or, when it names none, the stall's zone if it has just one. A name that matches no
    /// zone is passed on as it is, for the escrow to refuse.
    fn zone(
        &self,
        message: &OrderMessage<'_>,
        order: &gamma::GammaOrder,
    ) -> Result<Option<String>, crate::market::MerchantError> {
        let stall = match order.items.first() {
            None => None,
            Some((first, _)) => self.stall_of(message, first)?,
        };
        Ok(match (&order.shipping, stall) {
            (Some(named), Some(stall)) => Some(
                gamma_listing::resolve_zone(&stall, named)
                    .map_or_else(|| named.clone(), |zone| zone.id.clone()),
            ),
            (Some(named), None) => Some(named.clone()),
            (None, Some(stall)) => only_zone(&stall),
            (None, None) => None,
        })
    }

    /// The stall selling product `first`, when both exist.
    fn stall_of(
        &self,
        message: &OrderMessage<'_>,
        first: &str,
    ) -> Result<Option<crate::proto::nip15::Stall>, crate::market::MerchantError> {
        let merchants = &self.merchants;
        match merchants.product(&message.recipient, first)? {
            None => Ok(None),
            Some(product) => merchants.stall(&message.recipient, &product.stall_id),
        }
    }

    /// The zone of the stall selling product `first`, if the stall has just one.
    fn zone_of(
        &self,
        message: &OrderMessage<'_>,
        first: &str,
    ) -> Result<Option<String>, crate::market::MerchantError> {
        Ok(self.stall_of(message, first)?.as_ref().and_then(only_zone))
    }

    /// A Shopstr kind-14 message about an order. Every answer goes to the buyer's own key
    /// (`b`), not to the throwaway key that signed the seal: Shopstr reads only gift wraps
    /// addressed to the buyer. So the escrow sends them itself, and the bot sends nothing.
    async fn shopstr(&self, message: &OrderMessage<'_>, body: &str) -> ToMerchant {
        let merchant = message.recipient;
        let Some(read) = shopstr::read(message.tags, body, &merchant.to_hex()) else {
            return ToMerchant::NotAnOrderMessage;
        };
        let order_id = clip_echo(
            gamma::order_id(message.tags).unwrap_or_default(),
            MAX_ORDER_ID_BYTES,
        );
        let named = message
            .tags
            .iter()
            .find(|t| t.first().map(String::as_str) == Some("b"))
            .and_then(|t| t.get(1))
            .and_then(|b| PublicKey::parse(b).ok());
        let buyer = named.unwrap_or(message.sender);
        let say = |status: Option<shopstr::Status>, text: String| Note::Tagged {
            kind: 14,
            tags: shopstr::info_tags(&buyer.to_hex(), &order_id, status),
            content: text,
        };
        let (note, token_back) = match read {
            Ok(shopstr::Message::Info) => {
                return ToMerchant::Silent("Shopstr order information: nothing to act on")
            }
            Ok(shopstr::Message::OtherPayment(method)) => (
                say(
                    None,
                    format!(
                        "soko's escrow did not receive this payment ({method}): it holds only payments made with Cashu ecash of soko's mint in the order message itself. A payment made another way is between you and the merchant, without escrow or delivery code."
                    ),
                ),
                None,
            ),
            Err(why) => (
                say(
                    Some(shopstr::Status::Canceled),
                    format!("Order not accepted: {why}."),
                ),
                None,
            ),
            Ok(shopstr::Message::EcashOrder(order)) => {
                match self.shopstr_order(message, buyer, order).await {
                    Ok(()) => return ToMerchant::Silent("a Shopstr order: answered by the escrow"),
                    Err((why, token)) => (
                        say(
                            Some(shopstr::Status::Canceled),
                            format!("Order not accepted: {why}."),
                        ),
                        token,
                    ),
                }
            }
        };
        let note = match (note, token_back) {
            (
                Note::Tagged {
                    kind,
                    tags,
                    content,
                },
                Some(token),
            ) => Note::Tagged {
                kind,
                tags,
                content: format!("{content} Your payment was not taken; here it is back: {token}"),
            },
            (note, _) => note,
        };
        match self
            .escrow
            .answer(&merchant, buyer, message.scheme, &note)
            .await
        {
            Ok(()) => ToMerchant::Silent("a Shopstr message: answered by the escrow"),
            Err(e) => {
                tracing::error!(error = %e, "answering a Shopstr message failed");
                ToMerchant::Silent("a Shopstr message whose answer failed")
            }
        }
    }

    /// A Shopstr order paid with ecash, to the escrow; or why not, with the token to give
    /// back when it was not taken.
    async fn shopstr_order(
        &self,
        message: &OrderMessage<'_>,
        buyer: PublicKey,
        order: shopstr::EcashOrder,
    ) -> Result<(), (String, Option<String>)> {
        let token = order.token.clone();
        let zone = match self.zone_of(message, &order.item.0) {
            Ok(zone) => zone,
            Err(e) => {
                tracing::error!(error = %e, "reading the merchant's listings failed");
                return Err((
                    "soko could not read the shop right now; please order again in a minute"
                        .to_owned(),
                    Some(token),
                ));
            }
        };
        let buyer_npub = buyer.to_bech32().unwrap_or_else(|_| buyer.to_hex());
        let nip15 = order.to_nip15(&buyer_npub, zone.as_deref());
        if let Err(oversize) = nip15.check_bounds() {
            return Err((format!("too_large: {oversize}"), Some(token)));
        }
        self.escrow
            .take_ecash_order(message.recipient, buyer, message.scheme, nip15, &token)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "taking an order paid with ecash failed");
                (
                    "soko could not take the order right now (internal error); please order again in a minute"
                        .to_owned(),
                    Some(token.clone()),
                )
            })
    }

    /// A NIP-15 message (JSON with a `type`) to a merchant: orders go to the escrow. `None`
    /// for anything else, which then goes through the command path.
    async fn nip15(&self, message: &OrderMessage<'_>, body: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let kind = value.get("type")?.as_u64();
        let order_id = clip_echo(
            value.get("id").and_then(|v| v.as_str()).unwrap_or_default(),
            MAX_ORDER_ID_BYTES,
        );
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
        if let Err(oversize) = order.check_bounds() {
            return Some(status(format!("Order not accepted: too_large: {oversize}")));
        }
        match self
            .escrow
            .place(
                message.recipient,
                message.sender,
                message.scheme,
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
}

/// The stall's zone, if it has just one.
fn only_zone(stall: &crate::proto::nip15::Stall) -> Option<String> {
    match stall.shipping.as_slice() {
        [only] => Some(only.id.clone()),
        _ => None,
    }
}
