//! The serial console protocol between machined and the host: machined writes
//! one line per boot phase, `machined: <phase> t=<uptime seconds>`, and fact
//! lines, `machined: fact <key=value ...>`; the host reads them from the
//! node's serial log (readiness, `status`'s phase column, the benchmark's
//! timeline, the e2e tests' facts). Other lines machined prints (errors,
//! service output) carry the same prefix but are neither phases nor facts.
//!
//! This module formats and parses those lines; it does no I/O.

use std::fmt;

/// The prefix of every line machined prints on the console.
pub const PREFIX: &str = "machined: ";
/// The ready line's start: machined prints it once the state disk is mounted,
/// the network configured, the services started and the node API listening.
pub const READY_LINE: &str = "machined: ready";
/// The start of the line machined prints once the node API listens
/// ([`Phase::ApidListening`]), shortly before [`READY_LINE`].
pub const API_LISTENING_LINE: &str = "machined: apid listening on";

/// A boot phase machined reports. The text after [`PREFIX`] is its
/// [`Display`](fmt::Display).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Stage 1 (the initramfs's init) runs.
    Stage1,
    /// Stage 1's modules are loaded.
    Stage1Modules,
    /// The squashfs root is mounted.
    Stage1RootMounted,
    /// Stage 1 switches root.
    Stage1SwitchRoot,
    /// Stage 2 (PID 1 on the real root) runs.
    Stage2,
    Mounts,
    StateDiskFormatted,
    /// The early modules are loaded; the slowest ones named.
    Modules {
        slowest: Vec<String>,
    },
    Config,
    StateDiskMounted,
    Sysctls,
    EtcAndHostname,
    Network,
    /// The node's policy routing rules are installed (how many).
    NetworkRules(usize),
    ServicesStarted,
    /// A supervised service started.
    ServiceStarted(String),
    /// apid listens on these addresses (the node's own, never 0.0.0.0).
    ApidListening(Vec<std::net::SocketAddr>),
    /// The node is ready ([`READY_LINE`]).
    Ready,
    /// The late modules are loaded (how many).
    LateModules(usize),
    /// containerd answers on its socket.
    ContainerdAnswering,
    /// The offline images are imported (how many).
    ImagesImported(usize),
    /// etcd answers health checks.
    EtcdHealthy,
    /// Once the node was quiet, the boot's page cache was handed back to
    /// the host.
    BootCachesDropped,
    /// Every service was stopped (shutdown or reboot).
    ServicesStopped,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Stage1 => f.write_str("stage1"),
            Phase::Stage1Modules => f.write_str("stage1 modules"),
            Phase::Stage1RootMounted => f.write_str("stage1 root mounted"),
            Phase::Stage1SwitchRoot => f.write_str("stage1 switch_root"),
            Phase::Stage2 => f.write_str("stage2"),
            Phase::Mounts => f.write_str("mounts"),
            Phase::StateDiskFormatted => f.write_str("state disk formatted"),
            Phase::Modules { slowest } => write!(f, "modules (slowest: {})", slowest.join(", ")),
            Phase::Config => f.write_str("config"),
            Phase::StateDiskMounted => f.write_str("state disk mounted"),
            Phase::Sysctls => f.write_str("sysctls"),
            Phase::EtcAndHostname => f.write_str("etc and hostname"),
            Phase::Network => f.write_str("network"),
            Phase::NetworkRules(n) => write!(f, "network rules ({n})"),
            Phase::ServicesStarted => f.write_str("services started"),
            Phase::ServiceStarted(name) => write!(f, "{name} started"),
            Phase::ApidListening(addrs) => {
                f.write_str("apid listening on")?;
                for a in addrs {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
            Phase::Ready => f.write_str("ready"),
            Phase::LateModules(n) => write!(f, "late modules ({n} loaded)"),
            Phase::ContainerdAnswering => f.write_str("containerd answering"),
            Phase::ImagesImported(n) => write!(f, "images imported ({n})"),
            Phase::EtcdHealthy => f.write_str("etcd healthy"),
            Phase::BootCachesDropped => f.write_str("boot caches dropped"),
            Phase::ServicesStopped => f.write_str("services stopped"),
        }
    }
}

/// A phase line (without the newline): `machined: <phase> t=<uptime>`.
pub fn phase_line(phase: &Phase, uptime: f64) -> String {
    format!("{PREFIX}{phase} t={uptime:.3}")
}

