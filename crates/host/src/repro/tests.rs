//! The bundle reader against crafted archives (each refusal would be a
//! traversal, a link followed, a bomb read or a bad part used if the check
//! were missing), the rename of a cluster file, and the fault plan.

use super::bundle::{self, LIMITS, Limits};
use super::*;
use sha2::Digest;
use tar::EntryType;

const DEV: &str = include_str!("../../../../clusters/dev.yaml");

/// A gzip-compressed tar of `entries` (path, type, bytes), headers written
/// as they are (no path check), so hostile archives can be made.
fn tarball(entries: &[(&str, EntryType, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if *kind == EntryType::Symlink || *kind == EntryType::Link {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn manifest_json(recipe: &[u8]) -> Vec<u8> {
    let parts = crate::image::cache::PARTS
        .iter()
        .map(|p| {
            (
                p.to_string(),
                crate::image::manifest::Part {
                    sha256: "ab".repeat(32),
                    size: 10,
                },
            )
        })
        .collect();
    let mut m = crate::image::testing::manifest(&"cd".repeat(32), parts);
    m.recipe.sha256 = hex::encode(sha2::Sha256::digest(recipe));
    serde_json::to_vec_pretty(&m).unwrap()
}

/// The entries of a well-formed bundle of cluster `dev` (dev.yaml, the
/// built-in recipe, a worker partitioned and a delay for every port).
fn good() -> Vec<(String, EntryType, Vec<u8>)> {
    let recipe = crate::image::recipe::EMBEDDED_TRIXIE.as_bytes().to_vec();
    let network = serde_json::json!({
        "ports": [], "macs": [], "seed": 7,
        "faults": {"partitioned": ["dev-worker-1"], "drop_percent": 0,
                   "drop_percent_by_node": {}, "delay_ms": 150, "delay_ms_by_node": {}}
    });
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "version.json",
            br#"{"ironclad": "0.0.1", "host": {"kernel": "6.1"}}"#.to_vec(),
        ),
        ("cluster.yaml", DEV.as_bytes().to_vec()),
        ("network.json", serde_json::to_vec(&network).unwrap()),
        ("image/key", format!("{}\n", "cd".repeat(32)).into_bytes()),
        ("image/manifest.json", manifest_json(&recipe)),
        ("image/recipe.yaml", recipe),
        ("host/dev-cp-1.serial.log", b"machined: ready\n".to_vec()),
    ];
    let index = serde_json::json!({
        "apiVersion": crate::API_VERSION, "kind": "SupportBundle", "format": 1,
        "cluster": "dev", "createdAt": "2026-11-27T00:00:00Z",
        "files": files.iter().map(|(p, d)| (p, d.len())).collect::<Vec<_>>(),
        "missing": [], "redacted": [], "secretsSearchedFor": 3
    });
    let mut out = vec![("support-dev/".to_string(), EntryType::Directory, Vec::new())];
    for (p, d) in files {
        out.push((format!("support-dev/{p}"), EntryType::Regular, d));
    }
    out.push((
        "support-dev/bundle.json".into(),
        EntryType::Regular,
        serde_json::to_vec(&index).unwrap(),
    ));
    out
}

fn pack(entries: &[(String, EntryType, Vec<u8>)]) -> Vec<u8> {
    let e: Vec<(&str, EntryType, Vec<u8>)> = entries
        .iter()
        .map(|(p, k, d)| (p.as_str(), *k, d.clone()))
        .collect();
    tarball(&e)
}

fn read(entries: &[(String, EntryType, Vec<u8>)]) -> Result<bundle::Bundle, String> {
    bundle::read_from(pack(entries).as_slice(), &LIMITS)
}

fn refused(entries: &[(String, EntryType, Vec<u8>)], needle: &str) {
    let err = read(entries).expect_err("the bundle should be refused");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

/// `good()` with `path`'s bytes replaced, its size in `bundle.json` too.
fn with(path: &str, data: Vec<u8>) -> Vec<(String, EntryType, Vec<u8>)> {
    let n = data.len();
    let mut e = with_lying(path, data);
    let last = e.last_mut().unwrap();
    let mut index: serde_json::Value = serde_json::from_slice(&last.2).unwrap();
    if path != "bundle.json" {
        for f in index["files"].as_array_mut().unwrap() {
            if f[0] == path {
                f[1] = n.into();
            }
        }
        last.2 = serde_json::to_vec(&index).unwrap();
    }
    e
}

/// `good()` with `path`'s bytes replaced and `bundle.json` left as it was.
fn with_lying(path: &str, data: Vec<u8>) -> Vec<(String, EntryType, Vec<u8>)> {
    let mut e = good();
    let p = format!("support-dev/{path}");
    e.iter_mut().find(|(q, _, _)| *q == p).unwrap().2 = data;
    e
}

fn without(path: &str) -> Vec<(String, EntryType, Vec<u8>)> {
    let p = format!("support-dev/{path}");
    good().into_iter().filter(|(q, _, _)| *q != p).collect()
}

#[test]
fn a_good_bundle_is_read() {
    let b = read(&good()).unwrap();
    assert_eq!(b.cluster.as_str(), "dev");
    assert_eq!(b.cluster_yaml, DEV);
    assert_eq!(b.key.as_deref(), Some("cd".repeat(32).as_str()));
    assert_eq!(b.manifest.parts.len(), 3);
    assert_eq!(b.entries, good().len());
}

#[test]
fn traversal_and_absolute_paths_are_refused() {
    let mut e = good();
    e.push((
        "support-dev/../../etc/cron.d/x".into(),
        EntryType::Regular,
        b"x".to_vec(),
    ));
    refused(&e, "`..`");
    let mut e = good();
    e.insert(0, ("/etc/passwd".into(), EntryType::Regular, b"x".to_vec()));
    refused(&e, "absolute path");
    let mut e = good();
    e.push(("elsewhere/x".into(), EntryType::Regular, b"x".to_vec()));
    refused(&e, "outside the bundle's top directory");
    let mut e = good();
    e.push(("support-dev/a//b".into(), EntryType::Regular, b"x".to_vec()));
    refused(&e, "empty path component");
    let mut e = good();
    e.push((
        "support-dev/a\u{1b}[2Jb".into(),
        EntryType::Regular,
        b"x".to_vec(),
    ));
    refused(&e, "control character");
}

#[test]
fn links_devices_and_fifos_are_refused() {
    for (kind, what) in [
        (EntryType::Symlink, "symbolic link"),
        (EntryType::Link, "hard link"),
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "FIFO"),
    ] {
        let mut e = without("cluster.yaml");
        e.insert(1, ("support-dev/cluster.yaml".into(), kind, Vec::new()));
        refused(&e, what);
    }
}

#[test]
fn oversize_entries_and_bombs_are_refused() {
    // A log over the per-entry cap.
    let small = Limits {
        max_entry: 1000,
        ..LIMITS
    };
    let mut e = good();
    e.push((
        "support-dev/host/big.log".into(),
        EntryType::Regular,
        vec![b'a'; 2000],
    ));
    let err = bundle::read_from(pack(&e).as_slice(), &small).unwrap_err();
    assert!(err.contains("more than its limit of 1000"), "{err}");
    // A cluster file over the cluster file's own cap (1 MiB), whatever the
    // per-entry cap.
    refused(
        &with("cluster.yaml", vec![b'#'; (1 << 20) + 1]),
        "more than its limit",
    );
    // Many entries of zeros: the total stops it (it compresses to little).
    let tight = Limits {
        max_total: 100_000,
        ..LIMITS
    };
    let mut e = good();
    for i in 0..20 {
        e.push((
            format!("support-dev/host/{i}.log"),
            EntryType::Regular,
            vec![0u8; 10_000],
        ));
    }
    let err = bundle::read_from(pack(&e).as_slice(), &tight).unwrap_err();
    assert!(err.contains("more than 100000 bytes in all"), "{err}");
    let few = Limits {
        max_entries: 5,
        ..LIMITS
    };
    let err = bundle::read_from(pack(&good()).as_slice(), &few).unwrap_err();
    assert!(err.contains("more than 5 entries"), "{err}");
}

#[test]
fn missing_and_malformed_parts_are_refused() {
    for part in [
        "bundle.json",
        "cluster.yaml",
        "version.json",
        "image/manifest.json",
        "image/recipe.yaml",
    ] {
        refused(&without(part), &format!("it has no {part}"));
    }
    // network.json and image/key may be missing.
    read(&without("network.json")).unwrap();
    read(&without("image/key")).unwrap();
    refused(
        &with("image/manifest.json", b"{not json".to_vec()),
        "not an image manifest",
    );
    refused(&with("version.json", b"[1]".to_vec()), "version report");
    refused(&with("cluster.yaml", vec![0xff, 0xfe]), "not UTF-8");
    refused(&with("image/key", b"nope\n".to_vec()), "not an image key");
    refused(
        &with("image/key", format!("{}\n", "ef".repeat(32)).into_bytes()),
        "not the key in image/manifest.json",
    );
    // The recipe must be the one the manifest names (by sha256).
    let mut other = crate::image::recipe::EMBEDDED_TRIXIE.as_bytes().to_vec();
    other.extend_from_slice(b"# changed\n");
    let e = with("image/recipe.yaml", other);
    refused(&e, "but the manifest's recipe has");
    // A manifest without one of the image's parts.
    let mut m: serde_json::Value = serde_json::from_slice(&manifest_json(
        crate::image::recipe::EMBEDDED_TRIXIE.as_bytes(),
    ))
    .unwrap();
    m["parts"].as_object_mut().unwrap().remove("initramfs");
    let e = with(
        "image/manifest.json",
        serde_json::to_vec_pretty(&m).unwrap(),
    );
    refused(&e, "does not list part initramfs");
    // The index's sizes must match the archive's.
    refused(
        &with_lying("cluster.yaml", format!("{DEV}# more\n").into_bytes()),
        "bundle.json says cluster.yaml is",
    );
}

#[test]
fn unknown_formats_and_other_archives_are_refused() {
    let index = |f: &dyn Fn(&mut serde_json::Value)| {
        let e = good();
        let mut v: serde_json::Value = serde_json::from_slice(&e.last().unwrap().2).unwrap();
        f(&mut v);
        with("bundle.json", serde_json::to_vec(&v).unwrap())
    };
    refused(&index(&|v| v["format"] = 2.into()), "bundle format 2");
    refused(
        &index(&|v| v["apiVersion"] = "ironclad.dev/v2".into()),
        "ironclad.dev/v2",
    );
    refused(&index(&|v| v["kind"] = "Other".into()), "not SupportBundle");
    refused(&index(&|v| v["cluster"] = "other".into()), "top directory");
    // A bundle from before the `format` field reads as format 1.
    read(&index(&|v| {
        v.as_object_mut().unwrap().remove("format");
    }))
    .unwrap();
    let err = bundle::read_from(&b"not gzip at all"[..], &LIMITS).unwrap_err();
    assert!(err.contains("tar.gz"), "{err}");
    let mut e = good();
    e.push(e[1].clone());
    refused(&e, "appears twice");
    // The file itself must be a regular file.
    let dir = tempfile::tempdir().unwrap();
    let err = bundle::read(dir.path(), &LIMITS).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

fn request<'a>(file: &'a Path, root: &'a Path, name: Option<&str>) -> Request<'a> {
    Request {
        file,
        root,
        name: name.map(|n| n.parse().unwrap()),
        accel: AccelChoice::Tcg,
        tcg_cache_mib: 64,
        timeout: Duration::from_secs(1),
        allow_image_mismatch: false,
        cache_dir: None,
        here: serde_json::json!({"ironclad": "0.0.1", "host": {"kernel": "6.12"}}),
    }
}

#[test]
fn the_plan_renames_maps_faults_and_validates_the_cluster_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.tar.gz");
    std::fs::write(&file, pack(&good())).unwrap();
    let root = dir.path().join("state");
    let p = plan(&request(&file, &root, None)).unwrap();
    assert_eq!(p.cluster.name.as_str(), "dev");
    assert_eq!(p.source, DEV);
    assert_eq!(p.recipe, RecipeSource::BuiltIn("trixie".into()));
    let kernel = p.hosts.iter().find(|r| r.what == "kernel").unwrap();
    assert_eq!(
        (kernel.bundle.as_str(), kernel.here.as_str()),
        ("6.1", "6.12")
    );
    assert!(!kernel.same);

    let p = plan(&request(&file, &root, Some("rp2"))).unwrap();
    assert_eq!(p.cluster.name.as_str(), "rp2");
    let names: Vec<&str> = p.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["rp2-cp-1", "rp2-worker-1"]);
    assert!(p.source.contains("  name: rp2\n"), "{}", p.source);
    // Only the name changed: the comments that say `dev` are kept.
    assert!(p.source.contains("Node names are made from it: dev-cp-1"));
    assert_eq!(p.source.len(), DEV.len());
    // The reporter's drop seed first, then the faults, on the renamed nodes.
    assert_eq!(p.faults.seed, Some(7));
    assert_eq!(
        p.faults.requests,
        [
            crate::network::Request::Seed { seed: 7 },
            crate::network::Request::Delay {
                ms: 150,
                node: None
            },
            crate::network::Request::Partition {
                node: "rp2-worker-1".into()
            }
        ]
    );
    let w = p.faults.expected["rp2-worker-1"];
    assert!(w.partitioned && w.delay_ms == 150);
    let cp = p.faults.expected["rp2-cp-1"];
    assert!(!cp.partitioned && cp.delay_ms == 150);

    // A cluster file that does not validate is refused as `create` would.
    let bad = DEV.replace(
        "count: 1\n    cpus: 1\n    # Sizes",
        "count: 0\n    cpus: 1\n    # Sizes",
    );
    assert_ne!(bad, DEV);
    let e2 = with("cluster.yaml", bad.into_bytes());
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, pack(&e2)).unwrap();
    match plan(&request(&file, &root, None)) {
        Err(ReproError::Spec(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a cluster without control planes was accepted"),
    }
}

#[test]
fn a_file_without_a_name_gets_one() {
    let src = "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\n";
    let from = crate::spec::parse_cluster(src, "x").unwrap();
    let (text, c) = renamed(src, &from, &"other".parse().unwrap()).unwrap();
    assert_eq!(c.name.as_str(), "other");
    assert!(text.ends_with("metadata:\n  name: other\n"), "{text}");
    // A node named like the cluster is not the cluster's name.
    let src = "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\nmetadata: {name: dev}\nspec:\n  workers:\n    nodes: [{name: dev}]\n";
    let from = crate::spec::parse_cluster(src, "x").unwrap();
    let (text, c) = renamed(src, &from, &"b".parse().unwrap()).unwrap();
    assert!(text.contains("metadata: {name: b}"), "{text}");
    assert!(c.nodes.iter().any(|n| n.name.as_str() == "dev"), "{c:?}");
}

#[test]
fn faults_on_unknown_nodes_or_out_of_range_are_refused() {
    let from = crate::spec::parse_cluster(DEV, "dev").unwrap();
    let net = |faults: serde_json::Value| {
        serde_json::to_vec(
            &serde_json::json!({"ports": [], "macs": [], "seed": 1, "faults": faults}),
        )
        .unwrap()
    };
    let base = serde_json::json!({"partitioned": [], "drop_percent": 0,
        "drop_percent_by_node": {}, "delay_ms": 0, "delay_ms_by_node": {}});
    let mut f = base.clone();
    f["partitioned"] = serde_json::json!(["someone-else"]);
    let err = faults::plan(&net(f), &from, &from).unwrap_err();
    assert!(err.contains("someone-else"), "{err}");
    let mut f = base.clone();
    f["drop_percent_by_node"] = serde_json::json!({"dev-cp-1": 200});
    assert!(
        faults::plan(&net(f), &from, &from)
            .unwrap_err()
            .contains("200%")
    );
    let mut f = base.clone();
    f["delay_ms"] = 999_999.into();
    assert!(
        faults::plan(&net(f), &from, &from)
            .unwrap_err()
            .contains("999999 ms")
    );
    // No fault: only the seed is set (a lossy link added later replays the
    // reporter's decisions); a status without a seed (an older switch) sets
    // nothing.
    let p = faults::plan(&net(base.clone()), &from, &from).unwrap();
    assert_eq!(p.requests, [crate::network::Request::Seed { seed: 1 }]);
    let no_seed = serde_json::json!({"ports": [], "macs": [], "faults": base});
    let p = faults::plan(&serde_json::to_vec(&no_seed).unwrap(), &from, &from).unwrap();
    assert!(p.requests.is_empty() && p.seed.is_none());
    assert!(faults::plan(b"[]", &from, &from).is_err());
}
