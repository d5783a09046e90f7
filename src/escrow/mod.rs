//! Order escrow: the state machine and delivery codes. Pure; the service that applies
//! transitions to sled and the mint builds on these.

pub mod code;
pub mod state;

pub use self::code::{CodeHasher, DeliveryCode, StoredCode, Verdict};
pub use self::state::{transition, EscrowEvent, EscrowState, InvalidTransition};
