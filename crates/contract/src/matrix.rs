//! The conformance and breakout matrix as host and node agree on it: the
//! check catalog (ids, titles, level, where each runs), verdicts and results,
//! the merged report. The spec of every check is `MATRIX.md`; what each probe
//! does is in `docs/matrix.md`.
//!
//! It runs nothing: the node side is machined's `matrix` module (CRI), the
//! host side is the host's `matrix::run` (node API, TLS, etcd, clocks) and
//! `matrix::render` (table, JSON, JUnit XML).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where a check needs to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Needs only containerd on the node (CRI).
    Cri,
    /// Needs a Kubernetes API server.
    Api,
    /// A conformance check.
    Conf,
}

/// Who executes a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// machined, through containerd's CRI, on every node.
    Node,
    /// The host, through the node API (once per cluster or per node).
    Host,
}

/// Declares [`CheckId`]: one variant per catalogued check, with its id as
/// written in reports, MATRIX.md and on the command line.
macro_rules! check_ids {
    ($($variant:ident => $id:literal,)*) => {
        /// A check of the catalog. Reports, the node API and the command line
        /// carry it as its id string (`"BRK-04-O"`); matching on it is
        /// exhaustive, so a new check has to be given a runner on both sides.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum CheckId {
            $(#[doc = $id] $variant,)*
        }

        impl CheckId {
            /// Every id, in declaration order.
            pub const ALL: &'static [CheckId] = &[$(CheckId::$variant,)*];

            /// The id as reports write it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(CheckId::$variant => $id,)*
                }
            }
        }
    };
}

check_ids! {
    Brk01 => "BRK-01",
    Brk02 => "BRK-02",
    Brk03 => "BRK-03",
    Brk04 => "BRK-04",
    Brk05 => "BRK-05",
    Brk06 => "BRK-06",
    Brk07 => "BRK-07",
    Brk08 => "BRK-08",
    Brk09 => "BRK-09",
    Brk10 => "BRK-10",
    Rt01 => "RT-01",
    Rt02 => "RT-02",
    Rt03 => "RT-03",
    Rt04 => "RT-04",
    Brk04O => "BRK-04-O",
    Rt06 => "RT-06",
    Rt07 => "RT-07",
    Rt08 => "RT-08",
    Rt09 => "RT-09",
    Rt10 => "RT-10",
    Net01 => "NET-01",
    Net02 => "NET-02",
    Api04 => "API-04",
    Conf01 => "CONF-01",
    Conf02 => "CONF-02",
    Conf03 => "CONF-03",
    Conf04 => "CONF-04",
    Conf05 => "CONF-05",
}

/// A string that names no check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown check {0:?}")]
pub struct UnknownCheck(pub String);

impl std::str::FromStr for CheckId {
    type Err = UnknownCheck;

