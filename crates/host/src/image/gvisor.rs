//! The gVisor stage of the image build: gVisor's containerd shim
//! (`containerd-shim-runsc-v1`) and a `runsc` with the network-namespace fix,
//! built from Debian's own `golang-gvisor-gvisor` source in a throw-away
//! mmdebstrap chroot and cached by a key of everything that goes in.
//!
//! Why: Debian ships `runsc` but not the shim (its `debian/rules` leaves
//! `shim/` out), and the runc shim cannot drive runsc for a pod's app
//! container; Debian's runsc 20240729 also takes every network namespace for
//! the root one on kernels from 6.11 (google/gvisor#10704). See
//! `docs/image-layout.md` ("gVisor stage").
//!
//! What the stage does (the recipe's `gvisor` section pins every input):
//! 1. mmdebstrap of the recipe's suite (its default mirror) with the Go
//!    toolchain, the C compilers and the Go source packages the build reads,
//!    each at the recipe's exact version (apt fails when the archive no longer
//!    has it).
//! 2. Inside that chroot ([`render_script`]): a `deb-src` entry and the
//!    compatibility suite's entries are derived from the chroot's own
//!    sources.list (no mirror is named anywhere); `apt-get source` fetches the
//!    source tarballs, checked against the recipe's sha256; `apt-get download`
//!    fetches the compatibility suite's containerd 1.6-era `-dev` trees, which
//!    are unpacked (not installed) into a GOPATH entry ahead of the suite's.
//! 3. Debian's quilt patches, then ironclad's [`PATCH`] (the shim's four API
//!    edits for those trees, and upstream commit 19f6b0c07's root-netns check);
//!    the vdso, BPF and sysmsg blobs as `debian/rules` makes them; one
//!    `go build` of `./shim` and `./runsc` in GOPATH mode, static,
//!    `-trimpath -buildvcs=false -buildid=` (byte-reproducible).
//! 4. The outputs come out through mmdebstrap's `sync-out` into
//!    `<cache>/stages/gvisor-<key>/` with `stage.json` (sha256 and size of each
//!    binary, every package version of the chroot) and the run's `build.log`;
//!    a later build verifies them and does not run the stage again. A failed
//!    run leaves its log at `<cache>/stages/gvisor-<key>.log`.
//!
//! This module owns the recipe section, the script, the key, the cache entry
//! and its check; `build` decides when to call it and copies its binaries
//! into the root.

use super::ImageError;
use super::build::{HEARTBEAT, Progress, tail_of, wait_with_heartbeat};
use super::cache::Damage;
use super::hostcheck;
use super::manifest::{Part, hash_file};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Bumped when the stage's output for the same recipe section changes.
const STAGE_FORMAT: &str = "ironclad-gvisor-stage-v1";
/// The kind of `stage.json`.
pub const STAGE_KIND: &str = "GvisorStage";
/// ironclad's edits to the gVisor source: the shim against containerd 1.6's
/// API (`CopyConsole` takes the process id, `StartShim` takes
/// `shim.StartOpts`, `shim.SetScore` is `shim.AdjustOOMScore`) and runsc's
/// root-netns check on `dev_weight` (upstream 19f6b0c07).
pub const PATCH: &str = include_str!("gvisor.patch");
/// The shim in the root: beside containerd, which looks there and on PATH.
pub const SHIM_PATH: &str = "/usr/bin/containerd-shim-runsc-v1";
/// runsc in the root (the shim's `binary_name`).
pub const RUNSC_PATH: &str = "/usr/bin/runsc";
/// The stage's record in the root.
pub const INFO_PATH: &str = "/usr/lib/ironclad/gvisor-stage.json";
/// The binaries the stage makes: file name in the stage dir → path in the root.
pub const OUTPUTS: &[(&str, &str)] = &[
    ("containerd-shim-runsc-v1", SHIM_PATH),
    ("runsc", RUNSC_PATH),
];

