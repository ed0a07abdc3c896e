//! [`Cri`], the client: a gRPC channel to containerd's unix socket and the
//! CRI calls the matrix makes, each bounded by a timeout; what they return
//! ([`ExecOutput`], [`Pod`], [`Completion`]).

use super::{CriError, InFlight, LABEL, PodOptions, Variant, container_config, sandbox_config};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one CRI call other than exec may take.
/// Generous: under TCG on one vCPU a sandbox (shim, CNI plugins, runc) can
/// take a minute when several start at once.
const CALL_TIMEOUT: Duration = Duration::from_secs(240);

/// The output of one `ExecSync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    /// stdout then stderr, trimmed, for evidence.
    pub fn combined(&self) -> String {
        let mut s = self.stdout.trim().to_string();
        let e = self.stderr.trim();
        if !e.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(e);
        }
        s
    }
}

/// A running pod: a sandbox and one long-running toolbox container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub variant: Variant,
    pub sandbox_id: String,
    pub container_id: String,
}

/// How a one-shot container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub exit_code: i32,
    pub reason: String,
}

/// A job pod [`Cri::run_job`] started and left in place.
#[derive(Debug)]
pub struct Job {
    pub sandbox_id: String,
    /// How its container ended.
    pub done: Result<Completion, CriError>,
}

/// A connected CRI client.
#[derive(Debug, Clone)]
pub struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
    /// Every call in flight (shared by the clones).
    inflight: InFlight,
}

