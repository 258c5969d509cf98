//! A small LRU map whose users clear it whenever what it holds may have
//! changed, without a reader putting back what it read before the change.
//! The index keeps dataset rows in one (`Index::get_cached`), the filesystem
//! store open files (`store::fs`): a ranged GET then costs neither a
//! catalog lookup nor a path walk.
//!
//! A reader reads the generation before it looks a value up, and puts the
//! value only if no clear came in between: a value read across a change
//! is never kept.

use std::sync::{Mutex, MutexGuard};

use hashlink::LruCache;

pub struct Cache<V>(Mutex<State<V>>);

struct State<V> {
    generation: u64,
    values: LruCache<String, V>,
}

impl<V: Clone> Cache<V> {
    pub fn new(capacity: usize) -> Self {
        Cache(Mutex::new(State { generation: 0, values: LruCache::new(capacity) }))
    }

    fn state(&self) -> MutexGuard<'_, State<V>> {
        // A panic while holding the lock left at worst a stale map: clear it.
        self.0.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.generation += 1;
            state.values.clear();
            state
        })
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.state().values.get(key).cloned()
    }

    /// Read before looking a value up, for [`Cache::put`].
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Keeps `value`, looked up after `generation` was read, unless the
    /// cache was cleared since (the value may predate the change).
    pub fn put(&self, generation: u64, key: &str, value: V) {
        let mut state = self.state();
        if state.generation == generation {
            state.values.insert(key.to_owned(), value);
        }
    }

    /// Something changed: nothing read before now is kept or put back.
    pub fn clear(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.values.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_looked_up_across_a_clear_is_not_put_back() {
        let cache = Cache::new(4);
        let before = cache.generation();
        cache.put(before, "a", 1);
        assert_eq!(cache.get("a"), Some(1));
        let read_before_the_change = cache.generation();
        cache.clear();
        assert_eq!(cache.get("a"), None);
        cache.put(read_before_the_change, "a", 1);
        assert_eq!(cache.get("a"), None, "put back with the generation before the clear");
        cache.put(cache.generation(), "a", 2);
        assert_eq!(cache.get("a"), Some(2));
    }

    #[test]
    fn keeps_the_most_recently_used() {
        let cache = Cache::new(2);
        let generation = cache.generation();
        cache.put(generation, "a", 1);
        cache.put(generation, "b", 2);
        assert_eq!(cache.get("a"), Some(1));
        cache.put(generation, "c", 3);
        assert_eq!((cache.get("a"), cache.get("b"), cache.get("c")), (Some(1), None, Some(3)));
    }
}
