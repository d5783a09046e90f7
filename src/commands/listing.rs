//! `stall_put` and `product_put`: save a merchant's NIP-15 listing and publish it under the
//! merchant's key (kinds 30017 / 30018, `d` = the listing id, content = the JSON).

use nostr_sdk::{EventBuilder, Kind, Tag};
use serde_json::{json, Value};

use super::{merchant_key, CommandError, Context};
use crate::proto::{ProductPutArgs, StallPutArgs};

/// Saves and publishes a stall.
pub async fn put_stall(ctx: &Context, args: StallPutArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.put_stall(&merchant, &args.stall)?;
    publish(
        ctx,
        &merchant,
        Kind::Custom(30017),
        &args.stall.id,
        &args.stall,
    )
    .await
}

/// Saves and publishes a product.
pub async fn put_product(ctx: &Context, args: ProductPutArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.put_product(&merchant, &args.product)?;
    publish(
        ctx,
        &merchant,
        Kind::Custom(30018),
        &args.product.id,
        &args.product,
    )
    .await
}

async fn publish<T: serde::Serialize>(
    ctx: &Context,
    merchant: &nostr_sdk::PublicKey,
    kind: Kind,
    id: &str,
    content: &T,
) -> Result<Value, CommandError> {
    let content =
        serde_json::to_string(content).map_err(|e| CommandError::Internal(e.to_string()))?;
    let builder = EventBuilder::new(kind, content).tag(Tag::identifier(id));
    let event_id = ctx
        .publisher
        .publish_as(merchant, builder)
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    Ok(json!({ "event_id": event_id.to_hex() }))
}
