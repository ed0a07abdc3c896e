//! The image's kernel as QEMU boots it: the uncompressed ELF inside Debian's
//! `vmlinuz` (a bzImage), booted through its PVH entry point.
//!
//! Why not the bzImage: QEMU reads a bzImage into memory it allocates, and
//! keeps it for the machine's life (12 MiB of every node's RSS that nothing
//! gives back), and the guest then spends about 0.7 s of emulated CPU per
//! boot decompressing it. An ELF kernel with a PVH entry note is instead
//! mapped from its file, copied into guest memory as it is, and entered
//! directly: the node reaches stage 1 sooner, and the mapped pages go back to
//! the host after boot like the initramfs's (`qemu::boot_files`).
//!
//! The bzImage's payload is that ELF (`vmlinux` with symbols stripped),
//! compressed; its offset and length are in the setup header (boot protocol
//! 2.08 and later). Debian compresses it with zstd; xz and gzip are read too.

use std::io::Read;

/// A problem with the kernel file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("not a bzImage with boot protocol 2.08 or later ({0})")]
    NotBzImage(String),
    #[error(
        "its payload is compressed with {0}, which ironclad cannot read (zstd, xz and gzip are read)"
    )]
    Compression(String),
    #[error("its payload does not decompress: {0}")]
    Decompress(String),
    #[error("its payload is not an x86-64 ELF kernel ({0})")]
    NotElf(String),
    #[error(
        "the kernel has no PVH entry point (ELF note Xen/XEN_ELFNOTE_PHYS32_ENTRY; a kernel built with CONFIG_PVH has one): QEMU cannot boot it from its ELF"
    )]
    NoPvhEntry,
}

/// The ELF note type of the PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
const PHYS32_ENTRY: u32 = 18;

/// The uncompressed kernel inside `bzimage`, checked to be an x86-64 ELF
/// with a PVH entry point.
pub fn extract(bzimage: &[u8]) -> Result<Vec<u8>, KernelError> {
    let payload = payload(bzimage)?;
    let elf = decompress(payload)?;
    check_pvh(&elf)?;
    Ok(elf)
}

/// The compressed payload of a bzImage (boot protocol >= 2.08).
fn payload(b: &[u8]) -> Result<&[u8], KernelError> {
    let not = |why: &str| KernelError::NotBzImage(why.to_string());
    if b.len() < 0x250 {
        return Err(not("too short for a setup header"));
    }
    if &b[0x202..0x206] != b"HdrS" {
        return Err(not("no HdrS magic"));
    }
    let version = u16::from_le_bytes([b[0x206], b[0x207]]);
    if version < 0x208 {
        return Err(not(&format!(
            "protocol {}.{:02}",
            version >> 8,
            version & 0xff
        )));
    }
    let setup_sects = match b[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
    let start = (setup_sects + 1) * 512 + word(0x248);
    let end = start
        .checked_add(word(0x24c))
        .filter(|e| *e <= b.len())
        .ok_or_else(|| not("its payload runs past the end of the file"))?;
    Ok(&b[start..end])
}

fn decompress(p: &[u8]) -> Result<Vec<u8>, KernelError> {
    let mut out = Vec::new();
    let err = |e: &dyn std::fmt::Display| KernelError::Decompress(e.to_string());
    if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // One zstd frame; the kernel's build appends the size after it.
        let mut d = ruzstd::decoding::StreamingDecoder::new(p).map_err(|e| err(&e))?;
        d.read_to_end(&mut out).map_err(|e| err(&e))?;
    } else if p.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        xz2::read::XzDecoder::new(p)
            .read_to_end(&mut out)
            .map_err(|e| err(&e))?;
    } else if p.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(p)
            .read_to_end(&mut out)
            .map_err(|e| err(&e))?;
    } else {
        let name = match p.get(..4) {
            Some([0x02, 0x21, 0x4c, 0x18]) => "lz4".to_string(),
            Some([0x89, b'L', b'Z', b'O']) => "lzo".to_string(),
            Some([b'B', b'Z', b'h', _]) => "bzip2".to_string(),
            Some([0x5d, 0, 0, _]) => "lzma".to_string(),
            Some(m) => format!("an unknown format (magic {})", hex::encode(m)),
            None => "nothing (an empty payload)".to_string(),
        };
        return Err(KernelError::Compression(name));
    }
    Ok(out)
}

