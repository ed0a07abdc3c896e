//! [`InFlight`]: what a run is waiting on right now. Every CRI call a
//! [`super::Cri`] makes is in it while it runs, and a caller adds its own
//! waits ([`InFlight::track`]). A matrix run that passes its budget answers
//! with this list, so a stuck step is named in the report instead of the host
//! timing out with nothing to show.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The steps in flight, shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Mutex<Steps>>);

#[derive(Debug, Default)]
struct Steps {
    next: u64,
    items: BTreeMap<u64, (String, Instant)>,
}

/// A step in flight; dropping it ends the step.
#[derive(Debug)]
#[must_use = "the step ends when this is dropped"]
pub struct Tracked {
    set: InFlight,
    id: u64,
}

impl InFlight {
    /// Adds `what` until the returned guard is dropped.
    pub fn track(&self, what: impl Into<String>) -> Tracked {
        let mut s = self.lock();
        let id = s.next;
        s.next += 1;
        s.items.insert(id, (what.into(), Instant::now()));
        Tracked {
            set: self.clone(),
            id,
        }
    }

    /// The steps in flight, oldest first, each with how long it has run:
    /// `RunPodSandbox matrix-gvisor-… (412 s)`.
    pub fn describe(&self) -> Vec<String> {
        let s = self.lock();
        s.items
            .values()
            .map(|(what, since)| format!("{what} ({} s)", since.elapsed().as_secs()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Steps> {
        // A panic while holding this lock leaves plain data behind: go on.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.set.lock().items.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_listed_oldest_first_until_dropped() {
        let f = InFlight::default();
        let a = f.track("RunPodSandbox matrix-gvisor-1");
        let b = f.clone().track("ExecSync 0123456789ab");
        assert_eq!(
            f.describe(),
            [
                "RunPodSandbox matrix-gvisor-1 (0 s)",
                "ExecSync 0123456789ab (0 s)"
            ]
        );
        drop(a);
        assert_eq!(f.describe(), ["ExecSync 0123456789ab (0 s)"]);
        drop(b);
        assert!(f.describe().is_empty());
    }
}
