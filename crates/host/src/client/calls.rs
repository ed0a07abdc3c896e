//! The node API, one method per endpoint: version and health, services and
//! their logs (also followed as a stream), dmesg, etcd membership and keys,
//! machine config, power, the matrix, and the node's clock.

use super::transport::decode;
use super::{ClientError, MATRIX_TIMEOUT, MAX_LOG_LINE_BYTES, NodeClient};
use crate::api::{
    self, Accepted, AddLearnerRequest, ApplyConfigRequest, EtcdMember, EtcdMembers, Health,
    InitialMember, JoinRequest, KvValue, LogLine, LogLines, LogsQuery, PutRequest, ServiceList,
    ServiceStatus, VersionInfo, paths,
};
use futures::stream::{BoxStream, StreamExt};
use std::time::Duration;

impl NodeClient {
    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        self.get(paths::VERSION).await
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get(paths::HEALTH).await
    }

    /// [`NodeClient::health`] that gives up after `timeout`. Early in a boot
    /// a connection can stall in QEMU's user-mode network (its TCP
    /// handshake with a guest that is not listening yet is retried after
    /// seconds); a new connection gets through as soon as the guest listens.
    pub async fn health_within(&self, timeout: Duration) -> Result<Health, ClientError> {
        let url = format!("{}{}", self.base, paths::HEALTH);
        let resp = self
            .send(self.http.get(&url).timeout(timeout), &url)
            .await?;
        decode(resp, url).await
    }

    pub async fn services(&self) -> Result<ServiceList, ClientError> {
        self.get(paths::SERVICES).await
    }

    pub async fn service_start(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.post_empty(&paths::fill(paths::SERVICE_START, name))
            .await
    }

    pub async fn service_stop(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.post_empty(&paths::fill(paths::SERVICE_STOP, name))
            .await
    }

    pub async fn service_restart(&self, name: &str) -> Result<ServiceStatus, ClientError> {
        self.post_empty(&paths::fill(paths::SERVICE_RESTART, name))
            .await
    }

    fn tail_query(tail: Option<usize>, follow: bool) -> Vec<(&'static str, String)> {
        let q = LogsQuery { tail, follow };
        let mut out = Vec::new();
        if let Some(t) = q.tail {
            out.push(("tail", t.to_string()));
        }
        if q.follow {
            out.push(("follow", "true".to_string()));
        }
        out
    }

    /// The last `tail` lines (all kept lines when `None`) of `service`.
    pub async fn logs(&self, service: &str, tail: Option<usize>) -> Result<LogLines, ClientError> {
        let q = Self::tail_query(tail, false);
        let path = paths::fill(paths::SERVICE_LOGS, service);
        self.call(reqwest::Method::GET, &path, Some(&q), None).await
    }

    /// The last `tail` lines of `service`, then each new line as the node
    /// writes it (the stream ends when the connection does).
    pub async fn follow_logs(
        &self,
        service: &str,
        tail: Option<usize>,
    ) -> Result<BoxStream<'static, Result<LogLine, ClientError>>, ClientError> {
        let q = Self::tail_query(tail, true);
        let url = format!("{}{}", self.base, paths::fill(paths::SERVICE_LOGS, service));
        let resp = self.send(self.http.get(&url).query(&q), &url).await?;
        let chunks = resp.bytes_stream();
        let state = (chunks, Vec::<u8>::new(), url, false);
        let lines = futures::stream::unfold(state, |(mut chunks, mut buf, url, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let item = serde_json::from_slice::<LogLine>(&line).map_err(|e| {
                        ClientError::Protocol {
                            url: url.clone(),
                            status: 200,
                            reason: format!("bad log line: {e}"),
                        }
                    });
                    return Some((item, (chunks, buf, url, false)));
                }
                if buf.len() > MAX_LOG_LINE_BYTES {
                    let err = ClientError::TooLarge {
                        url: url.clone(),
                        limit: MAX_LOG_LINE_BYTES,
                    };
                    return Some((Err(err), (chunks, Vec::new(), url, true)));
                }
                match chunks.next().await {
                    Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                    Some(Err(source)) => {
                        let err = ClientError::Transport {
                            url: url.clone(),
                            source,
                        };
                        return Some((Err(err), (chunks, buf, url, true)));
                    }
                    None => return None,
                }
            }
        });
        Ok(lines.boxed())
    }

    pub async fn dmesg(&self, tail: Option<usize>) -> Result<LogLines, ClientError> {
        let q = Self::tail_query(tail, false);
        self.call(reqwest::Method::GET, paths::DMESG, Some(&q), None)
            .await
    }

    /// Starts etcd as a new cluster on this node (`conflict` if done before).
    pub async fn bootstrap(&self) -> Result<Accepted, ClientError> {
        self.post_empty(paths::BOOTSTRAP).await
    }

    pub async fn etcd_members(&self) -> Result<EtcdMembers, ClientError> {
        self.get(paths::ETCD_MEMBERS).await
    }

    pub async fn etcd_add_learner(
        &self,
        name: &str,
        peer_url: &str,
    ) -> Result<EtcdMember, ClientError> {
        let req = AddLearnerRequest {
            name: name.to_string(),
            peer_url: peer_url.to_string(),
        };
        self.post_json(reqwest::Method::POST, paths::ETCD_MEMBERS, &req)
            .await
    }

    pub async fn etcd_promote(&self, id: u64) -> Result<EtcdMember, ClientError> {
        self.post_empty(&paths::fill(paths::ETCD_PROMOTE, &id.to_string()))
            .await
    }

    pub async fn etcd_remove(&self, id: u64) -> Result<Accepted, ClientError> {
        let path = paths::fill(paths::ETCD_MEMBER, &id.to_string());
        self.call(reqwest::Method::DELETE, &path, None, None).await
    }

    /// Tells this control plane to start etcd joining `initial_cluster`.
    pub async fn etcd_join(
        &self,
        initial_cluster: Vec<InitialMember>,
    ) -> Result<Accepted, ClientError> {
        let req = JoinRequest { initial_cluster };
        self.post_json(reqwest::Method::POST, paths::ETCD_JOIN, &req)
            .await
    }

    pub async fn etcd_put(&self, key: &str, value: &str) -> Result<Accepted, ClientError> {
        let req = PutRequest {
            key: key.to_string(),
            value: value.to_string(),
        };
        self.post_json(reqwest::Method::PUT, paths::ETCD_KV, &req)
            .await
    }

    pub async fn etcd_get(&self, key: &str) -> Result<KvValue, ClientError> {
        let q = [("key", key.to_string())];
        self.call(reqwest::Method::GET, paths::ETCD_KV, Some(&q), None)
            .await
    }

    /// Sends a new machine config (YAML) to the node.
    pub async fn apply_config(&self, config_yaml: &str) -> Result<Accepted, ClientError> {
        let req = ApplyConfigRequest {
            config: config_yaml.to_string(),
        };
        self.post_json(reqwest::Method::POST, paths::APPLY_CONFIG, &req)
            .await
    }

    pub async fn reboot(&self) -> Result<Accepted, ClientError> {
        self.post_empty(paths::REBOOT).await
    }

    pub async fn shutdown(&self) -> Result<Accepted, ClientError> {
        self.post_empty(paths::SHUTDOWN).await
    }

    /// Runs the node's matrix checks. It takes minutes under TCG: the request
    /// may take up to [`MATRIX_TIMEOUT`] (the client has no overall timeout
    /// otherwise; this bounds a node that never answers).
    pub async fn matrix_run(
        &self,
        req: &api::MatrixRunRequest,
    ) -> Result<crate::matrix::NodeMatrixReport, ClientError> {
        let url = format!("{}{}", self.base, paths::MATRIX_RUN);
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Setup(e.to_string()))?;
        let r = self
            .http
            .post(&url)
            .timeout(MATRIX_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let resp = self.send(r, &url).await?;
        decode(resp, url).await
    }
}

