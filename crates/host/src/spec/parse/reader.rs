//! Reading one mapping of the positioned tree: [`Checker`] collects every
//! problem with its position, [`Fields`] holds a mapping's entries after
//! unknown and repeated keys were reported, and the typed reads (string,
//! boolean, integer, cpus, sizes) turn a bad value into a problem instead of
//! stopping.

use super::sections::belongs_under;
use crate::spec::did_you_mean::suggest;
use crate::spec::error::{ProblemKind, TypeHint};
use crate::spec::raw::{Node as YNode, Pos, Value};
use crate::spec::{ByteSize, MAX_NODE_CPUS, MIN_NODE_DISK, MIN_NODE_MEMORY, SizeError, clip};
use std::collections::HashMap;

/// Collects problems while walking the tree.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<(ProblemKind, Pos)>,
}

/// The entries of one mapping, by key, after unknown and repeated keys were reported.
pub(super) struct Fields<'a> {
    entries: HashMap<&'a str, (&'a YNode, &'a YNode)>,
}

impl<'a> Fields<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a YNode> {
        self.entries.get(key).map(|(_, v)| *v)
    }
    pub(super) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries.get(key).map(|(k, _)| k.pos)
    }
}

impl Checker {
    pub(super) fn report(&mut self, kind: ProblemKind, pos: Pos) {
        self.problems.push((kind, pos));
    }

    pub(super) fn wrong_type(&mut self, field: &str, expected: &'static str, node: &YNode) {
        self.report(
            ProblemKind::WrongType {
                field: field.to_string(),
                expected,
                found: node.value.describe(),
                hint: TypeHint::of(&node.value, expected),
            },
            node.pos,
        );
    }

    /// Reads a mapping, reporting unknown and repeated keys. A null (an empty
    /// section such as `spec:`) is an empty mapping.
    pub(super) fn fields<'a>(
        &mut self,
        node: &'a YNode,
        field: &str,
        section: &'static str,
        known: &'static [&'static str],
    ) -> Option<Fields<'a>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => {
                return Some(Fields {
                    entries: HashMap::new(),
                });
            }
            _ => {
                self.wrong_type(field, "a mapping", node);
                return None;
            }
        };
        let mut out = HashMap::new();
        for (k, v) in entries {
            let Value::Str(key) = &k.value else {
                self.report(
                    ProblemKind::KeyNotString {
                        found: k.value.describe(),
                    },
                    k.pos,
                );
                continue;
            };
            if let Some(known_key) = known.iter().find(|c| **c == key.as_str()) {
                if out.insert(*known_key, (k, v)).is_some() {
                    self.report(ProblemKind::DuplicateField { field: clip(key) }, k.pos);
                }
            } else {
                self.report(
                    ProblemKind::UnknownField {
                        field: clip(key),
                        section,
                        suggestion: suggest(key, known),
                        known,
                        belongs_under: belongs_under(section, key),
                    },
                    k.pos,
                );
            }
        }
        Some(Fields { entries: out })
    }

    /// The mapping under `key` of `parent` (see [`Checker::fields`]), when
    /// the key is there.
    pub(super) fn section<'a>(
        &mut self,
        parent: &Fields<'a>,
        key: &str,
        section: &'static str,
        known: &'static [&'static str],
    ) -> Option<Fields<'a>> {
        parent
            .get(key)
            .and_then(|node| self.fields(node, key, section, known))
    }

    pub(super) fn string<'a>(&mut self, fields: &Fields<'a>, key: &str) -> Option<(&'a str, Pos)> {
        let node = fields.get(key)?;
        match &node.value {
            Value::Str(s) if s.trim().is_empty() => {
                self.report(
                    ProblemKind::Empty {
                        field: key.to_string(),
                    },
                    node.pos,
                );
                None
            }
            Value::Str(s) => Some((s.as_str(), node.pos)),
            _ => {
                self.wrong_type(key, "a string", node);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, fields: &Fields, key: &str) -> Option<bool> {
        let node = fields.get(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(key, "true or false", node);
                None
            }
        }
    }

    pub(super) fn integer(&mut self, fields: &Fields, key: &str) -> Option<(i128, Pos)> {
        let node = fields.get(key)?;
        match node.value {
            Value::Int(i) => Some((i, node.pos)),
            _ => {
                self.wrong_type(key, "an integer", node);
                None
            }
        }
    }

    pub(super) fn cpus(&mut self, fields: &Fields) -> Option<u32> {
        let (n, pos) = self.integer(fields, "cpus")?;
        match u32::try_from(n) {
            Ok(c) if (1..=MAX_NODE_CPUS).contains(&c) => Some(c),
            _ => {
                self.report(
                    ProblemKind::CpusOutOfRange {
                        found: n,
                        max: MAX_NODE_CPUS,
                    },
                    pos,
                );
                None
            }
        }
    }

    pub(super) fn size(&mut self, fields: &Fields, key: &str) -> Option<(ByteSize, Pos)> {
        let node = fields.get(key)?;
        let parsed = match &node.value {
            Value::Str(s) => s.parse::<ByteSize>(),
            Value::Int(i) => u64::try_from(*i)
                .map(ByteSize::bytes)
                .map_err(|_| SizeError::Malformed(i.to_string())),
            _ => {
                self.wrong_type(key, "a size such as 1GiB", node);
                return None;
            }
        };
        match parsed {
            Ok(size) => Some((size, node.pos)),
            Err(error) => {
                self.report(
                    ProblemKind::BadSize {
                        field: key.to_string(),
                        error,
                    },
                    node.pos,
                );
                None
            }
        }
    }

    pub(super) fn memory(&mut self, fields: &Fields) -> Option<ByteSize> {
        let (value, pos) = self.size(fields, "memory")?;
        if value < MIN_NODE_MEMORY {
            self.report(
                ProblemKind::MemoryTooSmall {
                    value,
                    min: MIN_NODE_MEMORY,
                },
                pos,
            );
            return None;
        }
        Some(value)
    }

    pub(super) fn disk(&mut self, fields: &Fields) -> Option<ByteSize> {
        let (value, pos) = self.size(fields, "disk")?;
        if value < MIN_NODE_DISK {
            self.report(
                ProblemKind::DiskTooSmall {
                    value,
                    min: MIN_NODE_DISK,
                },
                pos,
            );
            return None;
        }
        Some(value)
    }
}
