"""The person's MCP server: context resources and tools, on the official ``mcp`` SDK.

Every tool has a JSON schema (from its typed, described parameters), an output schema
(its result contract in :mod:`dexorder.contracts.agent_tools`), a one-line description an
LLM can use, and answers bad input with an error saying what was wrong (an MCP tool error,
never a crash). The tools live in :mod:`agent.tools`, one module per domain.
"""

from __future__ import annotations

import json

from mcp.server.mcpserver import MCPServer

from agent.person import PersonAgent
from agent.tools import alerts, backtests, indicators, memory, strategies, trading, workspace
from agent.tools.toolbox import ToolBox

INSTRUCTIONS = (
    "The personal trading agent of one person: their strategies, indicators, backtests, "
    "watchlist, alerts and paper trades. Read the context:// resources first."
)


def build_server(person: PersonAgent) -> MCPServer:
    """The MCP server of ``person``'s agent."""
    mcp = MCPServer(
        name="dexorder-agent", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING"
    )
    box = ToolBox(mcp, person)
    _context_resources(box, person)
    for domain in (strategies, workspace, memory, alerts, trading, backtests, indicators):
        domain.register(box, person)
    return mcp


def _context_resources(box: ToolBox, person: PersonAgent) -> None:
    """The four resources every chat turn starts from."""
    docs, ws = person.documents, person.workspace

    @box.resource(
        "context://user-profile",
        mime_type="application/json",
        description="Trading preferences, style and risk tolerance",
    )
    def user_profile() -> str:
        return json.dumps({"user": person.user, **docs.profile().model_dump()})

    @box.resource(
        "context://conversation-summary",
        mime_type="text/markdown",
        description="The conversation so far: older messages folded into a bounded "
        "summary, the recent ones as they were",
    )
    def conversation_summary() -> str:
        return person.memory.summary()

    @box.resource(
        "context://workspace-state",
        mime_type="application/json",
        description="Current chart, watchlist, positions and alerts",
    )
    def workspace_state() -> str:
        return json.dumps(
            {
                **docs.state().model_dump(),
                "watchlist": docs.watchlist(),
                "alerts": [a.model_dump() for a in person.alerts.active()],
                "positions": person.broker.book.summary()["positions"],
                "strategies": ws.names("strategies"),
                "indicators": ws.names("indicators"),
            }
        )

    @box.resource(
        "context://system-prompt",
        mime_type="text/markdown",
        description="The person's own instructions to their agent",
    )
    def system_prompt() -> str:
        return docs.instructions()
