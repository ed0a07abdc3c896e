//! Writing a bundle: a gzip-compressed tar whose entries all sit under
//! `support-<cluster>/`, written atomically (mode 0600) and never over an
//! existing file.

use super::{Bundle, SupportError};
use crate::spec::ClusterName;
use std::path::Path;

/// `support-<name>-<UTC time>.tar.gz`, e.g.
/// `support-dev-20261126T235959Z.tar.gz`.
pub fn default_file_name(name: &ClusterName, now: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let stamp = now
        .to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_else(|_| now.unix_timestamp().to_string());
    format!("support-{name}-{stamp}.tar.gz")
}

/// Writes `bundle` to `file`; returns the archive's size in bytes.
pub fn write_tar_gz(bundle: &Bundle, name: &ClusterName, file: &Path) -> Result<u64, SupportError> {
    if file.symlink_metadata().is_ok() {
        return Err(SupportError::Exists(file.to_path_buf()));
    }
    let io = |what: &str| {
        let what = format!("{what} {}", file.display());
        move |source| SupportError::Io { what, source }
    };
    let bytes = encode(bundle, name).map_err(io("cannot make the archive"))?;
    match crate::fsutil::write_new(file, &bytes, 0o600) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(SupportError::Exists(file.to_path_buf()));
        }
        other => other.map_err(io("cannot write"))?,
    }
    Ok(bytes.len() as u64)
}

fn encode(bundle: &Bundle, name: &ClusterName) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let top = format!("support-{name}");
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_mtime(mtime);
    dir.set_size(0);
    tar.append_data(&mut dir, &top, std::io::empty())?;
    for e in &bundle.entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_size(e.data.len() as u64);
        tar.append_data(&mut h, format!("{top}/{}", e.path), e.data.as_slice())?;
    }
    tar.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_carries_the_cluster_and_utc_time() {
        let name: ClusterName = "dev".parse().unwrap();
        let t = time::macros::datetime!(2026-11-26 23:59:58 +02:00);
        assert_eq!(
            default_file_name(&name, t),
            "support-dev-20261126T215958Z.tar.gz"
        );
    }

    #[test]
    fn the_archive_reads_back_and_an_existing_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let name: ClusterName = "dev".parse().unwrap();
        let mut b = Bundle::default();
        b.add("a/b.txt", b"hello".to_vec());
        let file = dir.path().join("x.tar.gz");
        let size = write_tar_gz(&b, &name, &file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len(), size);
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap());
        let mut ar = tar::Archive::new(gz);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            seen.push((e.path().unwrap().display().to_string(), s));
        }
        assert_eq!(
            seen,
            [
                ("support-dev".to_string(), String::new()),
                ("support-dev/a/b.txt".to_string(), "hello".to_string())
            ]
        );
        assert!(matches!(
            write_tar_gz(&b, &name, &file),
            Err(SupportError::Exists(_))
        ));
        assert_eq!(std::fs::metadata(&file).unwrap().len(), size);
    }
}
