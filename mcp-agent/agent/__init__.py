"""The person's agent: an MCP server over their workspace, backtests, paper broker and events."""
