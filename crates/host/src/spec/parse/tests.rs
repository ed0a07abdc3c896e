//! Unit tests of the cluster file parser: defaults, each kind of problem with
//! its line and column, and no panic on arbitrary input.

use super::*;
use crate::spec::{ByteSize, MIN_NODE_MEMORY, NameError, Role};
use proptest::prelude::*;

const HEAD: &str = "apiVersion: ironclad.dev/v1alpha1\nkind: Cluster\n";

fn problems(src: &str) -> Vec<(ProblemKind, usize, usize)> {
    match parse_cluster(src, "t.yaml") {
        Ok(c) => panic!("expected problems, got {c:?}"),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| (p.kind().clone(), p.line(), p.column()))
            .collect(),
    }
}

/// The only problem of `src`, with its line and column.
fn one(src: &str) -> (ProblemKind, usize, usize) {
    let mut all = problems(src);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn minimal_file_gives_the_default_cluster() {
    let c = parse_cluster(HEAD, "t.yaml").unwrap();
    assert_eq!(c, default_cluster());
    assert_eq!(c.name.as_str(), "ironclad");
    assert_eq!(c.image, "trixie");
    assert_eq!(c.network.cidr.to_string(), "10.5.0.0/24");
    assert!(!c.network.egress);
    let names: Vec<_> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["ironclad-cp-1", "ironclad-worker-1"]);
    assert_eq!(c.nodes[0].role, Role::ControlPlane);
    assert_eq!(c.nodes[0].memory, ByteSize::gib(1));
    assert_eq!(c.nodes[1].memory, ByteSize::mib(768));
    assert_eq!(c.nodes[0].address.to_string(), "10.5.0.2");
    assert_eq!(c.nodes[1].address.to_string(), "10.5.0.3");
    assert_eq!(c.matrix.checks, ["all"]);
    assert!(c.runtimes.gvisor && c.runtimes.user_namespaces);
}

#[test]
fn full_file_is_read() {
    let src = format!(
        "{HEAD}metadata: {{name: lab}}\nspec:\n  image: ./my.yaml\n  network: {{cidr: 192.168.7.0/28, egress: true}}\n  controlPlanes: {{count: 3, cpus: 2, memory: 2GiB, disk: 8G}}\n  workers:\n    memory: 512MiB\n    nodes:\n      - {{name: big, memory: 4GiB, cpus: 4}}\n      - {{}}\n  runtimes: {{gvisor: false, userNamespaces: false}}\n  kubernetes: {{enabled: false}}\n  matrix: {{checks: [brk-01, RT-06, CONF-01], destructive: true}}\n"
    );
    let c = parse_cluster(&src, "t.yaml").unwrap();
    assert_eq!(c.name.as_str(), "lab");
    assert_eq!(c.image, "./my.yaml");
    assert!(c.network.egress);
    let names: Vec<_> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["lab-cp-1", "lab-cp-2", "lab-cp-3", "big", "lab-worker-2"]
    );
    assert_eq!(c.control_planes().count(), 3);
    assert!(
        c.control_planes()
            .all(|n| n.cpus == 2 && n.disk == ByteSize::gib(8))
    );
    let big = c.node("big").unwrap();
    assert_eq!(
        (big.cpus, big.memory, big.disk),
        (4, ByteSize::gib(4), ByteSize::gib(4))
    );
    let w2 = c.node("lab-worker-2").unwrap();
    assert_eq!((w2.cpus, w2.memory), (1, ByteSize::mib(512)));
    assert_eq!(w2.address.to_string(), "192.168.7.6");
    assert!(!c.runtimes.gvisor && c.runtimes.runc && !c.runtimes.user_namespaces);
    assert!(!c.kubernetes.enabled && c.matrix.destructive);
    // Check ids in the catalog's spelling, in the file's order.
    assert_eq!(c.matrix.checks, ["BRK-01", "RT-06", "CONF-01"]);
    assert_eq!(c.matrix.ids().unwrap().len(), 3);
}

