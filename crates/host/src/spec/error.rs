//! Errors of the cluster file parser: [`SpecError`] for the file as a whole,
//! [`Problem`] for one value at a line and column, [`ProblemKind`] for what is
//! wrong with it (message, label and help text).
//!
//! Diagnostics stay small whatever the file holds: values quoted in messages
//! are cut ([`super::clip`]), each problem carries only an [`Excerpt`] of the
//! file (its line and the lines around it, each cut to a window of
//! [`EXCERPT_LINE_BYTES`]), and a file with many problems reports the first
//! [`MAX_REPORTED_PROBLEMS`] and the count of the rest.

use super::parse::KIND;
use super::raw::{Pos, Value};
use super::{ByteSize, NameError, SizeError};
use miette::{MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

/// The most problems one report shows (in position order); the others are
/// counted.
pub const MAX_REPORTED_PROBLEMS: usize = 20;
/// The most bytes of one line shown around a problem.
pub const EXCERPT_LINE_BYTES: usize = 120;
/// How far before the offending value the window of a long line starts.
const EXCERPT_LEAD_BYTES: usize = 40;

/// A problem with a cluster file, rendered by miette with the offending span.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    #[diagnostic(help("check the path given with -f"))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{path} is not UTF-8 text (invalid byte at offset {offset})")]
    #[diagnostic(help("a cluster file is YAML text in UTF-8"))]
    NotUtf8 { path: String, offset: usize },
    /// The file is larger than any cluster file needs to be; refused before
    /// it is parsed.
    #[error("{path} is too large for a cluster file: {size} bytes, the limit is {max} bytes")]
    #[diagnostic(help(
        "a cluster file is a few hundred bytes of YAML; check that -f names the right file"
    ))]
    TooLarge {
        path: String,
        /// Its size, or the bytes read before the limit was passed.
        size: u64,
        max: u64,
    },
    /// The text is not YAML.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Syntax(Box<SyntaxError>),
    /// One problem in an otherwise well-formed YAML document.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<Problem>),
    /// Several problems, each with its own span: the first
    /// [`MAX_REPORTED_PROBLEMS`] in the file's order, and how many there are.
    #[error("{file}: {total} problems in the cluster file{}", shown_note(problems.len(), *total))]
    Many {
        file: String,
        #[related]
        problems: Vec<Problem>,
        /// All problems found, shown or not.
        total: usize,
        #[help]
        help: Option<String>,
    },
}

fn shown_note(shown: usize, total: usize) -> String {
    if shown < total {
        format!(" (the first {shown} are shown)")
    } else {
        String::new()
    }
}

impl SpecError {
    /// The problems reported (empty for read and syntax errors; at most
    /// [`MAX_REPORTED_PROBLEMS`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            SpecError::Invalid(p) => std::slice::from_ref(p.as_ref()),
            SpecError::Many { problems, .. } => problems,
            _ => &[],
        }
    }

    /// How many problems were found, reported or not.
    pub fn total_problems(&self) -> usize {
        match self {
            SpecError::Many { total, .. } => *total,
            other => other.problems().len(),
        }
    }

    /// The report of `problems` (in file order; at least two) out of `total`.
    pub(super) fn many(file: String, problems: Vec<Problem>, total: usize) -> Self {
        let hidden = total.saturating_sub(problems.len());
        SpecError::Many {
            file,
            problems,
            total,
            help: (hidden > 0).then(|| {
                format!(
                    "… and {hidden} more not shown: fix these and run `ironclad validate` again"
                )
            }),
        }
    }
}

