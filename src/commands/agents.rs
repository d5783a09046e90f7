//! `invite_create`: an admin creates an invite code for a role.
//! `register`: a user registers with a signed registration event carrying an invite code.
//! `whoami`: anyone asks for its role.

use nostr_sdk::{PublicKey, ToBech32};

use super::{CommandError, Context};
use crate::agents::{InviteError, InviteRefusal, RegisterError, RegistrationRefusal};
use crate::proto::agents::{InviteCreateArgs, InviteCreated, Membership, RegisterArgs, Role};
use crate::proto::{ErrorCode, Refusal};
use crate::store::StoreError;
use crate::util::unix_now;

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
            unix_now(),
        )
        .map_err(|e| match e {
            InviteError::Invalid(why) => Refusal::new(ErrorCode::Invalid, why.0).into(),
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
        .register(sender, &args.event, unix_now())
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
