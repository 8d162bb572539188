"""The agent's MCP tools, by domain; :class:`~agent.tools.toolbox.ToolBox` is how each is
written (activity, error translation and the result contract, once)."""
