//! Agents: invite codes, registration with a signed event, and the role of every sender.
//!
//! Trees:
//! - `invites`: HMAC-SHA256 of the invite code under a vault subkey (32 bytes) →
//!   [`invites::Invite`]; the code itself is never stored.
//! - `users`: pubkey (32 bytes) → [`users::UserRecord`] (role, registration time, name).
//! - `registration/nonces`: registration event id (32 bytes) → its `created_at`, kept while
//!   the event is inside the time window (older ones are refused by the window anyway).
//! - links between agents and merchants: see [`links`]; proposals: see [`proposals`].
//!
//! [`desk`] is what agents do for merchants and what merchants answer over USSD.

pub mod desk;
pub mod invites;
pub mod links;
pub mod proposals;
pub mod registration;
pub mod users;

use std::collections::HashSet;
use std::sync::Arc;

use nostr_sdk::PublicKey;

pub use self::desk::{Desk, DeskError, DeskRefusal};
pub use self::invites::{Invite, InviteCode, InviteError, InviteRefusal, Invites};
pub use self::links::Links;
pub use self::proposals::Proposals;
pub use self::registration::{RegisterError, Registration, RegistrationRefusal};
pub use self::users::{UserRecord, Users};
use crate::clock::Clock;
use crate::market::{Merchants, Rates};
use crate::outbound::Publisher;
use crate::store::{Store, StoreError};
use crate::vault::Vault;

/// The agents domain, opened once and shared (cheap to clone).
#[derive(Debug, Clone)]
pub struct Agents {
    /// Invite codes.
    pub invites: Invites,
    /// Registered users and roles.
    pub users: Users,
    /// Registration.
    pub registration: Registration,
    /// Links between agents and merchants.
    pub links: Links,
    /// Agents' proposals to merchants.
    pub proposals: Proposals,
    /// The time links, proposals and registrations are dated and judged by.
    pub clock: Clock,
}

impl Agents {
    /// Opens the trees. `admins` get [`crate::proto::agents::Role::Admin`]; registrations
    /// must be addressed to `soko` (the bot's key).
    pub fn open(
        store: &Store,
        vault: &Vault,
        admins: Arc<HashSet<PublicKey>>,
        soko: PublicKey,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let invites = Invites::open(store, vault)?;
        let users = Users::open(store, admins)?;
        let registration = Registration::open(store, soko, invites.clone(), users.clone())?;
        Ok(Self {
            invites,
            users,
            registration,
            links: Links::open(store)?,
            proposals: Proposals::open(store)?,
            clock,
        })
    }

    /// The desk over these stores, acting on `merchants`, publishing with `publisher`,
    /// taking stalls priced in `sat` or one of `rates`.
    pub fn desk(&self, merchants: Merchants, publisher: Publisher, rates: Rates) -> Desk {
        Desk::new(
            self.users.clone(),
            self.links.clone(),
            self.proposals.clone(),
            merchants,
            publisher,
            rates,
            self.clock.clone(),
        )
    }
}
