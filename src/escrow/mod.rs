//! Order escrow: the state machine and delivery codes (pure), and the service that applies
//! them to sled, the mint and the buyer's DMs.

pub mod code;
pub mod payout;
pub mod service;
pub mod state;

pub use self::code::{CodeHasher, DeliveryCode, StoredCode, Verdict};
pub use self::service::{Delivery, EscrowError, EscrowService, OrderRecord, Payout, Rules};
pub use self::state::{transition, EscrowEvent, EscrowState, InvalidTransition};
