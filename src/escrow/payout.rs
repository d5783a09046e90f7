//! Paying a merchant's balance out over Lightning: resolve the merchant's Lightning address
//! or LNURL-pay link (lnurl-rs) to an invoice, then melt from the escrow wallet.
//!
//! The merchant's balance is debited by the amount plus the mint's fee reserve in the same
//! sled transaction that records the payout as pending in the ledger; the melt follows.
//! A melt that fails gives the debit back (compensation); change from an unused fee reserve
//! is credited back. On start, a payout still pending is settled from the mint's answer.

use lnurl::lightning_address::LightningAddress;
use lnurl::lnurl::LnUrl;
use lnurl::LnUrlResponse;

use crate::money::Sats;

/// Failures resolving a payout destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Neither a Lightning address nor an LNURL.
    #[error("{0:?} is neither a Lightning address (user@domain) nor an LNURL-pay link (lnurl1…)")]
    Unreadable(String),
    /// The service answered, but not usefully.
    #[error("the Lightning address service refused: {0}")]
    Service(String),
    /// The amount is outside what the service accepts.
    #[error("the Lightning address accepts {min} to {max} msat, not {asked}")]
    Amount {
        /// Minimum msat.
        min: u64,
        /// Maximum msat.
        max: u64,
        /// Asked msat.
        asked: u64,
    },
}

/// The LNURL-pay URL behind a Lightning address (`https://domain/.well-known/lnurlp/user`)
/// or a bech32 LNURL (any URL it encodes, e.g. `http://` on a test network).
pub fn lnurlp_url(destination: &str) -> Result<String, DestinationError> {
    let destination = destination.trim();
    if destination.len() > 6 && destination[..6].eq_ignore_ascii_case("lnurl1") {
        return LnUrl::decode(destination.to_ascii_lowercase())
            .map(|lnurl| lnurl.url)
            .map_err(|_| DestinationError::Unreadable(destination.to_owned()));
    }
    LightningAddress::new(destination)
        .map(|address| address.lnurlp_url())
        .map_err(|_| DestinationError::Unreadable(destination.to_owned()))
}

/// Asks the destination's LNURL-pay service for an invoice of `amount`.
pub async fn invoice_for(destination: &str, amount: Sats) -> Result<String, DestinationError> {
    let url = lnurlp_url(destination)?;
    let client = lnurl::Builder::default()
        .timeout(15)
        .build_async()
        .map_err(|e| DestinationError::Service(e.to_string()))?;
    let pay = match client.make_request(&url).await {
        Ok(LnUrlResponse::LnUrlPayResponse(pay)) => pay,
        Ok(_) => {
            return Err(DestinationError::Service(
                "not an LNURL-pay service".to_owned(),
            ))
        }
        Err(e) => return Err(DestinationError::Service(e.to_string())),
    };
    let msats = amount
        .to_msats()
        .map_err(|e| DestinationError::Service(e.to_string()))?
        .0;
    if msats < pay.min_sendable || msats > pay.max_sendable {
        return Err(DestinationError::Amount {
            min: pay.min_sendable,
            max: pay.max_sendable,
            asked: msats,
        });
    }
    client
        .get_invoice(&pay, msats, None, None)
        .await
        .map(|invoice| invoice.invoice().to_owned())
        .map_err(|e| DestinationError::Service(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_lnurls_resolve_to_their_urls() {
        assert_eq!(
            lnurlp_url("mama@duka.example"),
            Ok("https://duka.example/.well-known/lnurlp/mama".to_owned())
        );
        let lnurl =
            LnUrl::from_url("http://127.0.0.1:9/.well-known/lnurlp/mama".to_owned()).encode();
        assert_eq!(
            lnurlp_url(&lnurl.to_uppercase()),
            Ok("http://127.0.0.1:9/.well-known/lnurlp/mama".to_owned())
        );
        assert!(lnurlp_url("not an address").is_err());
        assert!(lnurlp_url("lnurl1garbage").is_err());
    }
}
