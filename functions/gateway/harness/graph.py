"""One chat turn as a LangGraph graph (DESIGN.md's chat turn).

    START ─┬─ fetch_context ─┐
           └─ retrieve ──────┴─ build_prompt ─ call_model ⇄ run_tools
                                                      │            │
                   place_confirmed ─────────────────── save ───────┴─ END
                          ↑                            │ (an order asked for)
                          └── yes ── await_confirmation ┘  ↺ interrupt() until the next message

The gateway keeps no conversation state: each turn starts from the agent's context
resources (cached a few minutes) and what RAG finds; both messages are saved to the agent.

The one exception: an order the model asks for. ``run_tools`` holds it in the state and,
once the turn's messages are saved, ``await_confirmation`` waits in ``interrupt()``: the
turn ends there, its checkpoint (``checkpoints.py``, shared by the gateway's replicas)
keeping the order. The person's next message resumes it (``Command(resume=text)``): a
"yes" places the order (once: the resumed step is checkpointed before the order goes
out, so a replica dying while placing it never leaves it to be placed again), a refusal
answers "Cancelled", and anything else cancels it and is answered as a new turn.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict

import structlog
from anthropic.types import ToolResultBlockParam
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt
from pydantic import ValidationError

from dexorder import telemetry
from dexorder.contracts import agent_tools as contract
from dexorder.contracts.chat import (
    Attachment,
    CandlesFrame,
    ConfirmFrame,
    FrameSink,
    ImageFrame,
    JsonObject,
    TokenFrame,
    ToolFrame,
)
from dexorder.contracts.platform_tools import Remembered
from dexorder.embeddings import EmbeddingUnavailable
from gateway.harness import delegates
from gateway.harness.agent_link import AgentLink, ContextCache, ToolOutcome
from gateway.harness.confirmations import describe_order, is_confirmation, is_refusal
from gateway.harness.knowledge import KnowledgeBase
from gateway.harness.model import (
    ChatModel,
    Message,
    ModelReply,
    ToolCall,
    ToolSpec,
    UserMessage,
)
from gateway.harness.offline import describe, labelled
from gateway.harness.platform_tools import REMEMBER, PlatformTools
from gateway.harness.skills.registry import choose as choose_skill
from gateway.harness.subagents.loop import Delegation

log = structlog.get_logger(part="gateway")

Send = FrameSink


@dataclass
class TurnDeps:
    """What one turn works with: the graph's context (``context_schema``), not its state."""

    user: str
    tier: str
    channel: str
    link: AgentLink
    model: ChatModel
    tools: list[ToolSpec]
    #: what each tool declares, the agent's (hidden ones too: ``tools`` lacks those) and
    #: the platform's own
    traits: dict[str, contract.ToolTraits]
    platform: PlatformTools
    knowledge: KnowledgeBase | None
    context: ContextCache
    send: Send
    max_rounds: int = 8
    #: most write → validate rounds of a workflow (``gateway.workflow_rounds``)
    workflow_rounds: int = 3
    #: tokens and money spent by skills, subagents and workflows (the turn's too)
    delegated_tokens: int = 0
    delegated_cost_usd: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)


class TurnState(TypedDict, total=False):
    text: str
    context: dict[str, str]
    snippets: list[str]
    memories: list[str]
    system: str
    messages: list[Message]
    last: ModelReply | None
    rounds: int
    tokens: int
    model: str
    reply: str
    #: what the turn's model calls cost (US$) and why the last one's model answered
    cost_usd: float
    why: str
    #: the budget ran out between tool rounds: the turn stops (what to tell the person)
    over_budget: str | None
    #: the order waiting for the person's "yes" (``execute_trade``'s arguments)
    pending: JsonObject | None
    #: the order the person's message cancelled by being something else
    cancelled: JsonObject | None


Turn = Runtime[TurnDeps]


class _timed:
    def __init__(self, deps: TurnDeps, name: str) -> None:
        self.deps, self.name = deps, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        spent = (time.perf_counter() - self.t0) * 1000
        self.deps.timings[self.name] = self.deps.timings.get(self.name, 0.0) + spent