/// What is wrong with one value of the cluster file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProblemKind {
    #[error("unknown field `{field}` in {section}")]
    UnknownField {
        field: String,
        section: &'static str,
        suggestion: Option<&'static str>,
        known: &'static [&'static str],
        /// Where the key belongs when it is known at another level.
        belongs_under: Option<&'static str>,
    },
    #[error("keys must be field names, found {found}")]
    KeyNotString { found: &'static str },
    #[error("duplicate field `{field}`")]
    DuplicateField { field: String },
    #[error("required field `{field}` is missing")]
    MissingField { field: &'static str },
    #[error("`{field}` must be {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
        /// What the value says, when that tells the fix apart (see [`TypeHint`]).
        hint: TypeHint,
    },
    #[error("unsupported apiVersion {found:?}")]
    WrongApiVersion { found: String },
    #[error("unsupported kind {found:?}")]
    WrongKind { found: String },
    #[error("bad size for `{field}`: {error}")]
    BadSize { field: String, error: SizeError },
    #[error("bad name: {0}")]
    BadName(NameError),
    #[error("generated node name {name:?} is not valid: {error}")]
    BadGeneratedName { name: String, error: NameError },
    #[error("{value:?} is not an IPv4 CIDR")]
    BadCidr { value: String },
    #[error("CIDR {value} has host bits set")]
    CidrHostBits { value: String, network: String },
    #[error(
        "CIDR {cidr} has room for {capacity} node addresses, but the cluster has {nodes} nodes"
    )]
    CidrTooSmall {
        cidr: String,
        capacity: u64,
        nodes: usize,
    },
    #[error("duplicate node name {name:?}")]
    DuplicateNodeName { name: String, first: FirstUse },
    #[error("a cluster needs at least one control plane")]
    ZeroControlPlanes,
    #[error("{group} has {count} nodes; at most {max} are allowed")]
    TooManyNodes {
        group: &'static str,
        count: u64,
        max: u32,
    },
    #[error("`count: {count}` disagrees with the number of entries under `nodes` ({listed})")]
    CountMismatch { count: u32, listed: usize },
    #[error("memory {value} is below the minimum of {min}")]
    MemoryTooSmall { value: ByteSize, min: ByteSize },
    #[error("disk {value} is below the minimum of {min}")]
    DiskTooSmall { value: ByteSize, min: ByteSize },
    #[error("cpus must be between 1 and {max}, found {found}")]
    CpusOutOfRange { found: i128, max: u32 },
    #[error("`{field}` must not be empty")]
    Empty { field: String },
    #[error("no container runtime is enabled")]
    NoRuntime,
    #[error("Kubernetes is not supported yet")]
    KubernetesUnsupported,
    #[error("unknown matrix check {id:?}")]
    UnknownCheck {
        id: String,
        suggestion: Option<String>,
    },
    #[error("check {id} is destructive")]
    DestructiveCheck { id: String },
    #[error("`all` is listed with other checks")]
    AllWithOthers,
    #[error("the file is empty")]
    EmptyDocument,
    #[error("the document must be a mapping, found {found}")]
    NotAMapping { found: &'static str },
}

/// What a value of the wrong type says about the fix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TypeHint {
    /// Nothing more than its type.
    #[default]
    None,
    /// A quoted string that would be of the expected type without its quotes
    /// (`cpus: "2"`, `egress: "true"`).
    Quoted,
    /// A YAML 1.1 boolean word (`yes`, `no`, `on`, `off`, `y`, `n`, in any
    /// case) where a boolean belongs: YAML 1.2, which the parser follows,
    /// reads it as a string. `means` is the boolean YAML 1.1 gave it.
    Yaml11Boolean { word: String, means: bool },
}

impl TypeHint {
    /// The hint for `value` found where `expected` belongs.
    pub fn of(value: &Value, expected: &str) -> TypeHint {
        let Value::Str(s) = value else {
            return TypeHint::None;
        };
        let t = s.trim();
        if expected == "true or false" {
            // The parser's booleans (YAML 1.2 core schema): only these
            // spellings are booleans when written plainly, so a string that
            // holds one was quoted.
            if matches!(t, "true" | "True" | "TRUE" | "false" | "False" | "FALSE") {
                return TypeHint::Quoted;
            }
            let lower = t.to_ascii_lowercase();
            let means = match lower.as_str() {
                "yes" | "y" | "on" => Some(true),
                "no" | "n" | "off" => Some(false),
                _ => None,
            };
            if let Some(means) = means {
                return TypeHint::Yaml11Boolean {
                    word: super::clip(t),
                    means,
                };
            }
        } else if expected.contains("integer") && t.parse::<i128>().is_ok() {
            return TypeHint::Quoted;
        }
        TypeHint::None
    }
}

