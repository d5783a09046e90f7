//! The exchange on the wire (`kinds/exchange.md`).
