//! The exchange on the wire (`kinds/exchange.md`).

/// The public order book: NIP-69 peer-to-peer order events, addressable, authored by soko's
/// bot key (`kinds/book.md`).
pub const KIND_BOOK: u16 = 38383;

/// A dispute's key reveal: an event signed by a party's long-term registered key, sent to
/// soko inside an encrypted DM and never published (`exchange::reveal`). Tags `p` (soko's
/// bot), `offer` and `side` (`maker` or `taker`); the content is the party's statement. In
/// the ephemeral range (beside registration's 29470), so a relay handed one by mistake does
/// not store it.
pub const KIND_REVEAL: u16 = 29471;
