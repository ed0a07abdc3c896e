//! A full, real image build: mmdebstrap from Debian's default mirror (network),
//! the library closure, modules, OCI archives, initramfs and squashfs. Checks
//! the layout contract (`docs/image-layout.md`), the cache (hit, and a
//! machined-only change reusing the base tree) and reproducibility (a second
//! build from the same base tree gives byte-identical outputs). Takes 1-3
//! minutes.
//!
//! mmdebstrap's base tree is taken from the tests' shared image cache
//! (`<CARGO_TARGET_TMPDIR>/image-cache/base`) when it is there: in CI the
//! rootless e2e has just built it cold, twice (as an ordinary user and as
//! root) and compared the results, so running mmdebstrap a third time here
//! would test nothing new. The gVisor stage (a Go build of minutes, built
//! cold by the rootless e2e as well) is taken from there the same way.
//! Every stage after them still runs cold. With no shared base or stage
//! (this test alone on a fresh checkout) they are built here.

use ironclad_host::image::initramfs::{read_newc, unlz4_legacy};
use ironclad_host::image::manifest::hash_file;
use ironclad_host::image::{BuildOptions, Progress, RecipeRef, ensure_built};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

mod support;

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Progress for Recorder {
    fn phase(&self, message: &str) {
        eprintln!("image: {message}");
        self.0.lock().unwrap().push(message.to_string());
    }
}

impl Recorder {
    fn saw(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|m| m.contains(needle))
    }
}

fn squashfs_listing(image: &Path) -> Vec<String> {
    let out = std::process::Command::new("unsquashfs")
        .args(["-l", "-d", ""])
        .arg(image)
        .output()
        .expect("unsquashfs (squashfs-tools) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

fn opts(cache: &Path, machined: &Path) -> BuildOptions {
    BuildOptions {
        machined: Some(machined.to_path_buf()),
        cache_dir: Some(cache.to_path_buf()),
        refresh_base: false,
    }
}

/// Links (or copies) the base trees of the tests' shared image cache into
/// `cache`; says how many.
fn seed_base_from_shared_cache(cache: &Path) -> usize {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-cache/base");
    link_base_trees(&shared, cache)
}

/// Every base tree (`*.tar`) of the directory `from_dir`, linked (or copied)
/// into `cache`'s base dir; returns how many.
fn link_base_trees(from_dir: &Path, cache: &Path) -> usize {
    let dest = cache.join("base");
    std::fs::create_dir_all(&dest).unwrap();
    let mut seeded = 0;
    for e in std::fs::read_dir(from_dir).into_iter().flatten().flatten() {
        let from = e.path();
        if from.extension().is_some_and(|x| x == "tar") {
            let to = dest.join(e.file_name());
            // The builder never writes a base tree in place (it renames a
            // finished one into place), so a hard link is safe.
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).unwrap();
            }
            seeded += 1;
        }
    }
    seeded
}

/// The gVisor stages of the tests' shared image cache, copied into `cache`
/// (as the base trees above, and for the same reason: the rootless e2e has
/// built the stage cold just before, a Go build of minutes that this test
/// would only repeat). Returns how many were copied.
fn seed_stages_from_shared_cache(cache: &Path) -> usize {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-cache/stages");
    let dest = cache.join("stages");
    std::fs::create_dir_all(&dest).unwrap();
    let mut seeded = 0;
    for e in std::fs::read_dir(&shared).into_iter().flatten().flatten() {
        let from = e.path();
        let name = e.file_name();
        // Finished stages only (a build in progress is a hidden temp dir).
        if name.to_string_lossy().starts_with('.') || !from.join("stage.json").is_file() {
            continue;
        }
        let to = dest.join(&name);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&from).unwrap().flatten() {
            if f.path().is_file() {
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        }
        seeded += 1;
    }
    seeded
}

