//! `ussd_hop`: one USSD gateway callback relayed by a trusted bridge; the result is the
//! next screen (kinds/ussd.md). Anyone but a configured bridge is refused.

use nostr_sdk::PublicKey;
use serde_json::Value;

use super::{to_value, CommandError, Context};
use crate::proto::ussd::{UssdHopArgs, UssdReset};
use crate::proto::{ErrorCode, Refusal};
use crate::ussd::UssdError;

/// Answers a hop with the next screen.
pub async fn hop(
    ctx: &Context,
    sender: PublicKey,
    args: UssdHopArgs,
) -> Result<Value, CommandError> {
    if !ctx.ussd.is_bridge(&sender) {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "only USSD bridges listed in soko's [ussd] bridges may send ussd_hop",
        )
        .into());
    }
    match ctx.ussd.hop(sender, args).await {
        Ok(screen) => to_value(screen),
        Err(UssdError::Refused(refusal)) => Err(refusal.into()),
        // Details go to the log only; they never carry the phone number.
        Err(e) => Err(CommandError::Internal(format!("ussd: {e}"))),
    }
}

/// `ussd_reset` (operator): lifts the merchant's PIN lock; with `new_code`, forgets its PIN
/// and issues a new activation code.
pub async fn reset(
    ctx: &Context,
    merchant: PublicKey,
    new_code: bool,
) -> Result<UssdReset, CommandError> {
    let merchant_npub = ctx.merchants.get(&merchant)?.npub;
    let activation_code = match ctx.ussd.reset(&merchant, new_code).await {
        Ok(code) => code.map(|c| c.reveal()),
        Err(UssdError::Merchant(e)) => return Err(e.into()),
        Err(e) => return Err(CommandError::Internal(format!("ussd: {e}"))),
    };
    tracing::info!(merchant = %merchant_npub, new_code, "USSD access reset by the operator");
    Ok(UssdReset {
        merchant: merchant_npub,
        unlocked: true,
        activation_code,
    })
}
