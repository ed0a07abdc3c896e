//! The client's bounds on what a node sends, against a real TLS server on
//! loopback (the node's real certificate profile) that answers every request
//! with a body that never ends.

use super::*;
use crate::pki::{ClientRole, Secrets, issue_client_cert};
use futures::StreamExt;
use ironclad_contract::tls::server_config as server_tls_config;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE: &str = "dev-cp-1";

/// What the fake node sends after the request's headers.
#[derive(Clone, Copy)]
enum Answer {
    /// `200`, chunked, chunks of 64 KiB forever.
    EndlessChunks,
    /// `200` announcing a 1 TiB body, then sending bytes forever.
    HugeLength,
    /// `500`, chunked, forever (the error-body path).
    EndlessError,
    /// `200` NDJSON, one line that never ends.
    EndlessLine,
}

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Bytes of body the server managed to send before the client hung up.
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(secrets: &Secrets, answer: Answer) -> Server {
    let leaf = secrets
        .os_ca
        .issue_node_api(NODE, Ipv4Addr::new(10, 5, 0, 2))
        .unwrap();
    let tls = server_tls_config(secrets.os_ca.cert_pem(), &leaf.cert_pem, &leaf.key_pem).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let (status, headers) = match answer {
                    Answer::EndlessChunks => ("200 OK", "Transfer-Encoding: chunked"),
                    Answer::HugeLength => ("200 OK", "Content-Length: 1099511627776"),
                    Answer::EndlessError => {
                        ("500 Internal Server Error", "Transfer-Encoding: chunked")
                    }
                    Answer::EndlessLine => ("200 OK", "Transfer-Encoding: chunked"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = match answer {
                    Answer::EndlessLine => b'x',
                    _ => b' ',
                };
                let data = vec![piece; 64 * 1024];
                let chunked = !matches!(answer, Answer::HugeLength);
                loop {
                    let w = if chunked {
                        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
                        c.extend_from_slice(&data);
                        c.extend_from_slice(b"\r\n");
                        s.write_all(&c).await
                    } else {
                        s.write_all(&data).await
                    };
                    if w.is_err() {
                        return;
                    }
                    counter.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    Server { addr, task, sent }
}

fn client(secrets: &Secrets, addr: SocketAddr) -> NodeClient {
    let admin = issue_client_cert(&secrets.os_ca, ClientRole::Admin, "admin").unwrap();
    NodeClient::new(
        NODE,
        addr,
        secrets.os_ca.cert_pem(),
        &admin.cert_pem,
        &admin.key_pem,
    )
    .unwrap()
}

/// Runs `f` with a deadline: a client that never gives up fails the test
/// instead of hanging it.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the client gave up on the endless body within 60 s")
}

#[tokio::test]
async fn an_endless_json_answer_is_refused_at_the_cap() {
    let secrets = Secrets::generate("dev").unwrap();
    let server = serve(&secrets, Answer::EndlessChunks).await;
    let c = client(&secrets, server.addr);
    let err = bounded(c.version()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::TooLarge { limit, .. } if limit == MAX_ANSWER_BYTES),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("larger than 16777216 bytes"),
        "{err}"
    );
    // It read up to the cap, not the whole (endless) thing.
    let sent = server.sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent >= MAX_ANSWER_BYTES as u64 / 2, "{sent}");
}

#[tokio::test]
async fn an_announced_huge_answer_is_refused_before_reading() {
    let secrets = Secrets::generate("dev").unwrap();
    let server = serve(&secrets, Answer::HugeLength).await;
    let err = bounded(client(&secrets, server.addr).health())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn an_endless_error_body_is_refused_too() {
    let secrets = Secrets::generate("dev").unwrap();
    let server = serve(&secrets, Answer::EndlessError).await;
    let err = bounded(client(&secrets, server.addr).reboot())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn an_endless_log_line_ends_the_stream_with_an_error() {
    let secrets = Secrets::generate("dev").unwrap();
    let server = serve(&secrets, Answer::EndlessLine).await;
    let c = client(&secrets, server.addr);
    let mut lines = c.follow_logs("containerd", None).await.unwrap();
    let first = bounded(lines.next()).await.expect("an item");
    assert!(
        matches!(first, Err(ClientError::TooLarge { limit, .. }) if limit == MAX_LOG_LINE_BYTES),
        "{first:?}"
    );
    // The stream ends after the error.
    assert!(bounded(lines.next()).await.is_none());
}
