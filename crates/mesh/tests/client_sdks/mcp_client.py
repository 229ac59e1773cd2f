"""The official MCP Python SDK (Streamable HTTP) against the tool registry's `/mcp`.

Usage: mcp_client.py MCP_URL API_KEY WORKSPACE_FILE. WORKSPACE_FILE is a file the test
put in the mesh's workspace; `file_read` must return its text. Exits non-zero on the
first mismatch.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

url, key, workspace_file = sys.argv[1], sys.argv[2], sys.argv[3]


def text_of(result):
    return " ".join(c.text for c in result.content if c.type == "text")


async def main():
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer " + key}) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                init = await session.initialize()
                assert init.server_info.name == "agentic-mesh", init
                assert init.capabilities.tools is not None, init

                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert "file_read" in tools, tools
                assert "path" in tools["file_read"].input_schema["properties"], tools["file_read"]

                name = os.path.basename(workspace_file)
                with open(workspace_file) as f:
                    expected = f.read()
                result = await session.call_tool("file_read", {"path": name})
                assert not result.is_error, result
                assert result.structured_content["content"] == expected, result
                assert json.loads(text_of(result))["content"] == expected, result

                # A tool's own failure is a result with isError, not a protocol error.
                missing = await session.call_tool("file_read", {"path": "no-such-file.txt"})
                assert missing.is_error and "not_found" in text_of(missing), missing

                try:
                    await session.call_tool("no_such_tool", {})
                    raise AssertionError("an unknown tool was called")
                except MCPError as e:
                    assert "no_such_tool" in str(e), e


asyncio.run(main())
print("ok")
