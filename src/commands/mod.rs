//! Command handlers: one file per command, dispatched from one `match` on [`Command`].

mod agents;
mod catalog;
mod exchange;
mod listing;
mod merchant;
mod metrics;
mod order;
mod order_issue;
mod ping;
mod sessions;
mod ussd;

use std::collections::HashSet;
use std::sync::Arc;

use nostr_sdk::PublicKey;
use serde_json::Value;

use crate::agents::{Agents, Desk};
use crate::clock::Clock;
use crate::escrow::{EscrowError, EscrowRefusal, EscrowService};
use crate::market::{Catalog, MerchantError, MerchantRefusal, Merchants};
use crate::outbound::Publisher;
use crate::proto::{Command, ErrorCode, Refusal};
use crate::sessions::{SessionError, SessionRefusal, Sessions};
use crate::ussd::UssdService;

/// Why a command did not succeed. Refusals go back to the sender as they are; internal
/// failures are logged and the sender only learns that something went wrong inside.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The sender asked for something soko will not do.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// soko failed.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<MerchantError> for CommandError {
    fn from(e: MerchantError) -> Self {
        match e {
            MerchantError::Refused(refusal) => {
                let code = match refusal {
                    MerchantRefusal::UnknownMerchant(_) => ErrorCode::NotFound,
                    MerchantRefusal::BadName
                    | MerchantRefusal::BadAddress(_)
                    | MerchantRefusal::BadPayout(_)
                    | MerchantRefusal::BadPhone
                    | MerchantRefusal::PhoneTaken
                    | MerchantRefusal::NoPhone
                    | MerchantRefusal::WrongActivationCode
                    | MerchantRefusal::Pending(_)
                    | MerchantRefusal::StallMissing(_)
                    | MerchantRefusal::NoStall(_)
                    | MerchantRefusal::StallHasProducts { .. }
                    | MerchantRefusal::NoProduct(_)
                    | MerchantRefusal::NotListed(_)
                    | MerchantRefusal::NotHidden(_)
                    | MerchantRefusal::NotAListing(_)
                    | MerchantRefusal::TooManyCategories(_)
                    | MerchantRefusal::BadCategory(_)
                    | MerchantRefusal::BadId(_)
                    | MerchantRefusal::StallWithoutName
                    | MerchantRefusal::UnknownCurrency(_)
                    | MerchantRefusal::BadZoneCost(_)
                    | MerchantRefusal::ProductWithoutName
                    | MerchantRefusal::CurrencyMismatch { .. }
                    | MerchantRefusal::BadPrice
                    | MerchantRefusal::UnknownZone(_)
                    | MerchantRefusal::BadShippingCost(_) => ErrorCode::Invalid,
                };
                Refusal::new(code, refusal.to_string()).into()
            }
            other => CommandError::Internal(other.to_string()),
        }
    }
}

impl From<EscrowError> for CommandError {
    fn from(e: EscrowError) -> Self {
        match e {
            EscrowError::Refused(refusal) => {
                let code = match refusal {
                    EscrowRefusal::NoSuchOrder(_) | EscrowRefusal::NoSuchBuyerOrder(_) => {
                        ErrorCode::NotFound
                    }
                    EscrowRefusal::NotDeliverable { .. }
                    | EscrowRefusal::NoCodeYet(_)
                    | EscrowRefusal::WrongCode { .. }
                    | EscrowRefusal::CodeLocked(_)
                    | EscrowRefusal::NotDisputed { .. }
                    | EscrowRefusal::NotDisputable { .. }
                    | EscrowRefusal::InDeliveryWindow { .. }
                    | EscrowRefusal::NotRefundable { .. }
                    | EscrowRefusal::NotPaidYet(_)
                    | EscrowRefusal::NotCancellable { .. }
                    | EscrowRefusal::RefundAddress(_)
                    | EscrowRefusal::BalanceTooLow { .. }
                    | EscrowRefusal::NotIssuable { .. }
                    | EscrowRefusal::IssueTooEarly { .. }
                    | EscrowRefusal::Reveal(_)
                    | EscrowRefusal::NoOpenIssue { .. }
                    | EscrowRefusal::NotYourAnswer(_)
                    | EscrowRefusal::NoIssue(_)
                    | EscrowRefusal::IssueOpen(_)
                    | EscrowRefusal::AwaitingAnswer { .. }
                    | EscrowRefusal::AlreadySettled { .. } => ErrorCode::Invalid,
                    EscrowRefusal::RevealRequired => ErrorCode::RevealRequired,
                    EscrowRefusal::WrongSigner(_) => ErrorCode::SignerMismatch,
                    EscrowRefusal::RevealReused => ErrorCode::Replayed,
                };
                Refusal::new(code, refusal.to_string()).into()
            }
            EscrowError::Merchant(e) => e.into(),
            other => CommandError::Internal(other.to_string()),
        }
    }
}

