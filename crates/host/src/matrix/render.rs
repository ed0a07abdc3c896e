//! Renderers of a [`Report`]: a table for people, JSON (serde) and JUnit XML
//! for CI (one testcase per check and node; failures and skips marked).
//!
//! EXPOSED (an attack got through where the node has no defence) is never
//! rendered as a pass: in the table it has its own count and a line with the
//! mitigation; in JUnit it is a `<skipped message="EXPOSED: ...">` test case
//! (readers show it as not passed, and the run as green), or under `strict`
//! a `<failure type="EXPOSED">` (the run red, as its exit status); the
//! suite's `exposed` property counts them either way.

use super::{CheckResult, Report, Step, Verdict, find};
use std::fmt::Write as _;

/// The first line of a result's evidence (or the skip or exposure reason),
/// shortened.
fn one_line(r: &CheckResult) -> String {
    let s = match &r.verdict {
        Verdict::Skip { reason } | Verdict::Exposed { reason, .. } => reason.as_str(),
        _ => r.evidence.first().map(String::as_str).unwrap_or(""),
    };
    let line = s.lines().next().unwrap_or("").trim();
    let mut out: String = line.chars().take(100).collect();
    if line.chars().count() > 100 {
        out.push('…');
    }
    out
}

/// The report as a table for people, with a header and a summary line.
pub fn table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "cluster {}", report.cluster);
    if let Some(f) = &report.cluster_file {
        let _ = writeln!(s, "cluster file {} (sha256 {})", f.path, f.sha256);
    }
    if let Some(h) = &report.image_manifest_sha256 {
        let _ = writeln!(s, "image manifest sha256 {h}");
    }
    let idw = report
        .results
        .iter()
        .map(|r| r.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let nw = report
        .results
        .iter()
        .map(|r| r.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "{:idw$}  {:nw$}  {:7}  EVIDENCE",
        "ID", "NODE", "VERDICT"
    );
    for r in &report.results {
        let _ = writeln!(
            s,
            "{:idw$}  {:nw$}  {:7}  {}",
            r.id,
            r.node,
            r.verdict.label(),
            one_line(r)
        );
        if let Verdict::Exposed { mitigation, .. } = &r.verdict {
            let _ = writeln!(
                s,
                "{:idw$}  {:nw$}  {:7}  ↳ blocked by: {mitigation}",
                "", "", ""
            );
        }
    }
    for n in &report.steps {
        let slow: Vec<String> = slowest(&n.steps, SLOWEST_SHOWN)
            .iter()
            .map(|st| {
                format!(
                    "{} {:.1} s (from {:.1} s)",
                    st.what,
                    st.ms as f64 / 1000.0,
                    st.start_ms as f64 / 1000.0
                )
            })
            .collect();
        let _ = writeln!(s, "{}: slowest steps: {}", n.node, slow.join("; "));
    }
    let _ = writeln!(
        s,
        "{} in {:.1}s",
        summary(report),
        report.duration_ms as f64 / 1000.0
    );
    s
}

/// How many of a node's steps the table names.
const SLOWEST_SHOWN: usize = 3;

/// The `n` longest of `steps`, longest first (the earlier of equals first).
fn slowest(steps: &[Step], n: usize) -> Vec<&Step> {
    let mut v: Vec<&Step> = steps.iter().collect();
    v.sort_by(|a, b| b.ms.cmp(&a.ms).then(a.start_ms.cmp(&b.start_ms)));
    v.truncate(n);
    v
}

/// The counts in words: `3 passed, 1 failed, 6 exposed, 1 skipped`.
pub fn summary(report: &Report) -> String {
    let n = report.counts();
    format!(
        "{} passed, {} failed, {} exposed, {} skipped",
        n.passed, n.failed, n.exposed, n.skipped
    )
}

