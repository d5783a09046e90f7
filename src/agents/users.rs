//! Registered users and the role of any sender.

use std::collections::HashSet;
use std::sync::Arc;

use nostr_sdk::PublicKey;
use serde::{Deserialize, Serialize};

use crate::proto::agents::Role;
use crate::store::{Store, StoreError, Typed};

/// A registered user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The role the invite granted.
    pub role: Role,
    /// Unix seconds.
    pub registered_at: u64,
    /// The name given at registration, if any.
    pub name: Option<String>,
}

/// The users tree (pubkey, 32 bytes → [`UserRecord`]) and the configured admins.
#[derive(Debug, Clone)]
pub struct Users {
    tree: Typed<UserRecord>,
    admins: Arc<HashSet<PublicKey>>,
}

impl Users {
    /// Opens the tree; `admins` are soko's operator and the config's admins.
    pub fn open(store: &Store, admins: Arc<HashSet<PublicKey>>) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree("users")?,
            admins,
        })
    }

    /// What `who` may do: admins by config, then registered users, else anonymous.
    pub fn role(&self, who: &PublicKey) -> Result<Role, StoreError> {
        if self.is_admin(who) {
            return Ok(Role::Admin);
        }
        Ok(self.get(who)?.map_or(Role::Anonymous, |user| user.role))
    }

    /// True for the operator and the admins the config lists.
    pub fn is_admin(&self, who: &PublicKey) -> bool {
        self.admins.contains(who)
    }

    /// The registration of `who`, if any.
    pub fn get(&self, who: &PublicKey) -> Result<Option<UserRecord>, StoreError> {
        self.tree.get(&who.to_bytes())
    }

    /// The tree, for transactions with other trees.
    pub(crate) fn tree(&self) -> &Typed<UserRecord> {
        &self.tree
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::Keys;

    use super::*;

    #[test]
    fn admins_then_records_then_anonymous() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let admin = Keys::generate().public_key();
        let agent = Keys::generate().public_key();
        let users = Users::open(&store, Arc::new([admin].into_iter().collect()))?;
        users.tree().insert(
            &agent.to_bytes(),
            &UserRecord {
                role: Role::Agent,
                registered_at: 1,
                name: None,
            },
        )?;
        assert_eq!(users.role(&admin)?, Role::Admin);
        assert_eq!(users.role(&agent)?, Role::Agent);
        assert_eq!(users.role(&Keys::generate().public_key())?, Role::Anonymous);
        Ok(())
    }
}
