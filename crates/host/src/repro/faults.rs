//! The network faults of a bundle (`network.json`: the switch's status when
//! the bundle was made) as switch requests for the new cluster, whose nodes
//! may have other names (`--name`): node `i` of the bundle's cluster file is
//! node `i` of the new one. The fault state and the drop seed are carried
//! over (the seed first: from then on the same frames in the same order meet
//! the same drop decisions as on the reporter's switch from its start);
//! counters and MACs are not.

use crate::network::control::{Faults, MAX_DELAY_MS, NodeFaults};
use crate::network::{Request, Response};
use crate::spec::{Cluster, ClusterName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The requests to send and what each node should have afterwards.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    pub requests: Vec<Request>,
    /// New node name → its faults once every request is applied.
    pub expected: BTreeMap<String, NodeFaults>,
    /// New node name → its name in the bundle.
    pub bundle_names: BTreeMap<String, String>,
    /// The reporter's drop seed, when `network.json` has one.
    pub seed: Option<u64>,
}

/// A node's faults on the new cluster, read back from its switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedFault {
    pub node: String,
    /// Its name in the bundle.
    pub bundle_node: String,
    pub faults: NodeFaults,
}

#[derive(Deserialize)]
struct Network {
    faults: Faults,
    #[serde(default)]
    seed: Option<u64>,
}

/// The plan for `network.json` (text of a bundle, untrusted), nodes mapped
/// from `from` (the bundle's cluster) to `to`.
pub fn plan(json: &[u8], from: &Cluster, to: &Cluster) -> Result<FaultPlan, String> {
    let net: Network = serde_json::from_slice(json)
        .map_err(|e| format!("network.json is not the switch's status: {e}"))?;
    let f = &net.faults;
    let map: BTreeMap<&str, &str> = from
        .nodes
        .iter()
        .zip(&to.nodes)
        .map(|(a, b)| (a.name.as_str(), b.name.as_str()))
        .collect();
    let node = |n: &str| {
        map.get(n).map(|s| s.to_string()).ok_or_else(|| {
            format!(
                "network.json has a fault on node {}, which the bundle's cluster file does not have",
                super::bundle::shown(n)
            )
        })
    };
    let percent = |p: u8| {
        if p > 100 {
            Err(format!("network.json drops {p}% of frames"))
        } else {
            Ok(p)
        }
    };
    let delay = |ms: u64| {
        if ms > MAX_DELAY_MS {
            Err(format!(
                "network.json delays frames by {ms} ms, more than {MAX_DELAY_MS}"
            ))
        } else {
            Ok(ms)
        }
    };
    let mut requests: Vec<Request> = net
        .seed
        .map(|seed| Request::Seed { seed })
        .into_iter()
        .collect();
    let mut mapped = Faults::default();
    if f.drop_percent > 0 {
        mapped.drop_percent = percent(f.drop_percent)?;
        requests.push(Request::Drop {
            percent: f.drop_percent,
            node: None,
        });
    }
    if f.delay_ms > 0 {
        mapped.delay_ms = delay(f.delay_ms)?;
        requests.push(Request::Delay {
            ms: f.delay_ms,
            node: None,
        });
    }
    for (n, p) in &f.drop_percent_by_node {
        let (n, p) = (node(n)?, percent(*p)?);
        if p > 0 {
            mapped.drop_percent_by_node.insert(n.clone(), p);
            requests.push(Request::Drop {
                percent: p,
                node: Some(n),
            });
        }
    }
    for (n, ms) in &f.delay_ms_by_node {
        let (n, ms) = (node(n)?, delay(*ms)?);
        if ms > 0 {
            mapped.delay_ms_by_node.insert(n.clone(), ms);
            requests.push(Request::Delay { ms, node: Some(n) });
        }
    }
    for n in &f.partitioned {
        let n = node(n)?;
        if !mapped.partitioned.contains(&n) {
            mapped.partitioned.push(n.clone());
            requests.push(Request::Partition { node: n });
        }
    }
    let expected = to
        .nodes
        .iter()
        .map(|n| (n.name.to_string(), mapped.of_node(n.name.as_str())))
        .collect();
    let bundle_names = to
        .nodes
        .iter()
        .zip(&from.nodes)
        .map(|(b, a)| (b.name.to_string(), a.name.to_string()))
        .collect();
    Ok(FaultPlan {
        requests,
        expected,
        bundle_names,
        seed: net.seed,
    })
}

/// Sends the plan's requests to the running cluster `name` and checks what
/// its switch then says for every node, and its seed.
pub fn apply(
    plan: &FaultPlan,
    root: &Path,
    name: &ClusterName,
) -> Result<Vec<AppliedFault>, String> {
    let paths = crate::cluster::paths::ClusterPaths::new(root, name);
    let engine = crate::cluster::engine::selected();
    for r in &plan.requests {
        match engine.fault(&paths, r) {
            Ok(Response::Ok) => {}
            Ok(other) => return Err(format!("the switch answered {other:?} to {r:?}")),
            Err(e) => return Err(format!("{r:?}: {e}")),
        }
    }
    let status = crate::cluster::lifecycle::net_status(root, name).map_err(|e| e.to_string())?;
    if let Some(seed) = plan.seed
        && status.seed != seed
    {
        return Err(format!(
            "the switch's drop seed is {}, the bundle's switch had {seed}",
            status.seed
        ));
    }
    let now: BTreeMap<String, NodeFaults> = status
        .nodes
        .into_iter()
        .map(|n| (n.name, n.faults))
        .collect();
    let mut out = Vec::new();
    for (node, want) in &plan.expected {
        let got = now.get(node).copied().unwrap_or_default();
        if got != *want {
            return Err(format!(
                "node {node} has the faults {got}, the bundle's switch had {want}"
            ));
        }
        if got.any() {
            out.push(AppliedFault {
                node: node.clone(),
                bundle_node: plan.bundle_names.get(node).cloned().unwrap_or_default(),
                faults: got,
            });
        }
    }
    Ok(out)
}
