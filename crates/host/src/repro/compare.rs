//! What differs between the reporter's side and this one: the image, part by
//! part ([`image`]), and the host (QEMU, accelerator, kernel; [`hosts`]).

use super::bundle::shown;
use crate::image::manifest::Manifest;
use serde::Serialize;

/// One part of the image that is not the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartDiff {
    /// The part: an output file (`vmlinux`, `initramfs`, `rootfs.squashfs`)
    /// or an input (`key`, `recipe`, `machined`, `kernel`, `packages`, ...).
    pub part: String,
    /// What the bundle's manifest says.
    pub bundle: String,
    /// What the image built here says.
    pub here: String,
}

/// Every part of `here` that differs from `bundle`, output files first.
/// The recipe's name is not compared (it is the name inside the recipe, the
/// same bytes give the same name); its sha256 is.
pub fn image(bundle: &Manifest, here: &Manifest) -> Vec<PartDiff> {
    let mut out = Vec::new();
    let mut diff = |part: &str, a: String, b: String| {
        if a != b {
            out.push(PartDiff {
                part: part.to_string(),
                bundle: a,
                here: b,
            });
        }
    };
    let names: std::collections::BTreeSet<&String> =
        bundle.parts.keys().chain(here.parts.keys()).collect();
    // The image's files in the order they boot, then any other.
    let mut names: Vec<&String> = names.into_iter().collect();
    names.sort_by_key(|n| {
        crate::image::cache::PARTS
            .iter()
            .position(|p| p == n)
            .unwrap_or(usize::MAX)
    });
    let part = |m: &Manifest, n: &str| {
        m.parts.get(n).map_or("absent".to_string(), |p| {
            format!("sha256 {} ({} bytes)", p.sha256, p.size)
        })
    };
    for n in names {
        diff(n, part(bundle, n), part(here, n));
    }
    diff("key", bundle.key.clone(), here.key.clone());
    diff(
        "recipe",
        format!("sha256 {}", bundle.recipe.sha256),
        format!("sha256 {}", here.recipe.sha256),
    );
    diff(
        "machined",
        format!("sha256 {}", bundle.machined_sha256),
        format!("sha256 {}", here.machined_sha256),
    );
    diff(
        "kernel",
        bundle.kernel_version.clone(),
        here.kernel_version.clone(),
    );
    diff(
        "sourceDateEpoch",
        bundle.source_date_epoch.to_string(),
        here.source_date_epoch.to_string(),
    );
    let (a, b) = map_diff(&bundle.packages, &here.packages);
    diff("packages", a, b);
    let (a, b) = map_diff(&bundle.sysctls, &here.sysctls);
    diff("sysctls", a, b);
    diff(
        "binaries",
        bundle.binaries.join(" "),
        here.binaries.join(" "),
    );
    diff(
        "modules",
        format!("{:?}", bundle.modules),
        format!("{:?}", here.modules),
    );
    for d in &mut out {
        d.bundle = shown(&d.bundle);
        d.here = shown(&d.here);
    }
    out
}

/// The entries of two maps that differ, each side as `k=v` (`k` absent: `k=-`),
/// at most 10 listed.
fn map_diff(
    a: &std::collections::BTreeMap<String, String>,
    b: &std::collections::BTreeMap<String, String>,
) -> (String, String) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differing: Vec<&String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    let side = |m: &std::collections::BTreeMap<String, String>| {
        let mut s: Vec<String> = differing
            .iter()
            .take(10)
            .map(|k| format!("{k}={}", m.get(*k).map_or("-", String::as_str)))
            .collect();
        if differing.len() > 10 {
            s.push(format!("and {} more", differing.len() - 10));
        }
        s.join(" ")
    };
    (side(a), side(b))
}

/// One row of the host table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    pub what: String,
    /// The reporter's host (from the bundle's `version.json`).
    pub bundle: String,
    /// This host.
    pub here: String,
    pub same: bool,
}

/// The rows compared, as (label, JSON pointers into the version report whose
/// values are joined).
const ROWS: &[(&str, &[&str])] = &[
    ("ironclad", &["/ironclad"]),
    ("commit", &["/commit"]),
    ("machined", &["/machined/sha256"]),
    ("QEMU", &["/qemu/version", "/qemu/error"]),
    ("accelerator", &["/accelerator/auto", "/accelerator/reason"]),
    ("kernel", &["/host/kernel"]),
    ("distribution", &["/host/distribution"]),
    ("arch", &["/host/arch"]),
];

