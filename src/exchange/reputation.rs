//! Reputation that cannot link trades (`kinds/reputation.md`).
//!
//! A token is a Cashu proof of one point under soko's own reputation key: the holder blinds
//! a random secret, soko signs the blinded point (BDHKE, cdk's `dhke`) with a NUT-12 DLEQ
//! proof, the holder unblinds. Presenting the token later shows soko the secret and the
//! signature, never the blinded point it signed, so a stake cannot be matched to the trade
//! that earned it. A token is burned by recording `Y = hash_to_curve(secret)` in sled.
//!
//! Tree: [`SPENT_TREE`]: `Y` (33 bytes, compressed) → when it was burned (unix seconds,
//! 8 bytes big-endian).

use std::collections::HashSet;
use std::sync::Arc;

use cdk::dhke::{hash_to_curve, sign_message, unblind_message, verify_message};
use cdk::nuts::nut12::BlindSignatureDleq;
use cdk::nuts::{BlindSignature, Id, Keys, PublicKey, SecretKey};
use cdk::Amount;
use nostr_sdk::hashes::hmac::{Hmac, HmacEngine};
use nostr_sdk::hashes::{sha512, Hash, HashEngine};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::proto::reputation::{
    BlindedRep, RepDleq, RepKeyset, RepSignature, RepToken, MAX_REP_TOKENS, POINT_HEX_LEN,
    SCALAR_HEX_LEN, SECRET_HEX_LEN,
};
use crate::store::{Store, StoreError};

/// The sled tree of burned tokens' `Y`s.
pub const SPENT_TREE: &str = "exchange/reputation/spent";

/// The HMAC message the key derives from, under the wallet master seed.
const KEY_DERIVATION: &[u8] = b"soko/reputation";

/// Why tokens or outputs were not accepted: the sender's fault, told to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepRefusal {
    /// Not a token, output or signature: wrong length, not hex, not a curve point.
    #[error("malformed reputation data: {0}")]
    Malformed(String),
    /// A token soko's key did not sign, or (client side) a signature whose DLEQ proof does
    /// not verify against the published key.
    #[error("a reputation signature does not verify")]
    BadSignature,
    /// The same token, or the same blinded output, twice in one command.
    #[error("the same reputation token or output appears twice")]
    Duplicate,
    /// A token already spent.
    #[error("a reputation token was already spent")]
    Spent,
    /// More tokens or outputs than one command may carry.
    #[error("too many reputation tokens or outputs (at most {max})")]
    TooMany {
        /// The limit, [`MAX_REP_TOKENS`].
        max: usize,
    },
}

/// A reputation operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RepError {
    /// Refused: the input is at fault.
    #[error(transparent)]
    Refused(#[from] RepRefusal),
    /// sled failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The curve arithmetic failed on input that had passed the checks (not expected).
    #[error("reputation crypto: {0}")]
    Crypto(String),
}

/// A token checked and ready to burn: its `Y`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    y: [u8; 33],
}

impl Spend {
    /// `Y`, compressed point hex (the key it is burned under).
    pub fn y_hex(&self) -> String {
        cdk::util::hex::encode(self.y)
    }
}

/// soko's reputation key and its spent set.
#[derive(Clone)]
pub struct Reputation {
    key: Arc<SecretKey>,
    pubkey: PublicKey,
    id: Id,
    spent: sled::Tree,
}

impl std::fmt::Debug for Reputation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reputation")
            .field("id", &self.id.to_string())
            .field("pubkey", &self.pubkey.to_hex())
            .finish_non_exhaustive()
    }
}