impl ProblemKind {
    /// What to do about it.
    pub fn help(&self) -> Option<String> {
        Some(match self {
            ProblemKind::UnknownField {
                field,
                suggestion,
                known,
                belongs_under,
                ..
            } => match (suggestion, belongs_under) {
                (Some(s), _) => format!("did you mean `{s}`?"),
                (None, Some(parent)) => format!("`{field}` belongs under `{parent}`"),
                (None, None) => format!("known fields here: {}", known.join(", ")),
            },
            ProblemKind::DuplicateField { .. } => "each field may appear once".into(),
            ProblemKind::MissingField { field } => match *field {
                "apiVersion" => format!("add `apiVersion: {}`", crate::API_VERSION),
                "kind" => format!("add `kind: {KIND}`"),
                _ => return None,
            },
            ProblemKind::WrongType { expected, hint, .. } => match hint {
                TypeHint::Quoted => "write the value without quotes".into(),
                TypeHint::Yaml11Boolean { word, means } => format!(
                    "YAML 1.2 reads `{word}` as a string, not a boolean: write `{means}` (or `{}`)",
                    !means
                ),
                TypeHint::None if *expected == "true or false" => {
                    "write true or false, without quotes".into()
                }
                TypeHint::None => format!("write {expected} here"),
            },
            ProblemKind::WrongApiVersion { .. } => {
                format!("this version of ironclad reads `apiVersion: {}`", crate::API_VERSION)
            }
            ProblemKind::WrongKind { .. } => format!("write `kind: {KIND}`"),
            ProblemKind::BadSize { .. } => {
                "write a number and a unit, like 768MiB, 1GiB or 4G (binary units)".into()
            }
            ProblemKind::BadName(_) | ProblemKind::BadGeneratedName { .. } => {
                "names are DNS-1123 labels: lower-case letters, digits and '-', starting with a letter, at most 63 characters (cluster names: 32)".into()
            }
            ProblemKind::BadCidr { .. } => "write an IPv4 network like 10.5.0.0/24".into(),
            ProblemKind::CidrHostBits { network, .. } => format!("did you mean `{network}`?"),
            ProblemKind::CidrTooSmall { nodes, .. } => {
                let prefix = smallest_prefix_for(*nodes);
                format!(
                    "node addresses start at the network's .2 and the broadcast address is kept free: use a /{prefix} or larger network, or fewer nodes"
                )
            }
            ProblemKind::DuplicateNodeName { first, .. } => match first {
                FirstUse::Line(line) => {
                    format!("the name is already used on line {line}; node names must be unique")
                }
                FirstUse::Generated(group) => format!(
                    "the name is already given to one of the {group} (named <cluster>-cp-N and <cluster>-worker-N when not listed); node names must be unique"
                ),
            },
            ProblemKind::KeyNotString { .. } => "write the key as a name, like `cpus`".into(),
            ProblemKind::ZeroControlPlanes => {
                "set `controlPlanes.count` to 1 or more (3 for an etcd quorum that survives a node loss)".into()
            }
            ProblemKind::TooManyNodes { .. } => "use fewer nodes in this group".into(),
            ProblemKind::CountMismatch { .. } => {
                "drop `count` when listing `nodes`, or make them agree".into()
            }
            ProblemKind::MemoryTooSmall { min, .. } => {
                format!("give each node at least {min}: the kernel, etcd and containerd need it")
            }
            ProblemKind::DiskTooSmall { min, .. } => format!("give each node at least {min} of disk"),
            ProblemKind::CpusOutOfRange { max, .. } => format!("use 1 to {max} cpus"),
            ProblemKind::Empty { .. } => "give a value or remove the field to use the default".into(),
            ProblemKind::NoRuntime => "enable at least one of runc, crun or gvisor".into(),
            ProblemKind::KubernetesUnsupported => "the node image has no Kubernetes binaries (no kubelet, no kube-apiserver), so ironclad cannot run Kubernetes yet; remove `enabled: true` (or write `false`): the cluster still runs etcd and the container runtimes".into(),
            ProblemKind::UnknownCheck { suggestion, .. } => match suggestion {
                Some(s) => format!("did you mean `{s}`? (`ironclad matrix --list` lists the checks)"),
                None => "`ironclad matrix --list` lists the checks; `all` runs every one".into(),
            },
            ProblemKind::DestructiveCheck { .. } => {
                "destructive checks may crash or power off a node: add `destructive: true` to run it (throw-away clusters only), or drop it".into()
            }
            ProblemKind::AllWithOthers => {
                "write `checks: [all]` alone, or list the ids without `all`".into()
            }
            ProblemKind::EmptyDocument | ProblemKind::NotAMapping { .. } => format!(
                "a cluster file starts with `apiVersion: {}` and `kind: {KIND}`",
                crate::API_VERSION
            ),
        })
    }