/// The reporter's version report against this host's, row by row. Both are
/// [`crate::version::VersionReport`]s as JSON; the bundle's is untrusted (a
/// field that is missing or not text shows as `-`).
pub fn hosts(bundle: &serde_json::Value, here: &serde_json::Value) -> Vec<HostRow> {
    let cell = |v: &serde_json::Value, ptrs: &[&str]| {
        let parts: Vec<String> = ptrs
            .iter()
            .filter_map(|p| match v.pointer(p) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(shown(s)),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .collect();
        if parts.is_empty() {
            "-".to_string()
        } else {
            parts.join(": ")
        }
    };
    ROWS.iter()
        .map(|(what, ptrs)| {
            let (b, h) = (cell(bundle, ptrs), cell(here, ptrs));
            HostRow {
                what: (*what).to_string(),
                same: b == h,
                bundle: b,
                here: h,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::Part;

    fn manifest() -> Manifest {
        let parts = crate::image::cache::PARTS
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.to_string(),
                    Part {
                        sha256: format!("{i}").repeat(64),
                        size: 100 + i as u64,
                    },
                )
            })
            .collect();
        let mut m = crate::image::testing::manifest(&"a".repeat(64), parts);
        m.packages.insert("runc".into(), "1.1".into());
        m
    }

    #[test]
    fn the_same_manifest_has_no_difference() {
        assert!(image(&manifest(), &manifest()).is_empty());
    }

    #[test]
    fn each_differing_part_is_named() {
        let a = manifest();
        let mut b = manifest();
        b.parts.get_mut("initramfs").unwrap().sha256 = "f".repeat(64);
        let d = image(&a, &b);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].part, "initramfs");
        assert!(d[0].bundle.contains(&"1".repeat(64)), "{d:?}");
        assert!(d[0].here.contains(&"f".repeat(64)), "{d:?}");

        // Size alone, a missing part, and inputs.
        let mut c = manifest();
        c.parts.get_mut("vmlinux").unwrap().size = 1;
        c.parts.remove("rootfs.squashfs");
        c.machined_sha256 = "e".repeat(64);
        c.packages.insert("runc".into(), "1.2".into());
        c.packages.insert("new".into(), "3".into());
        let d = image(&a, &c);
        let parts: Vec<&str> = d.iter().map(|d| d.part.as_str()).collect();
        assert_eq!(
            parts,
            ["vmlinux", "rootfs.squashfs", "machined", "packages"],
            "{d:?}"
        );
        assert_eq!(d[1].here, "absent");
        assert_eq!(d[3].bundle, "new=- runc=1.1");
        assert_eq!(d[3].here, "new=3 runc=1.2");
    }

    #[test]
    fn a_hostile_value_is_shown_without_escapes() {
        let a = manifest();
        let mut b = manifest();
        b.kernel_version = "6.1\u{1b}[2J".into();
        let d = image(&b, &a);
        assert_eq!(d[0].part, "kernel");
        assert_eq!(d[0].bundle, "6.1?[2J");
    }

    #[test]
    fn the_host_table_compares_like_with_like() {
        let here = serde_json::to_value(crate::version::VersionReport::collect("abc")).unwrap();
        let rows = hosts(&here, &here);
        assert!(rows.iter().all(|r| r.same), "{rows:?}");
        assert_eq!(rows[0].what, "ironclad");
        let mut other = here.clone();
        other["host"]["kernel"] = "5.10.0-hostile\u{7}".into();
        other["qemu"] = serde_json::json!({"binary": "qemu", "version": null, "error": "qemu-system-x86_64 is not installed"});
        let rows = hosts(&other, &here);
        let kernel = rows.iter().find(|r| r.what == "kernel").unwrap();
        assert!(!kernel.same);
        assert_eq!(kernel.bundle, "5.10.0-hostile?");
        let qemu = rows.iter().find(|r| r.what == "QEMU").unwrap();
        assert_eq!(qemu.bundle, "qemu-system-x86_64 is not installed");
        // A report that is not one: every cell `-`, nothing panics.
        let rows = hosts(&serde_json::json!([1, 2]), &here);
        assert!(rows.iter().all(|r| r.bundle == "-"));
    }
}
