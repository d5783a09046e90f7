//! Value encoding, storage errors and the sled access patterns the wallet
//! store is built from.

use std::sync::Arc;

use cdk_common::database::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionResult, TransactionalTree,
};
use sled::{IVec, Tree};

use crate::vault::RecordKey;

/// Clear JSON (or a kv value's clear bytes): what builds before sealing wrote, still read.
pub(super) const ENCODING_V1: u8 = 1;
/// The JSON sealed with the wallet's [`RecordKey`]: what every JSON record is written as.
pub(super) const ENCODING_SEALED: u8 = 2;

/// How this wallet's records are written: sealed under its record key.
#[derive(Clone)]
pub(super) struct Codec {
    key: Arc<RecordKey>,
}

impl Codec {
    pub(super) fn new(key: RecordKey) -> Self {
        Self { key: Arc::new(key) }
    }

    /// Seals an already-encoded clear (v1) value; `None` when it is not one.
    pub(super) fn seal_clear(
        &self,
        bytes: &[u8],
        what: &'static str,
    ) -> Option<Result<Vec<u8>, Error>> {
        match bytes.split_first() {
            Some((&ENCODING_V1, body)) => Some(self.seal_body(body, what)),
            _ => None,
        }
    }

    /// The bytes a value sealed by [`Codec::seal_body`] (or written clear by an older
    /// build) holds.
    pub(super) fn open_body(&self, bytes: &[u8], what: &'static str) -> Result<Vec<u8>, Error> {
        match bytes.split_first() {
            Some((&ENCODING_SEALED, sealed)) => self
                .key
                .open(what.as_bytes(), sealed)
                .map_err(|_| StoreError::Sealed { what }.into()),
            _ => payload(bytes, what).map(<[u8]>::to_vec),
        }
    }

    pub(super) fn seal_body(&self, body: &[u8], what: &'static str) -> Result<Vec<u8>, Error> {
        let sealed = self
            .key
            .seal(what.as_bytes(), body)
            .map_err(|e| StoreError::Encode {
                what,
                reason: e.to_string(),
            })?;
        let mut out = Vec::with_capacity(sealed.len() + 1);
        out.push(ENCODING_SEALED);
        out.extend_from_slice(&sealed);
        Ok(out)
    }
}

