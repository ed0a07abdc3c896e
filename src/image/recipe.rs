//! Image recipes (`images/*.yaml`, `kind: ImageRecipe`): the document, strict
//! parsing (unknown fields rejected), validation, and lookup by name or path.
//!
//! A recipe names the Debian suite and packages, the binaries and kernel modules
//! to keep, extra symlinks and the hardening sysctls. It does not say how the
//! image is built (see `build`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The kind every recipe document carries.
pub const RECIPE_KIND: &str = "ImageRecipe";

/// The default recipe, embedded so an installed `ironclad` works without the
/// repository.
pub const EMBEDDED_TRIXIE: &str = include_str!("../../images/trixie.yaml");

/// A problem with a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("recipe {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("recipe {origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error(
        "no recipe named {name:?} (looked for images/{name}.yaml here and in the repository; built in: trixie)"
    )]
    NotFound { name: String },
}

/// How a caller names a recipe: `trixie` or a path to a YAML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipeRef {
    Name(String),
    Path(PathBuf),
}

impl RecipeRef {
    /// A string with a `/` or ending in `.yaml`/`.yml` is a path, anything else
    /// a name.
    pub fn parse(s: &str) -> RecipeRef {
        if s.contains('/') || s.ends_with(".yaml") || s.ends_with(".yml") {
            RecipeRef::Path(PathBuf::from(s))
        } else {
            RecipeRef::Name(s.to_string())
        }
    }
}

impl Default for RecipeRef {
    fn default() -> Self {
        RecipeRef::Name("trixie".to_string())
    }
}

impl std::fmt::Display for RecipeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecipeRef::Name(n) => f.write_str(n),
            RecipeRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Kernel modules to keep, by module name (`-` and `_` are the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModuleLists {
    /// Loaded by stage 1 to mount the root.
    #[serde(default)]
    pub initramfs: Vec<String>,
    /// Also in the initramfs, loaded on background threads from stage 1 on:
    /// what stage 2 needs before its services start (machine config, state
    /// disk, /etc overlay, NICs).
    #[serde(default)]
    pub early: Vec<String>,
    /// In the root, loaded by machined in stage 2 in the background (what
    /// pods need).
    #[serde(default)]
    pub root: Vec<String>,
}

/// A parsed, validated recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Recipe {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub suite: String,
    #[serde(default = "default_variant")]
    pub variant: String,
    #[serde(default = "default_epoch")]
    pub source_date_epoch: u64,
    pub packages: Vec<String>,
    pub binaries: Vec<String>,
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    #[serde(default)]
    pub modules: ModuleLists,
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

fn default_variant() -> String {
    "essential".to_string()
}

fn default_epoch() -> u64 {
    // 2025-01-01T00:00:00Z
    1_735_689_600
}

/// A recipe together with the exact bytes it came from (they key the cache).
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    pub recipe: Recipe,
    pub bytes: Vec<u8>,
    /// Where it came from: a path, or `builtin:trixie`.
    pub origin: String,
}

