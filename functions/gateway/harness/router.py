"""Which model answers a turn: by the person's tier, how hard the request looks, and the
configured strategy (cost, speed, quality, or balanced); and what stands in for it when
the provider has a bad minute.

The SDK retries a call the API turned away (429, 529, 5xx; ``gateway.model_retries``);
when it still fails that way the tier's fallback model (``gateway.fallback_models``)
answers instead. Each answer carries what it cost (``gateway.model_prices``) and why
that model gave it, for the budget and the turn's trace.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from dexorder.config import GatewayConfig
from gateway.harness.anthropic_model import AnthropicModel, client
from gateway.harness.model import ChatModel, Message, ModelError, ModelReply, OnText, ToolSpec
from gateway.harness.offline import OfflineModel
from gateway.limits import cost_usd

Complexity = Literal["simple", "complex"]

_HARD = re.compile(
    r"\b(write|code|implement|optimi[sz]e|sweep|improve|explain why|compare|analy[sz]e|"
    r"strategy that|indicator that|refactor|debug)\b",
    re.I,
)


def complexity(text: str) -> Complexity:
    """``complex`` for long requests and ones that ask for code or analysis."""
    return "complex" if len(text) > 400 or _HARD.search(text) else "simple"


@dataclass(frozen=True)
class Route:
    """The router's choice for one turn and what it went by."""

    tier: str
    complexity: Complexity
    strategy: str
    model: str
    fallback: str | None

    @property
    def why(self) -> str:
        return f"tier={self.tier} complexity={self.complexity} strategy={self.strategy}"


class RoutedModel:
    """The chosen model, with the tier's fallback behind it; prices each answer."""

    offline = False

    def __init__(
        self,
        route: Route,
        primary: ChatModel,
        fallback: ChatModel | None,
        prices: GatewayConfig,
    ) -> None:
        self.route, self.primary, self.fallback, self.cfg = route, primary, fallback, prices
        self.name = primary.name

    async def reply(
        self,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        on_text: OnText | None = None,
    ) -> ModelReply:
        try:
            answer = await self.primary.reply(system, messages, tools, on_text)
            answer.why = self.route.why
        except ModelError as exc:
            if not exc.busy or self.fallback is None:
                raise
            try:  # the provider's bad minute: the tier's fallback model answers
                answer = await self.fallback.reply(system, messages, tools, on_text)
            except ModelError as again:
                again.retries += exc.retries + 1
                raise
            answer.retries += exc.retries + 1
            answer.fallback_from = self.primary.name
            answer.why = (
                f"{self.route.why}; fallback {self.fallback.name} after {self.primary.name} "
                f"was turned away {exc.retries + 1} times"
            )
        priced = self.cfg.model_prices[self._asked(answer)]
        answer.cost_usd = cost_usd(
            priced.input, priced.output, answer.input_tokens, answer.output_tokens
        )
        return answer

    def _asked(self, answer: ModelReply) -> str:
        """The model asked for (the API may name a dated snapshot of it): the priced one."""
        if answer.fallback_from and self.fallback is not None:
            return self.fallback.name
        return self.primary.name


#: Counts a model call against the person's monthly budget; what to tell them when the
#: call used it up (None: budget left).
Meter = Callable[[ModelReply], Awaitable[str | None]]


class MeteredModel:
    """``model`` with each answer counted as it comes (a turn that fails later still
    counts what it spent); the answer says when the budget ran out with it, and the turn
    stops between tool rounds (``graph.call_model``)."""

    def __init__(self, model: ChatModel, meter: Meter) -> None:
        self.model, self.meter = model, meter
        self.name, self.offline = model.name, model.offline

    async def reply(
        self,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        on_text: OnText | None = None,
    ) -> ModelReply:
        answer = await self.model.reply(system, messages, tools, on_text)
        answer.over_budget = await self.meter(answer)
        return answer


class ModelRouter:
    """Anthropic models when a key is configured, else the offline model."""

    def __init__(self, cfg: GatewayConfig, api_key: str | None) -> None:
        self.cfg = cfg
        self.offline = OfflineModel()
        self._client = (
            client(
                api_key,
                cfg.anthropic_base_url,
                cfg.model_retries,
                cfg.model_retry_after_max_s,
            )
            if api_key
            else None
        )

    def route(self, tier: str, text: str) -> Route:
        table = self.cfg.models.get(tier) or self.cfg.models["free"]
        strategy = self.cfg.model_strategy
        if strategy in ("cost", "speed"):
            level: Complexity = "simple"
        elif strategy == "quality":
            level = "complex"
        else:
            level = complexity(text)
        model = table[level]
        fallback = next((m for m in self.cfg.fallback_models.get(tier, []) if m != model), None)
        return Route(tier, level, strategy, model, fallback)

    def choose(self, tier: str, text: str) -> ChatModel:
        if self._client is None:
            return self.offline
        route = self.route(tier, text)
        fallback = AnthropicModel(self._client, route.fallback) if route.fallback else None
        return RoutedModel(route, AnthropicModel(self._client, route.model), fallback, self.cfg)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