/// Storage-level failures, boxed into [`Error::Database`] so callers keep the context.
#[derive(Debug, thiserror::Error)]
pub(super) enum StoreError {
    #[error("sled wallet store: {context}: {source}")]
    Sled {
        context: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error(
        "sled wallet store: {what} value has unknown encoding version {version} (supported: {}, {})",
        ENCODING_V1,
        ENCODING_SEALED
    )]
    UnknownEncoding { what: &'static str, version: u8 },
    #[error("sled wallet store: {what} value does not open (wrong key, or tampered)")]
    Sealed { what: &'static str },
    #[error("sled wallet store: {what} value is empty")]
    Empty { what: &'static str },
    #[error("sled wallet store: cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("sled wallet store: cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("sled wallet store: corrupt key in {what}")]
    CorruptKey { what: &'static str },
    #[error("sled wallet store: invalid wallet namespace: {0}")]
    InvalidNamespace(&'static str),
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::Database(Box::new(err))
    }
}

pub(super) fn sled_err(context: &'static str) -> impl FnOnce(sled::Error) -> Error {
    move |source| StoreError::Sled { context, source }.into()
}

/// serde_json messages can quote the offending input, which for proofs or
/// quotes may be a secret; only the error class and position are kept.
fn json_reason(err: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        err.classify(),
        err.line(),
        err.column()
    )
}

/// Encodes a record sealed: proofs, quotes and sagas carry bearer secrets, and sealing
/// every record keeps one rule with no list of exceptions to get wrong.
pub(super) fn encode<T: Serialize>(
    c: &Codec,
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    let body = serde_json::to_vec(value).map_err(|e| StoreError::Encode {
        what,
        reason: json_reason(&e),
    })?;
    c.seal_body(&body, what)
}

pub(super) fn payload<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a [u8], Error> {
    match bytes.split_first() {
        Some((&ENCODING_V1, body)) => Ok(body),
        Some((&version, _)) => Err(StoreError::UnknownEncoding { what, version }.into()),
        None => Err(StoreError::Empty { what }.into()),
    }
}

/// Decodes a sealed record, or a clear one left by an older build.
pub(super) fn decode<T: DeserializeOwned>(
    c: &Codec,
    bytes: &[u8],
    what: &'static str,
) -> Result<T, Error> {
    let opened;
    let body = match bytes.split_first() {
        Some((&ENCODING_SEALED, sealed)) => {
            opened = c
                .key
                .open(what.as_bytes(), sealed)
                .map_err(|_| StoreError::Sealed { what })?;
            opened.as_slice()
        }
        _ => payload(bytes, what)?,
    };
    serde_json::from_slice(body).map_err(|e| {
        StoreError::Decode {
            what,
            reason: json_reason(&e),
        }
        .into()
    })
}

/// Ends a sled transaction with a domain error instead of retrying it.
pub(super) fn abort(err: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(err)
}

pub(super) fn tx_result<A>(
    res: TransactionResult<A, Error>,
    context: &'static str,
) -> Result<A, Error> {
    res.map_err(|e| match e {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(source) => StoreError::Sled { context, source }.into(),
    })
}

/// Reads and decodes one key inside a transaction.
pub(super) fn tx_get<T: DeserializeOwned>(
    c: &Codec,
    tree: &TransactionalTree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, ConflictableTransactionError<Error>> {
    match tree.get(key)? {
        Some(bytes) => decode(c, &bytes, what).map(Some).map_err(abort),
        None => Ok(None),
    }
}

pub(super) fn tx_put<T: Serialize>(
    c: &Codec,
    tree: &TransactionalTree,
    key: &[u8],
    value: &T,
    what: &'static str,
) -> Result<(), ConflictableTransactionError<Error>> {
    tree.insert(key, encode(c, value, what).map_err(abort)?)?;
    Ok(())
}

pub(super) fn get_value<T: DeserializeOwned>(
    c: &Codec,
    tree: &Tree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, Error> {
    match tree.get(key).map_err(sled_err(what))? {
        Some(bytes) => decode(c, &bytes, what).map(Some),
        None => Ok(None),
    }
}

pub(super) fn put<T: Serialize>(
    c: &Codec,
    tree: &Tree,
    key: &[u8],
    value: &T,
    what: &'static str,
) -> Result<(), Error> {
    tree.insert(key, encode(c, value, what)?)
        .map(|_| ())
        .map_err(sled_err(what))
}

pub(super) fn remove(tree: &Tree, key: &[u8], what: &'static str) -> Result<(), Error> {
    tree.remove(key).map(|_| ()).map_err(sled_err(what))
}

/// Full scan; a wallet holds at most thousands of records, so secondary
/// indexes would cost more in consistency risk than they save in time.
pub(super) fn scan<T: DeserializeOwned>(
    c: &Codec,
    tree: &Tree,
    what: &'static str,
) -> Result<Vec<(IVec, T)>, Error> {
    tree.iter()
        .map(|entry| {
            let (key, value) = entry.map_err(sled_err(what))?;
            Ok((key, decode(c, &value, what)?))
        })
        .collect()
}

pub(super) fn scan_values<T: DeserializeOwned>(
    c: &Codec,
    tree: &Tree,
    what: &'static str,
) -> Result<Vec<T>, Error> {
    Ok(scan(c, tree, what)?.into_iter().map(|(_, v)| v).collect())
}

/// Rewrites every record matching `pred` in one transaction. Candidates are
/// found by a scan outside the transaction (sled transactions cannot iterate)
/// and re-checked inside it, so a record changed in between is left alone.
pub(super) fn rewrite_matching<T, P, C>(
    c: &Codec,
    tree: &Tree,
    what: &'static str,
    pred: P,
    change: C,
) -> Result<(), Error>
where
    T: Serialize + DeserializeOwned,
    P: Fn(&T) -> bool,
    C: Fn(&mut T),
{
    let candidates: Vec<IVec> = scan::<T>(c, tree, what)?
        .into_iter()
        .filter(|(_, v)| pred(v))
        .map(|(k, _)| k)
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    tx_result(
        tree.transaction(|tx| {
            for key in &candidates {
                if let Some(mut value) = tx_get::<T>(c, tx, key, what)? {
                    if pred(&value) {
                        change(&mut value);
                        tx_put(c, tx, key, &value, what)?;
                    }
                }
            }
            Ok(())
        }),
        what,
    )
}

pub(super) fn bump_counter(
    c: &Codec,
    tree: &Tree,
    key: &[u8],
    count: u32,
    what: &'static str,
) -> Result<u32, Error> {
    // One key: a compare-and-swap, retried when another bump came first, not a
    // transaction. A sled 0.34 transaction seals and writes two IO buffers and takes the
    // Db's global write lock, and cdk bumps a counter before every mint and swap.
    loop {
        let stored = tree.get(key).map_err(sled_err(what))?;
        let current = match &stored {
            Some(bytes) => decode::<u32>(c, bytes, what)?,
            None => 0,
        };
        // cdk reads a counter by bumping it by zero: nothing to write.
        if count == 0 {
            return Ok(current);
        }
        let next = current.checked_add(count).ok_or(Error::AmountOverflow)?;
        let swapped = tree
            .compare_and_swap(key, stored, Some(encode(c, &next, what)?))
            .map_err(sled_err(what))?;
        if swapped.is_ok() {
            return Ok(next);
        }
    }
}