/// The report as pretty JSON, with a `summary` object beside the results:
/// `{"passed", "failed", "exposed", "skipped"}` counts (derived; readers of
/// the report as a [`Report`] ignore it). docs/matrix.md lists the fields.
pub fn json(report: &Report) -> String {
    let mut v = serde_json::to_value(report).unwrap_or_default();
    if let (Some(map), Ok(counts)) = (v.as_object_mut(), serde_json::to_value(report.counts())) {
        map.insert("summary".into(), counts);
    }
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// Escapes text for XML character data and attribute values; drops the
/// characters XML 1.0 cannot hold.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The report as JUnit XML: one testsuite, one testcase per check and node.
/// An EXPOSED check is a skipped test case, or with `strict` a failed one
/// (`type="EXPOSED"`); never a passed one.
pub fn junit(report: &Report, strict: bool) -> String {
    let n = report.counts();
    let (failures, skipped) = if strict {
        (n.failed + n.exposed, n.skipped)
    } else {
        (n.failed, n.skipped + n.exposed)
    };
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"ironclad matrix\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">",
        report.results.len(),
        report.duration_ms as f64 / 1000.0
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\">",
        xml_escape(&format!("matrix.{}", report.cluster)),
        report.results.len(),
        report.duration_ms as f64 / 1000.0
    );
    let mut props = vec![
        ("passed", n.passed.to_string()),
        ("failed", n.failed.to_string()),
        ("exposed", n.exposed.to_string()),
        ("skipped", n.skipped.to_string()),
        ("strict", strict.to_string()),
    ];
    if let Some(f) = &report.cluster_file {
        props.push(("cluster_file", f.path.clone()));
        props.push(("cluster_file_sha256", f.sha256.clone()));
    }
    if let Some(h) = &report.image_manifest_sha256 {
        props.push(("image_manifest_sha256", h.clone()));
    }
    {
        s.push_str("    <properties>\n");
        for (k, v) in props {
            let _ = writeln!(
                s,
                "      <property name=\"{k}\" value=\"{}\"/>",
                xml_escape(&v)
            );
        }
        s.push_str("    </properties>\n");
    }
    for r in &report.results {
        let title = find(&r.id).map(|c| c.title).unwrap_or("");
        let name = format!("{} {} [{}]", r.id, title, r.node);
        let _ = write!(
            s,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&format!("matrix.{}", r.node)),
            xml_escape(&name),
            r.duration_ms as f64 / 1000.0
        );
        let evidence = xml_escape(&r.evidence.join("\n"));
        match &r.verdict {
            Verdict::Pass => {
                if evidence.is_empty() {
                    s.push_str("/>\n");
                } else {
                    let _ = writeln!(
                        s,
                        ">\n      <system-out>{evidence}</system-out>\n    </testcase>"
                    );
                }
            }
            Verdict::Fail => {
                let _ = writeln!(
                    s,
                    ">\n      <failure message=\"{}\" type=\"FAIL\">{evidence}</failure>\n    </testcase>",
                    xml_escape(&one_line(r))
                );
            }
            Verdict::Exposed { reason, mitigation } => {
                let message = xml_escape(&format!("EXPOSED: {reason}; blocked by: {mitigation}"));
                if strict {
                    let _ = writeln!(
                        s,
                        ">\n      <failure message=\"{message}\" type=\"EXPOSED\">{evidence}</failure>\n    </testcase>"
                    );
                } else {
                    let _ = writeln!(
                        s,
                        ">\n      <skipped message=\"{message}\"/>\n      <system-out>{evidence}</system-out>\n    </testcase>"
                    );
                }
            }
            Verdict::Skip { reason } => {
                let _ = writeln!(
                    s,
                    ">\n      <skipped message=\"{}\"/>\n      <system-out>{evidence}</system-out>\n    </testcase>",
                    xml_escape(reason)
                );
            }
        }
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{FileRef, NodeSteps, REPORT_API_VERSION};

    fn sample() -> Report {
        Report {
            api_version: REPORT_API_VERSION.into(),
            cluster: "dev<&>".into(),
            cluster_file: Some(FileRef {
                path: "clusters/\"dev\".yaml".into(),
                sha256: "ab".into(),
            }),
            image_manifest_sha256: Some("cd".into()),
            destructive: false,
            results: vec![
                CheckResult::new(
                    "BRK-01",
                    "cp-1",
                    Verdict::Pass,
                    vec!["nsenter: can't execute '/bin/bash': No such file or directory".into()],
                ),
                CheckResult::new(
                    "RT-02",
                    "cp-1",
                    Verdict::Fail,
                    vec!["Seccomp:\t0 <\u{1}bad> & 'q'".into()],
                ),
                CheckResult::new(
                    "RT-09",
                    "w-1",
                    Verdict::skip("runsc not <registered>"),
                    vec![],
                ),
                CheckResult::new(
                    "BRK-04",
                    "w-1",
                    Verdict::exposed(
                        "a privileged container got through (WROTE-SYSRQ)",
                        "user namespaces <or> gVisor",
                    ),
                    vec!["priv: got through: WROTE-SYSRQ".into()],
                ),
            ],
            duration_ms: 1234,
            steps: Vec::new(),
        }
    }

    /// A minimal XML well-formedness check: balanced tags, quoted attributes,
    /// only known entities, no raw control characters.
    fn well_formed(xml: &str) -> Result<(), String> {
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .ok_or("no declaration")?;
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt])?;
            let gt = rest[lt..].find('>').ok_or("unclosed tag")? + lt;
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("mismatched </{name}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().ok_or("empty tag")?;
            let attrs = &tag[name.len()..];
            if attrs.matches('"').count() % 2 != 0 || attrs.contains('<') {
                return Err(format!("bad attributes in <{name}>"));
            }
            check_text(attrs)?;
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        check_text(rest)?;
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    fn check_text(t: &str) -> Result<(), String> {
        if t.chars()
            .any(|c| (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err("control character".into());
        }
        let mut rest = t;
        while let Some(i) = rest.find('&') {
            let end = rest[i..].find(';').ok_or("bare &")? + i;
            if !matches!(
                &rest[i..=end],
                "&amp;" | "&lt;" | "&gt;" | "&quot;" | "&apos;"
            ) {
                return Err(format!("unknown entity {}", &rest[i..=end]));
            }
            rest = &rest[end + 1..];
        }
        Ok(())
    }

    /// The testcase element of `id` in `xml`.
    fn testcase<'a>(xml: &'a str, id: &str) -> &'a str {
        let start = xml.find(&format!("name=\"{id} ")).unwrap();
        let end = xml[start..]
            .find("</testcase>")
            .map_or(xml.len(), |e| start + e);
        &xml[start..end]
    }

    #[test]
    fn junit_is_well_formed_and_marks_failures_and_skips() {
        let x = junit(&sample(), false);
        well_formed(&x).unwrap();
        assert_eq!(x.matches("<testcase ").count(), 4);
        assert_eq!(x.matches("<failure ").count(), 1);
        // The EXPOSED check is skipped, not passed, and says why.
        assert_eq!(x.matches("<skipped ").count(), 2);
        assert!(x.contains("tests=\"4\" failures=\"1\" skipped=\"2\""));
        let brk04 = testcase(&x, "BRK-04");
        assert!(
            brk04.contains("<skipped message=\"EXPOSED: a privileged container got through (WROTE-SYSRQ); blocked by: user namespaces &lt;or&gt; gVisor\"/>"),
            "{brk04}"
        );
        assert!(x.contains("<property name=\"exposed\" value=\"1\"/>"));
        assert!(x.contains("runsc not &lt;registered&gt;"));
        assert!(x.contains("name=\"image_manifest_sha256\" value=\"cd\""));
        assert!(well_formed("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a><b></a>").is_err());
        assert!(well_formed("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>&</a>").is_err());
    }

    #[test]
    fn junit_strict_fails_exposed_checks() {
        let x = junit(&sample(), true);
        well_formed(&x).unwrap();
        assert_eq!(x.matches("<failure ").count(), 2);
        assert_eq!(x.matches("<skipped ").count(), 1);
        assert!(x.contains("tests=\"4\" failures=\"2\" skipped=\"1\""));
        let brk04 = testcase(&x, "BRK-04");
        assert!(brk04.contains("type=\"EXPOSED\""), "{brk04}");
        assert!(
            brk04.contains("priv: got through: WROTE-SYSRQ</failure>"),
            "{brk04}"
        );
        assert!(x.contains("<property name=\"strict\" value=\"true\"/>"));
    }

    /// A passed test case has no child but its output: what JUnit readers
    /// count as passed.
    #[test]
    fn no_exposed_check_is_a_passed_test_case() {
        for strict in [false, true] {
            let x = junit(&sample(), strict);
            let brk04 = testcase(&x, "BRK-04");
            assert!(
                brk04.contains("<skipped ") || brk04.contains("<failure "),
                "{brk04}"
            );
        }
    }

    #[test]
    fn table_and_json() {
        let r = sample();
        let t = table(&r);
        assert!(t.contains("BRK-01"));
        assert!(t.contains("FAIL"));
        assert!(
            t.contains("1 passed, 1 failed, 1 exposed, 1 skipped in 1.2s"),
            "{t}"
        );
        assert!(t.contains("runsc not <registered>"));
        let brk04 = t.lines().position(|l| l.starts_with("BRK-04")).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[brk04].contains("EXPOSED  a privileged container got through"),
            "{t}"
        );
        assert!(
            lines[brk04 + 1]
                .trim_start()
                .starts_with("↳ blocked by: user namespaces"),
            "{t}"
        );
        let json_text = json(&r);
        let back: Report = serde_json::from_str(&json_text).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        let brk04 = &v["results"][3];
        assert_eq!(brk04["verdict"], "EXPOSED");
        assert_eq!(brk04["mitigation"], "user namespaces <or> gVisor");
        assert_eq!(
            v["summary"],
            serde_json::json!({"passed": 1, "failed": 1, "exposed": 1, "skipped": 1})
        );
        // No steps: no key in the JSON, no line in the table.
        assert!(v.get("steps").is_none(), "{json_text}");
        assert!(!t.contains("slowest steps"), "{t}");
    }

    /// Each node's three longest steps, longest first, on one line before
    /// the summary; every step in the JSON.
    #[test]
    fn the_slowest_steps_of_each_node() {
        let step = |what: &str, start_ms, ms| Step {
            what: what.into(),
            start_ms,
            ms,
        };
        let mut r = sample();
        r.steps = vec![NodeSteps {
            node: "w-1".into(),
            steps: vec![
                step("waiting for containerd to answer", 0, 900),
                step("CRI RunPodSandbox matrix-gvisor-1", 950, 45_600),
                step("CRI RunPodSandbox matrix-unpriv-1", 950, 20_800),
                step("CRI ExecSync gvisor batch", 52_000, 21_000),
            ],
        }];
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[lines.len() - 2],
            "w-1: slowest steps: CRI RunPodSandbox matrix-gvisor-1 45.6 s (from 0.9 s); \
             CRI ExecSync gvisor batch 21.0 s (from 52.0 s); \
             CRI RunPodSandbox matrix-unpriv-1 20.8 s (from 0.9 s)",
            "{t}"
        );
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["steps"][0]["node"], "w-1");
        assert_eq!(v["steps"][0]["steps"].as_array().unwrap().len(), 4);
        assert_eq!(
            v["steps"][0]["steps"][1],
            serde_json::json!({"what": "CRI RunPodSandbox matrix-gvisor-1", "start_ms": 950, "ms": 45600})
        );
    }

    #[test]
    fn escape() {
        assert_eq!(
            xml_escape("a<b>&\"'\u{7}\n"),
            "a&lt;b&gt;&amp;&quot;&apos;\n"
        );
    }
}
