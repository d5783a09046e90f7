//! soko's public protocol types (serde only, no behaviour). `kinds/` specifies them.

pub mod agents;
pub mod catalog;
pub mod command;
pub mod exchange;
pub mod gamma;
pub mod gamma_listing;
pub mod nip15;
pub mod order_issue;
pub mod reputation;
pub mod reveal;
pub mod sessions;
pub mod shopstr;
pub mod ussd;

pub use self::command::{
    CatalogArgs, Command, ErrorBody, ErrorCode, MerchantAddArgs, MerchantPayoutArgs,
    OrderCancelArgs, OrderDeliverArgs, OrderRefArgs, PingArgs, PingResult, ProductPutArgs, Refusal,
    Request, Response, StallPutArgs, PROTOCOL_VERSION,
};
