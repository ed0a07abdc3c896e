//! What the nodes themselves say, through their API: services, each
//! service's log, dmesg and, on control planes, etcd's member list. Every
//! node is asked at the same time; one that does not answer within the
//! timeout is listed as missing and the others are still collected.

use super::Bundle;
use crate::api::LogLines;
use crate::client::NodeClient;
use crate::cluster::paths::ClusterPaths;
use crate::cluster::state::{ClusterState, NodeRecord};
use std::future::Future;
use std::time::Duration;

/// What one node gave: (path, bytes) pairs and (what, why) misses.
#[derive(Default)]
struct Gathered {
    files: Vec<(String, Vec<u8>)>,
    missing: Vec<(String, String)>,
}

impl Gathered {
    fn json(&mut self, path: String, v: &impl serde::Serialize) {
        match serde_json::to_vec_pretty(v) {
            Ok(mut b) => {
                b.push(b'\n');
                self.files.push((path, b));
            }
            Err(e) => self.missing.push((path, format!("cannot encode: {e}"))),
        }
    }
}

pub(super) async fn collect(
    b: &mut Bundle,
    paths: &ClusterPaths,
    state: &ClusterState,
    timeout: Duration,
    say: &(dyn Fn(&str) + Sync),
) {
    let client_yaml = paths.client_yaml();
    let asks = state.nodes.iter().map(|n| {
        let client_yaml = &client_yaml;
        async move {
            if !n.state.has_process() {
                let mut g = Gathered::default();
                g.missing.push((
                    format!("nodes/{}/", n.name),
                    format!("the node is {}", n.state.as_str()),
                ));
                say(&format!("node {}: {}, not asked", n.name, n.state.as_str()));
                return g;
            }
            let g = match NodeClient::from_client_config(client_yaml, n.name.as_str()) {
                Ok(client) => ask(&client, n, timeout).await,
                Err(e) => {
                    let mut g = Gathered::default();
                    g.missing
                        .push((format!("nodes/{}/", n.name), format!("no client: {e}")));
                    g
                }
            };
            say(&format!(
                "node {}: {} files{}",
                n.name,
                g.files.len(),
                if g.missing.is_empty() {
                    String::new()
                } else {
                    format!(", {} missing", g.missing.len())
                }
            ));
            g
        }
    });
    for g in futures::future::join_all(asks).await {
        for (path, data) in g.files {
            b.add(path, data);
        }
        for (what, why) in g.missing {
            b.miss(what, why);
        }
    }
}

/// `call` bounded by `timeout`, its failure as text.
async fn within<T, E: std::fmt::Display>(
    timeout: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

/// Everything one answering node is asked.
async fn ask(client: &NodeClient, n: &NodeRecord, timeout: Duration) -> Gathered {
    let mut g = Gathered::default();
    let dir = format!("nodes/{}", n.name);
    match within(timeout, client.version()).await {
        Ok(v) => g.json(format!("{dir}/version.json"), &v),
        Err(e) => {
            // A node that does not answer this will not answer the rest.
            g.missing.push((format!("{dir}/"), e));
            return g;
        }
    }
    let services = match within(timeout, client.services()).await {
        Ok(s) => {
            g.json(format!("{dir}/services.json"), &s);
            s.services
        }
        Err(e) => {
            g.missing.push((format!("{dir}/services.json"), e));
            Vec::new()
        }
    };
    for s in services.iter().take(MAX_SERVICES) {
        let path = format!("{dir}/logs/{}.log", file_name(&s.name));
        match within(timeout, client.logs(&s.name, None)).await {
            Ok(lines) => g.files.push((path, text(&lines))),
            Err(e) => g.missing.push((path, e)),
        }
    }
    let path = format!("{dir}/dmesg.log");
    match within(timeout, client.dmesg(None)).await {
        Ok(lines) => g.files.push((path, text(&lines))),
        Err(e) => g.missing.push((path, e)),
    }
    if n.role == crate::spec::Role::ControlPlane {
        let path = format!("{dir}/etcd-members.json");
        match within(timeout, client.etcd_members()).await {
            Ok(m) => g.json(path, &m),
            Err(e) => g.missing.push((path, e)),
        }
    }
    g
}

/// The most services whose logs are asked for (a node has a handful).
const MAX_SERVICES: usize = 32;

/// A service name as a file name: what a node says is not trusted to be a
/// plain name (a `/` or `..` would leave the node's directory in the archive).
fn file_name(service: &str) -> String {
    let clean: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    match clean.trim_start_matches('.') {
        "" => "_".to_string(),
        c => c.to_string(),
    }
}

/// Log lines as text: an RFC 3339 time, a space, the line; at most the last
/// [`super::LOG_LIMIT`] bytes.
fn text(lines: &LogLines) -> Vec<u8> {
    let mut out = String::new();
    for l in &lines.lines {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(l.time_ms as i128 * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| l.time_ms.to_string());
        out.push_str(&t);
        out.push(' ');
        out.push_str(&l.line);
        out.push('\n');
    }
    let limit = super::LOG_LIMIT as usize;
    if out.len() > limit {
        let cut = out.len() - limit;
        let from = out[cut..].find('\n').map_or(out.len(), |i| cut + i + 1);
        out = format!(
            "[ironclad support: the first {from} bytes were cut]\n{}",
            &out[from..]
        );
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn service_names_stay_inside_the_nodes_directory() {
        assert_eq!(super::file_name("etcd"), "etcd");
        assert_eq!(super::file_name("../../x"), "_.._x");
        assert_eq!(super::file_name(".."), "_");
        assert_eq!(super::file_name("a/b"), "a_b");
    }
}
