//! `merchant_add`: a new merchant with an identity soko manages, announced with a profile.

use nostr_sdk::EventBuilder;

use super::{CommandError, Context};
use crate::market::{merchants, Merchant, MerchantStatus};
use crate::proto::MerchantAddArgs;

/// Creates the merchant and adds its key to the keyring (so its DMs are read). An active
/// merchant's kind-0 profile is published at once; one added with a phone is pending, and
/// its profile goes out when its owner onboards over USSD.
pub async fn add(ctx: &Context, args: MerchantAddArgs) -> Result<Merchant, CommandError> {
    let (merchant, keys) = ctx.merchants.add(
        &args.name,
        args.lightning_address.as_deref(),
        args.phone.as_deref(),
    )?;
    ctx.publisher.keyring().add(keys.clone());
    if merchant.status == MerchantStatus::Active {
        ctx.publisher
            .publish_as(
                &keys.public_key(),
                EventBuilder::metadata(&merchants::profile(&merchant)),
            )
            .await
            .map_err(|e| CommandError::Internal(e.to_string()))?;
    }
    tracing::info!(merchant = %merchant.npub, status = ?merchant.status, "merchant added");
    Ok(merchant)
}
