//! Idempotency receipts of ephemeral channels, kept in memory.
//!
//! Durable channels keep receipts in the store (see `durable.rs`); an
//! ephemeral channel keeps them here, inside [`super::channel::ChannelShared`]
//! so that they survive a restart of the channel actor but not of the server.
//! Only the channel actor touches them, so the lock is never contended.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most expired receipts removed per purge call, so a purge never stalls a publish.
const PURGE_BATCH: usize = 4_096;

/// Receipts by idempotency key, with their expiry order.
#[derive(Debug, Default)]
pub struct EphemeralReceipts {
    by_key: HashMap<String, (u64, Instant)>,
    /// Keys in insertion order; since the window is fixed per channel this
    /// is also expiry order.
    order: VecDeque<(Instant, String)>,
}

impl EphemeralReceipts {
    /// Returns the message id stored for `key` if it was used within `window`.
    pub fn lookup(&self, key: &str, window: Duration, now: Instant) -> Option<u64> {
        let (message_id, at) = self.by_key.get(key)?;
        (now.duration_since(*at) <= window).then_some(*message_id)
    }

    /// Records that `key` was first used by `message_id` at `now`.
    pub fn insert(&mut self, key: String, message_id: u64, now: Instant) {
        self.order.push_back((now, key.clone()));
        self.by_key.insert(key, (message_id, now));
    }

    /// Removes up to a bounded number of receipts older than `window`.
    pub fn purge(&mut self, window: Duration, now: Instant) -> usize {
        let mut removed = 0;
        while removed < PURGE_BATCH {
            let Some((at, _)) = self.order.front() else {
                break;
            };
            if now.duration_since(*at) <= window {
                break;
            }
            let (at, key) = self.order.pop_front().expect("front exists");
            // A key re-used after expiry has a newer entry; keep that one.
            if self.by_key.get(&key).is_some_and(|(_, stored_at)| *stored_at == at) {
                self.by_key.remove(&key);
            }
            removed += 1;
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_expires_after_window() {
        let mut receipts = EphemeralReceipts::default();
        let start = Instant::now();
        let window = Duration::from_secs(10);
        receipts.insert("k".into(), 7, start);
        assert_eq!(receipts.lookup("k", window, start + Duration::from_secs(5)), Some(7));
        assert_eq!(receipts.lookup("k", window, start + Duration::from_secs(11)), None);
        assert_eq!(receipts.purge(window, start + Duration::from_secs(11)), 1);
        assert!(receipts.is_empty());
    }

    #[test]
    fn reused_key_survives_purge_of_old_entry() {
        let mut receipts = EphemeralReceipts::default();
        let start = Instant::now();
        let window = Duration::from_secs(10);
        receipts.insert("k".into(), 1, start);
        receipts.insert("k".into(), 2, start + Duration::from_secs(12));
        receipts.purge(window, start + Duration::from_secs(13));
        assert_eq!(receipts.lookup("k", window, start + Duration::from_secs(13)), Some(2));
    }
}
