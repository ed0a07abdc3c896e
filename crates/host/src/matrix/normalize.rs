//! The host's check of the verdicts a node sends: the host does not take a
//! node's word for them. A node's EXPOSED is only accepted for a check the
//! catalog gives a mitigation (an attack a plain privileged container gets
//! through on a shared kernel) and only when no variant the node protects
//! got through; a PASS (or SKIP) whose evidence says an attack got through
//! (`got through`, `ESCAPED`, or one of the probes' own success markers,
//! [`ESCAPE_MARKERS`]) becomes EXPOSED when only the privileged variant of
//! such a check did, FAIL otherwise. Pure logic over one [`CheckResult`];
//! `run` applies it to every node result as it arrives.

use super::{CheckId, CheckResult, ESCAPE_MARKERS, GOT_THROUGH, Verdict, find};

/// The pod variants as the node's evidence names them
/// (`ironclad_node::cri::Variant`): `priv` is the plain privileged one, the
/// others are variants the node must protect.
const PRIV: &str = "priv";
const PROTECTED: &[&str] = &["unpriv", "userns", "gvisor", "restricted"];

/// Whether a check is an attack whose evidence speaks per variant: the BRK
/// family and RT-10 (the BRK probes under userns and gVisor).
fn is_attack(id: &str) -> bool {
    id.starts_with("BRK-") || id == CheckId::Rt10.as_str()
}

/// The variant an evidence line is about: the last word before its first
/// `:` (`priv: got through ...`, `BRK-04 userns: ESCAPED`), if it is one.
fn variant_of(line: &str) -> Option<&str> {
    let head = line.split(':').next()?;
    let word = head.split_whitespace().last()?;
    (word == PRIV || PROTECTED.contains(&word)).then_some(word)
}

/// Whether an evidence line says the attack got through.
fn says_through(line: &str) -> bool {
    GOT_THROUGH
        .iter()
        .chain(ESCAPE_MARKERS)
        .any(|m| line.contains(m))
}

/// What a result's evidence shows got through: `(line, variant)` for each
/// line that says so (`None`: the line names no variant).
fn through_lines(r: &CheckResult) -> Vec<(&str, Option<&str>)> {
    if !is_attack(&r.id) {
        return Vec::new();
    }
    r.evidence
        .iter()
        .map(String::as_str)
        .filter(|l| says_through(l))
        .map(|l| (l, variant_of(l)))
        .collect()
}

