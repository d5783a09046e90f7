//! Fiat providers: the admin-managed list of the ways a maker's bill can be paid (M-Pesa,
//! Airtel Money, a bank transfer, …), each with the currencies it takes and what a bill's
//! reference means for it. Stored in the sled tree `exchange/providers`, keyed by the
//! provider's id.
//!
//! A bill's reference (a paybill or till number, an account, a phone number) is private to
//! the maker and the taker who paid the bond: nothing here logs it or puts it in an error.

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, Typed};

/// The tree holding the list.
pub const TREE: &str = "exchange/providers";

/// Most providers the list holds: each is shown to makers, so the list stays short.
pub const MAX_PROVIDERS: usize = 64;

const MAX_ID: usize = 32;
const MAX_NAME: usize = 64;
const MAX_CURRENCIES: usize = 8;
const MAX_KINDS: usize = 5;
const MAX_REFERENCE: usize = 64;

/// What a bill's reference means for a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillKind {
    /// A business number (M-Pesa paybill); the account goes with it in the bill's details.
    Paybill,
    /// A till number (M-Pesa Buy Goods).
    Till,
    /// A bank account and its details.
    BankTransfer,
    /// The text of a QR bill.
    Qr,
    /// A mobile-money phone number.
    Phone,
}

impl BillKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BillKind::Paybill => "paybill",
            BillKind::Till => "till",
            BillKind::BankTransfer => "bank_transfer",
            BillKind::Qr => "qr",
            BillKind::Phone => "phone",
        }
    }

    /// Whether this kind's reference is a number, digits only.
    fn digits_only(self) -> bool {
        matches!(self, BillKind::Paybill | BillKind::Till | BillKind::Phone)
    }
}

/// One way to pay a bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// Short slug, `[a-z0-9-]{1,32}`, e.g. `mpesa`.
    pub id: String,
    /// The name shown to users, e.g. `M-Pesa`: 1 to 64 printable characters.
    pub name: String,
    /// The currencies it takes, ISO 4217 (`KES`): 1 to 8.
    pub currencies: Vec<String>,
    /// What its bills' references are: 1 to 5.
    pub kinds: Vec<BillKind>,
}

/// Why a provider or a bill is refused. None of the messages repeats the input: a bill's
/// reference is private and an id could be anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderRefusal {
    /// The id is not a slug.
    #[error("a provider id is 1 to 32 of a-z, 0-9 and -")]
    BadId,
    /// The name is empty, too long or not printable.
    #[error("a provider name is 1 to 64 printable characters")]
    BadName,
    /// Too few or too many currencies.
    #[error("a provider takes 1 to 8 currencies")]
    CurrencyCount,
    /// A currency is not an ISO 4217 code.
    #[error("a currency is an ISO 4217 code: 3 uppercase letters")]
    BadCurrency,
    /// Too few or too many kinds.
    #[error("a provider has 1 to 5 kinds of bill")]
    KindCount,
    /// A currency or a kind is listed twice.
    #[error("a currency or a kind of bill is listed twice")]
    Duplicate,
    /// The list is full and this is a new provider.
    #[error("the list holds at most 64 providers; remove one first")]
    TooMany,
    /// No provider has this id.
    #[error("no such provider")]
    UnknownProvider,
    /// The provider does not take this kind of bill.
    #[error("this provider does not take this kind of bill")]
    KindNotOffered,
    /// The provider does not take this currency.
    #[error("this provider does not take this currency")]
    CurrencyNotOffered,
    /// The reference is empty, too long or not printable.
    #[error("a bill reference is 1 to 64 printable characters")]
    BadReference,
    /// The kind of bill calls for a number and the reference is not one.
    #[error("this kind of bill reference is digits only")]
    ReferenceNotDigits,
}

/// Failures of the provider list: a refusal, or storage.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider or the bill is not acceptable.
    #[error(transparent)]
    Refused(#[from] ProviderRefusal),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for ProviderError {
    fn from(e: sled::Error) -> Self {
        Self::Store(e.into())
    }
}

