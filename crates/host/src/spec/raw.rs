//! The cluster file as a YAML tree in which every node remembers where it came
//! from (byte span, line and column). The parser in [`super::parse`] walks this
//! tree itself instead of deriving `Deserialize` for the model, so that it can
//! report every problem in one go (serde stops at the first) and suggest known
//! keys for unknown ones.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// Where a node sits in the source: byte offset and length, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub offset: usize,
    pub len: usize,
    pub line: usize,
    pub column: usize,
}

/// One YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// A YAML value, as the YAML 1.2 core schema resolves plain scalars.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// What kind of value this is, in words for a diagnostic ("a string").
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a decimal number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Converts a saphyr location to a [`Pos`] within `src`. The byte offset is
/// taken from the span when the parser knows it, else computed from line and
/// column (which count characters).
pub fn pos_of(loc: &serde_saphyr::Location, src: &str) -> Pos {
    let line = usize::try_from(loc.line()).unwrap_or(0);
    let column = usize::try_from(loc.column()).unwrap_or(0);
    let span = loc.span();
    let from_span = span
        .byte_offset()
        .and_then(|o| usize::try_from(o).ok())
        .filter(|o| *o <= src.len() && src.is_char_boundary(*o));
    let offset = match from_span {
        Some(o) => o,
        None => offset_of(src, line, column),
    };
    let len = span
        .byte_len()
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| {
            offset
                .checked_add(*l)
                .is_some_and(|end| end <= src.len() && src.is_char_boundary(end))
        })
        .unwrap_or(0);
    Pos {
        offset,
        len,
        line,
        column,
    }
}

/// Byte offset of 1-based `line` and `column` (in characters) in `src`, clamped to the text.
pub fn offset_of(src: &str, line: usize, column: usize) -> usize {
    if line == 0 {
        return 0;
    }
    let mut start = 0usize;
    for _ in 1..line {
        match src[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return src.len(),
        }
    }
    let rest = &src[start..];
    let line_text = rest.split('\n').next().unwrap_or("");
    let within = line_text
        .char_indices()
        .nth(column.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(line_text.len());
    start + within
}

/// Collects children as `Spanned<StagedBox>`; they are converted to [`Node`]s with
/// the source text in [`into_node`].
enum Staged {
    Leaf(Value),
    Seq(Vec<Spanned<StagedBox>>),
    Map(Vec<(Spanned<StagedBox>, Spanned<StagedBox>)>),
}

/// `Staged` behind a `Deserialize` impl, so that children can be read as `Spanned<_>`.
pub struct StagedBox(Staged);

impl<'de> Deserialize<'de> for StagedBox {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StagedVisitor).map(StagedBox)
    }
}

struct StagedVisitor;

impl<'de> Visitor<'de> for StagedVisitor {
    type Value = Staged;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Int(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Int(v.into())))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Staged, E> {
        match i128::try_from(v) {
            Ok(v) => Ok(Staged::Leaf(Value::Int(v))),
            Err(_) => Ok(Staged::Leaf(Value::Str(v.to_string()))),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Str(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Str(v)))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Str(
            String::from_utf8_lossy(v).into_owned(),
        )))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Staged, E> {
        Ok(Staged::Leaf(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Staged, D::Error> {
        StagedBox::deserialize(d).map(|b| b.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Staged, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<StagedBox>>()? {
            items.push(item);
        }
        Ok(Staged::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Staged, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<StagedBox>>()? {
            let value = map.next_value::<Spanned<StagedBox>>()?;
            entries.push((key, value));
        }
        Ok(Staged::Map(entries))
    }
}

/// Turns the staged tree into [`Node`]s with positions resolved against `src`.
fn into_node(s: Spanned<StagedBox>, src: &str) -> Node {
    let pos = pos_of(&s.referenced, src);
    let value = match s.value.0 {
        Staged::Leaf(v) => v,
        Staged::Seq(items) => Value::Seq(items.into_iter().map(|i| into_node(i, src)).collect()),
        Staged::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (into_node(k, src), into_node(v, src)))
                .collect(),
        ),
    };
    Node { value, pos }
}

/// Parses one YAML document into a positioned tree.
pub fn parse_tree(src: &str) -> Result<Node, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    // YAML 1.2: `yes`/`no`/`on`/`off` are strings, not booleans (so `egress: no`
    // is reported as a wrong type rather than silently read).
    options.strict_booleans = true;
    // Repeated keys reach the visitor, so the parser reports each one as a
    // problem alongside the others instead of stopping at the first.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 32;
    budget.max_events = 100_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    options.budget = Some(budget);
    let staged: Spanned<StagedBox> = serde_saphyr::from_str_with_options(src, options)?;
    Ok(into_node(staged, src))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_has_positions() {
        let src = "a: 1\nb:\n  c: [x, \"y\"]\n  d: 2GiB\n";
        let root = parse_tree(src).unwrap();
        let Value::Map(entries) = &root.value else {
            panic!("not a map: {root:?}")
        };
        assert_eq!(entries.len(), 2);
        let (k, v) = &entries[0];
        assert_eq!(k.value, Value::Str("a".into()));
        assert_eq!((k.pos.line, k.pos.column), (1, 1));
        assert_eq!(v.value, Value::Int(1));
        assert_eq!((v.pos.line, v.pos.column), (1, 4));
        assert_eq!(v.pos.offset, 3);
        let Value::Map(inner) = &entries[1].1.value else {
            panic!()
        };
        let (dk, dv) = &inner[1];
        assert_eq!(dk.value, Value::Str("d".into()));
        assert_eq!(dv.value, Value::Str("2GiB".into()));
        assert_eq!((dv.pos.line, dv.pos.column), (4, 6));
        assert_eq!(&src[dv.pos.offset..dv.pos.offset + dv.pos.len], "2GiB");
        let Value::Seq(items) = &inner[0].1.value else {
            panic!()
        };
        assert_eq!(items[1].value, Value::Str("y".into()));
        assert_eq!((items[1].pos.line, items[1].pos.column), (3, 10));
    }

    #[test]
    fn offsets_from_line_and_column() {
        let src = "ab\ncdé\nf";
        assert_eq!(offset_of(src, 1, 1), 0);
        assert_eq!(offset_of(src, 2, 3), 5);
        assert_eq!(offset_of(src, 3, 1), 8);
        assert_eq!(offset_of(src, 9, 1), src.len());
        assert_eq!(offset_of(src, 2, 99), 7);
    }
}
