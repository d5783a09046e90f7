//! Saving and publishing a merchant's listings: one path for the operator's commands, the
//! merchant's USSD menus and the proposals merchants approve. Records first (with every
//! check [`Merchants`] makes), then the event under the merchant's key through the durable
//! outbox: kind 30017 / 30018 with `d` = the listing's id, or a NIP-09 kind-5 deletion.

use nostr_sdk::nips::nip01::Coordinate;
use nostr_sdk::nips::nip09::EventDeletionRequest;
use nostr_sdk::{EventBuilder, EventId, Kind, PublicKey, Tag};

use super::{MerchantError, Merchants};
use crate::outbound::Publisher;
use crate::proto::nip15::{Product, Stall};
use crate::proto::nip15::{KIND_PRODUCT, KIND_STALL};

/// Why a listing was not saved or published.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// The registry refused it (explained) or failed.
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    /// Signing or queueing the event failed.
    #[error("publishing: {0}")]
    Publish(String),
}

/// Saves and publishes a stall.
pub async fn put_stall(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    stall: &Stall,
) -> Result<EventId, ListingError> {
    merchants.put_stall(merchant, stall)?;
    publish(publisher, merchant, KIND_STALL, &stall.id, stall).await
}

/// Saves and publishes a product.
pub async fn put_product(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    product: &Product,
) -> Result<EventId, ListingError> {
    merchants.put_product(merchant, product)?;
    publish(publisher, merchant, KIND_PRODUCT, &product.id, product).await
}

/// Publishes a product as soko holds it, when its record changed on another path: its
/// stock in an order's paid commit, or its return to sale.
pub async fn republish_product(
    publisher: &Publisher,
    merchant: &PublicKey,
    product: &Product,
) -> Result<EventId, ListingError> {
    publish(publisher, merchant, KIND_PRODUCT, &product.id, product).await
}

/// Deletes a stall or product from soko's records and publishes its deletion.
pub async fn delete(
    merchants: &Merchants,
    publisher: &Publisher,
    merchant: &PublicKey,
    kind: u16,
    id: &str,
    reason: &str,
) -> Result<EventId, ListingError> {
    merchants.delete_listing(merchant, kind, id)?;
    publisher
        .publish_as(merchant, deletion(merchant, kind, id, reason))
        .await
        .map_err(|e| ListingError::Publish(e.to_string()))
}

/// The NIP-09 deletion of a merchant's listing, by its coordinate (`a` tag), so it covers
/// every version of the replaceable event.
pub fn deletion(merchant: &PublicKey, kind: u16, id: &str, reason: &str) -> EventBuilder {
    let request = EventDeletionRequest::new()
        .coordinate(Coordinate::new(Kind::from(kind), *merchant).identifier(id))
        .reason(reason);
    EventBuilder::delete(request)
}

async fn publish<T: serde::Serialize>(
    publisher: &Publisher,
    merchant: &PublicKey,
    kind: u16,
    id: &str,
    content: &T,
) -> Result<EventId, ListingError> {
    let content =
        serde_json::to_string(content).map_err(|e| ListingError::Publish(e.to_string()))?;
    let builder = EventBuilder::new(Kind::from(kind), content).tag(Tag::identifier(id));
    publisher
        .publish_as(merchant, builder)
        .await
        .map_err(|e| ListingError::Publish(e.to_string()))
}
