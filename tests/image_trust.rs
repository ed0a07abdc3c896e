//! Where the image comes from and whether the cache may be trusted, without
//! building an image (no network, no VM): a recipe planted in a parent of the
//! working directory is ignored, recipe files and cache roots that others can
//! write are refused, and a cache hit whose parts do not match the manifest is
//! caught. The real `ironclad` binary is run where the CLI's answer matters.

use ironclad_host::image::cache::{self, image_key};
use ironclad_host::image::recipe::EMBEDDED_TRIXIE;
use ironclad_host::image::testing;
use ironclad_host::image::{BuildOptions, ImageError, Progress, RecipeRef, ensure_built};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Instant;

fn ironclad(cwd: &Path, cache: &Path, machined: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ironclad"))
        .args(args)
        .current_dir(cwd)
        .env("IRONCLAD_CACHE_DIR", cache)
        .env("IRONCLAD_MACHINED", machined)
        .output()
        .expect("run ironclad");
    eprintln!(
        "$ ironclad {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// stderr with miette's line wrapping undone (one space between words).
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A small stand-in for machined: only its bytes matter to the key.
fn fake_machined(dir: &Path) -> PathBuf {
    let p = dir.join("machined");
    std::fs::write(&p, b"\x7fELF not really machined").unwrap();
    p
}

const PLANTED: &str = "apiVersion: ironclad.dev/v1alpha1\nkind: ImageRecipe\nname: planted\n\
suite: trixie\npackages: [linux-image-amd64, openssh-server]\nbinaries: [/usr/bin/etcd]\n";

#[test]
fn a_recipe_planted_in_a_parent_directory_is_ignored() {
    // A shared, world-writable parent (like the system temp dir) with a
    // planted images/trixie.yaml; the user works two levels below it.
    let shared = tempfile::tempdir().unwrap();
    chmod(shared.path(), 0o1777);
    std::fs::create_dir(shared.path().join("images")).unwrap();
    std::fs::write(shared.path().join("images/trixie.yaml"), PLANTED).unwrap();
    let cwd = shared.path().join("work/project");
    std::fs::create_dir_all(&cwd).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let machined = fake_machined(cache.path());

    let out = ironclad(
        &cwd,
        &cache.path().join("c"),
        &machined,
        &["image", "inspect", "trixie"],
    );
    let err = stderr(&out);
    assert!(err.contains("image: recipe trixie (built in)"), "{err}");
    assert!(!err.contains("planted"), "{err}");
    // Not built yet (exit 1), and the key named is the built-in recipe's.
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = image_key(
        EMBEDDED_TRIXIE.as_bytes(),
        &std::fs::read(&machined).unwrap(),
    );
    assert!(err.contains(&format!("key {}", &want[..12])), "{err}");

    // The planted file is used only when named as a file, and then it says so.
    let out = ironclad(
        &cwd,
        &cache.path().join("c"),
        &machined,
        &["image", "inspect", "../../images/trixie.yaml"],
    );
    let err = stderr(&out);
    assert!(
        err.contains("image: recipe ../../images/trixie.yaml (file)"),
        "{err}"
    );
    assert!(!err.contains(&format!("key {}", &want[..12])), "{err}");
}

#[test]
fn a_recipe_file_others_can_write_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let machined = fake_machined(dir.path());
    let recipe = dir.path().join("my.yaml");
    std::fs::write(&recipe, EMBEDDED_TRIXIE).unwrap();

    chmod(&recipe, 0o644);
    let out = ironclad(
        dir.path(),
        &cache,
        &machined,
        &["image", "inspect", "./my.yaml"],
    );
    assert!(stderr(&out).contains("image: recipe ./my.yaml (file)"));
    assert_eq!(out.status.code(), Some(1), "accepted (just not built)");

    chmod(&recipe, 0o664);
    let out = ironclad(
        dir.path(),
        &cache,
        &machined,
        &["image", "inspect", "./my.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("writable by group"), "{err}");
    assert!(err.contains("chmod go-w ./my.yaml"), "{err}");

    // `create` reads the cluster file's image field the same way.
    chmod(&recipe, 0o646);
    let r = ensure_built(
        &RecipeRef::parse(recipe.to_str().unwrap()),
        &BuildOptions {
            machined: Some(machined),
            cache_dir: Some(cache),
            refresh_base: false,
        },
        &Recorder::default(),
    );
    assert!(
        matches!(&r, Err(e @ ImageError::Recipe(_)) if e.is_bad_input() && e.to_string().contains("writable by others")),
        "{r:?}"
    );
}

#[test]
fn a_cache_root_others_can_write_or_own_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let machined = fake_machined(dir.path());
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();

    chmod(&cache, 0o755);
    let out = ironclad(dir.path(), &cache, &machined, &["image", "list"]);
    assert_eq!(out.status.code(), Some(0));

    chmod(&cache, 0o777);
    for args in [&["image", "list"][..], &["image", "inspect", "trixie"]] {
        let out = ironclad(dir.path(), &cache, &machined, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("writable by group and others"), "{err}");
        assert!(err.contains("chmod go-w"), "{err}");
        assert!(err.contains("IRONCLAD_CACHE_DIR"), "{err}");
    }

    // The build refuses it before reading or writing anything in it.
    let r = ensure_built(
        &RecipeRef::Name("trixie".into()),
        &BuildOptions {
            machined: Some(machined.clone()),
            cache_dir: Some(cache.clone()),
            refresh_base: false,
        },
        &Recorder::default(),
    );
    assert!(
        matches!(&r, Err(e @ ImageError::Cache(_)) if e.is_bad_input()),
        "{r:?}"
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);

    // Owned by someone else (only root can make such a directory).
    if rustix_euid() == 0 {
        chmod(&cache, 0o700);
        std::os::unix::fs::chown(&cache, Some(65534), None).unwrap();
        let out = ironclad(dir.path(), &cache, &machined, &["image", "list"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert!(err.contains("chown"), "{err}");
    } else {
        eprintln!("not root: the other-owner case is covered by the unit tests");
    }
}

fn rustix_euid() -> u32 {
    ironclad_host::image::trust::euid()
}

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

/// Puts a complete cache entry for the built-in recipe and `machined` under
/// `cache`: parts of `scale` MiB-ish sizes (the real image's proportions when
/// `scale` is 1: 12 + 17 + 68 MB) with their true sha256 in the manifest.
fn entry_with_parts(cache: &Path, machined: &Path, scale: u64) -> PathBuf {
    cache::open_root(cache).unwrap();
    let key = image_key(
        EMBEDDED_TRIXIE.as_bytes(),
        &std::fs::read(machined).unwrap(),
    );
    let dir = cache::image_dir(cache, &key);
    std::fs::create_dir_all(&dir).unwrap();
    let parts = [
        ("vmlinux", 12u64),
        ("initramfs", 17),
        ("rootfs.squashfs", 68),
    ]
    .into_iter()
    .map(|(part, mb)| {
        let size = (mb * 1_000_000 / scale) as usize;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + mb as usize) as u8).collect();
        (part, data)
    });
    let manifest = testing::manifest(&key, testing::write_parts(&dir, parts).unwrap());
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn a_cache_hit_with_a_flipped_byte_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let machined = fake_machined(tmp.path());
    let cache = tmp.path().join("cache");
    let dir = entry_with_parts(&cache, &machined, 1);
    let opts = BuildOptions {
        machined: Some(machined.clone()),
        cache_dir: Some(cache.clone()),
        refresh_base: false,
    };

    // Intact: a hit, its origin said, the ~97 MB of parts hashed once.
    let progress = Recorder::default();
    let t = Instant::now();
    let hit = ensure_built(&RecipeRef::Name("trixie".into()), &opts, &progress).unwrap();
    eprintln!(
        "cache hit with verification of 97 MB: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert!(hit.cache_hit);
    assert_eq!(hit.recipe, "trixie (built in)");
    assert!(progress.saw("recipe trixie (built in)"));
    assert!(progress.saw("parts verified"));

    // One byte of the root flipped in place (same size, same name).
    let rootfs = dir.join("rootfs.squashfs");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&rootfs)
        .unwrap();
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(40_000_000)).unwrap();
    f.write_all(&[0xAA]).unwrap();
    drop(f);
    let err = ensure_built(
        &RecipeRef::Name("trixie".into()),
        &opts,
        &Recorder::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::Damaged { .. }), "{err}");
    assert!(!err.is_bad_input());
    let msg = err.to_string();
    assert!(msg.contains("rootfs.squashfs has sha256"), "{msg}");
    assert!(msg.contains("ironclad image build trixie"), "{msg}");

    // A part cut short is caught by its size, before any hashing.
    let kernel = dir.join("vmlinux");
    let k = std::fs::read(&kernel).unwrap();
    std::fs::write(&kernel, &k[..1000]).unwrap();
    let err = ensure_built(
        &RecipeRef::Name("trixie".into()),
        &opts,
        &Recorder::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("vmlinux is 1000 bytes"), "{err}");
}
