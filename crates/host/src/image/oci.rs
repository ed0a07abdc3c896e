//! Offline OCI images for the node: `ironclad.local/pause:1` and
//! `ironclad.local/toolbox:1`, made from Debian's static busybox as OCI
//! image-layout tar archives (`oci-layout`, `index.json`, `blobs/sha256/...`)
//! that `ctr images import` accepts. Deterministic: fixed timestamps, root
//! ownership, sorted entries, uncompressed layers (the squashfs compresses
//! them).
//!
//! It does not import them (machined does, at boot).

use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use ironclad_contract::layout::{PAUSE_REF, TOOLBOX_REF};

/// busybox applets linked in the toolbox (`/bin/<applet> -> busybox`): what the
/// matrix's probes use.
pub const TOOLBOX_APPLETS: &[&str] = &[
    "cat", "chroot", "dd", "echo", "env", "grep", "hostname", "id", "ip", "kill", "ls", "mkdir",
    "mknod", "mount", "nc", "nsenter", "ping", "ps", "rm", "sh", "sleep", "sysctl", "touch",
    "umount", "uname", "unshare", "wget",
];

/// A problem writing an image archive.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("writing OCI archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding OCI JSON: {0}")]
    Json(#[from] serde_json::Error),
}

const LAYER_MEDIA: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA: &str = "application/vnd.oci.image.index.v1+json";

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

enum TarItem {
    Dir(u32),
    File(Vec<u8>, u32),
    Link(String),
}

/// Writes a deterministic ustar archive of `items` (path → item), sorted.
fn write_tar(items: &BTreeMap<String, TarItem>, mtime: u64) -> Result<Vec<u8>, OciError> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, item) in items {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        match item {
            TarItem::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            TarItem::File(data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, &data[..])?;
            }
            TarItem::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// Which of the two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Pause,
    Toolbox,
}

impl ImageKind {
    pub fn reference(self) -> &'static str {
        match self {
            ImageKind::Pause => PAUSE_REF,
            ImageKind::Toolbox => TOOLBOX_REF,
        }
    }
}

/// The archive's file name under `/usr/lib/ironclad/images`.
pub const ARCHIVE_NAME: &str = ironclad_contract::layout::OFFLINE_ARCHIVE;

