//! The JSON-RPC 2.0 envelope of A2A's JSON-RPC binding, and its error codes.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt;

pub const SEND_MESSAGE: &str = "SendMessage";
pub const GET_TASK: &str = "GetTask";
pub const CANCEL_TASK: &str = "CancelTask";
/// `SendMessage` answered as a Server-Sent Events stream of `StreamResponse`s.
pub const SEND_STREAMING_MESSAGE: &str = "SendStreamingMessage";
/// A stream of an existing task's events, from its current state on.
pub const SUBSCRIBE_TO_TASK: &str = "SubscribeToTask";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const TASK_NOT_FOUND: i64 = -32001;
pub const TASK_NOT_CANCELABLE: i64 = -32002;
pub const UNSUPPORTED_OPERATION: i64 = -32004;
pub const CONTENT_TYPE_NOT_SUPPORTED: i64 = -32005;
pub const INVALID_AGENT_RESPONSE: i64 = -32006;
pub const VERSION_NOT_SUPPORTED: i64 = -32009;

/// A2A 1.0 methods this server knows but does not serve (push notifications,
/// listing, the extended card): `UnsupportedOperation`, not `MethodNotFound`, so a
/// client can tell an absent feature from a typo.
pub const KNOWN_UNSERVED: &[&str] = &[
    "ListTasks",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
];

/// A call. `params` is left as JSON so a server can answer a malformed one with
/// `InvalidParams` rather than failing to read the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    /// A string or number; absent for notifications, which A2A does not use.
    #[serde(default)]
    pub id: Value,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

impl Request {
    pub fn new(id: u64, method: &str, params: Value) -> Self {
        Request {
            jsonrpc: "2.0".into(),
            id: json!(id),
            method: method.into(),
            params,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    pub fn result(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(id: Value, error: RpcError) -> Self {
        Response {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (JSON-RPC error {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// An A2A-specific error: its `data` carries a `google.rpc.ErrorInfo` whose reason
    /// is the error's name without `Error`, in UPPER_SNAKE_CASE, as the binding asks.
    fn a2a(code: i64, reason: &str, message: impl Into<String>, metadata: Value) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: Some(json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "a2a-protocol.org",
                "metadata": metadata,
            }])),
        }
    }

    pub fn parse_error(detail: impl fmt::Display) -> Self {
        RpcError::new(PARSE_ERROR, format!("Invalid JSON payload: {detail}"))
    }

    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        RpcError::new(
            INVALID_REQUEST,
            format!("Request payload validation error: {detail}"),
        )
    }

    pub fn method_not_found(method: &str) -> Self {
        RpcError {
            code: METHOD_NOT_FOUND,
            message: format!("Method not found: {method}"),
            data: Some(json!({"method": method})),
        }
    }

    pub fn invalid_params(detail: impl fmt::Display) -> Self {
        RpcError::new(INVALID_PARAMS, format!("Invalid parameters: {detail}"))
    }

    pub fn internal(detail: impl fmt::Display) -> Self {
        RpcError::new(INTERNAL_ERROR, format!("Internal error: {detail}"))
    }

    pub fn task_not_found(id: &str) -> Self {
        RpcError::a2a(
            TASK_NOT_FOUND,
            "TASK_NOT_FOUND",
            format!("Task not found: {id}"),
            json!({"taskId": id}),
        )
    }

    pub fn task_not_cancelable(id: &str, state: impl fmt::Display) -> Self {
        RpcError::a2a(
            TASK_NOT_CANCELABLE,
            "TASK_NOT_CANCELABLE",
            format!("Task {id} cannot be canceled: it is {state}"),
            json!({"taskId": id}),
        )
    }

    /// The client asked, by its `A2A-Version` header, for a version this server does
    /// not speak.
    pub fn version_not_supported(asked: &str, supported: &str) -> Self {
        RpcError::a2a(
            VERSION_NOT_SUPPORTED,
            "VERSION_NOT_SUPPORTED",
            format!("A2A version {asked} is not supported; this server speaks {supported}"),
            json!({"requestedVersion": asked, "supportedVersions": supported}),
        )
    }

    pub fn unsupported_operation(detail: impl fmt::Display) -> Self {
        RpcError::a2a(
            UNSUPPORTED_OPERATION,
            "UNSUPPORTED_OPERATION",
            format!("Unsupported operation: {detail}"),
            json!({}),
        )
    }
}