    /// The short text under the span.
    pub fn label(&self) -> &'static str {
        match self {
            ProblemKind::UnknownField { .. } => "unknown field",
            ProblemKind::DuplicateField { .. } => "repeated here",
            ProblemKind::MissingField { .. } => "in this document",
            ProblemKind::WrongType { .. } => "wrong type",
            ProblemKind::WrongApiVersion { .. } => "unsupported version",
            ProblemKind::WrongKind { .. } => "unsupported kind",
            ProblemKind::BadSize { .. } => "not a size",
            ProblemKind::BadName(_) => "invalid name",
            ProblemKind::BadGeneratedName { .. } => "node names are made from this",
            ProblemKind::BadCidr { .. } => "not a CIDR",
            ProblemKind::CidrHostBits { .. } => "host bits set",
            ProblemKind::CidrTooSmall { .. } => "too small",
            ProblemKind::DuplicateNodeName { .. } => "used again here",
            ProblemKind::KeyNotString { .. } => "not a field name",
            ProblemKind::ZeroControlPlanes => "no control planes",
            ProblemKind::TooManyNodes { .. } => "too many",
            ProblemKind::CountMismatch { .. } => "disagrees with the list",
            ProblemKind::MemoryTooSmall { .. } => "too little memory",
            ProblemKind::DiskTooSmall { .. } => "too small",
            ProblemKind::CpusOutOfRange { .. } => "out of range",
            ProblemKind::Empty { .. } => "empty",
            ProblemKind::NoRuntime => "all runtimes disabled",
            ProblemKind::KubernetesUnsupported => "not in the image",
            ProblemKind::UnknownCheck { .. } => "not a check id",
            ProblemKind::DestructiveCheck { .. } => "needs `destructive: true`",
            ProblemKind::AllWithOthers => "`all` already names every check",
            ProblemKind::EmptyDocument => "nothing here",
            ProblemKind::NotAMapping { .. } => "not a mapping",
        }
    }
}

/// The prefix length of the smallest network that holds `nodes` addresses
/// under [`Network::node_address`] (3 addresses are not used for nodes).
fn smallest_prefix_for(nodes: usize) -> u8 {
    let needed = (nodes as u64).saturating_add(3);
    let mut prefix = 30u8;
    while prefix > 0 && (1u64 << (32 - u32::from(prefix))) < needed {
        prefix -= 1;
    }
    prefix
}

/// Where a node name was first used, for a duplicate's help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstUse {
    /// Written on this line of the file.
    Line(usize),
    /// Generated for this group (`controlPlanes` or `workers`).
    Generated(&'static str),
}

/// One problem with its place in the file.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{kind}")]
pub struct Problem {
    kind: ProblemKind,
    line: usize,
    column: usize,
    #[source_code]
    src: Excerpt,
    #[label("{label}")]
    span: SourceSpan,
    label: &'static str,
    #[help]
    help: Option<String>,
}

