//! `order_deliver`: the merchant presents the buyer's delivery code; the escrow releases.
//! `order_refund`: the operator sends a paid, undelivered order's money back to the buyer.

use serde_json::{json, Value};

use super::{merchant_key, CommandError, Context};
use crate::escrow::{Delivery, EscrowError, Payout};
use crate::proto::{ErrorCode, OrderDeliverArgs, OrderRefArgs, Refusal};

/// Checks the code and, if right, credits the merchant.
pub async fn deliver(ctx: &Context, args: OrderDeliverArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    match ctx
        .escrow
        .deliver(merchant, args.order, &args.code)
        .await
        .map_err(internal)?
    {
        Delivery::Released(sats) => {
            // Released to the balance; then straight on to the merchant's Lightning address,
            // if it has one. A failed payout leaves the balance in soko, and says why.
            let payout = match ctx.escrow.pay_out(merchant).await.map_err(internal)? {
                Payout::NotConfigured | Payout::Nothing => json!(null),
                Payout::Sent { amount, fee } => json!({"paid_sat": amount.0, "fee_sat": fee.0}),
                Payout::Failed(why) => json!({"error": why}),
            };
            Ok(json!({
                "order": args.order,
                "released_sat": sats.0,
                "payout": payout,
                "balance_sat": ctx.escrow.balance(&merchant).map_err(internal)?.0,
            }))
        }
        Delivery::Refused(why) => Err(Refusal::new(ErrorCode::Invalid, why).into()),
    }
}

/// Refunds the order to its buyer as a Cashu token DM.
pub async fn refund(ctx: &Context, args: OrderRefArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    match ctx
        .escrow
        .refund(merchant, args.order)
        .await
        .map_err(internal)?
    {
        Delivery::Released(sats) => Ok(json!({ "order": args.order, "refunded_sat": sats.0 })),
        Delivery::Refused(why) => Err(Refusal::new(ErrorCode::Invalid, why).into()),
    }
}

fn internal(e: EscrowError) -> CommandError {
    CommandError::Internal(e.to_string())
}