/// The recipe's `gvisor` section: every input of the stage, pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GvisorSpec {
    /// Debian source package and exact version,
    /// `golang-gvisor-gvisor=0.0~20240729.0-4`.
    pub source: String,
    /// sha256 of each file `apt-get source` fetches (orig and debian
    /// tarballs), by file name.
    pub source_sha256: BTreeMap<String, String>,
    /// Packages of the build chroot (the recipe's suite), `name=version`
    /// (or a bare `name` for tools whose version cannot change the output).
    pub build_packages: Vec<String>,
    /// The suite the shim's containerd 1.6-era `-dev` trees come from.
    pub compat_suite: String,
    /// Those trees, `name=version`: downloaded and unpacked, not installed.
    pub compat_packages: Vec<String>,
}

fn is_debian_name(s: &str) -> bool {
    s.len() > 1
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_debian_version(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c))
}

/// `name=version` → (name, Some(version)); `name` → (name, None).
fn split_pin(p: &str) -> (&str, Option<&str>) {
    match p.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (p, None),
    }
}

impl GvisorSpec {
    /// Checks every field; the message names the bad value.
    pub fn validate(&self) -> Result<(), String> {
        let pinned = |what: &str, p: &str| -> Result<(), String> {
            match split_pin(p) {
                (n, Some(v)) if is_debian_name(n) && is_debian_version(v) => Ok(()),
                _ => Err(format!(
                    "gvisor.{what} {p:?} must be name=version (an exact Debian version)"
                )),
            }
        };
        pinned("source", &self.source)?;
        if self.source_sha256.is_empty() {
            return Err("gvisor.sourceSha256 must list the source's tarballs".into());
        }
        for (file, sum) in &self.source_sha256 {
            let file_ok = !file.is_empty()
                && !file.starts_with('.')
                && file
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.~_".contains(c));
            if !file_ok {
                return Err(format!(
                    "gvisor.sourceSha256: {file:?} is not a plain file name"
                ));
            }
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "gvisor.sourceSha256: {file}: {sum:?} is not a sha256 in hex"
                ));
            }
        }
        for kind in [".orig.tar.", ".debian.tar."] {
            if !self.source_sha256.keys().any(|f| f.contains(kind)) {
                return Err(format!(
                    "gvisor.sourceSha256 has no *{kind}* file (the source's tarballs)"
                ));
            }
        }
        if self.build_packages.is_empty() {
            return Err("gvisor.buildPackages must not be empty".into());
        }
        for p in &self.build_packages {
            match split_pin(p) {
                (n, None) if is_debian_name(n) => {}
                (n, Some(v)) if is_debian_name(n) && is_debian_version(v) => {}
                _ => {
                    return Err(format!(
                        "gvisor.buildPackages: {p:?} is not a Debian package name or name=version"
                    ));
                }
            }
        }
        if !self
            .build_packages
            .iter()
            .any(|p| split_pin(p).0.starts_with("golang-") && split_pin(p).0.ends_with("-go"))
        {
            return Err("gvisor.buildPackages must include a Go toolchain (golang-1.N-go)".into());
        }
        if !is_debian_name(&self.compat_suite) {
            return Err(format!(
                "gvisor.compatSuite {:?} is not a Debian suite name",
                self.compat_suite
            ));
        }
        for p in &self.compat_packages {
            pinned("compatPackages", p)?;
        }
        Ok(())
    }

    /// The source package's name.
    pub fn source_name(&self) -> &str {
        split_pin(&self.source).0
    }

    /// The upstream part of the source version (no epoch, no Debian
    /// revision): what `runsc --version` says, as Debian's build sets it.
    pub fn upstream_version(&self) -> &str {
        let v = split_pin(&self.source).1.unwrap_or_default();
        let v = v.split_once(':').map_or(v, |(_, rest)| rest);
        v.rsplit_once('-').map_or(v, |(up, _)| up)
    }

    /// The Go toolchain package (`golang-1.24-go`) → its bin dir.
    fn go_bin(&self) -> String {
        let go = self
            .build_packages
            .iter()
            .map(|p| split_pin(p).0)
            .find(|n| n.starts_with("golang-") && n.ends_with("-go"))
            .unwrap_or("golang-go");
        let ver = go.trim_start_matches("golang-").trim_end_matches("-go");
        format!("/usr/lib/go-{ver}/bin")
    }
}

