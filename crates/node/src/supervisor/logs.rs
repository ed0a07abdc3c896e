//! A service's output: each line of its stdout and stderr is kept in a
//! [`LogRing`] (the last lines, for the API), sent to followers, and
//! appended to `<log dir>/<service>.log` when there is a log directory.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::broadcast;

/// One output line of a service, with when it was read (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub time_ms: u64,
    pub text: String,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How many new lines a slow follower may lag behind before it misses some.
pub(super) const FOLLOW_BUFFER: usize = 1024;

/// A fixed-size buffer of a service's last output lines.
#[derive(Debug, Default)]
pub struct LogRing {
    lines: VecDeque<Line>,
    cap: usize,
}

impl LogRing {
    pub fn new(cap: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(cap.min(1024)),
            cap: cap.max(1),
        }
    }

    pub fn push(&mut self, line: String) {
        self.push_line(Line {
            time_ms: now_ms(),
            text: line,
        });
    }

    pub fn push_line(&mut self, line: Line) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().map(|l| l.text.clone()).collect()
    }

    /// The last `tail` lines (all when `None`), with their times.
    pub fn tail(&self, tail: Option<usize>) -> Vec<Line> {
        let n = tail.unwrap_or(self.lines.len()).min(self.lines.len());
        self.lines
            .iter()
            .skip(self.lines.len() - n)
            .cloned()
            .collect()
    }
}

/// A service's log file, shared by the readers of its stdout and stderr.
pub(super) type LogFile = Option<Arc<tokio::sync::Mutex<tokio::fs::File>>>;

/// Opens (appends to) `<dir>/<service>.log`; `None` without a directory or
/// when it cannot be opened (the ring still keeps the lines).
pub(super) async fn open_file(dir: Option<&Path>, service: &str) -> LogFile {
    let dir = dir?;
    let _ = tokio::fs::create_dir_all(dir).await;
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{service}.log")))
        .await
        .ok()
        .map(|f| Arc::new(tokio::sync::Mutex::new(f)))
}

/// Reads `reader` line by line into the file, the ring and the followers
/// until it ends.
pub(super) async fn pump(
    reader: impl AsyncRead + Unpin,
    logs: Arc<Mutex<LogRing>>,
    new_lines: broadcast::Sender<Line>,
    file: LogFile,
) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(f) = &file {
            let mut f = f.lock().await;
            let _ = f.write_all(line.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
        }
        let line = Line {
            time_ms: now_ms(),
            text: line,
        };
        let mut ring = logs.lock().unwrap_or_else(|p| p.into_inner());
        ring.push_line(line.clone());
        // Sent under the ring's lock so that `follow` sees each line exactly once.
        // No follower is not an error.
        let _ = new_lines.send(line);
    }
}
