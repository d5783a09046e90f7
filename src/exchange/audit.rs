//! The exchange's audit trail of admins' actions: the foundation's append-only trail
//! ([`crate::store::audit`]) in the sled tree [`TREE`].

pub use crate::store::audit::{Audit, AuditEntry};

/// The tree holding the exchange's trail.
pub const TREE: &str = "exchange/audit";
