//! Deadline-bound waits: poll a condition until it holds or the deadline
//! passes, then fail the test with what was awaited. The poll interval is
//! the only sleep a test makes.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(100);

/// The deadline `timeout` from now.
pub fn deadline(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

/// Polls `probe` until it returns `Some`; panics naming `what` at `deadline`.
#[track_caller]
pub fn until<T>(what: &str, deadline: Instant, mut probe: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// [`until`] for a condition without a value.
#[track_caller]
pub fn until_true(what: &str, deadline: Instant, mut cond: impl FnMut() -> bool) {
    until(what, deadline, || cond().then_some(()))
}

/// The async form of [`until`]: the poll interval yields to the runtime, so
/// servers on the same runtime keep running.
pub async fn until_async<T, F, Fut>(what: &str, deadline: Instant, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Retries `call` until it succeeds; at the deadline the test fails with the
/// last error. For a server that accepts connections before it answers
/// (a node's forwarded API port while the guest boots).
pub async fn until_ok<T, E, F, Fut>(what: &str, deadline: Instant, mut call: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: not yet ({e})");
                tokio::time::sleep(POLL).await;
            }
            Err(e) => panic!("timed out waiting for {what}: {e}"),
        }
    }
}

/// A request whose answer never comes (what a guest that reset leaves
/// behind in QEMU's user-mode network), and a receiver that fires once the
/// request is first polled: a test that hands it to a watch learns when the
/// watch has started it.
pub fn never_answered<T, E>() -> (
    impl std::future::Future<Output = Result<T, E>>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (started, polled) = tokio::sync::oneshot::channel();
    let request = async move {
        let _ = started.send(());
        std::future::pending::<Result<T, E>>().await
    };
    (request, polled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_the_first_value() {
        let mut n = 0;
        let v = until("n to reach 3", deadline(Duration::from_secs(5)), || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "timed out waiting for the impossible")]
    fn until_fails_at_the_deadline() {
        until_true(
            "the impossible",
            deadline(Duration::from_millis(250)),
            || false,
        );
    }

    #[tokio::test]
    async fn until_ok_reports_the_last_error() {
        let r = tokio::spawn(until_ok(
            "a refusal to end",
            deadline(Duration::from_millis(250)),
            || async { Err::<(), _>("refused") },
        ))
        .await;
        let panic = r.unwrap_err().into_panic();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(msg.contains("a refusal to end: refused"), "{msg}");
    }
}
