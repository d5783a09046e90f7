//! The escrow's books checked against the money that backs them.

use soko::money::Sats;

use super::{outstanding_at, TestSoko};

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
