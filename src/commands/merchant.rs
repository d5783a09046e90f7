//! `merchant_add`: a new merchant with an identity soko manages, announced with a profile.

use nostr_sdk::{EventBuilder, Metadata};

use super::{CommandError, Context};
use crate::market::Merchant;
use crate::proto::MerchantAddArgs;

/// Creates the merchant, adds its key to the keyring (so its DMs are read) and publishes
/// its kind-0 profile under its own key.
pub async fn add(ctx: &Context, args: MerchantAddArgs) -> Result<Merchant, CommandError> {
    let (merchant, keys) = ctx.merchants.add(
        &args.name,
        args.lightning_address.as_deref(),
        args.phone.as_deref(),
    )?;
    ctx.publisher.keyring().add(keys.clone());
    let profile = Metadata::new()
        .name(&merchant.name)
        .about("A shop on soko. Order with any NIP-15 client.");
    ctx.publisher
        .publish_as(&keys.public_key(), EventBuilder::metadata(&profile))
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    tracing::info!(merchant = %merchant.npub, "merchant added");
    Ok(merchant)
}
