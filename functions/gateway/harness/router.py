"""Which model answers a turn: by the person's tier, how hard the request looks, and the
configured strategy (cost, speed, quality, or balanced)."""

from __future__ import annotations

import re
from typing import Literal

import anthropic

from dexorder.config import GatewayConfig
from gateway.harness.anthropic_model import AnthropicModel
from gateway.harness.model import ChatModel
from gateway.harness.offline import OfflineModel

Complexity = Literal["simple", "complex"]

_HARD = re.compile(
    r"\b(write|code|implement|optimi[sz]e|sweep|improve|explain why|compare|analy[sz]e|"
    r"strategy that|indicator that|refactor|debug)\b",
    re.I,
)


def complexity(text: str) -> Complexity:
    """``complex`` for long requests and ones that ask for code or analysis."""
    return "complex" if len(text) > 400 or _HARD.search(text) else "simple"


class ModelRouter:
    """Anthropic models when a key is configured, else the offline model."""

    def __init__(self, cfg: GatewayConfig, api_key: str | None) -> None:
        self.cfg = cfg
        self.offline = OfflineModel()
        self._client = (
            anthropic.AsyncAnthropic(api_key=api_key, base_url=cfg.anthropic_base_url)
            if api_key
            else None
        )

    def choose(self, tier: str, text: str) -> ChatModel:
        if self._client is None:
            return self.offline
        table = self.cfg.models.get(tier) or self.cfg.models["free"]
        strategy = self.cfg.model_strategy
        if strategy in ("cost", "speed"):
            level: Complexity = "simple"
        elif strategy == "quality":
            level = "complex"
        else:
            level = complexity(text)
        return AnthropicModel(self._client, table[level])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