    /// Case-insensitive, as the command line takes it (`rt-06`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CheckId::ALL
            .iter()
            .copied()
            .find(|id| id.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCheck(s.to_string()))
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` so that width and alignment (`{:9}`) apply as to a `str`.
        f.pad(self.as_str())
    }
}

impl PartialEq<str> for CheckId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for CheckId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for CheckId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CheckId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One entry of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub id: CheckId,
    pub title: &'static str,
    pub level: Level,
    pub runner: Runner,
    /// Only with `--destructive`.
    pub destructive: bool,
    /// For an attack a plain privileged container gets through on a shared
    /// kernel: what would block it. Such a check is EXPOSED (never PASS) when
    /// the privileged variant got through and no variant the node can
    /// protect did.
    pub exposed_mitigation: Option<&'static str>,
}

const fn c(id: CheckId, title: &'static str, level: Level, runner: Runner) -> Check {
    Check {
        id,
        title,
        level,
        runner,
        destructive: false,
        exposed_mitigation: None,
    }
}

/// An attack that a plain privileged container gets through: EXPOSED then,
/// with `mitigation`.
const fn attack(id: CheckId, title: &'static str, mitigation: &'static str) -> Check {
    Check {
        id,
        title,
        level: Level::Cri,
        runner: Runner::Node,
        destructive: false,
        exposed_mitigation: Some(mitigation),
    }
}

/// Refusing privileged pods is the first answer to every EXPOSED attack.
macro_rules! sandbox_or_admission {
    ($kernel:literal) => {
        concat!(
            "refuse privileged pods at admission (PodSecurity baseline), or run the workload user-namespaced or in gVisor (the userns and gvisor variants); ",
            $kernel
        )
    };
}

/// What blocks BRK-04 and BRK-04-O for a privileged container.
pub const SYSRQ_MITIGATION: &str = sandbox_or_admission!(
    "no kernel switch stops a root writer of /proc/sysrq-trigger (kernel.sysrq gates the keyboard only)"
);

/// What a node's attack probes print when the attack got through (the
/// node's own success markers: a shell ran, the node's root was seen, a file
/// opened for writing, a disk read or mounted, a connection opened), and
/// the words its evidence uses for a variant that got through. A result
/// whose evidence holds one of these is never a PASS: the host checks every
/// node's verdicts against them (`ironclad_host::matrix::normalize`).
pub const ESCAPE_MARKERS: &[&str] = &[
    "SHELL-RAN",
    "NODE-ROOT-SEEN",
    "OPENED-RW",
    "REMOUNTED-RW",
    "WROTE-SYSRQ",
    "READ-RAW",
    "MOUNTED-AGAIN",
    "SOCKET-VISIBLE",
    "CONNECTED",
];

/// The words a node's evidence line uses for a variant whose attack got
/// through (`priv: got through (...)`, `userns: ESCAPED: ...`).
pub const GOT_THROUGH: &[&str] = &["got through", "ESCAPED"];

/// Every check, in report order.
pub const CATALOG: &[Check] = &[
    c(
        CheckId::Brk01,
        "privileged hostPID pod: nsenter into PID 1 and run the node's shell",
        Level::Cri,
        Runner::Node,
    ),
    attack(
        CheckId::Brk02,
        "privileged hostPID pod: nsenter into PID 1 with its own busybox shell",
        sandbox_or_admission!(
            "a privileged hostPID pod holds PID 1's namespaces, and no kernel switch takes them back"
        ),
    ),
    c(
        CheckId::Brk03,
        "write the node's root through /proc/1/root; remount / read-write",
        Level::Cri,
        Runner::Node,
    ),
    attack(
        CheckId::Brk04,
        "write /proc/sysrq-trigger (probe: h)",
        SYSRQ_MITIGATION,
    ),
    attack(
        CheckId::Brk05,
        "open the node's disks read-write, read them raw, mount the state disk a second time; open /dev/mem read-write",
        sandbox_or_admission!(
            "the kernel's bdev_allow_write_mounted=0 (no writer of a mounted disk) and lockdown=integrity (no /dev/mem) on the command line block the writes, but no kernel switch stops a holder of CAP_SYS_ADMIN reading a disk raw or mounting the state disk again (it shares the mounted filesystem, read-write)"
        ),
    ),
    attack(
        CheckId::Brk06,
        "load a kernel module",
        sandbox_or_admission!(
            "kernel: kernel.modules_disabled=1 once the node's modules are in (machined sets it), lockdown=integrity and module.sig_enforce=1"
        ),
    ),
    attack(
        CheckId::Brk07,
        "write core_pattern / uevent_helper / modprobe",
        sandbox_or_admission!(
            "a privileged container mounts /proc/sys read-write, and only a kernel built with STATIC_USERMODEHELPER would take core_pattern and modprobe away"
        ),
    ),
    attack(
        CheckId::Brk08,
        "cgroup v1 release_agent escape",
        sandbox_or_admission!(
            "kernel: cgroup_no_v1=all,named on the command line (no cgroup v1 hierarchy can be mounted)"
        ),
    ),
    attack(
        CheckId::Brk09,
        "ptrace a host process / write /proc/<pid>/mem",
        sandbox_or_admission!(
            "kernel: kernel.yama.ptrace_scope=3 refuses every ptrace attach and /proc/<pid>/mem open (and with them debuggers and gVisor's ptrace platform)"
        ),
    ),
    c(
        CheckId::Brk10,
        "reach containerd.sock, the node API or etcd (50000, 2379, 2380) from a pod",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Rt01,
        "effective capabilities of a default container: no NET_RAW, no MKNOD",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Rt02,
        "seccomp mode of a default container is 2",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Rt03,
        "masked and read-only /proc and /sys paths",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Rt04,
        "no_new_privs in restricted pods",
        Level::Cri,
        Runner::Node,
    ),
    Check {
        id: CheckId::Brk04O,
        title: "destructive BRK-04: sysrq o (power-off) from each variant; the node's fate seen from the host",
        level: Level::Cri,
        runner: Runner::Node,
        destructive: true,
        exposed_mitigation: Some(SYSRQ_MITIGATION),
    },
    Check {
        id: CheckId::Rt06,
        title: "fork bomb in a pod: EAGAIN at the pids limit, node API still answers",
        level: Level::Cri,
        runner: Runner::Node,
        destructive: true,
        exposed_mitigation: None,
    },
    c(
        CheckId::Rt07,
        "kernel hardening sysctls match the image's declared values; machined turned module loading off",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Rt08,
        "user-namespaced pod: uid_map maps 0 to a non-zero host range",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Rt09,
        "gVisor pod: gVisor kernel, host kernel version not visible",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Rt10,
        "all capabilities inside gVisor or userns, then BRK-01..09: all fail",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Net01,
        "a pod cannot reach the QEMU user-net gateway when egress is off",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Net02,
        "a pod and the node cannot reach the host's loopback through 10.0.2.2, egress on or off",
        Level::Cri,
        Runner::Node,
    ),
    c(
        CheckId::Api04,
        "anonymous access to the node API: TLS refused without a client certificate",
        Level::Cri,
        Runner::Host,
    ),
    c(
        CheckId::Conf01,
        "every node's API answers with the expected version and role",
        Level::Conf,
        Runner::Host,
    ),
    c(
        CheckId::Conf02,
        "etcd: voting members, health on all, a write on one is read on all",
        Level::Conf,
        Runner::Host,
    ),
    c(
        CheckId::Conf03,
        "a pod runs to completion on each runtime class",
        Level::Conf,
        Runner::Node,
    ),
    c(
        CheckId::Conf04,
        "node-to-node traffic on the cluster network (every pair)",
        Level::Conf,
        Runner::Node,
    ),
    c(
        CheckId::Conf05,
        "time is in sync between nodes and the host",
        Level::Conf,
        Runner::Host,
    ),
];

/// The catalog entry of `id` (case-insensitive).
pub fn find(id: &str) -> Option<&'static Check> {
    let id: CheckId = id.parse().ok()?;
    CATALOG.iter().find(|c| c.id == id)
}

/// Why a requested set of checks is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("unknown check {0:?} (see `ironclad matrix --list`)")]
    Unknown(String),
    #[error("check {0} is destructive: add --destructive to run it")]
    NeedsDestructive(CheckId),
}

/// The checks to run: `requested` (all non-destructive ones when empty; the
/// destructive ones too with `destructive`), in catalog order, no duplicates.
pub fn select(requested: &[String], destructive: bool) -> Result<Vec<&'static Check>, SelectError> {
    if requested.is_empty() {
        return Ok(CATALOG
            .iter()
            .filter(|c| destructive || !c.destructive)
            .collect());
    }
    let mut picked = Vec::new();
    for r in requested {
        let check = find(r.trim()).ok_or_else(|| SelectError::Unknown(r.clone()))?;
        if check.destructive && !destructive {
            return Err(SelectError::NeedsDestructive(check.id));
        }
        picked.push(check.id);
    }
    Ok(CATALOG.iter().filter(|c| picked.contains(&c.id)).collect())
}

/// A check's outcome. On the wire (reports, the node API) the variant is the
/// `verdict` field, its data sits beside it:
///
/// | `verdict` | other fields | meaning |
/// |---|---|---|
/// | `"PASS"` | | the defence held |
/// | `"FAIL"` | | a defence the node should provide did not hold |
/// | `"EXPOSED"` | `reason`, `mitigation` | the attack got through where the node has no defence to offer |
/// | `"SKIP"` | `reason` | not run |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Pass,
    Fail,
    /// The attack succeeded and the node cannot refuse it (a privileged
    /// container on a shared kernel): never a PASS, counted on its own, and a
    /// failure of the run only under `--strict`.
    Exposed {
        /// What got through, and why the node cannot stop it.
        reason: String,
        /// What would block it (pod policy, user namespaces, gVisor, a kernel
        /// defence).
        mitigation: String,
    },
    Skip {
        reason: String,
    },
}

impl Verdict {
    pub fn skip(reason: impl Into<String>) -> Self {
        Verdict::Skip {
            reason: reason.into(),
        }
    }

    pub fn exposed(reason: impl Into<String>, mitigation: impl Into<String>) -> Self {
        Verdict::Exposed {
            reason: reason.into(),
            mitigation: mitigation.into(),
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Exposed { .. } => "EXPOSED",
            Verdict::Skip { .. } => "SKIP",
        }
    }

    pub fn pass_if(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }

    /// Whether this verdict makes the run fail: FAIL always, EXPOSED under
    /// `strict`.
    pub fn fails_run(&self, strict: bool) -> bool {
        match self {
            Verdict::Fail => true,
            Verdict::Exposed { .. } => strict,
            Verdict::Pass | Verdict::Skip { .. } => false,
        }
    }
}

/// How many results of a report have each verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub exposed: usize,
    pub skipped: usize,
}

/// One check on one node (or on the cluster, `node` = `"cluster"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub node: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// What was observed: command outputs, errnos, status lines.
    pub evidence: Vec<String>,
    #[serde(default)]
    pub duration_ms: u64,
}

