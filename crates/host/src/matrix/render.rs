//! Renderers of a [`Report`]: a table for people, JSON (serde) and JUnit XML
//! for CI (one testcase per check and node; failures and skips marked).

use super::{CheckResult, Report, Verdict, find};
use std::fmt::Write as _;

/// The first line of a result's evidence (or the skip reason), shortened.
fn one_line(r: &CheckResult) -> String {
    let s = match &r.verdict {
        Verdict::Skip { reason } => reason.as_str(),
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
    }
    let (p, f, k) = report.counts();
    let _ = writeln!(
        s,
        "{p} passed, {f} failed, {k} skipped in {:.1}s",
        report.duration_ms as f64 / 1000.0
    );
    s
}

/// The report as pretty JSON.
pub fn json(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".into());
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
pub fn junit(report: &Report) -> String {
    let (_, failures, skipped) = report.counts();
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
    let mut props = Vec::new();
    if let Some(f) = &report.cluster_file {
        props.push(("cluster_file", f.path.clone()));
        props.push(("cluster_file_sha256", f.sha256.clone()));
    }
    if let Some(h) = &report.image_manifest_sha256 {
        props.push(("image_manifest_sha256", h.clone()));
    }
    if !props.is_empty() {
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
    use crate::matrix::{FileRef, REPORT_API_VERSION};

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
            ],
            duration_ms: 1234,
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

    #[test]
    fn junit_is_well_formed_and_marks_failures_and_skips() {
        let x = junit(&sample());
        well_formed(&x).unwrap();
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("<failure ").count(), 1);
        assert_eq!(x.matches("<skipped ").count(), 1);
        assert!(x.contains("tests=\"3\" failures=\"1\" skipped=\"1\""));
        assert!(x.contains("runsc not &lt;registered&gt;"));
        assert!(x.contains("name=\"image_manifest_sha256\" value=\"cd\""));
        assert!(well_formed("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a><b></a>").is_err());
        assert!(well_formed("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>&</a>").is_err());
    }

    #[test]
    fn table_and_json() {
        let r = sample();
        let t = table(&r);
        assert!(t.contains("BRK-01"));
        assert!(t.contains("FAIL"));
        assert!(t.contains("1 passed, 1 failed, 1 skipped in 1.2s"));
        assert!(t.contains("runsc not <registered>"));
        let back: Report = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn escape() {
        assert_eq!(
            xml_escape("a<b>&\"'\u{7}\n"),
            "a&lt;b&gt;&amp;&quot;&apos;\n"
        );
    }
}
