//! Order escrow: the state machine and delivery codes (pure), and the service that applies
//! them to sled, the mint and the buyer's DMs.

pub mod books;
pub mod code;
pub mod consolidate;
pub mod dispute;
mod ecash;
mod error;
mod intake;
mod messages;
mod notify;
mod payments;
pub mod payout;
pub mod query;
mod records;
pub mod refund;
mod refusal;
pub mod saga;
pub mod service;
pub mod settle;
pub mod shrink;
pub mod state;
mod tokens;
mod unpaid;
pub mod watch;
mod withdraw;

pub use self::code::{CodeHasher, DeliveryCode, StoredCode, Verdict};
pub use self::consolidate::{Consolidation, Footprint};
pub use self::dispute::{
    DisputeStats, IssueAnswer, IssueCase, IssueChoice, IssueView, Party, Said,
};
pub use self::notify::{NoNotices, NoticeError, PaidOrder, PaidOrderListener};
pub use self::payout::Payout;
pub use self::query::Shipping;
pub use self::records::{IssueOutcome, OrderIssue, OrderSide};
pub use self::refund::refundable;
pub use self::refusal::{EscrowRefusal, PayoutFailure};
pub use self::service::{
    held_cap, CancelRequest, Caps, Dialect, EscrowError, EscrowService, OrderRecord, RefundPlan,
    Rules,
};
pub use self::settle::Settled;
pub use self::shrink::Tidied;
pub use self::state::{transition, EscrowEvent, EscrowState, InvalidTransition};
pub use self::withdraw::{Credit, Withdrawal};
