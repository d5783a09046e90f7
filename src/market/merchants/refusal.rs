//! Why the merchant registry will not do what was asked: typed, with a message safe to show
//! the asker. `commands/` maps each refusal to one wire code; USSD and the agents' desk show
//! the message. Storage, sealing and stored-data failures are [`super::MerchantError`]'s
//! other variants, never refusals.

use nostr_sdk::PublicKey;

use super::{KIND_PRODUCT, KIND_STALL, MAX_CATEGORIES, MAX_CATEGORY_CHARS, MAX_NAME_LEN};
use crate::lnurl::DestinationError;

/// A request the registry turns down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerchantRefusal {
    /// No merchant with this key.
    #[error("no merchant {}", .0.to_hex())]
    UnknownMerchant(PublicKey),
    /// A shop name that is empty or too long.
    #[error("a shop name has 1 to {MAX_NAME_LEN} characters")]
    BadName,
    /// A Lightning address soko cannot pay to.
    #[error(transparent)]
    BadAddress(DestinationError),
    /// A payout destination that is neither a payable Lightning address nor an npub.
    #[error("{0}; or give an npub to be paid in Cashu tokens")]
    BadPayout(DestinationError),
    /// Not a phone number.
    #[error("a phone number is + and 7 to 15 digits")]
    BadPhone,
    /// The phone number is another merchant's.
    #[error("this phone number is already registered to another merchant")]
    PhoneTaken,
    /// An activation code for a merchant that does not dial in.
    #[error("this merchant has no phone: it does not use USSD")]
    NoPhone,
    /// Not the merchant's unused activation code.
    #[error("wrong activation code")]
    WrongActivationCode,
    /// A pending merchant has no listings until its owner onboards.
    #[error("merchant {0:?} is pending: it becomes active when its owner dials in over USSD, sets a PIN and confirms the shop name; no stalls or products until then")]
    Pending(String),
    /// A product in a stall the merchant has not saved.
    #[error("stall {0:?} does not exist; add it first")]
    StallMissing(String),
    /// Deleting a stall the merchant does not have.
    #[error("no stall {0:?}")]
    NoStall(String),
    /// Deleting a stall that still has products.
    #[error("stall {stall:?} still has products (e.g. {product:?}); delete them first")]
    StallHasProducts {
        /// The stall.
        stall: String,
        /// One of its products.
        product: String,
    },
    /// Deleting a product the merchant does not have, listed or hidden.
    #[error("no product {0:?}")]
    NoProduct(String),
    /// Hiding a product that is not listed.
    #[error("no listed product {0:?}")]
    NotListed(String),
    /// Showing a product that is not hidden.
    #[error("no hidden product {0:?}")]
    NotHidden(String),
    /// A kind that is neither a stall nor a product.
    #[error("kind {0} is not a listing: {KIND_STALL} (stall) or {KIND_PRODUCT} (product)")]
    NotAListing(u16),
    /// An id that is empty or longer than 64 characters; names what it identifies.
    #[error("{0} id must be 1 to 64 characters")]
    BadId(&'static str),
    /// A stall without a name.
    #[error("a stall needs a name")]
    StallWithoutName,
    /// A currency that is neither `sat` nor a three-letter code.
    #[error("currency {0:?} is neither \"sat\" nor a three-letter code")]
    UnknownCurrency(String),
    /// A stall's shipping zone with a negative or non-finite cost.
    #[error("shipping zone {0:?} has an invalid cost")]
    BadZoneCost(String),
    /// A product without a name.
    #[error("a product needs a name")]
    ProductWithoutName,
    /// A product priced in another currency than its stall.
    #[error("product currency {product:?} differs from the stall's {stall:?}")]
    CurrencyMismatch {
        /// The product's currency.
        product: String,
        /// The stall's.
        stall: String,
    },
    /// A negative or non-finite price.
    #[error("price must be a number ≥ 0")]
    BadPrice,
    /// A product's extra shipping cost for a zone its stall does not have.
    #[error("shipping zone {0:?} is not one of the stall's zones")]
    UnknownZone(String),
    /// A product's extra shipping cost that is negative or non-finite.
    #[error("shipping cost for {0:?} is invalid")]
    BadShippingCost(String),
    /// More categories than a product may have (counted after merging duplicates).
    #[error("a product has at most {MAX_CATEGORIES} categories; {0} given")]
    TooManyCategories(usize),
    /// A category that is empty, too long or holds a control character.
    #[error(
        "category {0:?} must be 1 to {MAX_CATEGORY_CHARS} characters, without control characters"
    )]
    BadCategory(String),
}
