"""The supervise sidecar: an MCP server through which the agent proposes more access.

queue      the on-disk proposal / response queue shared with the dashboard (its public API;
           records, layout, reading, discover and claim hold the parts)
mcp        the JSON-RPC / MCP protocol; tools: the tools, their checks and answer texts
server     the streamable-HTTP transport; run it with `python3 -m claude_bottle.supervise`
"""