# --- nodes --------------------------------------------------------------------------


async def fetch_context(state: TurnState, runtime: Turn) -> TurnState:
    deps = runtime.context
    with _timed(deps, "context_ms"), telemetry.span("context"):
        return {"context": await deps.context.get(deps.user, deps.link)}


async def retrieve(state: TurnState, runtime: Turn) -> TurnState:
    """Platform docs and the person's notes (Qdrant), and related earlier messages."""
    deps = runtime.context

    async def knowledge() -> list[str]:
        if deps.knowledge is None:
            return []
        try:
            found = await deps.knowledge.search(deps.user, state["text"])
        except EmbeddingUnavailable as exc:
            log.info("knowledge search skipped", reason=str(exc))
            return []
        return [f"({s.source}) {s.text}" for s in found if s.score > 0.2]

    async def earlier_messages() -> list[str]:
        try:
            outcome = await deps.link.call(
                "search_conversation", {"query": state["text"][:8000], "limit": 3}
            )
        except Exception as exc:  # earlier messages help; the turn goes on without them
            outcome = ToolOutcome(str(exc), is_error=True)
        if not isinstance(outcome.value, contract.ConversationMatches):
            return []
        return [f"{m.role}: {m.text[:500]}" for m in outcome.value.matches if m.score > 0.3]

    with _timed(deps, "rag_ms"), telemetry.span("rag"):
        # both embed the same text: the embedding service computes it once
        snippets, memories = await asyncio.gather(knowledge(), earlier_messages())
    return {"snippets": snippets, "memories": memories}


def build_prompt(state: TurnState, runtime: Turn) -> TurnState:
    deps = runtime.context
    with _timed(deps, "prompt_ms"):
        ctx = state.get("context", {})
        parts = [
            "You are DexOrder, this person's trading agent. Use the tools to look at markets, "
            "their workspace, backtests, alerts and their paper account. Orders are placed only "
            "after the person confirms them in the chat; ask for confirmation plainly.",
            f"Channel: {deps.channel}. "
            f"Time (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}.",
        ]
        for title, key in (
            ("The person's own instructions", "instructions"),
            ("Profile", "profile"),
            ("Workspace", "workspace"),
            ("The conversation so far", "summary"),
        ):
            if ctx.get(key, "").strip():
                parts.append(f"## {title}\n{ctx[key].strip()}")
        if state.get("snippets"):
            parts.append(
                "## From the platform docs and the person's notes\n"
                + "\n\n".join(state["snippets"])
            )
        if state.get("memories"):
            parts.append("## Related earlier messages\n" + "\n".join(state["memories"]))
        skill = choose_skill(state["text"])
        if skill is not None and any(t.name == skill.tool_name for t in deps.tools):
            # the router's pick: a skill made for this kind of request
            parts.append(f"## Suggested\nThe tool {skill.tool_name} is made for this request.")
        return {
            "system": "\n\n".join(parts),
            "messages": [UserMessage(role="user", content=state["text"])],
            "rounds": 0,
            "tokens": 0,
            "cost_usd": 0.0,
            "over_budget": None,
        }


async def call_model(state: TurnState, runtime: Turn) -> TurnState:
    deps = runtime.context

    async def on_text(text: str) -> None:
        await deps.send(TokenFrame(text=text))

    t0 = time.perf_counter()
    with telemetry.span(
        "model", {"gen_ai.operation.name": "chat", "gen_ai.request.model": deps.model.name}
    ) as span:
        reply = await deps.model.reply(state["system"], state["messages"], deps.tools, on_text)
        span.set_attributes(
            {
                "gen_ai.response.model": reply.model or deps.model.name,
                "gen_ai.usage.input_tokens": reply.input_tokens,
                "gen_ai.usage.output_tokens": reply.output_tokens,
                # why this model (tier, complexity, strategy, a fallback after retries)
                "dexorder.model.why": reply.why or "offline",
                "dexorder.model.retries": reply.retries,
                "dexorder.model.fallback_from": reply.fallback_from,
                "dexorder.model.cost_usd": reply.cost_usd,
            }
        )
    deps.timings["model_ms"] = deps.timings.get("model_ms", 0.0) + (time.perf_counter() - t0) * 1000
    deps.timings["model_retries"] = deps.timings.get("model_retries", 0) + reply.retries
    messages = [*state["messages"], reply.as_message()]
    over = reply.over_budget  # counted as it answered (``router.MeteredModel``)
    text = reply.text
    if over and reply.tool_calls:  # stopped between tool rounds: say so, and what was done
        note = _stopped(over, messages)
        await deps.send(TokenFrame(text=note))
        text = f"{text}{note}"
    return {
        "messages": messages,
        "last": reply,
        "rounds": state.get("rounds", 0) + 1,
        "tokens": state.get("tokens", 0) + reply.tokens,
        "cost_usd": state.get("cost_usd", 0.0) + reply.cost_usd,
        "why": reply.why,
        "model": reply.model or deps.model.name,
        "reply": text,
        "over_budget": over,
    }


