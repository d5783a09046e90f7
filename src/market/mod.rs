//! NIP-15 commerce: managed merchants, their listings, and order validation and pricing.

pub mod merchants;
pub mod pricing;
pub mod proposals;

pub use self::merchants::{Merchant, MerchantError, MerchantStatus, Merchants};
pub use self::pricing::{price, OrderRefusal, Priced, Rates};