/// A line short enough for a reason.
fn clip(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() > MAX {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}

/// Checks a node's verdict against the catalog and the result's evidence,
/// and corrects it; the evidence gains a `host: ...` line saying why.
/// Returns whether the verdict changed.
pub fn normalize(r: &mut CheckResult) -> bool {
    let mitigation = find(&r.id).and_then(|c| c.exposed_mitigation);
    let through = through_lines(r);
    // A line that names no variant, or names one the node protects, or an
    // attack the node must block even from a privileged container.
    let protected = through
        .iter()
        .find(|(_, v)| mitigation.is_none() || *v != Some(PRIV))
        .map(|(l, _)| clip(l));
    let label = r.verdict.label();
    let (verdict, why) = match (&r.verdict, protected, through.first(), mitigation) {
        (Verdict::Fail, ..) => return false,
        (Verdict::Exposed { .. }, _, _, None) => (
            Verdict::Fail,
            format!(
                "host: the node said EXPOSED, but the catalog names no mitigation for {}: an attack the node must block got through, FAIL",
                r.id
            ),
        ),
        (_, Some(line), ..) => (
            Verdict::Fail,
            format!(
                "host: the node said {label}, but a variant the node protects got through ({line}): FAIL"
            ),
        ),
        (Verdict::Exposed { .. }, ..) => return false,
        (Verdict::Pass | Verdict::Skip { .. }, None, Some((line, _)), Some(m)) => (
            Verdict::exposed(
                format!(
                    "a privileged container got through ({}); the node said {label}",
                    clip(line)
                ),
                m,
            ),
            format!(
                "host: the node said {label}, but its evidence shows the privileged variant got through: EXPOSED"
            ),
        ),
        // Nothing got through (without a mitigation, whatever got through
        // was protected and failed above).
        _ => return false,
    };
    r.verdict = verdict;
    r.evidence.push(why);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, verdict: Verdict, evidence: &[&str]) -> CheckResult {
        CheckResult::new(
            id,
            "n1",
            verdict,
            evidence.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn an_exposed_without_a_catalog_mitigation_fails() {
        // BRK-01 and BRK-10 are attacks the node must block from every
        // variant; RT-01 is no attack at all.
        for id in ["BRK-01", "BRK-03", "BRK-10", "RT-01", "NOPE-1"] {
            let mut r = result(id, Verdict::exposed("x", "y"), &["priv: got through"]);
            assert!(normalize(&mut r), "{id}");
            assert_eq!(r.verdict, Verdict::Fail, "{id}");
            assert!(
                r.evidence.last().unwrap().contains("names no mitigation"),
                "{id}: {:?}",
                r.evidence
            );
        }
    }

    #[test]
    fn an_honest_exposed_stays() {
        let v = Verdict::exposed("priv wrote sysrq", "admission");
        let mut r = result(
            "BRK-04",
            v.clone(),
            &[
                "priv: got through (unprotectable ...): WROTE-SYSRQ",
                "unpriv: blocked: Read-only file system",
                "userns: blocked: Read-only file system",
                "gvisor: not run: runsc missing",
            ],
        );
        assert!(!normalize(&mut r));
        assert_eq!(r.verdict, v);
        assert_eq!(r.evidence.len(), 4);
    }

    #[test]
    fn an_exposed_where_a_protected_variant_got_through_fails() {
        let mut r = result(
            "BRK-07",
            Verdict::exposed("x", "y"),
            &[
                "priv: got through (...): OPENED-RW:/proc/sys/kernel/core_pattern",
                "userns: blocked: OPENED-RW:/proc/sys/kernel/core_pattern",
            ],
        );
        assert!(normalize(&mut r));
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(
            r.evidence
                .last()
                .unwrap()
                .contains("userns: blocked: OPENED-RW")
        );
    }

    #[test]
    fn a_pass_whose_privileged_variant_got_through_is_exposed() {
        for line in [
            "priv: got through (unprotectable): WROTE-SYSRQ",
            "priv: blocked: WROTE-SYSRQ",
            "priv: blocked: READ-RAW:/dev/vdb:4096B",
            "priv: blocked: MOUNTED-AGAIN:/dev/vdb: etc var",
        ] {
            let id = if line.contains("SYSRQ") {
                "BRK-04"
            } else {
                "BRK-05"
            };
            let mut r = result(id, Verdict::Pass, &[line, "userns: blocked: EROFS"]);
            assert!(normalize(&mut r), "{line}");
            match &r.verdict {
                Verdict::Exposed { reason, mitigation } => {
                    assert!(
                        reason.contains(line) && reason.contains("said PASS"),
                        "{reason}"
                    );
                    assert_eq!(
                        Some(mitigation.as_str()),
                        find(id).unwrap().exposed_mitigation
                    );
                }
                other => panic!("{line}: {other:?}"),
            }
            assert!(
                r.evidence
                    .last()
                    .unwrap()
                    .starts_with("host: the node said PASS")
            );
        }
        // The node's own SKIP with an escape in its evidence: the same.
        let mut r = result(
            "BRK-02",
            Verdict::skip("?"),
            &["priv: blocked: NODE-ROOT-SEEN"],
        );
        assert!(normalize(&mut r));
        assert!(matches!(r.verdict, Verdict::Exposed { .. }));
    }

    #[test]
    fn a_pass_where_a_protected_variant_got_through_fails() {
        for (id, line) in [
            ("BRK-04", "unpriv: blocked: WROTE-SYSRQ"),
            ("BRK-06", "userns: ESCAPED: invalid module format"),
            ("BRK-10", "restricted: blocked: 10.88.0.1:50000 CONNECTED"),
            // Attacks the node must block even from a privileged container.
            ("BRK-01", "priv: got through: SHELL-RAN"),
            ("BRK-03", "priv: blocked: REMOUNTED-RW"),
            // RT-10's lines name the attack, then the variant.
            ("RT-10", "BRK-05 gvisor: ESCAPED"),
            // A line naming no variant proves nothing held.
            ("BRK-09", "OPENED-RW:/proc/1234/mem"),
        ] {
            let mut r = result(id, Verdict::Pass, &[line]);
            assert!(normalize(&mut r), "{id}");
            assert_eq!(r.verdict, Verdict::Fail, "{id}: {line}");
        }
    }

    #[test]
    fn honest_results_are_left_alone() {
        for r in [
            result(
                "BRK-05",
                Verdict::Pass,
                &[
                    "priv: blocked: sh: can't open '/dev/vdb': Device or resource busy",
                    "unpriv: blocked: absent:/dev/vda",
                ],
            ),
            result(
                "BRK-10",
                Verdict::Pass,
                &[
                    "unpriv: blocked: 10.88.0.1:50000 timed out",
                    "node: answered 2 attempts with ICMP destination unreachable",
                ],
            ),
            result("RT-10", Verdict::Pass, &["BRK-04 userns: blocked"]),
            // Not an attack: its evidence is not read for escapes.
            result("NET-02", Verdict::Fail, &["node: tcp 10.0.2.2: CONNECTED"]),
            result("CONF-04", Verdict::Pass, &["CONNECTED to dev-w-1"]),
            result(
                "BRK-02",
                Verdict::Fail,
                &["userns: ESCAPED: NODE-ROOT-SEEN"],
            ),
            result("RT-09", Verdict::skip("gVisor is off"), &[]),
        ] {
            let mut n = r.clone();
            assert!(!normalize(&mut n), "{r:?}");
            assert_eq!(n, r);
        }
    }

    #[test]
    fn variants_are_read_from_the_evidence_line() {
        assert_eq!(variant_of("priv: got through"), Some("priv"));
        assert_eq!(variant_of("BRK-04 userns: ESCAPED"), Some("userns"));
        assert_eq!(variant_of("not run: userns: x"), None);
        assert_eq!(variant_of("OPENED-RW:/dev/vda"), None);
    }
}
