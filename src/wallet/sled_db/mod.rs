//! cdk wallet storage on sled.
//!
//! One [`SledWalletDatabase`] is one isolated wallet living inside a shared
//! [`sled::Db`]: every tree it touches is named `wallet/{namespace}/{concern}`,
//! so wallets opened under different namespaces never see each other's data.
//!
//! Trees, for namespace `ns` (key → value):
//! - `wallet/ns/mints`: mint URL (UTF-8) → `Option<MintInfo>`
//! - `wallet/ns/keysets`: keyset id bytes → owning mint URL + `KeySetInfo`
//! - `wallet/ns/keyset_u32`: `u32::from(keyset id)` big-endian → keyset id bytes
//! - `wallet/ns/keys`: keyset id bytes → `Keys`
//! - `wallet/ns/mint_quotes`: quote id (UTF-8) → wallet `MintQuote`
//! - `wallet/ns/melt_quotes`: quote id (UTF-8) → wallet `MeltQuote`
//! - `wallet/ns/proofs`: proof Y (33-byte compressed point) → `ProofInfo`
//! - `wallet/ns/transactions`: 32-byte `TransactionId` → `Transaction`
//! - `wallet/ns/keyset_counters`: keyset id bytes → NUT-13 counter (`u32`)
//! - `wallet/ns/derivation_counters`: counter namespace (UTF-8) → counter (`u32`)
//! - `wallet/ns/sagas`: saga UUID (16 bytes) → `WalletSaga`
//! - `wallet/ns/kv`: `primary 0x00 secondary 0x00 key` → caller's opaque bytes (soko keeps
//!   the tokens of sends a stop caught there, see `wallet::recover`)
//! - `wallet/ns/p2pk_keys`: public key (33 bytes) → `P2PKSigningKey`
//! - `wallet/ns/quote_ops`: `m` (mint) or `n` (melt) ‖ operation id ‖ `/` ‖ quote id →
//!   nothing: which quotes an operation may have reserved, so that releasing them reads
//!   those quotes and not every quote the wallet ever had (cdk releases after every mint,
//!   and each quote is decrypted to be read). A hint may be stale; the quote is checked.
//!   `built` marks that the quotes of an older build were hinted once.
//!
//! Every value starts with one encoding-version byte, `2`: serde_json (for `kv`, the
//! caller's bytes) sealed under the wallet's record key ([`crate::vault::RecordKey`],
//! ChaCha20-Poly1305 bound to the record kind), because proofs, quotes, sagas and kept
//! tokens hold bearer secrets; a clear `1` record from an older build is read and sealed
//! on open. A value with an unknown
//! version byte is reported as an error rather than guessed at, so a future
//! format change cannot be silently misread by an older binary.
//!
//! Every write is flushed before the call returns: losing freshly swapped
//! proofs or a keyset counter on a crash loses money or reuses secrets. Derivation
//! counters and new mint quotes are the exceptions: the record each index derives is
//! saved after them, and flushing it flushes them (see `increment_derivation_counter`);
//! a new quote's invoice is flushed by whatever hands it out (see `add_mint_quote`).
//! Reading a counter (cdk bumps it by zero) writes nothing.
//!
//! Multi-key changes (proof updates and reservations, counters, optimistic
//! quote and saga updates, mint URL moves) run as sled transactions or
//! compare-and-swap, so neither a crash nor a concurrent call applies half.
//!
//! `codec` holds the value envelope, errors and sled access helpers;
//! `records` the key layouts and per-record rules.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use cdk_common::bitcoin::bip32::DerivationPath;
use cdk_common::database::{validate_kvstore_params, Error, WalletDatabase};
use cdk_common::mint_url::MintUrl;
use cdk_common::nut00::KnownMethod;
use cdk_common::util::unix_time;
use cdk_common::wallet::{
    MeltQuote, MintQuote, P2PKSigningKey, ProofInfo, Transaction, TransactionDirection,
    TransactionId, WalletSaga,
};
use cdk_common::{
    Amount, CurrencyUnit, Id, KeySet, KeySetInfo, Keys, MintInfo, PaymentMethod, PublicKey,
    SpendingConditions, State,
};
use sled::{IVec, Transactional, Tree};
use uuid::Uuid;

use crate::store::Store;
use crate::vault::RecordKey;
use codec::{
    abort, bump_counter, decode, encode, get_value, put, remove, rewrite_matching, scan,
    scan_values, sled_err, tx_get, tx_put, tx_result, Codec, StoreError,
};
use records::{claim_keyset_u32, kv_key, kv_prefix, validate_namespace, QuoteRecord, StoredKeyset};

mod codec;
mod records;

/// A cdk wallet database stored in namespaced trees of a shared sled database.
#[derive(Clone)]
pub struct SledWalletDatabase {
    namespace: Arc<str>,
    store: Store,
    mints: Tree,
    keysets: Tree,
    keyset_u32: Tree,
    keys: Tree,
    mint_quotes: Tree,
    melt_quotes: Tree,
    proofs: Tree,
    transactions: Tree,
    keyset_counters: Tree,
    derivation_counters: Tree,
    sagas: Tree,
    kv: Tree,
    p2pk_keys: Tree,
    quote_ops: Tree,
    codec: Codec,
}