#[test]
fn kubernetes_is_refused_until_the_image_has_it() {
    let (kind, line, col) = one(&format!("{HEAD}spec:\n  kubernetes:\n    enabled: true\n"));
    assert_eq!(kind, ProblemKind::KubernetesUnsupported);
    assert_eq!((line, col), (5, 14));
    let help = kind.help().unwrap();
    assert!(help.contains("no Kubernetes binaries"), "{help}");
    let c = parse_cluster(
        &format!("{HEAD}spec:\n  kubernetes: {{enabled: false}}\n"),
        "t",
    )
    .unwrap();
    assert!(!c.kubernetes.enabled);
}

#[test]
fn matrix_checks_are_catalog_ids() {
    let (kind, line, col) = one(&format!(
        "{HEAD}spec:\n  matrix:\n    checks: [RT-01, rt-2]\n"
    ));
    assert_eq!(
        kind,
        ProblemKind::UnknownCheck {
            id: "rt-2".into(),
            suggestion: Some("RT-02".into())
        }
    );
    assert_eq!((line, col), (5, 21));
    // A destructive check needs `destructive: true`, wherever that is written.
    let (kind, ..) = one(&format!("{HEAD}spec:\n  matrix: {{checks: [BRK-04-O]}}\n"));
    assert_eq!(
        kind,
        ProblemKind::DestructiveCheck {
            id: "BRK-04-O".into()
        }
    );
    let c = parse_cluster(
        &format!("{HEAD}spec:\n  matrix: {{checks: [BRK-04-O], destructive: true}}\n"),
        "t",
    )
    .unwrap();
    assert_eq!(c.matrix.checks, ["BRK-04-O"]);
    let (kind, ..) = one(&format!(
        "{HEAD}spec:\n  matrix: {{checks: [all, RT-01]}}\n"
    ));
    assert_eq!(kind, ProblemKind::AllWithOthers);
    let c = parse_cluster(&format!("{HEAD}spec:\n  matrix: {{checks: [all]}}\n"), "t").unwrap();
    assert_eq!(c.matrix.ids(), None);
}

#[test]
fn boolean_hints_follow_what_was_written() {
    let hint = |v: &str| match one(&format!("{HEAD}spec:\n  network: {{egress: {v}}}\n")).0 {
        ProblemKind::WrongType { hint, .. } => hint,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        hint("yes"),
        TypeHint::Yaml11Boolean {
            word: "yes".into(),
            means: true
        }
    );
    assert_eq!(
        hint("Off"),
        TypeHint::Yaml11Boolean {
            word: "Off".into(),
            means: false
        }
    );
    assert_eq!(hint("\"false\""), TypeHint::Quoted);
    assert_eq!(hint("maybe"), TypeHint::None);
    assert_eq!(hint("1"), TypeHint::None);
    let (kind, ..) = one(&format!("{HEAD}spec:\n  network: {{egress: n}}\n"));
    assert_eq!(
        kind.help().unwrap(),
        "YAML 1.2 reads `n` as a string, not a boolean: write `false` (or `true`)"
    );
}

#[test]
fn example_files_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clusters");
    let dev = parse_cluster_file(&dir.join("dev.yaml")).unwrap();
    assert_eq!(dev.name.as_str(), "dev");
    assert_eq!(
        (dev.control_planes().count(), dev.workers().count()),
        (1, 1)
    );
    let ha = parse_cluster_file(&dir.join("ha.yaml")).unwrap();
    assert_eq!(ha.name.as_str(), "ha");
    assert_eq!((ha.control_planes().count(), ha.workers().count()), (3, 2));
}

