//! The command line of `ironclad-bench` (what `ci/bench` passes through):
//! groups, runs, accelerator, output and work paths. Parsing only; an invalid
//! value is a clap error, which exits 2 with the usage.

use clap::{Parser, ValueEnum};
use ironclad_host::qemu::AccelChoice;
use std::path::PathBuf;

/// One group of figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Group {
    /// The image's kernel with a tiny busybox initramfs: the bare boot.
    Limit,
    /// An ordinary Debian VM (systemd, etcd, containerd) on ext4.
    Baseline,
    /// One ironclad node booted directly with QEMU.
    Node,
    /// `ironclad create` of one control plane to etcd healthy.
    Etcd,
    /// `ironclad create -f clusters/ha.yaml` to all etcd members healthy.
    Ha,
    /// `ironclad create` of 1+1, 3+2 and 3+7 nodes: create time and total
    /// RSS, and a per-node timeline of each first create.
    Scale,
    /// `ironclad create -f clusters/dev.yaml` (image cached), each node's
    /// idle RSS, then `ironclad matrix` on it.
    Dev,
    /// `ironclad image build` cold, with the base tree cached, and warm.
    Image,
    /// The image's file sizes.
    Sizes,
}

/// ironclad's benchmarks, in one invocation, on one accelerator.
///
/// Each figure is measured --runs times (median, min, max, spread); a table
/// goes to stdout, progress to stderr, and with --output a JSON report to
/// FILE. The node image comes from the usual image cache
/// (IRONCLAD_CACHE_DIR, ...); the cold image build uses a scratch cache under
/// the work dir. See docs/benchmarks.md.
#[derive(Debug, Parser)]
#[command(name = "ci/bench", version)]
pub struct Options {
    /// Runs per figure.
    #[arg(long, default_value_t = 3, value_parser = positive)]
    pub runs: u32,
    /// Write the JSON report there.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// auto: KVM only if an ordinary guest kernel runs on it (crates/host/src/qemu/accel.rs).
    #[arg(long, value_enum, default_value_t)]
    pub accel: AccelChoice,
    /// Groups to run (repeatable or comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "GROUP")]
    pub only: Vec<Group>,
    /// Work dir: the cached baseline VM, busybox, per-run scratch
    /// [default: ${XDG_CACHE_HOME:-$HOME/.cache}/ironclad/bench].
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// The ironclad binary (machined must sit next to it) [default: the
    /// `ironclad` beside this program, as `cargo build --release` leaves it].
    #[arg(long, value_name = "PATH")]
    pub ironclad: Option<PathBuf>,
}

/// `--runs`: a whole number from 1.
fn positive(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("--runs takes a positive whole number".into()),
    }
}

impl Options {
    /// Whether `group` runs in this invocation.
    pub fn wants(&self, group: Group) -> bool {
        self.only.is_empty() || self.only.contains(&group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("ci/bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.runs, 3);
        assert_eq!(o.accel, AccelChoice::Auto);
        assert!(o.output.is_none() && o.work.is_none() && o.ironclad.is_none());
        assert!(Group::value_variants().iter().all(|g| o.wants(*g)));
    }

    #[test]
    fn only_is_repeatable_and_comma_separated() {
        let o = parse(&["--only", "limit,node", "--only", "sizes", "--accel", "tcg"]).unwrap();
        assert_eq!(o.only, [Group::Limit, Group::Node, Group::Sizes]);
        assert!(o.wants(Group::Node) && !o.wants(Group::Baseline) && !o.wants(Group::Etcd));
        assert_eq!(o.accel, AccelChoice::Tcg);
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for args in [
            &["--runs", "0"][..],
            &["--runs", "-1"],
            &["--runs", "x"],
            &["--only", "limit,bogus"],
            &["--accel", "hvf"],
            &["--frobnicate"],
        ] {
            let e = parse(args).unwrap_err();
            assert_ne!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        let e = parse(&["--runs", "0"]).unwrap_err().to_string();
        assert!(e.contains("positive whole number"), "{e}");
        let e = parse(&["--only", "bogus"]).unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("baseline"), "{e}");
    }

    #[test]
    fn paths_and_runs() {
        let o = parse(&[
            "--runs",
            "5",
            "--output",
            "b.json",
            "--work",
            "/w",
            "--ironclad",
            "/x/ironclad",
        ])
        .unwrap();
        assert_eq!(o.runs, 5);
        assert_eq!(o.output.as_deref(), Some(std::path::Path::new("b.json")));
        assert_eq!(o.work.as_deref(), Some(std::path::Path::new("/w")));
        assert_eq!(
            o.ironclad.as_deref(),
            Some(std::path::Path::new("/x/ironclad"))
        );
    }
}
