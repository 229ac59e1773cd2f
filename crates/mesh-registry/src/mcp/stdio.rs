//! The stdio transport: the registry spawns the server and speaks newline-delimited
//! JSON-RPC on its stdin and stdout; what it writes to stderr is logged, and the last
//! lines explain an exit.
//!
//! Three tasks per process: a reader that routes responses to their waiting requests
//! (and answers the server's own requests: `ping`, or method-not-found), a stderr
//! reader, and a waiter that owns the child, kills it when the transport is closed or
//! dropped, and publishes why the connection ended.

use super::client::{McpError, TOOLS_CHANGED};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, oneshot, watch};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Lines of stderr kept to explain an exit.
const STDERR_TAIL: usize = 5;

/// What a server process inherits from the mesh's environment: what programs need to
/// find themselves and their files, as MCP's reference clients pass on.
const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "TMPDIR", "TZ",
];

pub(crate) struct StdioTransport {
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    pending: Pending,
    closed: watch::Receiver<Option<String>>,
    /// Dropping or firing it kills the process.
    kill: Mutex<Option<oneshot::Sender<()>>>,
    /// Signalled when the server says its tools changed.
    pub(crate) tools_changed: Arc<Notify>,
}

impl StdioTransport {
    /// Starts `command` with a minimal environment (`INHERITED` from this process)
    /// plus `env`: the mesh's own variables, credentials among them, stay out of
    /// third-party server processes.
    pub fn spawn(command: &[String], env: Vec<(String, String)>) -> Result<Self, McpError> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| McpError::Unreachable("the command is empty".into()))?;
        let inherited = INHERITED
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)));
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(inherited.chain(env))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| McpError::Unreachable(format!("cannot start `{program}`: {e}")))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(McpError::Unreachable(format!(
                "`{program}` started without its standard streams"
            )));
        };
        let stdin = Arc::new(tokio::sync::Mutex::new(stdin));
        let pending: Pending = Arc::default();
        let (closed_tx, closed) = watch::channel(None);
        let tools_changed = Arc::new(Notify::new());
        tokio::spawn(read_stdout(
            stdout,
            pending.clone(),
            stdin.clone(),
            closed.clone(),
            tools_changed.clone(),
        ));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_done = tokio::spawn(read_stderr(stderr, tail.clone(), program.clone()));
        let (kill, killed) = oneshot::channel::<()>();
        let (program, waiting) = (program.clone(), pending.clone());
        tokio::spawn(async move {
            let mut reason = tokio::select! {
                status = child.wait() => match status {
                    Ok(status) => format!("`{program}` exited ({status})"),
                    Err(e) => format!("`{program}` could not be waited for: {e}"),
                },
                // Fired or dropped: the mesh is done with this server.
                _ = killed => {
                    let _ = child.kill().await;
                    format!("`{program}` was stopped by the mesh")
                }
            };
            // Give the stderr reader a moment to drain the last words.
            let _ = tokio::time::timeout(Duration::from_millis(500), stderr_done).await;
            if let Ok(tail) = tail.lock()
                && !tail.is_empty()
            {
                let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
                reason.push_str(&format!("; stderr: {}", lines.join(" | ")));
            }
            // The reason first, so a request that sees its answer dropped can read it.
            let _ = closed_tx.send(Some(reason));
            if let Ok(mut waiting) = waiting.lock() {
                waiting.clear();
            }
        });
        Ok(StdioTransport {
            stdin,
            pending,
            closed,
            kill: Mutex::new(Some(kill)),
            tools_changed,
        })
    }

    fn gone(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    pub async fn request(
        &self,
        id: u64,
        message: &Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        if let Some(reason) = self.gone() {
            return Err(McpError::Unreachable(reason));
        }
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, tx);
        }
        // The write is timed too: a server that stops reading fills the pipe.
        let exchange = async {
            self.write(message).await?;
            rx.await.map_err(|_| {
                McpError::Unreachable(
                    self.gone()
                        .unwrap_or_else(|| "the server went away mid-request".into()),
                )
            })
        };
        let outcome = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(McpError::Timeout(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                )))
            });
        if outcome.is_err() {
            self.forget(id);
        }
        outcome
    }

    pub async fn notify(&self, message: &Value) -> Result<(), McpError> {
        self.write(message).await
    }

    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
    }

    async fn write(&self, message: &Value) -> Result<(), McpError> {
        let Err(e) = write_line(&self.stdin, message).await else {
            return Ok(());
        };
        // A broken pipe means the process is ending: its exit says more than the pipe.
        let reason = tokio::time::timeout(Duration::from_secs(1), self.closed())
            .await
            .unwrap_or_else(|_| format!("cannot write to the server: {e}"));
        Err(McpError::Unreachable(reason))
    }

    pub async fn closed(&self) -> String {
        let mut closed = self.closed.clone();
        match closed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the server's waiter ended".into(),
        }
    }

    pub fn close(&self) {
        if let Ok(mut kill) = self.kill.lock()
            && let Some(kill) = kill.take()
        {
            let _ = kill.send(());
        }
    }
}

/// One message per line; `serde_json` escapes newlines inside strings, so a message
/// never spans lines.
async fn write_line(
    stdin: &tokio::sync::Mutex<ChildStdin>,
    message: &Value,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    let mut stdin = stdin.lock().await;
    stdin.write_all(&line).await?;
    stdin.flush().await
}

/// Reads until the server closes stdout or the connection is closed. (A command that
/// is a wrapper can leave the real server running after the wrapper is killed: the
/// reader must not wait for its stdout, and dropping stdin then tells it to exit.)
async fn read_stdout(
    stdout: ChildStdout,
    pending: Pending,
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    mut closed: watch::Receiver<Option<String>>,
    tools_changed: Arc<Notify>,
) {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = closed.wait_for(Option::is_some) => return,
        };
        let Ok(Some(line)) = line else {
            return;
        };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(line = %line, "an MCP server wrote something that is not JSON-RPC");
            continue;
        };
        match (message.get("method"), message.get("id")) {
            // The server asks something of the client; the mesh offers no client
            // features, so only `ping` has an answer.
            (Some(method), Some(id)) => {
                let reply = if method == "ping" {
                    json!({"jsonrpc": "2.0", "id": id, "result": {}})
                } else {
                    json!({"jsonrpc": "2.0", "id": id,
                           "error": {"code": -32601, "message": format!("the mesh does not offer {method}")}})
                };
                let _ = write_line(&stdin, &reply).await;
            }
            (Some(method), None) if method == TOOLS_CHANGED => tools_changed.notify_one(),
            (Some(method), None) => tracing::debug!(%method, "MCP server notification"),
            (None, Some(id)) => {
                let waiter = id
                    .as_u64()
                    .and_then(|id| pending.lock().ok().and_then(|mut p| p.remove(&id)));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(message);
                }
            }
            (None, None) => {
                tracing::warn!(line = %line, "an MCP server wrote a message with neither method nor id")
            }
        }
    }
}

async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    program: String,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(server = %program, "{line}");
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}
