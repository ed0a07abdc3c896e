//! The start order of a set of services: every dependency before its
//! dependents, stable in declaration order; duplicate names, unknown
//! dependencies and cycles are refused.

use super::{ServiceSpec, SupervisorError};
use std::collections::{BTreeMap, BTreeSet};

/// Orders services so that every dependency comes before its dependents.
pub fn start_order(specs: &[ServiceSpec]) -> Result<Vec<usize>, SupervisorError> {
    let index: BTreeMap<&str, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    check_names(specs, &index)?;
    let mut marks = vec![Mark::New; specs.len()];
    let mut out = Vec::with_capacity(specs.len());
    for i in 0..specs.len() {
        visit(i, specs, &index, &mut marks, &mut out)?;
    }
    Ok(out)
}

/// Refuses a name given twice and a dependency on a name not given.
fn check_names(
    specs: &[ServiceSpec],
    index: &BTreeMap<&str, usize>,
) -> Result<(), SupervisorError> {
    if index.len() != specs.len() {
        let mut seen = BTreeSet::new();
        for s in specs {
            if !seen.insert(s.name.as_str()) {
                return Err(SupervisorError::Duplicate(s.name.clone()));
            }
        }
    }
    for s in specs {
        for d in &s.depends_on {
            if !index.contains_key(d.as_str()) {
                return Err(SupervisorError::UnknownDependency {
                    service: s.name.clone(),
                    dependency: d.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Where the depth-first topological sort is with a service.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    Active,
    Done,
}

fn visit(
    i: usize,
    specs: &[ServiceSpec],
    index: &BTreeMap<&str, usize>,
    marks: &mut [Mark],
    out: &mut Vec<usize>,
) -> Result<(), SupervisorError> {
    match marks[i] {
        Mark::Done => return Ok(()),
        Mark::Active => return Err(SupervisorError::Cycle(specs[i].name.clone())),
        Mark::New => {}
    }
    marks[i] = Mark::Active;
    for d in &specs[i].depends_on {
        if let Some(&j) = index.get(d.as_str()) {
            visit(j, specs, index, marks, out)?;
        }
    }
    marks[i] = Mark::Done;
    out.push(i);
    Ok(())
}