def _stopped(over: str, messages: list[Message]) -> str:
    """The turn's polite end when the budget runs out with tools still to run."""
    ran = [
        b["name"]
        for m in messages[:-1]  # the last answer's calls will not run
        if m["role"] == "assistant"
        for b in m["content"]
        if b["type"] == "tool_use"
    ]
    done = f"Done so far: {', '.join(ran)}." if ran else "No tools had run yet."
    return (
        f"\n\nI have to stop here ({over}). {done} Ask again next month, or ask for a higher tier."
    )


def after_model(state: TurnState, runtime: Turn) -> str:
    last = state.get("last")
    if state.get("over_budget"):
        return "save"
    if last is not None and last.tool_calls and state.get("rounds", 0) < runtime.context.max_rounds:
        return "run_tools"
    return "save"


async def run_tools(state: TurnState, runtime: Turn) -> TurnState:
    deps = runtime.context
    last = state["last"]
    assert last is not None
    results: list[ToolResultBlockParam] = []
    for call in last.tool_calls:
        if _traits(deps, call.name).needs_confirmation:
            try:
                order = contract.TradeOrder.model_validate(call.arguments)
            except ValidationError as exc:  # the model is told, as the agent would tell it
                wrong = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                outcome = ToolOutcome(f"{call.name}: invalid arguments: {wrong}", is_error=True)
            else:
                said = describe_order(order)
                await deps.send(ConfirmFrame(order=_order_json(order), text=said))
                text = (
                    f"{last.text}\n\n" if last.text else ""
                ) + f"Please confirm: {said}. Reply “yes” to place it; anything else cancels it."
                # what waits in the checkpoint: the order and the turn's answer, no more
                # (the next message starts from the agent's context again)
                return {
                    "reply": labelled(deps.model, text),
                    "last": None,
                    "pending": _order_json(order),
                    "messages": [],
                    "context": {},
                    "snippets": [],
                    "memories": [],
                    "system": "",
                }
        else:
            outcome = await _run_tool(deps, call)
        block = ToolResultBlockParam(
            type="tool_result", tool_use_id=call.id, content=outcome.as_text()[:50_000]
        )
        if outcome.is_error:
            block["is_error"] = True
        results.append(block)
    spent, deps.delegated_tokens = deps.delegated_tokens, 0
    paid, deps.delegated_cost_usd = deps.delegated_cost_usd, 0.0
    return {
        "messages": [*state["messages"], UserMessage(role="user", content=results)],
        "tokens": state.get("tokens", 0) + spent,
        "cost_usd": state.get("cost_usd", 0.0) + paid,
    }


def after_tools(state: TurnState) -> str:
    return "save" if state.get("last") is None else "call_model"


def after_save(state: TurnState) -> str:
    return "await_confirmation" if state.get("pending") else END


