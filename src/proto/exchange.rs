//! The exchange on the wire (`kinds/exchange.md`).

/// The public order book: NIP-69 peer-to-peer order events, addressable, authored by soko's
/// bot key (`kinds/book.md`).
pub const KIND_BOOK: u16 = 38383;
