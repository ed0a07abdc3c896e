//! Handing QEMU's copies of the kernel and the initramfs back once the guest
//! has booted.
//!
//! QEMU maps the `-initrd` file and an ELF `-kernel` (private mappings) and
//! keeps them for the machine's lifetime, so that a reboot in place can load
//! them again. Loading them into guest memory at boot faults every page of
//! both files into QEMU: about 9 MiB of resident memory per node for the
//! image's lz4 initramfs and 49 MiB for its kernel, kept for nothing until
//! the next reboot.
//!
//! A write with `O_DIRECT` makes the kernel drop the page-cache pages of the
//! range it wrote, and unmap them from every process that maps them. So
//! [`release_cached_pages`] reads the file with direct I/O and writes the
//! same bytes back: the content never changes (a concurrent reader, say
//! another node's QEMU loading the same kernel, reads the same bytes from the
//! disk), and QEMU's resident pages of the file are gone until it reads them
//! again at the next boot.
//!
//! Where the filesystem has no direct I/O, or ignores it (tmpfs keeps its
//! data in the page cache), nothing is released; that is not an error for
//! the node, only a missed saving.

use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Direct I/O's alignment: offsets, lengths and the buffer's address.
const ALIGN: usize = 4096;
/// The buffer's size.
const CHUNK: usize = 1 << 20;

/// A buffer aligned for direct I/O, freed on drop.
struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Aligned { ptr, layout }
    }

    fn as_mut(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.layout.size());
        // SAFETY: the allocation is `layout.size()` initialised bytes owned
        // by `self`, borrowed mutably here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Rewrites `path`'s whole 4 KiB blocks with their own bytes through direct
/// I/O, so that the kernel drops their cached pages from every mapping (see
/// the module's doc). Returns the bytes rewritten; the last partial block,
/// if any, stays cached. Errors: the file cannot be opened for writing with
/// `O_DIRECT` (a read-only file or filesystem, or one without direct I/O),
/// or a read or write fails.
pub fn release_cached_pages(path: &Path) -> io::Result<u64> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let whole = file.metadata()?.len() / ALIGN as u64 * ALIGN as u64;
    let mut buf = Aligned::new(CHUNK);
    let mut off = 0u64;
    while off < whole {
        let len = (whole - off).min(CHUNK as u64) as usize;
        let chunk = buf.as_mut(len);
        let got = read_full_at(&file, chunk, off)?;
        if got < len {
            // The file shrank under us: what was read is all there is.
            let back = got / ALIGN * ALIGN;
            file.write_all_at(&chunk[..back], off)?;
            return Ok(off + back as u64);
        }
        file.write_all_at(chunk, off)?;
        off += len as u64;
    }
    Ok(off)
}

/// Reads into `buf` from `off` until it is full or the file ends; returns
/// the bytes read. `FileExt::read_exact_at` would lose the count on a short
/// file, which the caller needs.
fn read_full_at(file: &std::fs::File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The resident bytes of process `pid`'s mappings of `path` (from
/// `/proc/PID/smaps`), `None` when the process maps no such file.
pub fn resident_bytes_of(pid: u32, path: &Path) -> io::Result<Option<u64>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    Ok(resident_in_smaps(&smaps, path))
}

/// [`resident_bytes_of`] on the text of an smaps file.
pub fn resident_in_smaps(smaps: &str, path: &Path) -> Option<u64> {
    let want = path.to_str()?;
    let mut total = None;
    let mut in_it = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            // A mapping's header: range perms offset dev inode [path].
            let name = line.splitn(6, char::is_whitespace).nth(5).map(str::trim);
            in_it = name == Some(want);
            continue;
        }
        if in_it && first == "Rss:" {
            let kib: u64 = fields.next()?.parse().ok()?;
            total = Some(total.unwrap_or(0) + kib * 1024);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A private read-only mapping of a whole file, unmapped on drop.
    struct Mapped {
        ptr: *mut libc::c_void,
        len: usize,
    }

    impl Mapped {
        fn new(f: &std::fs::File, len: usize) -> Mapped {
            // SAFETY: a new mapping of `len` bytes of an open file; the
            // kernel picks the address.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    f.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            Mapped { ptr, len }
        }

        fn bytes(&self) -> &[u8] {
            // SAFETY: the mapping is `len` readable bytes while `self` lives.
            unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
        }
    }

    impl Drop for Mapped {
        fn drop(&mut self) {
            // SAFETY: unmaps what `new` mapped.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }

    /// A directory beside the test binary, under the target directory: a
    /// disk filesystem with direct I/O, where /tmp may be tmpfs (which keeps
    /// its data in the page cache).
    fn disk_tempdir() -> tempfile::TempDir {
        let exe = std::env::current_exe().unwrap();
        tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
    }

    fn resident(path: &Path) -> u64 {
        resident_bytes_of(std::process::id(), path)
            .unwrap()
            .expect("the test maps the file")
    }

    #[test]
    fn a_mapped_file_loses_its_resident_pages_and_keeps_its_bytes() {
        let dir = disk_tempdir();
        let path = dir.path().join("initramfs");
        let len = 3 * CHUNK + 5 * ALIGN + 123;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let map = Mapped::new(&f, len);
        assert_eq!(map.bytes(), &data[..], "read through the mapping");
        assert!(resident(&path) >= (len / ALIGN * ALIGN) as u64);

        let n = release_cached_pages(&path).unwrap();
        assert_eq!(n, (len / ALIGN * ALIGN) as u64);
        // Only the last, partial block is still mapped.
        assert!(resident(&path) <= ALIGN as u64, "{}", resident(&path));
        assert_eq!(std::fs::read(&path).unwrap(), data, "the file");
        assert_eq!(map.bytes(), &data[..], "read again through the mapping");
        assert!(resident(&path) >= (len / ALIGN * ALIGN) as u64);
    }

    #[test]
    fn a_file_that_cannot_be_written_is_an_error_and_stays_as_it_was() {
        use std::os::unix::fs::PermissionsExt;
        let dir = disk_tempdir();
        assert!(release_cached_pages(&dir.path().join("missing")).is_err());
        let path = dir.path().join("ro");
        std::fs::write(&path, vec![1u8; 2 * ALIGN]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        // Root writes through any mode bits: only check an ordinary user.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(release_cached_pages(&path).is_err());
        }
        assert_eq!(std::fs::read(&path).unwrap(), vec![1u8; 2 * ALIGN]);
        // A file shorter than a block rewrites nothing.
        let short = dir.path().join("short");
        std::fs::write(&short, b"abc").unwrap();
        assert_eq!(release_cached_pages(&short).unwrap(), 0);
        assert_eq!(std::fs::read(&short).unwrap(), b"abc");
    }

    #[test]
    fn smaps_sums_the_rss_of_one_file_only() {
        let smaps = "\
7f00-7f10 r--p 00000000 fe:00 12 /img/initramfs
Size:                 64 kB
Rss:                  60 kB
Anonymous:             0 kB
7f10-7f20 r--p 00000000 fe:00 13 /img/initramfs.old
Rss:                  40 kB
7f20-7f30 rw-p 00000000 00:00 0 
Rss:                   8 kB
7f30-7f40 r--p 00010000 fe:00 12 /img/initramfs
Rss:                   4 kB
";
        assert_eq!(
            resident_in_smaps(smaps, Path::new("/img/initramfs")),
            Some(64 * 1024)
        );
        assert_eq!(resident_in_smaps(smaps, Path::new("/img/other")), None);
    }
}
