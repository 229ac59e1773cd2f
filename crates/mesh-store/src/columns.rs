//! How enums with data are spread over plain columns, the same in both backends:
//! a tool's backend (`backend`, `mcp_server`, `mcp_tool`) and an MCP server's
//! transport (`transport`, `command`, `url`).

use crate::StoreError;
use mesh_types::{McpTransport, ToolBackend};
use std::collections::BTreeMap;

/// `(backend, mcp_server, mcp_tool)` of a tool.
pub(crate) fn backend_columns(backend: &ToolBackend) -> (&'static str, Option<&str>, Option<&str>) {
    match backend {
        ToolBackend::Http => ("http", None, None),
        ToolBackend::Builtin => ("builtin", None, None),
        ToolBackend::Mcp { server, tool } => ("mcp", Some(server), Some(tool)),
    }
}

pub(crate) fn backend_from_columns(
    kind: &str,
    server: Option<String>,
    tool: Option<String>,
) -> Result<ToolBackend, StoreError> {
    match (kind, server, tool) {
        ("http", _, _) => Ok(ToolBackend::Http),
        ("builtin", _, _) => Ok(ToolBackend::Builtin),
        ("mcp", Some(server), Some(tool)) => Ok(ToolBackend::Mcp { server, tool }),
        (kind, _, _) => Err(StoreError::Corrupt(format!(
            "tool backend `{kind}` without its server and tool"
        ))),
    }
}

/// `(transport, command, url, settings)` of an MCP server; `settings` (its `env` or
/// `headers`, references unresolved) is `None` when there are none.
pub(crate) type TransportColumns<'a> = (
    &'static str,
    Option<&'a Vec<String>>,
    Option<&'a str>,
    Option<&'a BTreeMap<String, String>>,
);

pub(crate) fn transport_columns(transport: &McpTransport) -> TransportColumns<'_> {
    let settings = Some(transport.settings()).filter(|s| !s.is_empty());
    match transport {
        McpTransport::Stdio { command, .. } => ("stdio", Some(command), None, settings),
        McpTransport::Http { url, .. } => ("http", None, Some(url), settings),
    }
}

pub(crate) fn transport_from_columns(
    kind: &str,
    command: Option<Vec<String>>,
    url: Option<String>,
    settings: Option<BTreeMap<String, String>>,
) -> Result<McpTransport, StoreError> {
    let settings = settings.unwrap_or_default();
    match (kind, command, url) {
        ("stdio", Some(command), _) => Ok(McpTransport::Stdio {
            command,
            env: settings,
        }),
        ("http", _, Some(url)) => Ok(McpTransport::Http {
            url,
            headers: settings,
        }),
        (kind, _, _) => Err(StoreError::Corrupt(format!(
            "MCP transport `{kind}` without its command or URL"
        ))),
    }
}
