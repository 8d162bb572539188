"""What skills, subagents and workflows hand back: a typed result the model reads as JSON
and the offline model (or a channel) says in words."""

from __future__ import annotations

from dexorder.contracts.agent_tools import ToolResult


class Report(ToolResult):
    """The base of every skill's, subagent's and workflow's result."""

    def text(self) -> str:
        """The result in words, for the person."""
        raise NotImplementedError