async def await_confirmation(state: TurnState, runtime: Turn) -> Command[str]:
    """Wait for the person's next message (the turn ends here), then act on it."""
    order = state.get("pending")
    assert order is not None
    # run again from the top when resumed: nothing before this line may have effects
    answer = str(interrupt(order))
    if is_confirmation(answer):
        # what this turn costs starts again (the asking turn's was accounted for then)
        return Command(
            goto="place_confirmed",
            update={"text": answer, "cancelled": None, "tokens": 0, "cost_usd": 0.0, "why": ""},
        )
    if is_refusal(answer):
        deps = runtime.context
        said = describe_order(contract.TradeOrder.model_validate(order))
        reply = labelled(deps.model, f"Cancelled: {said} was not placed.")
        await deps.send(TokenFrame(text=reply))
        return Command(
            goto=END,
            update={
                "text": answer,
                "reply": reply,
                "pending": None,
                "cancelled": None,
                "model": deps.model.name,
                "tokens": 0,
                "cost_usd": 0.0,
                "why": "",
            },
        )
    # anything else cancels it and is a turn of its own
    return Command(
        goto=["fetch_context", "retrieve"],
        update={"text": answer, "pending": None, "cancelled": order},
    )


async def place_confirmed(state: TurnState, runtime: Turn) -> TurnState:
    deps = runtime.context
    order = state.get("pending")
    assert order is not None
    outcome = await _run_tool(deps, ToolCall("confirmed", contract.EXECUTE_TRADE.name, order))
    text = (
        describe(contract.EXECUTE_TRADE.name, outcome.value)
        if not outcome.is_error
        else (f"The order was not placed: {outcome.as_text()}")
    )
    text = labelled(deps.model, text)
    await deps.send(TokenFrame(text=text))
    return {"reply": text, "model": deps.model.name, "tokens": 0, "pending": None}


async def save(state: TurnState, runtime: Turn) -> TurnState:
    deps = runtime.context
    with _timed(deps, "save_ms"), telemetry.span("save"):
        for role, text in (("user", state["text"]), ("assistant", state.get("reply", ""))):
            if not text.strip():
                continue
            outcome = await deps.link.call(
                "save_message", {"role": role, "text": text[:100_000], "channel": deps.channel}
            )
            if outcome.is_error:
                log.warning("saving a message failed", user=deps.user, error=outcome.as_text())
        deps.context.conversation_changed(deps.user)  # the summary's recent messages
    return {}


# --- tools ---------------------------------------------------------------------------


async def _run_tool(deps: TurnDeps, call: ToolCall) -> ToolOutcome:
    await deps.send(ToolFrame(name=call.name, state="start", arguments=call.arguments))

    async def progress(text: str) -> None:
        await deps.send(ToolFrame(name=call.name, state="progress", text=text))

    async def agent_progress(text: str, fraction: float | None) -> None:
        # the agent tool's own MCP progress (a backtest's steps), with its percent
        await progress(f"{text} ({fraction:.0%})" if fraction is not None else text)

    with (
        _timed(deps, "tools_ms"),
        telemetry.span(f"tool {call.name}", {"gen_ai.tool.name": call.name}) as span,
    ):
        if call.name == REMEMBER.name:
            outcome = await _remember(deps, call.arguments)
        elif call.name in PlatformTools.names:
            outcome = await deps.platform.call(call.name, call.arguments, progress)
        elif call.name in delegates.names():
            outcome = await _delegate(deps, call)
        elif _traits(deps, call.name).hidden:
            outcome = ToolOutcome(f"{call.name} is done by the platform itself", is_error=True)
        else:
            try:
                outcome = await deps.link.call(call.name, call.arguments, agent_progress)
            except Exception as exc:  # the agent went away mid-turn: tell the model
                outcome = ToolOutcome(f"your agent could not run {call.name}: {exc}", True)
        if outcome.is_error:
            telemetry.failed(span, "tool_error", outcome.as_text())
        if _traits(deps, call.name).changes_context and not outcome.is_error:
            deps.context.forget(deps.user)
        await _send_attachment(deps, call, outcome)
    await deps.send(
        ToolFrame(name=call.name, state="error", error=outcome.as_text()[:500])
        if outcome.is_error
        else ToolFrame(name=call.name, state="done")
    )
    return outcome


