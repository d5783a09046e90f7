//! `merchant_add`: a new merchant with an identity soko manages, announced with a profile.

use serde::Serialize;

use super::{CommandError, Context};
use crate::market::{Merchant, MerchantStatus};
use crate::proto::MerchantAddArgs;

/// `merchant_add`'s result: the merchant, and for one added with a phone its one-time
/// activation code (shown here only; soko keeps a hash).
#[derive(Debug, Serialize)]
pub struct Added {
    /// The merchant.
    #[serde(flatten)]
    pub merchant: Merchant,
    /// What its owner types on the first USSD dial, before choosing a PIN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_code: Option<String>,
}

/// Creates the merchant and adds its key to the keyring (so its DMs are read). An active
/// merchant's kind-0 profile and kind-10050 DM relay list are published at once; one added with a phone is pending, and
/// its profile goes out when its owner onboards over USSD with the activation code.
pub async fn add(ctx: &Context, args: MerchantAddArgs) -> Result<Added, CommandError> {
    let (merchant, keys) = ctx.merchants.add(
        &args.name,
        args.lightning_address.as_deref(),
        args.phone.as_deref(),
    )?;
    ctx.publisher.keyring().add(keys.clone());
    // A crash before this leaves a pending merchant without a code: `ussd_reset` with
    // `new_code` issues one.
    let activation_code = match merchant.status {
        MerchantStatus::Pending => {
            Some(ctx.merchants.issue_activation(&keys.public_key())?.reveal())
        }
        MerchantStatus::Active => None,
    };
    if merchant.status == MerchantStatus::Active {
        // Its profile and NIP-17 DM relay list (issue 15).
        crate::market::listing::sync_merchant(&ctx.merchants, &ctx.publisher, &keys.public_key())
            .await
            .map_err(|e| CommandError::Internal(e.to_string()))?;
    }
    tracing::info!(merchant = %merchant.npub, status = ?merchant.status, "merchant added");
    Ok(Added {
        merchant,
        activation_code,
    })
}