impl Reputation {
    /// The key derives from the wallet master seed (HMAC-SHA512 of "soko/reputation" under
    /// it, first 32 bytes), so it survives restarts and is never stored: a copy of sled
    /// alone cannot mint reputation.
    pub fn open(store: &Store, seed: &[u8; 64]) -> Result<Self, StoreError> {
        let key = derive_key(seed).ok_or_else(|| StoreError::Codec {
            tree: SPENT_TREE.to_owned(),
            reason: "the wallet seed derives no reputation key".to_owned(),
        })?;
        let pubkey = key.public_key();
        Ok(Self {
            id: keyset_id(pubkey),
            pubkey,
            key: Arc::new(key),
            spent: store.db().open_tree(SPENT_TREE)?,
        })
    }

    /// The public keyset clients check every signature against.
    pub fn keyset(&self) -> RepKeyset {
        RepKeyset {
            id: self.id.to_string(),
            pubkey: self.pubkey.to_hex(),
        }
    }

    /// Checks every token (well formed, signed by the key, no duplicates among them, none
    /// spent) and returns the `Y`s to burn. Nothing is written: burn with [`mark_spent`]
    /// inside the transaction that records what the tokens were staked on, which checks
    /// "not spent" again under the transaction.
    pub fn verify(&self, tokens: &[RepToken]) -> Result<Vec<Spend>, RepError> {
        if tokens.len() > MAX_REP_TOKENS {
            return Err(RepRefusal::TooMany {
                max: MAX_REP_TOKENS,
            }
            .into());
        }
        let mut spends = Vec::with_capacity(tokens.len());
        let mut seen = HashSet::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            let secret = parse_secret(&token.secret)
                .map_err(|why| RepRefusal::Malformed(format!("token {i}: secret {why}")))?;
            let c = parse_point(&token.c)
                .map_err(|why| RepRefusal::Malformed(format!("token {i}: C {why}")))?;
            let y =
                hash_to_curve(secret.as_bytes()).map_err(|e| RepError::Crypto(e.to_string()))?;
            if verify_message(&self.key, c, secret.as_bytes()).is_err() {
                return Err(RepRefusal::BadSignature.into());
            }
            let y = y.to_bytes();
            if !seen.insert(y) {
                return Err(RepRefusal::Duplicate.into());
            }
            if self.spent.contains_key(y).map_err(StoreError::from)? {
                return Err(RepRefusal::Spent.into());
            }
            spends.push(Spend { y });
        }
        Ok(spends)
    }

    /// The sled tree of spent `Y`s, so the caller can burn inside its own multi-tree
    /// transaction.
    pub fn spent_tree(&self) -> &sled::Tree {
        &self.spent
    }

    /// Signs blinded outputs. Deterministic: `C_ = k·B_`, and the DLEQ nonce is derived from
    /// the key and the points (cdk's NUT-12), so a retried completion gives the same answer.
    pub fn sign(&self, outputs: &[BlindedRep]) -> Result<Vec<RepSignature>, RepError> {
        if outputs.len() > MAX_REP_TOKENS {
            return Err(RepRefusal::TooMany {
                max: MAX_REP_TOKENS,
            }
            .into());
        }
        let mut blinded = Vec::with_capacity(outputs.len());
        for (i, output) in outputs.iter().enumerate() {
            let point = parse_point(&output.0)
                .map_err(|why| RepRefusal::Malformed(format!("output {i}: B_ {why}")))?;
            if blinded.contains(&point) {
                // Both would unblind to one token, spendable once: the holder's mistake,
                // told rather than paid for with a lost point.
                return Err(RepRefusal::Duplicate.into());
            }
            blinded.push(point);
        }
        blinded
            .iter()
            .map(|b| {
                let c = sign_message(&self.key, b).map_err(|e| RepError::Crypto(e.to_string()))?;
                let signature = BlindSignature::new(Amount::ONE, c, self.id, b, &self.key)
                    .map_err(|e| RepError::Crypto(e.to_string()))?;
                let dleq = signature
                    .dleq
                    .ok_or_else(|| RepError::Crypto("cdk made no DLEQ proof".to_owned()))?;
                Ok(RepSignature {
                    c_: c.to_hex(),
                    dleq: RepDleq {
                        e: dleq.e.to_secret_hex(),
                        s: dleq.s.to_secret_hex(),
                    },
                })
            })
            .collect()
    }

    /// Verifies and burns `tokens` in a transaction of their own; returns how many burned.
    /// Durable once the caller's next `Store::sync`.
    pub fn burn(&self, tokens: &[RepToken], at: u64) -> Result<usize, RepError> {
        let spends = self.verify(tokens)?;
        self.spent
            .transaction(|tx| mark_spent::<RepRefusal>(tx, &spends, at))
            .map_err(|e| match e {
                TransactionError::Abort(refusal) => RepError::Refused(refusal),
                TransactionError::Storage(e) => RepError::Store(e.into()),
            })?;
        Ok(spends.len())
    }
}

