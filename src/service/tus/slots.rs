//! The in-memory side of resumable uploads: per upload being written, a
//! lock (one PATCH at a time, with takeover) and its running blake3.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How long a PATCH waits for an earlier one on the same upload to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// The in-memory side of resumable uploads: one slot per upload being
/// written, holding its lock and its running blake3.
#[derive(Default)]
pub struct Resumable {
    slots: SyncMutex<HashMap<String, Arc<Slot>>>,
}

#[derive(Default)]
pub(super) struct Slot {
    pub(super) state: Mutex<Option<HashState>>,
    /// Cancels the PATCH holding `state`, so a reconnecting client can take over.
    holder: SyncMutex<CancellationToken>,
}

pub(super) struct HashState {
    pub(super) hasher: blake3::Hasher,
    pub(super) offset: u64,
}

impl Resumable {
    /// The upload's slot, made if it has none, held until the returned
    /// reference drops.
    pub(super) fn slot(&self, id: &str) -> SlotRef<'_> {
        let slot = self.slots.lock().expect("slots lock").entry(id.to_owned()).or_default().clone();
        SlotRef { slots: self, id: id.to_owned(), slot }
    }

    pub(super) fn forget(&self, id: &str) {
        self.slots.lock().expect("slots lock").remove(id);
    }

    /// How many uploads have a slot (`spillway_resumable_uploads_in_memory`).
    pub fn in_memory(&self) -> usize {
        self.slots.lock().expect("slots lock").len()
    }
}

/// A request's hold on an upload's slot. A slot is worth keeping only
/// while it holds a running hash to continue; without one it goes with the
/// last request holding it, so no path (an error, a HEAD of a finished
/// upload, a request racing a termination) leaves one behind.
pub(super) struct SlotRef<'r> {
    slots: &'r Resumable,
    id: String,
    slot: Arc<Slot>,
}

impl std::ops::Deref for SlotRef<'_> {
    type Target = Slot;

    fn deref(&self) -> &Slot {
        &self.slot
    }
}

impl Drop for SlotRef<'_> {
    fn drop(&mut self) {
        let mut slots = self.slots.slots.lock().expect("slots lock");
        // Slots are cloned only under this lock: two owners (the map and
        // this reference) means no other request holds it.
        let unused = Arc::strong_count(&self.slot) == 2 && self.slot.state.try_lock().is_ok_and(|s| s.is_none());
        if unused && slots.get(&self.id).is_some_and(|s| Arc::ptr_eq(s, &self.slot)) {
            slots.remove(&self.id);
        }
    }
}

/// Takes an upload's slot: at once if free, else by cancelling the PATCH
/// that holds it (its client is most likely gone) and waiting briefly.
pub(super) async fn take(slot: &Slot) -> Result<(tokio::sync::MutexGuard<'_, Option<HashState>>, CancellationToken)> {
    let guard = match slot.state.try_lock() {
        Ok(guard) => guard,
        Err(_) => {
            slot.holder.lock().expect("holder lock").cancel();
            tokio::time::timeout(TAKEOVER_WAIT, slot.state.lock()).await.map_err(|_| Error::Locked)?
        }
    };
    let token = CancellationToken::new();
    *slot.holder.lock().expect("holder lock") = token.clone();
    Ok((guard, token))
}
