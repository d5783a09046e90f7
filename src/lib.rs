//! soko: a marketplace and P2P exchange bot that talks only Nostr, with Lightning and Cashu
//! ecash for money. See README.md for the architecture and `kinds/` for the protocol.
//!
//! # Layers
//!
//! A module names only modules of lower layers; the domains of one layer never name each
//! other (`tests/layers.rs` reads `src/` and holds the code to it):
//!
//! | layer | modules |
//! |---|---|
//! | wiring | `daemon`, `operator`, `main`, `bin/soko-ussd` |
//! | transport | `bot` (verify, dedupe, open, hand over, commit and reply), `bridge` |
//! | requests | `commands` (the one refusal-to-wire-code mapping), `inbox` (orders to merchants) |
//! | menus, fan-out | `ussd`, `notices` |
//! | domains | `escrow`, `agents`, `sessions`, `exchange` |
//! | shops | `market` |
//! | sending | `outbound` (sealing, keyring, outbox, publisher) |
//! | edges | `relay`, `wallet`, `lnurl` |
//! | dev mint | `devmint` (in-process cdk mint for development and tests) |
//! | foundation | `proto`, `store`, `vault`, `identity`, `money`, `clock`, `config`, `util`, `ratelimit`, `metrics`, `failpoint`, ... |
//!
//! So domain code never reaches up to the bot, the commands or the menus: what must cross
//! (a paid order told to bridges and agents) goes through a trait given at construction
//! ([`escrow::PaidOrderListener`]).

pub mod agents;
pub mod bot;
pub mod bridge;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod devmint;
pub mod escrow;
pub mod exchange;
pub mod failpoint;
pub mod identity;
pub mod inbox;
pub mod lnurl;
pub mod logging;
pub mod market;
pub mod metrics;
pub mod money;
pub mod notices;
pub mod operator;
pub mod outbound;
pub mod proto;
pub mod ratelimit;
pub mod relay;
pub mod sessions;
pub mod store;
pub mod ussd;
pub mod util;
pub mod vault;
pub mod wallet;

pub use self::config::Config;
pub use self::daemon::{Daemon, DaemonError};
