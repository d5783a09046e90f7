//! `open_session`, `session_status`, `session_deposit`, `close_session` (`kinds/sessions.md`).

use nostr_sdk::PublicKey;

use super::{too_large, CommandError, Context};
use crate::proto::sessions::{
    CloseSessionResult, OpenSessionArgs, OpenSessionResult, RefundProgress, SessionDepositArgs,
    SessionStatusResult, MAX_BAT_LEN, MAX_DEPOSIT_TOKEN_LEN, MAX_REFUND_TO_LEN,
};
use crate::sessions::{Live, SessionRefusal, SessionState};

pub(super) async fn open(
    ctx: &Context,
    sender: PublicKey,
    args: OpenSessionArgs,
) -> Result<OpenSessionResult, CommandError> {
    too_large("bat", &args.bat, MAX_BAT_LEN)?;
    if let Some(refund_to) = &args.refund_to {
        too_large("refund_to", refund_to, MAX_REFUND_TO_LEN)?;
    }
    let opened = ctx
        .sessions
        .open_session(sender, &args.bat, args.refund_to.as_deref())
        .await?;
    Ok(OpenSessionResult {
        session: opened.id,
        expires_at: opened.expires_at,
    })
}

pub(super) async fn status(ctx: &Context, live: Live) -> Result<SessionStatusResult, CommandError> {
    let balance = ctx.sessions.balance(&live).await?;
    Ok(SessionStatusResult {
        session: live.id,
        expires_at: live.record.expires_at,
        balance_sat: balance.0,
    })
}

pub(super) async fn deposit(
    ctx: &Context,
    live: Live,
    args: SessionDepositArgs,
) -> Result<SessionStatusResult, CommandError> {
    too_large("token", &args.token, MAX_DEPOSIT_TOKEN_LEN)?;
    let balance = ctx.sessions.deposit(&live, &args.token).await?;
    Ok(SessionStatusResult {
        session: live.id,
        expires_at: live.record.expires_at,
        balance_sat: balance.0,
    })
}

pub(super) async fn close(
    ctx: &Context,
    sender: PublicKey,
    live: Live,
) -> Result<CloseSessionResult, CommandError> {
    let record = ctx.sessions.close(&sender, &live.id).await?;
    Ok(CloseSessionResult {
        session: live.id,
        returned_sat: record.returned.0,
        refund: match record.state {
            SessionState::Ended | SessionState::Refunded => RefundProgress::Done,
            _ => RefundProgress::Pending,
        },
    })
}

/// The session a session-only command names.
pub(super) fn required(live: Option<Live>) -> Result<Live, CommandError> {
    live.ok_or_else(|| crate::sessions::SessionError::from(SessionRefusal::Required).into())
}
