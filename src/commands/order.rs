//! `order_deliver`: the merchant presents the buyer's delivery code; the escrow releases.
//! `order_refund`: the operator sends an order's money back to the buyer.
//! `order_dispute`: the operator holds an order for review.
//! `order_release`: the operator decides a disputed order for the merchant.
//! `order_cancel`: the buyer asks to cancel a paid order before delivery.

use nostr_sdk::PublicKey;
use serde_json::{json, Value};

use super::{merchant_key, CommandError, Context};
use crate::escrow::{Payout, RefundPlan, Settled};
use crate::proto::{OrderCancelArgs, OrderDeliverArgs, OrderRefArgs};

/// Checks the code and, if right, credits the merchant.
pub async fn deliver(ctx: &Context, args: OrderDeliverArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    let settled = ctx
        .escrow
        .deliver_and_pay_out(merchant, args.order, &args.code)
        .await?;
    Ok(released(args.order, &settled))
}

/// Releases a disputed order to the merchant, then pays out as a delivery does.
pub async fn release(ctx: &Context, args: OrderRefArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    let settled = ctx.escrow.release_and_pay_out(merchant, args.order).await?;
    Ok(released(args.order, &settled))
}

/// The reply to a delivery or release: the credit, the payout that followed (`null` without
/// a destination; pending when the mint took it but has not settled it), the balance left.
fn released(order: u64, settled: &Settled) -> Value {
    let payout = match &settled.payout {
        Payout::NotConfigured | Payout::Nothing => json!(null),
        Payout::Sent { amount, fee } => json!({"paid_sat": amount.0, "fee_sat": fee.0}),
        Payout::Token(amount) => json!({"token_sat": amount.0}),
        Payout::Pending(amount) => json!({"pending_sat": amount.0}),
        Payout::Failed(why) => json!({"error": why.to_string()}),
    };
    json!({
        "order": order,
        "released_sat": settled.credited.0,
        "payout": payout,
        "balance_sat": settled.balance.0,
    })
}

/// Refunds the order to its buyer: over Lightning when the buyer's cancel named an address,
/// as a Cashu token DM otherwise.
pub async fn refund(ctx: &Context, args: OrderRefArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    let refunded = ctx.escrow.refund(merchant, args.order).await?;
    let record = ctx
        .escrow
        .order(&merchant, args.order)?
        .ok_or_else(|| CommandError::Internal("a refunded order vanished".to_owned()))?;
    let via = match record.refund {
        Some(RefundPlan::Lightning { .. }) => "lightning",
        _ => "token",
    };
    Ok(json!({
        "order": args.order,
        "refund_sat": refunded.0,
        "state": record.state,
        "via": via,
    }))
}

/// Holds the order for review.
pub async fn dispute(ctx: &Context, args: OrderRefArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    ctx.escrow.dispute(merchant, args.order).await?;
    Ok(json!({ "order": args.order, "state": "disputed" }))
}

/// The buyer (the sender) asks to cancel their order.
pub async fn cancel(
    ctx: &Context,
    buyer: PublicKey,
    args: OrderCancelArgs,
) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    let number = ctx
        .escrow
        .request_cancel(merchant, buyer, &args.order_id, args.refund_to.clone())
        .await?;
    Ok(json!({
        "order": number,
        "order_id": args.order_id,
        "cancel_requested": true,
        "refund_via": if args.refund_to.is_some() { "lightning" } else { "token" },
    }))
}
