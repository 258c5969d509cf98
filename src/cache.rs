//! A small LRU map whose users clear it whenever what it holds may have
//! changed, without a reader putting back what it read before the change.
//! The index keeps dataset rows in one (`Index::get_cached`), the filesystem
//! store open files (`store::fs`): a ranged GET then costs neither a
//! catalog lookup nor a path walk.
//!
//! [`Cache::load`] reads the generation before it looks a value up, and
//! keeps the value only if no clear came in between: a value read across a
//! change is never kept.

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

    /// Looks a value up with `load` and keeps it, unless the cache was
    /// cleared while `load` ran (the value may predate the change).
    pub fn load<E>(&self, key: &str, load: impl FnOnce() -> Result<Option<V>, E>) -> Result<Option<V>, E> {
        let generation = self.generation();
        let value = load()?;
        if let Some(value) = &value {
            self.put(generation, key, value.clone());
        }
        Ok(value)
    }

    fn generation(&self) -> u64 {
        self.state().generation
    }

    fn put(&self, generation: u64, key: &str, value: V) {
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

    type Loaded = Result<Option<i32>, ()>;

    #[test]
    fn a_value_looked_up_across_a_clear_is_not_put_back() {
        let cache = Cache::new(4);
        assert_eq!(cache.load("a", || Loaded::Ok(Some(1))), Ok(Some(1)));
        assert_eq!(cache.get("a"), Some(1));
        // A write changes `a` and clears while a reader still holds the old value.
        let loaded = cache.load("a", || {
            cache.clear();
            Loaded::Ok(Some(1))
        });
        assert_eq!(loaded, Ok(Some(1)), "the reader gets what it read");
        assert_eq!(cache.get("a"), None, "put back with the generation before the clear");
        assert_eq!(cache.load("a", || Loaded::Ok(Some(2))), Ok(Some(2)));
        assert_eq!(cache.get("a"), Some(2));
    }

    #[test]
    fn keeps_the_most_recently_used() {
        let cache = Cache::new(2);
        for (key, value) in [("a", 1), ("b", 2)] {
            cache.load(key, || Loaded::Ok(Some(value))).unwrap();
        }
        assert_eq!(cache.get("a"), Some(1));
        cache.load("c", || Loaded::Ok(Some(3))).unwrap();
        assert_eq!((cache.get("a"), cache.get("b"), cache.get("c")), (Some(1), None, Some(3)));
    }
}