impl From<SessionError> for CommandError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Refused(refusal) => {
                let code = match refusal {
                    SessionRefusal::BadToken(_) => ErrorCode::BatInvalid,
                    SessionRefusal::TokenSpent => ErrorCode::BatSpent,
                    SessionRefusal::AuthUnsupported(_) => ErrorCode::AuthUnsupported,
                    SessionRefusal::MintUnavailable(_) => ErrorCode::MintUnavailable,
                    SessionRefusal::Unknown => ErrorCode::SessionUnknown,
                    SessionRefusal::Expired => ErrorCode::SessionExpired,
                    SessionRefusal::Closed => ErrorCode::SessionClosed,
                    SessionRefusal::Required => ErrorCode::SessionRequired,
                    SessionRefusal::RefundAddress(_) | SessionRefusal::Deposit(_) => {
                        ErrorCode::Invalid
                    }
                    SessionRefusal::Held => ErrorCode::Busy,
                };
                Refusal::new(code, refusal.to_string()).into()
            }
            other => CommandError::Internal(other.to_string()),
        }
    }
}

/// What commands may use.
#[derive(Debug, Clone)]
pub struct Context {
    /// Keys allowed to run operator commands.
    pub admins: Arc<HashSet<PublicKey>>,
    /// The merchant registry.
    pub merchants: Merchants,
    /// Publishing as soko's identities.
    pub publisher: Publisher,
    /// Orders and their escrow.
    pub escrow: EscrowService,
    /// USSD menus (`ussd_hop`, from configured bridges only).
    pub ussd: UssdService,
    /// Every merchant's listings seen on the relays.
    pub catalog: Catalog,
    /// Invites, registration and roles.
    pub agents: Agents,
    /// What agents do for merchants.
    pub desk: Desk,
    /// The time registrations and replies are judged and dated by.
    pub clock: Clock,
    /// Private sessions.
    pub sessions: Sessions,
    /// Operations figures (`metrics`).
    pub metrics: crate::metrics::Metrics,
    /// The P2P exchange.
    pub exchange: crate::exchange::Exchange,
}

/// Whether `command`'s answer tells anything soko stores, and so must not leave before that
/// is on disk. Only a ping outside a session tells nothing: soko's clock. Every other
/// command reads or changes state (a session named with a ping is looked up).
pub fn reports_state(command: &Command, session: Option<&str>) -> bool {
    session.is_some() || !matches!(command, Command::Ping(_))
}

/// Runs one command for `sender`, inside the private session `session` when named.
pub async fn execute(
    ctx: &Context,
    sender: PublicKey,
    session: Option<&str>,
    command: Command,
) -> Result<Value, CommandError> {
    // Boxed: the command futures (escrow, wallet, mint) nest so deep that rustc 1.95
    // overflows its query depth computing the bot handler's future layout otherwise.
    Box::pin(dispatch(ctx, sender, session, command)).await
}

