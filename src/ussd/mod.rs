//! USSD menus for merchants on feature phones (issue 5). A `soko-ussd` bridge turns each
//! gateway callback into a `ussd_hop` command (kinds/ussd.md); this module answers it with
//! the next screen.
//!
//! - [`screen`]: screens that fit 182 characters, with `0 Next` / `00 Back` pagination.
//! - [`menu`]: the pure menu engine (position, input → next position, screen, actions).
//! - [`session`]: a session's stored state and how `text` yields the latest input.
//! - [`pin`]: PIN hashes (argon2id) and the lockout rule.
//! - [`service`]: loads the merchant's data, applies actions through the domain APIs,
//!   keeps sessions in sled.

pub mod approvals;
pub mod menu;
pub mod pin;
pub mod screen;
pub mod service;
pub mod session;

pub use self::service::{UssdError, UssdService};