/// The script run inside the build chroot (`sh -eu`), as the stage's
/// `--chrooted-customize-hook`. Every value comes from a validated
/// [`GvisorSpec`], so nothing needs quoting beyond what is written here.
pub fn render_script(spec: &GvisorSpec, suite: &str, epoch: u64) -> String {
    let mut s = String::new();
    let src = &spec.source;
    let compat = &spec.compat_suite;
    let _ = writeln!(
        s,
        "# Written by ironclad (image::gvisor); run inside the chroot."
    );
    let _ = writeln!(s, "set -eu");
    let _ = writeln!(s, "export LC_ALL=C.UTF-8 SOURCE_DATE_EPOCH={epoch}");
    let _ = writeln!(s, "B=/build");
    let _ = writeln!(s, "G=$B/gopath/src/gvisor.dev/gvisor");
    let _ = writeln!(s, "mkdir -p $B/src $B/debs $B/compat $B/out $G");
    let _ = writeln!(
        s,
        "# The source and the compatibility suite, from the mirror mmdebstrap chose."
    );
    let _ = writeln!(
        s,
        "sed -n 's/^deb \\([^ ]*\\) {suite} main$/deb-src \\1 {suite} main/p' /etc/apt/sources.list > /etc/apt/sources.list.d/ironclad-source.list"
    );
    let _ = writeln!(
        s,
        "sed -n 's/^deb \\([^ ]*\\) {suite}\\([^ ]*\\) main$/deb \\1 {compat}\\2 main/p' /etc/apt/sources.list > /etc/apt/sources.list.d/ironclad-compat.list"
    );
    let _ = writeln!(
        s,
        "test -s /etc/apt/sources.list.d/ironclad-source.list || {{ echo 'ironclad: no \"deb URI {suite} main\" line in the chroot sources.list' >&2; exit 1; }}"
    );
    let _ = writeln!(s, "apt-get update -q");
    let _ = writeln!(s, "cd $B/src");
    let _ = writeln!(s, "apt-get source -q --download-only --tar-only '{src}'");
    let _ = writeln!(s, "apt-get source -q --download-only --diff-only '{src}'");
    let _ = writeln!(s, "sha256sum --strict -c - <<'SUMS'");
    for (file, sum) in &spec.source_sha256 {
        let _ = writeln!(s, "{sum}  {file}");
    }
    let _ = writeln!(s, "SUMS");
    let _ = writeln!(
        s,
        "test \"$(ls | wc -l)\" = {} || {{ echo 'ironclad: apt-get source fetched other files than gvisor.sourceSha256 lists:' $(ls) >&2; exit 1; }}",
        spec.source_sha256.len()
    );
    if !spec.compat_packages.is_empty() {
        let _ = writeln!(s, "cd $B/debs");
        let _ = write!(s, "apt-get download -q");
        for p in &spec.compat_packages {
            let _ = write!(s, " '{p}'");
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "for d in $B/debs/*.deb; do dpkg-deb -x \"$d\" $B/compat; done"
        );
    }
    let _ = writeln!(s, "tar -xf $B/src/*.orig.tar.* -C $G --strip-components=1");
    let _ = writeln!(s, "tar -xf $B/src/*.debian.tar.* -C $G");
    let _ = writeln!(s, "cd $G");
    let _ = writeln!(s, "if [ -f debian/patches/series ]; then");
    let _ = writeln!(
        s,
        "  for p in $(sed -e 's/#.*//' debian/patches/series); do patch -s -p1 --forward --no-backup-if-mismatch < \"debian/patches/$p\"; done"
    );
    let _ = writeln!(s, "fi");
    let _ = writeln!(
        s,
        "patch -p1 --forward --no-backup-if-mismatch < $B/ironclad.patch"
    );
    let _ = writeln!(
        s,
        "# Generated files, as debian/rules and debian/sysmsg.makefile make them."
    );
    let _ = writeln!(s, "V=pkg/sentry/loader/vdsodata");
    let _ = writeln!(
        s,
        "cc -I. -O2 -std=c++11 -fPIC -fno-sanitize=all -fno-stack-protector -shared -nostdlib \
         -Wl,-soname=linux-vdso.so.1 -Wl,--hash-style=sysv -Wl,--no-undefined -Wl,-Bsymbolic \
         -Wl,-z,max-page-size=4096 -Wl,-z,common-page-size=4096 -Wl,-Tvdso/vdso_amd64.lds \
         -o $V/vdso_amd64.so vdso/vdso.cc vdso/vdso_time.cc"
    );
    let _ = writeln!(
        s,
        "python3 vdso/check_vdso.py --check-data --vdso=$V/vdso_amd64.so"
    );
    let _ = writeln!(
        s,
        "for o in runsc/sandbox/bpf/af_xdp runsc/sandbox/bpf/tunnel_veth tools/xdp/cmd/bpf/drop tools/xdp/cmd/bpf/pass tools/xdp/cmd/bpf/redirect_host tools/xdp/cmd/bpf/tcpdump tools/xdp/cmd/bpf/tunnel_host; do"
    );
    let _ = writeln!(
        s,
        "  clang -O2 -Wall -Werror -target bpf -c $o.ebpf.c -o ${{o}}_ebpf.o -I/usr/include/x86_64-linux-gnu"
    );
    let _ = writeln!(s, "done");
    let _ = writeln!(
        s,
        "make -s -C pkg/sentry/platform/systrap/sysmsg -f $G/debian/sysmsg.makefile ARCH=amd64 all clean"
    );
    let _ = writeln!(
        s,
        "# GOPATH mode: the source first, then the compatibility trees, then the suite's."
    );
    let _ = writeln!(
        s,
        "export PATH={}:$PATH GO111MODULE=off CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS= GOPATH=$B/gopath:$B/compat/usr/share/gocode:/usr/share/gocode GOCACHE=$B/gocache HOME=$B",
        spec.go_bin()
    );
    let _ = writeln!(s, "go version");
    let _ = writeln!(
        s,
        "go build -trimpath -buildvcs=false -ldflags='-s -w -buildid= -X gvisor.dev/gvisor/runsc/version.version={}' -o $B/out/ ./shim ./runsc",
        spec.upstream_version()
    );
    let _ = writeln!(s, "mv $B/out/shim $B/out/containerd-shim-runsc-v1");
    let _ = writeln!(
        s,
        "dpkg-query -W -f '${{Package}}\\t${{Version}}\\n' > $B/out/build-packages.txt"
    );
    let _ = writeln!(
        s,
        "(cd $B/debs && sha256sum *.deb) > $B/out/compat-debs.sha256"
    );
    s
}