/// Inside a caller's sled transaction on [`Reputation::spent_tree`]: aborts with
/// [`RepRefusal::Spent`] if any `Y` is already there (or twice in `spends`), else inserts
/// them all. Generic over the caller's abort type so it composes with other trees' steps.
pub fn mark_spent<E: From<RepRefusal>>(
    tree: &TransactionalTree,
    spends: &[Spend],
    at: u64,
) -> Result<(), ConflictableTransactionError<E>> {
    for spend in spends {
        // A transaction reads its own writes: a Y twice in `spends` is caught here too.
        if tree.get(spend.y)?.is_some() {
            return Err(ConflictableTransactionError::Abort(
                RepRefusal::Spent.into(),
            ));
        }
        tree.insert(&spend.y[..], &at.to_be_bytes()[..])?;
    }
    Ok(())
}

/// HMAC-SHA512("soko/reputation") under the seed; the first 32 bytes are the key. Should
/// they not be a valid scalar (odds near 2⁻¹²⁸), the next candidates append a counter byte.
fn derive_key(seed: &[u8; 64]) -> Option<SecretKey> {
    (0..=u8::MAX).find_map(|counter| {
        let mut engine = HmacEngine::<sha512::Hash>::new(seed);
        engine.input(KEY_DERIVATION);
        if counter > 0 {
            engine.input(&[counter]);
        }
        let derived = Hmac::<sha512::Hash>::from_engine(engine).to_byte_array();
        SecretKey::from_slice(&derived[..32]).ok()
    })
}

/// The NUT-02 v1 id of the keyset `{1: pubkey}`.
fn keyset_id(pubkey: PublicKey) -> Id {
    Id::v1_from_keys(&Keys::new([(Amount::ONE, pubkey)].into_iter().collect()))
}

/// Lowercase hex of exactly `len` characters, checked before anything is decoded.
fn check_hex(text: &str, len: usize) -> Result<(), String> {
    if text.len() != len {
        return Err(format!("must be {len} hex characters"));
    }
    if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("must be lowercase hex".to_owned());
    }
    Ok(())
}

fn parse_secret(text: &str) -> Result<&str, String> {
    check_hex(text, SECRET_HEX_LEN)?;
    Ok(text)
}

fn parse_point(text: &str) -> Result<PublicKey, String> {
    check_hex(text, POINT_HEX_LEN)?;
    PublicKey::from_hex(text).map_err(|_| "is not a point on secp256k1".to_owned())
}

fn parse_scalar(text: &str) -> Result<SecretKey, String> {
    check_hex(text, SCALAR_HEX_LEN)?;
    SecretKey::from_hex(text).map_err(|_| "is not a scalar".to_owned())
}

/// The holder's side (tests, examples, any Rust client): make blinded outputs, then unblind
/// soko's answers after checking each DLEQ proof against the published keyset.
pub mod client {
    use serde::{Deserialize, Serialize};

    use super::*;

