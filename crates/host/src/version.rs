//! The version report: what a bug report has to say about this ironclad and
//! the host it runs on (`ironclad version`, and the support bundle). Every
//! probe fails soft: a missing QEMU or an unreadable `/etc/os-release` is
//! reported as such, because a report is most needed on a host that is not
//! right.

use crate::image::{BuildOptions, RecipeRef};
use crate::qemu::Accel;
use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// The QEMU binary whose version is reported.
const QEMU: &str = "qemu-system-x86_64";
/// The recipe `create` uses when the cluster file names none.
const DEFAULT_RECIPE: &str = "trixie";

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    /// ironclad's version (Cargo's).
    pub ironclad: String,
    /// The git commit it was built from, or `unknown`.
    pub commit: String,
    /// The API version the node API speaks.
    pub api_version: String,
    pub machined: MachinedReport,
    pub qemu: ToolReport,
    pub accelerator: AccelReport,
    pub host: HostReport,
}

/// The machined that goes into images, and the image it makes.
#[derive(Debug, Clone, Serialize)]
pub struct MachinedReport {
    /// Where it is, when found.
    pub path: Option<String>,
    pub sha256: Option<String>,
    /// The key of the image the default recipe gives with it.
    pub image_key: Option<String>,
    /// The recipe of that key.
    pub recipe: String,
    /// Why a field is missing.
    pub error: Option<String>,
}

/// An external tool: its version line, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct ToolReport {
    pub binary: String,
    pub version: Option<String>,
    pub error: Option<String>,
}

/// What `--accel auto` picks here, and why KVM was passed over.
#[derive(Debug, Clone, Serialize)]
pub struct AccelReport {
    pub auto: Accel,
    pub reason: Option<String>,
}

/// The host: kernel, distribution, architecture.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub kernel: String,
    pub distribution: Option<String>,
    pub arch: String,
}

impl VersionReport {
    /// Collects the report; `commit` is the binary's own (its build script
    /// knows it, the library does not).
    pub fn collect(commit: &str) -> VersionReport {
        let (auto, reason) = Accel::detect();
        VersionReport {
            ironclad: crate::VERSION.to_string(),
            commit: commit.to_string(),
            api_version: crate::API_VERSION.to_string(),
            machined: machined(),
            qemu: tool_version(QEMU, &["--version"]),
            accelerator: AccelReport { auto, reason },
            host: host(Path::new("/etc/os-release")),
        }
    }
}

fn machined() -> MachinedReport {
    let recipe = RecipeRef::Name(DEFAULT_RECIPE.into());
    let mut report = MachinedReport {
        path: None,
        sha256: None,
        image_key: None,
        recipe: DEFAULT_RECIPE.into(),
        error: None,
    };
    match crate::image::build::inputs(&recipe, &BuildOptions::default()) {
        Ok(inputs) => {
            report.path = Some(inputs.machined.display().to_string());
            report.sha256 = Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                &inputs.machined_bytes,
            )));
            report.image_key = Some(inputs.key);
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// The first line `binary args` prints, or why it could not run.
pub fn tool_version(binary: &str, args: &[&str]) -> ToolReport {
    let (version, error) = match Command::new(binary).args(args).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            (text.lines().next().map(|l| l.trim().to_string()), None)
        }
        Ok(out) => (
            None,
            Some(format!("{binary} {}: {}", args.join(" "), out.status)),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (None, Some(format!("{binary} is not installed")))
        }
        Err(e) => (None, Some(format!("cannot run {binary}: {e}"))),
    };
    ToolReport {
        binary: binary.into(),
        version,
        error,
    }
}

fn host(os_release: &Path) -> HostReport {
    let uname = rustix::system::uname();
    HostReport {
        kernel: uname.release().to_string_lossy().into_owned(),
        distribution: std::fs::read_to_string(os_release)
            .ok()
            .and_then(|t| pretty_name(&t)),
        arch: uname.machine().to_string_lossy().into_owned(),
    }
}

/// `PRETTY_NAME` of an os-release file (os-release(5): shell-style
/// assignments, the value optionally quoted).
fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        let v = v.trim();
        let unquoted = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        Some(unquoted.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_name_is_unquoted() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            pretty_name(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("PRETTY_NAME=Plain\n").as_deref(), Some("Plain"));
        assert_eq!(pretty_name("ID=x\n"), None);
    }

    #[test]
    fn a_missing_tool_is_reported_not_fatal() {
        let r = tool_version("ironclad-no-such-tool", &["--version"]);
        assert_eq!(r.version, None);
        assert_eq!(
            r.error.as_deref(),
            Some("ironclad-no-such-tool is not installed")
        );
    }

    #[test]
    fn the_real_host_is_described() {
        let h = host(Path::new("/etc/os-release"));
        assert!(!h.kernel.is_empty() && !h.arch.is_empty(), "{h:?}");
    }
}
