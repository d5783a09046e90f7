//! The P2P exchange (`kinds/exchange.md`): a maker offers sats for a fiat bill paid, a taker
//! pays the bill and earns them; both post bonds, soko holds escrow and bonds in their
//! private sessions' wallets and lists the offer on a public NIP-69 book that names neither.

pub mod alarm;
pub mod amounts;
pub mod audit;
pub mod book;
pub mod providers;
pub mod reputation;
pub mod reveal;
