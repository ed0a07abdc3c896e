//! The switch's control requests applied to its state: faults set and
//! healed, status reported (the protocol is [`crate::network::control`]).

use super::State;
use crate::network::control::{ErrorCode, Faults, MAX_DELAY_MS, Request, Response};
use rand::SeedableRng;
use std::collections::BTreeMap;

/// A refused control request, before it becomes a [`Response::Error`].
struct Refusal(ErrorCode, String);

impl State {
    fn known_node(&self, node: &str) -> Result<(), Refusal> {
        if self.ports.contains_key(node) {
            Ok(())
        } else {
            Err(Refusal(
                ErrorCode::UnknownNode,
                format!("the switch has no port for node {node:?}"),
            ))
        }
    }

    /// `node` when it is one of the switch's ports (or none was named).
    fn known(&self, node: Option<String>) -> Result<Option<String>, Refusal> {
        if let Some(n) = &node {
            self.known_node(n)?;
        }
        Ok(node)
    }

    /// Applies one control request; a refused one becomes an error response.
    pub(super) fn apply(&mut self, req: Request) -> Response {
        match self.try_apply(req) {
            Ok(r) => r,
            Err(Refusal(code, message)) => Response::Error { code, message },
        }
    }

    fn try_apply(&mut self, req: Request) -> Result<Response, Refusal> {
        let bad = |message: String| Refusal(ErrorCode::BadValue, message);
        match req {
            Request::Status {} => {
                return Ok(Response::Status {
                    status: self.status(),
                });
            }
            Request::Seed { seed } => {
                self.rng = rand::rngs::StdRng::seed_from_u64(seed);
                self.seed = seed;
            }
            Request::Partition { node } => {
                self.known_node(&node)?;
                if !self.faults.partitioned.contains(&node) {
                    self.faults.partitioned.push(node);
                    self.faults.partitioned.sort();
                }
            }
            Request::Heal {
                node: None,
                all: true,
            } => self.faults = Faults::default(),
            Request::Heal {
                node: Some(node),
                all: false,
            } => {
                self.known_node(&node)?;
                let f = &mut self.faults;
                f.partitioned.retain(|n| *n != node);
                f.drop_percent_by_node.remove(&node);
                f.delay_ms_by_node.remove(&node);
            }
            Request::Heal { .. } => {
                return Err(bad("heal takes either a node or \"all\": true".into()));
            }
            Request::Drop { percent, node } => {
                if percent > 100 {
                    return Err(bad(format!("drop percent {percent} is above 100")));
                }
                let node = self.known(node)?;
                let f = &mut self.faults;
                set_fault(
                    &mut f.drop_percent,
                    &mut f.drop_percent_by_node,
                    node,
                    percent,
                );
            }
            Request::Delay { ms, node } => {
                if ms > MAX_DELAY_MS {
                    return Err(bad(format!("delay {ms} ms is above {MAX_DELAY_MS} ms")));
                }
                let node = self.known(node)?;
                let f = &mut self.faults;
                set_fault(&mut f.delay_ms, &mut f.delay_ms_by_node, node, ms);
            }
        }
        Ok(Response::Ok)
    }
}

/// Sets a fault to `value`: for every port, or for `node` alone (where the
/// zero value removes the node's entry).
fn set_fault<T: Default + PartialEq>(
    every_port: &mut T,
    by_node: &mut BTreeMap<String, T>,
    node: Option<String>,
    value: T,
) {
    match node {
        None => *every_port = value,
        Some(node) if value == T::default() => {
            by_node.remove(&node);
        }
        Some(node) => {
            by_node.insert(node, value);
        }
    }
}
