//! Small helpers shared by several modules.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