impl Provider {
    /// Checks every rule of a provider's fields.
    pub fn validate(&self) -> Result<(), ProviderRefusal> {
        let slug = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if self.id.is_empty() || self.id.len() > MAX_ID || !self.id.chars().all(slug) {
            return Err(ProviderRefusal::BadId);
        }
        if !printable(&self.name, MAX_NAME) {
            return Err(ProviderRefusal::BadName);
        }
        if !(1..=MAX_CURRENCIES).contains(&self.currencies.len()) {
            return Err(ProviderRefusal::CurrencyCount);
        }
        if !self.currencies.iter().all(|c| is_currency(c)) {
            return Err(ProviderRefusal::BadCurrency);
        }
        if !(1..=MAX_KINDS).contains(&self.kinds.len()) {
            return Err(ProviderRefusal::KindCount);
        }
        let mut currencies: Vec<&String> = self.currencies.iter().collect();
        currencies.sort();
        currencies.dedup();
        let mut kinds: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        if currencies.len() != self.currencies.len() || kinds.len() != self.kinds.len() {
            return Err(ProviderRefusal::Duplicate);
        }
        Ok(())
    }
}

/// An ISO 4217 code's shape: 3 ASCII uppercase letters.
fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// 1 to `max` characters, none of them a control character or an invisible format
/// character: a bidi override or a zero-width space would let a name or a reference read as
/// another in the user's client.
fn printable(text: &str, max: usize) -> bool {
    let invisible = |c: char| {
        matches!(c,
            '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
    };
    !text.is_empty()
        && text.chars().count() <= max
        && text.chars().all(|c| !c.is_control() && !invisible(c))
}

/// The fiat providers, in sled. A clone reads and writes the same list.
#[derive(Debug, Clone)]
pub struct Providers {
    tree: Typed<Provider>,
}

impl Providers {
    /// Opens the list (empty the first time: the caller seeds [`defaults`]).
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            tree: store.tree(TREE)?,
        })
    }

    /// Adds a provider, or replaces the one with its id.
    pub fn put(&self, provider: Provider) -> Result<(), ProviderError> {
        provider.validate()?;
        let key = provider.id.as_bytes();
        // Admins are few and put providers rarely: the count-then-insert race can at worst
        // let two concurrent puts end one over the cap.
        if self.tree.len() >= MAX_PROVIDERS && self.tree.raw().get(key)?.is_none() {
            return Err(ProviderRefusal::TooMany.into());
        }
        self.tree.insert(key, &provider)?;
        Ok(())
    }

    /// Removes a provider; false when there was none with this id. Offers already made with
    /// it keep their own copy of what they need.
    pub fn remove(&self, id: &str) -> Result<bool, ProviderError> {
        Ok(self.tree.raw().remove(id.as_bytes())?.is_some())
    }

    /// The provider with this id.
    pub fn get(&self, id: &str) -> Result<Option<Provider>, ProviderError> {
        if id.is_empty() || id.len() > MAX_ID {
            return Ok(None);
        }
        Ok(self.tree.get(id.as_bytes())?)
    }

    /// Every provider, by id.
    pub fn all(&self) -> Result<Vec<Provider>, ProviderError> {
        self.tree
            .iter()
            .map(|entry| Ok(entry?.1))
            .collect::<Result<_, StoreError>>()
            .map_err(ProviderError::from)
    }

    /// Checks a bill for a provider: the provider exists and takes this kind of bill and
    /// this currency, and the reference is 1 to 64 printable characters, digits only for a
    /// paybill, a till or a phone number. Returns the provider. The reference is private:
    /// it is never logged, and no refusal repeats it.
    pub fn check_bill(
        &self,
        provider: &str,
        kind: BillKind,
        currency: &str,
        reference: &str,
    ) -> Result<Provider, ProviderError> {
        let found = self
            .get(provider)?
            .ok_or(ProviderRefusal::UnknownProvider)?;
        if !found.kinds.contains(&kind) {
            return Err(ProviderRefusal::KindNotOffered.into());
        }
        if !found.currencies.iter().any(|c| c == currency) {
            return Err(ProviderRefusal::CurrencyNotOffered.into());
        }
        if !printable(reference, MAX_REFERENCE) {
            return Err(ProviderRefusal::BadReference.into());
        }
        if kind.digits_only() && !reference.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProviderRefusal::ReferenceNotDigits.into());
        }
        Ok(found)
    }
}