async fn dispatch(
    ctx: &Context,
    sender: PublicKey,
    session: Option<&str>,
    command: Command,
) -> Result<Value, CommandError> {
    // A named session is checked whatever the command: it must be the sender's and live.
    let live = match session {
        Some(id) => Some(ctx.sessions.live(&sender, id)?),
        None => None,
    };
    // Bridges are checked by the USSD handler, buyers own their orders, the catalog,
    // registration and whoami are public, agents' commands check the role themselves: the
    // rest is the operator's.
    let admin_only = !matches!(
        command,
        Command::Ping(_)
            | Command::Catalog(_)
            | Command::OrderCancel(_)
            | Command::OrderIssue(_)
            | Command::OrderAnswer(_)
            | Command::UssdHop(_)
            | Command::Register(_)
            | Command::Whoami(_)
            | Command::MerchantOnboard(_)
            | Command::AgentMerchants(_)
            | Command::ProposeStall(_)
            | Command::ProposeProduct(_)
            | Command::ProposeDelete(_)
            | Command::ProposalWithdraw(_)
            | Command::OpenSession(_)
            | Command::SessionStatus(_)
            | Command::SessionDeposit(_)
            | Command::CloseSession(_)
    ) && !exchange::is_public(&command);
    if admin_only && !ctx.admins.contains(&sender) {
        return Err(Refusal::new(
            ErrorCode::Forbidden,
            "only soko's operator may use this command",
        )
        .into());
    }
    if exchange::is_exchange(&command) {
        return exchange::dispatch(ctx, sender, live, command).await;
    }
    match command {
        Command::Ping(args) => to_value(ping::run(args, ctx.clock.now())),
        Command::Catalog(args) => catalog::run(ctx, args),
        Command::MerchantAdd(args) => to_value(merchant::add(ctx, args).await?),
        Command::MerchantList(_) => {
            let merchants: Vec<_> = ctx.merchants.all()?.into_iter().map(|(m, _)| m).collect();
            to_value(merchants)
        }
        Command::StallPut(args) => listing::put_stall(ctx, args).await,
        Command::ProductPut(args) => listing::put_product(ctx, args).await,
        Command::OrderDeliver(args) => order::deliver(ctx, args).await,
        Command::OrderRefund(args) => order::refund(ctx, args).await,
        Command::OrderDispute(args) => order::dispute(ctx, args).await,
        Command::OrderRelease(args) => order::release(ctx, args).await,
        Command::OrderCancel(args) => order::cancel(ctx, sender, args).await,
        Command::MerchantPayout(args) => {
            let merchant = merchant_key(&args.merchant)?;
            to_value(ctx.merchants.set_payout(&merchant, &args.to)?)
        }
        Command::UssdHop(args) => ussd::hop(ctx, sender, args).await,
        Command::UssdReset(args) => {
            let merchant = merchant_key(&args.merchant)?;
            to_value(ussd::reset(ctx, merchant, args.new_code).await?)
        }
        Command::InviteCreate(args) => to_value(agents::invite_create(ctx, sender, args)?),
        Command::Register(args) => to_value(agents::register(ctx, sender, args)?),
        Command::Whoami(_) => to_value(agents::whoami(ctx, sender)?),
        Command::MerchantOnboard(args) => to_value(agents::onboard(ctx, sender, args)?),
        Command::AgentMerchants(_) => to_value(agents::merchants(ctx, sender)?),
        Command::ProposeStall(args) => to_value(agents::propose_stall(ctx, sender, args)?),
        Command::ProposeProduct(args) => to_value(agents::propose_product(ctx, sender, args)?),
        Command::ProposeDelete(args) => to_value(agents::propose_delete(ctx, sender, args)?),
        Command::ProposalWithdraw(args) => to_value(agents::withdraw(ctx, sender, args)?),
        Command::OpenSession(args) => to_value(sessions::open(ctx, sender, args).await?),
        Command::SessionStatus(_) => {
            to_value(sessions::status(ctx, sessions::required(live)?).await?)
        }
        Command::SessionDeposit(args) => {
            to_value(sessions::deposit(ctx, sessions::required(live)?, args).await?)
        }
        Command::CloseSession(_) => {
            to_value(sessions::close(ctx, sender, sessions::required(live)?).await?)
        }
        Command::Metrics(_) => to_value(metrics::run(ctx)),
        Command::OrderIssue(args) => order_issue::issue(ctx, sender, args).await,
        Command::OrderAnswer(args) => order_issue::answer(ctx, sender, args).await,
        Command::MerchantIssue(args) => order_issue::merchant_issue(ctx, args).await,
        Command::MerchantAnswer(args) => order_issue::merchant_answer(ctx, args).await,
        Command::OrderResolve(args) => order_issue::resolve(ctx, sender, args).await,
        Command::OrderIssueList(_) => to_value(ctx.escrow.open_issues()?),
        Command::OrderIssueShow(args) => order_issue::show(ctx, sender, args),
        // Handled above (`exchange::is_exchange`).
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
        | Command::ProviderPut(_)
        | Command::ProviderRemove(_)
        | Command::DisputeList(_)
        | Command::DisputeShow(_)
        | Command::DisputeResolve(_) => Err(CommandError::Internal(
            "an exchange command missed its handler".into(),
        )),
    }
}

fn to_value<T: serde::Serialize>(value: T) -> Result<Value, CommandError> {
    serde_json::to_value(value).map_err(|e| CommandError::Internal(format!("result encoding: {e}")))
}

/// Refuses an argument longer than `max` bytes, without echoing it.
fn too_large(field: &str, value: &str, max: usize) -> Result<(), CommandError> {
    if value.len() > max {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("\"{field}\" is longer than {max} bytes"),
        )
        .into());
    }
    Ok(())
}

/// A merchant named in arguments, as npub or hex.
fn merchant_key(text: &str) -> Result<PublicKey, CommandError> {
    PublicKey::parse(text).map_err(|_| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("{text:?} is not an npub or hex public key"),
        )
        .into()
    })
}
