//! The node image: recipes (`images/*.yaml`), the build (mmdebstrap into a
//! scratch tree, keep only the listed binaries and their library closure),
//! outputs (vmlinuz, initramfs, rootfs.squashfs, manifest) and the cache keyed by
//! the recipe and machined hashes.
//!
//! Entry point: [`ensure_built`]. The file layout it produces is the contract
//! with machined, written down in `docs/image-layout.md`. This module does not
//! boot anything (see `qemu`) and does not know about clusters.
//!
//! Submodules by concern: [`recipe`] (the document), [`build`] (the pipeline),
//! [`closure`] (ELF library closure), [`modules`] (modules.dep, decompression),
//! [`initramfs`] (cpio writer), [`squashfs`] (mksquashfs), [`oci`] (offline
//! images), [`cache`] (keys, directories, verification of a hit), [`manifest`]
//! (the manifest document), [`trust`] (who may own and write recipe files and
//! the cache), [`hostcheck`] (mmdebstrap's mode: root, or rootless through user
//! namespaces); `testing` (fixtures, only for tests).

pub mod build;
pub mod cache;
pub mod closure;
pub mod hostcheck;
pub mod initramfs;
pub mod manifest;
pub mod modules;
pub mod oci;
pub mod prune;
pub mod recipe;
pub mod squashfs;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod trust;

pub use build::{
    BuildOptions, BuiltImage, NoProgress, Progress, StderrProgress, ensure_built, locate_machined,
};
pub use manifest::Manifest;
pub use recipe::{Recipe, RecipeError, RecipeOrigin, RecipeRef};

/// Anything that stops an image build.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Recipe(#[from] recipe::RecipeError),
    #[error(transparent)]
    Closure(#[from] closure::ClosureError),
    #[error(transparent)]
    Modules(#[from] modules::ModulesError),
    #[error("initramfs: {0}")]
    Cpio(#[from] initramfs::CpioError),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error(transparent)]
    Squashfs(#[from] squashfs::SquashfsError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("missing host tools: {}; install the Debian packages: apt-get install {}", tools.join(", "), packages.join(" "))]
    MissingTools {
        tools: Vec<String>,
        packages: Vec<String>,
    },
    /// An ordinary user whose host cannot run mmdebstrap rootless.
    #[error(transparent)]
    Rootless(#[from] hostcheck::RootlessError),
    #[error("machined binary not found (looked at {}); build it with `cargo build --release --bin machined` or pass --machined PATH / IRONCLAD_MACHINED", looked.join(", "))]
    MachinedNotFound { looked: Vec<String> },
    #[error("{tool} failed ({status}); last output:\n{log}")]
    ToolFailed {
        tool: String,
        status: String,
        log: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Debian tree is not usable: {0}")]
    Tree(String),
    #[error("the image would contain a shell or package manager: {}", .0.join(", "))]
    ShellInImage(Vec<String>),
    #[error(
        "the cached image {} is damaged: {damage}; run `ironclad image build {recipe}` to build it again (that replaces the damaged copy)",
        dir.display()
    )]
    Damaged {
        dir: std::path::PathBuf,
        damage: cache::Damage,
        /// The recipe as the user named it.
        recipe: String,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    /// Whether the error is a missing host tool (the CLI's exit status 3).
    pub fn is_missing_dependency(&self) -> bool {
        self.class() == ErrorClass::MissingDependency
    }

    /// Whether the error is bad input (recipe, machined path, an untrusted
    /// cache location).
    pub fn is_bad_input(&self) -> bool {
        self.class() == ErrorClass::BadInput
    }

    /// What the user can do about it; every variant named, so a new one is
    /// classified on purpose (the command line's exit status follows it).
    pub fn class(&self) -> ErrorClass {
        use ImageError as E;
        match self {
            E::MissingTools { .. } | E::Rootless(_) => ErrorClass::MissingDependency,
            E::Recipe(_) | E::MachinedNotFound { .. } => ErrorClass::BadInput,
            E::Cache(e) if e.is_bad_input() => ErrorClass::BadInput,
            E::Cache(_)
            | E::Closure(_)
            | E::Modules(_)
            | E::Cpio(_)
            | E::Oci(_)
            | E::Squashfs(_)
            | E::ToolFailed { .. }
            | E::Io { .. }
            | E::Tree(_)
            | E::ShellInImage(_)
            | E::Damaged { .. } => ErrorClass::Failed,
        }
    }
}

/// What the user can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Fix the input (file, flags, a location).
    BadInput,
    /// Install something on the host.
    MissingDependency,
    /// The operation failed; the message says why.
    Failed,
}
