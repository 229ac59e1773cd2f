//! Talking to a remote A2A agent: fetching its card, and the JSON-RPC methods the mesh
//! uses (`SendMessage`, `GetTask`, `CancelTask`).

use crate::card::{AgentCard, CardError, parse_card};
use crate::jsonrpc::{self, RpcError};
use crate::model::{
    CancelTaskRequest, GetTaskRequest, SendMessageRequest, SendMessageResponse, Task,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Largest card or reply read from a remote agent.
pub const MAX_REPLY_BYTES: usize = 1 << 20;
const CARD_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub enum A2aError {
    /// The agent could not be reached, or answered with an HTTP error.
    Unreachable(String),
    /// It answered the call with a JSON-RPC error.
    Rpc(RpcError),
    /// Its answer does not follow the protocol.
    Invalid(String),
    /// What it serves as its card is not a valid Agent Card.
    BadCard(CardError),
}

impl fmt::Display for A2aError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            A2aError::Unreachable(why) => write!(f, "unreachable: {why}"),
            A2aError::Rpc(err) => write!(f, "{err}"),
            A2aError::Invalid(why) => write!(f, "invalid agent response: {why}"),
            A2aError::BadCard(err) => write!(f, "invalid Agent Card: {err}"),
        }
    }
}

impl std::error::Error for A2aError {}

fn unreachable(url: &reqwest::Url, err: reqwest::Error) -> A2aError {
    // reqwest's own message omits the cause (connection refused, timed out, …).
    let mut why = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        why = format!("{why}: {cause}");
        source = cause.source();
    }
    A2aError::Unreachable(format!("{url}: {why}"))
}

/// Reads at most `MAX_REPLY_BYTES` of a reply body, so a hostile agent cannot make the
/// mesh buffer an unbounded one.
async fn read_capped(url: &reqwest::Url, mut resp: reqwest::Response) -> Result<Vec<u8>, A2aError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(url, e))? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(A2aError::Invalid(format!(
                "{url} sent more than {MAX_REPLY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An HTTP status other than success, named with where a redirect would have led:
/// callers build their clients without following redirects, since the policy that
/// admitted the URL judged its host, not the redirect's.
fn http_failure(url: &reqwest::Url, resp: &reqwest::Response) -> A2aError {
    let status = resp.status();
    match resp.headers().get(reqwest::header::LOCATION) {
        Some(to) if status.is_redirection() => A2aError::Unreachable(format!(
            "{url} redirects (HTTP {status}) to {}; use that URL",
            to.to_str().unwrap_or("?")
        )),
        _ => A2aError::Unreachable(format!("{url} answered HTTP {status}")),
    }
}

/// Fetches and checks the Agent Card at `url`.
pub async fn fetch_card(http: &reqwest::Client, url: &reqwest::Url) -> Result<AgentCard, A2aError> {
    let resp = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(CARD_TIMEOUT)
        .send()
        .await
        .map_err(|e| unreachable(url, e))?;
    if !resp.status().is_success() {
        return Err(http_failure(url, &resp));
    }
    let body = read_capped(url, resp).await?;
    parse_card(&body).map_err(A2aError::BadCard)
}

/// A client of one agent's JSON-RPC interface.
pub struct A2aClient {
    http: reqwest::Client,
    url: reqwest::Url,
    /// Sent as `Authorization: Bearer`, when the agent needs a key.
    token: Option<String>,
    next_id: AtomicU64,
}

impl A2aClient {
    pub fn new(http: reqwest::Client, url: &str, token: Option<String>) -> Result<Self, A2aError> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| A2aError::Invalid(format!("interface URL {url}: {e}")))?;
        Ok(A2aClient {
            http,
            url,
            token,
            next_id: AtomicU64::new(1),
        })
    }

    pub async fn send_message(
        &self,
        request: &SendMessageRequest,
    ) -> Result<SendMessageResponse, A2aError> {
        self.call(jsonrpc::SEND_MESSAGE, serde_json::to_value(request))
            .await
    }

    pub async fn get_task(&self, id: &str) -> Result<Task, A2aError> {
        let request = GetTaskRequest {
            id: id.to_string(),
            history_length: Some(0),
            tenant: None,
        };
        self.call(jsonrpc::GET_TASK, serde_json::to_value(&request))
            .await
    }

    pub async fn cancel_task(&self, id: &str) -> Result<Task, A2aError> {
        let request = CancelTaskRequest {
            id: id.to_string(),
            tenant: None,
            metadata: None,
        };
        self.call(jsonrpc::CANCEL_TASK, serde_json::to_value(&request))
            .await
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        params: Result<Value, serde_json::Error>,
    ) -> Result<R, A2aError> {
        let params = params.map_err(|e| A2aError::Invalid(format!("{method} params: {e}")))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .http
            .post(self.url.clone())
            .header("A2A-Version", crate::card::PROTOCOL_VERSION)
            .timeout(CALL_TIMEOUT)
            .json(&jsonrpc::Request::new(id, method, params));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| unreachable(&self.url, e))?;
        let failed = (!resp.status().is_success()).then(|| http_failure(&self.url, &resp));
        let body = read_capped(&self.url, resp).await?;
        let reply: jsonrpc::Response = match serde_json::from_slice(&body) {
            Ok(reply) => reply,
            Err(e) => {
                return Err(failed.unwrap_or_else(|| {
                    A2aError::Invalid(format!("{method}: not a JSON-RPC response: {e}"))
                }));
            }
        };
        if let Some(err) = reply.error {
            return Err(A2aError::Rpc(err));
        }
        if let Some(failed) = failed {
            return Err(failed);
        }
        let result = reply
            .result
            .ok_or_else(|| A2aError::Invalid(format!("{method}: neither result nor error")))?;
        serde_json::from_value(result)
            .map_err(|e| A2aError::Invalid(format!("{method} result: {e}")))
    }
}
