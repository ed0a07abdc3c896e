//! The state saver: `cluster.json` written (and fsynced) on a thread of its
//! own, so that the runtime forwarding the cluster's frames never waits for
//! the disk.

use crate::cluster::state::ClusterState;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::watch;

/// Writes `cluster.json` on a thread of its own, newest state first: a
/// state submitted while an older one is being written replaces any other
/// waiting one. [`Saver::flush`] waits until a generation is on disk.
pub(super) struct Saver {
    queue: Arc<(Mutex<SaveQueue>, Condvar)>,
    saved: watch::Receiver<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct SaveQueue {
    next: Option<(u64, ClusterState)>,
    closed: bool,
}

impl Saver {
    pub(super) fn start(path: std::path::PathBuf) -> std::io::Result<Saver> {
        let queue = Arc::new((Mutex::new(SaveQueue::default()), Condvar::new()));
        let (saved_tx, saved) = watch::channel(0u64);
        let q = queue.clone();
        let thread = std::thread::Builder::new()
            .name("state-saver".into())
            .spawn(move || {
                while let Some((generation, state)) = Saver::take(&q) {
                    if let Err(e) = state.save(&path) {
                        log!("warning: {e}");
                    }
                    saved_tx.send_replace(generation);
                }
            })?;
        Ok(Saver {
            queue,
            saved,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The next state to write; `None` once closed and drained.
    fn take(queue: &(Mutex<SaveQueue>, Condvar)) -> Option<(u64, ClusterState)> {
        let (lock, ready) = queue;
        let mut q = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(next) = q.next.take() {
                return Some(next);
            }
            if q.closed {
                return None;
            }
            q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(super) fn submit(&self, generation: u64, state: ClusterState) {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).next = Some((generation, state));
        ready.notify_one();
    }

    /// Waits until `generation` (or a newer one) is on disk.
    pub(super) async fn flush(&self, generation: u64) {
        let mut saved = self.saved.clone();
        let _ = saved.wait_for(|g| *g >= generation).await;
    }

    /// Writes what is waiting and ends the thread.
    pub(super) fn close(&self) {
        let (lock, ready) = &*self.queue;
        lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        ready.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_saver_writes_the_newest_state_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.json");
        let saver = Saver::start(path.clone()).unwrap();
        let mut state = crate::cluster::state::tests::sample();
        for g in 1..=50u64 {
            state.nodes[0].pid = Some(g as u32);
            saver.submit(g, state.clone());
        }
        saver.flush(50).await;
        let on_disk = ClusterState::load(&path).unwrap();
        assert_eq!(on_disk.nodes[0].pid, Some(50));
        // What is waiting at close is written before the thread ends.
        state.nodes[0].pid = Some(51);
        saver.submit(51, state);
        saver.close();
        assert_eq!(ClusterState::load(&path).unwrap().nodes[0].pid, Some(51));
        assert!(saver.thread.lock().unwrap().is_none());
    }
}
