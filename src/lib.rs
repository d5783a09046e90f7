//! soko: a marketplace and P2P exchange bot that talks only Nostr, with Lightning and Cashu
//! ecash for money. See README.md for the architecture and `kinds/` for the protocol.

pub mod agents;
pub mod bot;
pub mod bridge;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod devmint;
pub mod escrow;
pub mod identity;
pub mod inbox;
pub mod lnurl;
pub mod logging;
pub mod market;
pub mod money;
pub mod notices;
pub mod operator;
pub mod outbound;
pub mod proto;
pub mod ratelimit;
pub mod relay;
pub mod store;
pub mod ussd;
pub mod util;
pub mod vault;
pub mod wallet;

pub use self::config::Config;
pub use self::daemon::{Daemon, DaemonError};
