//! Who else hears of a newly paid order, besides its buyer: a [`PaidOrderListener`] given
//! to the escrow at construction (soko's SMS bridges and the merchant's agents, wired above
//! the escrow, which knows neither). Its notices are signed, not queued: the escrow queues
//! them in the transaction that marks the order paid, so a crash can neither lose nor
//! duplicate them.

use nostr_sdk::{Event, PublicKey};

use super::query::Shipping;
use super::service::{EscrowError, EscrowService, OrderRecord};
use crate::market::MerchantError;
use crate::outbound::PublishError;
use crate::store::StoreError;

/// Hears of every newly paid order, once.
#[async_trait::async_trait]
pub trait PaidOrderListener: std::fmt::Debug + Send + Sync {
    /// The notices to queue with the paid state: signed, not yet queued. An error leaves
    /// the order unpaid for now; the payment watch tries it again.
    async fn notices(&self, order: &PaidOrder<'_>) -> Result<Vec<Event>, NoticeError>;
}

/// A listener that tells no one (a soko with no bridges and no agents, and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotices;

#[async_trait::async_trait]
impl PaidOrderListener for NoNotices {
    async fn notices(&self, _: &PaidOrder<'_>) -> Result<Vec<Event>, NoticeError> {
        Ok(Vec::new())
    }
}

/// A newly paid order, as a listener sees it.
#[derive(Debug)]
pub struct PaidOrder<'a> {
    /// The shop that sold it.
    pub merchant: PublicKey,
    /// The order, already in its paid state.
    pub record: &'a OrderRecord,
    escrow: &'a EscrowService,
}

impl<'a> PaidOrder<'a> {
    pub(super) fn new(
        merchant: PublicKey,
        record: &'a OrderRecord,
        escrow: &'a EscrowService,
    ) -> Self {
        Self {
            merchant,
            record,
            escrow,
        }
    }

    /// The buyer's shipping details, unsealed on demand: only a listener that shares them
    /// (an agent the merchant lets see buyers) opens them.
    pub fn buyer(&self) -> Result<Option<Shipping>, NoticeError> {
        self.escrow
            .shipping(self.record)
            .map_err(|e| NoticeError::Buyer(Box::new(e)))
    }
}

/// Why the notices for a paid order could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The merchant registry.
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    /// Signing a notice.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Encoding a notice.
    #[error("encoding a notice: {0}")]
    Encode(#[from] serde_json::Error),
    /// The buyer's details could not be opened.
    #[error("the buyer's details: {0}")]
    Buyer(Box<EscrowError>),
}
