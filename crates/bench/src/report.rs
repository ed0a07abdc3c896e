//! The samples an invocation collects and what becomes of them: per figure
//! the runs, median, min, max, spread and standard deviation; the ratios
//! against the targets; the JSON report (`BenchReport`, schema in
//! docs/benchmarks.md) and the table on stdout. Pure: no I/O but the
//! caller's writer.

use serde::Serialize;
use std::fmt::Write as _;

/// One thing a run recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A measured value.
    Value {
        group: &'static str,
        name: &'static str,
        unit: &'static str,
        value: f64,
        what: &'static str,
    },
    /// A figure that cannot be measured here, and why.
    Skipped {
        group: &'static str,
        name: &'static str,
        unit: &'static str,
        reason: String,
        what: &'static str,
    },
    /// A run that failed.
    Failed {
        group: &'static str,
        name: &'static str,
        unit: &'static str,
        reason: String,
    },
    /// A line for the report's notes.
    Note(String),
    /// machined's boot phases of one node run (the first one is kept).
    Timeline(Vec<(String, f64)>),
}

/// The invocation's facts that head the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub accel: String,
    pub runs_per_figure: u32,
    pub started: String,
    pub host: HostInfo,
    pub vm: VmShape,
    pub kernel_version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostInfo {
    pub nproc: usize,
    pub loadavg1_at_start: f64,
    pub loadavg1_at_end: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmShape {
    pub cpus: u32,
    pub memory: String,
    pub machine: String,
}

/// One figure of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figure {
    pub group: String,
    pub name: String,
    pub unit: String,
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<String>>,
    #[serde(flatten)]
    pub result: FigureResult,
}

/// A figure's statistics, or why there are none.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum FigureResult {
    Measured(Stats),
    Skipped { skipped: String },
}

/// Statistics of a figure's runs (rounded to 4 decimals, the runs as taken).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub runs: Vec<f64>,
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub spread: f64,
    pub stdev: f64,
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

impl Stats {
    /// `None` for no runs. The median of an even count is the mean of the
    /// middle two; the standard deviation is the sample one (0 for one run).
    pub fn of(runs: &[f64]) -> Option<Stats> {
        if runs.is_empty() {
            return None;
        }
        let mut s = runs.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        let (min, max) = (s[0], s[n - 1]);
        let stdev = if n > 1 {
            let mean = s.iter().sum::<f64>() / n as f64;
            (s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Stats {
            runs: runs.to_vec(),
            n,
            median: round4(median),
            min: round4(min),
            max: round4(max),
            spread: round4(max - min),
            stdev: round4(stdev),
        })
    }
}

/// A ratio of two figures' medians.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ratio {
    pub name: String,
    pub numerator: String,
    pub denominator: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// A target: at most or at least a value.
#[derive(Debug, Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
}

/// (name, numerator, denominator, target).
type RatioDef = (
    &'static str,
    (&'static str, &'static str),
    (&'static str, &'static str),
    Option<Target>,
);

/// Idle QEMU RSS per node, at most (MiB).
const NODE_RSS_MIB: f64 = 300.0;

/// Targets on a figure's median: (group, name, target).
/// clusters/ha.yaml (3+2) to all members healthy in at most 60 s under TCG
/// on 2 cores: the `ha` group's figure and the `scale` group's 3+2; each
/// node idle in at most [`NODE_RSS_MIB`]; clusters/dev.yaml created (image
/// cached) in at most 20 s and its matrix in at most 90 s.
const FIGURE_TARGETS: [(&str, &str, Target); 8] = [
    (
        "ironclad",
        "ha_create_to_healthy_wall",
        Target::AtMost(60.0),
    ),
    ("scale", "create_3_2_wall", Target::AtMost(60.0)),
    ("scale", "rss_node_max_1_1", Target::AtMost(NODE_RSS_MIB)),
    ("scale", "rss_node_max_3_2", Target::AtMost(NODE_RSS_MIB)),
    ("scale", "rss_node_max_3_7", Target::AtMost(NODE_RSS_MIB)),
    ("dev", "create_wall", Target::AtMost(20.0)),
    ("dev", "rss_node_max", Target::AtMost(NODE_RSS_MIB)),
    ("dev", "matrix_wall", Target::AtMost(90.0)),
];

