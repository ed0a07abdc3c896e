//! The Debian baseline VM, built once into `<work>/baseline/` (`root.img`,
//! `vmlinuz`, `initrd.img`, `kernel-version`; delete the directory to
//! rebuild): `mmdebstrap --variant=important` of trixie with systemd,
//! etcd-server, containerd and the kernel, plus a probe unit that prints
//! `bench: etcd healthy t=<uptime>` and `bench: containerd t=<uptime>` on
//! ttyS0 once each answers; the root disk is an ext4 image made with
//! `mkfs.ext4 -d` from the tree. mmdebstrap and mkfs.ext4 are the outside
//! tools this needs; the layout is the one ci/bench has always cached.

use crate::bench::log;
use crate::{BenchError, Result};
use std::path::{Path, PathBuf};

const PACKAGES: &str =
    "systemd,systemd-sysv,udev,etcd-server,containerd,runc,crun,runsc,linux-image-amd64";

/// The probe: when do etcd and containerd first answer?
const PROBE: &str = r#"#!/bin/bash
# ironclad ci/bench probe: when do etcd and containerd first answer?
up() { local u _; read -r u _ </proc/uptime; echo "$u"; }
say() { echo "bench: $1 t=$(up)" >/dev/ttyS0; }
etcd_ok() {
	local r
	exec 3<>/dev/tcp/127.0.0.1/2379 || return 1
	printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
	r=$(timeout 2 cat <&3)
	exec 3>&-
	[[ $r == *'"health":"true"'* ]]
}
say probe
e=0 c=0
while ((!e || !c)); do
	if ((!e)) && etcd_ok 2>/dev/null; then say "etcd healthy"; e=1; fi
	if ((!c)) && timeout 2 ctr version >/dev/null 2>&1; then say containerd; c=1; fi
	sleep 0.1
done
"#;

const PROBE_UNIT: &str = "[Unit]
Description=ironclad bench probe (etcd and containerd answering)
DefaultDependencies=no
After=local-fs.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/bench-probe

[Install]
WantedBy=sysinit.target
";

const PARTS: [&str; 4] = ["root.img", "vmlinuz", "initrd.img", "kernel-version"];

/// The baseline's directory, built if a part is missing.
pub fn ensure(work: &Path) -> Result<PathBuf> {
    let d = work.join("baseline");
    let have = |p: &str| std::fs::metadata(d.join(p)).is_ok_and(|m| m.len() > 0);
    if PARTS[..3].iter().all(|p| have(p)) {
        return Ok(d);
    }
    for tool in ["mmdebstrap", "mkfs.ext4"] {
        if ironclad_host::image::build::find_tool(tool).is_none() {
            return Err(BenchError::MissingTool(format!(
                "{tool} is missing (Debian: {})",
                if tool == "mmdebstrap" {
                    "mmdebstrap"
                } else {
                    "e2fsprogs"
                }
            )));
        }
    }
    log!(
        "building the baseline Debian VM (mmdebstrap, once; cached in {})",
        d.display()
    );
    let io =
        |what: &Path, e: std::io::Error| BenchError::Failed(format!("{}: {e}", what.display()));
    let _ = std::fs::remove_dir_all(&d);
    let out = d.join("out");
    std::fs::create_dir_all(&out).map_err(|e| io(&out, e))?;
    // The hooks may run as a mapped root (mmdebstrap's unshare mode).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| io(&out, e))?;
    let probe = d.join("bench-probe");
    let unit = d.join("bench-probe.service");
    std::fs::write(&probe, PROBE).map_err(|e| io(&probe, e))?;
    std::fs::write(&unit, PROBE_UNIT).map_err(|e| io(&unit, e))?;
    let (o, p, u) = (out.display(), probe.display(), unit.display());
    // The tree is copied without the API file systems mmdebstrap has mounted
    // in it (/proc, /sys, /dev) before mkfs.ext4 -d reads it.
    let hooks = [
        r#"echo baseline >"$1/etc/hostname""#.to_string(),
        r#"printf "127.0.0.1 localhost\n127.0.1.1 baseline\n" >"$1/etc/hosts""#.to_string(),
        r#"printf "/dev/vda / ext4 rw,relatime 0 1\n" >"$1/etc/fstab""#.to_string(),
        format!("upload {p} /usr/local/sbin/bench-probe"),
        r#"chmod 0755 "$1/usr/local/sbin/bench-probe""#.to_string(),
        format!("upload {u} /etc/systemd/system/bench-probe.service"),
        r#"chroot "$1" systemctl enable bench-probe.service"#.to_string(),
        format!(
            r#"cp "$1"/boot/vmlinuz-* {o}/vmlinuz && cp "$1"/boot/initrd.img-* {o}/initrd.img && ls "$1"/usr/lib/modules >{o}/kernel-version"#
        ),
        format!(
            r#"rm -rf {o}/stage && mkdir {o}/stage && tar -C "$1" --one-file-system -cf - . | tar -C {o}/stage -xpf - && mkfs.ext4 -q -F -L root -d {o}/stage {o}/root.img 4G && rm -rf {o}/stage"#
        ),
    ];
    let mut cmd = std::process::Command::new("mmdebstrap");
    cmd.arg("--variant=important")
        .arg(format!("--include={PACKAGES}"));
    for h in &hooks {
        cmd.arg(format!("--customize-hook={h}"));
    }
    cmd.args(["trixie", "/dev/null"]);
    crate::boot::command(
        &mut cmd,
        "mmdebstrap of the baseline VM",
        &d.join("mmdebstrap.log"),
    )?;
    for part in PARTS {
        std::fs::rename(out.join(part), d.join(part)).map_err(|e| io(&out.join(part), e))?;
    }
    let _ = std::fs::remove_dir(&out);
    Ok(d)
}
