//! The paid-order fan-out: when an order is paid, every configured USSD bridge is asked to
//! text the merchant (an SMS [`Notice`], NIP-17 from the bot key) if the merchant has a
//! phone number, and every agent linked to the merchant gets an [`AgentNotice`] with the
//! order's number, amount and items, and the buyer's details only when the merchant shares
//! them. It sits above the escrow, markets and agents, and is given to the escrow as its
//! [`PaidOrderListener`].

use nostr_sdk::{Event, PublicKey, ToBech32};

use crate::agents::Links;
use crate::escrow::{NoticeError, PaidOrder, PaidOrderListener};
use crate::market::Merchants;
use crate::money::Sats;
use crate::outbound::{Publisher, Scheme};
use crate::proto::agents::{AgentNotice, AgentNoticeBody, NoticeItem, OrderPaidNotice};
use crate::proto::ussd::{Notice, NoticeBody, SmsNotice};

/// The longest SMS text soko sends (one GSM-7 message).
pub const SMS_LIMIT: usize = 160;

/// Tells bridges and agents of paid orders.
#[derive(Debug, Clone)]
pub struct PaidNotices {
    /// The `[ussd] bridges` of the config.
    bridges: Vec<PublicKey>,
    links: Links,
    merchants: Merchants,
    publisher: Publisher,
}

impl PaidNotices {
    /// Notices to `bridges` and to the agents `links` ties to each merchant.
    pub fn new(
        bridges: Vec<PublicKey>,
        links: Links,
        merchants: Merchants,
        publisher: Publisher,
    ) -> Self {
        Self {
            bridges,
            links,
            merchants,
            publisher,
        }
    }

    /// One SMS notice per bridge; none for a merchant without a phone number.
    async fn sms(&self, order: &PaidOrder<'_>) -> Result<Vec<Event>, NoticeError> {
        if self.bridges.is_empty() {
            return Ok(Vec::new());
        }
        let Some(phone) = self.merchants.phone(&order.merchant)? else {
            return Ok(Vec::new());
        };
        let shop = self.merchants.get(&order.merchant)?.name;
        let notice = Notice {
            v: 1,
            body: NoticeBody::Sms(SmsNotice {
                phone,
                text: paid_text(&shop, order.record.number, order.record.total),
            }),
        };
        self.sealed_by_bot(&self.bridges, &serde_json::to_string(&notice)?)
            .await
    }

    /// One notice per agent linked to the merchant.
    async fn agents(&self, order: &PaidOrder<'_>) -> Result<Vec<Event>, NoticeError> {
        let merchant = &order.merchant;
        let agents: Vec<PublicKey> = self
            .links
            .agents_of(merchant)?
            .into_iter()
            .map(|(agent, _)| agent)
            .collect();
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let record = order.record;
        let mut items = Vec::with_capacity(record.lines.len());
        for line in &record.lines {
            items.push(NoticeItem {
                product_id: line.product_id.clone(),
                name: self
                    .merchants
                    .product(merchant, &line.product_id)?
                    .map(|p| p.name),
                quantity: line.quantity,
            });
        }
        let buyer = if self.links.shares_buyer(merchant)? {
            order.buyer()?
        } else {
            None
        };
        let notice = AgentNotice {
            v: 1,
            body: AgentNoticeBody::OrderPaid(OrderPaidNotice {
                merchant: merchant.to_bech32().unwrap_or_else(|_| merchant.to_hex()),
                shop: self.merchants.get(merchant)?.name,
                order: record.number,
                amount_sat: record.total.0,
                items,
                buyer,
            }),
        };
        self.sealed_by_bot(&agents, &serde_json::to_string(&notice)?)
            .await
    }

    async fn sealed_by_bot(
        &self,
        to: &[PublicKey],
        content: &str,
    ) -> Result<Vec<Event>, NoticeError> {
        let bot = self.publisher.keyring().bot().public_key();
        let mut events = Vec::with_capacity(to.len());
        for reader in to {
            events.push(
                self.publisher
                    .seal_dm(&bot, *reader, Scheme::Nip17, content)
                    .await?,
            );
        }
        Ok(events)
    }
}

#[async_trait::async_trait]
impl PaidOrderListener for PaidNotices {
    async fn notices(&self, order: &PaidOrder<'_>) -> Result<Vec<Event>, NoticeError> {
        let mut events = self.sms(order).await?;
        events.extend(self.agents(order).await?);
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
