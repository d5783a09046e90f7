//! Sessions in sled (sealed, swept when expired) and the per-session lock that runs one hop
//! of a session at a time.

use super::*;

impl UssdService {
    pub(super) fn session(&self, key: &[u8], now: u64) -> Result<Option<Session>, UssdError> {
        let Some(stored) = self.inner.sessions.get(key)? else {
            return Ok(None);
        };
        if stored.expires_at <= now {
            self.inner.sessions.remove(key)?;
            return Ok(None);
        }
        let json = self.inner.vault.unseal(&stored.sealed)?;
        Ok(Some(serde_json::from_str(&json)?))
    }

    pub(super) fn save(&self, key: &[u8], session: &Session) -> Result<(), UssdError> {
        let json = serde_json::to_string(session)?;
        let sealed = self.inner.vault.seal(&json)?;
        self.inner.sessions.insert(
            key,
            &StoredSession {
                expires_at: session.expires_at,
                sealed,
            },
        )?;
        Ok(())
    }

    /// Drops expired sessions (on each first hop: sessions are few and short).
    pub(super) fn sweep(&self, now: u64) -> Result<(), UssdError> {
        let expired: Vec<sled::IVec> = self
            .inner
            .sessions
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            self.inner.sessions.remove(&key)?;
        }
        Ok(())
    }

    pub(super) async fn lock(&self, key: &[u8]) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = match self.inner.locks.lock() {
            Ok(mut locks) => locks.entry(key.to_vec()).or_default().clone(),
            // A poisoned map only means another hop panicked: a fresh lock is still safe
            // for this hop, as the stored session decides what it does.
            Err(_) => Arc::default(),
        };
        mutex.lock_owned().await
    }

    pub(super) fn unlock(&self, key: &[u8]) {
        if let Ok(mut locks) = self.inner.locks.lock() {
            if locks.get(key).is_some_and(|m| Arc::strong_count(m) == 1) {
                locks.remove(key);
            }
        }
    }
}