#[test]
fn unknown_fields_suggest_the_closest_key() {
    let (kind, line, col) = one(&format!("{HEAD}spec:\n  workers:\n    memroy: 1GiB\n"));
    assert_eq!((line, col), (5, 5));
    match &kind {
        ProblemKind::UnknownField {
            field, suggestion, ..
        } => {
            assert_eq!(field, "memroy");
            assert_eq!(*suggestion, Some("memory"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(kind.help().unwrap(), "did you mean `memory`?");
    let (kind, ..) = one(&format!("{HEAD}name: x\n"));
    assert_eq!(kind.help().unwrap(), "`name` belongs under `metadata`");
    let (kind, ..) = one(&format!("{HEAD}spec: {{bogus: 1}}\n"));
    assert!(kind.help().unwrap().starts_with("known fields here: image"));
}

#[test]
fn wrong_types_name_the_expected_type() {
    let (kind, line, col) = one(&format!("{HEAD}spec:\n  workers: {{cpus: \"2\"}}\n"));
    assert_eq!((line, col), (4, 19));
    assert_eq!(
        kind,
        ProblemKind::WrongType {
            field: "cpus".into(),
            expected: "an integer",
            found: "a string",
            hint: TypeHint::Quoted,
        }
    );
    let (kind, ..) = one(&format!("{HEAD}spec:\n  network: {{egress: yes}}\n"));
    assert!(matches!(
        kind,
        ProblemKind::WrongType {
            expected: "true or false",
            ..
        }
    ));
    let (kind, ..) = one(&format!("{HEAD}spec: [1]\n"));
    assert!(matches!(
        kind,
        ProblemKind::WrongType {
            expected: "a mapping",
            ..
        }
    ));
    let (kind, ..) = one("[1, 2]\n");
    assert_eq!(kind, ProblemKind::NotAMapping { found: "a list" });
}

#[test]
fn bad_sizes_and_limits() {
    let (kind, line, col) = one(&format!("{HEAD}spec:\n  workers:\n    memory: 12XB\n"));
    assert_eq!((line, col), (5, 13));
    assert!(matches!(kind, ProblemKind::BadSize { .. }));
    let (kind, ..) = one(&format!("{HEAD}spec:\n  workers: {{memory: 128MiB}}\n"));
    assert_eq!(
        kind,
        ProblemKind::MemoryTooSmall {
            value: ByteSize::mib(128),
            min: MIN_NODE_MEMORY
        }
    );
    assert!(kind.help().unwrap().contains("256MiB"));
    let (kind, ..) = one(&format!("{HEAD}spec:\n  workers: {{disk: 1MiB}}\n"));
    assert!(matches!(kind, ProblemKind::DiskTooSmall { .. }));
    for cpus in ["0", "65", "-1", "4294967297"] {
        let (kind, ..) = one(&format!("{HEAD}spec:\n  workers: {{cpus: {cpus}}}\n"));
        assert!(
            matches!(kind, ProblemKind::CpusOutOfRange { .. }),
            "{cpus}: {kind:?}"
        );
    }
}

#[test]
fn cidr_problems() {
    let (kind, line, col) = one(&format!("{HEAD}spec:\n  network:\n    cidr: 10.5.0.0/33\n"));
    assert_eq!((line, col), (5, 11));
    assert!(matches!(kind, ProblemKind::BadCidr { .. }));
    let (kind, ..) = one(&format!("{HEAD}spec:\n  network: {{cidr: 10.5.0.9/24}}\n"));
    assert!(matches!(kind, ProblemKind::CidrHostBits { .. }));
    assert_eq!(kind.help().unwrap(), "did you mean `10.5.0.0/24`?");
    // A /29 has 8 addresses: .2 to .6 for nodes (5); 3 + 3 nodes do not fit.
    let src = format!(
        "{HEAD}spec:\n  network:\n    cidr: 10.5.0.0/29\n  controlPlanes: {{count: 3}}\n  workers: {{count: 3}}\n"
    );
    let (kind, line, col) = one(&src);
    assert_eq!((line, col), (5, 11));
    assert_eq!(
        kind,
        ProblemKind::CidrTooSmall {
            cidr: "10.5.0.0/29".into(),
            capacity: 5,
            nodes: 6
        }
    );
    assert!(kind.help().unwrap().contains("/28"));
    let ok = src.replace("count: 3}\n  workers", "count: 2}\n  workers");
    let c = parse_cluster(&ok, "t.yaml").unwrap();
    assert_eq!(c.nodes.last().unwrap().address.to_string(), "10.5.0.6");
}

#[test]
fn node_names() {
    let src = format!(
        "{HEAD}spec:\n  workers:\n    nodes:\n      - name: a\n      - name: b\n      - name: a\n"
    );
    let (kind, line, col) = one(&src);
    assert_eq!((line, col), (8, 15));
    assert_eq!(
        kind,
        ProblemKind::DuplicateNodeName {
            name: "a".into(),
            first: FirstUse::Line(6)
        }
    );
    // An explicit name may also collide with a generated one.
    let (kind, ..) = one(&format!(
        "{HEAD}spec:\n  workers:\n    nodes: [{{name: ironclad-cp-1}}]\n"
    ));
    assert_eq!(
        kind,
        ProblemKind::DuplicateNodeName {
            name: "ironclad-cp-1".into(),
            first: FirstUse::Generated("controlPlanes")
        }
    );
    let (kind, line, col) = one(&format!("{HEAD}spec:\n  1: x\n"));
    assert_eq!(
        kind,
        ProblemKind::KeyNotString {
            found: "an integer"
        }
    );
    assert_eq!((line, col), (4, 3));
    let (kind, line, col) = one(&format!(
        "{HEAD}spec:\n  workers:\n    nodes: [{{name: Node_1}}]\n"
    ));
    assert_eq!((line, col), (5, 20));
    assert!(matches!(
        kind,
        ProblemKind::BadName(NameError::NotDns1123 { .. })
    ));
    let long = "a".repeat(33);
    let (kind, ..) = one(&format!("{HEAD}metadata: {{name: {long}}}\n"));
    assert!(matches!(
        kind,
        ProblemKind::BadName(NameError::TooLong { .. })
    ));
}

#[test]
fn counts() {
    let (kind, line, col) = one(&format!("{HEAD}spec:\n  controlPlanes: {{count: 0}}\n"));
    assert_eq!(kind, ProblemKind::ZeroControlPlanes);
    assert_eq!((line, col), (4, 26));
    let (kind, ..) = one(&format!("{HEAD}spec:\n  controlPlanes: {{nodes: []}}\n"));
    assert_eq!(kind, ProblemKind::ZeroControlPlanes);
    let c = parse_cluster(&format!("{HEAD}spec:\n  workers: {{count: 0}}\n"), "t").unwrap();
    assert_eq!(c.nodes.len(), 1);
    let (kind, ..) = one(&format!(
        "{HEAD}spec:\n  workers: {{count: 3, nodes: [{{name: a}}]}}\n"
    ));
    assert_eq!(
        kind,
        ProblemKind::CountMismatch {
            count: 3,
            listed: 1
        }
    );
    let (kind, ..) = one(&format!("{HEAD}spec:\n  workers: {{count: 1000000}}\n"));
    assert!(matches!(kind, ProblemKind::TooManyNodes { .. }));
}

#[test]
fn api_version_and_kind() {
    let (kind, line, col) = one("apiVersion: v1\nkind: Cluster\n");
    assert_eq!((line, col), (1, 13));
    assert!(matches!(kind, ProblemKind::WrongApiVersion { .. }));
    let (kind, line, _) = one("apiVersion: ironclad.dev/v1alpha1\nkind: Pod\n");
    assert_eq!(line, 2);
    assert!(matches!(kind, ProblemKind::WrongKind { .. }));
    let all = problems("metadata: {name: x}\n");
    let kinds: Vec<_> = all.iter().map(|p| &p.0).collect();
    assert!(kinds.contains(&&ProblemKind::MissingField {
        field: "apiVersion"
    }));
    assert!(kinds.contains(&&ProblemKind::MissingField { field: "kind" }));
    assert_eq!(one("").0, ProblemKind::EmptyDocument);
    assert_eq!(one("# only a comment\n").0, ProblemKind::EmptyDocument);
}

#[test]
fn all_problems_are_reported_in_file_order() {
    let src = format!(
        "{HEAD}spec:\n  workers:\n    memory: 12XB\n    cpu: 2\n  network: {{cidr: nope}}\n  runtimes: {{runc: false, crun: false, gvisor: false}}\n"
    );
    let err = parse_cluster(&src, "t.yaml").unwrap_err();
    let lines: Vec<_> = err.problems().iter().map(|p| p.line()).collect();
    assert_eq!(lines, [5, 6, 7, 8], "{err:?}");
    assert!(matches!(err, SpecError::Many { .. }));
    let rendered = render(&err);
    assert!(rendered.contains("t.yaml:5:13"), "{rendered}");
    assert!(rendered.contains("t.yaml:6:5"), "{rendered}");
    assert!(rendered.contains("did you mean `cpus`?"), "{rendered}");
}

#[test]
fn syntax_errors_point_at_the_line() {
    let src = format!("{HEAD}spec:\n  workers: {{count: 1\n  image: x\n");
    let err = parse_cluster(&src, "t.yaml").unwrap_err();
    let SpecError::Syntax(syntax) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((syntax.line, syntax.column), (5, 8), "{err:?}");
    let rendered = render(&err);
    assert!(rendered.contains("t.yaml:"), "{rendered}");
    // Repeated keys are reported with the other problems.
    let all = problems(&format!(
        "{HEAD}kind: Cluster\nspec: {{image: a, image: b}}\n"
    ));
    assert_eq!(
        all,
        [
            (
                ProblemKind::DuplicateField {
                    field: "kind".into()
                },
                3,
                1
            ),
            (
                ProblemKind::DuplicateField {
                    field: "image".into()
                },
                4,
                18
            ),
        ]
    );
}

#[test]
fn anchors_and_aliases_are_followed() {
    let src = format!(
        "{HEAD}spec:\n  controlPlanes: &shape {{cpus: 2, memory: 2GiB}}\n  workers: *shape\n"
    );
    let c = parse_cluster(&src, "t.yaml").unwrap();
    assert!(
        c.nodes
            .iter()
            .all(|n| n.cpus == 2 && n.memory == ByteSize::gib(2))
    );
}

fn render(err: &SpecError) -> String {
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut out, err)
        .unwrap();
    out
}

fn valid_documents() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clusters");
    let mut docs = vec![HEAD.to_string()];
    for f in ["dev.yaml", "ha.yaml"] {
        docs.push(std::fs::read_to_string(dir.join(f)).unwrap());
    }
    docs
}

/// Parses and, on error, renders the diagnostic: neither may panic.
fn exercise(src: &str) {
    match parse_cluster(src, "p.yaml") {
        Ok(c) => assert!(!c.nodes.is_empty()),
        Err(e) => {
            let _ = render(&e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,200}") {
        exercise(&s);
    }

    #[test]
    fn yamlish_strings_never_panic(s in "[a-zA-Z0-9:{}\\[\\],&*!|>#'\" \\n-]{0,200}") {
        exercise(&format!("{HEAD}{s}"));
    }

    #[test]
    fn mutated_documents_never_panic(
        doc in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<char>()), 1..8),
    ) {
        let mut chars: Vec<char> = valid_documents()[doc].chars().collect();
        for (at, op, c) in edits {
            if chars.is_empty() { break; }
            let i = at.index(chars.len());
            match op {
                0 => { chars.remove(i); }
                1 => chars.insert(i, c),
                2 => chars[i] = c,
                _ => { chars.truncate(i); }
            }
        }
        exercise(&chars.into_iter().collect::<String>());
    }
}

#[test]
fn parser_limits_are_errors_not_crashes() {
    let deep = format!("a: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    let err = parse_cluster(&deep, "t.yaml").unwrap_err();
    assert!(matches!(err, SpecError::Syntax(_)), "{err:?}");
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (name, prev) in ["b", "c", "d", "e", "f", "g"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f"])
    {
        let refs = vec![format!("*{prev}"); 10].join(", ");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let err = parse_cluster(&bomb, "t.yaml").unwrap_err();
    let SpecError::Syntax(e) = &err else {
        panic!("{err:?}")
    };
    assert!(e.help.contains("nests too deeply"), "{err:?}");
}
