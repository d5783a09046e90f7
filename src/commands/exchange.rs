//! The exchange's commands (`kinds/exchange.md`): a session's offers and claims, the public
//! keyset and providers, and the admins' providers and disputes.

use nostr_sdk::PublicKey;
use serde_json::Value;

use super::{to_value, too_large, CommandError, Context};
use crate::exchange::{ExchangeError, ExchangeRefusal};
use crate::proto::exchange::{ProviderArgs, MAX_OFFER_ID_LEN};
use crate::proto::{Command, ErrorCode, Refusal};
use crate::sessions::Live;

impl From<ExchangeError> for CommandError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::Refused(refusal) => {
                let code = match refusal {
                    ExchangeRefusal::UnknownOffer => ErrorCode::NotFound,
                    ExchangeRefusal::RevealRequired => ErrorCode::RevealRequired,
                    ExchangeRefusal::NotYourPart(_) => ErrorCode::Forbidden,
                    ExchangeRefusal::TooManyOpen(_) => ErrorCode::Busy,
                    ExchangeRefusal::WrongState { .. }
                    | ExchangeRefusal::Fiat(_)
                    | ExchangeRefusal::Currency(_)
                    | ExchangeRefusal::Bill(_)
                    | ExchangeRefusal::Premium { .. }
                    | ExchangeRefusal::Sats(_)
                    | ExchangeRefusal::OwnOffer
                    | ExchangeRefusal::Reveal(_)
                    | ExchangeRefusal::NotRegistered
                    | ExchangeRefusal::RevealReused
                    | ExchangeRefusal::Reputation(_)
                    | ExchangeRefusal::EmptyReceipt
                    | ExchangeRefusal::Payout(_)
                    | ExchangeRefusal::Provider(_) => ErrorCode::Invalid,
                };
                Refusal::new(code, refusal.to_string()).into()
            }
            other => CommandError::Internal(other.to_string()),
        }
    }
}

/// True for the exchange's commands anyone may send (in a session or not).
pub(super) fn is_public(command: &Command) -> bool {
    matches!(
        command,
        Command::OfferCreate(_)
            | Command::OfferClaim(_)
            | Command::OfferCancel(_)
            | Command::OfferStatus(_)
            | Command::OfferList(_)
            | Command::ReceiptSubmit(_)
            | Command::ReceiptConfirm(_)
            | Command::OfferIssue(_)
            | Command::OfferAnswer(_)
            | Command::ExchangeSettings(_)
            | Command::ReputationKeyset(_)
            | Command::ProviderList(_)
    )
}

fn offer_id(offer: &str) -> Result<(), CommandError> {
    too_large("offer", offer, MAX_OFFER_ID_LEN)
}

/// True for every exchange command.
pub(super) fn is_exchange(command: &Command) -> bool {
    is_public(command)
        || matches!(
            command,
            Command::ProviderPut(_)
                | Command::ProviderRemove(_)
                | Command::DisputeList(_)
                | Command::DisputeShow(_)
                | Command::DisputeResolve(_)
        )
}

/// Runs an exchange command ([`is_exchange`]); the trade commands need `live`.
pub(super) async fn dispatch(
    ctx: &Context,
    sender: PublicKey,
    live: Option<Live>,
    command: Command,
) -> Result<Value, CommandError> {
    let x = &ctx.exchange;
    let session = || super::sessions::required(live.clone()).map(|live| live.id);
    match command {
        Command::ReputationKeyset(_) => to_value(x.reputation_keyset()),
        Command::ProviderList(_) => to_value(
            x.providers()
                .all()
                .map_err(|e| CommandError::Internal(e.to_string()))?,
        ),
        Command::ProviderPut(args) => provider_put(ctx, args),
        Command::ProviderRemove(args) => {
            let removed = x
                .providers()
                .remove(&args.id)
                .map_err(|e| provider_error(e.to_string()))?;
            to_value(serde_json::json!({ "removed": removed }))
        }
        Command::DisputeList(_) => to_value(x.disputes()?),
        Command::DisputeShow(args) => {
            offer_id(&args.offer)?;
            to_value(x.dispute(&sender, &args.offer)?)
        }
        Command::DisputeResolve(args) => {
            offer_id(&args.offer)?;
            to_value(x.resolve(&sender, args).await?)
        }
        Command::OfferCreate(args) => to_value(x.create(&session()?, sender, args).await?),
        Command::OfferClaim(args) => {
            offer_id(&args.offer)?;
            to_value(x.claim(&session()?, sender, args).await?)
        }
        Command::OfferCancel(args) => {
            offer_id(&args.offer)?;
            to_value(x.cancel(&session()?, &args.offer).await?)
        }
        Command::OfferStatus(args) => {
            offer_id(&args.offer)?;
            to_value(x.status(&session()?, &args.offer)?)
        }
        Command::OfferList(_) => to_value(x.list(&session()?)?),
        Command::ReceiptSubmit(args) => {
            offer_id(&args.offer)?;
            to_value(x.submit_receipt(&session()?, args).await?)
        }
        Command::ReceiptConfirm(args) => {
            offer_id(&args.offer)?;
            to_value(x.confirm(&session()?, &args.offer).await?)
        }
        Command::OfferIssue(args) => {
            offer_id(&args.offer)?;
            to_value(x.mark_issue(&session()?, args).await?)
        }
        Command::OfferAnswer(args) => {
            offer_id(&args.offer)?;
            to_value(x.answer(&session()?, args).await?)
        }
        Command::ExchangeSettings(args) => to_value(x.settings(&session()?, args)?),
        _ => Err(CommandError::Internal("not an exchange command".into())),
    }
}

fn provider_error(message: String) -> CommandError {
    Refusal::new(ErrorCode::Invalid, message).into()
}

fn provider_put(ctx: &Context, args: ProviderArgs) -> Result<Value, CommandError> {
    let provider: crate::exchange::providers::Provider = serde_json::to_value(&args)
        .and_then(serde_json::from_value)
        .map_err(|e| provider_error(format!("provider: {e}")))?;
    ctx.exchange
        .providers()
        .put(provider.clone())
        .map_err(|e| provider_error(e.to_string()))?;
    to_value(provider)
}
