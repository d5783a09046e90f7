//! Hops waiting for soko's reply, by request id.
//!
//! A waiter removes itself when dropped — answered, timed out, or abandoned because the
//! gateway hung up — so a reply that comes late finds nobody and nothing piles up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::proto::ussd::UssdScreen;

/// What soko answered to a hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The next screen.
    Screen(UssdScreen),
    /// An error reply (`ok:false`) with its code.
    Refused(String),
    /// `ok:true`, but the result is not a screen.
    Unreadable,
}

#[derive(Debug, Default)]
struct Inner {
    next_token: u64,
    /// A gateway retry can wait on the same id as the first try, hence several waiters.
    waiting: HashMap<String, Vec<(u64, oneshot::Sender<Reply>)>>,
}

/// The table of waiting hops; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    inner: Arc<Mutex<Inner>>,
}

/// One hop waiting for its reply.
#[derive(Debug)]
pub struct Waiter {
    pending: Pending,
    id: String,
    token: u64,
    reply: oneshot::Receiver<Reply>,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something did, the map is still sound.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a wait for the reply to `id`. Register before sending, so a fast reply
    /// cannot arrive before anyone waits for it.
    pub fn wait_for(&self, id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.next_token += 1;
        let token = inner.next_token;
        inner
            .waiting
            .entry(id.to_owned())
            .or_default()
            .push((token, tx));
        Waiter {
            pending: self.clone(),
            id: id.to_owned(),
            token,
            reply: rx,
        }
    }

    /// Hands `reply` to every hop waiting for `id`; returns how many there were.
    pub fn deliver(&self, id: &str, reply: &Reply) -> usize {
        let waiters = self.lock().waiting.remove(id).unwrap_or_default();
        waiters
            .into_iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(_, tx)| tx.send(reply.clone()).is_ok())
            .filter(|sent| *sent)
            .count()
    }

    /// How many hops are waiting.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.values().map(Vec::len).sum()
    }
}

impl Waiter {
    /// The reply, once it comes (`None` if the table went away).
    pub async fn reply(&mut self) -> Option<Reply> {
        (&mut self.reply).await.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut inner = self.pending.lock();
        if let Some(list) = inner.waiting.get_mut(&self.id) {
            list.retain(|(token, _)| *token != self.token);
            if list.is_empty() {
                inner.waiting.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(text: &str) -> Reply {
        Reply::Screen(UssdScreen {
            screen: text.into(),
            end: false,
        })
    }

    #[tokio::test]
    async fn a_reply_reaches_every_waiter_of_its_id() {
        let pending = Pending::default();
        let mut first = pending.wait_for("a");
        let mut retry = pending.wait_for("a");
        let _other = pending.wait_for("b");
        assert_eq!(pending.waiting(), 3);
        assert_eq!(pending.deliver("a", &screen("hi")), 2);
        assert_eq!(first.reply().await, Some(screen("hi")));
        assert_eq!(retry.reply().await, Some(screen("hi")));
        drop((first, retry));
        assert_eq!(pending.waiting(), 1);
    }

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let pending = Pending::default();
        let first = pending.wait_for("a");
        let second = pending.wait_for("a");
        drop(first);
        assert_eq!(pending.waiting(), 1);
        drop(second);
        assert_eq!(pending.waiting(), 0);
        // A late reply finds nobody.
        assert_eq!(pending.deliver("a", &screen("late")), 0);
        assert_eq!(pending.waiting(), 0);
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let pending = Pending::default();
        let _waiter = pending.wait_for("a");
        assert_eq!(pending.deliver("zzz", &Reply::Unreadable), 0);
        assert_eq!(pending.waiting(), 1);
    }
}
