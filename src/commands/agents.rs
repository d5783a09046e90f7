//! `invite_create`: an admin creates an invite code for a role.
//! `register`: a user registers with a signed registration event carrying an invite code.
//! `whoami`: anyone asks for its role.
//! `merchant_onboard`, `agent_merchants`, `propose_*`, `proposal_withdraw`: agents only
//! (the role is checked by the desk, `not_an_agent` for anyone else).

use nostr_sdk::{PublicKey, ToBech32};

use super::merchant_key;
use super::{CommandError, Context};
use crate::agents::proposals::Proposed;
use crate::agents::{
    DeskError, DeskRefusal, InviteError, InviteRefusal, RegisterError, RegistrationRefusal,
};
use crate::proto::agents::{
    AgentMerchants, InviteCreateArgs, InviteCreated, Membership, OnboardArgs, Onboarded,
    ProposalView, ProposalWithdrawArgs, ProposeDeleteArgs, ProposeProductArgs, ProposeStallArgs,
    RegisterArgs, Role,
};
use crate::proto::{ErrorCode, Refusal};
use crate::store::StoreError;

/// Creates the invite; the code is in this reply only.
pub fn invite_create(
    ctx: &Context,
    sender: PublicKey,
    args: InviteCreateArgs,
) -> Result<InviteCreated, CommandError> {
    let (code, invite) = ctx
        .agents
        .invites
        .create(
            &args.role,
            args.uses,
            args.expires_in_secs,
            &sender,
            ctx.clock.now(),
        )
        .map_err(|e| match e {
            // Every invite refusal is the admin's input out of range: one code.
            InviteError::Refused(why) => Refusal::new(ErrorCode::Invalid, why.to_string()).into(),
            InviteError::Store(e) => internal(e),
        })?;
    tracing::info!(role = %invite.role, uses = invite.uses, "invite created");
    Ok(InviteCreated {
        code: code.reveal(),
        role: invite.role,
        uses: invite.uses,
        expires_at: invite.expires_at,
    })
}

/// Registers the sender, or refuses with the first check that failed.
pub fn register(
    ctx: &Context,
    sender: PublicKey,
    args: RegisterArgs,
) -> Result<Membership, CommandError> {
    match ctx
        .agents
        .registration
        .register(sender, &args.event, ctx.clock.now())
    {
        Ok(user) => {
            tracing::info!(role = %user.role, "user registered");
            Ok(membership(
                sender,
                user.role,
                user.name,
                Some(user.registered_at),
            ))
        }
        Err(RegisterError::Refused(refusal)) => Err(refused(refusal).into()),
        Err(RegisterError::Store(e)) => Err(internal(e)),
    }
}

/// The sender's role and registration.
pub fn whoami(ctx: &Context, sender: PublicKey) -> Result<Membership, CommandError> {
    let role = ctx.agents.users.role(&sender).map_err(internal)?;
    let user = match role {
        Role::Admin | Role::Anonymous => None,
        _ => ctx.agents.users.get(&sender).map_err(internal)?,
    };
    Ok(match user {
        Some(user) => membership(sender, role, user.name, Some(user.registered_at)),
        None => membership(sender, role, None, None),
    })
}

/// Onboards a merchant by phone, or asks its owner for a link.
pub fn onboard(
    ctx: &Context,
    sender: PublicKey,
    args: OnboardArgs,
) -> Result<Onboarded, CommandError> {
    ctx.desk
        .onboard(&sender, &args.phone, &args.name)
        .map_err(desk_error)
}

/// The agent's merchants and proposals.
pub fn merchants(ctx: &Context, sender: PublicKey) -> Result<AgentMerchants, CommandError> {
    ctx.desk.overview(&sender).map_err(desk_error)
}

/// Proposes a stall.
pub fn propose_stall(
    ctx: &Context,
    sender: PublicKey,
    args: ProposeStallArgs,
) -> Result<ProposalView, CommandError> {
    propose(ctx, sender, &args.merchant, Proposed::Stall(args.stall))
}