fn is_debian_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn is_tree_path(s: &str) -> bool {
    s.starts_with('/')
        && s.len() > 1
        && !s.ends_with('/')
        && s.split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_sysctl_key(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl Recipe {
    /// Parses and validates recipe text; `origin` names it in errors.
    pub fn parse(src: &str, origin: &str) -> Result<Recipe, RecipeError> {
        let recipe: Recipe = serde_saphyr::from_str(src).map_err(|e| RecipeError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        recipe.validate(origin)?;
        Ok(recipe)
    }

    fn validate(&self, origin: &str) -> Result<(), RecipeError> {
        let bad = |message: String| RecipeError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if self.api_version != crate::API_VERSION {
            return Err(bad(format!(
                "apiVersion is {:?}, expected {:?}",
                self.api_version,
                crate::API_VERSION
            )));
        }
        if self.kind != RECIPE_KIND {
            return Err(bad(format!(
                "kind is {:?}, expected {RECIPE_KIND:?}",
                self.kind
            )));
        }
        if !is_debian_name(&self.name) {
            return Err(bad(format!(
                "name {:?} must be lowercase letters, digits, '.', '-', '+'",
                self.name
            )));
        }
        if !is_debian_name(&self.suite) {
            return Err(bad(format!(
                "suite {:?} is not a Debian suite name",
                self.suite
            )));
        }
        if ![
            "essential",
            "apt",
            "required",
            "minbase",
            "buildd",
            "important",
            "standard",
        ]
        .contains(&self.variant.as_str())
        {
            return Err(bad(format!(
                "variant {:?} is not an mmdebstrap variant",
                self.variant
            )));
        }
        if self.packages.is_empty() {
            return Err(bad("packages must not be empty".to_string()));
        }
        if let Some(p) = self.packages.iter().find(|p| !is_debian_name(p)) {
            return Err(bad(format!("package {p:?} is not a Debian package name")));
        }
        if self.binaries.is_empty() {
            return Err(bad("binaries must not be empty".to_string()));
        }
        if let Some(b) = self.binaries.iter().find(|b| !is_tree_path(b)) {
            return Err(bad(format!(
                "binary {b:?} must be an absolute path without '.', '..' or '//'"
            )));
        }
        for (path, target) in &self.links {
            if !is_tree_path(path) {
                return Err(bad(format!("link {path:?} must be an absolute path")));
            }
            if target.is_empty() || target.contains('\0') {
                return Err(bad(format!("link {path:?} has an empty target")));
            }
        }
        let all_modules = self
            .modules
            .initramfs
            .iter()
            .chain(&self.modules.early)
            .chain(&self.modules.root);
        for m in all_modules {
            if !is_module_name(m) {
                return Err(bad(format!("module {m:?} is not a kernel module name")));
            }
        }
        for (k, v) in &self.sysctls {
            if !is_sysctl_key(k) {
                return Err(bad(format!("sysctl key {k:?} is not of the form a.b.c")));
            }
            if v.is_empty() || v.contains('\n') {
                return Err(bad(format!("sysctl {k} has an empty or multi-line value")));
            }
        }
        if !self.packages.iter().any(|p| p.starts_with("linux-image")) {
            return Err(bad(
                "packages must include a kernel (linux-image-*)".to_string()
            ));
        }
        Ok(())
    }
}

fn load_path(path: &Path) -> Result<LoadedRecipe, RecipeError> {
    let bytes = std::fs::read(path).map_err(|source| RecipeError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let origin = path.display().to_string();
    let src = String::from_utf8(bytes.clone()).map_err(|_| RecipeError::Parse {
        origin: origin.clone(),
        message: "not UTF-8".to_string(),
    })?;
    let recipe = Recipe::parse(&src, &origin)?;
    Ok(LoadedRecipe {
        recipe,
        bytes,
        origin,
    })
}

/// Finds and loads a recipe. A name is looked up as `images/<name>.yaml` under
/// the current directory and its ancestors, then beside the source tree this
/// binary was built from, then among the recipes built into the binary.
pub fn load(r: &RecipeRef) -> Result<LoadedRecipe, RecipeError> {
    match r {
        RecipeRef::Path(p) => load_path(p),
        RecipeRef::Name(name) => {
            if !is_debian_name(name) {
                return Err(RecipeError::NotFound { name: name.clone() });
            }
            let file = format!("{name}.yaml");
            let mut candidates = Vec::new();
            if let Ok(cwd) = std::env::current_dir() {
                for dir in cwd.ancestors() {
                    candidates.push(dir.join("images").join(&file));
                }
            }
            candidates.push(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("images")
                    .join(&file),
            );
            if let Some(found) = candidates.iter().find(|p| p.is_file()) {
                return load_path(found);
            }
            if name == "trixie" {
                let origin = "builtin:trixie".to_string();
                let recipe = Recipe::parse(EMBEDDED_TRIXIE, &origin)?;
                return Ok(LoadedRecipe {
                    recipe,
                    bytes: EMBEDDED_TRIXIE.as_bytes().to_vec(),
                    origin,
                });
            }
            Err(RecipeError::NotFound { name: name.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_trixie_parses() {
        let r = Recipe::parse(EMBEDDED_TRIXIE, "builtin").unwrap();
        assert_eq!(r.name, "trixie");
        assert_eq!(r.suite, "trixie");
        assert!(r.packages.contains(&"etcd-server".to_string()));
        assert!(r.binaries.contains(&"/usr/bin/etcd".to_string()));
        assert_eq!(r.modules.initramfs, vec!["virtio_blk", "squashfs"]);
        assert_eq!(
            r.sysctls.get("kernel.kptr_restrict").map(String::as_str),
            Some("2")
        );
        let userns: u64 = r.sysctls["user.max_user_namespaces"].parse().unwrap();
        assert!(userns > 0);
        assert_eq!(
            r.links.get("/usr/sbin/mkfs.ext4").map(String::as_str),
            Some("mke2fs")
        );
    }

    fn minimal() -> String {
        "apiVersion: ironclad.dev/v1alpha1\nkind: ImageRecipe\nname: t\nsuite: trixie\n\
         packages: [linux-image-amd64]\nbinaries: [/usr/bin/etcd]\n"
            .to_string()
    }

    #[test]
    fn minimal_recipe_gets_defaults() {
        let r = Recipe::parse(&minimal(), "m").unwrap();
        assert_eq!(r.variant, "essential");
        assert_eq!(r.source_date_epoch, 1_735_689_600);
        assert!(r.sysctls.is_empty());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let src = format!("{}mirror: http://example.invalid\n", minimal());
        let err = Recipe::parse(&src, "m").unwrap_err();
        assert!(matches!(err, RecipeError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("mirror"), "{err}");
    }

    #[test]
    fn wrong_kind_and_version_are_rejected() {
        let src = minimal().replace("ImageRecipe", "Cluster");
        assert!(
            Recipe::parse(&src, "m")
                .unwrap_err()
                .to_string()
                .contains("kind")
        );
        let src = minimal().replace("v1alpha1", "v9");
        assert!(
            Recipe::parse(&src, "m")
                .unwrap_err()
                .to_string()
                .contains("apiVersion")
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        for (from, to, needle) in [
            ("/usr/bin/etcd", "usr/bin/etcd", "binary"),
            ("/usr/bin/etcd", "/usr/../bin/sh", "binary"),
            ("[linux-image-amd64]", "[\"Bad Name\"]", "package"),
            ("[linux-image-amd64]", "[etcd-server]", "kernel"),
            ("suite: trixie", "suite: \"tri xie\"", "suite"),
        ] {
            let src = minimal().replace(from, to);
            let err = Recipe::parse(&src, "m").unwrap_err().to_string();
            assert!(err.contains(needle), "{to}: {err}");
        }
        let src = format!("{}sysctls:\n  \"kernel..x\": \"1\"\n", minimal());
        assert!(
            Recipe::parse(&src, "m")
                .unwrap_err()
                .to_string()
                .contains("sysctl")
        );
        let src = format!("{}modules:\n  root: [\"ext4;rm\"]\n", minimal());
        assert!(
            Recipe::parse(&src, "m")
                .unwrap_err()
                .to_string()
                .contains("module")
        );
    }

    #[test]
    fn wrong_type_is_a_parse_error() {
        let src = minimal().replace("[/usr/bin/etcd]", "{a: 1}");
        assert!(matches!(
            Recipe::parse(&src, "m"),
            Err(RecipeError::Parse { .. })
        ));
    }

    #[test]
    fn recipe_ref_parsing_and_lookup() {
        assert_eq!(RecipeRef::parse("trixie"), RecipeRef::Name("trixie".into()));
        assert_eq!(RecipeRef::parse("x.yaml"), RecipeRef::Path("x.yaml".into()));
        assert_eq!(RecipeRef::parse("./a/b"), RecipeRef::Path("./a/b".into()));
        let loaded = load(&RecipeRef::Name("trixie".into())).unwrap();
        assert_eq!(loaded.recipe.name, "trixie");
        assert!(matches!(
            load(&RecipeRef::Name("no-such-recipe".into())),
            Err(RecipeError::NotFound { .. })
        ));
        assert!(matches!(
            load(&RecipeRef::Path("/nonexistent/r.yaml".into())),
            Err(RecipeError::Read { .. })
        ));
    }
}
