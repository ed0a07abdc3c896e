//! Who may have written what the image build reads: a recipe file given by
//! path and the image cache root are used only when they are owned by the
//! effective user or by root, and are not writable by group or others.
//! Otherwise someone else could change the image a user boots.
//!
//! Pure checks over an owner and a mode ([`check_owner_mode`]) plus the
//! effective uid; the callers (`recipe`, `cache`) turn a refusal into their own
//! error with the fix for their case. This module does not open files.

use std::os::unix::fs::MetadataExt;

/// Why a file or directory is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// Owned by someone who is neither the effective user nor root.
    Owner { uid: u32, euid: u32 },
    /// Writable by group and/or others (the permission bits, e.g. `0o664`).
    Writable { mode: u32 },
}

impl Untrusted {
    /// Whether the fix is a chmod (else a chown or another file).
    pub fn is_mode(&self) -> bool {
        matches!(self, Untrusted::Writable { .. })
    }
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untrusted::Owner { uid, euid } => {
                write!(f, "owned by uid {uid}, not by you (uid {euid}) or root")
            }
            Untrusted::Writable { mode } => {
                let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                    (true, true) => "group and others",
                    (true, false) => "group",
                    _ => "others",
                };
                write!(f, "writable by {who} (mode {:04o})", mode & 0o7777)
            }
        }
    }
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The rule: owner `uid` is `euid` or root (0), and `mode` has neither the
/// group nor the other write bit.
pub fn check_owner_mode(uid: u32, mode: u32, euid: u32) -> Result<(), Untrusted> {
    if uid != euid && uid != 0 {
        return Err(Untrusted::Owner { uid, euid });
    }
    if mode & 0o022 != 0 {
        return Err(Untrusted::Writable { mode });
    }
    Ok(())
}

/// [`check_owner_mode`] on a file's metadata, for this process.
pub fn check(meta: &std::fs::Metadata) -> Result<(), Untrusted> {
    check_owner_mode(meta.uid(), meta.mode(), euid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_mode_rules() {
        // Yours or root's, not writable by group or others: fine.
        assert_eq!(check_owner_mode(1000, 0o100644, 1000), Ok(()));
        assert_eq!(check_owner_mode(1000, 0o040700, 1000), Ok(()));
        assert_eq!(check_owner_mode(0, 0o100644, 1000), Ok(()));
        assert_eq!(check_owner_mode(0, 0o040755, 0), Ok(()));
        // Someone else's.
        assert_eq!(
            check_owner_mode(1001, 0o100600, 1000),
            Err(Untrusted::Owner {
                uid: 1001,
                euid: 1000
            })
        );
        assert_eq!(
            check_owner_mode(1000, 0o100644, 0),
            Err(Untrusted::Owner { uid: 1000, euid: 0 })
        );
        // Writable by group or others, even when it is yours or root's.
        for mode in [0o100664, 0o100646, 0o040777, 0o041777, 0o040770] {
            let e = check_owner_mode(1000, mode, 1000).unwrap_err();
            assert!(e.is_mode(), "{mode:o}");
            assert!(check_owner_mode(0, mode, 1000).is_err(), "{mode:o}");
        }
    }

    #[test]
    fn messages_say_who_can_write() {
        assert_eq!(
            Untrusted::Writable { mode: 0o100664 }.to_string(),
            "writable by group (mode 0664)"
        );
        assert_eq!(
            Untrusted::Writable { mode: 0o041777 }.to_string(),
            "writable by group and others (mode 1777)"
        );
        assert_eq!(
            Untrusted::Writable { mode: 0o100606 }.to_string(),
            "writable by others (mode 0606)"
        );
        assert!(
            Untrusted::Owner { uid: 7, euid: 8 }
                .to_string()
                .contains("uid 7")
        );
    }

    #[test]
    fn real_files_are_checked_by_their_metadata() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check(&std::fs::metadata(&f).unwrap()), Ok(()));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(check(&std::fs::metadata(&f).unwrap()).is_err());
    }
}
