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
//! [`closure`] (ELF library closure), [`gvisor`] (the cached stage that builds
//! gVisor's containerd shim and runsc from Debian's source), [`modules`]
//! (modules.dep, decompression),
//! [`initramfs`] (cpio writer), [`squashfs`] (mksquashfs), [`oci`] (offline
//! images), [`cache`] (keys, directories, verification of a hit), [`manifest`]
//! (the manifest document), [`trust`] (who may own and write recipe files and
//! the cache), [`hostcheck`] (mmdebstrap's mode: root, or rootless through user
//! namespaces); `testing` (fixtures, only for tests).

pub mod build;
pub mod cache;
pub mod closure;
pub mod gvisor;
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
pub mod vmlinux;

pub use build::{
    BuildOptions, BuiltImage, NoProgress, Progress, StderrProgress, ensure_built, locate_machined,
};
pub use manifest::Manifest;
pub use recipe::{Recipe, RecipeError, RecipeOrigin, RecipeRef};

/// Anything that stops an image build. Each variant is a diagnostic with a
/// stable code (`ironclad::image::*`, `ironclad::host::*`) and, where the user
/// can act, a help line (docs/troubleshooting.md lists them).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImageError {
    #[error(transparent)]
    #[diagnostic(
        code(ironclad::image::recipe),
        help("a recipe is a built-in name (`trixie`) or a path to a recipe file (`./my.yaml`)")
    )]
    Recipe(#[from] recipe::RecipeError),
    #[error(transparent)]
    #[diagnostic(code(ironclad::image::build_failed), help("{}", BUILD_HELP))]
    Closure(#[from] closure::ClosureError),
    #[error(transparent)]
    #[diagnostic(code(ironclad::image::build_failed), help("{}", BUILD_HELP))]
    Modules(#[from] modules::ModulesError),
    #[error("initramfs: {0}")]
    #[diagnostic(code(ironclad::image::build_failed), help("{}", BUILD_HELP))]
    Cpio(#[from] initramfs::CpioError),
    #[error(transparent)]
    #[diagnostic(code(ironclad::image::build_failed), help("{}", BUILD_HELP))]
    Oci(#[from] oci::OciError),
    #[error(transparent)]
    #[diagnostic(code(ironclad::image::build_failed), help("{}", BUILD_HELP))]
    Squashfs(#[from] squashfs::SquashfsError),
    #[error(transparent)]
    #[diagnostic(code(ironclad::image::cache))]
    Cache(#[from] cache::CacheError),
    #[error("missing host tools: {}; install the Debian packages: apt-get install {}", tools.join(", "), packages.join(" "))]
    #[diagnostic(
        code(ironclad::host::missing_tools),
        help("`ci/install-deps` installs every host package ironclad needs")
    )]
    MissingTools {
        tools: Vec<String>,
        packages: Vec<String>,
    },
    /// An ordinary user whose host cannot run mmdebstrap rootless.
    #[error(transparent)]
    #[diagnostic(
        code(ironclad::image::rootless_unavailable),
        help(
            "the image is built in a user namespace (mmdebstrap --mode=unshare); the fixes above are explained in docs/troubleshooting.md, \"Rootless image builds\""
        )
    )]
    Rootless(#[from] hostcheck::RootlessError),
    #[error("machined binary not found (looked at {}); build it with `cargo build --release --bin machined` or pass --machined PATH / IRONCLAD_MACHINED", looked.join(", "))]
    #[diagnostic(code(ironclad::image::machined_not_found))]
    MachinedNotFound { looked: Vec<String> },
    #[error("{tool} failed ({status}); last output:\n{log}")]
    #[diagnostic(
        code(ironclad::image::tool_failed),
        help(
            "the tool's last words are above; mmdebstrap needs the Debian mirror its defaults name (APT's proxy settings apply), and `ironclad image build --refresh-base` starts from a fresh base tree"
        )
    )]
    ToolFailed {
        tool: String,
        status: String,
        log: String,
    },
    #[error("{context}: {source}")]
    #[diagnostic(code(ironclad::image::io))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel {}: {source}", path.display())]
    #[diagnostic(code(ironclad::image::kernel), help("{}", BUILD_HELP))]
    Kernel {
        path: std::path::PathBuf,
        #[source]
        source: vmlinux::KernelError,
    },
    #[error("the Debian tree is not usable: {0}")]
    #[diagnostic(code(ironclad::image::build_failed), help("{}", BUILD_HELP))]
    Tree(String),
    #[error("the image would contain a shell or package manager: {}", .0.join(", "))]
    #[diagnostic(
        code(ironclad::image::shell_in_image),
        help("drop those files from the recipe's `keep` lists: the node image carries no shell")
    )]
    ShellInImage(Vec<String>),
    #[diagnostic(code(ironclad::image::damaged))]
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

/// The help line of a failed build step.
const BUILD_HELP: &str = "`-v` shows each build step; `ironclad image build --refresh-base` builds from a fresh Debian base tree";

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
            | E::Kernel { .. }
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
