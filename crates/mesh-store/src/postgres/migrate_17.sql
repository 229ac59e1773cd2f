-- An MCP server's `env` (stdio) or `headers` (Streamable HTTP) as a JSON object; values
-- are literal or `secret://NAME` references, resolved only when connecting.
ALTER TABLE mcp_servers ADD COLUMN settings JSONB;