/// Tools the script runs besides the recipe's packages (none of them can
/// change the output): `xz` for the debian tarball, `mount` for mmdebstrap's
/// chrooted hook.
const SCRIPT_TOOLS: &[&str] = &["xz-utils", "mount"];

/// The packages mmdebstrap installs into the build chroot: the recipe's
/// pinned list, plus [`SCRIPT_TOOLS`].
pub fn chroot_packages(spec: &GvisorSpec) -> Vec<String> {
    let mut p = spec.build_packages.clone();
    for &tool in SCRIPT_TOOLS {
        if !p.iter().any(|x| split_pin(x).0 == tool) {
            p.push(tool.to_string());
        }
    }
    p
}

/// The stage's cache key: the format, the suite, the chroot's packages, the
/// script (which carries every pin) and the patch.
pub fn stage_key(spec: &GvisorSpec, suite: &str, epoch: u64) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(STAGE_FORMAT.as_bytes());
    field(suite.as_bytes());
    field(chroot_packages(spec).join("\n").as_bytes());
    field(render_script(spec, suite, epoch).as_bytes());
    field(PATCH.as_bytes());
    hex::encode(h.finalize())
}

/// The cache directory of stage `key`.
pub fn stage_dir(root: &Path, key: &str) -> PathBuf {
    root.join("stages").join(format!("gvisor-{key}"))
}

/// `stage.json`: what the stage made and from what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageInfo {
    pub kind: String,
    pub key: String,
    /// `golang-gvisor-gvisor=0.0~20240729.0-4`.
    pub source: String,
    pub compat_suite: String,
    /// Output file name → sha256 and size.
    pub outputs: BTreeMap<String, Part>,
    /// Every package of the build chroot → version.
    pub build_packages: BTreeMap<String, String>,
    /// The compatibility `.deb` files → sha256.
    pub compat_debs: BTreeMap<String, String>,
}

