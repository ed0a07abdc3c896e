//! The initramfs: a deterministic newc (`070701`) cpio writer, the lz4
//! "legacy" framing the kernel unpacks an initramfs from ([`lz4_legacy`]; not
//! gzip, whose inflate is slow under TCG), and a small reader of both used by
//! tests.
//!
//! Same entries in, same bytes out: entries are sorted by path, inode numbers
//! are assigned in that order, and every entry is owned by root with one
//! fixed timestamp. What goes into the archive (machined as `/init`, its
//! libraries, the stage-1 and early modules) is decided by `build` following
//! `docs/image-layout.md`.

use std::collections::BTreeMap;

/// A problem writing or reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("invalid archive path {0:?}")]
    BadPath(String),
    #[error("{0:?} is added twice with different content")]
    Conflict(String),
    #[error("archive entry {0:?} is too large for newc")]
    TooLarge(String),
    #[error("malformed cpio archive at byte {offset}: {message}")]
    Malformed { offset: usize, message: String },
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character device node (major, minor), e.g. `/dev/console`.
    CharDev(u32, u32),
}

/// One archive entry: kind and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub perm: u32,
}

/// An archive being assembled. Paths are relative (`lib/modules/x.ko`); parent
/// directories are added automatically with mode 0755.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn clean(path: &str) -> Result<String, CpioError> {
    let p = path.trim_start_matches('/');
    if p.is_empty()
        || p.ends_with('/')
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(CpioError::BadPath(path.to_string()));
    }
    Ok(p.to_string())
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    fn insert(&mut self, path: &str, entry: Entry) -> Result<(), CpioError> {
        let p = clean(path)?;
        let mut parent = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            let dir = Entry {
                kind: EntryKind::Dir,
                perm: 0o755,
            };
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent.clone(), dir);
                }
                Some(e) if e.kind == EntryKind::Dir => {}
                Some(_) => return Err(CpioError::Conflict(parent)),
            }
        }
        match self.entries.get(&p) {
            Some(old)
                if *old != entry
                    && !(old.kind == EntryKind::Dir && entry.kind == EntryKind::Dir) =>
            {
                Err(CpioError::Conflict(p))
            }
            _ => {
                self.entries.insert(p, entry);
                Ok(())
            }
        }
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::Dir,
                perm,
            },
        )
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, perm: u32) -> Result<(), CpioError> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::File(data),
                perm,
            },
        )
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::Symlink(target.to_string()),
                perm: 0o777,
            },
        )
    }

    pub fn char_dev(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        perm: u32,
    ) -> Result<(), CpioError> {
        self.insert(
            path,
            Entry {
                kind: EntryKind::CharDev(major, minor),
                perm,
            },
        )
    }

    /// The uncompressed newc archive, every timestamp set to `mtime`.
    pub fn to_newc(&self, mtime: u32) -> Result<Vec<u8>, CpioError> {
        let mut out = Vec::new();
        for (ino, (path, e)) in (1u32..).zip(&self.entries) {
            let (type_bits, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match &e.kind {
                EntryKind::Dir => (0o040000, &[], 2, (0, 0)),
                EntryKind::File(d) => (0o100000, d, 1, (0, 0)),
                EntryKind::Symlink(t) => (0o120000, t.as_bytes(), 1, (0, 0)),
                EntryKind::CharDev(ma, mi) => (0o020000, &[], 1, (*ma, *mi)),
            };
            let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(path.clone()))?;
            let mode = type_bits | (e.perm & 0o7777);
            write_header(&mut out, ino, mode, nlink, mtime, size, rdev, path);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        write_header(&mut out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!");
        Ok(out)
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[allow(clippy::too_many_arguments)]
fn write_header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) {
    let namesize = name.len() as u32 + 1;
    let fields = [
        ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev.0, rdev.1, namesize, 0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// The magic number that starts an lz4 legacy stream (`lz4 -l`).
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// The uncompressed size of every block but the last in an lz4 legacy
/// stream: the kernel's `unlz4` decompresses each block into a buffer of
/// exactly this size.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// `data` in lz4's legacy framing, which the kernel's initramfs unpacker
/// reads (`CONFIG_RD_LZ4`): the magic, then per 8 MiB of input its compressed
/// size (u32, little endian) and one LZ4 block. Deterministic: the same bytes
/// in give the same bytes out.
pub fn lz4_legacy(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 16);
    out.extend_from_slice(&LZ4_LEGACY_MAGIC.to_le_bytes());
    for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
        let block = lz4_flex::block::compress(chunk);
        // A block of at most 8 MiB compresses to well under 4 GiB.
        out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// Reverses [`lz4_legacy`]: the uncompressed bytes of an lz4 legacy stream.
pub fn unlz4_legacy(buf: &[u8]) -> Result<Vec<u8>, CpioError> {
    let bad = |offset: usize, message: String| CpioError::Malformed { offset, message };
    let word = |off: usize| -> Option<u32> {
        buf.get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0) != Some(LZ4_LEGACY_MAGIC) {
        return Err(bad(0, "not an lz4 legacy stream (no magic)".into()));
    }
    let mut out = Vec::new();
    let mut off = 4;
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while off < buf.len() {
        let size = word(off).ok_or_else(|| bad(off, "truncated block size".into()))?;
        off += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue; // a second stream, concatenated
        }
        let end = off
            .checked_add(size as usize)
            .filter(|end| *end <= buf.len())
            .ok_or_else(|| bad(off, format!("block of {size} bytes runs past the end")))?;
        let n = lz4_flex::block::decompress_into(&buf[off..end], &mut block)
            .map_err(|e| bad(off, format!("lz4 block: {e}")))?;
        out.extend_from_slice(&block[..n]);
        off = end;
    }
    Ok(out)
}

/// One entry read back from a newc archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub path: String,
    pub mode: u32,
    pub mtime: u32,
    pub data: Vec<u8>,
}

/// Reads an uncompressed newc archive (up to its trailer).
pub fn read_newc(buf: &[u8]) -> Result<Vec<ReadEntry>, CpioError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let bad = |offset: usize, message: &str| CpioError::Malformed {
        offset,
        message: message.to_string(),
    };
    loop {
        let header = buf
            .get(off..off + 110)
            .ok_or_else(|| bad(off, "truncated header"))?;
        if &header[..6] != b"070701" {
            return Err(bad(off, "bad magic"));
        }
        let field = |i: usize| -> Result<u32, CpioError> {
            let s = std::str::from_utf8(&header[6 + i * 8..14 + i * 8])
                .map_err(|_| bad(off, "non-ASCII header"))?;
            u32::from_str_radix(s, 16).map_err(|_| bad(off, "non-hex header field"))
        };
        let mode = field(1)?;
        let mtime = field(5)?;
        let size = field(6)? as usize;
        let namesize = field(11)? as usize;
        let name_start = off + 110;
        let name_bytes = buf
            .get(name_start..name_start + namesize)
            .ok_or_else(|| bad(off, "truncated name"))?;
        let name = std::str::from_utf8(name_bytes.strip_suffix(&[0]).unwrap_or(name_bytes))
            .map_err(|_| bad(off, "name not UTF-8"))?
            .to_string();
        let data_start = (name_start + namesize).div_ceil(4) * 4;
        let data = buf
            .get(data_start..data_start + size)
            .ok_or_else(|| bad(off, "truncated data"))?;
        off = (data_start + size).div_ceil(4) * 4;
        if name == "TRAILER!!!" {
            return Ok(out);
        }
        out.push(ReadEntry {
            path: name,
            mode,
            mtime,
            data: data.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_legacy_round_trips_in_8_mib_blocks() {
        // Two full blocks and a short one, compressible and not.
        let mut data = Vec::new();
        let mut x = 1u32;
        while data.len() < 2 * LZ4_LEGACY_BLOCK + 12_345 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            data.push(if data.len() % 3 == 0 {
                (x >> 16) as u8
            } else {
                b'a'
            });
        }
        let packed = lz4_legacy(&data);
        assert_eq!(
            &packed[..4],
            &[0x02, 0x21, 0x4c, 0x18],
            "magic, little endian"
        );
        assert!(packed.len() < data.len(), "compressed: {}", packed.len());
        // Three blocks: walk the size words.
        let mut off = 4;
        let mut blocks = 0;
        while off < packed.len() {
            let n = u32::from_le_bytes(packed[off..off + 4].try_into().unwrap()) as usize;
            off += 4 + n;
            blocks += 1;
        }
        assert_eq!((blocks, off), (3, packed.len()));
        assert_eq!(unlz4_legacy(&packed).unwrap(), data);
        assert_eq!(lz4_legacy(&data), packed, "deterministic");
    }

    #[test]
    fn unlz4_legacy_rejects_what_is_not_a_stream() {
        let archive = sample().to_newc(0).unwrap();
        assert!(matches!(
            unlz4_legacy(&archive),
            Err(CpioError::Malformed { offset: 0, .. })
        ));
        let packed = lz4_legacy(&archive);
        let err = unlz4_legacy(&packed[..packed.len() - 3]).unwrap_err();
        assert!(err.to_string().contains("runs past the end"), "{err}");
        assert_eq!(
            read_newc(&unlz4_legacy(&packed).unwrap()).unwrap().len(),
            read_newc(&archive).unwrap().len()
        );
    }

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file("init", b"\x7fELFinit".to_vec(), 0o755).unwrap();
        a.file("lib/modules/virtio_blk.ko", vec![7; 1001], 0o644)
            .unwrap();
        a.symlink("lib64/ld-linux-x86-64.so.2", "../lib/ld.so")
            .unwrap();
        a.char_dev("dev/console", 5, 1, 0o600).unwrap();
        a.dir("newroot", 0o755).unwrap();
        a
    }

    #[test]
    fn round_trip_through_own_reader() {
        let bytes = sample().to_newc(1234).unwrap();
        let entries = read_newc(&bytes).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/virtio_blk.ko",
                "lib64",
                "lib64/ld-linux-x86-64.so.2",
                "newroot"
            ]
        );
        let init = &entries[2];
        assert_eq!(init.mode, 0o100755);
        assert_eq!(init.data, b"\x7fELFinit");
        assert_eq!(init.mtime, 1234);
        assert_eq!(entries[1].mode, 0o020600);
        assert_eq!(entries[7].data, b"../lib/ld.so");
        assert_eq!(entries[5].data.len(), 1001);
    }

    #[test]
    fn deterministic_regardless_of_insertion_order() {
        let mut b = Archive::new();
        b.dir("newroot", 0o755).unwrap();
        b.char_dev("dev/console", 5, 1, 0o600).unwrap();
        b.symlink("lib64/ld-linux-x86-64.so.2", "../lib/ld.so")
            .unwrap();
        b.file("lib/modules/virtio_blk.ko", vec![7; 1001], 0o644)
            .unwrap();
        b.file("init", b"\x7fELFinit".to_vec(), 0o755).unwrap();
        assert_eq!(sample().to_newc(0).unwrap(), b.to_newc(0).unwrap());
        assert_eq!(read_newc(&b.to_newc(0).unwrap()).unwrap().len(), 9);
    }

    #[test]
    fn gnu_cpio_lists_and_extracts_it() {
        let bytes = sample().to_newc(0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &bytes).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-it", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .expect("cpio is installed on the build host");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.lines().any(|l| l == "lib/modules/virtio_blk.ko"),
            "{listing}"
        );
        assert!(listing.lines().any(|l| l == "dev/console"), "{listing}");
        assert_eq!(listing.lines().count(), 9, "{listing}");
    }

    #[test]
    fn bad_paths_and_conflicts_are_rejected() {
        let mut a = Archive::new();
        assert!(matches!(
            a.file("../x", vec![], 0o644),
            Err(CpioError::BadPath(_))
        ));
        assert!(matches!(
            a.file("", vec![], 0o644),
            Err(CpioError::BadPath(_))
        ));
        a.file("x", vec![1], 0o644).unwrap();
        assert!(matches!(
            a.file("x", vec![2], 0o644),
            Err(CpioError::Conflict(_))
        ));
        assert!(matches!(
            a.file("x/y", vec![], 0o644),
            Err(CpioError::Conflict(_))
        ));
        assert!(read_newc(b"garbage").is_err());
        assert!(read_newc(&[b'0'; 200]).is_err());
    }
}
