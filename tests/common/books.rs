//! The escrow's books checked against the money that backs them.

use std::time::Duration;

use soko::escrow::books::Reconciliation;
use soko::money::Sats;

use super::{outstanding_at, TestSoko};

/// The escrow's books against its wallet, once a reconciliation is not put off by a payout
/// or refund in progress (it answers `None` then); fails after 10 s of that.
pub async fn reconciled(soko: &TestSoko) -> Reconciliation {
    let escrow = soko.daemon().escrow();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(books) = escrow.reconcile().await.expect("reconcile") {
            return books;
        }
        assert!(tokio::time::Instant::now() < deadline, "always busy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// held + owed = the escrow wallet's balance, and the mint's outstanding ecash is that
/// balance plus `outside` (ecash that left soko: refund tokens, payouts minted by the payee).
/// Returns (held, owed).
pub async fn assert_conserved(soko: &TestSoko, mint: &cdk::Mint, outside: u64) -> (Sats, Sats) {
    let (held, owed) = soko.daemon().escrow().books().expect("books");
    let wallet = Sats::from(
        soko.daemon()
            .wallet()
            .total_balance()
            .await
            .expect("balance"),
    );
    assert_eq!(
        held.checked_add(owed).expect("no overflow"),
        wallet,
        "held {held} + owed {owed} = wallet"
    );
    assert_eq!(
        outstanding_at(mint).await,
        wallet.0 + outside,
        "the mint's outstanding ecash is soko's plus what left it"
    );
    (held, owed)
}

/// Nothing left in soko's escrow: no sats held or owed, an empty wallet, and the mint's
/// outstanding ecash is exactly `outside` (what left soko).
pub async fn assert_emptied(soko: &TestSoko, mint: &cdk::Mint, outside: u64) {
    assert_eq!(
        assert_conserved(soko, mint, outside).await,
        (Sats::ZERO, Sats::ZERO),
        "(held, owed)"
    );
}

/// [`assert_conserved`] against soko's embedded dev mint, with no ecash outside soko.
pub async fn assert_books_balance(soko: &TestSoko) {
    assert_conserved(soko, &embedded_mint(soko), 0).await;
}

/// soko's embedded dev mint.
pub fn embedded_mint(soko: &TestSoko) -> std::sync::Arc<cdk::Mint> {
    soko.daemon()
        .dev_mint()
        .expect("embedded dev mint")
        .mint()
        .clone()
}
