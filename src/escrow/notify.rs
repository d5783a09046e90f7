//! Notices of paid orders. SMS (issue 5): when a merchant with a phone number gets a paid
//! order, every configured USSD bridge receives a [`Notice`] (NIP-17 DM from the bot key)
//! asking it to text the merchant. Agents (issue 6): every agent linked to the merchant
//! gets an [`AgentNotice`] with the order's number, amount and items, and the buyer's
//! details only when the merchant shares them. The notices are queued in the same
//! transaction as the paid state (see `receive_payment`), so a crash cannot lose or
//! duplicate them.

use nostr_sdk::{Event, PublicKey, ToBech32};

use super::service::{EscrowError, EscrowService, OrderRecord};
use crate::agents::Links;
use crate::money::Sats;
use crate::outbound::Scheme;
use crate::proto::agents::{AgentNotice, AgentNoticeBody, NoticeItem, OrderPaidNotice};
use crate::proto::ussd::{Notice, NoticeBody, SmsNotice};

/// The longest SMS text soko sends (one GSM-7 message).
pub const SMS_LIMIT: usize = 160;

impl EscrowService {
    /// The bridges that get SMS notices (the `[ussd] bridges` of the config).
    pub fn set_sms_bridges(&self, bridges: Vec<PublicKey>) {
        if let Ok(mut current) = self.inner.sms_bridges.write() {
            *current = bridges;
        }
    }

    /// The links whose agents hear of paid orders.
    pub fn set_agent_links(&self, links: Links) {
        if let Ok(mut current) = self.inner.agent_links.write() {
            *current = Some(links);
        }
    }

    /// The notices to the agents linked to `merchant` for a newly paid order: signed, not
    /// yet queued. Buyer details only if the merchant shares them.
    pub(super) async fn agent_notices(
        &self,
        merchant: &PublicKey,
        record: &OrderRecord,
    ) -> Result<Vec<Event>, EscrowError> {
        let links = self.inner.agent_links.read().ok().and_then(|l| l.clone());
        let Some(links) = links else {
            return Ok(Vec::new());
        };
        let agents = links.agents_of(merchant)?;
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let merchants = &self.inner.merchants;
        let mut items = Vec::with_capacity(record.lines.len());
        for line in &record.lines {
            items.push(NoticeItem {
                product_id: line.product_id.clone(),
                name: merchants
                    .product(merchant, &line.product_id)?
                    .map(|p| p.name),
                quantity: line.quantity,
            });
        }
        let buyer = if links.shares_buyer(merchant)? {
            self.shipping(record)?
        } else {
            None
        };
        let notice = AgentNotice {
            v: 1,
            body: AgentNoticeBody::OrderPaid(OrderPaidNotice {
                merchant: merchant.to_bech32().unwrap_or_else(|_| merchant.to_hex()),
                shop: merchants.get(merchant)?.name,
                order: record.number,
                amount_sat: record.total.0,
                items,
                buyer,
            }),
        };
        let content =
            serde_json::to_string(&notice).map_err(|e| EscrowError::Publish(e.to_string()))?;
        let bot = self.inner.publisher.keyring().bot().public_key();
        let mut events = Vec::with_capacity(agents.len());
        for (agent, _) in agents {
            events.push(
                self.inner
                    .publisher
                    .seal_dm(&bot, agent, Scheme::Nip17, &content)
                    .await
                    .map_err(|e| EscrowError::Publish(e.to_string()))?,
            );
        }
        Ok(events)
    }

    /// The notices for a newly paid order: one per bridge, none for a merchant without a
    /// phone number. Signed, not yet queued.
    pub(super) async fn paid_notices(
        &self,
        merchant: &PublicKey,
        record: &OrderRecord,
    ) -> Result<Vec<Event>, EscrowError> {
        let bridges = self
            .inner
            .sms_bridges
            .read()
            .map(|b| b.clone())
            .unwrap_or_default();
        if bridges.is_empty() {
            return Ok(Vec::new());
        }
        let Some(phone) = self.inner.merchants.phone(merchant)? else {
            return Ok(Vec::new());
        };
        let shop = self.inner.merchants.get(merchant)?.name;
        let notice = Notice {
            v: 1,
            body: NoticeBody::Sms(SmsNotice {
                phone,
                text: paid_text(&shop, record.number, record.total),
            }),
        };
        let content =
            serde_json::to_string(&notice).map_err(|e| EscrowError::Publish(e.to_string()))?;
        let bot = self.inner.publisher.keyring().bot().public_key();
        let mut events = Vec::with_capacity(bridges.len());
        for bridge in bridges {
            events.push(
                self.inner
                    .publisher
                    .seal_dm(&bot, bridge, Scheme::Nip17, &content)
                    .await
                    .map_err(|e| EscrowError::Publish(e.to_string()))?,
            );
        }
        Ok(events)
    }
}

/// The SMS for a paid order: order number, amount and what to do; no buyer data. The shop
/// name is shortened so the text fits [`SMS_LIMIT`].
pub fn paid_text(shop: &str, number: u64, total: Sats) -> String {
    let rest = format!(
        ": order #{number} is paid ({} sat), held by soko. Deliver it, then enter the buyer's code in menu 2.",
        total.0
    );
    let room = SMS_LIMIT.saturating_sub(rest.chars().count());
    let shop: String = if shop.chars().count() > room {
        shop.chars()
            .take(room.saturating_sub(1))
            .chain(std::iter::once('…'))
            .collect()
    } else {
        shop.to_owned()
    };
    format!("{shop}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paid_text_fits_one_sms() {
        let short = paid_text("Mama Duka", 12, Sats(1120));
        assert_eq!(
            short,
            "Mama Duka: order #12 is paid (1120 sat), held by soko. Deliver it, then enter the buyer's code in menu 2."
        );
        let long = paid_text(&"Ä".repeat(64), u64::MAX, Sats(u64::MAX));
        assert!(long.chars().count() <= SMS_LIMIT, "{long}");
        assert!(long.contains(&u64::MAX.to_string()));
    }
}
