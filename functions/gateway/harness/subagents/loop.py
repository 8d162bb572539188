"""A scoped tool loop: the model with its own prompt, its own tools, its own budget.

What skills, subagents and workflows share. It runs as a LangGraph subgraph of its own
(``think`` ⇄ ``act``) with its own state — the turn's messages never leak in, and its
messages never go back to the turn: the caller gets the loop's answer only. Its
:class:`Scope` says which tools it may call (a call outside the allowlist is refused
with an error the model reads, never run) and how many rounds and tokens it may spend.

An *answer tool* (optional) gives the loop a typed output: the model finishes by calling
it with arguments of the output's JSON schema; arguments that do not fit are sent back
as an error for the model to fix, like any failed tool.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from anthropic.types import ToolResultBlockParam
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ValidationError

from dexorder.contracts.chat import FrameSink, JsonObject, ToolFrame
from gateway.harness.agent_link import ToolOutcome
from gateway.harness.model import ChatModel, Message, ModelReply, ToolCall, ToolSpec, UserMessage

RunTool = Callable[[ToolCall], Awaitable[ToolOutcome]]

#: The tool a scoped loop with a typed output finishes with.
ANSWER = "answer"


@dataclass(frozen=True)
class Scope:
    """What a skill or subagent may do: its tools, its rounds, its tokens."""

    name: str
    tools: frozenset[str]
    max_rounds: int = 6
    max_tokens: int = 60_000

    def refusal(self, tool: str) -> str | None:
        """Why ``tool`` may not be called here (None: it may)."""
        if tool in self.tools or tool == ANSWER:
            return None
        allowed = ", ".join(sorted(self.tools)) or "none"
        return f"{tool} is not available to {self.name} (its tools: {allowed})"


@dataclass
class Delegation:
    """What a skill, subagent or workflow runs with, handed down by the turn."""

    model: ChatModel
    #: every tool of the turn (the scope picks from these)
    tools: list[ToolSpec]
    #: runs a tool as the turn does (frames to the person, attachments, the agent)
    run_tool: RunTool
    send: FrameSink
    #: most write → validate rounds of a workflow
    workflow_rounds: int = 3
    #: tokens and money its model calls spent (added to the turn's)
    spent_tokens: int = 0
    spent_cost_usd: float = 0.0

    def count(self, reply: ModelReply) -> str | None:
        """Count ``reply``'s tokens and cost; why the person's budget is used up, if it is
        (the turn's model is metered: ``ModelReply.over_budget``)."""
        self.spent_tokens += reply.tokens
        self.spent_cost_usd += reply.cost_usd
        return reply.over_budget

    async def progress(self, name: str, text: str) -> None:
        """A line of progress the person sees under the running tool ``name``."""
        await self.send(ToolFrame(name=name, state="progress", text=text))

    def specs(self, scope: Scope) -> list[ToolSpec]:
        return [t for t in self.tools if t.name in scope.tools]


@dataclass(frozen=True)
class Outcome:
    """What a scoped loop ended with."""

    text: str
    answer: BaseModel | None
    rounds: int
    tokens: int
    #: why it stopped early (a budget ran out), None when the model finished
    stopped: str | None = None


class LoopState(TypedDict, total=False):
    messages: list[Message]
    last: ModelReply | None
    rounds: int
    tokens: int
    answer: BaseModel | None
    stopped: str | None


@dataclass
class _LoopDeps:
    scope: Scope
    system: str
    delegation: Delegation
    tools: list[ToolSpec]
    output: type[BaseModel] | None


def answer_spec(output: type[BaseModel], what: str) -> ToolSpec:
    """The tool the model finishes with: its arguments are ``output``."""
    schema: JsonObject = output.model_json_schema()
    return ToolSpec(ANSWER, f"Finish: give {what} in this shape.", schema)


async def _think(state: LoopState, runtime: Runtime[_LoopDeps]) -> LoopState:
    d = runtime.context
    reply = await d.delegation.model.reply(d.system, state["messages"], d.tools)
    over = d.delegation.count(reply)
    update: LoopState = {
        "messages": [*state["messages"], reply.as_message()],
        "last": reply,
        "rounds": state.get("rounds", 0) + 1,
        "tokens": state.get("tokens", 0) + reply.tokens,
    }
    if over:  # the person's budget: no more rounds, whatever this one asked for
        update["stopped"] = f"{d.scope.name} stopped: {over}"
    return update


def _after_think(state: LoopState) -> str:
    last = state.get("last")
    if last is None or not last.tool_calls or state.get("stopped"):
        return END
    return "act"


async def _act(state: LoopState, runtime: Runtime[_LoopDeps]) -> LoopState:
    d = runtime.context
    last = state["last"]
    assert last is not None
    results: list[ToolResultBlockParam] = []
    answer: BaseModel | None = None
    for call in last.tool_calls:
        refused = d.scope.refusal(call.name)
        if refused is not None:
            await d.delegation.send(ToolFrame(name=call.name, state="error", error=refused))
            outcome = ToolOutcome(refused, is_error=True)
        elif call.name == ANSWER and d.output is not None:
            try:
                answer = d.output.model_validate(call.arguments)
                outcome = ToolOutcome("accepted")
            except ValidationError as exc:
                wrong = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                outcome = ToolOutcome(f"answer does not fit its shape: {wrong}", is_error=True)
        else:
            outcome = await d.delegation.run_tool(call)
        block = ToolResultBlockParam(
            type="tool_result", tool_use_id=call.id, content=outcome.as_text()[:50_000]
        )
        if outcome.is_error:
            block["is_error"] = True
        results.append(block)
    update: LoopState = {
        "messages": [*state["messages"], UserMessage(role="user", content=results)]
    }
    if answer is not None:
        update["answer"] = answer
    elif state.get("rounds", 0) >= d.scope.max_rounds:
        update["stopped"] = f"{d.scope.name} stopped after {d.scope.max_rounds} rounds"
    elif state.get("tokens", 0) >= d.scope.max_tokens:
        update["stopped"] = f"{d.scope.name} stopped: its budget of {d.scope.max_tokens} tokens"
    return update


def _after_act(state: LoopState) -> str:
    return END if state.get("answer") is not None or state.get("stopped") else "think"


def _build() -> Any:
    g = StateGraph(LoopState, context_schema=_LoopDeps)
    g.add_node("think", _think)
    g.add_node("act", _act)
    g.add_edge(START, "think")
    g.add_conditional_edges("think", _after_think, ["act", END])
    g.add_conditional_edges("act", _after_act, ["think", END])
    return g.compile()


_GRAPH = _build()


async def run_scoped(
    delegation: Delegation,
    scope: Scope,
    system: str,
    request: str,
    output: type[BaseModel] | None = None,
    extra_tools: Sequence[ToolSpec] = (),
) -> Outcome:
    """Run the model in ``scope`` on ``request`` until it answers or a budget runs out."""
    tools = [*delegation.specs(scope), *extra_tools]
    if output is not None:
        tools.append(answer_spec(output, scope.name))
    deps = _LoopDeps(scope, system, delegation, tools, output)
    state: LoopState = await _GRAPH.ainvoke(
        {"messages": [UserMessage(role="user", content=request)], "rounds": 0, "tokens": 0},
        context=deps,
    )
    last = state.get("last")
    return Outcome(
        text=last.text if last is not None else "",
        answer=state.get("answer"),
        rounds=state.get("rounds", 0),
        tokens=state.get("tokens", 0),
        stopped=state.get("stopped"),
    )


async def call_in(d: Delegation, scope: Scope, tool: str, args: JsonObject) -> ToolOutcome:
    """Run ``tool`` for a step of ``scope`` — refused, as the model's calls are, outside its
    allowlist."""
    refused = scope.refusal(tool)
    if refused is not None:
        return ToolOutcome(refused, is_error=True)
    return await d.run_tool(ToolCall(f"call_{uuid.uuid4().hex[:12]}", tool, args))
