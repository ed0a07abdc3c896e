use super::*;

#[test]
fn state_disks_come_formatted_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("n.qcow2");
    assert_eq!(
        make_disk(&disk, 64 << 20).unwrap(),
        None,
        "formatted on the host"
    );
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(meta.len() < 16 << 20, "only what mke2fs wrote is stored");
    assert!(!dir.path().join("n.raw.tmp").exists());
    // Read it back as the node would: an ext4 superblock with the label.
    let raw = dir.path().join("back.raw");
    qemu_img(
        &["convert", "-q", "-f", "qcow2", "-O", "raw"],
        &[disk.as_os_str(), raw.as_os_str()],
    )
    .unwrap();
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(bytes.len(), 64 << 20);
    assert_eq!(&bytes[1080..1082], &[0x53, 0xEF], "ext4 magic");
    let label = &bytes[1024 + 120..1024 + 136];
    assert!(label.starts_with(crate::machine::STATE_DISK_LABEL.as_bytes()));
}

#[test]
fn shown_states() {
    assert_eq!(shown_state(NodeState::Running, true, true), "ready");
    assert_eq!(shown_state(NodeState::Running, true, false), "booting");
    assert_eq!(shown_state(NodeState::Running, false, true), "crashed");
    assert_eq!(shown_state(NodeState::Crashed, true, false), "crashed");
    assert_eq!(shown_state(NodeState::Stopped, false, false), "stopped");
}

fn cluster(s: &str) -> ClusterName {
    s.parse().unwrap()
}
fn node(s: &str) -> NodeName {
    s.parse().unwrap()
}

#[test]
fn phases_and_readiness_from_the_serial_log() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = ClusterPaths::new(tmp.path(), &cluster("dev"));
    std::fs::create_dir_all(paths.logs_dir()).unwrap();
    let n = node("n");
    let engine = crate::cluster::engine::selected();
    assert_eq!(engine.console_log(&paths, &n), paths.serial_log(&n));
    assert_eq!(last_phase(&paths.serial_log(&n)), None);
    std::fs::write(
        paths.serial_log(&n),
        "[    1.0] kernel\nmachined: stage1 t=1.700\nnoise\nmachined: services started t=5.1\n",
    )
    .unwrap();
    assert_eq!(
        last_phase(&paths.serial_log(&n)).as_deref(),
        Some("services started t=5.1")
    );
    // A phase line is printed: its control characters are shown, not sent.
    std::fs::write(paths.serial_log(&n), "machined: \x1b]0;x\x07boot\r\n").unwrap();
    assert_eq!(
        last_phase(&paths.serial_log(&n)).as_deref(),
        Some("\\x1b]0;x\\x07boot")
    );
    let mut rec = crate::cluster::state::tests::sample().nodes[0].clone();
    rec.name = n.clone();
    assert!(!ReadyCondition::SerialReady.met(engine, &paths, &rec));
    std::fs::write(paths.serial_log(&n), "machined: ready t=6.0\n").unwrap();
    assert!(ReadyCondition::SerialReady.met(engine, &paths, &rec));
}

#[test]
fn converge_hears_that_a_control_plane_api_listens_from_its_console() {
    let tmp = tempfile::tempdir().unwrap();
    let state = crate::cluster::state::tests::sample();
    let paths = ClusterPaths::new(tmp.path(), &state.name);
    std::fs::create_dir_all(paths.logs_dir()).unwrap();
    let cp = state.nodes[0].name.clone();
    assert_eq!(state.nodes[0].role, crate::spec::Role::ControlPlane);
    let engine = crate::cluster::engine::selected();
    let hint = listening_hint(engine, &paths, &state);
    let listens = |n: &str| hint.listens(n);
    // No console yet, then a boot before the API: not yet.
    assert!(!listens(cp.as_str()));
    std::fs::write(
        paths.serial_log(&cp),
        "machined: stage1 t=1.7\nmachined: network t=2.9\n",
    )
    .unwrap();
    assert!(!listens(cp.as_str()));
    std::fs::write(
        paths.serial_log(&cp),
        "machined: network t=2.9\nmachined: apid listening on 10.5.0.2:50000 t=3.0\n",
    )
    .unwrap();
    assert!(listens(cp.as_str()));
    // A node the state does not have as a control plane is tried at once.
    assert!(listens("elsewhere"));
}

