//! Accelerator choice: `--accel auto|kvm|tcg`.
//!
//! `auto` picks KVM only when `/dev/kvm` opens read-write *and* the loaded KVM
//! vendor module is `kvm_intel` or `kvm_amd`. Some hosts (this project's build
//! machines among them) expose a `/dev/kvm` backed by `kvm_pvm`, on which a
//! standard guest kernel hangs right after the BIOS; `auto` falls back to TCG
//! there and says why in one line. An explicit `kvm` on such a host is an error
//! rather than a hang. When `/dev/kvm` exists but this user cannot open it,
//! the line says how to get access (the `kvm` group, or a udev rule that gives
//! the device to that group) and that TCG is used meanwhile. The host is read through the [`Probe`] trait so the
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

/// Why `/dev/kvm` did not open read-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmOpenError {
    /// No such device: the kernel (or the VM this runs in) offers no KVM.
    Missing { path: String },
    /// The device exists but this user may not open it.
    Denied {
        path: String,
        /// The device's permission bits.
        mode: u32,
        /// The device's group (name, or the number when it has none).
        group: String,
    },
    /// Anything else (busy, not a device, ...).
    Other { path: String, error: String },
}

impl fmt::Display for KvmOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmOpenError::Missing { path } => write!(f, "{path} does not exist"),
            KvmOpenError::Denied { path, mode, group } => write!(
                f,
                "{path} exists but this user cannot open it (mode {:04o}, group {group})",
                mode & 0o7777
            ),
            KvmOpenError::Other { path, error } => {
                write!(f, "cannot open {path} read-write ({error})")
            }
        }
    }
}

impl KvmOpenError {
    /// How to get access, for [`KvmOpenError::Denied`].
    pub fn fix(&self) -> Option<String> {
        let KvmOpenError::Denied { mode, group, .. } = self else {
            return None;
        };
        Some(if group != "root" && mode & 0o060 == 0o060 {
            format!(
                "add yourself to the {group} group (sudo usermod -aG {group} \"$USER\") and log in again"
            )
        } else {
            "give /dev/kvm to the kvm group with a udev rule and join that group: echo 'KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\", OPTIONS+=\"static_node=kvm\"' | sudo tee /etc/udev/rules.d/99-kvm.rules && sudo udevadm control --reload-rules && sudo udevadm trigger --name-match=kvm && sudo usermod -aG kvm \"$USER\", then log in again".to_string()
        })
    }
}

/// The facts about the host the decision needs.
pub trait Probe {
    /// Opens `/dev/kvm` read-write.
    fn open_kvm(&self) -> Result<(), KvmOpenError>;
    /// Whether a kernel module is loaded (`/sys/module/<name>` exists).
    fn module_loaded(&self, name: &str) -> bool;
}

/// The real host: `/dev/kvm` and `/sys/module` (paths overridable for tests).
#[derive(Debug, Clone)]
pub struct HostProbe {
    pub dev_kvm: std::path::PathBuf,
    pub sys_module: std::path::PathBuf,
    /// The group database, to name `/dev/kvm`'s group.
    pub etc_group: std::path::PathBuf,
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe {
            dev_kvm: "/dev/kvm".into(),
            sys_module: "/sys/module".into(),
            etc_group: "/etc/group".into(),
        }
    }
}

impl Probe for HostProbe {
    fn open_kvm(&self) -> Result<(), KvmOpenError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.dev_kvm.display().to_string();
        let e = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.dev_kvm)
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        Err(match e.kind() {
            std::io::ErrorKind::NotFound => KvmOpenError::Missing { path },
            std::io::ErrorKind::PermissionDenied => match std::fs::metadata(&self.dev_kvm) {
                Ok(m) => KvmOpenError::Denied {
                    mode: m.mode(),
                    group: group_name(&self.etc_group, m.gid()),
                    path,
                },
                Err(_) => KvmOpenError::Other {
                    path,
                    error: e.to_string(),
                },
            },
            _ => KvmOpenError::Other {
                path,
                error: e.to_string(),
            },
        })
    }

    fn module_loaded(&self, name: &str) -> bool {
        Path::new(&self.sys_module).join(name).exists()
    }
}

/// The name of group `gid` in an `/etc/group`-style file, else the number.
fn group_name(etc_group: &Path, gid: u32) -> String {
    let text = std::fs::read_to_string(etc_group).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (id == gid).then(|| name.to_string())
        })
        .next()
        .unwrap_or_else(|| gid.to_string())
}

/// KVM vendor modules a standard guest kernel boots on.
const GOOD_MODULES: [&str; 2] = ["kvm_intel", "kvm_amd"];

/// Why KVM cannot be used, and what would fix it where the user can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub reason: String,
    /// How to get access (only when access is all that is missing).
    pub fix: Option<String>,
}