impl CheckResult {
    pub fn new(id: &str, node: &str, verdict: Verdict, evidence: Vec<String>) -> Self {
        CheckResult {
            id: id.to_string(),
            node: node.to_string(),
            verdict,
            evidence,
            duration_ms: 0,
        }
    }
}

/// The node name used for results about the cluster as a whole.
pub const CLUSTER_NODE: &str = "cluster";

/// What a node sends back for `POST /v1/matrix/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMatrixReport {
    pub node: String,
    /// `containerd 1.7.x` as the CRI reports it.
    pub runtime: String,
    /// sha256 of the node's `/usr/lib/ironclad/manifest.json` (the image copy,
    /// without the `rootfs.squashfs` part entry).
    #[serde(default)]
    pub image_manifest_sha256: Option<String>,
    pub results: Vec<CheckResult>,
    pub duration_ms: u64,
    /// The run's steps that took a while (CRI calls, waits), in the order
    /// they started: where the node's time went. The checks a node runs
    /// from its pods' batches all share the batches' duration, so this is
    /// the finer view.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One step of a node's matrix run: a CRI call (`CRI RunPodSandbox
/// matrix-gvisor-…`, `CRI ExecSync gvisor batch`) or a wait (`waiting for
/// containerd to answer`), with when it started (ms since the node took the
/// request) and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub what: String,
    pub start_ms: u64,
    pub ms: u64,
}

