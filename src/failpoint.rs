//! Crash points for tests, never for production use.
//!
//! `SOKO_FAILPOINT=<name>[,<name>…]` in soko's environment makes it stop at the named points
//! of an inbound event's path the way `kill -9` would, but at a chosen moment: everything
//! written so far is flushed (the worst case for recovery: that moment's state is on disk),
//! then the process aborts without any shutdown. The crash tests (`tests/crash_*.rs`) start
//! the real binary with one of them and check what the next start does.
//!
//! - `before-claim`: the bot got a new event (the relay has stored and acknowledged it) and
//!   has not claimed it yet;
//! - `claimed`: the event is claimed (`seen` = processing) and not yet handled;
//! - `committed`: its reply, the claim's completion and the order's state are committed, and
//!   the reply has not been sent;
//! - `order-held`: a new order's number, expiry and held stock are written, and its record
//!   is not;
//! - `ecash-recorded`: an order paid with a Cashu token (Shopstr's checkout) and the token's
//!   proofs are recorded, and the token has not been redeemed;
//! - `ecash-quoted`: a token of another mint (`[mint] foreign_allow`) is quoted (soko's
//!   invoice and that mint's melt quote recorded), and not yet melted;
//! - `ecash-melted`: that token is melted at its mint to pay soko's invoice, the melt's fees
//!   and change recorded, and soko's wallet has not minted the invoice;
//! - `ecash-redeemed`: that token is redeemed into the escrow wallet, and the order is not
//!   yet recorded;
//! - `ecash-ordered`: that order is recorded paid (its code and status DMs queued, not
//!   sent), and the overpayment not yet given back;
//! - `ecash-change-prepared`: the wallet's send giving the overpayment back is prepared and
//!   recorded, and its token not yet made;
//! - `session-ending`: a session's end is recorded and none of its ecash has gone back;
//! - `session-refund-queued`: a session's refund token DM and `Refunded` are committed, and
//!   the DM has not been sent nor the session's wallet deleted;
//! - `exchange-maker-collected`: a maker's invoice is minted into its session, the listing
//!   not yet committed;
//! - `exchange-listed`: an offer's payment is minted and its listing committed, the book
//!   event and the maker's notice not yet sent;
//! - `exchange-claimed`: a claim is committed (the taker's bond invoice made) and the
//!   taker's session is not yet held for the trade, nor the reply sent;
//! - `exchange-bond-collected`: a taker's bond invoice is minted into its session,
//!   `TAKER_BOND_PAID` not yet committed;
//! - `exchange-bond-paid`: the taker's bond is minted and `TAKER_BOND_PAID` committed, its
//!   notices (the bill to the taker) not yet sent;
//! - `exchange-receipt`: a receipt is committed, the maker's notice and the reply not sent;
//! - `exchange-ended`: a trade's end and its transfers are recorded, no ecash has moved;
//! - `session-swapped-token-made`: a token is made out of a session's wallet by a swap (its
//!   send recorded before) and the token itself is not yet recorded: only the wallet's send
//!   saga holds it, which cdk's recovery drops (see `wallet::recover`);
//! - `exchange-token-made`: one transfer's token is made out of its session and not yet
//!   taken by the session or the fee wallet it goes to;
//! - `exchange-transfer`: one transfer's token is made (and taken, where it goes to a
//!   session or soko's fee wallet) and the transfer is not yet marked done.
//! - `listing-republish`: a product's record changed (a put, or a sale's stock in the paid
//!   commit) and none of its events (NIP-15, Gamma) is queued yet.
//! - `consolidate-recorded`: a consolidating swap of the escrow wallet's proofs is recorded
//!   (its fee to book) and not yet made;
//! - `consolidate-swapped`: that swap is made and its fee not yet booked nor its record
//!   cleared;
//! - `wallet-spending`: a wallet (any: the point is in its store) stored the new proofs of a
//!   swap or melt and has not yet marked the inputs spent: cdk's saga is open, its recovery
//!   at the next start finishes it.
//!
//! One point delays instead of crashing: `slow-event-loop` starts the bot's event loop two
//! seconds late, as a loaded machine may, so that a test can see whether events the relay
//! sends meanwhile are kept.
//!
//! The variable is read once; with it unset every point costs one load of a `OnceLock`.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable naming the active points.
pub const ENV: &str = "SOKO_FAILPOINT";

/// How late `slow-event-loop` starts the event loop.
const SLOW_EVENT_LOOP: Duration = Duration::from_secs(2);

fn active() -> &'static [String] {
    static ACTIVE: OnceLock<Vec<String>> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        std::env::var(ENV)
            .map(|names| {
                names
                    .split(',')
                    .map(|name| name.trim().to_owned())
                    .filter(|name| !name.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// True when the point `name` is active.
pub fn is_active(name: &str) -> bool {
    let points = active();
    !points.is_empty() && points.iter().any(|point| point == name)
}

/// At an active point `name`: flushes `db` and aborts the process.
pub fn crash(name: &str, db: &sled::Tree) {
    if !is_active(name) {
        return;
    }
    // A failed flush still aborts: the test then sees an older state, which soko must
    // handle as well.
    let _ = db.flush();
    eprintln!("{ENV}: crashing at {name}");
    std::process::abort();
}

/// At an active `slow-event-loop`: waits before the event loop starts.
pub async fn slow_event_loop() {
    if is_active("slow-event-loop") {
        tokio::time::sleep(SLOW_EVENT_LOOP).await;
    }
}
