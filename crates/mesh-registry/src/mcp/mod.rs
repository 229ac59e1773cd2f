//! MCP, both ways.
//!
//! As a client: an MCP server registered with the tool registry (a command to spawn,
//! or a Streamable HTTP URL) is connected to, its tools are stored as mesh tools named
//! `<server>.<tool>`, and invoking one sends `tools/call` after every check any tool
//! call passes (`client`, `stdio`, `http`, `hub`, `servers`, `catalog`).
//!
//! As a server: `/mcp` on the tool registry's port speaks Streamable HTTP and offers
//! the mesh's tools to MCP clients, as far as the caller may use them (`server`).
//!
//! Two protocol revisions are spoken: 2026-07-28 (stateless; each request declares its
//! version in `_meta`) and 2025-11-25 (an `initialize` handshake).

mod catalog;
mod client;
mod http;
mod hub;
mod routes;
mod server;
mod servers;
mod stdio;

pub(crate) use client::McpClient;
pub(crate) use hub::{McpHub, call, client_for, supervise};
pub(crate) use routes::routes;
pub use servers::{McpServerView, RegisteredServer, SkippedTool};

/// The newest revision, offered first.
pub(crate) const LATEST: &str = "2026-07-28";
/// The handshake revision still spoken.
pub(crate) const LEGACY: &str = "2025-11-25";
pub(crate) const SUPPORTED: [&str; 2] = [LATEST, LEGACY];
/// Where a 2026-07-28 request declares its version.
pub(crate) const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
