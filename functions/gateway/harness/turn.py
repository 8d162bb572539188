"""The harness's entry point: run one chat turn for one person against their agent."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from dexorder import telemetry
from dexorder.config import Settings
from dexorder.contracts.agent_tools import TradeOrder
from dexorder.contracts.chat import Attachment, TokenFrame
from dexorder.tokens import TokenKeys, mint_token
from gateway.harness import delegates
from gateway.harness.agent_link import AgentLink, AgentLinks, ContextCache
from gateway.harness.checkpoints import Checkpoints, open_checkpoints
from gateway.harness.confirmations import CONFIRM_TTL_S, describe_order
from gateway.harness.graph import Send, TurnDeps, build_graph
from gateway.harness.knowledge import KnowledgeBase
from gateway.harness.model import ModelError, ModelReply, ToolSpec
from gateway.harness.platform_tools import REMEMBER, SPECS, PlatformTools
from gateway.harness.router import Meter, MeteredModel, ModelRouter
from gateway.harness.summarise import resummarise

log = structlog.get_logger(part="gateway")

_TOKEN_TTL_S = 3600


@dataclass
class TurnResult:
    """What a turn produced, for the channel and for accounting."""

    reply: str
    model: str
    tokens: int
    attachments: list[Attachment] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: what its model calls cost (US$) and why the model that answered last did
    cost_usd: float = 0.0
    why: str = ""


class Harness:
    """Runs turns; holds what outlives one (model clients, caches, market clients)."""

    def __init__(
        self,
        cfg: Settings,
        keys: TokenKeys,
        router: ModelRouter,
        knowledge: KnowledgeBase | None,
    ) -> None:
        self.cfg = cfg
        self.keys = keys
        self.router = router
        self.knowledge = knowledge
        self.platform = PlatformTools(cfg)
        self.context = ContextCache(ttl_s=cfg.gateway.context_cache_s)
        self.links = AgentLinks(max_age_s=_TOKEN_TTL_S - 600)
        #: how long an order waits for the person's "yes"; after it, it is cancelled
        self.confirm_ttl_s = CONFIRM_TTL_S
        #: the turn graph and its checkpoints, opened by the first turn (they need a loop)
        self.checkpoints: Checkpoints | None = None
        self.graph: Any = None
        self._opening = asyncio.Lock()

    async def _ready(self) -> Any:
        async with self._opening:
            if self.checkpoints is None:
                self.checkpoints = await open_checkpoints(self.cfg.gateway.database_url)
                self.graph = build_graph(self.checkpoints.saver)
        return self.graph

    @staticmethod
    def _thread(user: str) -> RunnableConfig:
        return {"configurable": {"thread_id": user}}

    async def pending_order(self, user: str) -> TradeOrder | None:
        """The order waiting for ``user``'s "yes", if one waits and is not too old."""
        graph = await self._ready()
        snapshot = await graph.aget_state(self._thread(user))
        if not snapshot.interrupts or snapshot.created_at is None:
            return None
        age = datetime.now(UTC) - datetime.fromisoformat(snapshot.created_at)
        if age.total_seconds() > self.confirm_ttl_s:
            return None
        return TradeOrder.model_validate(snapshot.interrupts[0].value)

    async def _drop_thread(self, user: str) -> None:
        assert self.checkpoints is not None
        await self.checkpoints.saver.adelete_thread(user)

    def agent_token(self, user: str) -> str:
        """A service token for ``user``'s agent, made for each MCP session opened: it
        outlives the session (``AgentLinks.max_age_s`` is shorter than its life)."""
        return mint_token(self.keys, user, "service", _TOKEN_TTL_S)

    async def _tools(self, link: AgentLink) -> list[ToolSpec]:
        agent_tools = [t for t in await link.tools() if not t.traits.hidden]
        mine = [REMEMBER] if self.knowledge is not None else []
        tools = [*SPECS, *mine, *agent_tools]
        # skills, subagents and workflows whose tools this agent has
        return tools + delegates.specs({t.name for t in tools})

    async def forget(self, user: str) -> None:
        """Drop everything held for ``user`` (they left, or their agent was reset)."""
        await self.links.drop(user)
        self.context.forget(user)
        await self._ready()
        await self._drop_thread(user)

    async def turn(
        self,
        *,
        user: str,
        tier: str,
        channel: str,
        text: str,
        mcp_url: str,
        send: Send,
        meter: Meter | None = None,
    ) -> TurnResult:
        """One turn; ``meter`` counts each model call against the person's budget (and
        ends the turn between tool rounds once it is used up)."""
        graph = await self._ready()
        # an order waits for this message (asked on any replica): it resumes that turn
        waiting = await self.pending_order(user) is not None
        if not waiting:  # a finished, abandoned or too old turn: this one starts afresh
            await self._drop_thread(user)
        model = self.router.choose(tier, text)
        if meter is not None:  # every model call of the turn, its delegates' too
            model = MeteredModel(model, meter)
        t0 = time.perf_counter()
        with telemetry.span("connect"):  # the held MCP session and the agent's tools
            link, tools = await self._connect(user, mcp_url)
        deps = TurnDeps(
            user=user,
            tier=tier,
            channel=channel,
            link=link,
            model=model,
            tools=tools,
            # the agent's (asked once a session) and the platform's own
            traits={t.name: t.traits for t in [*await link.tools(), *SPECS, REMEMBER]},
            platform=self.platform,
            knowledge=self.knowledge,
            context=self.context,
            send=send,
            max_rounds=self.cfg.gateway.max_tool_rounds,
            workflow_rounds=self.cfg.gateway.workflow_rounds,
        )
        deps.timings["connect_ms"] = (time.perf_counter() - t0) * 1000
        try:
            if waiting:
                # "sync": the resumed step is saved before an order goes out, so a replica
                # dying while placing it leaves nothing waiting to be placed again
                state = await graph.ainvoke(
                    Command(resume=text), self._thread(user), context=deps, durability="sync"
                )
            else:  # saved only where it stops: at an order waiting for a "yes"
                state = await graph.ainvoke(
                    {"text": text, "pending": None, "cancelled": None},
                    self._thread(user),
                    context=deps,
                    durability="exit",
                )
        except ModelError as exc:
            await self._settle(user)
            reply = f"Sorry, I could not answer: {exc}"
            await send(TokenFrame(text=reply))
            return TurnResult(reply, model.name, 0, deps.attachments, deps.timings)
        except BaseException:
            await asyncio.shield(self._settle(user))
            await self.links.drop(user)  # the next turn starts a fresh session
            raise
        if not state.get("__interrupt__"):
            await self._drop_thread(user)  # nothing waits: the gateway keeps nothing
        reply = state.get("reply", "")
        cancelled = state.get("cancelled")
        if cancelled:
            said = describe_order(TradeOrder.model_validate(cancelled))
            note = f"\n\n(The order waiting for your confirmation, {said}, was cancelled.)"
            await send(TokenFrame(text=note))
            reply += note
        summarised = await self._resummarise(deps)
        deps.timings["turn_ms"] = (time.perf_counter() - t0) * 1000
        return TurnResult(
            reply,
            state.get("model", model.name),
            state.get("tokens", 0) + (summarised.tokens if summarised else 0),
            deps.attachments,
            deps.timings,
            state.get("cost_usd", 0.0) + (summarised.cost_usd if summarised else 0.0),
            state.get("why", ""),
        )

    async def _resummarise(self, deps: TurnDeps) -> ModelReply | None:
        """Now and then the model rewrites the conversation summary (``summarise.py``)."""
        if deps.model.offline:
            return None
        t0 = time.perf_counter()
        try:
            with telemetry.span("summarise"):
                done = await resummarise(
                    deps.link, deps.model, self.cfg.gateway.summary_model_after
                )
        except Exception as exc:  # the summary stays extractive; the turn was answered
            log.warning("the model could not rewrite the summary", user=deps.user, error=str(exc))
            return None
        if done is not None:
            deps.timings["summary_ms"] = (time.perf_counter() - t0) * 1000
            deps.context.conversation_changed(deps.user)
        return done

    async def _settle(self, user: str) -> None:
        """After a turn that failed: keep the thread only if its order still waits."""
        try:
            if await self.pending_order(user) is None:
                await self._drop_thread(user)
        except Exception:  # the database away: the hourly sweep, or the next turn, drops it
            log.exception("could not settle a failed turn's checkpoint", user=user)

    async def _connect(self, user: str, mcp_url: str) -> tuple[AgentLink, list[ToolSpec]]:
        """The person's open MCP session and tools; one fresh try if the held one broke."""
        for attempt in (1, 2):
            link = await self.links.get(user, mcp_url, lambda: self.agent_token(user))
            try:
                return link, await self._tools(link)
            except Exception:
                await self.links.drop(user)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.links.close()
        await self.platform.close()
        await self.router.close()
        if self.knowledge is not None:
            await self.knowledge.close()
        if self.checkpoints is not None:
            await self.checkpoints.close()
