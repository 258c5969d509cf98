//! Who may change what at once. A commit or delete of a key holds its key
//! exclusively and every ancestor of the key (and the root) shared: commits
//! on different keys run side by side, while `a` and `a/b` (which cannot
//! both be datasets) or two writes of one key take turns. Bytes shared by
//! deduplication have a lock of their own, held from the moment a commit
//! decides to reuse a blob until its row refers to it, and by whoever frees
//! a blob while it checks that no row refers to it. Work on the whole
//! catalog (start-up recovery) holds the root exclusively.
//!
//! Each lock is taken twice, in the same order: here, among this node's
//! requests (waiting costs no thread), then in the index, among nodes
//! sharing it ([`Index::lock`]; nothing with SQLite, which one node owns).
//! The order is always the root, the ancestors by depth, the key, then a
//! blob, so two holders never wait on each other in a circle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::index::{Blob, Index, LockMode, LockSet};
use crate::key::Key;

/// One lockable thing, by name: `""` is the root, `k/PATH` a key or a
/// folder above one, `b/BLAKE3.SIZE` the bytes of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    fn key(path: &str) -> Name {
        Name(format!("k/{path}"))
    }

    pub fn blob(blob: &Blob) -> Name {
        Name::of_bytes(&blob.blake3, blob.size)
    }

    pub fn of_bytes(blake3: &str, size: u64) -> Name {
        Name(format!("b/{blake3}.{size}"))
    }

    /// The id of this name among advisory locks: the first 8 bytes of its
    /// blake3. Two names sharing one id only wait for each other.
    fn id(&self) -> i64 {
        let hash = blake3::hash(self.0.as_bytes());
        i64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

/// What one operation holds, in the order it must be taken.
#[derive(Debug, Clone, Default)]
pub struct Claim(Vec<(Name, LockMode)>);

impl Claim {
    /// Changing `key`: the root and its ancestors shared, the key exclusive.
    pub fn key(key: &Key) -> Claim {
        let mut claim = Claim(vec![(Name(String::new()), LockMode::Shared)]);
        claim.0.extend(key.ancestors().map(|a| (Name::key(a), LockMode::Shared)));
        claim.0.push((Name::key(key.as_str()), LockMode::Exclusive));
        claim
    }

    /// The bytes `name` alone (freeing them).
    pub fn bytes(name: Name) -> Claim {
        Claim(vec![(Name(String::new()), LockMode::Shared), (name, LockMode::Exclusive)])
    }

    /// Everything: no commit anywhere runs meanwhile.
    pub fn all() -> Claim {
        Claim(vec![(Name(String::new()), LockMode::Exclusive)])
    }

    /// Also the bytes `name` (after everything else).
    pub fn and(mut self, name: Name) -> Claim {
        self.0.push((name, LockMode::Exclusive));
        self
    }

    fn set(&self) -> LockSet {
        self.0.iter().map(|(name, mode)| (name.id(), *mode)).collect()
    }
}

enum Guard {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// One name's lock. An exclusive claim is only ever tried, then retried
/// when a holder lets go (`released`): a claim waiting in a queue would
/// make every later shared claim queue behind it, so one commit of a
/// folder waiting for a slow install of a key below it would hold up the
/// commits of all that key's siblings too.
#[derive(Default)]
struct Slot {
    lock: Arc<RwLock<()>>,
    released: Notify,
}

type Table = Arc<Mutex<HashMap<Name, Arc<Slot>>>>;

/// This node's side of the locks: a slot per name in use, dropped from the
/// table when its last holder or waiter lets go.
#[derive(Default, Clone)]
pub struct Locks {
    table: Table,
}

/// Locks held; released (here and in the index) when dropped.
pub struct Held {
    _cluster: Option<crate::index::CommitLock>,
    guards: Vec<Guard>,
    slots: Vec<(Name, Arc<Slot>)>,
    table: Table,
}

impl Held {
    /// Notes `slot` as taken or waited for (its entry goes with `self`).
    fn enter(&mut self, slot: Arc<Slot>, name: &Name) -> Arc<Slot> {
        self.slots.push((name.clone(), slot.clone()));
        slot
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(cluster) = self._cluster.take() {
            // Letting go in the index is a round trip, which an async task
            // may not block on: a blocking thread does it. A request that
            // gets the local lock meanwhile waits in the index a moment.
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(move || drop(cluster))),
                Err(_) => drop(cluster),
            }
        }
        self.guards.clear();
        let mut table = self.table.lock().expect("the lock table");
        for (name, slot) in self.slots.drain(..) {
            slot.released.notify_waiters();
            drop(slot);
            // Only the table holds it: no holder, and no waiter (a waiter
            // clones the entry under the table's mutex, held here).
            if table.get(&name).is_some_and(|slot| Arc::strong_count(slot) == 1) {
                table.remove(&name);
            }
        }
    }
}

