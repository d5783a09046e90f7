//! Issues on marketplace orders: `order_issue` and `order_answer` (the buyer, with a signed
//! reveal of the key it ordered with), `merchant_issue` and `merchant_answer` (the operator
//! for a merchant; soko signs the merchant's reveal), `order_resolve` (an admin, audited).

use nostr_sdk::{Event, PublicKey};
use serde_json::Value;

use super::{merchant_key, to_value, CommandError, Context};
use crate::escrow::{IssueAnswer, IssueOutcome, Party};
use crate::proto::command::OrderRefArgs;
use crate::proto::order_issue::{
    IssueAnswerArg, MerchantAnswerArgs, MerchantIssueArgs, OrderAnswerArgs, OrderIssueArgs,
    OrderOutcomeArg, OrderResolveArgs,
};
use crate::proto::{ErrorCode, Refusal};

/// The reveal in the arguments as an event (well-formed JSON of one; its checks follow).
fn reveal_event(reveal: Option<&Value>) -> Result<Option<Event>, CommandError> {
    reveal
        .map(|value| {
            serde_json::from_value::<Event>(value.clone()).map_err(|e| {
                Refusal::new(
                    ErrorCode::Invalid,
                    format!("reveal: not a nostr event: {e}"),
                )
                .into()
            })
        })
        .transpose()
}

fn answer_of(arg: IssueAnswerArg) -> IssueAnswer {
    match arg {
        IssueAnswerArg::Concede => IssueAnswer::Concede,
        IssueAnswerArg::Dispute => IssueAnswer::Dispute,
    }
}

/// The buyer's order a buyer command names: the merchant, soko's order number and the
/// reveal event, checked as far as the command can.
fn buyer_order(
    ctx: &Context,
    buyer: &PublicKey,
    merchant: &str,
    order_id: &str,
    reveal: Option<&Value>,
) -> Result<(PublicKey, u64, Option<Event>), CommandError> {
    let merchant = merchant_key(merchant)?;
    ctx.merchants.get(&merchant)?;
    let number = ctx.escrow.buyer_order_number(&merchant, buyer, order_id)?;
    Ok((merchant, number, reveal_event(reveal)?))
}

/// The buyer (the sender) marks an issue on its order.
pub async fn issue(
    ctx: &Context,
    buyer: PublicKey,
    args: OrderIssueArgs,
) -> Result<Value, CommandError> {
    let (merchant, number, reveal) = buyer_order(
        ctx,
        &buyer,
        &args.merchant,
        &args.order_id,
        args.reveal.as_ref(),
    )?;
    let party = Party::Buyer {
        key: buyer,
        reveal: reveal.as_ref(),
    };
    let view = ctx
        .escrow
        .mark_issue(merchant, number, party, args.evidence.as_deref())
        .await?;
    to_value(view)
}

/// The buyer (the sender) answers the merchant's issue.
pub async fn answer(
    ctx: &Context,
    buyer: PublicKey,
    args: OrderAnswerArgs,
) -> Result<Value, CommandError> {
    let (merchant, number, reveal) = buyer_order(
        ctx,
        &buyer,
        &args.merchant,
        &args.order_id,
        args.reveal.as_ref(),
    )?;
    let party = Party::Buyer {
        key: buyer,
        reveal: reveal.as_ref(),
    };
    let view = ctx
        .escrow
        .answer_issue(
            merchant,
            number,
            party,
            answer_of(args.answer),
            args.evidence.as_deref(),
        )
        .await?;
    to_value(view)
}

/// The operator marks an issue for the merchant.
pub async fn merchant_issue(ctx: &Context, args: MerchantIssueArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    let view = ctx
        .escrow
        .mark_issue(
            merchant,
            args.order,
            Party::Merchant,
            args.evidence.as_deref(),
        )
        .await?;
    to_value(view)
}

/// The operator answers the buyer's issue for the merchant.
pub async fn merchant_answer(
    ctx: &Context,
    args: MerchantAnswerArgs,
) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    let view = ctx
        .escrow
        .answer_issue(
            merchant,
            args.order,
            Party::Merchant,
            answer_of(args.answer),
            args.evidence.as_deref(),
        )
        .await?;
    to_value(view)
}

/// An admin settles an order's issue.
pub async fn resolve(
    ctx: &Context,
    admin: PublicKey,
    args: OrderResolveArgs,
) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    let outcome = match args.outcome {
        OrderOutcomeArg::BuyerWins => IssueOutcome::BuyerWins,
        OrderOutcomeArg::MerchantWins => IssueOutcome::MerchantWins,
        OrderOutcomeArg::Split => IssueOutcome::Split,
    };
    let view = ctx
        .escrow
        .resolve_issue(&admin, merchant, args.order, outcome, args.note.as_deref())
        .await?;
    to_value(view)
}

/// An admin reads one order's issue, both sides' words included (audited).
pub fn show(ctx: &Context, admin: PublicKey, args: OrderRefArgs) -> Result<Value, CommandError> {
    let merchant = merchant_key(&args.merchant)?;
    ctx.merchants.get(&merchant)?;
    to_value(ctx.escrow.issue_case(&admin, merchant, args.order)?)
}
