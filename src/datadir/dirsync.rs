//! Directory fsyncs shared by the commits that need them. After a rename
//! into a folder, an fsync of the folder makes the new entry durable; an
//! fsync started after the rename covers every rename done before it
//! started. So commits renaming into one folder at once need one fsync
//! between them, not one each (each would also queue on the folder's
//! inode lock): the first runs it, those that renamed meanwhile wait for
//! the next one, which covers them all.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{fstat, fsync};

#[derive(Default)]
struct State {
    /// Renames announced so far (each caller's ticket).
    announced: u64,
    /// Every ticket up to this one is covered by a finished fsync.
    synced: u64,
    running: bool,
}

#[derive(Default)]
struct Folder {
    state: Mutex<State>,
    done: Condvar,
}

/// Folders by (device, inode), while someone syncs them.
#[derive(Default)]
pub struct DirSyncs {
    folders: Mutex<HashMap<(u64, u64), Arc<Folder>>>,
}

impl std::fmt::Debug for DirSyncs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirSyncs")
    }
}

impl DirSyncs {
    /// Makes durable the entries renamed into `dir` before this call.
    /// Blocks (runs on a blocking thread).
    pub fn sync(&self, dir: impl AsFd) -> io::Result<()> {
        let stat = fstat(&dir)?;
        let id = (stat.st_dev, stat.st_ino);
        let folder = self.folders.lock().expect("folders").entry(id).or_default().clone();
        let result = Self::sync_in(&folder, &dir);
        drop(folder);
        let mut folders = self.folders.lock().expect("folders");
        if folders.get(&id).is_some_and(|f| Arc::strong_count(f) == 1) {
            folders.remove(&id);
        }
        result
    }

    fn sync_in(folder: &Folder, dir: &impl AsFd) -> io::Result<()> {
        let mut state = folder.state.lock().expect("folder state");
        state.announced += 1;
        let ticket = state.announced;
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.running {
                state = folder.done.wait(state).expect("folder state");
                continue;
            }
            // Covers every ticket announced so far (their renames came first).
            let covers = state.announced;
            state.running = true;
            drop(state);
            let result = fsync(dir);
            state = folder.state.lock().expect("folder state");
            state.running = false;
            if result.is_ok() {
                state.synced = state.synced.max(covers);
            }
            folder.done.notify_all();
            // On failure, the others still waiting try again themselves.
            result?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_syncs_of_one_folder_all_return_and_the_table_empties() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = Arc::new(DirSyncs::default());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (syncs, path) = (syncs.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || {
                    std::fs::write(path.join(format!("f{i}")), b"x").unwrap();
                    syncs.sync(std::fs::File::open(&path).unwrap()).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(syncs.folders.lock().unwrap().is_empty());
    }
}