async def _delegate(deps: TurnDeps, call: ToolCall) -> ToolOutcome:
    """A skill, subagent or workflow: its tools run as the turn's do (the person sees
    each), held to its own allowlist; its tokens are the turn's."""

    async def run_tool(inner: ToolCall) -> ToolOutcome:
        if _traits(deps, inner.name).needs_confirmation:  # orders wait for a "yes" in the chat
            return ToolOutcome(f"{inner.name} is only for the conversation itself", True)
        return await _run_tool(deps, inner)

    delegation = Delegation(deps.model, deps.tools, run_tool, deps.send, deps.workflow_rounds)
    try:
        return await delegates.run(delegation, call)
    finally:
        deps.delegated_tokens += delegation.spent_tokens
        deps.delegated_cost_usd += delegation.spent_cost_usd


def _order_json(order: contract.TradeOrder) -> JsonObject:
    """A held order as ``execute_trade``'s arguments (unset prices left out)."""
    return order.model_dump(mode="json", exclude_none=True)


def _traits(deps: TurnDeps, tool: str) -> contract.ToolTraits:
    return deps.traits.get(tool) or contract.ToolTraits()


async def _remember(deps: TurnDeps, args: JsonObject) -> ToolOutcome:
    fact = str(args.get("fact", "")).strip()
    if not fact or len(fact) > 2000:
        return ToolOutcome("a fact of 1 to 2,000 characters is needed", is_error=True)
    if deps.knowledge is None:
        return ToolOutcome("the knowledge base is off on this platform", is_error=True)
    try:
        await deps.knowledge.add(deps.user, "note", fact)
    except EmbeddingUnavailable as exc:
        return ToolOutcome(f"could not keep it now: {exc}", is_error=True)
    return ToolOutcome(Remembered(remembered=fact))


async def _send_attachment(deps: TurnDeps, call: ToolCall, outcome: ToolOutcome) -> None:
    """Charts go to the person, not to the model (which reads ``ToolResult.for_model``):
    whatever the result of a tool with the ``attachment`` trait attaches."""
    value = outcome.value
    if (
        not outcome.is_error
        and isinstance(value, contract.ToolResult)
        and _traits(deps, call.name).attachment
    ):
        await _attach(deps, value.attachment())


async def _attach(
    deps: TurnDeps, attachment: contract.Attachment | contract.CandleChart | None
) -> None:
    """Send a result's attachment to the person: candles as they are, an agent's image
    resource fetched from the agent."""
    item: Attachment
    match attachment:
        case None:
            return
        case contract.CandleChart(ticker=ticker, timeframe=timeframe, candles=candles):
            item = CandlesFrame(ticker=ticker, timeframe=timeframe, candles=candles)
        case contract.Attachment(uri=uri, mime=mime, caption=caption):
            try:
                data = await deps.link.read_bytes(uri)
            except Exception as exc:  # the answer goes on without its picture
                log.warning("attachment unreadable", uri=uri, error=str(exc))
                return
            item = ImageFrame(mime=mime, caption=caption, data=base64.b64encode(data).decode())
    deps.attachments.append(item)
    await deps.send(item)


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> Any:
    """The compiled turn graph (compiled once; each turn passes its own deps as its context
    and its person's thread); ``checkpointer`` keeps the turns waiting for a "yes"."""
    g = StateGraph(TurnState, context_schema=TurnDeps)
    g.add_node("fetch_context", fetch_context)
    g.add_node("retrieve", retrieve)
    g.add_node("build_prompt", build_prompt)
    g.add_node("call_model", call_model)
    g.add_node("run_tools", run_tools)
    g.add_node("place_confirmed", place_confirmed)
    g.add_node("save", save)
    g.add_node(
        "await_confirmation",
        await_confirmation,
        destinations=("place_confirmed", "fetch_context", "retrieve", END),
    )
    g.add_edge(START, "fetch_context")
    g.add_edge(START, "retrieve")
    g.add_edge(["fetch_context", "retrieve"], "build_prompt")
    g.add_edge("build_prompt", "call_model")
    g.add_conditional_edges("call_model", after_model, ["run_tools", "save"])
    g.add_conditional_edges("run_tools", after_tools, ["call_model", "save"])
    g.add_edge("place_confirmed", "save")
    g.add_conditional_edges("save", after_save, ["await_confirmation", END])
    return g.compile(checkpointer=checkpointer)
