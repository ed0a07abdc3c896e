//! Unit tests of the supervisor: start order, back-off, the log ring, and
//! real child processes (health, restarts, output capture, stop order).

use super::*;
use crate::reaper::ReapMode;
use std::time::Instant;

const T: Duration = Duration::from_secs(20);

fn sup() -> Reaper {
    let r = Reaper::new(ReapMode::Own);
    tokio::spawn(r.clone().run());
    r
}

fn fast(mut s: ServiceSpec) -> ServiceSpec {
    s.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        reset_after: Duration::from_secs(60),
    };
    s.stop_timeout = Duration::from_secs(5);
    s
}

#[test]
fn order_respects_dependencies_and_rejects_bad_graphs() {
    let mut a = ServiceSpec::new("a", "/bin/true", &[]);
    a.depends_on = vec!["b".into()];
    let b = ServiceSpec::new("b", "/bin/true", &[]);
    let mut c = ServiceSpec::new("c", "/bin/true", &[]);
    c.depends_on = vec!["a".into()];
    let order = start_order(&[c.clone(), a.clone(), b.clone()]).unwrap();
    assert_eq!(order, vec![2, 1, 0]);
    let mut b2 = b.clone();
    b2.depends_on = vec!["c".into()];
    assert!(matches!(
        start_order(&[a.clone(), b2, c.clone()]),
        Err(SupervisorError::Cycle(_))
    ));
    let mut x = b.clone();
    x.depends_on = vec!["nope".into()];
    assert!(matches!(
        start_order(&[x]),
        Err(SupervisorError::UnknownDependency { .. })
    ));
    assert!(matches!(
        start_order(&[b.clone(), b]),
        Err(SupervisorError::Duplicate(_))
    ));
}

#[test]
fn backoff_doubles_and_caps() {
    let b = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        reset_after: Duration::from_secs(5),
    };
    assert_eq!(b.delay(1), Duration::from_millis(100));
    assert_eq!(b.delay(2), Duration::from_millis(200));
    assert_eq!(b.delay(4), Duration::from_millis(800));
    assert_eq!(b.delay(5), Duration::from_secs(1));
    assert_eq!(b.delay(500), Duration::from_secs(1));
}

#[test]
fn ring_keeps_the_last_lines() {
    let mut r = LogRing::new(2);
    for l in ["a", "b", "c"] {
        r.push(l.into());
    }
    assert_eq!(r.lines(), vec!["b", "c"]);
}

#[tokio::test]
async fn dependent_waits_for_its_dependency_health() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    // "db" becomes healthy only once the flag file exists.
    let mut db = fast(ServiceSpec::new("db", "/bin/sleep", &["30"]));
    db.health = file_probe(flag.clone());
    let mut app = fast(ServiceSpec::new("app", "/bin/sleep", &["30"]));
    app.depends_on = vec!["db".into()];
    let h = start(sup(), Settings::default(), vec![app, db]).unwrap();
    h.wait_for("db", T, |s| s.state == ServiceState::Starting)
        .await
        .unwrap();
    assert_eq!(h.status("app").unwrap().state, ServiceState::Waiting);
    assert_eq!(h.status("app").unwrap().pid, None);
    std::fs::write(&flag, b"").unwrap();
    h.wait_for("app", T, |s| s.state == ServiceState::Running)
        .await
        .unwrap();
    assert_eq!(h.status("db").unwrap().state, ServiceState::Running);
    let names: Vec<String> = h.statuses().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["db", "app"]);
    h.shutdown().await;
    for s in h.statuses() {
        assert_eq!(s.state, ServiceState::Stopped, "{s:?}");
    }
}

#[tokio::test]
async fn failing_service_is_restarted_with_backoff_and_reports_its_error() {
    let svc = fast(ServiceSpec::new("bad", "/bin/false", &[]));
    let started = Instant::now();
    let h = start(sup(), Settings::default(), vec![svc]).unwrap();
    let s = h.wait_for("bad", T, |s| s.restarts >= 3).await.unwrap();
    // 50 + 100 + 200 ms of back-off at least.
    assert!(started.elapsed() >= Duration::from_millis(350));
    assert_eq!(s.last_error.as_deref(), Some("exited with status 1"));
    h.shutdown().await;
    assert_eq!(h.status("bad").unwrap().state, ServiceState::Stopped);
}

