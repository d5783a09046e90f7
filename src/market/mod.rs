//! NIP-15 commerce: managed merchants, their listings, order validation and pricing, and a
//! catalog of every merchant's listings seen on the relays.

pub mod activation;
pub mod catalog;
pub mod listing;
pub mod merchants;
pub mod pricing;
pub mod published;

pub use self::activation::ActivationCode;
pub use self::catalog::Catalog;
pub use self::merchants::{Merchant, MerchantError, MerchantRefusal, MerchantStatus, Merchants};
pub use self::pricing::{price, OrderRefusal, Priced, Rates};
