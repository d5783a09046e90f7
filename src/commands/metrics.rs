//! `metrics` (admin): soko's operations figures, the same the Prometheus endpoint serves.

use super::Context;
use crate::metrics::Snapshot;

/// The figures now.
pub fn run(ctx: &Context) -> Snapshot {
    ctx.metrics.snapshot()
}