impl fmt::Debug for SledWalletDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledWalletDatabase")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl SledWalletDatabase {
    /// Opens (creating if needed) the wallet stored under `namespace` in `db`, its records
    /// sealed under `key`. Clear records left by an older build are sealed here, once.
    ///
    /// `namespace` must be 1–128 characters of `[A-Za-z0-9._:-]`.
    pub fn open(store: &Store, namespace: &str, key: RecordKey) -> Result<Self, Error> {
        validate_namespace(namespace)?;
        let db = store.db();
        let tree = |concern: &str| {
            db.open_tree(format!("wallet/{namespace}/{concern}"))
                .map_err(sled_err("opening tree"))
        };
        let wallet = Self {
            namespace: Arc::from(namespace),
            store: store.clone(),
            mints: tree("mints")?,
            keysets: tree("keysets")?,
            keyset_u32: tree("keyset_u32")?,
            keys: tree("keys")?,
            mint_quotes: tree("mint_quotes")?,
            melt_quotes: tree("melt_quotes")?,
            proofs: tree("proofs")?,
            transactions: tree("transactions")?,
            keyset_counters: tree("keyset_counters")?,
            derivation_counters: tree("derivation_counters")?,
            sagas: tree("sagas")?,
            kv: tree("kv")?,
            p2pk_keys: tree("p2pk_keys")?,
            quote_ops: tree("quote_ops")?,
            codec: Codec::new(key),
        };
        wallet.seal_clear_records()?;
        wallet.hint_older_reservations()?;
        Ok(wallet)
    }

    /// Hints the reservations of quotes stored before the hints existed, once per wallet.
    fn hint_older_reservations(&self) -> Result<(), Error> {
        const BUILT: &[u8] = b"built";
        if self
            .quote_ops
            .contains_key(BUILT)
            .map_err(sled_err(HINTING))?
        {
            return Ok(());
        }
        self.hint_reservations::<MintQuote>(&self.mint_quotes)?;
        self.hint_reservations::<MeltQuote>(&self.melt_quotes)?;
        self.quote_ops
            .insert(BUILT, &[])
            .map_err(sled_err(HINTING))?;
        Ok(())
    }

    fn hint_reservations<Q: QuoteRecord>(&self, tree: &Tree) -> Result<(), Error> {
        for (_, quote) in scan::<Q>(&self.codec, tree, Q::WHAT)? {
            if let Some(operation) = quote.used_by() {
                self.quote_ops
                    .insert(hint_key::<Q>(operation, quote.id()), &[])
                    .map_err(sled_err(HINTING))?;
            }
        }
        Ok(())
    }

    /// Seals every clear (v1) record, each by compare-and-swap so a concurrent writer's
    /// newer value is never overwritten. Both encodings are read, so a crash halfway
    /// leaves a wallet that works and finishes sealing on the next open. sled keeps old
    /// log segments until it reclaims them, so clear bytes can linger on disk for a while
    /// after migration; the data dir's 0700 mode is what guards them meanwhile.
    fn seal_clear_records(&self) -> Result<(), Error> {
        let trees: [(&Tree, &'static str); 12] = [
            (&self.mints, "mint"),
            (&self.keysets, "keyset"),
            (&self.keys, "keys"),
            (&self.mint_quotes, MintQuote::WHAT),
            (&self.melt_quotes, MeltQuote::WHAT),
            (&self.proofs, "proof"),
            (&self.transactions, "transaction"),
            (&self.keyset_counters, "keyset counter"),
            (&self.derivation_counters, "derivation counter"),
            (&self.sagas, "saga"),
            (&self.p2pk_keys, "p2pk key"),
            (&self.kv, "kv"),
        ];
        let mut sealed = 0usize;
        for (tree, what) in trees {
            for entry in tree.iter() {
                let (key, value) = entry.map_err(sled_err("sealing clear records"))?;
                let Some(new) = self.codec.seal_clear(&value, what) else {
                    continue;
                };
                let swapped = tree
                    .compare_and_swap(&key, Some(value), Some(new?))
                    .map_err(sled_err("sealing clear records"))?;
                sealed += usize::from(swapped.is_ok());
            }
        }
        if sealed > 0 {
            self.proofs
                .flush()
                .map_err(sled_err("flushing sealed records"))?;
            tracing::info!(namespace = %self.namespace, sealed, "sealed wallet records an older build stored in clear");
        }
        Ok(())
    }

    /// Deletes every tree of the wallet stored under `namespace`, returning how many there
    /// were. Its proofs go with them: only for a wallet whose ecash has left.
    pub fn destroy(db: &sled::Db, namespace: &str) -> Result<usize, Error> {
        validate_namespace(namespace)?;
        // The trailing slash keeps namespace `a` from matching `ab`'s trees.
        let prefix = format!("wallet/{namespace}/");
        let mut dropped = 0;
        for name in db.tree_names() {
            if name.starts_with(prefix.as_bytes()) {
                db.drop_tree(&name).map_err(sled_err("dropping tree"))?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// The namespace this wallet was opened under.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Makes every write so far durable; any tree flushes the whole database.
    ///
    /// Through the store's group commit, on a blocking thread: the wallets of soko's
    /// concurrent orders then share one fsync, and no executor thread waits for the disk
    /// (a flush on the calling thread stalled every task on it: on two cores, all of them).
    /// sled 0.34's `flush_async` is not used: overlapping calls can deadlock (sled issue
    /// #1308).
    async fn persist(&self) -> Result<(), Error> {
        self.store
            .sync()
            .await
            .map_err(|e| Error::Database(Box::new(e)))
    }

    /// Insert-or-update with optimistic locking: an update must carry the
    /// stored version and is saved with version + 1; a new quote keeps its own.
    ///
    /// A save that leaves the quote's reservation alone (most: every new quote, every
    /// state change) is one compare-and-swap of the quote, retried when another save came
    /// first. Only one that reserves or releases it also writes the hints, in a
    /// transaction: a sled 0.34 transaction seals and writes two IO buffers and takes the
    /// Db's global write lock. True when the quote was new.
    fn upsert_quote<Q: QuoteRecord>(&self, tree: &Tree, quote: Q) -> Result<bool, Error> {
        let key = quote.id().as_bytes().to_vec();
        loop {
            let bytes = tree.get(&key).map_err(sled_err(Q::WHAT))?;
            let stored = match &bytes {
                Some(bytes) => Some(decode::<Q>(&self.codec, bytes, Q::WHAT)?),
                None => None,
            };
            let saved = self.next_version(stored.as_ref(), &quote)?;
            if stored.as_ref().and_then(|q| q.used_by()) != saved.used_by() {
                break;
            }
            let swapped = tree
                .compare_and_swap(&key, bytes, Some(encode(&self.codec, &saved, Q::WHAT)?))
                .map_err(sled_err(Q::WHAT))?;
            if swapped.is_ok() {
                return Ok(stored.is_none());
            }
        }
        let res = (tree, &self.quote_ops).transaction(|(tx, hints)| {
            let stored = tx_get::<Q>(&self.codec, tx, &key, Q::WHAT)?;
            let saved = self.next_version(stored.as_ref(), &quote).map_err(abort)?;
            let before = stored.as_ref().and_then(|q| q.used_by());
            if before != saved.used_by() {
                if let Some(operation) = before {
                    hints.remove(hint_key::<Q>(operation, saved.id()))?;
                }
                if let Some(operation) = saved.used_by() {
                    hints.insert(hint_key::<Q>(operation, saved.id()), &[])?;
                }
            }
            tx_put(&self.codec, tx, &key, &saved, Q::WHAT)?;
            Ok(stored.is_none())
        });
        tx_result(res, Q::WHAT)
    }

    /// What saving `quote` over `stored` writes: the quote itself when new, else the
    /// update on top of the stored one, refused when it was made from an older version.
    fn next_version<Q: QuoteRecord>(&self, stored: Option<&Q>, quote: &Q) -> Result<Q, Error> {
        match stored {
            None => Ok(quote.clone()),
            Some(stored) if stored.version() != quote.version() => {
                tracing::debug!(namespace = %self.namespace, what = Q::WHAT, "stale quote version rejected");
                Err(Error::ConcurrentUpdate)
            }
            Some(stored) => {
                let mut updated = quote.clone();
                updated.keep_from(stored);
                updated.set_version(quote.version().wrapping_add(1));
                Ok(updated)
            }
        }
    }

    fn reserve_quote<Q: QuoteRecord>(
        &self,
        tree: &Tree,
        quote_id: &str,
        operation_id: &Uuid,
    ) -> Result<(), Error> {
        let key = quote_id.as_bytes();
        let operation = operation_id.to_string();
        tx_result(
            (tree, &self.quote_ops).transaction(|(tx, hints)| {
                let mut quote = tx_get::<Q>(&self.codec, tx, key, Q::WHAT)?
                    .ok_or_else(|| abort(Error::UnknownQuote))?;
                // Reservation deliberately leaves the version alone: cdk reads
                // a quote, reserves it and later saves that same copy.
                if quote.used_by().is_some() {
                    return Err(abort(Error::QuoteAlreadyInUse));
                }
                quote.set_used_by(Some(operation.clone()));
                hints.insert(hint_key::<Q>(&operation, quote_id), &[])?;
                tx_put(&self.codec, tx, key, &quote, Q::WHAT)
            }),
            Q::WHAT,
        )
    }

    fn release_quotes<Q: QuoteRecord>(
        &self,
        tree: &Tree,
        operation_id: &Uuid,
    ) -> Result<(), Error> {
        let operation = operation_id.to_string();
        let prefix = hint_key::<Q>(&operation, "");
        let hinted: Vec<IVec> = self
            .quote_ops
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(sled_err("reading quote reservations"))?;
        if hinted.is_empty() {
            return Ok(());
        }
        tx_result(
            (tree, &self.quote_ops).transaction(|(tx, hints)| {
                for hint in &hinted {
                    let quote_key = &hint[prefix.len()..];
                    if let Some(mut quote) = tx_get::<Q>(&self.codec, tx, quote_key, Q::WHAT)? {
                        if quote.used_by() == Some(operation.as_str()) {
                            quote.set_used_by(None);
                            tx_put(&self.codec, tx, quote_key, &quote, Q::WHAT)?;
                        }
                    }
                    hints.remove(hint)?;
                }
                Ok(())
            }),
            Q::WHAT,
        )
    }
}

const HINTING: &str = "hinting quote reservations";

/// A quote's key in the reservation hints; with an empty `quote_id`, the prefix of all
/// of `operation`'s.
fn hint_key<Q: QuoteRecord>(operation: &str, quote_id: &str) -> Vec<u8> {
    [&[Q::HINT], operation.as_bytes(), b"/", quote_id.as_bytes()].concat()
}

#[async_trait]
impl WalletDatabase<Error> for SledWalletDatabase {
    async fn get_mint(&self, mint_url: MintUrl) -> Result<Option<MintInfo>, Error> {
        let key = mint_url.to_string();
        Ok(
            get_value::<Option<MintInfo>>(&self.codec, &self.mints, key.as_bytes(), "mint")?
                .flatten(),
        )
    }

    async fn get_mints(&self) -> Result<HashMap<MintUrl, Option<MintInfo>>, Error> {
        scan::<Option<MintInfo>>(&self.codec, &self.mints, "mint")?
            .into_iter()
            .map(|(key, info)| {
                let url = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|s| MintUrl::from_str(s).ok())
                    .ok_or(StoreError::CorruptKey { what: "mint" })?;
                Ok((url, info))
            })
            .collect()
    }

    async fn get_mint_keysets(&self, mint_url: MintUrl) -> Result<Option<Vec<KeySetInfo>>, Error> {
        let keysets: Vec<KeySetInfo> =
            scan_values::<StoredKeyset>(&self.codec, &self.keysets, "keyset")?
                .into_iter()
                .filter(|k| k.mint_url == mint_url)
                .map(|k| k.info)
                .collect();
        Ok((!keysets.is_empty()).then_some(keysets))
    }

    async fn get_keyset_by_id(&self, keyset_id: &Id) -> Result<Option<KeySetInfo>, Error> {
        Ok(
            get_value::<StoredKeyset>(&self.codec, &self.keysets, &keyset_id.to_bytes(), "keyset")?
                .map(|k| k.info),
        )
    }

    async fn get_mint_quote(&self, quote_id: &str) -> Result<Option<MintQuote>, Error> {
        get_value(
            &self.codec,
            &self.mint_quotes,
            quote_id.as_bytes(),
            MintQuote::WHAT,
        )
    }

    async fn get_mint_quotes(&self) -> Result<Vec<MintQuote>, Error> {
        scan_values(&self.codec, &self.mint_quotes, MintQuote::WHAT)
    }

    async fn get_unissued_mint_quotes(&self) -> Result<Vec<MintQuote>, Error> {
        let bolt12 = PaymentMethod::Known(KnownMethod::Bolt12);
        Ok(
            scan_values::<MintQuote>(&self.codec, &self.mint_quotes, MintQuote::WHAT)?
                .into_iter()
                .filter(|q| q.amount_issued == Amount::ZERO || q.payment_method == bolt12)
                .collect(),
        )
    }

    async fn get_melt_quote(&self, quote_id: &str) -> Result<Option<MeltQuote>, Error> {
        get_value(
            &self.codec,
            &self.melt_quotes,
            quote_id.as_bytes(),
            MeltQuote::WHAT,
        )
    }

    async fn get_melt_quotes(&self) -> Result<Vec<MeltQuote>, Error> {
        scan_values(&self.codec, &self.melt_quotes, MeltQuote::WHAT)
    }

    async fn get_keys(&self, id: &Id) -> Result<Option<Keys>, Error> {
        get_value(&self.codec, &self.keys, &id.to_bytes(), "keys")
    }

    async fn get_proofs(
        &self,
        mint_url: Option<MintUrl>,
        unit: Option<CurrencyUnit>,
        state: Option<Vec<State>>,
        spending_conditions: Option<Vec<SpendingConditions>>,
    ) -> Result<Vec<ProofInfo>, Error> {
        Ok(
            scan_values::<ProofInfo>(&self.codec, &self.proofs, "proof")?
                .into_iter()
                .filter(|p| p.matches_conditions(&mint_url, &unit, &state, &spending_conditions))
                .collect(),
        )
    }

    async fn get_proofs_by_ys(&self, ys: Vec<PublicKey>) -> Result<Vec<ProofInfo>, Error> {
        let mut found = Vec::with_capacity(ys.len());
        for y in ys {
            if let Some(proof) = get_value(&self.codec, &self.proofs, &y.to_bytes(), "proof")? {
                found.push(proof);
            }
        }
        Ok(found)
    }

    async fn get_balance(
        &self,
        mint_url: Option<MintUrl>,
        unit: Option<CurrencyUnit>,
        state: Option<Vec<State>>,
    ) -> Result<u64, Error> {
        self.get_proofs(mint_url, unit, state, None)
            .await?
            .iter()
            .try_fold(0u64, |sum, p| sum.checked_add(u64::from(p.proof.amount)))
            .ok_or(Error::AmountOverflow)
    }

    async fn get_transaction(
        &self,
        transaction_id: TransactionId,
    ) -> Result<Option<Transaction>, Error> {
        get_value(
            &self.codec,
            &self.transactions,
            transaction_id.as_slice(),
            "transaction",
        )
    }

    async fn list_transactions(
        &self,
        mint_url: Option<MintUrl>,
        direction: Option<TransactionDirection>,
        unit: Option<CurrencyUnit>,
    ) -> Result<Vec<Transaction>, Error> {
        let mut txs: Vec<Transaction> =
            scan_values::<Transaction>(&self.codec, &self.transactions, "transaction")?
                .into_iter()
                .filter(|t| t.matches_conditions(&mint_url, &direction, &unit))
                .collect();
        // Transaction's Ord is newest first, which is how wallets list history.
        txs.sort();
        Ok(txs)
    }

    async fn update_proofs(
        &self,
        added: Vec<ProofInfo>,
        removed_ys: Vec<PublicKey>,
    ) -> Result<(), Error> {
        tx_result(
            self.proofs.transaction(|tx| {
                for proof in &added {
                    let key = proof.y.to_bytes();
                    // The derivation index is fixed when the proof is minted;
                    // re-saving a copy rebuilt without it must not erase it.
                    if proof.derivation_index.is_none() {
                        if let Some(stored) = tx_get::<ProofInfo>(&self.codec, tx, &key, "proof")? {
                            if stored.derivation_index.is_some() {
                                let mut merged = proof.clone();
                                merged.derivation_index = stored.derivation_index;
                                tx_put(&self.codec, tx, &key, &merged, "proof")?;
                                continue;
                            }
                        }
                    }
                    tx_put(&self.codec, tx, &key, proof, "proof")?;
                }
                for y in &removed_ys {
                    tx.remove(&y.to_bytes()[..])?;
                }
                Ok(())
            }),
            "updating proofs",
        )?;
        self.persist().await
    }

    async fn update_proofs_state(&self, ys: Vec<PublicKey>, state: State) -> Result<(), Error> {
        if state == State::Spent {
            // A swap stores its new proofs, then marks its inputs spent: between the two, a
            // crash leaves both in the wallet with the swap's saga open (issue 16's test).
            crate::failpoint::crash("wallet-spending", &self.proofs);
        }
        // Unknown Ys are skipped, as cdk-sqlite's `UPDATE ... WHERE y IN` does.
        tx_result(
            self.proofs.transaction(|tx| {
                for y in &ys {
                    let key = y.to_bytes();
                    if let Some(mut proof) = tx_get::<ProofInfo>(&self.codec, tx, &key, "proof")? {
                        proof.state = state;
                        tx_put(&self.codec, tx, &key, &proof, "proof")?;
                    }
                }
                Ok(())
            }),
            "updating proof states",
        )?;
        self.persist().await
    }

    async fn add_transaction(&self, transaction: Transaction) -> Result<(), Error> {
        let id = transaction.id();
        put(
            &self.codec,
            &self.transactions,
            id.as_slice(),
            &transaction,
            "transaction",
        )?;
        self.persist().await
    }

    async fn update_mint_url(
        &self,
        old_mint_url: MintUrl,
        new_mint_url: MintUrl,
    ) -> Result<(), Error> {
        let proof_keys: Vec<IVec> = scan::<ProofInfo>(&self.codec, &self.proofs, "proof")?
            .into_iter()
            .filter(|(_, p)| p.mint_url == old_mint_url)
            .map(|(k, _)| k)
            .collect();
        let mint_quote_keys: Vec<IVec> =
            scan::<MintQuote>(&self.codec, &self.mint_quotes, MintQuote::WHAT)?
                .into_iter()
                .filter(|(_, q)| q.mint_url == old_mint_url)
                .map(|(k, _)| k)
                .collect();
        let melt_quote_keys: Vec<IVec> =
            scan::<MeltQuote>(&self.codec, &self.melt_quotes, MeltQuote::WHAT)?
                .into_iter()
                .filter(|(_, q)| q.mint_url.as_ref() == Some(&old_mint_url))
                .map(|(k, _)| k)
                .collect();
        // One transaction so a crash cannot leave proofs and quotes pointing
        // at different URLs for the same mint.
        let trees = (&self.proofs, &self.mint_quotes, &self.melt_quotes);
        tx_result(
            trees.transaction(|(proofs, mint_quotes, melt_quotes)| {
                for key in &proof_keys {
                    if let Some(mut p) = tx_get::<ProofInfo>(&self.codec, proofs, key, "proof")? {
                        if p.mint_url == old_mint_url {
                            p.mint_url = new_mint_url.clone();
                            tx_put(&self.codec, proofs, key, &p, "proof")?;
                        }
                    }
                }
                for key in &mint_quote_keys {
                    if let Some(mut q) =
                        tx_get::<MintQuote>(&self.codec, mint_quotes, key, MintQuote::WHAT)?
                    {
                        if q.mint_url == old_mint_url {
                            q.mint_url = new_mint_url.clone();
                            tx_put(&self.codec, mint_quotes, key, &q, MintQuote::WHAT)?;
                        }
                    }
                }
                for key in &melt_quote_keys {
                    if let Some(mut q) =
                        tx_get::<MeltQuote>(&self.codec, melt_quotes, key, MeltQuote::WHAT)?
                    {
                        if q.mint_url.as_ref() == Some(&old_mint_url) {
                            q.mint_url = Some(new_mint_url.clone());
                            tx_put(&self.codec, melt_quotes, key, &q, MeltQuote::WHAT)?;
                        }
                    }
                }
                Ok(())
            }),
            "updating mint url",
        )?;
        self.persist().await
    }

    async fn increment_keyset_counter(&self, keyset_id: &Id, count: u32) -> Result<u32, Error> {
        let next = bump_counter(
            &self.codec,
            &self.keyset_counters,
            &keyset_id.to_bytes(),
            count,
            "keyset counter",
        )?;
        if count > 0 {
            self.persist().await?;
        }
        Ok(next)
    }

    /// Not flushed: cdk saves, and so flushes, the record of what each index derived (the
    /// NUT-20 quote, the P2PK key) right after the bump, and sled recovers its log as a
    /// prefix, so the bump is on disk whenever that record is. A crash before it loses the
    /// record and the bump together, and the index is given again. The one derived value
    /// that leaves before its record is saved, a NUT-20 quote key sent with the quote
    /// request, then locks a second quote as well: the first was never handed out (its
    /// record is what was lost), so nobody pays it, and both stay spendable with the key.
    /// This flush cost every order a group commit (issue 16).
    async fn increment_derivation_counter(
        &self,
        namespace: &str,
        count: u32,
    ) -> Result<u32, Error> {
        bump_counter(
            &self.codec,
            &self.derivation_counters,
            namespace.as_bytes(),
            count,
            "derivation counter",
        )
    }

    async fn add_mint(&self, mint_url: MintUrl, mint_info: Option<MintInfo>) -> Result<(), Error> {
        let key = mint_url.to_string();
        put(&self.codec, &self.mints, key.as_bytes(), &mint_info, "mint")?;
        self.persist().await
    }

    async fn remove_mint(&self, mint_url: MintUrl) -> Result<(), Error> {
        // Keysets, keys and proofs of the mint stay, as in cdk's redb backend:
        // proofs may still need their keyset's fee data.
        let key = mint_url.to_string();
        remove(&self.mints, key.as_bytes(), "mint")?;
        self.persist().await
    }

    async fn add_mint_keysets(
        &self,
        mint_url: MintUrl,
        keysets: Vec<KeySetInfo>,
    ) -> Result<(), Error> {
        tx_result(
            (&self.keysets, &self.keyset_u32).transaction(|(keysets_tx, u32_tx)| {
                for keyset in &keysets {
                    claim_keyset_u32(u32_tx, &keyset.id)?;
                    let key = keyset.id.to_bytes();
                    // Existing keysets keep their mint and unit; only what a
                    // mint may change later (activity, fee) is refreshed.
                    let record =
                        match tx_get::<StoredKeyset>(&self.codec, keysets_tx, &key, "keyset")? {
                            Some(mut stored) => {
                                stored.info.active = keyset.active;
                                stored.info.input_fee_ppk = keyset.input_fee_ppk;
                                stored
                            }
                            None => StoredKeyset {
                                mint_url: mint_url.clone(),
                                info: keyset.clone(),
                            },
                        };
                    tx_put(&self.codec, keysets_tx, &key, &record, "keyset")?;
                }
                Ok(())
            }),
            "adding keysets",
        )?;
        self.persist().await
    }

    /// A new quote is not flushed here: it matters once its invoice is handed out, and
    /// whatever soko hands it out with flushes first (a reply that reports state, the
    /// type 1 of an order, a melt's saga). A crash before that loses a quote nobody can
    /// pay. This flush cost every order a group commit (issue 16). Changes to a known
    /// quote (paid, issued, reserved) are flushed as every other write is.
    async fn add_mint_quote(&self, quote: MintQuote) -> Result<(), Error> {
        if self.upsert_quote(&self.mint_quotes, quote)? {
            return Ok(());
        }
        self.persist().await
    }

    async fn remove_mint_quote(&self, quote_id: &str) -> Result<(), Error> {
        remove(&self.mint_quotes, quote_id.as_bytes(), MintQuote::WHAT)?;
        self.persist().await
    }

    async fn add_melt_quote(&self, quote: MeltQuote) -> Result<(), Error> {
        self.upsert_quote(&self.melt_quotes, quote)?;
        self.persist().await
    }

    async fn remove_melt_quote(&self, quote_id: &str) -> Result<(), Error> {
        remove(&self.melt_quotes, quote_id.as_bytes(), MeltQuote::WHAT)?;
        self.persist().await
    }

    async fn add_keys(&self, keyset: KeySet) -> Result<(), Error> {
        keyset.verify_id()?;
        let key = keyset.id.to_bytes();
        tx_result(
            (&self.keys, &self.keyset_u32).transaction(|(keys_tx, u32_tx)| {
                if keys_tx.get(key.as_slice())?.is_some() {
                    return Err(abort(Error::Duplicate));
                }
                claim_keyset_u32(u32_tx, &keyset.id)?;
                tx_put(&self.codec, keys_tx, &key, &keyset.keys, "keys")
            }),
            "adding keys",
        )?;
        self.persist().await
    }

    async fn remove_keys(&self, id: &Id) -> Result<(), Error> {
        remove(&self.keys, &id.to_bytes(), "keys")?;
        self.persist().await
    }

    async fn remove_transaction(&self, transaction_id: TransactionId) -> Result<(), Error> {
        remove(&self.transactions, transaction_id.as_slice(), "transaction")?;
        self.persist().await
    }

    async fn add_saga(&self, saga: WalletSaga) -> Result<(), Error> {
        let value = encode(&self.codec, &saga, "saga")?;
        self.sagas
            .compare_and_swap(saga.id.as_bytes(), None::<&[u8]>, Some(value))
            .map_err(sled_err("adding saga"))?
            .map_err(|_| Error::Duplicate)?;
        self.persist().await
    }

    async fn get_saga(&self, id: &Uuid) -> Result<Option<WalletSaga>, Error> {
        get_value(&self.codec, &self.sagas, id.as_bytes(), "saga")
    }

    async fn update_saga(&self, saga: WalletSaga) -> Result<bool, Error> {
        // The caller has already bumped the version, so the stored copy must
        // be exactly one behind; the swap fails if anyone wrote in between.
        let key = saga.id.as_bytes();
        let Some(current) = self.sagas.get(key).map_err(sled_err("reading saga"))? else {
            return Ok(false);
        };
        let stored: WalletSaga = decode(&self.codec, &current, "saga")?;
        if stored.version != saga.version.saturating_sub(1) {
            tracing::debug!(namespace = %self.namespace, saga_id = %saga.id, "stale saga version rejected");
            return Ok(false);
        }
        let swapped = self
            .sagas
            .compare_and_swap(
                key,
                Some(current),
                Some(encode(&self.codec, &saga, "saga")?),
            )
            .map_err(sled_err("updating saga"))?
            .is_ok();
        if swapped {
            self.persist().await?;
        }
        Ok(swapped)
    }

    async fn delete_saga(&self, id: &Uuid) -> Result<(), Error> {
        remove(&self.sagas, id.as_bytes(), "saga")?;
        self.persist().await
    }

    async fn get_incomplete_sagas(&self) -> Result<Vec<WalletSaga>, Error> {
        let mut sagas: Vec<WalletSaga> = scan_values(&self.codec, &self.sagas, "saga")?;
        sagas.sort_by_key(|s| s.created_at);
        Ok(sagas)
    }

    async fn reserve_proofs(&self, ys: Vec<PublicKey>, operation_id: &Uuid) -> Result<(), Error> {
        // All or nothing: one unavailable proof aborts the whole reservation.
        // A missing proof is "not unspent" too, matching cdk-sqlite.
        tx_result(
            self.proofs.transaction(|tx| {
                for y in &ys {
                    let key = y.to_bytes();
                    let mut proof = tx_get::<ProofInfo>(&self.codec, tx, &key, "proof")?
                        .filter(|p| p.state == State::Unspent)
                        .ok_or_else(|| abort(Error::ProofNotUnspent))?;
                    proof.state = State::Reserved;
                    proof.used_by_operation = Some(*operation_id);
                    tx_put(&self.codec, tx, &key, &proof, "proof")?;
                }
                Ok(())
            }),
            "reserving proofs",
        )?;
        self.persist().await
    }

    async fn release_proofs(&self, operation_id: &Uuid) -> Result<(), Error> {
        // Spent proofs keep their owner so the history of who spent them stays.
        rewrite_matching::<ProofInfo, _, _>(
            &self.codec,
            &self.proofs,
            "proof",
            |p| {
                p.used_by_operation.as_ref() == Some(operation_id)
                    && matches!(p.state, State::Reserved | State::Pending)
            },
            |p| {
                p.state = State::Unspent;
                p.used_by_operation = None;
            },
        )?;
        self.persist().await
    }

    async fn get_reserved_proofs(&self, operation_id: &Uuid) -> Result<Vec<ProofInfo>, Error> {
        Ok(
            scan_values::<ProofInfo>(&self.codec, &self.proofs, "proof")?
                .into_iter()
                .filter(|p| p.used_by_operation.as_ref() == Some(operation_id))
                .collect(),
        )
    }

    async fn reserve_melt_quote(&self, quote_id: &str, operation_id: &Uuid) -> Result<(), Error> {
        self.reserve_quote::<MeltQuote>(&self.melt_quotes, quote_id, operation_id)?;
        self.persist().await
    }

    async fn release_melt_quote(&self, operation_id: &Uuid) -> Result<(), Error> {
        self.release_quotes::<MeltQuote>(&self.melt_quotes, operation_id)?;
        self.persist().await
    }

    async fn reserve_mint_quote(&self, quote_id: &str, operation_id: &Uuid) -> Result<(), Error> {
        self.reserve_quote::<MintQuote>(&self.mint_quotes, quote_id, operation_id)?;
        self.persist().await
    }

    async fn release_mint_quote(&self, operation_id: &Uuid) -> Result<(), Error> {
        self.release_quotes::<MintQuote>(&self.mint_quotes, operation_id)?;
        self.persist().await
    }

    async fn kv_read(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, Error> {
        validate_kvstore_params(primary_namespace, secondary_namespace, Some(key))?;
        let key = kv_key(primary_namespace, secondary_namespace, key);
        match self.kv.get(key).map_err(sled_err("kv"))? {
            Some(bytes) => Ok(Some(self.codec.open_body(&bytes, "kv")?)),
            None => Ok(None),
        }
    }

    async fn kv_list(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
    ) -> Result<Vec<String>, Error> {
        validate_kvstore_params(primary_namespace, secondary_namespace, None)?;
        let prefix = kv_prefix(primary_namespace, secondary_namespace);
        self.kv
            .scan_prefix(&prefix)
            .keys()
            .map(|key| {
                let key = key.map_err(sled_err("kv"))?;
                key.get(prefix.len()..)
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .map(str::to_owned)
                    .ok_or_else(|| StoreError::CorruptKey { what: "kv" }.into())
            })
            .collect()
    }

    async fn kv_write(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), Error> {
        validate_kvstore_params(primary_namespace, secondary_namespace, Some(key))?;
        let stored = self.codec.seal_body(value, "kv")?;
        let key = kv_key(primary_namespace, secondary_namespace, key);
        self.kv.insert(key, stored).map_err(sled_err("kv"))?;
        self.persist().await
    }

    async fn kv_remove(
        &self,
        primary_namespace: &str,
        secondary_namespace: &str,
        key: &str,
    ) -> Result<(), Error> {
        validate_kvstore_params(primary_namespace, secondary_namespace, Some(key))?;
        let key = kv_key(primary_namespace, secondary_namespace, key);
        remove(&self.kv, &key, "kv")?;
        self.persist().await
    }

    async fn add_p2pk_key(
        &self,
        pubkey: &PublicKey,
        derivation_path: DerivationPath,
        derivation_index: u32,
    ) -> Result<(), Error> {
        let record = P2PKSigningKey {
            pubkey: *pubkey,
            derivation_path,
            derivation_index,
            created_time: unix_time(),
        };
        // Insert-only, as cdk-sqlite's primary key makes it: a second record
        // for one pubkey would mean two derivations claim the same key.
        self.p2pk_keys
            .compare_and_swap(
                pubkey.to_bytes(),
                None::<&[u8]>,
                Some(encode(&self.codec, &record, "p2pk key")?),
            )
            .map_err(sled_err("adding p2pk key"))?
            .map_err(|_| Error::Duplicate)?;
        self.persist().await
    }

    async fn get_p2pk_key(&self, pubkey: &PublicKey) -> Result<Option<P2PKSigningKey>, Error> {
        get_value(&self.codec, &self.p2pk_keys, &pubkey.to_bytes(), "p2pk key")
    }

    async fn list_p2pk_keys(&self) -> Result<Vec<P2PKSigningKey>, Error> {
        let mut keys: Vec<P2PKSigningKey> = scan_values(&self.codec, &self.p2pk_keys, "p2pk key")?;
        keys.sort_by_key(|k| std::cmp::Reverse(k.derivation_index));
        Ok(keys)
    }

    async fn latest_p2pk(&self) -> Result<Option<P2PKSigningKey>, Error> {
        // "Latest" is the highest derivation index (as cdk-sqlite orders it):
        // the wallet derives the next key from it, and clocks can go backwards.
        Ok(
            scan_values::<P2PKSigningKey>(&self.codec, &self.p2pk_keys, "p2pk key")?
                .into_iter()
                .max_by_key(|k| (k.derivation_index, k.created_time)),
        )
    }
}