/// One node's [`Step`]s in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSteps {
    pub node: String,
    pub steps: Vec<Step>,
}

/// A file the report ran against, by path and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub path: String,
    pub sha256: String,
}

/// The merged report of one `ironclad matrix` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub cluster: String,
    pub cluster_file: Option<FileRef>,
    pub image_manifest_sha256: Option<String>,
    pub destructive: bool,
    pub results: Vec<CheckResult>,
    pub duration_ms: u64,
    /// Each node's steps that took a while, nodes in name order (absent
    /// when no node reported any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<NodeSteps>,
}

/// The report document's version.
pub const REPORT_API_VERSION: &str = "ironclad.dev/v1alpha1";

impl Report {
    /// How many results have each verdict.
    pub fn counts(&self) -> Counts {
        let mut n = Counts::default();
        for r in &self.results {
            match r.verdict {
                Verdict::Pass => n.passed += 1,
                Verdict::Fail => n.failed += 1,
                Verdict::Exposed { .. } => n.exposed += 1,
                Verdict::Skip { .. } => n.skipped += 1,
            }
        }
        n
    }

    /// Whether the run failed: a check FAILed, or (`strict`) one is EXPOSED.
    pub fn failed(&self, strict: bool) -> bool {
        self.results.iter().any(|r| r.verdict.fails_run(strict))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }

    /// Sorts results by catalog order, then node name.
    pub fn sort(&mut self) {
        let pos = |id: &str| {
            CATALOG
                .iter()
                .position(|c| c.id.as_str() == id)
                .unwrap_or(usize::MAX)
        };
        self.results
            .sort_by(|a, b| (pos(&a.id), &a.node).cmp(&(pos(&b.id), &b.node)));
    }
}

/// The process exit status for a report: 0 iff no check failed and, with
/// `strict`, none is EXPOSED; else 1.
pub fn exit_status(report: &Report, strict: bool) -> u8 {
    u8::from(report.failed(strict))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_ids_are_unique_and_cover_matrix_md() {
        let mut ids: Vec<&str> = CATALOG.iter().map(|c| c.id.as_str()).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
        for id in [
            "BRK-01", "BRK-10", "RT-01", "RT-10", "NET-01", "API-04", "CONF-01", "CONF-05",
        ] {
            assert!(find(id).is_some(), "{id}");
        }
        assert!(find("rt-06").unwrap().destructive);
    }

    /// The attacks a plain privileged container gets through (MATRIX.md:
    /// BRK-02, BRK-04..09 and the destructive BRK-04-O) name what blocks
    /// them; no other check can be EXPOSED.
    #[test]
    fn exposable_checks_name_their_mitigation() {
        let exposable: Vec<&str> = CATALOG
            .iter()
            .filter(|c| c.exposed_mitigation.is_some())
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(
            exposable,
            [
                "BRK-02", "BRK-04", "BRK-05", "BRK-06", "BRK-07", "BRK-08", "BRK-09", "BRK-04-O"
            ]
        );
        for c in CATALOG {
            if let Some(m) = c.exposed_mitigation {
                assert!(m.contains("admission") && m.contains("gVisor"), "{}", c.id);
            }
        }
        assert!(
            find("BRK-06")
                .unwrap()
                .exposed_mitigation
                .unwrap()
                .contains("modules_disabled")
        );
    }

    #[test]
    fn selection() {
        let all = select(&[], false).unwrap();
        assert!(all.iter().all(|c| !c.destructive));
        assert!(select(&[], true).unwrap().len() > all.len());
        let picked = select(&["rt-02".into(), "BRK-01".into(), "RT-02".into()], false).unwrap();
        let ids: Vec<&str> = picked.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["BRK-01", "RT-02"]);
        assert_eq!(
            select(&["NOPE".into()], false),
            Err(SelectError::Unknown("NOPE".into()))
        );
        assert_eq!(
            select(&["RT-06".into()], false),
            Err(SelectError::NeedsDestructive(CheckId::Rt06))
        );
        assert_eq!(
            SelectError::NeedsDestructive(CheckId::Rt06).to_string(),
            "check RT-06 is destructive: add --destructive to run it"
        );
        assert_eq!(
            SelectError::Unknown("NOPE".into()).to_string(),
            "unknown check \"NOPE\" (see `ironclad matrix --list`)"
        );
    }

    #[test]
    fn the_catalog_lists_every_check_id_once_in_declaration_order() {
        let catalog: Vec<CheckId> = CATALOG.iter().map(|c| c.id).collect();
        assert_eq!(catalog, CheckId::ALL);
    }

    #[test]
    fn check_ids_read_and_write_as_their_id_strings() {
        for &id in CheckId::ALL {
            assert_eq!(id.as_str().parse::<CheckId>(), Ok(id));
            assert_eq!(id.as_str().to_lowercase().parse::<CheckId>(), Ok(id));
            assert_eq!(id.to_string(), id.as_str());
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{}\"", id.as_str()));
            assert_eq!(serde_json::from_str::<CheckId>(&json).unwrap(), id);
        }
        assert_eq!(format!("{:9}|", CheckId::Rt01), "RT-01    |");
        assert_eq!(
            "BRK-11".parse::<CheckId>(),
            Err(UnknownCheck("BRK-11".into()))
        );
        assert!(serde_json::from_str::<CheckId>("\"BRK-11\"").is_err());
    }

    #[test]
    fn verdict_json_shape() {
        let r = CheckResult::new("RT-02", "cp-1", Verdict::skip("no runsc"), vec![]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "SKIP");
        assert_eq!(v["reason"], "no runsc");
        let back: CheckResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let p = serde_json::to_value(CheckResult::new("X", "n", Verdict::Pass, vec![])).unwrap();
        assert_eq!(p["verdict"], "PASS");
    }

    fn report(verdicts: &[Verdict]) -> Report {
        Report {
            api_version: REPORT_API_VERSION.into(),
            cluster: "dev".into(),
            cluster_file: None,
            image_manifest_sha256: None,
            destructive: false,
            results: verdicts
                .iter()
                .map(|v| CheckResult::new("RT-01", "n", v.clone(), vec![]))
                .collect(),
            duration_ms: 0,
            steps: Vec::new(),
        }
    }

    #[test]
    fn exit_status_is_nonzero_iff_a_check_failed() {
        for strict in [false, true] {
            assert_eq!(exit_status(&report(&[]), strict), 0);
            assert_eq!(
                exit_status(&report(&[Verdict::Pass, Verdict::skip("x")]), strict),
                0
            );
            assert_eq!(
                exit_status(&report(&[Verdict::Pass, Verdict::Fail]), strict),
                1
            );
        }
        assert_eq!(
            report(&[Verdict::Pass, Verdict::Fail, Verdict::skip("y")]).counts(),
            Counts {
                passed: 1,
                failed: 1,
                exposed: 0,
                skipped: 1
            }
        );
    }

    #[test]
    fn exposed_is_counted_apart_and_fails_the_run_only_when_strict() {
        let r = report(&[
            Verdict::Pass,
            Verdict::exposed("priv wrote /proc/sysrq-trigger", "userns"),
            Verdict::skip("z"),
        ]);
        assert_eq!(
            r.counts(),
            Counts {
                passed: 1,
                failed: 0,
                exposed: 1,
                skipped: 1
            }
        );
        assert_eq!(exit_status(&r, false), 0);
        assert_eq!(exit_status(&r, true), 1);
        assert!(!r.failed(false) && r.failed(true));
        assert_eq!(Verdict::exposed("a", "b").label(), "EXPOSED", "never PASS");
    }

    /// The JSON a separate script reads: `verdict` is one of PASS, FAIL,
    /// EXPOSED, SKIP; EXPOSED carries `reason` and `mitigation`.
    #[test]
    fn exposed_json_shape() {
        let r = CheckResult::new(
            "BRK-04",
            "cp-1",
            Verdict::exposed("priv: WROTE-SYSRQ", "user namespaces"),
            vec!["priv: got through".into()],
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "EXPOSED");
        assert_eq!(v["reason"], "priv: WROTE-SYSRQ");
        assert_eq!(v["mitigation"], "user namespaces");
        assert_eq!(v["evidence"][0], "priv: got through");
        let back: CheckResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        // An EXPOSED without its mitigation is not a valid result.
        assert!(
            serde_json::from_str::<CheckResult>(
                r#"{"id":"BRK-04","node":"n","verdict":"EXPOSED","reason":"x","evidence":[]}"#
            )
            .is_err()
        );
    }
}
