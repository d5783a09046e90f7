//! Roles, invites and registration (`kinds/agents.md`).

use nostr_sdk::Event;
use serde::{Deserialize, Serialize};

/// Kind of the signed registration event. In the ephemeral range (20000–29999), so a relay
/// that is handed one by mistake forwards it at most and never stores it.
pub const REGISTRATION_KIND: u16 = 29470;

/// Who a sender is to soko.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Listed in soko's config (or the operator key): runs operator commands.
    Admin,
    /// Registered with an agent invite: onboards and promotes merchants.
    Agent,
    /// A merchant (the USSD path).
    Merchant,
    /// Not registered.
    Anonymous,
}

impl Role {
    /// The role's name as it appears in messages and tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Merchant => "merchant",
            Role::Anonymous => "anonymous",
        }
    }

    /// A role by name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        [Role::Admin, Role::Agent, Role::Merchant, Role::Anonymous]
            .into_iter()
            .find(|role| role.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `invite_create` arguments (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteCreateArgs {
    /// The role the code grants; only `agent` for now.
    pub role: String,
    /// How many registrations it allows (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Seconds from now after which it no longer works (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// `invite_create` result: the only time the code is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCreated {
    /// The code, e.g. `7KQ2-M9XD-4HWA-0RTC`.
    pub code: String,
    /// The role it grants.
    pub role: Role,
    /// Registrations it allows.
    pub uses: u32,
    /// Unix seconds after which it no longer works, if ever.
    pub expires_at: Option<u64>,
}

/// `register` arguments: the signed registration event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterArgs {
    /// A kind [`REGISTRATION_KIND`] event signed by the sender's key.
    pub event: Box<Event>,
}

/// `register` and `whoami` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The sender's role.
    pub role: Role,
    /// The sender's public key (hex).
    pub pubkey: String,
    /// The sender's `npub`.
    pub npub: String,
    /// The name given at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix seconds of the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_have_one_name_each() {
        for role in [Role::Admin, Role::Agent, Role::Merchant, Role::Anonymous] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_value(role).ok(),
                Some(serde_json::Value::String(role.to_string()))
            );
        }
        assert_eq!(Role::parse("Agent"), None);
        assert_eq!(Role::parse("king"), None);
    }
}