/// A usable stage: its directory and record.
#[derive(Debug, Clone)]
pub struct Stage {
    pub dir: PathBuf,
    pub info: StageInfo,
}

impl Stage {
    /// (path in the root, file in the stage dir) of each binary.
    pub fn binaries(&self) -> Vec<(String, PathBuf)> {
        OUTPUTS
            .iter()
            .map(|(file, logical)| (logical.to_string(), self.dir.join(file)))
            .collect()
    }

    /// `stage.json` as written into the root at [`INFO_PATH`].
    pub fn info_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(&self.info).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Checks the stage in `dir` against its `stage.json`: every output present
/// with the recorded size and sha256.
pub fn verify(dir: &Path, info: &StageInfo) -> Result<(), Damage> {
    let damage = |part: &str, detail: String| Damage {
        part: part.to_string(),
        detail,
    };
    for (file, _) in OUTPUTS {
        let Some(want) = info.outputs.get(*file) else {
            return Err(damage(file, "is not in stage.json".into()));
        };
        let got = hash_file(&dir.join(file))
            .map_err(|e| damage(file, format!("cannot be read ({e})")))?;
        if got.size != want.size {
            return Err(damage(
                file,
                format!("is {} bytes but stage.json says {}", got.size, want.size),
            ));
        }
        if got.sha256 != want.sha256 {
            return Err(damage(
                file,
                format!(
                    "has sha256 {} but stage.json says {}",
                    got.sha256, want.sha256
                ),
            ));
        }
    }
    Ok(())
}

fn read_info(dir: &Path) -> Option<StageInfo> {
    let text = fs::read(dir.join("stage.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// `dpkg-query` lines (`name\tversion`) → map.
fn parse_packages(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// `sha256sum` lines → file → sum.
fn parse_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, f)| (f.to_string(), sum.to_string()))
        .collect()
}

/// Quotes `s` for mmdebstrap's special hooks (split like a shell would).
fn hook_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Whether the stage for `spec` is cached and intact under `root` (so the
/// image build needs no mmdebstrap for it).
pub fn is_cached(root: &Path, spec: &GvisorSpec, suite: &str, epoch: u64) -> bool {
    let dir = stage_dir(root, &stage_key(spec, suite, epoch));
    read_info(&dir).is_some_and(|i| verify(&dir, &i).is_ok())
}

/// Returns the stage for `spec`: from the cache when it is there and intact,
/// else built now with `mmdebstrap` (a damaged entry is said and replaced).
pub fn ensure_stage(
    root: &Path,
    spec: &GvisorSpec,
    suite: &str,
    epoch: u64,
    mmdebstrap: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Stage, ImageError> {
    let key = stage_key(spec, suite, epoch);
    let dir = stage_dir(root, &key);
    if let Some(info) = read_info(&dir) {
        let t = Instant::now();
        match verify(&dir, &info) {
            Ok(()) => {
                progress.phase(&format!(
                    "gvisor stage: cached {} ({}), verified in {:.2}s",
                    &key[..12],
                    dir.display(),
                    t.elapsed().as_secs_f64()
                ));
                return Ok(Stage { dir, info });
            }
            Err(d) => progress.phase(&format!(
                "gvisor stage: the cached {} is damaged ({d}); building it again",
                dir.display()
            )),
        }
    }
    let Some(mmdebstrap) = mmdebstrap else {
        return Err(ImageError::MissingTools {
            tools: vec!["mmdebstrap".into()],
            packages: vec!["mmdebstrap".into()],
        });
    };
    let mode = hostcheck::chroot_mode()?;
    let stages = root.join("stages");
    fs::create_dir_all(&stages)
        .map_err(ImageError::io(format!("creating {}", stages.display())))?;
    let work = tempfile::Builder::new()
        .prefix(".tmp-gvisor-")
        .tempdir_in(&stages)
        .map_err(ImageError::io("creating the gvisor stage's work dir"))?;
    let script_path = work.path().join("stage.sh");
    let patch_path = work.path().join("ironclad.patch");
    let out = work.path().join("out");
    fs::write(&script_path, render_script(spec, suite, epoch))
        .map_err(ImageError::io("writing the gvisor stage script"))?;
    fs::write(&patch_path, PATCH).map_err(ImageError::io("writing the gvisor patch"))?;
    fs::create_dir_all(&out).map_err(ImageError::io("creating the gvisor stage's out dir"))?;
    let log_path = stages.join(format!("gvisor-{key}.log"));
    let started = Instant::now();
    progress.phase(&format!(
        "gvisor stage {} ({}, Go build in a {suite} chroot; minutes) ...",
        &key[..12],
        spec.source
    ));
    let log = fs::File::create(&log_path)
        .map_err(ImageError::io(format!("creating {}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(ImageError::io("duplicating the log handle"))?;
    let mut child = Command::new(mmdebstrap)
        .arg(format!("--mode={}", mode.arg()))
        .arg("--variant=apt")
        .arg(format!("--include={}", chroot_packages(spec).join(",")))
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--customize-hook=mkdir -p \"$1/build\"")
        .arg(format!(
            "--customize-hook=upload {} /build/stage.sh",
            hook_quote(&script_path.to_string_lossy())
        ))
        .arg(format!(
            "--customize-hook=upload {} /build/ironclad.patch",
            hook_quote(&patch_path.to_string_lossy())
        ))
        .arg("--chrooted-customize-hook=sh /build/stage.sh")
        .arg(format!(
            "--customize-hook=sync-out /build/out {}",
            hook_quote(&out.to_string_lossy())
        ))
        .arg(suite)
        .arg("/dev/null")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(ImageError::io("running mmdebstrap (gvisor stage)"))?;
    let status = wait_with_heartbeat(&mut child, &log_path, HEARTBEAT, progress)
        .map_err(ImageError::io("waiting for mmdebstrap (gvisor stage)"))?;
    if !status.success() {
        let text = tail_of(&log_path, 64 * 1024);
        let text = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        return Err(ImageError::ToolFailed {
            tool: format!("mmdebstrap (gvisor stage, full log {})", log_path.display()),
            status: status.to_string(),
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let mut outputs = BTreeMap::new();
    for (file, _) in OUTPUTS {
        let p = out.join(file);
        let part = hash_file(&p).map_err(|e| {
            ImageError::Tree(format!(
                "the gvisor stage made no {file} ({e}); see {}",
                log_path.display()
            ))
        })?;
        outputs.insert(file.to_string(), part);
    }
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let info = StageInfo {
        kind: STAGE_KIND.to_string(),
        key: key.clone(),
        source: spec.source.clone(),
        compat_suite: spec.compat_suite.clone(),
        outputs,
        build_packages: parse_packages(&read("build-packages.txt")),
        compat_debs: parse_sums(&read("compat-debs.sha256")),
    };
    let mut json = serde_json::to_vec_pretty(&info).map_err(|e| ImageError::Tree(e.to_string()))?;
    json.push(b'\n');
    fs::write(out.join("stage.json"), &json).map_err(ImageError::io("writing stage.json"))?;
    // Into place, atomically; a damaged or half-made entry goes first.
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(ImageError::io(format!("removing {}", dir.display())))?;
    }
    fs::rename(&out, &dir).map_err(ImageError::io(format!(
        "moving the gvisor stage to {}",
        dir.display()
    )))?;
    // The log goes with the stage; a failed run's stays beside it.
    let _ = fs::rename(&log_path, dir.join("build.log"));
    progress.phase(&format!(
        "gvisor stage: built {} in {:.1}s: {}",
        &key[..12],
        started.elapsed().as_secs_f64(),
        dir.display()
    ));
    Ok(Stage { dir, info })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GvisorSpec {
        super::super::recipe::Recipe::parse(super::super::recipe::EMBEDDED_TRIXIE, "builtin")
            .unwrap()
            .gvisor
            .expect("the built-in recipe has a gvisor section")
    }

    #[test]
    fn the_built_in_spec_is_valid_and_pinned() {
        let s = spec();
        s.validate().unwrap();
        assert_eq!(s.source_name(), "golang-gvisor-gvisor");
        assert_eq!(s.upstream_version(), "0.0~20240729.0");
        assert_eq!(s.go_bin(), "/usr/lib/go-1.24/bin");
        assert_eq!(s.compat_packages.len(), 8);
        // The Go side is pinned to exact versions.
        for p in &s.build_packages {
            if p.starts_with("golang-") {
                assert!(p.contains('='), "{p} is not pinned");
            }
        }
    }

    #[test]
    fn versions_and_pins() {
        let mut s = spec();
        s.source = "golang-gvisor-gvisor=1:2.0-3+b1".into();
        assert_eq!(s.upstream_version(), "2.0");
        for bad in ["golang-gvisor-gvisor", "x=", "Bad=1.0", "gvisor=1.0;rm"] {
            s.source = bad.into();
            let e = s.validate().unwrap_err();
            assert!(e.contains("gvisor.source"), "{bad}: {e}");
        }
        let mut s = spec();
        s.compat_packages.push("golang-github-foo-dev".into());
        assert!(s.validate().unwrap_err().contains("compatPackages"));
        let mut s = spec();
        s.build_packages.push("gcc 'x'".into());
        assert!(s.validate().unwrap_err().contains("buildPackages"));
        let mut s = spec();
        s.build_packages.retain(|p| !p.starts_with("golang-1."));
        assert!(s.validate().unwrap_err().contains("Go toolchain"));
        let mut s = spec();
        s.source_sha256
            .insert("../x.orig.tar.gz".into(), "0".repeat(64));
        assert!(s.validate().unwrap_err().contains("plain file name"));
        let mut s = spec();
        let first = s.source_sha256.keys().next().unwrap().clone();
        s.source_sha256.insert(first, "xyz".into());
        assert!(s.validate().unwrap_err().contains("sha256"));
        let mut s = spec();
        s.source_sha256.retain(|f, _| !f.contains(".debian.tar."));
        assert!(s.validate().unwrap_err().contains(".debian.tar."));
    }

    #[test]
    fn the_script_carries_every_pin_and_names_no_mirror() {
        let s = spec();
        let script = render_script(&s, "trixie", 1_735_689_600);
        assert!(script.contains(
            "apt-get source -q --download-only --tar-only 'golang-gvisor-gvisor=0.0~20240729.0-4'"
        ));
        for (file, sum) in &s.source_sha256 {
            assert!(script.contains(&format!("{sum}  {file}")), "{file}");
        }
        for p in &s.compat_packages {
            assert!(script.contains(&format!("'{p}'")), "{p}");
        }
        assert!(script.contains("deb-src \\1 trixie main"));
        assert!(script.contains("deb \\1 bookworm\\2 main"));
        assert!(script.contains("-trimpath -buildvcs=false"));
        assert!(
            script.contains("-buildid= -X gvisor.dev/gvisor/runsc/version.version=0.0~20240729.0")
        );
        assert!(script.contains("CGO_ENABLED=0"));
        assert!(script.contains("SOURCE_DATE_EPOCH=1735689600"));
        // Only the mirror mmdebstrap chose: no host name anywhere.
        assert!(!script.contains("http"), "{script}");
        assert!(!script.contains(".org"), "{script}");
    }

    #[test]
    fn the_patch_has_the_four_api_edits_and_the_netns_fix() {
        for needle in [
            "+func (p *linuxPlatform) CopyConsole(ctx context.Context, console console.Console, id, stdin",
            "CopyConsole(ctx, console, p.id, r.Stdin",
            "CopyConsole(ctx, console, e.id, e.stdio.Stdin",
            "+func (s *service) StartShim(ctx context.Context, opts shim.StartOpts)",
            "+\tif err := shim.AdjustOOMScore(cmd.Process.Pid)",
            "+\terr := unix.Access(\"/proc/sys/net/core/dev_weight\", unix.F_OK)",
        ] {
            assert!(PATCH.contains(needle), "{needle}");
        }
        assert!(!PATCH.contains("+\terr := unix.Access(\"/proc/sys/net/core/rmem_default\""));
    }

    #[test]
    fn the_key_follows_every_input() {
        let s = spec();
        let k = stage_key(&s, "trixie", 1);
        assert_eq!(k.len(), 64);
        assert_eq!(k, stage_key(&s, "trixie", 1));
        assert_ne!(k, stage_key(&s, "sid", 1));
        assert_ne!(k, stage_key(&s, "trixie", 2));
        let mut t = s.clone();
        t.source = "golang-gvisor-gvisor=0.0~20240729.0-5".into();
        assert_ne!(k, stage_key(&t, "trixie", 1));
        let mut t = s.clone();
        t.build_packages[0].push('1');
        assert_ne!(k, stage_key(&t, "trixie", 1));
        let mut t = s.clone();
        t.compat_packages.pop();
        assert_ne!(k, stage_key(&t, "trixie", 1));
        let dir = stage_dir(Path::new("/c"), &k);
        assert_eq!(dir, Path::new("/c/stages").join(format!("gvisor-{k}")));
    }

    fn fake_stage(dir: &Path) -> StageInfo {
        let mut outputs = BTreeMap::new();
        for (i, (file, _)) in OUTPUTS.iter().enumerate() {
            fs::write(dir.join(file), vec![i as u8; 1000 + i]).unwrap();
            outputs.insert(file.to_string(), hash_file(&dir.join(file)).unwrap());
        }
        StageInfo {
            kind: STAGE_KIND.into(),
            key: "k".into(),
            source: "s=1".into(),
            compat_suite: "bookworm".into(),
            outputs,
            build_packages: parse_packages("golang-1.24-go\t1.24.4-1\nmake\t4.4.1-2\n"),
            compat_debs: parse_sums("ab  x_1_all.deb\n"),
        }
    }

    #[test]
    fn a_cached_stage_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let info = fake_stage(dir.path());
        assert_eq!(info.build_packages["make"], "4.4.1-2");
        assert_eq!(info.compat_debs["x_1_all.deb"], "ab");
        verify(dir.path(), &info).unwrap();
        let shim = dir.path().join("containerd-shim-runsc-v1");
        let mut b = fs::read(&shim).unwrap();
        b[10] ^= 1;
        fs::write(&shim, &b).unwrap();
        let d = verify(dir.path(), &info).unwrap_err();
        assert_eq!(d.part, "containerd-shim-runsc-v1");
        assert!(d.detail.contains("sha256"), "{d}");
        fs::remove_file(dir.path().join("runsc")).unwrap();
        b[10] ^= 1;
        fs::write(&shim, &b).unwrap();
        let d = verify(dir.path(), &info).unwrap_err();
        assert_eq!(d.part, "runsc");
        assert!(d.detail.contains("cannot be read"), "{d}");
    }

    #[test]
    fn a_cached_stage_is_used_without_mmdebstrap() {
        let root = tempfile::tempdir().unwrap();
        let s = spec();
        let key = stage_key(&s, "trixie", 7);
        let dir = stage_dir(root.path(), &key);
        fs::create_dir_all(&dir).unwrap();
        assert!(!is_cached(root.path(), &s, "trixie", 7));
        let info = fake_stage(&dir);
        fs::write(dir.join("stage.json"), serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(is_cached(root.path(), &s, "trixie", 7));
        let stage = ensure_stage(
            root.path(),
            &s,
            "trixie",
            7,
            None,
            &super::super::build::NoProgress,
        )
        .unwrap();
        assert_eq!(stage.info, info);
        let bins = stage.binaries();
        assert_eq!(bins[0].0, SHIM_PATH);
        assert_eq!(bins[1], (RUNSC_PATH.to_string(), dir.join("runsc")));
        // Damaged and no mmdebstrap: it must be built again, which needs the tool.
        fs::write(dir.join("runsc"), b"x").unwrap();
        let e = ensure_stage(
            root.path(),
            &s,
            "trixie",
            7,
            None,
            &super::super::build::NoProgress,
        )
        .unwrap_err();
        assert!(e.is_missing_dependency(), "{e}");
    }

    #[test]
    fn hook_paths_are_quoted() {
        assert_eq!(hook_quote("/a b/c"), "'/a b/c'");
        assert_eq!(hook_quote("/it's"), "'/it'\\''s'");
    }
}