#[test]
fn full_build_is_cached_complete_and_reproducible() {
    let machined = support::machined_binary();
    let recipe = RecipeRef::Name("trixie".into());
    let cache_a = tempfile::tempdir().unwrap();
    let seeded = seed_base_from_shared_cache(cache_a.path());
    let stages = seed_stages_from_shared_cache(cache_a.path());
    eprintln!("base trees from the shared cache: {seeded}, gVisor stages: {stages}");
    let progress = Recorder::default();

    // Cold build.
    let t = Instant::now();
    let built = ensure_built(&recipe, &opts(cache_a.path(), &machined), &progress).unwrap();
    eprintln!("cold build: {:.1}s", t.elapsed().as_secs_f64());
    assert!(!built.cache_hit);
    // Either mmdebstrap ran or the seeded base tree of this recipe was used.
    assert!(progress.saw("mmdebstrap:"), "the base stage ran");
    for (name, part) in &built.manifest.parts {
        let p = built.dir.join(name);
        assert_eq!(&hash_file(&p).unwrap(), part, "{name} matches the manifest");
        eprintln!("{name}: {:.1} MiB", part.size as f64 / (1024.0 * 1024.0));
    }
    assert_eq!(built.manifest.parts.len(), 3);
    assert!(built.manifest.packages.contains_key("etcd-server"));
    assert!(built.manifest.kernel_version.starts_with("6."));
    let kver = &built.manifest.kernel_version;

    // The root: what machined relies on, and no shell.
    let listing = squashfs_listing(&built.rootfs);
    for want in [
        "/usr/sbin/machined".to_string(),
        "/usr/bin/etcd".into(),
        "/usr/bin/containerd".into(),
        "/usr/bin/containerd-shim-runc-v2".into(),
        "/usr/sbin/runc".into(),
        "/usr/bin/crun".into(),
        "/usr/bin/runsc".into(),
        "/usr/sbin/mke2fs".into(),
        "/usr/sbin/mkfs.ext4".into(),
        "/usr/lib/cni/bridge".into(),
        "/usr/lib64/ld-linux-x86-64.so.2".into(),
        "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
        format!("/usr/lib/modules/{kver}/ironclad/br_netfilter.ko"),
        "/usr/lib/ironclad/modules.load".into(),
        "/usr/lib/ironclad/sysctl.json".into(),
        "/usr/lib/ironclad/images/offline.tar".into(),
        "/usr/lib/ironclad/manifest.json".into(),
        "/etc/passwd".into(),
        "/newroot".into(),
        "/bin".into(),
    ] {
        assert!(listing.contains(&want), "{want} missing from the root");
    }
    for banned in [
        "/bin/sh",
        "/usr/bin/sh",
        "/usr/bin/bash",
        "/usr/bin/dash",
        "/usr/bin/busybox",
        "/usr/bin/apt",
        "/usr/bin/dpkg",
    ] {
        assert!(
            !listing.iter().any(|l| l == banned),
            "{banned} is in the root"
        );
    }
    assert!(
        !listing.iter().any(|l| l.ends_with(".ko.xz")),
        "modules are decompressed"
    );

    // The initramfs (lz4 legacy framing, what the kernel unpacks): machined
    // as /init, its loader and libraries, stage-1 modules and stage 2's early
    // ones.
    let entries =
        read_newc(&unlz4_legacy(&std::fs::read(&built.initramfs).unwrap()).unwrap()).unwrap();
    let get = |p: &str| entries.iter().find(|e| e.path == p);
    assert_eq!(get("init").unwrap().data, std::fs::read(&machined).unwrap());
    assert!(get("lib64/ld-linux-x86-64.so.2").is_some());
    assert!(get("lib/x86_64-linux-gnu/libc.so.6").is_some());
    assert!(get("dev/console").is_some());
    let load = String::from_utf8(get("etc/ironclad/modules.load").unwrap().data.clone()).unwrap();
    let load: Vec<&str> = load.lines().collect();
    assert!(
        load.contains(&"virtio_blk.ko") && load.contains(&"squashfs.ko"),
        "{load:?}"
    );
    let early = String::from_utf8(get("etc/ironclad/modules.early").unwrap().data.clone()).unwrap();
    // Groups (one per loading thread) are separated by a blank line.
    let early: Vec<&str> = early.lines().filter(|l| !l.is_empty()).collect();
    assert!(early.len() >= 5, "{early:?}");
    for m in [
        "qemu_fw_cfg.ko",
        "jbd2.ko",
        "ext4.ko",
        "overlay.ko",
        "virtio_net.ko",
    ] {
        assert!(early.contains(&m), "{m} in {early:?}");
        assert!(
            !listing.iter().any(|l| l.ends_with(&format!("/{m}"))),
            "{m} only in the initramfs"
        );
    }
    for m in load.iter().chain(&early) {
        let data = &get(&format!("lib/modules/{m}")).unwrap().data;
        assert_eq!(&data[..4], b"\x7fELF", "{m} is a decompressed module");
    }

    // Warm: a cache hit (how fast is `ci/bench`'s image_build_warm_wall,
    // with the release binary; here a debug build hashes a 68 MB machined).
    let t = Instant::now();
    let again = ensure_built(&recipe, &opts(cache_a.path(), &machined), &progress).unwrap();
    let warm = t.elapsed().as_secs_f64();
    eprintln!("warm build: {warm:.2}s");
    assert!(again.cache_hit);
    assert_eq!(again.key, built.key);
    assert!(progress.saw("cache hit"));

    // Reproducible: a second cache with the same base tree gives the same
    // bytes. Every base tree of cache A goes along (the shared cache may hold
    // an older recipe's too, and which one a directory listing gives first is
    // no rule: taking the first made this test build the base again).
    let cache_b = tempfile::tempdir().unwrap();
    let carried = link_base_trees(&cache_a.path().join("base"), cache_b.path());
    assert!(carried > 0, "cache A has a base tree");
    let progress_b = Recorder::default();
    let second = ensure_built(&recipe, &opts(cache_b.path(), &machined), &progress_b).unwrap();
    assert!(!second.cache_hit);
    assert!(progress_b.saw("base tree cached"));
    assert_eq!(second.manifest, built.manifest);
    assert_eq!(
        hash_file(&second.rootfs).unwrap(),
        hash_file(&built.rootfs).unwrap(),
        "rootfs.squashfs is reproducible"
    );
    assert_eq!(
        hash_file(&second.initramfs).unwrap(),
        hash_file(&built.initramfs).unwrap(),
        "initramfs is reproducible"
    );

    // A machined change: new key, no mmdebstrap.
    let other = cache_b.path().join("machined-other");
    let mut bytes = std::fs::read(&machined).unwrap();
    bytes.extend_from_slice(b"\0changed");
    std::fs::write(&other, bytes).unwrap();
    let progress_c = Recorder::default();
    let third = ensure_built(&recipe, &opts(cache_b.path(), &other), &progress_c).unwrap();
    assert_ne!(third.key, second.key);
    assert!(
        progress_c.saw("base tree cached"),
        "mmdebstrap is not run again"
    );
    assert_ne!(
        third.manifest.machined_sha256,
        second.manifest.machined_sha256
    );
}
