//! Mint requests a mint can recognise when they come again.
//!
//! A wallet killed while its mint request was in flight recovers (cdk's saga replay) by
//! sending the request again. A mint that keeps its answers (NUT-19) answers that from its
//! cache, keyed by the request's bytes. Otherwise it says "already issued", and cdk falls
//! back to restore, which a blind-auth mint may protect (the supported set-up for BAT
//! sessions does: README, blind auth): the sats then wait in cdk's pending saga.
//!
//! cdk locks every mint quote to a key (NUT-20) and signs each mint request afresh, with
//! random auxiliary data (BIP-340), so a replay never had the same bytes and never hit the
//! cache. This connector signs those requests without the auxiliary randomness: the same
//! quote and outputs give the same signature, and the replay is the request the mint saw.
//! BIP-340 allows that; the random part only hardens against side channels. Swaps get
//! their inputs in one order, for the same reason (see [`in_steady_order`]).

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use cdk::nuts::{
    BatchCheckMintQuoteRequest, BatchMintRequest, CheckStateRequest, CheckStateResponse, Id,
    KeySet, KeysetResponse, MeltRequest, MintInfo, MintRequest, MintResponse, PaymentMethod,
    RestoreRequest, RestoreResponse, SwapRequest, SwapResponse,
};
use cdk::wallet::{AuthWallet, LnurlPayInvoiceResponse, LnurlPayResponse, MintConnector};
use cdk::Error;
use cdk_common::database::WalletDatabase;
use cdk_common::{
    MeltQuoteCreateResponse, MeltQuoteRequest, MeltQuoteResponse, MintQuoteRequest,
    MintQuoteResponse,
};
use nostr_sdk::hashes::{sha256, Hash};
use secp256k1::{Keypair, Message};

use super::SledWalletDatabase;

/// A connection to a mint whose mint requests are the same bytes each time they are sent.
#[derive(Debug)]
pub struct ReplayableConnector {
    inner: Arc<dyn MintConnector + Send + Sync>,
    /// Weak: cdk's NUT-17 consumer keeps a wallet's connector for the rest of the process,
    /// and a strong link to the database held sled's lock after the wallet was gone (a
    /// restart in the same process failed with `Store(Locked)`).
    quotes: Weak<SledWalletDatabase>,
}

impl ReplayableConnector {
    /// `inner` reaches the mint; `quotes` is the wallet's database, holding each quote's key.
    pub fn new(
        inner: Arc<dyn MintConnector + Send + Sync>,
        quotes: &Arc<SledWalletDatabase>,
    ) -> Self {
        Self {
            inner,
            quotes: Arc::downgrade(quotes),
        }
    }

    /// Signs `request` again, deterministically, when cdk signed it with the quote's key
    /// over the current NUT-20 message. Anything else (a legacy signature for an old mint,
    /// a quote not found) goes as cdk made it.
    async fn steady(&self, request: &mut MintRequest<String>) {
        if request.signature.is_none() {
            return;
        }
        // Its wallet is gone: nobody will replay this request.
        let Some(quotes) = self.quotes.upgrade() else {
            return;
        };
        let key = match quotes.get_mint_quote(&request.quote).await {
            Ok(Some(quote)) => quote.secret_key,
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "mint quote unreadable; its request goes as signed");
                None
            }
        };
        let Some(key) = key else { return };
        if request.verify_signature(key.public_key()).is_err() {
            return;
        }
        let digest = sha256::Hash::hash(&request.msg_to_sign()).to_byte_array();
        let keypair = Keypair::from_secret_key(&cdk::SECP256K1, &key);
        let signature =
            cdk::SECP256K1.sign_schnorr_no_aux_rand(&Message::from_digest(digest), &keypair);
        request.signature = Some(signature.to_string());
    }
}

/// Sorts a swap's inputs by secret. cdk replays a receive's swap with its inputs as the
/// wallet's database lists them (sled: by Y), not in the order first sent, so the replay
/// missed the mint's cache. The mint signs outputs, not inputs, so their order is free,
/// except under SIG_ALL, whose signature covers it: such a swap goes as it is.
fn in_steady_order(inputs: &mut cdk::nuts::Proofs) {
    let signs_all = inputs.iter().any(|proof| {
        matches!(
            cdk::nuts::SpendingConditions::try_from(&proof.secret),
            Ok(cdk::nuts::SpendingConditions::P2PKConditions { conditions: Some(ref c), .. }
                | cdk::nuts::SpendingConditions::HTLCConditions { conditions: Some(ref c), .. })
                if c.sig_flag == cdk::nuts::SigFlag::SigAll
        )
    });
    if !signs_all {
        inputs.sort_by(|a, b| a.secret.as_bytes().cmp(b.secret.as_bytes()));
    }
}

