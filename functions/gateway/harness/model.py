"""What the harness needs of a model, whichever answers (Anthropic or the offline model).

Messages use the shape of Anthropic's Messages API (``{"role", "content"}`` with
``text``, ``tool_use`` and ``tool_result`` blocks), so the Anthropic path passes
them through unchanged and the offline model reads the same thing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dexorder.contracts.agent_tools import ToolTraits

Message = dict[str, Any]
OnText = Callable[[str], Awaitable[None]]


class ModelError(RuntimeError):
    """The model could not answer; the message is for the person."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: name, what it does, JSON schema of its arguments."""

    name: str
    description: str
    input_schema: dict[str, Any]
    #: what the harness must know of it (an agent tool's ``_meta``; none for the platform's)
    traits: ToolTraits = field(default_factory=ToolTraits)

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ModelReply:
    """One answer of the model: text, the tools it wants called, what it cost."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_message(self) -> Message:
        """The assistant message to send back with the tool results."""
        blocks: list[dict[str, Any]] = []
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
            for c in self.tool_calls
        ]
        return {"role": "assistant", "content": blocks}


class ChatModel(Protocol):
    """A model the harness can run a tool loop with."""

    name: str
    #: True for the offline model: every reply says so.
    offline: bool

    async def reply(
        self,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        on_text: OnText | None = None,
    ) -> ModelReply: ...
