//! Accelerator choice: `--accel auto|kvm|tcg`.
//!
//! `auto` picks KVM only when `/dev/kvm` opens read-write *and* the loaded KVM
//! vendor module is `kvm_intel` or `kvm_amd`. Some hosts (this project's build
//! machines among them) expose a `/dev/kvm` backed by `kvm_pvm`, on which a
//! standard guest kernel hangs right after the BIOS; `auto` falls back to TCG
//! there and says why in one line. An explicit `kvm` on such a host is an error
//! rather than a hang. The host is read through the [`Probe`] trait so the
//! decision is unit-tested without touching the machine.
//!
//! This module does not start QEMU; [`Accel::qemu_name`] is what the command-line
//! builder passes to `-accel`.

use std::fmt;
use std::path::Path;

/// The accelerator QEMU runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's portable binary translator (slow, works everywhere).
    Tcg,
}

impl Accel {
    /// The name QEMU's `-accel` option takes.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// `auto` on the real host: the accelerator, and a one-line reason when KVM
    /// was passed over.
    pub fn detect() -> (Accel, Option<String>) {
        decide_auto(&HostProbe::default())
    }

    /// Resolves a user's choice on the real host. See [`resolve`].
    pub fn resolve(choice: AccelChoice) -> Result<(Accel, Option<String>), AccelError> {
        resolve(choice, &HostProbe::default())
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_name())
    }
}

/// What the user asked for with `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM if it is usable by a standard guest kernel, else TCG.
    #[default]
    Auto,
    /// KVM; an error when the host cannot run a standard guest on it.
    Kvm,
    /// TCG, always.
    Tcg,
}

/// Why KVM cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccelError {
    #[error(
        "--accel kvm was requested but KVM is not usable here: {reason}; use --accel tcg or auto"
    )]
    KvmUnusable { reason: String },
}

/// The facts about the host the decision needs.
pub trait Probe {
    /// Opens `/dev/kvm` read-write; `Err` carries a short description.
    fn open_kvm(&self) -> Result<(), String>;
    /// Whether a kernel module is loaded (`/sys/module/<name>` exists).
    fn module_loaded(&self, name: &str) -> bool;
}

/// The real host: `/dev/kvm` and `/sys/module` (paths overridable for tests).
#[derive(Debug, Clone)]
pub struct HostProbe {
    pub dev_kvm: std::path::PathBuf,
    pub sys_module: std::path::PathBuf,
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe {
            dev_kvm: "/dev/kvm".into(),
            sys_module: "/sys/module".into(),
        }
    }
}

impl Probe for HostProbe {
    fn open_kvm(&self) -> Result<(), String> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.dev_kvm)
            .map(drop)
            .map_err(|e| format!("cannot open {} read-write ({e})", self.dev_kvm.display()))
    }

    fn module_loaded(&self, name: &str) -> bool {
        Path::new(&self.sys_module).join(name).exists()
    }
}

/// KVM vendor modules a standard guest kernel boots on.
const GOOD_MODULES: [&str; 2] = ["kvm_intel", "kvm_amd"];

/// Why KVM is not usable by a standard guest, or `None` when it is.
pub fn kvm_unusable_reason(probe: &dyn Probe) -> Option<String> {
    if let Err(e) = probe.open_kvm() {
        return Some(e);
    }
    if GOOD_MODULES.iter().any(|m| probe.module_loaded(m)) {
        return None;
    }
    if probe.module_loaded("kvm_pvm") {
        Some(
            "/dev/kvm is provided by kvm_pvm, on which a standard guest kernel hangs at boot"
                .to_string(),
        )
    } else {
        Some("neither kvm_intel nor kvm_amd is loaded".to_string())
    }
}

/// The `auto` decision: KVM when usable, else TCG with a one-line reason.
pub fn decide_auto(probe: &dyn Probe) -> (Accel, Option<String>) {
    match kvm_unusable_reason(probe) {
        None => (Accel::Kvm, None),
        Some(why) => (Accel::Tcg, Some(format!("using TCG, not KVM: {why}"))),
    }
}