impl Locks {
    /// Takes `claim` on this node, then in the index (on a blocking thread:
    /// with PostgreSQL the locks are held by a session of their own).
    pub async fn take(&self, claim: &Claim, index: &Index) -> crate::error::Result<Held> {
        let mut held = self.take_here(claim).await;
        if index.is_shared() {
            let (index, set) = (index.clone(), claim.set());
            held._cluster = Some(crate::blocking::blocking(move || index.lock(&set)).await?);
        }
        Ok(held)
    }

    fn slot(&self, name: &Name) -> Arc<Slot> {
        let mut table = self.table.lock().expect("the lock table");
        table.entry(name.clone()).or_default().clone()
    }

    fn held(&self) -> Held {
        Held { _cluster: None, guards: Vec::new(), slots: Vec::new(), table: self.table.clone() }
    }

    /// Takes `claim` on this node only.
    pub async fn take_here(&self, claim: &Claim) -> Held {
        let mut held = self.held();
        for (name, mode) in &claim.0 {
            let slot = held.enter(self.slot(name), name);
            held.guards.push(match mode {
                LockMode::Shared => Guard::Shared(slot.lock.clone().read_owned().await),
                LockMode::Exclusive => Guard::Exclusive(exclusive(&slot).await),
            });
        }
        held
    }

    /// Takes `claim` on this node if nothing holds any of it now.
    pub fn try_take_here(&self, claim: &Claim) -> Option<Held> {
        let mut held = self.held();
        for (name, mode) in &claim.0 {
            let slot = held.enter(self.slot(name), name);
            held.guards.push(match mode {
                LockMode::Shared => Guard::Shared(slot.lock.clone().try_read_owned().ok()?),
                LockMode::Exclusive => Guard::Exclusive(slot.lock.clone().try_write_owned().ok()?),
            });
        }
        Some(held)
    }

    /// Takes `claim` here and in the index if nothing holds any of it now
    /// (on a blocking thread).
    pub fn try_take(&self, claim: &Claim, index: &Index) -> crate::error::Result<Option<Held>> {
        let Some(mut held) = self.try_take_here(claim) else { return Ok(None) };
        if index.is_shared() {
            match index.try_lock(&claim.set())? {
                Some(cluster) => held._cluster = Some(cluster),
                None => return Ok(None),
            }
        }
        Ok(Some(held))
    }

    /// Names with an entry in the table (held or waited for).
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.table.lock().expect("the lock table").len()
    }
}

/// The slot's lock, exclusively, without queueing (see [`Slot`]).
async fn exclusive(slot: &Slot) -> OwnedRwLockWriteGuard<()> {
    loop {
        let released = slot.released.notified();
        tokio::pin!(released);
        // Listening before the try: a release between the two wakes us.
        released.as_mut().enable();
        if let Ok(guard) = slot.lock.clone().try_write_owned() {
            return guard;
        }
        released.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_but_a_folder_and_its_key_do() {
        let locks = Locks::default();
        let a_b = locks.take_here(&Claim::key(&key("a/b"))).await;
        assert!(locks.try_take_here(&Claim::key(&key("a/c"))).is_some(), "a sibling");
        assert!(locks.try_take_here(&Claim::key(&key("x"))).is_some(), "another tree");
        assert!(locks.try_take_here(&Claim::key(&key("a"))).is_none(), "its folder");
        assert!(locks.try_take_here(&Claim::key(&key("a/b"))).is_none(), "the same key");
        assert!(locks.try_take_here(&Claim::key(&key("a/b/c"))).is_none(), "below it");
        assert!(locks.try_take_here(&Claim::all()).is_none(), "the whole catalog");
        drop(a_b);
        assert_eq!(locks.in_use(), 0, "entries go with their last holder");
        assert!(locks.try_take_here(&Claim::key(&key("a"))).is_some());
    }

    #[tokio::test]
    async fn the_same_bytes_take_turns() {
        let locks = Locks::default();
        let one = locks.take_here(&Claim::key(&key("k1")).and(Name::of_bytes("ab", 3))).await;
        assert!(locks.try_take_here(&Claim::key(&key("k2")).and(Name::of_bytes("ab", 3))).is_none());
        assert!(locks.try_take_here(&Claim::key(&key("k2")).and(Name::of_bytes("ab", 4))).is_some());
        drop(one);
    }
}
