//! NIP-15 commerce. For now the pure part: validating and pricing orders.

pub mod pricing;

pub use self::pricing::{price, OrderRefusal, Priced, Rates};