/// A figure's median against its target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetCheck {
    /// `group/name`.
    pub figure: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

impl Target {
    fn text(self) -> String {
        match self {
            Target::AtMost(v) => format!("<= {v}"),
            Target::AtLeast(v) => format!(">= {v}"),
        }
    }

    fn met(self, v: f64) -> bool {
        match self {
            Target::AtMost(x) => v <= x,
            Target::AtLeast(x) => v >= x,
        }
    }
}

const RATIOS: [RatioDef; 8] = [
    (
        "create 3+7 / create 3+2 (wall; cost growth with cluster size)",
        ("scale", "create_3_7_wall"),
        ("scale", "create_3_2_wall"),
        Some(Target::AtMost(2.5)),
    ),
    (
        "node ready / bare kernel limit (guest uptime)",
        ("ironclad", "node_ready_uptime"),
        ("limit", "init_uptime"),
        Some(Target::AtMost(1.25)),
    ),
    (
        "node ready / bare kernel limit (wall, QEMU start)",
        ("ironclad", "node_ready_wall"),
        ("limit", "init_wall"),
        None,
    ),
    (
        "node stage 1 / bare kernel limit (guest uptime; the initramfs's cost)",
        ("ironclad", "node_stage1_uptime"),
        ("limit", "init_uptime"),
        None,
    ),
    (
        "etcd healthy: baseline / ironclad (guest uptime)",
        ("baseline", "etcd_healthy_uptime"),
        ("ironclad", "etcd_healthy_uptime"),
        Some(Target::AtLeast(5.0)),
    ),
    (
        "etcd healthy: baseline QEMU start / ironclad create start (wall)",
        ("baseline", "etcd_healthy_wall"),
        ("ironclad", "etcd_healthy_wall"),
        None,
    ),
    (
        "containerd answering: baseline / ironclad (guest uptime)",
        ("baseline", "containerd_uptime"),
        ("ironclad", "node_containerd_uptime"),
        None,
    ),
    (
        "etcd healthy, ironclad / bare kernel limit (guest uptime)",
        ("ironclad", "etcd_healthy_uptime"),
        ("limit", "init_uptime"),
        None,
    ),
];

/// The JSON report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: &'static str,
    pub kind: &'static str,
    #[serde(flatten)]
    pub meta: Meta,
    pub figures: Vec<Figure>,
    pub ratios: Vec<Ratio>,
    /// Figures with a target on their median (figures not measured in this
    /// invocation are left out).
    pub targets: Vec<TargetCheck>,
    pub node_boot_timeline: Vec<(String, f64)>,
    pub notes: Vec<String>,
}

/// A figure while its samples are folded in.
struct Acc {
    fig: Figure,
    runs: Vec<f64>,
    skipped: Option<String>,
}

impl Acc {
    /// The figure's accumulator in `figs`, added at the end when new.
    fn of<'a>(
        figs: &'a mut Vec<Acc>,
        group: &str,
        name: &str,
        unit: &str,
        what: &str,
    ) -> &'a mut Acc {
        let i = match figs
            .iter()
            .position(|a| a.fig.group == group && a.fig.name == name)
        {
            Some(i) => i,
            None => {
                figs.push(Acc {
                    fig: Figure {
                        group: group.into(),
                        name: name.into(),
                        unit: unit.into(),
                        what: what.into(),
                        failed: None,
                        result: FigureResult::Skipped {
                            skipped: String::new(),
                        },
                    },
                    runs: Vec::new(),
                    skipped: None,
                });
                figs.len() - 1
            }
        };
        &mut figs[i]
    }

    /// Statistics when there are runs, else why there are none.
    fn finish(mut self) -> Figure {
        self.fig.result = match Stats::of(&self.runs) {
            Some(stats) => FigureResult::Measured(stats),
            None => FigureResult::Skipped {
                skipped: self.skipped.unwrap_or_else(|| {
                    let failed = self.fig.failed.as_ref();
                    format!(
                        "no successful run: {}",
                        failed.map_or_else(|| "no samples".to_string(), |f| f.join("; "))
                    )
                }),
            },
        };
        self.fig
    }
}