/// Resolves `--accel`: `tcg` always works, `kvm` fails on an unusable host,
/// `auto` is [`decide_auto`].
pub fn resolve(
    choice: AccelChoice,
    probe: &dyn Probe,
) -> Result<(Accel, Option<String>), AccelError> {
    match choice {
        AccelChoice::Tcg => Ok((Accel::Tcg, None)),
        AccelChoice::Auto => Ok(decide_auto(probe)),
        AccelChoice::Kvm => match kvm_unusable_reason(probe) {
            None => Ok((Accel::Kvm, None)),
            Some(reason) => Err(AccelError::KvmUnusable { reason }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        open: Result<(), String>,
        modules: &'static [&'static str],
    }

    impl Probe for Fake {
        fn open_kvm(&self) -> Result<(), String> {
            self.open.clone()
        }
        fn module_loaded(&self, name: &str) -> bool {
            self.modules.contains(&name)
        }
    }

    fn fake(open: bool, modules: &'static [&'static str]) -> Fake {
        Fake {
            open: if open {
                Ok(())
            } else {
                Err("cannot open /dev/kvm read-write (No such file or directory)".into())
            },
            modules,
        }
    }

    #[test]
    fn auto_picks_kvm_with_a_vendor_module() {
        assert_eq!(
            decide_auto(&fake(true, &["kvm", "kvm_intel"])),
            (Accel::Kvm, None)
        );
        assert_eq!(
            decide_auto(&fake(true, &["kvm", "kvm_amd"])),
            (Accel::Kvm, None)
        );
    }

    #[test]
    fn auto_falls_back_on_pvm() {
        let (accel, why) = decide_auto(&fake(true, &["kvm", "kvm_pvm"]));
        assert_eq!(accel, Accel::Tcg);
        let why = why.unwrap();
        assert!(why.contains("kvm_pvm"), "{why}");
        assert!(!why.contains('\n'));
    }

    #[test]
    fn auto_falls_back_without_dev_kvm_or_module() {
        let (accel, why) = decide_auto(&fake(false, &["kvm_intel"]));
        assert_eq!(accel, Accel::Tcg);
        assert!(why.unwrap().contains("/dev/kvm"));
        let (accel, why) = decide_auto(&fake(true, &["kvm"]));
        assert_eq!(accel, Accel::Tcg);
        assert!(why.unwrap().contains("neither kvm_intel nor kvm_amd"));
    }

    #[test]
    fn explicit_choices() {
        let pvm = fake(true, &["kvm", "kvm_pvm"]);
        assert_eq!(resolve(AccelChoice::Tcg, &pvm), Ok((Accel::Tcg, None)));
        let err = resolve(AccelChoice::Kvm, &pvm).unwrap_err();
        assert!(err.to_string().contains("kvm_pvm"), "{err}");
        let good = fake(true, &["kvm_amd"]);
        assert_eq!(resolve(AccelChoice::Kvm, &good), Ok((Accel::Kvm, None)));
    }

    #[test]
    fn host_probe_reads_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kvm_amd")).unwrap();
        let dev = dir.path().join("kvm");
        std::fs::write(&dev, b"").unwrap();
        let probe = HostProbe {
            dev_kvm: dev,
            sys_module: dir.path().to_path_buf(),
        };
        assert_eq!(decide_auto(&probe), (Accel::Kvm, None));
        let missing = HostProbe {
            dev_kvm: dir.path().join("absent"),
            sys_module: dir.path().to_path_buf(),
        };
        assert_eq!(decide_auto(&missing).0, Accel::Tcg);
    }

    /// The real probe on this host. The project's build machines have
    /// `kvm_pvm`; elsewhere the assertion adapts to what the host has.
    #[test]
    fn real_host_probe() {
        let (accel, why) = Accel::detect();
        let sys = Path::new("/sys/module");
        if sys.join("kvm_pvm").exists() {
            assert_eq!(accel, Accel::Tcg);
            assert!(why.unwrap().contains("kvm_pvm"));
        } else if accel == Accel::Tcg {
            assert!(why.is_some());
        }
    }
}
