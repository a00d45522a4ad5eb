//! `last_used_at` of keys and admin tokens, written at most once per interval per token
//! instead of on every request: a busy key would otherwise turn every read into a write.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{admin_tokens, keys, now_millis, Store};
use crate::error::Result;

/// Which table a token lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenTable {
    DirectoryKeys,
    AdminTokens,
}

/// When this process last wrote each token's `last_used_at`.
#[derive(Debug)]
pub struct LastUsed {
    interval_ms: i64,
    written: Mutex<HashMap<(TokenTable, String), i64>>,
}

/// Bounds the map; past it, entries older than an interval are dropped.
const TRACKED_LIMIT: usize = 10_000;

impl LastUsed {
    pub fn new(interval_ms: i64) -> LastUsed {
        LastUsed { interval_ms, written: Mutex::default() }
    }

    /// Whether a use at `now` should be written: the first use this process sees, or one an
    /// interval after the last write. Claims the write, so concurrent requests write once.
    pub fn claim(&self, table: TokenTable, id: &str, now: i64) -> bool {
        let Ok(mut written) = self.written.lock() else { return false };
        let due = written.get(&(table, id.to_string())).is_none_or(|&last| now - last >= self.interval_ms);
        if due {
            if written.len() >= TRACKED_LIMIT {
                let horizon = now - self.interval_ms;
                written.retain(|_, last| *last > horizon);
            }
            written.insert((table, id.to_string()), now);
        }
        due
    }
}

impl Store {
    /// Notes that a token was used; writes `last_used_at` in the background when it is due.
    /// A failed write is logged and changes nothing for the request.
    pub fn note_use(&self, table: TokenTable, id: &str) {
        let now = now_millis();
        if !self.last_used.claim(table, id, now) {
            return;
        }
        let (store, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            let written: Result<()> = store
                .write(move |conn, _| match table {
                    TokenTable::DirectoryKeys => keys::touch(conn, &id, now),
                    TokenTable::AdminTokens => admin_tokens::touch(conn, &id, now),
                })
                .await;
            if let Err(error) = written {
                tracing::warn!(%error, "could not record when a key was last used");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_written_once_per_interval() {
        let last_used = LastUsed::new(60_000);
        assert!(last_used.claim(TokenTable::DirectoryKeys, "k1", 1_000));
        assert!(!last_used.claim(TokenTable::DirectoryKeys, "k1", 30_000));
        assert!(!last_used.claim(TokenTable::DirectoryKeys, "k1", 60_999));
        assert!(last_used.claim(TokenTable::DirectoryKeys, "k1", 61_000));
        assert!(last_used.claim(TokenTable::DirectoryKeys, "k2", 61_000), "per key");
        assert!(last_used.claim(TokenTable::AdminTokens, "k1", 61_000), "per table");
    }
}