#[test]
fn the_follower_follows_a_rotation_between_reads_completely() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("n.log");
    let mut writer = crate::cluster::caplog::CappedLog::create(&log, 1024, &[]).unwrap();
    let mut follower = LogFollower::new(log.clone());
    let mut out = Vec::new();
    let mut want = Vec::new();
    for i in 0..200 {
        let line = format!("line {i:03} ........................\n");
        writer.write(line.as_bytes()).unwrap();
        want.push(line.trim_end().to_string());
        // Read after every line: at most one rotation between two reads.
        follower.copy_new(&mut out).unwrap();
    }
    assert!(writer.rotations() >= 5);
    let text = String::from_utf8(out).unwrap();
    let got: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("ironclad: "))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn console_reads_and_stops_without_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = ClusterPaths::new(tmp.path(), &cluster("dev"));
    std::fs::create_dir_all(paths.logs_dir()).unwrap();
    std::fs::write(paths.serial_log(&node("n")), "hello\r\n").unwrap();
    let mut out = Vec::new();
    console(&paths, &node("n"), false, &mut out).unwrap();
    assert_eq!(out, b"hello\n");
}

#[test]
fn console_shows_escape_sequences_instead_of_sending_them() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = ClusterPaths::new(tmp.path(), &cluster("dev"));
    std::fs::create_dir_all(paths.logs_dir()).unwrap();
    // Retitle the terminal, clear it, a C1 CSI, a lone CR to overwrite the line.
    std::fs::write(
        paths.serial_log(&node("n")),
        b"ok\r\n\x1b]0;pwned\x07\x1b[2J\xc2\x9b31m\rfake\n" as &[u8],
    )
    .unwrap();
    let mut out = Vec::new();
    console(&paths, &node("n"), false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text, "ok\n\\x1b]0;pwned\\x07\\x1b[2J\\u{9b}31m\\rfake\n");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
}

#[test]
fn tails_of_logs_in_messages_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("x.log");
    std::fs::write(&log, "a\nb \x1b[2J\nc\n").unwrap();
    assert_eq!(tail(&log, 2), "b \\x1b[2J\nc");
}

#[test]
fn unknown_cluster_is_bad_input_and_nothing_to_destroy() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        destroy(tmp.path(), &cluster("nope")).unwrap(),
        Destroyed::Absent
    );
    let e = status(tmp.path(), &cluster("nope")).unwrap_err();
    assert!(matches!(e, LifecycleError::NotFound { .. }), "{e:?}");
    // A diagnostic with a stable code and what to do.
    use miette::Diagnostic;
    assert_eq!(
        e.code().unwrap().to_string(),
        "ironclad::lifecycle::not_found"
    );
    assert!(e.help().unwrap().to_string().contains("ironclad list"));
    assert!(list(tmp.path()).unwrap().is_empty());
}

#[test]
fn destroy_removes_a_half_made_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let name = cluster("half");
    let paths = ClusterPaths::new(tmp.path(), &name);
    paths.claim(&name).unwrap();
    std::fs::create_dir_all(paths.run_dir()).unwrap();
    let st = status(tmp.path(), &name).unwrap();
    assert!(st.problem.is_some());
    assert_eq!(
        destroy(tmp.path(), &name).unwrap(),
        Destroyed::Removed(paths.dir().to_path_buf())
    );
    assert!(!paths.dir().exists());
}