impl Problem {
    /// A problem at `pos` in `text`, the file `file_name`.
    pub(super) fn new(kind: ProblemKind, pos: Pos, file_name: &str, text: &str) -> Self {
        let (src, span) = Excerpt::around(file_name, text, pos);
        Problem {
            help: kind.help(),
            label: kind.label(),
            line: pos.line.max(1),
            column: pos.column.max(1),
            src,
            span,
            kind,
        }
    }
    pub fn kind(&self) -> &ProblemKind {
        &self.kind
    }
    /// 1-based line of the offending value.
    pub fn line(&self) -> usize {
        self.line
    }
    /// 1-based column of the offending value.
    pub fn column(&self) -> usize {
        self.column
    }
}

/// The text is not YAML (or breaks a parser limit such as nesting depth).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("invalid YAML in {file}: {message}")]
pub struct SyntaxError {
    pub file: String,
    pub message: String,
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column of the error.
    pub column: usize,
    #[source_code]
    pub(super) src: Excerpt,
    #[label("here")]
    pub(super) span: SourceSpan,
    #[help]
    pub(super) help: &'static str,
}

impl SyntaxError {
    /// Help for a parser message: limits get their own, the rest is about syntax.
    pub(super) fn help_for(message: &str) -> &'static str {
        if message.contains("budget") {
            "a cluster file is small: this one nests too deeply or expands too many aliases"
        } else {
            "fix the YAML syntax; strings with ':' or '#' need quotes, and indentation uses spaces"
        }
    }
}

/// The part of a cluster file miette shows for one diagnostic: the line of
/// the problem with the line before and after it, each cut to a window of at
/// most [`EXCERPT_LINE_BYTES`] (the problem's line around the offending
/// value), so a huge value or a file of one long line never reaches the
/// terminal whole. It reports the file's own line and column numbers.
#[derive(Debug, Clone)]
pub struct Excerpt {
    name: String,
    text: String,
    /// The file's 0-based line number of the excerpt's first line.
    first_line: usize,
    /// The excerpt's line (0-based) holding the problem.
    focus: usize,
    /// Bytes of the problem's line cut before the window, less the marker.
    shift: usize,
}

/// The marker of cut text.
const CUT: &str = "…";

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A context line: at most [`EXCERPT_LINE_BYTES`] of it.
fn clip_line(line: &str) -> String {
    if line.len() <= EXCERPT_LINE_BYTES {
        line.to_string()
    } else {
        format!("{}{CUT}", &line[..floor_boundary(line, EXCERPT_LINE_BYTES)])
    }
}

/// The line of `text` holding byte `at`: its start and end (without the
/// line break).
fn line_around(text: &str, at: usize) -> (usize, usize) {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let end = if text[start..end].ends_with('\r') {
        end - 1
    } else {
        end
    };
    (start, end.max(start))
}

