"""The harness's entry point: run one chat turn for one person against their agent."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from dexorder import telemetry
from dexorder.config import Settings
from dexorder.contracts.chat import Attachment, TokenFrame
from dexorder.tokens import TokenKeys, mint_token
from gateway.harness.agent_link import AgentLink, AgentLinks, ContextCache
from gateway.harness.confirmations import (
    Confirmations,
    describe_order,
    is_confirmation,
    is_refusal,
)
from gateway.harness.graph import Send, TurnDeps, build_graph
from gateway.harness.knowledge import KnowledgeBase
from gateway.harness.model import ModelError, ToolSpec
from gateway.harness.offline import labelled
from gateway.harness.platform_tools import REMEMBER, SPECS, PlatformTools
from gateway.harness.router import ModelRouter

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
        self.confirmations = Confirmations()
        self.links = AgentLinks(max_age_s=_TOKEN_TTL_S - 600)
        self.graph = build_graph()

    def agent_token(self, user: str) -> str:
        """A service token for ``user``'s agent, made for each MCP session opened: it
        outlives the session (``AgentLinks.max_age_s`` is shorter than its life)."""
        return mint_token(self.keys, user, "service", _TOKEN_TTL_S)

    async def _tools(self, link: AgentLink) -> list[ToolSpec]:
        agent_tools = [t for t in await link.tools() if not t.traits.hidden]
        mine = [REMEMBER] if self.knowledge is not None else []
        return [*SPECS, *mine, *agent_tools]

    async def forget(self, user: str) -> None:
        """Drop everything held for ``user`` (they left, or their agent was reset)."""
        await self.links.drop(user)
        self.context.forget(user)
        self.confirmations.take(user)

    async def turn(
        self, *, user: str, tier: str, channel: str, text: str, mcp_url: str, send: Send
    ) -> TurnResult:
        cancelled = None
        if not is_confirmation(text):
            cancelled = self.confirmations.take(user)
        model = self.router.choose(tier, text)
        if cancelled is not None and is_refusal(text):
            reply = labelled(model, f"Cancelled: {describe_order(cancelled)} was not placed.")
            await send(TokenFrame(text=reply))
            return TurnResult(reply, model.name, 0)
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
            confirmations=self.confirmations,
            send=send,
            max_rounds=self.cfg.gateway.max_tool_rounds,
        )
        deps.timings["connect_ms"] = (time.perf_counter() - t0) * 1000
        try:
            state = await self.graph.ainvoke({"text": text}, context=deps)
        except ModelError as exc:
            reply = f"Sorry, I could not answer: {exc}"
            await send(TokenFrame(text=reply))
            return TurnResult(reply, model.name, 0, deps.attachments, deps.timings)
        except Exception:
            await self.links.drop(user)  # the next turn starts a fresh session
            raise
        reply = state.get("reply", "")
        if cancelled is not None:
            note = (
                f"\n\n(The order waiting for your confirmation, {describe_order(cancelled)}, "
                "was cancelled.)"
            )
            await send(TokenFrame(text=note))
            reply += note
        deps.timings["turn_ms"] = (time.perf_counter() - t0) * 1000
        return TurnResult(
            reply,
            state.get("model", model.name),
            state.get("tokens", 0),
            deps.attachments,
            deps.timings,
        )

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
