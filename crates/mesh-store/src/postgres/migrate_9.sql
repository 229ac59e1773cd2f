-- MCP servers the tool registry connects to, and what backs each tool: its HTTP
-- endpoint (the default), the registry itself (built-in tools), or an MCP server's tool.
CREATE TABLE mcp_servers (
  id UUID PRIMARY KEY,
  name VARCHAR(64) UNIQUE NOT NULL,
  transport VARCHAR(16) NOT NULL,
  command JSONB,
  url TEXT,
  risk_tier VARCHAR(16) NOT NULL,
  rate_limit INTEGER,
  cost_model JSONB,
  status VARCHAR(32) NOT NULL DEFAULT 'active',
  registered_at TIMESTAMPTZ NOT NULL
);
ALTER TABLE tools ADD COLUMN backend VARCHAR(16) NOT NULL DEFAULT 'http';
ALTER TABLE tools ADD COLUMN mcp_server VARCHAR(64);
ALTER TABLE tools ADD COLUMN mcp_tool TEXT;
CREATE INDEX tools_mcp_server ON tools(mcp_server);
