//! soko's own wallets talking to the embedded dev mint in-process: cdk's wallet takes a
//! [`MintConnector`], and this one calls the [`Mint`] living in the same process instead of
//! going through HTTP and JSON on loopback (issue 16: an order's mint quote round trip was
//! a loopback HTTP request, with its JSON both ways, to a mint in the same process).
//!
//! Every call that reaches the mint's database runs as a task on the mint's own runtime
//! and holds one of the mint's request turns, exactly like an HTTP request does: cdk's
//! SQLite backend blocks the calling thread while it waits for the write lock, which on
//! soko's runtime stopped every worker (see [`super::DevMint`]); and the mint's recovery of
//! abandoned swaps relies on holding every turn to know no swap is in flight. A caller that
//! gives up mid-way (its future dropped) leaves the call to finish on the mint's runtime,
//! as an HTTP request the client stopped waiting for does.
//!
//! Wallets from elsewhere (other sokos, apps) still use the mint's HTTP interface; so does
//! anything of soko's that talks to an external mint.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use cdk::mint::{MintInput, QuoteId};
use cdk::mint_url::MintUrl;
use cdk::nuts::{
    BatchCheckMintQuoteRequest, BatchMintRequest, CheckStateRequest, CheckStateResponse, Id,
    KeySet, KeysetResponse, MeltRequest, MintInfo, MintRequest, MintResponse, PaymentMethod,
    RestoreRequest, RestoreResponse, SwapRequest, SwapResponse,
};
use cdk::util::unix_time;
use cdk::wallet::{
    AuthWallet, HttpClient, LnurlPayInvoiceResponse, LnurlPayResponse, MintConnector,
};
use cdk::{Error, Mint};
use cdk_common::{
    MeltQuoteCreateResponse, MeltQuoteRequest, MeltQuoteResponse, MintQuoteRequest,
    MintQuoteResponse,
};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::Counts;

