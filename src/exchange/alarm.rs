//! The dispute-rate alarm: decides when admins get a DM that too many trades end in a
//! dispute. Pure state, no I/O: the caller reads the rate from the metrics
//! (`Metrics::dispute_rate_bp`), asks [`DisputeAlarm::check`], and sends what it returns.
//!
//! It fires when the rate crosses above the threshold, then stays quiet until the rate has
//! been seen back below it: a rate that stays high for a day is one DM, not one per check.
//! On top of that, two alerts are at least [`MIN_GAP_SECS`] apart, so a rate hovering at
//! the threshold cannot page admins every few minutes either. The state is in memory: a
//! restart re-arms it, which costs at most one repeated alert.

/// The default threshold: 10 % of the offers that reached a taker.
pub const DEFAULT_THRESHOLD_BP: u32 = 1_000;

/// The least time between two alerts, in seconds.
pub const MIN_GAP_SECS: u64 = 3_600;

/// Whether the last alert still stands, and when it was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisputeAlarm {
    /// True once an alert was sent and the rate has not been seen below the threshold since.
    raised: bool,
    /// Unix seconds of the last alert.
    last_alert: Option<u64>,
}

impl DisputeAlarm {
    /// A quiet alarm.
    pub fn new() -> Self {
        Self::default()
    }

    /// The alert text when `rate_bp` (basis points; `None` when there were too few offers to
    /// tell) is above `threshold_bp` and the alarm is not raised already; `None` otherwise.
    /// A missing rate changes nothing: too few trades neither raise nor clear the alarm.
    pub fn check(&mut self, rate_bp: Option<u32>, threshold_bp: u32, now: u64) -> Option<String> {
        let rate = rate_bp?;
        if rate < threshold_bp {
            self.raised = false;
            return None;
        }
        if rate == threshold_bp || self.raised {
            return None;
        }
        if self
            .last_alert
            .is_some_and(|last| now < last.saturating_add(MIN_GAP_SECS))
        {
            // Still above when the gap has passed: the next check sends it.
            return None;
        }
        self.raised = true;
        self.last_alert = Some(now);
        Some(format!(
            "exchange: the dispute rate is {} of the offers that reached a taker, above the \
             alert threshold of {} (the `metrics` command has the figures).",
            percent(rate),
            percent(threshold_bp)
        ))
    }

    /// True while an alert stands (sent, and the rate not seen below the threshold since).
    pub fn raised(&self) -> bool {
        self.raised
    }
}

/// Basis points as a percentage with two decimals: 1250 → "12.50 %".
fn percent(bp: u32) -> String {
    format!("{}.{:02} %", bp / 100, bp % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u32 = DEFAULT_THRESHOLD_BP;

    #[test]
    fn it_fires_once_on_crossing_and_again_only_after_going_below() {
        let mut alarm = DisputeAlarm::new();
        assert_eq!(alarm.check(Some(500), T, 0), None);
        assert_eq!(
            alarm.check(Some(T), T, 60),
            None,
            "at the threshold is not above"
        );
        let text = alarm.check(Some(1_250), T, 120);
        assert_eq!(
            text.as_deref(),
            Some(
                "exchange: the dispute rate is 12.50 % of the offers that reached a taker, \
                 above the alert threshold of 10.00 % (the `metrics` command has the figures)."
            )
        );
        assert!(alarm.raised());
        // Still high, for days: no storm.
        for minute in 3..3_000 {
            assert_eq!(alarm.check(Some(2_000), T, minute * 60), None);
        }
        // At the threshold is not below: still raised.
        assert_eq!(alarm.check(Some(T), T, 200_000), None);
        assert!(alarm.raised());
        assert_eq!(alarm.check(Some(999), T, 200_060), None);
        assert!(!alarm.raised());
        assert!(alarm.check(Some(1_001), T, 200_120).is_some());
    }

    #[test]
    fn too_few_offers_neither_raise_nor_clear_it() {
        let mut alarm = DisputeAlarm::new();
        assert_eq!(alarm.check(None, T, 0), None);
        assert!(alarm.check(Some(5_000), T, 10).is_some());
        assert_eq!(alarm.check(None, T, 20_000), None);
        assert!(alarm.raised(), "a quiet night does not re-arm it");
        assert_eq!(alarm.check(Some(5_000), T, 40_000), None);
    }

    #[test]
    fn a_rate_hovering_at_the_threshold_alerts_at_most_once_an_hour() {
        let mut alarm = DisputeAlarm::new();
        assert!(alarm.check(Some(1_100), T, 1_000).is_some());
        assert_eq!(alarm.check(Some(900), T, 1_060), None);
        // Back above within the hour: held back, not lost.
        assert_eq!(alarm.check(Some(1_100), T, 1_120), None);
        assert_eq!(alarm.check(Some(1_100), T, 1_000 + MIN_GAP_SECS - 1), None);
        assert!(alarm.check(Some(1_100), T, 1_000 + MIN_GAP_SECS).is_some());
    }

    #[test]
    fn the_threshold_is_the_callers() {
        let mut alarm = DisputeAlarm::new();
        assert_eq!(alarm.check(Some(2_000), 2_500, 0), None);
        let text = alarm.check(Some(10_000), 2_500, 60).unwrap_or_default();
        assert!(
            text.contains("100.00 %") && text.contains("25.00 %"),
            "{text}"
        );
        assert_eq!(percent(5), "0.05 %");
    }
}
