//! [`InFlight`]: what a run is waiting on right now, and what it waited on.
//! Every CRI call a [`super::Cri`] makes is in it while it runs, and a
//! caller adds its own waits ([`InFlight::track`]). A matrix run that passes
//! its budget answers with this list, so a stuck step is named in the report
//! instead of the host timing out with nothing to show; a run that ends
//! answers with the steps that took [`STEP_MIN`] or more
//! ([`InFlight::finished`]), so the report shows where its time went.

use ironclad_contract::matrix::Step;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shortest step [`InFlight::finished`] keeps: the polls of a run
/// (`ContainerStatus`, `ImageStatus`) take a few milliseconds each and
/// would bury the steps that matter.
pub const STEP_MIN: Duration = Duration::from_millis(100);

/// The steps in flight, shared by every clone.
#[derive(Debug, Clone)]
pub struct InFlight(Arc<Mutex<Steps>>);

#[derive(Debug)]
struct Steps {
    /// When the set was made: steps start and end relative to it.
    epoch: Instant,
    next: u64,
    items: BTreeMap<u64, (String, Instant)>,
    /// The ended steps of at least [`STEP_MIN`].
    done: Vec<Step>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight(Arc::new(Mutex::new(Steps {
            epoch: Instant::now(),
            next: 0,
            items: BTreeMap::new(),
            done: Vec::new(),
        })))
    }
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

    /// The ended steps that took at least [`STEP_MIN`], in the order they
    /// started; times in milliseconds since this set was made.
    pub fn finished(&self) -> Vec<Step> {
        let mut done = self.lock().done.clone();
        done.sort_by_key(|s| s.start_ms);
        done
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Steps> {
        // A panic while holding this lock leaves plain data behind: go on.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut s = self.set.lock();
        if let Some((what, since)) = s.items.remove(&self.id) {
            let took = since.elapsed();
            if took >= STEP_MIN {
                let start_ms = since.saturating_duration_since(s.epoch).as_millis() as u64;
                s.done.push(Step {
                    what,
                    start_ms,
                    ms: took.as_millis() as u64,
                });
            }
        }
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
        // Both were quicker than STEP_MIN: not kept.
        assert!(f.finished().is_empty());
    }

    #[test]
    fn steps_of_at_least_step_min_are_kept_in_start_order() {
        let f = InFlight::default();
        let slow = f.track("CRI RunPodSandbox matrix-gvisor-1");
        std::thread::sleep(Duration::from_millis(20));
        let slower = f.track("CRI ExecSync unpriv batch");
        std::thread::sleep(STEP_MIN);
        drop(slower);
        std::thread::sleep(Duration::from_millis(20));
        drop(slow);
        drop(f.track("CRI ContainerStatus 0123456789ab"));
        let done = f.finished();
        let what: Vec<&str> = done.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "CRI RunPodSandbox matrix-gvisor-1",
                "CRI ExecSync unpriv batch"
            ]
        );
        assert!(done[0].start_ms < done[1].start_ms, "{done:?}");
        assert!(done[0].ms >= done[1].ms + 20, "{done:?}");
        assert!(done[1].ms >= STEP_MIN.as_millis() as u64, "{done:?}");
    }
}