impl Report {
    /// Folds the samples, in the order they were taken, into figures.
    pub fn build(meta: Meta, samples: &[Sample]) -> Report {
        let mut figs: Vec<Acc> = Vec::new();
        let mut notes = Vec::new();
        let mut timeline = None;
        for s in samples {
            match s {
                Sample::Value {
                    group,
                    name,
                    unit,
                    value,
                    what,
                } => Acc::of(&mut figs, group, name, unit, what)
                    .runs
                    .push(*value),
                Sample::Skipped {
                    group,
                    name,
                    unit,
                    reason,
                    what,
                } => Acc::of(&mut figs, group, name, unit, what).skipped = Some(reason.clone()),
                Sample::Failed {
                    group,
                    name,
                    unit,
                    reason,
                } => Acc::of(&mut figs, group, name, unit, "")
                    .fig
                    .failed
                    .get_or_insert_with(Vec::new)
                    .push(reason.clone()),
                Sample::Note(n) => notes.push(n.clone()),
                Sample::Timeline(t) => {
                    timeline.get_or_insert_with(|| t.clone());
                }
            }
        }
        let figures: Vec<Figure> = figs.into_iter().map(Acc::finish).collect();
        let ratios = RATIOS
            .iter()
            .map(|(name, num, den, target)| ratio(&figures, name, *num, *den, *target))
            .collect();
        let targets = FIGURE_TARGETS
            .iter()
            .filter_map(|(g, n, t)| {
                let f = figures.iter().find(|f| f.group == *g && f.name == *n)?;
                let median = match &f.result {
                    FigureResult::Measured(s) => Some(s.median),
                    FigureResult::Skipped { .. } => None,
                };
                Some(TargetCheck {
                    figure: format!("{g}/{n}"),
                    target: t.text(),
                    median,
                    ok: median.map(|m| t.met(m)),
                })
            })
            .collect();
        Report {
            api_version: ironclad_contract::API_VERSION,
            kind: "BenchReport",
            meta,
            figures,
            ratios,
            targets,
            node_boot_timeline: timeline.unwrap_or_default(),
            notes,
        }
    }