#[test]
fn destroy_leaves_what_is_not_a_cluster_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("state");
    let outside = tmp.path().join("precious");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("canary"), "x").unwrap();
    let clusters = crate::cluster::paths::clusters_dir(&root);
    std::fs::create_dir_all(clusters.join("plain")).unwrap();
    std::fs::write(clusters.join("plain/canary"), "x").unwrap();
    std::os::unix::fs::symlink(&outside, clusters.join("link")).unwrap();
    for n in ["plain", "link"] {
        let e = destroy(&root, &cluster(n)).unwrap_err();
        assert!(matches!(e, LifecycleError::BadInput(_)), "{e:?}");
        assert!(e.to_string().contains("remove it by hand"), "{e}");
        // The other commands refuse it too.
        assert!(matches!(
            status(&root, &cluster(n)),
            Err(LifecycleError::BadInput(_))
        ));
    }
    assert!(clusters.join("plain/canary").exists());
    assert!(outside.join("canary").exists());
    assert!(list(&root).unwrap().is_empty());
}

struct Silent;
impl Progress for Silent {
    fn event(&self, _: &Event) {}
    fn line(&self, _: &str) {}
}

#[test]
fn create_lock_is_held_by_one_create_and_goes_when_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let name = cluster("c");
    let paths = ClusterPaths::new(tmp.path(), &name);
    paths.claim(&name).unwrap();
    assert!(create::CreateLock::take(&paths, &name).unwrap().is_none());
    let held = create::CreateLock::make(&paths).unwrap();
    assert!(paths.creating().exists());
    // Another create (another open file description) cannot take it.
    let busy = create::CreateLock::take(&paths, &name).err().unwrap();
    assert!(
        matches!(&busy, LifecycleError::CannotResume { why, .. } if why.contains("running")),
        "{busy}"
    );
    drop(held);
    let taken = create::CreateLock::take(&paths, &name).unwrap().unwrap();
    taken.finish().unwrap();
    assert!(!paths.creating().exists());
    assert!(create::CreateLock::take(&paths, &name).unwrap().is_none());
}

#[test]
fn create_of_an_existing_cluster_resumes_only_an_unfinished_one_of_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\n";
    let spec = crate::spec::parse_cluster(text, "c.yaml").unwrap();
    let name = spec.name.clone();
    let paths = ClusterPaths::new(tmp.path(), &name);
    paths.claim(&name).unwrap();
    let opts = |source: &str| CreateOptions {
        root: tmp.path().to_path_buf(),
        cluster: &spec,
        source: Some(source.to_string()),
        accel: AccelChoice::Tcg,
        tcg_cache_mib: 64,
        timeout: Duration::from_secs(1),
        cache_dir: Some(tmp.path().join("cache")),
    };
    let code = |e: &LifecycleError| {
        miette::Diagnostic::code(e)
            .map(|c| c.to_string())
            .unwrap_or_default()
    };
    // Finished (no `creating`): the refusal of a taken name.
    let e = create(&opts(text), &Silent).unwrap_err();
    assert_eq!(code(&e), "ironclad::lifecycle::already_exists", "{e}");
    // Unfinished, but made from another file.
    create::CreateLock::make(&paths).unwrap();
    std::fs::write(paths.cluster_yaml(), format!("{text}# other\n")).unwrap();
    let e = create(&opts(text), &Silent).unwrap_err();
    assert_eq!(code(&e), "ironclad::lifecycle::cannot_resume", "{e}");
    assert!(e.to_string().contains("different cluster file"), "{e}");
    // The same file, but it failed before cluster.json was written.
    std::fs::write(paths.cluster_yaml(), text).unwrap();
    let e = create(&opts(text), &Silent).unwrap_err();
    assert_eq!(code(&e), "ironclad::lifecycle::cannot_resume", "{e}");
    assert!(
        e.to_string().contains("before its state was complete"),
        "{e}"
    );
    assert!(paths.creating().exists(), "a refusal changes nothing");
}
