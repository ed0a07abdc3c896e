//! Host-checkable facts printed on the serial console
//! (`machined: fact root=/dev/vda fstype=squashfs ro`,
//! `machined: fact state-disk formatted=true boot=1`), the boot counter kept
//! on the state disk, and the kernel log reader behind `GET /v1/dmesg`.
//!
//! Facts are read back from the kernel (`/proc/self/mounts`), never assumed.
//! Owns no policy: stage 2 and the controller decide when to call these.

use ironclad_contract::console::Fact;
use std::io::Read;
use std::path::Path;

/// The boot counter on the state disk (relative to the node root).
pub const BOOT_COUNT: &str = "var/lib/ironclad/boot-count";

/// The `/` entry of a `/proc/self/mounts` text: `(device, fstype, read_only)`.
/// The last `/` line wins (the one mounted over the others).
pub fn root_mount(mounts: &str) -> Option<(String, String, bool)> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, target, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (target == "/").then(|| {
                let ro = opts.split(',').any(|o| o == "ro");
                (dev.to_string(), fstype.to_string(), ro)
            })
        })
        .next_back()
}

/// The root fact line, from a `/proc/self/mounts` text.
pub fn root_fact(mounts: &str) -> String {
    Fact::Root {
        mount: root_mount(mounts),
    }
    .to_string()
}

/// The state-disk fact line.
pub fn state_fact(formatted: bool, boot: u64) -> String {
    Fact::StateDisk { formatted, boot }.to_string()
}

/// Increments the boot counter under `root` (a missing or unreadable counter
/// counts as 0) and returns the new value. Written atomically.
pub fn bump_boot_count(root: &Path) -> std::io::Result<u64> {
    let path = root.join(BOOT_COUNT);
    let old = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let new = old.saturating_add(1);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::fsutil::write_public(&path, format!("{new}\n").as_bytes())?;
    Ok(new)
}

/// One `/dev/kmsg` record: `(microseconds since boot, message)`.
/// Format: `prio,seq,usec,flags[,...];message` (continuation lines, which start
/// with a space, are dropped by the caller). Bad records give `None`.
pub fn parse_kmsg(record: &str) -> Option<(u64, String)> {
    let (head, msg) = record.split_once(';')?;
    let mut f = head.split(',');
    let _prio = f.next()?;
    let _seq = f.next()?;
    let usec = f.next()?.parse::<u64>().ok()?;
    let msg = msg.lines().next().unwrap_or("");
    Some((usec, msg.to_string()))
}

/// Formats a kernel message like dmesg does: `[   1.234567] message`.
pub fn format_kmsg(usec: u64, msg: &str) -> String {
    format!("[{:5}.{:06}] {msg}", usec / 1_000_000, usec % 1_000_000)
}

/// Reads the whole kernel ring from a `/dev/kmsg`-like device, non-blocking:
/// every record present now, oldest first, as `(usec since boot, message)`.
/// PID 1 runs as root, so `dmesg_restrict` does not apply.
pub fn read_kmsg(path: &Path) -> std::io::Result<Vec<(u64, String)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let mut out = Vec::new();
    // One record per read(2); a record is at most ~8 KiB.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if let Some(rec) = parse_kmsg(&text) {
                    out.push(rec);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // Records overwritten while reading: continue with the next one.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_fact_reads_the_last_root_line() {
        let m =
            "rootfs / rootfs rw 0 0\n/dev/vda / squashfs ro,relatime 0 0\nproc /proc proc rw 0 0\n";
        assert_eq!(
            root_fact(m),
            "machined: fact root=/dev/vda fstype=squashfs ro"
        );
        assert_eq!(
            root_mount("/dev/vdb / ext4 rw,noatime 0 0\n"),
            Some(("/dev/vdb".into(), "ext4".into(), false))
        );
        assert_eq!(root_fact("garbage\n\n"), "machined: fact root=unknown");
    }

    #[test]
    fn boot_counter_counts_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(bump_boot_count(dir.path()).unwrap(), 1);
        assert_eq!(bump_boot_count(dir.path()).unwrap(), 2);
        std::fs::write(dir.path().join(BOOT_COUNT), "not a number").unwrap();
        assert_eq!(bump_boot_count(dir.path()).unwrap(), 1);
        assert_eq!(
            state_fact(false, 2),
            "machined: fact state-disk formatted=false boot=2"
        );
    }

    #[test]
    fn kmsg_records() {
        assert_eq!(
            parse_kmsg("6,339,5140900,-;NET: Registered protocol family 10\n"),
            Some((5_140_900, "NET: Registered protocol family 10".into()))
        );
        assert_eq!(
            parse_kmsg("6,340,5140901,-,caller=T1;a\n SUBSYSTEM=net\n"),
            Some((5_140_901, "a".into()))
        );
        assert_eq!(parse_kmsg("no separator"), None);
        assert_eq!(parse_kmsg("6,1,notanumber,-;x"), None);
        assert_eq!(format_kmsg(1_234_567, "hi"), "[    1.234567] hi");
    }

    #[test]
    fn reading_a_plain_file_gives_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kmsg");
        std::fs::write(&p, "6,1,10,-;hello\n").unwrap();
        assert_eq!(read_kmsg(&p).unwrap(), vec![(10, "hello".to_string())]);
        assert!(read_kmsg(&dir.path().join("missing")).is_err());
    }
}