/// Why KVM is not usable by a standard guest, or `None` when it is.
pub fn kvm_unusable(probe: &dyn Probe) -> Option<Unusable> {
    let opened = probe.open_kvm();
    let good = GOOD_MODULES.iter().any(|m| probe.module_loaded(m));
    let pvm = probe.module_loaded("kvm_pvm");
    match opened {
        Ok(()) if good => None,
        // kvm_pvm: access would not help, so say that rather than how to get it.
        Ok(()) | Err(KvmOpenError::Denied { .. }) if pvm && !good => Some(Unusable {
            reason: format!(
                "/dev/kvm is provided by kvm_pvm, on which a standard guest kernel hangs at boot{}",
                if opened.is_err() {
                    " (this user cannot open /dev/kvm either; access would not help here)"
                } else {
                    ""
                }
            ),
            fix: None,
        }),
        Ok(()) => Some(Unusable {
            reason: "neither kvm_intel nor kvm_amd is loaded".to_string(),
            fix: None,
        }),
        Err(e) => Some(Unusable {
            reason: e.to_string(),
            fix: e.fix(),
        }),
    }
}

/// [`kvm_unusable`] as one line (reason, then the fix if any).
pub fn kvm_unusable_reason(probe: &dyn Probe) -> Option<String> {
    kvm_unusable(probe).map(|u| match u.fix {
        Some(fix) => format!("{}; to use KVM, {fix}", u.reason),
        None => u.reason,
    })
}

/// The `auto` decision: KVM when usable, else TCG with a one-line reason (and,
/// when only access is missing, how to get it; TCG is used meanwhile).
pub fn decide_auto(probe: &dyn Probe) -> (Accel, Option<String>) {
    match kvm_unusable(probe) {
        None => (Accel::Kvm, None),
        Some(Unusable { reason, fix: None }) => {
            (Accel::Tcg, Some(format!("using TCG, not KVM: {reason}")))
        }
        Some(Unusable {
            reason,
            fix: Some(fix),
        }) => (
            Accel::Tcg,
            Some(format!(
                "using TCG meanwhile, not KVM: {reason}; to use KVM, {fix} (see docs/troubleshooting.md)"
            )),
        ),
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
        open: Result<(), KvmOpenError>,
        modules: &'static [&'static str],
    }

    impl Probe for Fake {
        fn open_kvm(&self) -> Result<(), KvmOpenError> {
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
                Err(KvmOpenError::Missing {
                    path: "/dev/kvm".into(),
                })
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

    fn denied(mode: u32, group: &str, modules: &'static [&'static str]) -> Fake {
        Fake {
            open: Err(KvmOpenError::Denied {
                path: "/dev/kvm".into(),
                mode,
                group: group.into(),
            }),
            modules,
        }
    }

    #[test]
    fn denied_access_says_how_to_get_it_and_uses_tcg_meanwhile() {
        // The usual Debian/Ubuntu device: group kvm, 0660; the user is not in it.
        let (accel, why) = decide_auto(&denied(0o20660, "kvm", &["kvm", "kvm_intel"]));
        assert_eq!(accel, Accel::Tcg);
        let why = why.unwrap();
        assert!(why.contains("using TCG meanwhile"), "{why}");
        assert!(why.contains("mode 0660, group kvm"), "{why}");
        assert!(why.contains("sudo usermod -aG kvm \"$USER\""), "{why}");
        assert!(why.contains("log in again"), "{why}");
        assert!(!why.contains("udev"), "{why}");
        assert!(!why.contains('\n'));
        // 0600 root (this project's machines): joining a group is not enough.
        let (accel, why) = decide_auto(&denied(0o20600, "root", &["kvm", "kvm_amd"]));
        assert_eq!(accel, Accel::Tcg);
        let why = why.unwrap();
        assert!(why.contains("mode 0600, group root"), "{why}");
        assert!(why.contains("/etc/udev/rules.d/"), "{why}");
        assert!(why.contains("GROUP=\"kvm\""), "{why}");
        assert!(why.contains("usermod -aG kvm"), "{why}");
        assert!(why.contains("using TCG meanwhile"), "{why}");
        // An explicit --accel kvm fails with the same advice.
        let err = resolve(AccelChoice::Kvm, &denied(0o20660, "kvm", &["kvm_intel"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sudo usermod -aG kvm"), "{err}");
        // A missing device has nothing to fix.
        let (_, why) = decide_auto(&fake(false, &["kvm_intel"]));
        assert!(!why.unwrap().contains("usermod"));
    }

    #[test]
    fn denied_on_pvm_says_access_would_not_help() {
        let (accel, why) = decide_auto(&denied(0o20600, "root", &["kvm", "kvm_pvm"]));
        assert_eq!(accel, Accel::Tcg);
        let why = why.unwrap();
        assert!(why.contains("kvm_pvm"), "{why}");
        assert!(why.contains("would not help"), "{why}");
        assert!(!why.contains("usermod"), "{why}");
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
            etc_group: "/etc/group".into(),
        };
        assert_eq!(decide_auto(&probe), (Accel::Kvm, None));
        let missing = HostProbe {
            dev_kvm: dir.path().join("absent"),
            sys_module: dir.path().to_path_buf(),
            etc_group: "/etc/group".into(),
        };
        assert_eq!(decide_auto(&missing).0, Accel::Tcg);
        assert_eq!(
            missing.open_kvm(),
            Err(KvmOpenError::Missing {
                path: dir.path().join("absent").display().to_string()
            })
        );
    }

    #[test]
    fn group_names_come_from_the_group_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("group");
        std::fs::write(&f, "root:x:0:\nkvm:x:993:dev\nbad\n").unwrap();
        assert_eq!(group_name(&f, 993), "kvm");
        assert_eq!(group_name(&f, 0), "root");
        assert_eq!(group_name(&f, 5), "5");
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
