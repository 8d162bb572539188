"""What the harness needs of a model, whichever answers (Anthropic or the offline model).

Messages use the shape of Anthropic's Messages API (``{"role", "content"}`` with
``text``, ``tool_use`` and ``tool_result`` blocks), typed by the SDK's own block params,
so the Anthropic path passes them through unchanged and the offline model reads the same
thing. Only the blocks the harness makes are allowed: a person's text, the model's text
and tool calls, and the tool results sent back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias, TypedDict

from dexorder.contracts.agent_tools import ToolTraits
from dexorder.contracts.chat import JsonObject

if TYPE_CHECKING:
    # types only: the functions image (tool proxy, rule delivery) imports this module
    # through the agent link and carries no Anthropic SDK
    from anthropic.types import (
        MessageParam,
        TextBlockParam,
        ToolParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
    )

#: What the model says in one answer: text and tool calls.
AssistantBlock: TypeAlias = "TextBlockParam | ToolUseBlockParam"


class UserMessage(TypedDict):
    """The person's text, or the results of the tools the model called."""

    role: Literal["user"]
    content: str | list[ToolResultBlockParam]


class AssistantMessage(TypedDict):
    """The model's answer, sent back with the tool results."""

    role: Literal["assistant"]
    content: list[AssistantBlock]


Message = UserMessage | AssistantMessage
OnText = Callable[[str], Awaitable[None]]


def to_api(message: Message) -> MessageParam:
    """``message`` as the SDK's parameter type (a wider union than the harness makes)."""
    if message["role"] == "user":
        return {"role": "user", "content": message["content"]}
    return {"role": "assistant", "content": message["content"]}


class ModelError(RuntimeError):
    """The model could not answer; the message is for the person. ``busy``: turned away
    for a moment (rate limited, overloaded, a server error) after the SDK's retries, so
    another model may answer; ``retries``: how many the SDK made."""

    def __init__(self, message: str, *, busy: bool = False, retries: int = 0) -> None:
        super().__init__(message)
        self.busy, self.retries = busy, retries


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: name, what it does, JSON schema of its arguments."""

    name: str
    description: str
    input_schema: JsonObject
    #: what the harness must know of it (an agent tool's ``_meta``; none for the platform's)
    traits: ToolTraits = field(default_factory=ToolTraits)

    def to_api(self) -> ToolParam:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: JsonObject


@dataclass
class ModelReply:
    """One answer of the model: text, the tools it wants called, what it cost."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    #: what the call cost (US$, by ``gateway.model_prices``; the offline model's is 0)
    cost_usd: float = 0.0
    #: why this model answered (tier, complexity, strategy; a fallback and after what)
    why: str = ""
    #: calls the API turned away before this answer (all models tried)
    retries: int = 0
    #: the model this one stood in for, when it is a fallback
    fallback_from: str = ""
    #: the person's monthly budget ran out with this call: what to tell them
    over_budget: str | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_message(self) -> Message:
        """The assistant message to send back with the tool results."""
        blocks: list[AssistantBlock] = []
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
            for c in self.tool_calls
        ]
        return AssistantMessage(role="assistant", content=blocks)


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
