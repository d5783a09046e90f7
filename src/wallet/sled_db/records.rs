//! Keys, namespaces and the per-record rules shared by several trees.

use cdk_common::database::Error;
use cdk_common::mint_url::MintUrl;
use cdk_common::wallet::{MeltQuote, MintQuote};
use cdk_common::{Id, KeySetInfo};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::codec::{abort, StoreError};

/// Longest accepted wallet namespace, to keep tree names bounded.
const MAX_NAMESPACE_LEN: usize = 128;

pub(super) fn validate_namespace(namespace: &str) -> Result<(), Error> {
    if namespace.is_empty() {
        return Err(StoreError::InvalidNamespace("empty").into());
    }
    if namespace.len() > MAX_NAMESPACE_LEN {
        return Err(StoreError::InvalidNamespace("longer than 128 bytes").into());
    }
    // '/' separates the parts of a tree name; keeping it out keeps the names
    // unambiguous to anyone inspecting the database by hand.
    if !namespace
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(StoreError::InvalidNamespace("only [A-Za-z0-9._:-] allowed").into());
    }
    Ok(())
}

pub(super) fn kv_key(primary: &str, secondary: &str, key: &str) -> Vec<u8> {
    // The KV alphabet excludes NUL, so it cannot appear inside a component.
    let mut out = kv_prefix(primary, secondary);
    out.extend_from_slice(key.as_bytes());
    out
}

pub(super) fn kv_prefix(primary: &str, secondary: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(primary.len() + secondary.len() + 2);
    out.extend_from_slice(primary.as_bytes());
    out.push(0);
    out.extend_from_slice(secondary.as_bytes());
    out.push(0);
    out
}

pub(super) fn keyset_u32_key(id: &Id) -> [u8; 4] {
    u32::from(*id).to_be_bytes()
}

/// NUT-13 derives counters from the keyset id truncated to u32, so two
/// distinct keysets mapping to the same u32 would share secrets.
pub(super) fn claim_keyset_u32(
    tx: &TransactionalTree,
    id: &Id,
) -> Result<(), ConflictableTransactionError<Error>> {
    let key = keyset_u32_key(id);
    let id_bytes = id.to_bytes();
    match tx.get(key)? {
        Some(existing) if existing.as_ref() != id_bytes.as_slice() => {
            tracing::warn!(keyset_id = %id, "keyset id collides with a stored keyset on its u32 form");
            Err(abort(Error::Duplicate))
        }
        Some(_) => Ok(()),
        None => {
            tx.insert(&key, id_bytes)?;
            Ok(())
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredKeyset {
    pub(super) mint_url: MintUrl,
    pub(super) info: KeySetInfo,
}

/// What the mint and melt quote trees share: optimistic versioning and
/// reservation by an operation.
pub(super) trait QuoteRecord: Clone + Serialize + DeserializeOwned {
    const WHAT: &'static str;
    /// First byte of this kind's keys in the reservation hints tree.
    const HINT: u8;
    fn id(&self) -> &str;
    fn version(&self) -> u32;
    fn set_version(&mut self, version: u32);
    fn used_by(&self) -> Option<&str>;
    fn set_used_by(&mut self, operation: Option<String>);
    /// Carries over fields an update must not erase.
    fn keep_from(&mut self, _stored: &Self) {}
}

impl QuoteRecord for MintQuote {
    const WHAT: &'static str = "mint quote";
    const HINT: u8 = b'm';
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
    fn used_by(&self) -> Option<&str> {
        self.used_by_operation.as_deref()
    }
    fn set_used_by(&mut self, operation: Option<String>) {
        self.used_by_operation = operation;
    }
}

impl QuoteRecord for MeltQuote {
    const WHAT: &'static str = "melt quote";
    const HINT: u8 = b'n';
    fn id(&self) -> &str {
        &self.id
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn set_version(&mut self, version: u32) {
        self.version = version;
    }
    fn used_by(&self) -> Option<&str> {
        self.used_by_operation.as_deref()
    }
    fn set_used_by(&mut self, operation: Option<String>) {
        self.used_by_operation = operation;
    }
    fn keep_from(&mut self, stored: &Self) {
        // A later status poll may lack the preimage a previous one returned;
        // the proof of payment must survive that (cdk-sqlite does the same).
        if self.payment_proof.is_none() {
            self.payment_proof.clone_from(&stored.payment_proof);
        }
    }
}
