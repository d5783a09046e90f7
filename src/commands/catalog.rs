//! `catalog`: anyone browses the stalls and products soko has seen, from any merchant.

use serde_json::Value;

use super::{merchant_key, to_value, CommandError, Context};
use crate::market::catalog::Query;
use crate::proto::command::{CATALOG_DEFAULT_LIMIT, CATALOG_MAX_LIMIT};
use crate::proto::{CatalogArgs, ErrorCode, Refusal};

/// Listings matching the filters, newest first.
pub fn run(ctx: &Context, args: CatalogArgs) -> Result<Value, CommandError> {
    let limit = args.limit.unwrap_or(CATALOG_DEFAULT_LIMIT);
    if limit == 0 || limit > CATALOG_MAX_LIMIT {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("\"limit\" must be 1 to {CATALOG_MAX_LIMIT}"),
        )
        .into());
    }
    let merchant = args.merchant.as_deref().map(merchant_key).transpose()?;
    let query = Query {
        merchant,
        stall: args.stall,
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    };
    let result = ctx
        .catalog
        .query(&query)
        .map_err(|e| CommandError::Internal(format!("catalog: {e}")))?;
    to_value(result)
}
