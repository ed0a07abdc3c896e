//! `ironclad repro`: a 1-node cluster with a network delay is bundled with
//! `ironclad support` and destroyed; `repro` of the bundle makes it again
//! under its own name, with the same image (its manifest has the bundle's
//! manifest's sha256), the delay in force and the reporter's drop seed (set
//! with `net seed`). A bundle whose manifest was
//! tampered with is refused (exit 1, the part named, nothing created)
//! without `--allow-image-mismatch`; a bundle for an existing name and a file
//! that is no bundle are bad input (exit 2). Both the `create` and the
//! `repro` wall times are printed (the image is in the cache for both).

use crate::harness::Harness;
use sha2::Digest;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn untar(file: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(file)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The sha256 of the manifest of the image cluster `name` runs.
fn running_manifest_sha256(h: &Harness, name: &str) -> String {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.cluster_dir(name).join("cluster.json")).unwrap())
            .unwrap();
    let kernel = Path::new(state["image"]["kernel"].as_str().expect("image.kernel"));
    let manifest = std::fs::read(kernel.parent().unwrap().join("manifest.json")).unwrap();
    hex::encode(sha2::Sha256::digest(&manifest))
}

#[test]
fn repro_of_a_bundle_gives_the_same_image_and_faults() {
    let h = Harness::new("repro");
    let tmp = tempfile::tempdir().unwrap();
    let file = crate::solo_cluster(tmp.path(), "rp");
    let t = Instant::now();
    h.create_from_ok(&file);
    let create_s = t.elapsed().as_secs_f64();
    h.ok(&["net", "delay", "rp", "--node", "rp-cp-1", "--ms", "150"]);
    let seeded = h.ok(&["net", "seed", "rp", "--seed", "4242"]);
    assert!(
        seeded.starts_with(
            "drop decisions restarted from seed 4242\ncluster rp network (drop seed 4242)"
        ),
        "{seeded}"
    );
    let bundle = tmp.path().join("rp.tar.gz");
    let bundle_s = bundle.to_str().unwrap();
    h.ok(&["support", "rp", "--file", bundle_s]);
    let original_sha = running_manifest_sha256(&h, "rp");
    let x = tmp.path().join("x");
    untar(&bundle, &x);
    let manifest_path = x.join("support-rp/image/manifest.json");
    let manifest = std::fs::read(&manifest_path).unwrap();
    let bundle_sha = hex::encode(sha2::Sha256::digest(&manifest));
    assert_eq!(bundle_sha, original_sha);

    // The name is taken while the cluster exists: bad input, nothing made.
    let out = h.run(&["repro", bundle_s, "--accel", "tcg"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    h.ok(&["destroy", "rp"]);

    let timeout = crate::BOOT.as_secs().to_string();
    let t = Instant::now();
    let json = h.ok(&[
        "repro",
        bundle_s,
        "--accel",
        "tcg",
        "--timeout",
        &timeout,
        "-o",
        "json",
    ]);
    let repro_s = t.elapsed().as_secs_f64();
    eprintln!("create {create_s:.1} s, repro {repro_s:.1} s (image cached for both)");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["cluster"]["cluster"], "rp", "{v}");
    assert_eq!(v["image"]["differs"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["image"]["manifestSha256"], bundle_sha.as_str(), "{v}");
    // Checked independently of what repro says: the image the new cluster
    // boots has the bundle's manifest.
    assert_eq!(running_manifest_sha256(&h, "rp"), bundle_sha);
    // The fault of the bundle is in force on the new cluster's switch.
    let st = h.status("rp");
    assert_eq!(st["nodes"][0]["state"], "ready", "{st}");
    assert_eq!(st["nodes"][0]["network"]["delayMs"], 150, "{st}");
    // And the reporter's drop seed on that switch.
    assert_eq!(v["dropSeed"], 4242, "{v}");
    let net: serde_json::Value =
        serde_json::from_str(&h.ok(&["net", "status", "rp", "-o", "json"])).unwrap();
    assert_eq!(net["seed"], 4242, "{net}");
    assert!(
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["same"] == true),
        "{v}"
    );

    // A tampered manifest: refused, the part named, no cluster made.
    let text = String::from_utf8(manifest).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sha = m["parts"]["initramfs"]["sha256"].as_str().unwrap();
    let flipped = format!(
        "{}{}",
        if sha.starts_with('0') { "1" } else { "0" },
        &sha[1..]
    );
    std::fs::write(&manifest_path, text.replace(sha, &flipped)).unwrap();
    let tampered = tmp.path().join("tampered.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tampered)
        .arg("-C")
        .arg(&x)
        .arg("support-rp")
        .status()
        .unwrap();
    assert!(st.success());
    let out = h.run(&[
        "repro",
        tampered.to_str().unwrap(),
        "--name",
        "rp3",
        "--accel",
        "tcg",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("initramfs (bundle: sha256"), "{err}");
    assert!(err.contains("--allow-image-mismatch"), "{err}");
    assert!(!h.cluster_dir("rp3").exists());

    // Not a bundle at all.
    let out = h.run(&["repro", &file, "--name", "rp4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tar.gz"));
    h.ok(&["destroy", "rp"]);
}
