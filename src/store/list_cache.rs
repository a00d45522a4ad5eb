//! Remembered list positions, so an IdP paging through a large directory pays the same for
//! page 1,000 as for page 1.
//!
//! Offset paging (`startIndex`) would otherwise count every match and skip `offset` index
//! entries on each page: work proportional to the directory, per page. So this process
//! remembers, per directory and filter, the total and where each page it served ended (the
//! last id); the next page then continues with `id > last` on the index. Continuing from a
//! position rather than re-counting an offset is what RFC 7644 §3.4.2.4 allows for a set that
//! changes between pages. Everything remembered is dropped when this process writes to the
//! directory, and expires on its own (other instances sharing PostgreSQL write too).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a total stays trusted when no write of this process invalidates it.
const TOTAL_TTL: Duration = Duration::from_secs(2);
/// How long a page end stays usable to continue from.
const CURSOR_TTL: Duration = Duration::from_secs(300);
/// Beyond this many entries the cache starts over (bounds memory, whatever the traffic).
const MAX_ENTRIES: usize = 20_000;

#[derive(Debug, Default)]
pub struct ListCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generations: HashMap<String, u64>,
    totals: HashMap<(String, String), Remembered<u64>>,
    cursors: HashMap<(String, String, u64), Remembered<String>>,
}

#[derive(Debug)]
struct Remembered<T> {
    value: T,
    generation: u64,
    at: Instant,
}

impl<T: Clone> Remembered<T> {
    fn valid(&self, generation: u64, ttl: Duration) -> Option<T> {
        (self.generation == generation && self.at.elapsed() < ttl).then(|| self.value.clone())
    }
}

impl ListCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned cache only loses remembered positions; carry on with what is there.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The directory's write generation; read it before the query whose results are remembered.
    pub fn generation(&self, directory: &str) -> u64 {
        self.lock().generations.get(directory).copied().unwrap_or(0)
    }

    /// Called after a committed write to the directory: everything remembered about it is stale.
    pub fn changed(&self, directory: &str) {
        *self.lock().generations.entry(directory.to_string()).or_insert(0) += 1;
    }

    pub fn total(&self, directory: &str, query: &str, generation: u64) -> Option<u64> {
        self.lock().totals.get(&(directory.to_string(), query.to_string()))?.valid(generation, TOTAL_TTL)
    }

    pub fn remember_total(&self, directory: &str, query: &str, generation: u64, total: u64) {
        let mut inner = self.lock();
        if inner.totals.len() >= MAX_ENTRIES {
            inner.totals.clear();
        }
        let entry = Remembered { value: total, generation, at: Instant::now() };
        inner.totals.insert((directory.to_string(), query.to_string()), entry);
    }

    /// The last id of a page this process served that ended at `offset`, if still usable.
    pub fn cursor(&self, directory: &str, query: &str, offset: u64, generation: u64) -> Option<String> {
        self.lock()
            .cursors
            .get(&(directory.to_string(), query.to_string(), offset))?
            .valid(generation, CURSOR_TTL)
    }

    pub fn remember_cursor(&self, directory: &str, query: &str, end: u64, generation: u64, last_id: String) {
        let mut inner = self.lock();
        if inner.cursors.len() >= MAX_ENTRIES {
            inner.cursors.clear();
        }
        let entry = Remembered { value: last_id, generation, at: Instant::now() };
        inner.cursors.insert((directory.to_string(), query.to_string(), end), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_to_the_directory_forgets_its_totals_and_positions_only() {
        let cache = ListCache::default();
        let generation = cache.generation("d1");
        cache.remember_total("d1", "all", generation, 7);
        cache.remember_cursor("d1", "all", 100, generation, "u100".into());
        cache.remember_total("d2", "all", cache.generation("d2"), 3);
        assert_eq!(cache.total("d1", "all", cache.generation("d1")), Some(7));
        assert_eq!(cache.cursor("d1", "all", 100, cache.generation("d1")), Some("u100".into()));
        assert_eq!(cache.cursor("d1", "all", 200, cache.generation("d1")), None);
        cache.changed("d1");
        assert_eq!(cache.total("d1", "all", cache.generation("d1")), None);
        assert_eq!(cache.cursor("d1", "all", 100, cache.generation("d1")), None);
        assert_eq!(cache.total("d2", "all", cache.generation("d2")), Some(3));
    }

    #[test]
    fn results_read_before_a_write_are_not_trusted_after_it() {
        let cache = ListCache::default();
        let before = cache.generation("d1");
        cache.changed("d1");
        cache.remember_total("d1", "all", before, 7);
        assert_eq!(cache.total("d1", "all", cache.generation("d1")), None);
    }
}