    /// One output waiting for its signature: the secret and blinding factor, private to the
    /// holder. Serializable so a client can keep it across a restart between staking and
    /// the trade's completion.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Pending {
        secret: String,
        r: SecretKey,
        blinded: PublicKey,
    }

    /// `n` fresh outputs: 32 random bytes of secret each, as cdk's `Secret::generate`, and a
    /// random blinding factor. Send the [`BlindedRep`]s, keep the [`Pending`]s.
    pub fn prepare(n: usize) -> (Vec<Pending>, Vec<BlindedRep>) {
        let mut pending = Vec::with_capacity(n);
        let mut outputs = Vec::with_capacity(n);
        while pending.len() < n {
            let secret = cdk::secret::Secret::generate().to_string();
            // hash_to_curve fails for no practical secret; another draw costs nothing.
            let Ok((blinded, r)) = cdk::dhke::blind_message(secret.as_bytes(), None) else {
                continue;
            };
            outputs.push(BlindedRep(blinded.to_hex()));
            pending.push(Pending { secret, r, blinded });
        }
        (pending, outputs)
    }

    /// Checks one signature's DLEQ proof against the keyset for the output it answers:
    /// proof that soko signed with the one published key, not a key kept for this holder.
    pub fn check_signature(
        output: &BlindedRep,
        signature: &RepSignature,
        keyset: &RepKeyset,
    ) -> Result<(), RepError> {
        let (id, pubkey) = parse_keyset(keyset)?;
        let blinded =
            parse_point(&output.0).map_err(|why| RepRefusal::Malformed(format!("B_ {why}")))?;
        check(blinded, signature, id, pubkey).map(|_| ())
    }

    /// Unblinds soko's signatures, in the order of the outputs, into tokens, after checking
    /// every DLEQ proof against `keyset`. The keyset's id must be the one its key derives.
    pub fn finish(
        pending: Vec<Pending>,
        signatures: &[RepSignature],
        keyset: &RepKeyset,
    ) -> Result<Vec<RepToken>, RepError> {
        if pending.len() != signatures.len() {
            return Err(RepRefusal::Malformed(format!(
                "{} signatures for {} outputs",
                signatures.len(),
                pending.len()
            ))
            .into());
        }
        let (id, pubkey) = parse_keyset(keyset)?;
        pending
            .into_iter()
            .zip(signatures)
            .map(|(pending, signature)| {
                let c_ = check(pending.blinded, signature, id, pubkey)?;
                let c = unblind_message(&c_, &pending.r, &pubkey)
                    .map_err(|e| RepError::Crypto(e.to_string()))?;
                Ok(RepToken {
                    secret: pending.secret,
                    c: c.to_hex(),
                })
            })
            .collect()
    }

    fn parse_keyset(keyset: &RepKeyset) -> Result<(Id, PublicKey), RepError> {
        let pubkey = parse_point(&keyset.pubkey)
            .map_err(|why| RepRefusal::Malformed(format!("keyset pubkey {why}")))?;
        let id = keyset_id(pubkey);
        if keyset.id != id.to_string() {
            return Err(RepRefusal::Malformed("keyset id is not its key's".to_owned()).into());
        }
        Ok((id, pubkey))
    }

    /// `C_` once its DLEQ proof verifies.
    fn check(
        blinded: PublicKey,
        signature: &RepSignature,
        id: Id,
        pubkey: PublicKey,
    ) -> Result<PublicKey, RepError> {
        let c_ =
            parse_point(&signature.c_).map_err(|why| RepRefusal::Malformed(format!("C_ {why}")))?;
        let dleq = BlindSignatureDleq {
            e: parse_scalar(&signature.dleq.e)
                .map_err(|why| RepRefusal::Malformed(format!("dleq e {why}")))?,
            s: parse_scalar(&signature.dleq.s)
                .map_err(|why| RepRefusal::Malformed(format!("dleq s {why}")))?,
        };
        let signed = BlindSignature {
            amount: Amount::ONE,
            keyset_id: id,
            c: c_,
            dleq: Some(dleq),
        };
        signed
            .verify_dleq(pubkey, blinded)
            .map_err(|_| RepRefusal::BadSignature)?;
        Ok(c_)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn open(dir: &std::path::Path, seed: u8) -> Result<(Store, Reputation), StoreError> {
        let store = Store::open(dir)?;
        let rep = Reputation::open(&store, &[seed; 64])?;
        Ok((store, rep))
    }

    /// `n` tokens issued by `rep` the way a holder gets them.
    fn earn(rep: &Reputation, n: usize) -> Result<Vec<RepToken>, RepError> {
        let (pending, outputs) = client::prepare(n);
        let signatures = rep.sign(&outputs)?;
        client::finish(pending, &signatures, &rep.keyset())
    }

    fn refusal<T: std::fmt::Debug>(result: Result<T, RepError>) -> RepRefusal {
        match result {
            Err(RepError::Refused(refusal)) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn issued_tokens_verify_and_burn_once_even_across_a_reopen() -> TestResult {
        let dir = tempfile::tempdir()?;
        let tokens = {
            let (store, rep) = open(dir.path(), 1)?;
            let tokens = earn(&rep, 3)?;
            assert_eq!(rep.verify(&tokens)?.len(), 3);
            assert_eq!(rep.burn(&tokens[..2], 1_000)?, 2);
            assert_eq!(refusal(rep.burn(&tokens[..1], 1_001)), RepRefusal::Spent);
            assert_eq!(refusal(rep.verify(&tokens[1..])), RepRefusal::Spent);
            store.db().flush()?;
            tokens
        };
        let (_store, rep) = open(dir.path(), 1)?;
        assert_eq!(refusal(rep.burn(&tokens[1..2], 2_000)), RepRefusal::Spent);
        // The third was never spent and still is good, once.
        assert_eq!(rep.burn(&tokens[2..], 2_000)?, 1);
        assert_eq!(refusal(rep.burn(&tokens[2..], 2_001)), RepRefusal::Spent);
        let y = hash_to_curve(tokens[0].secret.as_bytes())?.to_bytes();
        assert_eq!(
            rep.spent_tree().get(y)?.as_deref(),
            Some(&1_000u64.to_be_bytes()[..])
        );
        Ok(())
    }

    #[test]
    fn a_token_twice_in_one_call_is_refused_and_nothing_burns() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_store, rep) = open(dir.path(), 1)?;
        let tokens = earn(&rep, 2)?;
        let twice = [tokens[0].clone(), tokens[1].clone(), tokens[0].clone()];
        assert_eq!(refusal(rep.burn(&twice, 5)), RepRefusal::Duplicate);
        assert!(rep.spent_tree().is_empty());
        assert_eq!(rep.burn(&tokens, 5)?, 2);
        Ok(())
    }

    #[test]
    fn tokens_of_another_key_or_a_forged_c_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let other_dir = tempfile::tempdir()?;
        let (_store, rep) = open(dir.path(), 1)?;
        let (_other_store, other) = open(other_dir.path(), 2)?;
        let foreign = earn(&other, 1)?;
        assert_eq!(other.verify(&foreign)?.len(), 1);
        assert_eq!(refusal(rep.verify(&foreign)), RepRefusal::BadSignature);

        let mut forged = earn(&rep, 1)?;
        // A point on the curve, but not k·Y: the holder's own Y, say.
        forged[0].c = hash_to_curve(forged[0].secret.as_bytes())?.to_hex();
        assert_eq!(refusal(rep.burn(&forged, 1)), RepRefusal::BadSignature);
        // A real signature moved onto another secret.
        let good = earn(&rep, 2)?;
        let swapped = RepToken {
            secret: good[0].secret.clone(),
            c: good[1].c.clone(),
        };
        assert_eq!(refusal(rep.burn(&[swapped], 1)), RepRefusal::BadSignature);
        assert!(rep.spent_tree().is_empty());
        Ok(())
    }

    #[test]
    fn more_than_the_limit_is_refused_before_any_work() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_store, rep) = open(dir.path(), 1)?;
        let tokens = earn(&rep, MAX_REP_TOKENS)?;
        assert_eq!(rep.verify(&tokens)?.len(), MAX_REP_TOKENS);
        let mut over = tokens.clone();
        over.push(tokens[0].clone());
        let too_many = RepRefusal::TooMany {
            max: MAX_REP_TOKENS,
        };
        assert_eq!(refusal(rep.verify(&over)), too_many);
        let (_, outputs) = client::prepare(MAX_REP_TOKENS + 1);
        assert_eq!(refusal(rep.sign(&outputs)), too_many);
        assert_eq!(rep.sign(&outputs[..MAX_REP_TOKENS])?.len(), MAX_REP_TOKENS);
        assert!(rep.verify(&[])?.is_empty());
        Ok(())
    }

    #[test]
    fn the_client_refuses_a_signature_whose_dleq_does_not_verify() -> TestResult {
        let dir = tempfile::tempdir()?;
        let other_dir = tempfile::tempdir()?;
        let (_store, rep) = open(dir.path(), 1)?;
        let (_other_store, other) = open(other_dir.path(), 2)?;
        let keyset = rep.keyset();

        let (pending, outputs) = client::prepare(2);
        let good = rep.sign(&outputs)?;
        assert!(client::check_signature(&outputs[0], &good[0], &keyset).is_ok());

        // A tampered proof.
        let mut bad = good.clone();
        bad[1].dleq.s = good[0].dleq.s.clone();
        assert_eq!(
            refusal(client::finish(pending.clone(), &bad, &keyset)),
            RepRefusal::BadSignature
        );
        // A signer that uses another key (one kept for this holder, say) while the published
        // keyset says `rep`: its proofs are honest for its own key, so they fail for `rep`'s.
        let tagged = other.sign(&outputs)?;
        assert_eq!(
            refusal(client::finish(pending.clone(), &tagged, &keyset)),
            RepRefusal::BadSignature
        );
        // Signatures answered in the wrong order prove nothing for these outputs.
        let reversed: Vec<_> = good.iter().rev().cloned().collect();
        assert_eq!(
            refusal(client::finish(pending.clone(), &reversed, &keyset)),
            RepRefusal::BadSignature
        );
        // A keyset whose id is not its key's.
        let mut lying = keyset.clone();
        lying.id = other.keyset().id;
        assert!(matches!(
            refusal(client::finish(pending.clone(), &good, &lying)),
            RepRefusal::Malformed(_)
        ));
        assert!(matches!(
            refusal(client::finish(pending.clone(), &good[..1], &keyset)),
            RepRefusal::Malformed(_)
        ));
        assert_eq!(client::finish(pending, &good, &keyset)?.len(), 2);
        Ok(())
    }

    #[test]
    fn signing_is_deterministic_and_duplicate_outputs_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_store, rep) = open(dir.path(), 1)?;
        let (_, outputs) = client::prepare(3);
        let first = rep.sign(&outputs)?;
        assert_eq!(rep.sign(&outputs)?, first);
        assert_eq!(rep.sign(&outputs[1..2])?, first[1..2]);
        assert_ne!(first[0].c_, first[1].c_);
        let twice = [outputs[0].clone(), outputs[0].clone()];
        assert_eq!(refusal(rep.sign(&twice)), RepRefusal::Duplicate);
        Ok(())
    }

    #[test]
    fn the_keyset_is_stable_for_a_seed_and_differs_between_seeds() -> TestResult {
        let dir = tempfile::tempdir()?;
        let keyset = {
            let (_store, rep) = open(dir.path(), 1)?;
            rep.keyset()
        };
        let (_store, rep) = open(dir.path(), 1)?;
        assert_eq!(rep.keyset(), keyset);
        assert_eq!(keyset.id.len(), 16);
        assert!(keyset.id.starts_with("00"), "a NUT-02 v1 id: {}", keyset.id);
        assert_eq!(keyset.pubkey.len(), POINT_HEX_LEN);
        let other_dir = tempfile::tempdir()?;
        let (_other_store, other) = open(other_dir.path(), 2)?;
        assert_ne!(other.keyset().id, keyset.id);
        assert_ne!(other.keyset().pubkey, keyset.pubkey);
        // Nothing of the key is in sled: only the spent tree exists.
        assert!(rep.spent_tree().is_empty());
        Ok(())
    }

    #[test]
    fn a_burn_inside_an_aborted_caller_transaction_burns_nothing() -> TestResult {
        #[derive(Debug)]
        enum Caller {
            Rep(RepRefusal),
            Other,
        }
        impl From<RepRefusal> for Caller {
            fn from(r: RepRefusal) -> Self {
                Caller::Rep(r)
            }
        }
        use sled::Transactional;

        let dir = tempfile::tempdir()?;
        let (store, rep) = open(dir.path(), 1)?;
        let stakes = store.db().open_tree("test/stakes")?;
        let tokens = earn(&rep, 2)?;
        let spends = rep.verify(&tokens)?;
        assert!(spends.iter().all(|s| s.y_hex().len() == POINT_HEX_LEN));

        let aborted: Result<(), _> = (rep.spent_tree(), &stakes).transaction(|(spent, stakes)| {
            mark_spent::<Caller>(spent, &spends, 7)?;
            stakes.insert("offer-1", "2")?;
            Err(ConflictableTransactionError::Abort(Caller::Other))
        });
        assert!(matches!(
            aborted,
            Err(TransactionError::Abort(Caller::Other))
        ));
        assert!(rep.spent_tree().is_empty());
        assert!(stakes.is_empty());

        let committed = (rep.spent_tree(), &stakes).transaction(|(spent, stakes)| {
            mark_spent::<Caller>(spent, &spends, 7)?;
            stakes.insert("offer-1", "2")?;
            Ok(())
        });
        assert!(committed.is_ok(), "{committed:?}");
        assert_eq!(rep.spent_tree().len(), 2);
        // The same spends again, as a racing second command would: refused under the
        // transaction even though they were verified before the first burn.
        let again = (rep.spent_tree(), &stakes)
            .transaction(|(spent, _)| mark_spent::<Caller>(spent, &spends, 8));
        assert!(matches!(
            again,
            Err(TransactionError::Abort(Caller::Rep(RepRefusal::Spent)))
        ));
        Ok(())
    }

    fn hexish() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9a-fA-F]{0,70}",
            "0[23][0-9a-f]{64}",
            "[0-9a-f]{64}",
        ]
    }

    #[test]
    fn garbage_never_panics() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_store, rep) = open(dir.path(), 1)?;
        let keyset = rep.keyset();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 256,
            ..ProptestConfig::default()
        });
        let token = (hexish(), hexish()).prop_map(|(secret, c)| RepToken { secret, c });
        let signature = (hexish(), hexish(), hexish()).prop_map(|(c_, e, s)| RepSignature {
            c_,
            dleq: RepDleq { e, s },
        });
        let case = (
            proptest::collection::vec(token, 0..20),
            proptest::collection::vec(hexish().prop_map(BlindedRep), 0..20),
            proptest::collection::vec(signature, 0..4),
            (hexish(), hexish()),
        );
        runner.run(&case, |(tokens, outputs, signatures, (id, pubkey))| {
            prop_assert!(
                matches!(rep.burn(&tokens, 1), Err(RepError::Refused(_))) || tokens.is_empty()
            );
            let _ = rep.sign(&outputs);
            let (pending, _) = client::prepare(signatures.len());
            prop_assert!(
                client::finish(pending, &signatures, &keyset).is_err() || signatures.is_empty()
            );
            let (pending, _) = client::prepare(signatures.len());
            let _ = client::finish(pending, &signatures, &RepKeyset { id, pubkey });
            Ok(())
        })?;
        Ok(())
    }
}
