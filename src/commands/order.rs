//! `order_deliver`: the merchant presents the buyer's delivery code; the escrow releases.

use serde_json::{json, Value};

use super::{merchant_key, CommandError, Context};
use crate::escrow::Delivery;
use crate::proto::{ErrorCode, OrderDeliverArgs, Refusal};

/// Checks the code and, if right, credits the merchant.
pub async fn deliver(ctx: &Context, args: OrderDeliverArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    match ctx
        .escrow
        .deliver(merchant, args.order, &args.code)
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?
    {
        Delivery::Released(sats) => Ok(json!({
            "order": args.order,
            "released_sat": sats.0,
            "balance_sat": ctx.escrow.balance(&merchant).map_err(|e| CommandError::Internal(e.to_string()))?.0,
        })),
        Delivery::Refused(why) => Err(Refusal::new(ErrorCode::Invalid, why).into()),
    }
}