#[tokio::test]
async fn missing_program_fails_with_the_reason() {
    let svc = fast(ServiceSpec::new("ghost", "/nonexistent/prog", &[]));
    let h = start(sup(), Settings::default(), vec![svc]).unwrap();
    let s = h
        .wait_for("ghost", T, |s| {
            matches!(s.state, ServiceState::Failed { .. })
        })
        .await
        .unwrap();
    assert!(s.last_error.unwrap_or_default().contains("cannot start"));
    h.shutdown().await;
}

#[tokio::test]
async fn output_is_captured_in_ring_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = fast(ServiceSpec::new(
        "talker",
        "/bin/sh",
        &["-c", "echo out-line; echo err-line >&2; exec sleep 30"],
    ));
    svc.env = vec![("X".into(), "1".into())];
    let settings = Settings {
        log_dir: Some(dir.path().to_path_buf()),
        ring_lines: 10,
    };
    let h = start(sup(), settings, vec![svc]).unwrap();
    let deadline = Instant::now() + T;
    loop {
        let logs = h.logs("talker").unwrap();
        if logs.len() >= 2 {
            assert!(logs.contains(&"out-line".to_string()), "{logs:?}");
            assert!(logs.contains(&"err-line".to_string()), "{logs:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no output captured");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown().await;
    let file = std::fs::read_to_string(dir.path().join("talker.log")).unwrap();
    assert!(
        file.contains("out-line") && file.contains("err-line"),
        "{file}"
    );
}

fn file_probe(path: PathBuf) -> Health {
    Health::Probe {
        probe: Arc::new(move || {
            let f = path.clone();
            Box::pin(async move {
                if f.exists() {
                    Ok(())
                } else {
                    Err("not ready".into())
                }
            })
        }),
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn shutdown_stops_in_reverse_order_and_kills_stubborn_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // Each shell reports healthy (a file) only after its TERM trap is set.
    let svc = |name: &str, trap: &str| {
        let mut s = fast(ServiceSpec::new(
            name,
            "/bin/sh",
            &[
                "-c",
                &format!("trap '{trap}' TERM; : > {d}/{name}.up; while :; do sleep 0.05; done"),
            ],
        ));
        s.health = file_probe(dir.path().join(format!("{name}.up")));
        s
    };
    let first = svc("first", &format!("echo first >> {d}/marks; exit 0"));
    let mut second = svc("second", &format!("echo second >> {d}/marks; exit 0"));
    second.depends_on = vec!["first".into()];
    let mut stubborn = svc("stubborn", "");
    stubborn.stop_timeout = Duration::from_millis(200);
    let h = start(sup(), Settings::default(), vec![second, first, stubborn]).unwrap();
    for n in ["first", "second", "stubborn"] {
        h.wait_for(n, T, |s| s.state == ServiceState::Running)
            .await
            .unwrap();
    }
    h.shutdown().await;
    let got = std::fs::read_to_string(dir.path().join("marks")).unwrap();
    assert_eq!(got, "second\nfirst\n");
    for s in h.statuses() {
        assert_eq!(s.state, ServiceState::Stopped);
    }
}

#[tokio::test]
async fn manual_services_wait_for_start_and_obey_stop_and_restart() {
    let r = sup();
    let mut later = fast(ServiceSpec::new("later", "/bin/sleep", &["30"]));
    later.autostart = false;
    let h = start(r, Settings::default(), vec![later]).unwrap();
    assert_eq!(h.status("later").unwrap().state, ServiceState::Stopped);
    assert!(h.status("later").unwrap().pid.is_none());

    h.start_service("later").unwrap();
    let running = h
        .wait_for("later", T, |s| s.state == ServiceState::Running)
        .await
        .unwrap();
    let first = running.pid.unwrap();
    // Starting again while it runs changes nothing.
    h.start_service("later").unwrap();
    assert_eq!(h.status("later").unwrap().pid, Some(first));

    let stopped = h.stop_service("later").await.unwrap();
    assert_eq!(stopped.state, ServiceState::Stopped);

    h.restart_service("later").await.unwrap();
    let again = h
        .wait_for("later", T, |s| s.state == ServiceState::Running)
        .await
        .unwrap();
    assert_ne!(again.pid, Some(first));
    assert!(matches!(
        h.start_service("nope"),
        Err(SupervisorError::NoSuchService(_))
    ));
    h.shutdown().await;
    assert_eq!(h.status("later").unwrap().state, ServiceState::Stopped);
}
