//! `catalog`: anyone browses the stalls and products soko has seen, from any merchant.

use serde_json::Value;

use super::{merchant_key, to_value, CommandError, Context};
use crate::market::catalog::Query;
use crate::proto::command::{CATALOG_DEFAULT_LIMIT, CATALOG_MAX_LIMIT, MAX_RESULT_BYTES};
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
    let mut result = ctx
        .catalog
        .query(&query)
        .map_err(|e| CommandError::Internal(format!("catalog: {e}")))?;
    // The answer must fit one sealed DM: entries are dropped from the end of the longer
    // list until it does, and `truncated` says so (issue 11).
    let mut truncated = false;
    while serde_json::to_vec(&result).map_or(0, |v| v.len()) > MAX_RESULT_BYTES {
        let list_cut = if result.products.len() >= result.stalls.len() {
            result.products.pop().is_some()
        } else {
            result.stalls.pop().is_some()
        };
        if !list_cut {
            break;
        }
        truncated = true;
    }
    let mut value = to_value(result)?;
    if truncated {
        if let Value::Object(fields) = &mut value {
            fields.insert("truncated".to_owned(), Value::Bool(true));
        }
    }
    Ok(value)
}
