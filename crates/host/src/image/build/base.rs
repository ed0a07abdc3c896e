//! The base tree: mmdebstrap writes the recipe's suite and packages to a
//! tarball cached by suite, variant and packages, and the build unpacks only
//! what it reads from it (`usr/` without `usr/share`, `boot/`, the dpkg
//! status). Nothing here writes into the image.
//!
//! mmdebstrap says nothing for one to two minutes; its output goes to a log
//! file beside the tarball, and while it runs a heartbeat every
//! [`super::HEARTBEAT`] reports the time so far and the last line of that log
//! (read from its end, so nothing of it is held in memory).

use super::{BuildOptions, HEARTBEAT, Progress, phase};
use crate::image::ImageError;
use crate::image::hostcheck;
use crate::image::recipe::LoadedRecipe;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How much of the log's end is read for a heartbeat or a failure's tail.
const TAIL_BYTES: u64 = 64 * 1024;
/// The longest log line a heartbeat carries (in characters).
const HEARTBEAT_LINE_CHARS: usize = 100;

/// Makes the base tarball at `tar_path` with mmdebstrap, unless it is cached
/// and no refresh was asked for.
pub(super) fn ensure_base(
    recipe: &LoadedRecipe,
    tar_path: &Path,
    mmdebstrap: Option<&Path>,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    if tar_path.is_file() && !opts.refresh_base {
        progress.phase(&format!(
            "mmdebstrap: base tree cached ({})",
            tar_path.display()
        ));
        return Ok(());
    }
    let Some(mmdebstrap) = mmdebstrap else {
        return Err(ImageError::MissingTools {
            tools: vec!["mmdebstrap".into()],
            packages: vec!["mmdebstrap".into()],
        });
    };
    // The mode is ironclad's choice, not mmdebstrap's guess: root, or a user
    // namespace for an ordinary user, or an error naming the fix.
    let mode = hostcheck::chroot_mode()?;
    progress.phase(&format!("mmdebstrap: mode {}", mode.arg()));
    let r = &recipe.recipe;
    let dir = tar_path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(ImageError::io(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(".partial-{}.tar", std::process::id()));
    let log_path = tar_path.with_extension("log");
    phase(progress, "mmdebstrap", || {
        let log = fs::File::create(&log_path)
            .map_err(ImageError::io(format!("creating {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(ImageError::io("duplicating the log handle"))?;
        // No mirror argument: mmdebstrap uses its (and the host's) default.
        let mut child = Command::new(mmdebstrap)
            .arg(format!("--mode={}", mode.arg()))
            .arg(format!("--variant={}", r.variant))
            .arg(format!("--include={}", r.packages.join(",")))
            .arg("--skip=output/dev")
            .arg("--dpkgopt=path-exclude=/usr/share/man/*")
            .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
            .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
            .arg("--dpkgopt=path-exclude=/usr/share/info/*")
            .arg(&r.suite)
            .arg(&tmp)
            .env("SOURCE_DATE_EPOCH", r.source_date_epoch.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(ImageError::io("running mmdebstrap"))?;
        let status = wait_with_heartbeat(&mut child, &log_path, HEARTBEAT, progress)
            .map_err(ImageError::io("waiting for mmdebstrap"))?;
        if !status.success() {
            let _ = fs::remove_file(&tmp);
            let text = tail_of(&log_path, TAIL_BYTES);
            let text = String::from_utf8_lossy(&text);
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(ImageError::ToolFailed {
                tool: "mmdebstrap".into(),
                status: status.to_string(),
                log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            });
        }
        fs::rename(&tmp, tar_path)
            .map_err(ImageError::io(format!("moving {}", tar_path.display())))?;
        Ok(((), format!("{} {} packages", r.suite, r.packages.len())))
    })
}

/// Waits for `child`, reporting `every` so often the time so far and the
/// last line of its log.
pub(crate) fn wait_with_heartbeat(
    child: &mut Child,
    log: &Path,
    every: Duration,
    progress: &dyn Progress,
) -> std::io::Result<ExitStatus> {
    let t0 = Instant::now();
    let mut next = t0 + every;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= next {
            next += every;
            let last = last_line(&tail_of(log, TAIL_BYTES));
            progress.heartbeat(&heartbeat_line(t0.elapsed(), last.as_deref()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `mmdebstrap ... (42 s) <last line>`: the step's start line, the time so
/// far, and what it last said.
fn heartbeat_line(elapsed: Duration, last: Option<&str>) -> String {
    match last {
        Some(l) => format!("mmdebstrap ... ({} s) {l}", elapsed.as_secs()),
        None => format!("mmdebstrap ... ({} s)", elapsed.as_secs()),
    }
}

/// The last `n` bytes of the file at `path` (fewer when it is shorter;
/// nothing when it cannot be read).
pub(crate) fn tail_of(path: &Path, n: u64) -> Vec<u8> {
    let Ok(mut f) = fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(n))).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::with_capacity(len.min(n) as usize);
    let _ = f.take(n).read_to_end(&mut buf);
    buf
}

/// The last line of `log` with something printable in it, as it would show
/// on a terminal (after its last carriage return), escape sequences and
/// other control characters dropped, cut to [`HEARTBEAT_LINE_CHARS`].
fn last_line(log: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(log);
    text.split('\n').rev().find_map(|line| {
        let clean = line
            .rsplit('\r')
            .map(printable)
            .find(|seg| !seg.trim().is_empty())?;
        let clean = clean.trim();
        if clean.is_empty() {
            return None;
        }
        Some(match clean.char_indices().nth(HEARTBEAT_LINE_CHARS) {
            Some((cut, _)) => format!("{}...", &clean[..cut]),
            None => clean.to_string(),
        })
    })
}

/// `s` without ANSI escape sequences (`ESC [ ... final`, `ESC x`) and other
/// control characters.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                // Parameters and intermediates up to the final byte.
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

fn wanted_from_base(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    (s.starts_with("usr/") && !s.starts_with("usr/share/"))
        || s == "usr"
        || s.starts_with("boot/")
        || ["bin", "sbin", "lib", "lib64"].contains(&s.as_ref())
        || s == "var/lib/dpkg/status"
}

fn strip_dot(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect()
}

/// Unpacks the parts of the base tarball the build reads. Device nodes are
/// skipped (so this works without root).
pub(super) fn extract_base(tar_path: &Path, dest: &Path) -> Result<usize, ImageError> {
    let f = fs::File::open(tar_path)
        .map_err(ImageError::io(format!("opening {}", tar_path.display())))?;
    let mut a = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, f));
    a.set_preserve_mtime(false);
    fs::create_dir_all(dest).map_err(ImageError::io(format!("creating {}", dest.display())))?;
    let ctx = || format!("unpacking {}", tar_path.display());
    let mut n = 0;
    for entry in a.entries().map_err(ImageError::io(ctx()))? {
        let mut entry = entry.map_err(ImageError::io(ctx()))?;
        let ty = entry.header().entry_type();
        if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
            continue;
        }
        let rel = strip_dot(&entry.path().map_err(ImageError::io(ctx()))?);
        if !wanted_from_base(&rel) {
            continue;
        }
        if ty.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(ImageError::io(ctx()))?
                .map(|t| strip_dot(&t));
            if !target.as_deref().is_some_and(wanted_from_base) {
                continue;
            }
        }
        entry.unpack_in(dest).map_err(ImageError::io(format!(
            "unpacking {} from the base tree",
            rel.display()
        )))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_carries_the_last_printable_line() {
        let log = b"I: running apt-get update...\nI: downloading packages...\n\n  \n";
        assert_eq!(last_line(log).unwrap(), "I: downloading packages...");
        // A line rewritten with carriage returns shows its last text; escape
        // bytes and other control characters are dropped.
        let log = b"I: a\nProgress: 10%\rProgress: 55%\r\n\x1b[0m\n";
        assert_eq!(last_line(log).unwrap(), "Progress: 55%");
        assert_eq!(last_line(b"I: \x1b[1mbold\x1b[0m").unwrap(), "I: bold");
        assert_eq!(last_line(b""), None);
        assert_eq!(last_line(b"\n \r\n\t\n"), None);
        // Long lines are cut on a character boundary.
        let long = "\u{e9}".repeat(300);
        let got = last_line(long.as_bytes()).unwrap();
        assert_eq!(got.chars().count(), HEARTBEAT_LINE_CHARS + 3);
        assert!(got.ends_with("..."));
        assert_eq!(
            heartbeat_line(Duration::from_millis(42_900), Some("I: extracting")),
            "mmdebstrap ... (42 s) I: extracting"
        );
        assert_eq!(
            heartbeat_line(Duration::from_secs(10), None),
            "mmdebstrap ... (10 s)"
        );
    }

    #[test]
    fn only_the_end_of_the_log_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("base.log");
        let mut text = "I: early line\n".repeat(20_000);
        text.push_str("I: the last one\n");
        fs::write(&log, &text).unwrap();
        let tail = tail_of(&log, TAIL_BYTES);
        assert_eq!(tail.len() as u64, TAIL_BYTES);
        assert!(text.as_bytes().ends_with(&tail));
        assert_eq!(last_line(&tail).unwrap(), "I: the last one");
        assert!(tail_of(&dir.path().join("absent"), TAIL_BYTES).is_empty());
    }

    #[test]
    fn a_long_step_beats_while_it_runs() {
        // A stand-in for mmdebstrap that writes to its log and runs for
        // several heartbeats: each carries the time and its last line.
        struct Rec(std::sync::Mutex<Vec<String>>);
        impl Progress for Rec {
            fn phase(&self, m: &str) {
                self.0.lock().unwrap().push(format!("phase {m}"));
            }
            fn heartbeat(&self, m: &str) {
                self.0.lock().unwrap().push(format!("beat {m}"));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("base.log");
        let out = fs::File::create(&log).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("echo 'I: downloading'; sleep 1.2")
            .stdout(out)
            .spawn()
            .unwrap();
        let rec = Rec(Default::default());
        let every = Duration::from_millis(300);
        let status = wait_with_heartbeat(&mut child, &log, every, &rec).unwrap();
        assert!(status.success());
        let seen = rec.0.into_inner().unwrap();
        assert!((2..=4).contains(&seen.len()), "{seen:?}");
        for (i, beat) in seen.iter().enumerate() {
            assert!(beat.starts_with("beat mmdebstrap ... ("), "{seen:?}");
            assert!(beat.ends_with(" s) I: downloading"), "{i}: {seen:?}");
        }
    }

    #[test]
    fn base_filter_keeps_only_what_the_build_reads() {
        for keep in [
            "usr/bin/etcd",
            "usr",
            "lib64",
            "boot/vmlinuz-6.12",
            "var/lib/dpkg/status",
        ] {
            assert!(wanted_from_base(Path::new(keep)), "{keep}");
        }
        for drop in ["usr/share/doc/x", "etc/passwd", "var/cache/apt/x", "root"] {
            assert!(!wanted_from_base(Path::new(drop)), "{drop}");
        }
        assert_eq!(strip_dot(Path::new("./usr/bin")), PathBuf::from("usr/bin"));
    }
}