/// Checks that `elf` is an x86-64 ELF executable with a PVH entry note.
fn check_pvh(elf: &[u8]) -> Result<(), KernelError> {
    let e = goblin::elf::Elf::parse(elf).map_err(|e| KernelError::NotElf(e.to_string()))?;
    if e.header.e_machine != goblin::elf::header::EM_X86_64 || !e.is_64 {
        return Err(KernelError::NotElf(format!(
            "machine {}",
            e.header.e_machine
        )));
    }
    let found = e
        .iter_note_headers(elf)
        .into_iter()
        .flatten()
        .flatten()
        .any(|n| n.name == "Xen" && n.n_type == PHYS32_ENTRY);
    if found {
        Ok(())
    } else {
        Err(KernelError::NoPvhEntry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage around `payload`: setup header, protocol 2.15, one setup
    /// sector.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 2 * 512];
        b[0x1f1] = 1;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&[0xaa; 16]);
        b.extend_from_slice(payload);
        // The size the kernel's build appends after the payload.
        b.extend_from_slice(&[1, 2, 3, 4]);
        b
    }

    /// A minimal x86-64 ELF with one note, `(name, type)`.
    fn elf_with_note(name: &str, n_type: u32) -> Vec<u8> {
        let mut note = Vec::new();
        let name_z = format!("{name}\0");
        note.extend_from_slice(&(name_z.len() as u32).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&n_type.to_le_bytes());
        note.extend_from_slice(name_z.as_bytes());
        while note.len() % 4 != 0 {
            note.push(0);
        }
        note.extend_from_slice(&0x0100_0b20u32.to_le_bytes());
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2; // 64-bit
        e[5] = 1; // little endian
        e[6] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        e[20..24].copy_from_slice(&1u32.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let note_off = 64 + 56;
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        ph[8..16].copy_from_slice(&(note_off as u64).to_le_bytes());
        ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&(note.len() as u64).to_le_bytes());
        ph[48..56].copy_from_slice(&4u64.to_le_bytes());
        e.extend_from_slice(&ph);
        e.extend_from_slice(&note);
        e
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        xz2::read::XzEncoder::new(data, 6)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzEncoder::new(data, flate2::Compression::fast())
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn the_elf_comes_out_of_an_xz_or_gzip_payload() {
        let elf = elf_with_note("Xen", PHYS32_ENTRY);
        assert_eq!(extract(&bzimage(&xz(&elf))).unwrap(), elf);
        assert_eq!(extract(&bzimage(&gzip(&elf))).unwrap(), elf);
    }

    #[test]
    fn a_zstd_payload_decompresses() {
        // A zstd frame of raw blocks, written by hand (ruzstd only decodes):
        // magic, frame header (single segment, 1-byte content size), one
        // last raw block.
        let data = b"kernel!";
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, data.len() as u8];
        let block = ((data.len() as u32) << 3) | 1; // last, raw
        f.extend_from_slice(&block.to_le_bytes()[..3]);
        f.extend_from_slice(data);
        assert_eq!(decompress(&f).unwrap(), data);
        // With the kernel build's size after the frame.
        f.extend_from_slice(&[7, 0, 0, 0]);
        assert_eq!(decompress(&f).unwrap(), data);
    }

    #[test]
    fn a_kernel_without_pvh_or_not_a_bzimage_is_refused_by_name() {
        let no_pvh = elf_with_note("Xen", 5);
        assert_eq!(
            extract(&bzimage(&xz(&no_pvh))),
            Err(KernelError::NoPvhEntry)
        );
        let gnu = elf_with_note("GNU", PHYS32_ENTRY);
        assert_eq!(extract(&bzimage(&xz(&gnu))), Err(KernelError::NoPvhEntry));
        assert!(matches!(
            extract(&bzimage(&xz(b"not an elf"))),
            Err(KernelError::NotElf(_))
        ));
        assert_eq!(
            extract(&bzimage(&[0x02, 0x21, 0x4c, 0x18, 0])),
            Err(KernelError::Compression("lz4".into()))
        );
        assert!(matches!(
            extract(&bzimage(&[0x28, 0xb5, 0x2f, 0xfd, 0xff])),
            Err(KernelError::Decompress(_))
        ));
        assert!(matches!(extract(b"MZ"), Err(KernelError::NotBzImage(_))));
        let mut old = bzimage(b"x");
        old[0x206..0x208].copy_from_slice(&0x0207u16.to_le_bytes());
        assert_eq!(
            extract(&old),
            Err(KernelError::NotBzImage("protocol 2.07".into()))
        );
        let mut long = bzimage(b"x");
        long[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(extract(&long), Err(KernelError::NotBzImage(_))));
    }
}