#[async_trait]
impl MintConnector for ReplayableConnector {
    fn auth_connector(
        &self,
        mint_url: cdk::mint_url::MintUrl,
        cat: Option<cdk::nuts::AuthToken>,
    ) -> Arc<dyn cdk::wallet::AuthMintConnector + Send + Sync> {
        self.inner.auth_connector(mint_url, cat)
    }

    fn oidc_client(&self, discovery: String, client_id: Option<String>) -> cdk::OidcClient {
        self.inner.oidc_client(discovery, client_id)
    }

    async fn connect_websocket(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<
        (
            cdk_common::ws_client::WsSender,
            cdk_common::ws_client::WsReceiver,
        ),
        cdk_common::ws_client::WsError,
    > {
        self.inner.connect_websocket(url, headers).await
    }

    async fn fetch_lnurl_pay_request(&self, url: &str) -> Result<LnurlPayResponse, Error> {
        self.inner.fetch_lnurl_pay_request(url).await
    }

    async fn fetch_lnurl_invoice(&self, url: &str) -> Result<LnurlPayInvoiceResponse, Error> {
        self.inner.fetch_lnurl_invoice(url).await
    }

    async fn get_mint_keys(&self) -> Result<Vec<KeySet>, Error> {
        self.inner.get_mint_keys().await
    }

    async fn get_mint_keyset(&self, keyset_id: Id) -> Result<KeySet, Error> {
        self.inner.get_mint_keyset(keyset_id).await
    }

    async fn get_mint_keysets(&self) -> Result<KeysetResponse, Error> {
        self.inner.get_mint_keysets().await
    }

    async fn post_mint_quote(
        &self,
        request: MintQuoteRequest,
    ) -> Result<MintQuoteResponse<String>, Error> {
        self.inner.post_mint_quote(request).await
    }

    async fn post_mint(
        &self,
        method: &PaymentMethod,
        mut request: MintRequest<String>,
    ) -> Result<MintResponse, Error> {
        self.steady(&mut request).await;
        self.inner.post_mint(method, request).await
    }

    async fn post_batch_check_mint_quote_status(
        &self,
        method: &PaymentMethod,
        request: BatchCheckMintQuoteRequest<String>,
    ) -> Result<Vec<MintQuoteResponse<String>>, Error> {
        self.inner
            .post_batch_check_mint_quote_status(method, request)
            .await
    }

    // soko mints one quote at a time; a batch goes as cdk signed it.
    async fn post_batch_mint(
        &self,
        method: &PaymentMethod,
        request: BatchMintRequest<String>,
    ) -> Result<MintResponse, Error> {
        self.inner.post_batch_mint(method, request).await
    }

    async fn post_melt_quote(
        &self,
        request: MeltQuoteRequest,
    ) -> Result<MeltQuoteCreateResponse<String>, Error> {
        self.inner.post_melt_quote(request).await
    }

    async fn get_mint_quote_status(
        &self,
        method: PaymentMethod,
        quote_id: &str,
    ) -> Result<MintQuoteResponse<String>, Error> {
        self.inner.get_mint_quote_status(method, quote_id).await
    }

    async fn get_melt_quote_status(
        &self,
        method: PaymentMethod,
        quote_id: &str,
    ) -> Result<MeltQuoteResponse<String>, Error> {
        self.inner.get_melt_quote_status(method, quote_id).await
    }

    async fn post_melt(
        &self,
        method: &PaymentMethod,
        request: MeltRequest<String>,
    ) -> Result<MeltQuoteResponse<String>, Error> {
        self.inner.post_melt(method, request).await
    }

    async fn post_swap(&self, mut request: SwapRequest) -> Result<SwapResponse, Error> {
        in_steady_order(request.inputs_mut());
        self.inner.post_swap(request).await
    }

    async fn get_mint_info(&self) -> Result<MintInfo, Error> {
        self.inner.get_mint_info().await
    }

    async fn post_check_state(
        &self,
        request: CheckStateRequest,
    ) -> Result<CheckStateResponse, Error> {
        self.inner.post_check_state(request).await
    }

    async fn post_restore(&self, request: RestoreRequest) -> Result<RestoreResponse, Error> {
        self.inner.post_restore(request).await
    }

    async fn get_auth_wallet(&self) -> Option<AuthWallet> {
        self.inner.get_auth_wallet().await
    }

    async fn set_auth_wallet(&self, wallet: Option<AuthWallet>) {
        self.inner.set_auth_wallet(wallet).await
    }
}