/// The providers a fresh soko starts with: M-Pesa (KES: paybill, till, phone), Airtel Money
/// (KES, UGX, TZS: phone) and bank transfer (KES, USD).
pub fn defaults() -> Vec<Provider> {
    let provider = |id: &str, name: &str, currencies: &[&str], kinds: &[BillKind]| Provider {
        id: id.to_owned(),
        name: name.to_owned(),
        currencies: currencies.iter().map(|c| (*c).to_owned()).collect(),
        kinds: kinds.to_vec(),
    };
    vec![
        provider(
            "mpesa",
            "M-Pesa",
            &["KES"],
            &[BillKind::Paybill, BillKind::Till, BillKind::Phone],
        ),
        provider(
            "airtel-money",
            "Airtel Money",
            &["KES", "UGX", "TZS"],
            &[BillKind::Phone],
        ),
        provider(
            "bank-transfer",
            "Bank transfer",
            &["KES", "USD"],
            &[BillKind::BankTransfer],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> Result<(tempfile::TempDir, Providers), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let providers = Providers::open(&store)?;
        for p in defaults() {
            providers.put(p)?;
        }
        Ok((dir, providers))
    }

    fn mpesa() -> Provider {
        defaults().remove(0)
    }

    fn refusal(result: Result<impl std::fmt::Debug, ProviderError>) -> Option<ProviderRefusal> {
        match result {
            Err(ProviderError::Refused(r)) => Some(r),
            _ => None,
        }
    }

    #[test]
    fn each_rule_of_a_provider_is_checked() {
        use ProviderRefusal::*;
        let with = |change: &dyn Fn(&mut Provider)| {
            let mut p = mpesa();
            change(&mut p);
            p.validate().err()
        };
        assert_eq!(with(&|_| {}), None);
        assert_eq!(with(&|p| p.id = "a-1".repeat(10) + "ab"), None, "32 long");
        for id in ["", "M-Pesa", "m pesa", "mpesa_", "é", &"a".repeat(33)] {
            assert_eq!(with(&|p| p.id = id.to_owned()), Some(BadId), "{id:?}");
        }
        assert_eq!(with(&|p| p.name = "é".repeat(64)), None, "64 characters");
        for name in [
            String::new(),
            "x".repeat(65),
            "M-Pesa\n".to_owned(),
            "M-\u{202E}aseP".to_owned(),
            "M\u{200B}Pesa".to_owned(),
        ] {
            assert_eq!(with(&|p| p.name = name.clone()), Some(BadName), "{name:?}");
        }
        assert_eq!(with(&|p| p.currencies.clear()), Some(CurrencyCount));
        assert_eq!(
            with(&|p| p.currencies = (0..9)
                .map(|i| format!("AA{}", (b'A' + i) as char))
                .collect()),
            Some(CurrencyCount)
        );
        for code in ["kes", "KE", "KESH", "K3S", "ÉUR"] {
            assert_eq!(
                with(&|p| p.currencies.push(code.to_owned())),
                Some(BadCurrency),
                "{code}"
            );
        }
        assert_eq!(with(&|p| p.kinds.clear()), Some(KindCount));
        assert_eq!(
            with(&|p| p.kinds = vec![
                BillKind::Paybill,
                BillKind::Till,
                BillKind::Phone,
                BillKind::Qr,
                BillKind::BankTransfer,
                BillKind::Qr
            ]),
            Some(KindCount)
        );
        assert_eq!(with(&|p| p.kinds.push(BillKind::Till)), Some(Duplicate));
        assert_eq!(
            with(&|p| p.currencies.push("KES".to_owned())),
            Some(Duplicate)
        );
    }

    #[test]
    fn bills_are_checked_against_their_provider() -> Result<(), Box<dyn std::error::Error>> {
        use ProviderRefusal::*;
        let (_dir, providers) = open()?;
        let ok = providers.check_bill("mpesa", BillKind::Paybill, "KES", "247247")?;
        assert_eq!(ok.name, "M-Pesa");
        providers.check_bill(
            "bank-transfer",
            BillKind::BankTransfer,
            "USD",
            "Acc 0123-45 / Équité",
        )?;
        let check =
            |p: &str, k: BillKind, c: &str, r: &str| refusal(providers.check_bill(p, k, c, r));
        assert_eq!(
            check("tigo", BillKind::Phone, "TZS", "255700000000"),
            Some(UnknownProvider)
        );
        assert_eq!(
            check(&"m".repeat(500), BillKind::Phone, "KES", "1"),
            Some(UnknownProvider)
        );
        assert_eq!(
            check("airtel-money", BillKind::Till, "UGX", "123"),
            Some(KindNotOffered)
        );
        assert_eq!(
            check("mpesa", BillKind::Till, "UGX", "123"),
            Some(CurrencyNotOffered)
        );
        assert_eq!(
            check("mpesa", BillKind::Till, "kes", "123"),
            Some(CurrencyNotOffered)
        );
        assert_eq!(
            check("mpesa", BillKind::Till, "KES", ""),
            Some(BadReference)
        );
        assert_eq!(
            check("mpesa", BillKind::Till, "KES", &"1".repeat(65)),
            Some(BadReference)
        );
        assert_eq!(
            check("mpesa", BillKind::Phone, "KES", &"1".repeat(64)),
            None
        );
        assert_eq!(
            check(
                "bank-transfer",
                BillKind::BankTransfer,
                "KES",
                "acc\u{0007}12"
            ),
            Some(BadReference)
        );
        assert_eq!(
            check(
                "bank-transfer",
                BillKind::BankTransfer,
                "KES",
                "acc\u{202E}21"
            ),
            Some(BadReference)
        );
        for reference in ["+254700000000", "0700 000 000", "١٢٣", "12a"] {
            assert_eq!(
                check("mpesa", BillKind::Phone, "KES", reference),
                Some(ReferenceNotDigits),
                "{reference}"
            );
        }
        // No refusal repeats the reference.
        let secret = "SECRET-4711";
        let refused = providers
            .check_bill("mpesa", BillKind::Paybill, "KES", secret)
            .err()
            .ok_or("refused")?;
        assert!(!format!("{refused} {refused:?}").contains(secret));
        Ok(())
    }

    #[test]
    fn the_list_is_kept_replaced_removed_and_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let store = Store::open(dir.path())?;
            let providers = Providers::open(&store)?;
            assert!(providers.all()?.is_empty(), "empty at first start");
            for p in defaults() {
                providers.put(p)?;
            }
            let mut renamed = mpesa();
            renamed.name = "M-PESA".to_owned();
            providers.put(renamed)?;
            let mut bad = mpesa();
            bad.currencies.clear();
            assert_eq!(
                refusal(providers.put(bad)),
                Some(ProviderRefusal::CurrencyCount)
            );
        }
        let store = Store::open(dir.path())?;
        let providers = Providers::open(&store)?;
        let ids: Vec<String> = providers.all()?.into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["airtel-money", "bank-transfer", "mpesa"]);
        assert_eq!(
            providers.get("mpesa")?.map(|p| p.name),
            Some("M-PESA".to_owned())
        );
        assert!(providers.remove("airtel-money")?);
        assert!(!providers.remove("airtel-money")?);
        assert_eq!(providers.get("airtel-money")?, None);
        assert_eq!(
            refusal(providers.check_bill("airtel-money", BillKind::Phone, "KES", "1")),
            Some(ProviderRefusal::UnknownProvider)
        );

        for i in providers.all()?.len()..MAX_PROVIDERS {
            let mut p = mpesa();
            p.id = format!("p{i}");
            providers.put(p)?;
        }
        let mut one_more = mpesa();
        one_more.id = "one-more".to_owned();
        assert_eq!(
            refusal(providers.put(one_more)),
            Some(ProviderRefusal::TooMany)
        );
        // A full list still takes a change to a provider it holds.
        let mut changed = mpesa();
        changed.kinds = vec![BillKind::Qr];
        providers.put(changed)?;
        assert_eq!(providers.all()?.len(), MAX_PROVIDERS);
        Ok(())
    }

    #[test]
    fn kinds_have_wire_names() -> Result<(), serde_json::Error> {
        let kinds = [
            BillKind::Paybill,
            BillKind::Till,
            BillKind::BankTransfer,
            BillKind::Qr,
            BillKind::Phone,
        ];
        for kind in kinds {
            assert_eq!(
                serde_json::to_value(kind)?,
                serde_json::json!(kind.as_str())
            );
        }
        let p: Provider = serde_json::from_str(
            r#"{"id":"x","name":"X","currencies":["KES"],"kinds":["bank_transfer"]}"#,
        )?;
        assert_eq!(p.kinds, [BillKind::BankTransfer]);
        Ok(())
    }
}
