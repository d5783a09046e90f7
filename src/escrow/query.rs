//! Reading orders for the merchant's own views (the USSD menus): a merchant's orders newest
//! first, and the buyer's shipping details, which are stored sealed.

use nostr_sdk::PublicKey;

use super::service::{EscrowError, EscrowService, OrderRecord};
use super::state::EscrowState;
use crate::proto::nip15::Order;
pub use crate::proto::nip15::Shipping;

impl EscrowService {
    /// A merchant's orders, newest first, those whose state `keep` accepts, at most `limit`.
    pub fn orders_of(
        &self,
        merchant: &PublicKey,
        limit: usize,
        keep: impl Fn(EscrowState) -> bool,
    ) -> Result<Vec<OrderRecord>, EscrowError> {
        let orders = &self.inner.orders;
        let mut found = Vec::new();
        for entry in orders.raw().scan_prefix(merchant.to_bytes()).rev() {
            if found.len() >= limit {
                break;
            }
            let (_, bytes) = entry.map_err(crate::store::StoreError::from)?;
            let record = orders.decode(&bytes)?;
            if keep(record.state) {
                found.push(record);
            }
        }
        Ok(found)
    }

    /// The buyer's shipping details of an order, unsealed; `None` for orders stored
    /// before they were kept.
    pub fn shipping(&self, record: &OrderRecord) -> Result<Option<Shipping>, EscrowError> {
        let Some(sealed) = &record.shipping_sealed else {
            return Ok(None);
        };
        let json = self.inner.vault.unseal(sealed)?;
        Ok(Some(serde_json::from_str(&json)?))
    }

    pub(super) fn seal_shipping(&self, order: &Order) -> Result<Option<String>, EscrowError> {
        let json = serde_json::to_string(&Shipping::of(order))?;
        Ok(Some(self.inner.vault.seal(&json)?))
    }
}