/// Proposes a product.
pub fn propose_product(
    ctx: &Context,
    sender: PublicKey,
    args: ProposeProductArgs,
) -> Result<ProposalView, CommandError> {
    ctx.desk.require_agent(&sender).map_err(desk_error)?;
    let merchant = merchant_key(&args.merchant)?;
    ctx.desk
        .propose_product(&sender, &merchant, args.product, args.categories)
        .map_err(desk_error)
}

/// Proposes a deletion.
pub fn propose_delete(
    ctx: &Context,
    sender: PublicKey,
    args: ProposeDeleteArgs,
) -> Result<ProposalView, CommandError> {
    propose(
        ctx,
        sender,
        &args.merchant,
        Proposed::Delete {
            kind: args.kind,
            id: args.id,
        },
    )
}

/// Withdraws one of the agent's pending proposals.
pub fn withdraw(
    ctx: &Context,
    sender: PublicKey,
    args: ProposalWithdrawArgs,
) -> Result<ProposalView, CommandError> {
    ctx.desk
        .withdraw(&sender, args.proposal)
        .map_err(desk_error)
}

fn propose(
    ctx: &Context,
    sender: PublicKey,
    merchant: &str,
    proposed: Proposed,
) -> Result<ProposalView, CommandError> {
    // The role first: a non-agent learns nothing about the merchant it named.
    ctx.desk.require_agent(&sender).map_err(desk_error)?;
    let merchant = merchant_key(merchant)?;
    ctx.desk
        .propose(&sender, &merchant, proposed)
        .map_err(desk_error)
}

fn desk_error(e: DeskError) -> CommandError {
    match e {
        DeskError::Refused(refusal) => {
            let code = match refusal {
                DeskRefusal::NotAnAgent(_) => ErrorCode::NotAnAgent,
                DeskRefusal::NotLinked => ErrorCode::NotLinked,
                DeskRefusal::UnknownProposal(_) => ErrorCode::UnknownProposal,
                DeskRefusal::AlreadyDecided { .. }
                | DeskRefusal::ProposalGone
                | DeskRefusal::DecidedOtherwise(_)
                | DeskRefusal::AgentUnlinked
                | DeskRefusal::LinkByOnboarding
                | DeskRefusal::NoRate { .. } => ErrorCode::Invalid,
            };
            Refusal::new(code, refusal.to_string()).into()
        }
        DeskError::Merchant(e) => e.into(),
        other => CommandError::Internal(other.to_string()),
    }
}

fn membership(
    who: PublicKey,
    role: Role,
    name: Option<String>,
    registered_at: Option<u64>,
) -> Membership {
    Membership {
        role,
        pubkey: who.to_hex(),
        npub: who.to_bech32().unwrap_or_else(|_| who.to_hex()),
        name,
        registered_at,
    }
}

/// One stable code per refusal (`kinds/agents.md`).
fn refused(refusal: RegistrationRefusal) -> Refusal {
    let code = match &refusal {
        RegistrationRefusal::BadSignature => ErrorCode::BadSignature,
        RegistrationRefusal::SignerMismatch { .. } => ErrorCode::SignerMismatch,
        RegistrationRefusal::WrongRecipient { .. } => ErrorCode::WrongRecipient,
        RegistrationRefusal::WrongKind(_) => ErrorCode::WrongKind,
        RegistrationRefusal::Stale { .. } => ErrorCode::Stale,
        RegistrationRefusal::Replayed => ErrorCode::Replayed,
        RegistrationRefusal::Malformed(_) => ErrorCode::Invalid,
        RegistrationRefusal::Invite(InviteRefusal::Unknown) => ErrorCode::InviteUnknown,
        RegistrationRefusal::Invite(InviteRefusal::Used) => ErrorCode::InviteUsed,
        RegistrationRefusal::Invite(InviteRefusal::Expired) => ErrorCode::InviteExpired,
        RegistrationRefusal::Invite(InviteRefusal::WrongRole { .. }) => ErrorCode::InviteWrongRole,
        RegistrationRefusal::AlreadyRegistered(_) => ErrorCode::AlreadyRegistered,
    };
    Refusal::new(code, refusal.to_string())
}

fn internal(e: StoreError) -> CommandError {
    CommandError::Internal(e.to_string())
}
