-- MCP servers the tool registry connects to, and what backs each tool: its HTTP
-- endpoint (the default), the registry itself (built-in tools), or an MCP server's tool.
CREATE TABLE mcp_servers (
  id TEXT PRIMARY KEY,
  name TEXT UNIQUE NOT NULL,
  transport TEXT NOT NULL,
  command TEXT,
  url TEXT,
  risk_tier TEXT NOT NULL,
  rate_limit INTEGER,
  cost_model TEXT,
  status TEXT NOT NULL DEFAULT 'active',
  registered_at TEXT NOT NULL
);
ALTER TABLE tools ADD COLUMN backend TEXT NOT NULL DEFAULT 'http';
ALTER TABLE tools ADD COLUMN mcp_server TEXT;
ALTER TABLE tools ADD COLUMN mcp_tool TEXT;
CREATE INDEX tools_mcp_server ON tools(mcp_server);
