"""The gateway's own tools as a contract: what each returns, and what the harness must know.

These tools run in the gateway (``functions/gateway/harness/platform_tools.py``), not in
the person's agent, but their results are read the same way as the agent's
(:mod:`dexorder.contracts.agent_tools`): the model reads :meth:`ToolResult.for_model`,
the offline model reads that JSON back through the contract, and what goes to the person
(a candle chart) is the result's :meth:`ToolResult.attachment`, announced by the
``attachment`` trait rather than known to the harness by the tool's name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from dexorder.contracts.agent_tools import AgentTool, CandleChart, ToolResult, ToolTraits
from dexorder.contracts.chat import CandleRow


class Price(ToolResult):
    """The last trade of a market, as its exchange reports it."""

    ticker: str
    #: None when the exchange reports no trade
    last: float | None
    #: the exchange's ISO 8601 time of the quote (None when it gives none)
    time: str | None = None


class _Ranged(ToolResult):
    """A result over a time range: its ``from`` and ``to`` (ISO 8601, UTC) are keywords in
    Python, so the fields are ``start`` and ``end`` under those names."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class CandleSummary(_Ranged):
    """Candles of a market: figures for the model, the newest rows for the person's chart."""

    ticker: str
    timeframe: str
    count: int
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    first_close: float
    last_close: float
    high: float
    low: float
    #: the newest candles, for the chart (left out of what the model reads)
    candles: list[CandleRow] = []

    def for_model(self) -> str:
        return self.model_dump_json(exclude={"candles"})

    def attachment(self) -> CandleChart | None:
        if not self.candles:
            return None
        return CandleChart(ticker=self.ticker, timeframe=self.timeframe, candles=self.candles)


class Backfilled(_Ranged):
    """The platform fetched and keeps the market's candles over the range."""

    ticker: str
    timeframe: str
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    ready: Literal[True] = True


class Remembered(ToolResult):
    """A fact about the person kept in the gateway's knowledge base."""

    remembered: str


GET_PRICE = AgentTool[Price]("get_price", Price)
GET_CANDLES = AgentTool[CandleSummary]("get_candles", CandleSummary, ToolTraits(attachment=True))
REQUEST_BACKFILL = AgentTool[Backfilled]("request_backfill", Backfilled)
REMEMBER = AgentTool[Remembered]("remember", Remembered)

#: Every tool of the gateway, by name.
PLATFORM_TOOLS: dict[str, AgentTool[Any]] = {
    t.name: t for t in (GET_PRICE, GET_CANDLES, REQUEST_BACKFILL, REMEMBER)
}