    /// The table, the skipped figures, the ratios, the timeline and the notes.
    pub fn table(&self) -> String {
        let mut out = self.figure_table();
        let skipped: Vec<_> = self
            .figures
            .iter()
            .filter_map(|f| match &f.result {
                FigureResult::Skipped { skipped } => Some((f, skipped)),
                FigureResult::Measured(_) => None,
            })
            .collect();
        if !skipped.is_empty() {
            out.push_str("\nskipped:\n");
            for (f, why) in skipped {
                let _ = writeln!(out, "  {}/{}: {why}", f.group, f.name);
            }
        }
        out.push_str("\nratios (medians of this invocation):\n");
        for r in &self.ratios {
            let tgt = r
                .target
                .as_ref()
                .map(|t| format!("  target {t}"))
                .unwrap_or_default();
            let _ = match (&r.skipped, r.value) {
                (Some(why), _) => writeln!(out, "  {}: skipped ({why}){tgt}", r.name),
                (None, None) => writeln!(out, "  {}: skipped (no value){tgt}", r.name),
                (None, Some(v)) => {
                    let ok = match r.ok {
                        None => "",
                        Some(true) => "  OK",
                        Some(false) => "  OFF TARGET",
                    };
                    writeln!(out, "  {}: {v:.2}{tgt}{ok}", r.name)
                }
            };
        }
        if !self.targets.is_empty() {
            out.push_str("\ntargets (medians of this invocation):\n");
            for t in &self.targets {
                let _ = match (t.median, t.ok) {
                    (Some(m), Some(true)) => {
                        writeln!(out, "  {}: {m:.2}  target {}  OK", t.figure, t.target)
                    }
                    (Some(m), _) => writeln!(
                        out,
                        "  {}: {m:.2}  target {}  OFF TARGET",
                        t.figure, t.target
                    ),
                    (None, _) => writeln!(
                        out,
                        "  {}: not measured  target {}  OFF TARGET",
                        t.figure, t.target
                    ),
                };
            }
        }
        if !self.node_boot_timeline.is_empty() {
            out.push_str(
                "\nmachined boot timeline (first run; guest uptime, delta from previous phase):\n",
            );
            let mut prev: Option<f64> = None;
            for (phase, t) in &self.node_boot_timeline {
                let d = prev.map(|p| format!("+{:.3}", t - p)).unwrap_or_default();
                let _ = writeln!(out, "  {t:8.3}  {d:>8}  {phase}");
                prev = Some(*t);
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// The figures' rows: text columns left-aligned, numbers right-aligned.
    fn figure_table(&self) -> String {
        let mut rows: Vec<[String; 8]> = vec![
            [
                "group", "figure", "unit", "median", "min", "max", "spread", "n",
            ]
            .map(String::from),
        ];
        for f in &self.figures {
            let u = f.unit.as_str();
            let (g, n, unit) = (f.group.clone(), f.name.clone(), f.unit.clone());
            rows.push(match &f.result {
                FigureResult::Skipped { .. } => {
                    let e = String::new;
                    [g, n, unit, "skipped".into(), e(), e(), e(), "0".into()]
                }
                FigureResult::Measured(s) => [
                    g,
                    n,
                    unit,
                    fmt_value(s.median, u),
                    fmt_value(s.min, u),
                    fmt_value(s.max, u),
                    fmt_value(s.spread, u),
                    s.n.to_string(),
                ],
            });
        }
        let widths: Vec<usize> = (0..8)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        let line = |r: &[String; 8], header: bool| {
            r.iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i < 3 || header {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
                .trim_end()
                .to_string()
        };
        let mut out = String::from("\n");
        let _ = writeln!(out, "{}", line(&rows[0], true));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "{}", rule.join(" "));
        for r in &rows[1..] {
            let _ = writeln!(out, "{}", line(r, false));
        }
        out
    }
}

fn ratio(
    figures: &[Figure],
    name: &str,
    num: (&str, &str),
    den: (&str, &str),
    target: Option<Target>,
) -> Ratio {
    let median = |(g, n): (&str, &str)| {
        figures
            .iter()
            .find(|f| f.group == g && f.name == n)
            .and_then(|f| match &f.result {
                FigureResult::Measured(s) => Some(s.median),
                FigureResult::Skipped { .. } => None,
            })
    };
    let (a, b) = (median(num), median(den));
    let key = |(g, n): (&str, &str)| format!("{g}/{n}");
    let mut r = Ratio {
        name: name.into(),
        numerator: key(num),
        denominator: key(den),
        target: target.map(Target::text),
        value: None,
        ok: None,
        skipped: None,
    };
    match (a, b) {
        (Some(_), Some(0.0)) => r.skipped = Some("zero denominator".into()),
        (Some(a), Some(b)) => {
            let v = (a / b * 1e3).round() / 1e3;
            r.value = Some(v);
            r.ok = target.map(|t| t.met(v));
        }
        _ => {
            let missing: Vec<String> = [(num, a), (den, b)]
                .into_iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| key(k))
                .collect();
            r.skipped = Some(format!("missing {}", missing.join(", ")));
        }
    }
    r
}

/// A value for the table: seconds with 2 decimals, MiB with 1.
fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "s" => format!("{v:.2}"),
        "MiB" => format!("{v:.1}"),
        _ => format!("{v}"),
    }
}

#[cfg(test)]
mod tests;