impl NodeClient {
    /// `request` (named `what` in the error), given up with
    /// [`ClientError::Rebooted`] once the node's health answers with another
    /// boot id than before the request; asked every `every`. A guest that
    /// crashes and resets leaves the host's connection open in QEMU's
    /// user-mode network, so without this the request would wait for its
    /// own timeout (a quarter of an hour for the matrix). A health request
    /// that fails or is slow changes nothing (the node may be busy), and a
    /// node that gives no boot id (older than the field) is not watched.
    pub async fn unless_rebooted<T>(
        &self,
        what: &str,
        every: Duration,
        request: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let boot = self.health_within(every).await.ok().and_then(|h| h.boot_id);
        let Some(boot) = boot else {
            return request.await;
        };
        tokio::pin!(request);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = &mut request => return r,
                _ = tick.tick() => {
                    let now = self.health_within(every).await.ok().and_then(|h| h.boot_id);
                    if now.is_some_and(|id| id != boot) {
                        return Err(ClientError::Rebooted {
                            node: self.node.clone(),
                            what: what.to_string(),
                        });
                    }
                }
            }
        }
    }
}

/// A node's clock as its API shows it: the HTTP `Date` header of a health
/// request, with the host's clock just before sending and just after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDate {
    pub sent: std::time::SystemTime,
    pub received: std::time::SystemTime,
    /// The raw header (`Sun, 06 Nov 1994 08:49:37 GMT`), when sent.
    pub date: Option<String>,
    /// The node's clock in the answer ([`api::Health::time_unix_ms`]), in
    /// milliseconds, when the node sends it.
    pub node_ms: Option<u64>,
}

impl NodeClient {
    /// The node's clock on `GET /v1/health` (clock-skew checks): the
    /// milliseconds in its answer and its `Date` header.
    pub async fn server_date(&self) -> Result<ServerDate, ClientError> {
        let url = format!("{}{}", self.base, paths::HEALTH);
        let sent = std::time::SystemTime::now();
        let resp = self.send(self.http.get(&url), &url).await?;
        let received = std::time::SystemTime::now();
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let health: api::Health = decode(resp, url).await?;
        Ok(ServerDate {
            sent,
            received,
            date,
            node_ms: health.time_unix_ms,
        })
    }
}