/// Builds one OCI image-layout archive holding both offline images around a
/// static `busybox` binary. They share one layer (busybox and its applet
/// links) and differ only in their config (the pause image's entrypoint
/// sleeps), so a node imports and unpacks once, with one `ctr` run.
pub fn images_archive(busybox: &[u8], mtime: u64) -> Result<Vec<u8>, OciError> {
    let mut layer_items = BTreeMap::new();
    layer_items.insert("bin".to_string(), TarItem::Dir(0o755));
    layer_items.insert(
        "bin/busybox".to_string(),
        TarItem::File(busybox.to_vec(), 0o755),
    );
    for applet in TOOLBOX_APPLETS {
        layer_items.insert(
            format!("bin/{applet}"),
            TarItem::Link("busybox".to_string()),
        );
    }
    for d in ["dev", "etc", "proc", "sys", "root"] {
        layer_items.insert(d.to_string(), TarItem::Dir(0o755));
    }
    layer_items.insert("tmp".to_string(), TarItem::Dir(0o1777));
    let layer = write_tar(&layer_items, mtime)?;
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let created = time::OffsetDateTime::from_unix_timestamp(mtime as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string());
    let mut blobs = vec![layer.clone()];
    let mut manifests = Vec::new();
    for kind in [ImageKind::Pause, ImageKind::Toolbox] {
        let mut config_section = json!({
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
        });
        match kind {
            ImageKind::Pause => {
                config_section["Entrypoint"] = json!(["/bin/busybox", "sleep", "2147483647"])
            }
            ImageKind::Toolbox => config_section["Cmd"] = json!(["/bin/sh"]),
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": config_section,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))?;
        let config_digest = format!("sha256:{}", sha256_hex(&config));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA,
            "config": {"mediaType": CONFIG_MEDIA, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": LAYER_MEDIA, "digest": layer_digest, "size": layer.len()}],
        }))?;
        manifests.push(json!({
            "mediaType": MANIFEST_MEDIA,
            "digest": format!("sha256:{}", sha256_hex(&manifest)),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": kind.reference(),
                "org.opencontainers.image.ref.name": kind.reference(),
            },
        }));
        blobs.push(config);
        blobs.push(manifest);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA,
        "manifests": manifests,
    }))?;
    let mut outer = BTreeMap::new();
    outer.insert("blobs".to_string(), TarItem::Dir(0o755));
    outer.insert("blobs/sha256".to_string(), TarItem::Dir(0o755));
    for blob in blobs {
        outer.insert(
            format!("blobs/sha256/{}", sha256_hex(&blob)),
            TarItem::File(blob, 0o644),
        );
    }
    outer.insert(
        "oci-layout".to_string(),
        TarItem::File(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(), 0o644),
    );
    outer.insert("index.json".to_string(), TarItem::File(index, 0o644));
    write_tar(&outer, mtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(tar_bytes: &[u8]) -> BTreeMap<String, (tar::EntryType, Vec<u8>, Option<String>)> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let ty = e.header().entry_type();
            assert_eq!(e.header().mtime().unwrap(), 42);
            assert_eq!(e.header().uid().unwrap(), 0);
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(path, (ty, data, link));
        }
        out
    }

    fn blob<'a>(
        files: &'a BTreeMap<String, (tar::EntryType, Vec<u8>, Option<String>)>,
        digest: &str,
    ) -> &'a [u8] {
        let hexd = digest.strip_prefix("sha256:").unwrap();
        let data = &files[&format!("blobs/sha256/{hexd}")].1;
        assert_eq!(sha256_hex(data), hexd, "blob content matches its name");
        data
    }

    /// The image of `reference` in the archive: (manifest, config).
    fn image(
        files: &BTreeMap<String, (tar::EntryType, Vec<u8>, Option<String>)>,
        reference: &str,
    ) -> (serde_json::Value, serde_json::Value) {
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"].1).unwrap();
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["io.containerd.image.name"] == reference)
            .unwrap_or_else(|| panic!("{reference} not in the index"));
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            reference
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(blob(files, m["digest"].as_str().unwrap())).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        let config: serde_json::Value =
            serde_json::from_slice(blob(files, manifest["config"]["digest"].as_str().unwrap()))
                .unwrap();
        (manifest, config)
    }

    #[test]
    fn layout_structure_is_valid_and_references_resolve() {
        let bb = b"\x7fELF static busybox".to_vec();
        let archive = images_archive(&bb, 42).unwrap();
        let files = entries(&archive);
        let layout: serde_json::Value = serde_json::from_slice(&files["oci-layout"].1).unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        let (manifest, config) = image(&files, TOOLBOX_REF);
        assert_eq!(config["config"]["Cmd"][0], "/bin/sh");
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
        let layer = entries(blob(&files, layer_digest));
        assert_eq!(layer["bin/busybox"].1, bb);
        assert_eq!(layer["bin/sh"].0, tar::EntryType::Symlink);
        assert_eq!(layer["bin/sh"].2.as_deref(), Some("busybox"));
    }

    #[test]
    fn pause_shares_the_layer_runs_sleep_and_is_deterministic() {
        let a = images_archive(b"bb", 42).unwrap();
        assert_eq!(a, images_archive(b"bb", 42).unwrap());
        let files = entries(&a);
        let (pm, pc) = image(&files, PAUSE_REF);
        let (tm, _) = image(&files, TOOLBOX_REF);
        assert_eq!(pc["config"]["Entrypoint"][1], "sleep");
        assert_eq!(pm["layers"], tm["layers"], "one layer for both images");
        assert_ne!(pm["config"], tm["config"]);
        // layer, two configs, two manifests
        let n = files
            .iter()
            .filter(|(k, (ty, _, _))| k.starts_with("blobs/sha256/") && ty.is_file())
            .count();
        assert_eq!(n, 5);
    }
}