/// A wallet's connection to the embedded dev mint, in-process. Clones share the mint, its
/// runtime, its turns and the call count.
#[derive(Clone)]
pub struct InProcessConnector {
    mint: Arc<Mint>,
    runtime: Handle,
    turns: Arc<Semaphore>,
    /// Lightning-address lookups are not the mint's business: they go out over HTTP, as
    /// cdk's own client does them.
    web: HttpClient,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for InProcessConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessConnector")
            .field("calls", &self.counts.in_process.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl InProcessConnector {
    pub(super) fn new(
        mint: Arc<Mint>,
        runtime: Handle,
        turns: Arc<Semaphore>,
        mint_url: MintUrl,
        counts: Arc<Counts>,
    ) -> Self {
        Self {
            mint,
            runtime,
            turns,
            web: HttpClient::new(mint_url, None),
            counts,
        }
    }

    fn counted(&self) {
        self.counts.in_process.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `call` on the mint's runtime once it holds a request turn.
    async fn on_mint<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: FnOnce(Arc<Mint>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
        T: Send + 'static,
    {
        self.counted();
        let mint = Arc::clone(&self.mint);
        let turns = Arc::clone(&self.turns);
        self.runtime
            .spawn(async move {
                // The semaphore is never closed, so a turn always comes.
                let _turn = turns.acquire_owned().await;
                call(mint).await
            })
            .await
            .map_err(|e| Error::Custom(format!("dev mint call did not finish: {e}")))?
    }
}

/// A quote id as the mint knows it; one it could never have issued is an unknown quote.
fn quote_id(id: &str) -> Result<QuoteId, Error> {
    QuoteId::from_str(id).map_err(|_| Error::UnknownQuote)
}

/// The mint refuses a quote used under another payment method than its own, as its HTTP
/// routes do.
async fn check_mint_method(mint: &Mint, id: &QuoteId, method: &PaymentMethod) -> Result<(), Error> {
    if &mint.get_mint_quote_method(id).await? == method {
        Ok(())
    } else {
        Err(Error::InvalidPaymentMethod)
    }
}

#[async_trait]
impl MintConnector for InProcessConnector {
    async fn fetch_lnurl_pay_request(&self, url: &str) -> Result<LnurlPayResponse, Error> {
        self.web.fetch_lnurl_pay_request(url).await
    }

    async fn fetch_lnurl_invoice(&self, url: &str) -> Result<LnurlPayInvoiceResponse, Error> {
        self.web.fetch_lnurl_invoice(url).await
    }

    // Keys and keysets are served from the mint's memory: no database, no turn.
    async fn get_mint_keys(&self) -> Result<Vec<KeySet>, Error> {
        self.counted();
        Ok(self.mint.pubkeys().keysets)
    }

    async fn get_mint_keyset(&self, keyset_id: Id) -> Result<KeySet, Error> {
        self.counted();
        self.mint.keyset(&keyset_id).ok_or(Error::UnknownKeySet)
    }

    async fn get_mint_keysets(&self) -> Result<KeysetResponse, Error> {
        self.counted();
        Ok(self.mint.keysets())
    }

    async fn post_mint_quote(
        &self,
        request: MintQuoteRequest,
    ) -> Result<MintQuoteResponse<String>, Error> {
        self.on_mint(|mint| async move { Ok(mint.get_mint_quote(request).await?.into()) })
            .await
    }

    async fn post_mint(
        &self,
        method: &PaymentMethod,
        request: MintRequest<String>,
    ) -> Result<MintResponse, Error> {
        let method = method.clone();
        let request = MintRequest::<QuoteId>::try_from(request).map_err(|_| Error::UnknownQuote)?;
        self.on_mint(|mint| async move {
            check_mint_method(&mint, &request.quote, &method).await?;
            mint.process_mint_request(MintInput::Single(request)).await
        })
        .await
    }

    async fn post_batch_check_mint_quote_status(
        &self,
        method: &PaymentMethod,
        request: BatchCheckMintQuoteRequest<String>,
    ) -> Result<Vec<MintQuoteResponse<String>>, Error> {
        let method = method.clone();
        let ids = request
            .quotes
            .iter()
            .map(|id| quote_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        self.on_mint(|mint| async move {
            for id in &ids {
                check_mint_method(&mint, id, &method).await?;
            }
            Ok(mint
                .check_mint_quotes(&ids)
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
        .await
    }

    async fn post_batch_mint(
        &self,
        method: &PaymentMethod,
        request: BatchMintRequest<String>,
    ) -> Result<MintResponse, Error> {
        let method = method.clone();
        let request = BatchMintRequest {
            quotes: request
                .quotes
                .iter()
                .map(|id| quote_id(id))
                .collect::<Result<Vec<_>, _>>()?,
            quote_amounts: request.quote_amounts,
            outputs: request.outputs,
            signatures: request.signatures,
        };
        self.on_mint(|mint| async move {
            for id in &request.quotes {
                check_mint_method(&mint, id, &method).await?;
            }
            mint.process_mint_request(MintInput::Batch(request)).await
        })
        .await
    }

    async fn post_melt_quote(
        &self,
        request: MeltQuoteRequest,
    ) -> Result<MeltQuoteCreateResponse<String>, Error> {
        self.on_mint(|mint| async move { Ok(mint.get_melt_quote(request).await?.to_string_id()) })
            .await
    }

    async fn get_mint_quote_status(
        &self,
        method: PaymentMethod,
        quote: &str,
    ) -> Result<MintQuoteResponse<String>, Error> {
        let id = quote_id(quote)?;
        self.on_mint(|mint| async move {
            let response = mint
                .check_mint_quotes(std::slice::from_ref(&id))
                .await?
                .into_iter()
                .next()
                .ok_or(Error::UnknownQuote)?;
            if response.method() != method {
                return Err(Error::InvalidPaymentMethod);
            }
            Ok(response.into())
        })
        .await
    }

    async fn get_melt_quote_status(
        &self,
        method: PaymentMethod,
        quote: &str,
    ) -> Result<MeltQuoteResponse<String>, Error> {
        let id = quote_id(quote)?;
        self.on_mint(|mint| async move {
            if mint.get_melt_quote_method(&id).await? != method {
                return Err(Error::InvalidPaymentMethod);
            }
            Ok(mint.check_melt_quote(&id).await?.to_string_id())
        })
        .await
    }

    async fn post_melt(
        &self,
        method: &PaymentMethod,
        request: MeltRequest<String>,
    ) -> Result<MeltQuoteResponse<String>, Error> {
        let method = method.clone();
        let request = MeltRequest::<QuoteId>::try_from(request).map_err(|_| Error::UnknownQuote)?;
        self.on_mint(|mint| async move {
            if mint.get_melt_quote_method(request.quote_id()).await? != method {
                return Err(Error::InvalidPaymentMethod);
            }
            // As the HTTP route: the answer waits for the payment unless the wallet asked
            // for an early one.
            let pending = mint.melt(&request).await?;
            let response = if request.is_prefer_async() {
                pending.into_pending_response()
            } else {
                pending.await?
            };
            Ok(response.to_string_id())
        })
        .await
    }

    async fn post_swap(&self, request: SwapRequest) -> Result<SwapResponse, Error> {
        self.on_mint(|mint| async move { mint.process_swap_request(request).await })
            .await
    }

    async fn get_mint_info(&self) -> Result<MintInfo, Error> {
        self.on_mint(|mint| async move { Ok(mint.mint_info().await?.time(unix_time())) })
            .await
    }

    async fn post_check_state(
        &self,
        request: CheckStateRequest,
    ) -> Result<CheckStateResponse, Error> {
        self.on_mint(|mint| async move { mint.check_state(&request).await })
            .await
    }

    async fn post_restore(&self, request: RestoreRequest) -> Result<RestoreResponse, Error> {
        self.on_mint(|mint| async move { mint.restore(request).await })
            .await
    }

    // soko's own wallets hold no auth tokens: the endpoints its dev mint protects are ones
    // they never need (see `AuthSettings::blind_protected`), and in-process there is no
    // request to carry a token.
    async fn get_auth_wallet(&self) -> Option<AuthWallet> {
        None
    }

    async fn set_auth_wallet(&self, _wallet: Option<AuthWallet>) {}
}