impl Excerpt {
    /// The excerpt of `text` (the file `name`) around `pos`, and the span of
    /// `pos` within it.
    pub(super) fn around(name: &str, text: &str, pos: Pos) -> (Excerpt, SourceSpan) {
        let at = floor_boundary(text, pos.offset);
        let (start, end) = line_around(text, at);
        let line = &text[start..end];
        let col = at - start;
        // The window on the problem's line.
        let (from, to) = if line.len() <= EXCERPT_LINE_BYTES {
            (0, line.len())
        } else {
            let from = floor_boundary(line, col.saturating_sub(EXCERPT_LEAD_BYTES));
            (from, floor_boundary(line, from + EXCERPT_LINE_BYTES))
        };
        let lead = if from > 0 { CUT } else { "" };
        let tail = if to < line.len() { CUT } else { "" };
        let focus_text = format!("{lead}{}{tail}", &line[from..to]);

        let mut out = String::new();
        let mut focus = 0;
        if start > 0 {
            let (p_start, p_end) = line_around(text, start - 1);
            out.push_str(&clip_line(&text[p_start..p_end]));
            out.push('\n');
            focus = 1;
        }
        let focus_offset = out.len();
        out.push_str(&focus_text);
        let after = text[end..].find('\n').map(|i| end + i + 1);
        if let Some(next) = after.filter(|n| *n < text.len()) {
            let (n_start, n_end) = line_around(text, next);
            out.push('\n');
            out.push_str(&clip_line(&text[n_start..n_end]));
        }

        let span_start = focus_offset + lead.len() + col.clamp(from, to) - from;
        let span_end = (col + pos.len).clamp(from, to) - from + focus_offset + lead.len();
        let first_line = text.as_bytes()[..start]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            - focus;
        let excerpt = Excerpt {
            name: name.to_string(),
            text: out,
            first_line,
            focus,
            shift: from.saturating_sub(lead.len()),
        };
        let len = span_end.saturating_sub(span_start);
        (excerpt, SourceSpan::new(span_start.into(), len))
    }
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner =
            self.text
                .as_str()
                .read_span(span, context_lines_before, context_lines_after)?;
        // A column on the problem's line counts the bytes cut before the window.
        let column = if inner.line() == self.focus && inner.column() > 0 {
            inner.column() + self.shift
        } else {
            inner.column()
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line() + self.first_line,
            column,
            inner.line_count(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos_of(text: &str, needle: &str) -> Pos {
        let offset = text.find(needle).unwrap();
        Pos {
            offset,
            len: needle.len(),
            line: 0,
            column: 0,
        }
    }

    /// What miette reads for the label (line and column as it shows them).
    fn label(e: &Excerpt, span: &SourceSpan) -> (String, usize, usize) {
        let c = e.read_span(span, 0, 0).unwrap();
        (
            String::from_utf8_lossy(c.data()).into_owned(),
            c.line() + 1,
            c.column() + 1,
        )
    }

    #[test]
    fn short_lines_are_kept_with_their_neighbours() {
        let text = "a: 1\nb: 2\nc: bad\nd: 4\ne: 5\n";
        let (e, span) = Excerpt::around("f.yaml", text, pos_of(text, "bad"));
        assert_eq!(e.text, "b: 2\nc: bad\nd: 4");
        assert_eq!(label(&e, &span), ("bad".into(), 3, 4));
        let ctx = e.read_span(&span, 1, 1).unwrap();
        assert_eq!(ctx.line() + 1, 2, "numbered as in the file");
        assert_eq!(ctx.name(), Some("f.yaml"));
        // The first and the last line of a file.
        let (e, span) = Excerpt::around("f.yaml", text, pos_of(text, "a: 1"));
        assert_eq!(e.text, "a: 1\nb: 2");
        assert_eq!(label(&e, &span), ("a: 1".into(), 1, 1));
        let (e, _) = Excerpt::around("f.yaml", "x: 1\ny: z", pos_of("x: 1\ny: z", "z"));
        assert_eq!(e.text, "x: 1\ny: z");
    }

    #[test]
    fn long_lines_are_windowed_around_the_value() {
        let long = "v".repeat(500_000);
        let text = format!("{long}\nk: [{long}, bad, {long}]\n{long}\n");
        let (e, span) = Excerpt::around("f.yaml", &text, pos_of(&text, "bad"));
        assert!(e.text.len() < 4 * EXCERPT_LINE_BYTES, "{}", e.text.len());
        let (data, line, column) = label(&e, &span);
        assert_eq!(data, "bad");
        assert_eq!(line, 2);
        assert_eq!(column, "k: [".len() + long.len() + ", ".len() + 1);
        // A value longer than the window is underlined up to the window's end.
        let text = format!("name: {long}\n");
        let mut pos = pos_of(&text, &long);
        pos.len = long.len();
        let (e, span) = Excerpt::around("f.yaml", &text, pos);
        assert!(e.text.len() < 2 * EXCERPT_LINE_BYTES);
        assert!(span.len() <= EXCERPT_LINE_BYTES);
        assert_eq!(label(&e, &span).2, "name: ".len() + 1);
    }

    #[test]
    fn positions_past_the_end_and_inside_characters_are_safe() {
        let text = "é: ü\r\nx";
        for offset in 0..text.len() + 3 {
            let pos = Pos {
                offset,
                len: 7,
                line: 0,
                column: 0,
            };
            let (e, span) = Excerpt::around("f", text, pos);
            assert!(e.read_span(&span, 1, 1).is_ok(), "{offset}");
        }
    }
}