/// A CRI call bounded by `timeout`, listed in `inflight` as `call subject`
/// while it runs.
async fn timed<T>(
    inflight: &InFlight,
    (call, subject): (&'static str, &str),
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CriError> {
    let _step = inflight.track(if subject.is_empty() {
        format!("CRI {call}")
    } else {
        format!("CRI {call} {subject}")
    });
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(CriError::Call {
            call,
            status: Box::new(status),
        }),
        Err(_) => Err(CriError::Timeout { call, timeout }),
    }
}

/// A CRI call other than exec, bounded by [`CALL_TIMEOUT`].
async fn call<T>(
    inflight: &InFlight,
    what: (&'static str, &str),
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CriError> {
    timed(inflight, what, CALL_TIMEOUT, fut).await
}

/// A container or sandbox id as logs show it: its first 12 characters.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl Cri {
    /// Connects to containerd's socket (a gRPC channel over a unix stream).
    pub async fn connect(socket: &Path) -> Result<Cri, CriError> {
        Cri::connect_tracked(socket, InFlight::default()).await
    }

    /// [`Cri::connect`], listing every call in `inflight` while it runs.
    pub async fn connect_tracked(socket: &Path, inflight: InFlight) -> Result<Cri, CriError> {
        let path = socket.to_path_buf();
        let err = |reason: String| CriError::Connect {
            path: socket.to_path_buf(),
            reason,
        };
        // The URI is required by tonic and ignored by the connector.
        let endpoint = Endpoint::try_from("http://[::1]:50051")
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(5));
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        });
        let channel = tokio::time::timeout(
            Duration::from_secs(10),
            endpoint.connect_with_connector(connector),
        )
        .await
        .map_err(|_| err("no connection within 10s".into()))?
        .map_err(|e| err(format!("{e}: {}", source_chain(&e))))?;
        Ok(Cri {
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
            inflight,
        })
    }

    /// The runtime's name and version (`containerd 1.7.x`).
    pub async fn version(&mut self) -> Result<cri::VersionResponse, CriError> {
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        call(&self.inflight, ("Version", ""), self.rt.version(req)).await
    }

    /// Whether `image` is present in the runtime's store (never pulls).
    pub async fn image_present(&mut self, image: &str) -> Result<bool, CriError> {
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        let resp = call(
            &self.inflight,
            ("ImageStatus", image),
            self.img.image_status(req),
        )
        .await?;
        Ok(resp.image.is_some())
    }

    /// Creates a sandbox of `variant` and starts a toolbox container in it
    /// that sleeps until removed. On any failure the sandbox is removed again.
    pub async fn run_pod(
        &mut self,
        variant: Variant,
        name: &str,
        opts: &PodOptions,
    ) -> Result<Pod, CriError> {
        let sandbox_id = self.run_sandbox(variant, name, opts).await?;
        let cmd = ["/bin/busybox", "sleep", "2147483647"];
        match self
            .start_container(&sandbox_id, variant, "toolbox", name, opts, &cmd)
            .await
        {
            Ok(container_id) => Ok(Pod {
                variant,
                sandbox_id,
                container_id,
            }),
            Err(e) => {
                let _ = self.remove_sandbox(&sandbox_id).await;
                Err(e)
            }
        }
    }

    async fn run_sandbox(
        &mut self,
        variant: Variant,
        name: &str,
        opts: &PodOptions,
    ) -> Result<String, CriError> {
        let handler = opts
            .runtime_handler
            .clone()
            .unwrap_or_else(|| variant.runtime_handler().to_string());
        let req = cri::RunPodSandboxRequest {
            config: Some(sandbox_config(variant, name, opts)),
            runtime_handler: handler,
        };
        let resp = call(
            &self.inflight,
            ("RunPodSandbox", name),
            self.rt.run_pod_sandbox(req),
        )
        .await?;
        Ok(resp.pod_sandbox_id)
    }

    async fn start_container(
        &mut self,
        sandbox_id: &str,
        variant: Variant,
        cname: &str,
        pod_name: &str,
        opts: &PodOptions,
        cmd: &[&str],
    ) -> Result<String, CriError> {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(container_config(variant, cname, opts, cmd)),
            sandbox_config: Some(sandbox_config(variant, pod_name, opts)),
        };
        let created = call(
            &self.inflight,
            ("CreateContainer", pod_name),
            self.rt.create_container(req),
        )
        .await?;
        let id = created.container_id;
        let start = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        call(
            &self.inflight,
            ("StartContainer", pod_name),
            self.rt.start_container(start),
        )
        .await?;
        Ok(id)
    }

    /// Runs `cmd` in the container and waits for it at most `timeout`.
    pub async fn exec(
        &mut self,
        container_id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<ExecOutput, CriError> {
        self.exec_as(short(container_id), container_id, cmd, timeout)
            .await
    }

    /// [`Cri::exec`], listed in flight as `CRI ExecSync <subject>` (the
    /// pod's name or what the exec is for, rather than the container id).
    pub async fn exec_as(
        &mut self,
        subject: &str,
        container_id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<ExecOutput, CriError> {
        let secs = timeout.as_secs().max(1);
        let req = cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: secs as i64,
        };
        // containerd enforces `timeout`; the client waits a little longer.
        let wait = Duration::from_secs(secs + 10);
        let r = timed(
            &self.inflight,
            ("ExecSync", subject),
            wait,
            self.rt.exec_sync(req),
        )
        .await?;
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        })
    }

    /// Runs `cmd` as the only container of a new pod of `variant` until it
    /// exits (at most `timeout`); the pod is removed in every case.
    pub async fn run_to_completion(
        &mut self,
        variant: Variant,
        name: &str,
        opts: &PodOptions,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<Completion, CriError> {
        let job = self.run_job(variant, name, opts, cmd, timeout).await?;
        let cleanup = self.remove_sandbox(&job.sandbox_id).await;
        let done = job.done?;
        cleanup?;
        Ok(done)
    }

    /// As [`Cri::run_to_completion`], but the pod is left for the caller to
    /// remove ([`Cri::remove_sandbox`]), whether the job ran or not: under
    /// TCG a gVisor sandbox's removal takes 20–30 s, which a caller may do
    /// after it has reported. `Err` only when the sandbox did not start.
    pub async fn run_job(
        &mut self,
        variant: Variant,
        name: &str,
        opts: &PodOptions,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<Job, CriError> {
        let sandbox_id = self.run_sandbox(variant, name, opts).await?;
        let done = match self
            .start_container(&sandbox_id, variant, "job", name, opts, cmd)
            .await
        {
            Ok(id) => self.wait_exit(&id, timeout).await,
            Err(e) => Err(e),
        };
        Ok(Job { sandbox_id, done })
    }

    /// Polls container `id` until it has exited (at most `timeout`).
    async fn wait_exit(&mut self, id: &str, timeout: Duration) -> Result<Completion, CriError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let req = cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            };
            let st = call(
                &self.inflight,
                ("ContainerStatus", short(id)),
                self.rt.container_status(req),
            )
            .await?;
            let Some(st) = st.status else {
                return Err(CriError::Unexpected {
                    call: "ContainerStatus",
                    reason: "no status".into(),
                });
            };
            if st.state == cri::ContainerState::ContainerExited as i32 {
                return Ok(Completion {
                    exit_code: st.exit_code,
                    reason: st.reason,
                });
            }
            if Instant::now() >= deadline {
                return Err(CriError::Timeout {
                    call: "ContainerStatus (wait for exit)",
                    timeout,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Stops and removes a sandbox and its containers. Removing a sandbox that
    /// is already gone is not an error.
    pub async fn remove_sandbox(&mut self, sandbox_id: &str) -> Result<(), CriError> {
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let stopped = call(
            &self.inflight,
            ("StopPodSandbox", short(sandbox_id)),
            self.rt.stop_pod_sandbox(stop),
        )
        .await;
        let rm = cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_string(),
        };
        let removed = call(
            &self.inflight,
            ("RemovePodSandbox", short(sandbox_id)),
            self.rt.remove_pod_sandbox(rm),
        )
        .await;
        match (stopped, removed) {
            (_, Ok(_)) => Ok(()),
            (_, Err(e)) if is_not_found(&e) => Ok(()),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// The ids of every sandbox carrying [`LABEL`].
    pub async fn labelled_sandboxes(&mut self) -> Result<Vec<String>, CriError> {
        let mut sel = HashMap::new();
        sel.insert(LABEL.to_string(), "1".to_string());
        let req = cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: sel,
                ..Default::default()
            }),
        };
        let r = call(
            &self.inflight,
            ("ListPodSandbox", ""),
            self.rt.list_pod_sandbox(req),
        )
        .await?;
        Ok(r.items.into_iter().map(|s| s.id).collect())
    }

    /// Removes every sandbox carrying [`LABEL`]; returns how many there were.
    pub async fn remove_labelled(&mut self) -> Result<usize, CriError> {
        let ids = self.labelled_sandboxes().await?;
        let mut first_err = None;
        for id in &ids {
            if let Err(e) = self.remove_sandbox(id).await {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(ids.len()),
        }
    }
}

fn is_not_found(e: &CriError) -> bool {
    matches!(e, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
