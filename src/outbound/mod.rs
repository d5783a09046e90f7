//! Everything soko sends: the identities it signs as ([`Keyring`]), how a private message is
//! sealed ([`Scheme`], [`Note`], [`seal_dm`], [`wrap_tagged`]), and the durable [`Outbox`] a
//! [`Publisher`] sends through.
//!
//! It sits below every domain, so escrow, market, agents and the USSD service publish without
//! reaching up to the bot that receives messages. Events are signed before the state
//! transaction that records them and staged in the outbox inside it ([`Outbox::stage`]): a
//! resend after a crash is the same event, which relays deduplicate.

pub mod conversation;
mod keyring;
pub mod outbox;
mod publisher;
mod seal;

pub use self::keyring::Keyring;
pub use self::outbox::{Outbox, Staged, MAX_EVENT_BYTES};
pub use self::publisher::{PublishError, Publisher};
pub use self::seal::{seal_dm, wrap_tagged, Note, Scheme};
