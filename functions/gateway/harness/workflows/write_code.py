"""Workflow: write a strategy or indicator until the sandbox accepts it.

    START ─ draft ─ check ─┬─ (validated) ────────────── END
              ↑            ├─ (failed, rounds left) ─┐
              └────────────┼─────────────────────────┘
                           └─ (failed, N rounds) ── give_up ─ END

``draft`` asks the model for the whole file (it may only call the write tool); ``check``
sends it to the agent, which validates it in the sandbox before committing. A failure
goes back to the model as the tool's error with the offending line quoted, so it fixes
that line; the loop stops on success, or after ``Delegation.workflow_rounds`` tries with
a message saying so. Each step is a progress line the person sees under the workflow.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from anthropic.types import ToolResultBlockParam
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from dexorder.contracts.agent_tools import SavedFile
from gateway.harness.model import Message, ToolCall, ToolSpec, UserMessage
from gateway.harness.reports import Report
from gateway.harness.subagents.loop import Delegation
from gateway.harness.workflows import templates

Kind = Literal["strategy", "indicator"]
_LINE = re.compile(r"\bline (\d+)\b")


class Ask(BaseModel):
    name: str = Field(
        description="file name without .py, e.g. rsi_dip", pattern=r"^[a-z_][a-z0-9_]*$"
    )
    request: str = Field(description="what it should do, in the person's words")


class WrittenFile(Report):
    kind: str
    name: str
    saved: bool
    rounds: int
    commit: str | None = None
    #: candles it was validated on
    candles: int | None = None
    #: each failed round's error, in order
    errors: list[str] = []
    #: why it stopped without saving
    stopped: str | None = None

    def text(self) -> str:
        if self.saved:
            tries = "first try" if self.rounds == 1 else f"{self.rounds} rounds"
            return (
                f"Saved the {self.kind} {self.name} ({tries}); it validated on "
                f"{self.candles} sample candles."
            )
        return self.stopped or f"The {self.kind} {self.name} was not saved."


class WriteState(TypedDict, total=False):
    messages: list[Message]
    rounds: int
    code: str
    call_id: str
    saved: SavedFile | None
    errors: list[str]
    stopped: str | None


@dataclass
class _Deps:
    d: Delegation
    kind: Kind
    ask: Ask
    system: str
    #: the tool under which the person sees the progress
    shown_as: str

    @property
    def tool(self) -> str:
        return f"write_{self.kind}"


def quote_line(error: str, code: str) -> str:
    """``error`` with the source line it names, so the model sees what to fix."""
    m = _LINE.search(error)
    lines = code.splitlines()
    if m and 0 < int(m.group(1)) <= len(lines):
        n = int(m.group(1))
        return f"{error}\nline {n} is: {lines[n - 1].strip()}"
    return error


async def _draft(state: WriteState, runtime: Runtime[_Deps]) -> WriteState:
    w = runtime.context
    rounds = state.get("rounds", 0) + 1
    await w.d.progress(w.shown_as, f"round {rounds}: writing {w.kind} {w.ask.name}")
    if w.d.model.offline:
        code = templates.draft(w.kind, w.ask.request)
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        return {"rounds": rounds, "code": code, "call_id": call_id, "messages": state["messages"]}
    spec = next((t for t in w.d.tools if t.name == w.tool), None)
    tools: list[ToolSpec] = [spec] if spec is not None else []
    reply = await w.d.model.reply(w.system, state["messages"], tools)
    over = w.d.count(reply)
    messages = [*state["messages"], reply.as_message()]
    if over:
        return {"rounds": rounds, "messages": messages, "stopped": f"Stopped: {over}."}
    call = next((c for c in reply.tool_calls if c.name == w.tool), None)
    if call is None:
        said = reply.text.strip()[:300] or "nothing"
        return {
            "rounds": rounds,
            "messages": messages,
            "stopped": f"The model wrote no {w.kind} (it said: {said}).",
        }
    return {
        "rounds": rounds,
        "messages": messages,
        "code": str(call.arguments.get("code", "")),
        "call_id": call.id,
    }


def _after_draft(state: WriteState) -> str:
    return END if state.get("stopped") else "check"


async def _check(state: WriteState, runtime: Runtime[_Deps]) -> WriteState:
    w = runtime.context
    rounds, code = state["rounds"], state.get("code", "")
    # the file is saved under the name asked for, whatever the model called it
    call = ToolCall(state["call_id"], w.tool, {"name": w.ask.name, "code": code})
    outcome = await w.d.run_tool(call)
    if not outcome.is_error and isinstance(outcome.value, SavedFile):
        v = outcome.value.validation
        await w.d.progress(
            w.shown_as, f"round {rounds}: validated on {v.candles} candles, saved {w.ask.name}"
        )
        return {"saved": outcome.value}
    error = quote_line(outcome.as_text(), code)
    await w.d.progress(w.shown_as, f"round {rounds}: validation failed: {error.splitlines()[0]}")
    result = ToolResultBlockParam(
        type="tool_result",
        tool_use_id=state["call_id"],
        content=f"{error}\nFix the file and call {w.tool} again with the whole file.",
        is_error=True,
    )
    update: WriteState = {
        "errors": [*state.get("errors", []), error],
        "messages": [*state["messages"], UserMessage(role="user", content=[result])],
    }
    if rounds >= w.d.workflow_rounds:
        update["stopped"] = (
            f"Stopped after {rounds} rounds: the {w.kind} {w.ask.name} still does not "
            f"validate, so it was not saved. Last error: {error.splitlines()[0]}"
        )
    return update


def _after_check(state: WriteState) -> str:
    return END if state.get("saved") is not None or state.get("stopped") else "draft"


def _build() -> Any:
    g = StateGraph(WriteState, context_schema=_Deps)
    g.add_node("draft", _draft)
    g.add_node("check", _check)
    g.add_edge(START, "draft")
    g.add_conditional_edges("draft", _after_draft, ["check", END])
    g.add_conditional_edges("check", _after_check, ["draft", END])
    return g.compile()


_GRAPH = _build()

SYSTEM = (
    "You write {kind} files for DexOrder's Python SDK and nothing else: call {tool} with the "
    "whole file. The platform validates it in a sandbox on sample candles; if it fails you "
    "get the error with its line, and fix it.\n\n{sdk}"
)


async def write(
    d: Delegation, kind: Kind, ask: Ask, shown_as: str, context: str = ""
) -> WrittenFile:
    """Run the write → validate → fix loop for one file."""
    system = SYSTEM.format(kind=kind, tool=f"write_{kind}", sdk=templates.sdk_doc())
    request = f"Write the {kind} `{ask.name}`: {ask.request}"
    if context:
        request += f"\n\n{context}"
    state: WriteState = await _GRAPH.ainvoke(
        {"messages": [UserMessage(role="user", content=request)], "rounds": 0, "errors": []},
        context=_Deps(d, kind, ask, system, shown_as),
        # each round is two steps; the rounds are bounded by the workflow itself
        config={"recursion_limit": 2 * d.workflow_rounds + 5},
    )
    saved = state.get("saved")
    return WrittenFile(
        kind=kind,
        name=ask.name,
        saved=saved is not None,
        rounds=state.get("rounds", 0),
        commit=saved.commit if saved else None,
        candles=saved.validation.candles if saved else None,
        errors=state.get("errors", []),
        stopped=None if saved else state.get("stopped"),
    )
