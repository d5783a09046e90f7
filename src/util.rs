//! Small helpers shared by several modules.

use std::time::{SystemTime, UNIX_EPOCH};

use nostr_sdk::{Event, JsonUtil};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The length of `event`'s JSON when it is over `limit` bytes, else `None`. The event is
/// serialized only when a bound found without doing so is over the limit: every reply and
/// every event the relay takes is checked, and a serialization just to measure was a tenth
/// of the relay's work per event.
pub fn json_size_over(event: &Event, limit: usize) -> Option<usize> {
    if json_len_bound(event) <= limit {
        return None;
    }
    Some(event.as_json().len()).filter(|size| *size > limit)
}

/// At least the length of `event`'s JSON: the fixed fields take under 400 bytes, and a
/// string's byte takes at most 6 escaped (`\u001f`).
fn json_len_bound(event: &Event) -> usize {
    const FIXED: usize = 400;
    let tags: usize = event
        .tags
        .iter()
        .map(|tag| {
            let fields: usize = tag.as_slice().iter().map(|s| 6 * s.len() + 3).sum();
            fields + 3
        })
        .sum();
    FIXED + 6 * event.content.len() + tags
}

/// Returns at Ctrl-C or SIGTERM (how a supervisor stops a daemon), for the binaries'
/// clean shutdowns.
pub async fn wait_for_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}

/// Checks a state machine against its whole table: every allowed move in `allowed`, and
/// every other (state, event) refused. Every domain's state machine (escrow, its
/// sagas, sessions) is checked with it.
#[cfg(test)]
pub(crate) fn assert_whole_table<S, E, Refused>(
    states: &[S],
    events: &[E],
    allowed: &[(S, E, S)],
    transition: impl Fn(S, E) -> Result<S, Refused>,
) where
    S: Copy + PartialEq + std::fmt::Debug,
    E: Copy + PartialEq + std::fmt::Debug,
{
    for &from in states {
        for &event in events {
            let expected = allowed
                .iter()
                .find(|(f, e, _)| *f == from && *e == event)
                .map(|(_, _, to)| *to);
            assert_eq!(
                transition(from, event).ok(),
                expected,
                "{from:?} + {event:?}"
            );
        }
    }
}

/// Locks `mutex`, taking it over from a thread that panicked while holding it: for plain
/// data (counts, lists of keys) that no half-done update can leave inconsistent.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes the files under `dir` take on disk (allocated blocks, not apparent lengths: sled's
/// files are sparse), 0 for what cannot be read.
pub fn size_on_disk(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => size_on_disk(&entry.path()),
            Ok(meta) => meta.blocks().saturating_mul(512),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use nostr_sdk::{EventBuilder, Keys, Kind, Timestamp};

    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn an_event_is_over_a_limit_exactly_when_its_json_is(
            content in "(.|[\\x00-\\x1f\"\\\\]){0,100}",
            tags in proptest::collection::vec(proptest::collection::vec("(.|[\\x00-\\x1f\"]){0,10}", 1..4), 0..5),
            at in proptest::prelude::any::<u64>(),
            kind in proptest::prelude::any::<u16>(),
            limit in 0usize..2_000,
        ) {
            let event = EventBuilder::new(Kind::from(kind), content)
                .tags(tags.into_iter().filter_map(|t| nostr_sdk::Tag::parse(t).ok()))
                .custom_created_at(Timestamp::from(at))
                .sign_with_keys(&Keys::generate())
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let size = event.as_json().len();
            proptest::prop_assert!(json_len_bound(&event) >= size);
            proptest::prop_assert_eq!(json_size_over(&event, limit), (size > limit).then_some(size));
        }
    }
}
