"""The supervise sidecar: an MCP server through which the agent proposes more access.

`queue` is the on-disk proposal / response queue it shares with the dashboard, `mcp`
the streamable-HTTP MCP server; run it with `python3 -m claude_bottle.supervise`.
"""