/// A phase line as the host reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseLine<'a> {
    /// The phase's text (e.g. `state disk mounted`, `etcd started`).
    pub phase: &'a str,
    /// Guest uptime in seconds when it was printed.
    pub uptime: f64,
}

/// Parses a phase line anywhere in `line` (kernel output may share the
/// line): `None` for any other line, facts included.
pub fn parse_phase_line(line: &str) -> Option<PhaseLine<'_>> {
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    let rest = rest.trim_end();
    let (phase, t) = rest.rsplit_once(" t=")?;
    let uptime = t
        .parse::<f64>()
        .ok()
        .filter(|u| u.is_finite() && *u >= 0.0)?;
    if phase.starts_with("fact ") || phase.is_empty() {
        return None;
    }
    Some(PhaseLine { phase, uptime })
}

/// A fact machined reports about the boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// What `/` is: device, filesystem, read-only or not (`None`: unknown).
    Root {
        mount: Option<(String, String, bool)>,
    },
    /// Whether the state disk was formatted on this boot, and the boot count
    /// kept on it.
    StateDisk { formatted: bool, boot: u64 },
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Root {
                mount: Some((dev, fstype, ro)),
            } => write!(
                f,
                "{PREFIX}fact root={dev} fstype={fstype} {}",
                if *ro { "ro" } else { "rw" }
            ),
            Fact::Root { mount: None } => write!(f, "{PREFIX}fact root=unknown"),
            Fact::StateDisk { formatted, boot } => {
                write!(
                    f,
                    "{PREFIX}fact state-disk formatted={formatted} boot={boot}"
                )
            }
        }
    }
}

/// Parses a state-disk fact line anywhere in `line`.
pub fn parse_state_disk_fact(line: &str) -> Option<Fact> {
    let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
    let rest = rest.trim_end().strip_prefix("fact state-disk ")?;
    let mut formatted = None;
    let mut boot = None;
    for kv in rest.split_whitespace() {
        match kv.split_once('=')? {
            ("formatted", v) => formatted = v.parse().ok(),
            ("boot", v) => boot = v.parse().ok(),
            _ => {}
        }
    }
    Some(Fact::StateDisk {
        formatted: formatted?,
        boot: boot?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_lines_round_trip() {
        for p in [
            Phase::Stage1,
            Phase::Ready,
            Phase::ServiceStarted("etcd".into()),
            Phase::Modules {
                slowest: vec!["ext4".into(), "overlay".into()],
            },
            Phase::ImagesImported(2),
            Phase::EtcdHealthy,
            Phase::BootCachesDropped,
        ] {
            let line = phase_line(&p, 4.5678);
            let back = parse_phase_line(&line).unwrap();
            assert_eq!(back.phase, p.to_string());
            assert!((back.uptime - 4.568).abs() < 1e-9, "{line}");
        }
        assert_eq!(
            phase_line(&Phase::Mounts, 1.23456),
            "machined: mounts t=1.235"
        );
        assert!(phase_line(&Phase::Ready, 6.0).starts_with(READY_LINE));
        let addr = "10.5.0.2:50000".parse().unwrap();
        assert!(phase_line(&Phase::ApidListening(vec![addr]), 3.0).starts_with(API_LISTENING_LINE));
    }

    #[test]
    fn other_lines_are_not_phases() {
        assert_eq!(parse_phase_line("[ 1.0] kernel"), None);
        assert_eq!(parse_phase_line("machined: apid: bind failed"), None);
        assert_eq!(parse_phase_line("machined: ready t=abc"), None);
        let fact = Fact::StateDisk {
            formatted: true,
            boot: 1,
        }
        .to_string();
        assert_eq!(parse_phase_line(&format!("{fact} t=1.0")), None);
        // Kernel output sharing the line.
        assert_eq!(
            parse_phase_line("[  2.1] virtio machined: stage1 t=1.700\r")
                .unwrap()
                .phase,
            "stage1"
        );
    }

    #[test]
    fn facts_format_and_parse() {
        let f = Fact::StateDisk {
            formatted: false,
            boot: 2,
        };
        assert_eq!(
            f.to_string(),
            "machined: fact state-disk formatted=false boot=2"
        );
        assert_eq!(parse_state_disk_fact(&f.to_string()), Some(f));
        assert_eq!(
            Fact::Root {
                mount: Some(("/dev/vda".into(), "squashfs".into(), true))
            }
            .to_string(),
            "machined: fact root=/dev/vda fstype=squashfs ro"
        );
        assert_eq!(parse_state_disk_fact("machined: fact root=unknown"), None);
    }
}
