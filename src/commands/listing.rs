//! `stall_put` and `product_put`: save a merchant's NIP-15 listing and publish it under the
//! merchant's key (kinds 30017 / 30018, `d` = the listing id, content = the JSON; a
//! product's categories as `t` tags).

use serde_json::{json, Value};

use super::{merchant_key, CommandError, Context};
use crate::market::listing::{self, ListingError};
use crate::proto::{ProductPutArgs, StallPutArgs};

/// Saves and publishes a stall.
pub async fn put_stall(ctx: &Context, args: StallPutArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    let event_id = listing::put_stall(&ctx.merchants, &ctx.publisher, &merchant, &args.stall)
        .await
        .map_err(listing_error)?;
    Ok(json!({ "event_id": event_id.to_hex() }))
}

/// Saves and publishes a product.
pub async fn put_product(ctx: &Context, args: ProductPutArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    let mut product = args.product;
    product.categories =
        ctx.merchants
            .categories_for(&merchant, &product.id, args.categories.as_deref())?;
    let event_id = listing::put_product(&ctx.merchants, &ctx.publisher, &merchant, &product)
        .await
        .map_err(listing_error)?;
    Ok(json!({ "event_id": event_id.to_hex() }))
}

/// A registry refusal as the sender's refusal; a publishing failure is internal.
pub(super) fn listing_error(e: ListingError) -> CommandError {
    match e {
        ListingError::Merchant(e) => e.into(),
        ListingError::Publish(why) => CommandError::Internal(why),
    }
}
