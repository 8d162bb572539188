"""The agent's MCP tools as a contract: what each returns, and what the gateway must know.

The agent (``mcp-agent/agent/tools``) registers each tool from its :class:`AgentTool`: its
function returns the contract's result type, so the MCP SDK publishes that type's JSON
schema as the tool's ``outputSchema`` and answers with ``structuredContent`` (the text
content stays the same JSON). What the gateway must know of a tool — it changes the
context, it needs the person's confirmation, it is hidden from the model, its result
carries an attachment — travels in the tool's ``_meta`` as :class:`ToolTraits`, so the
gateway keeps no lists of tool names. The gateway reads results with
:meth:`AgentTool.parse`: a result of another shape fails loudly
(:class:`ToolResultMismatch`), never as a ``KeyError`` further on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, ValidationError

from dexorder.contracts.chat import CandleRow
from dexorder.times import iso

#: The key of the tool's ``_meta`` that holds its :class:`ToolTraits`.
META_KEY = "dexorder/traits"

#: A strategy parameter: a value, or a list of values to sweep.
Scalar = float | int | str | bool | None
ParamValue = Scalar | list[Scalar]
#: A backtest's figure (sharpe, total_return, trades…).
Figure = float | int | str | None


class ToolTraits(BaseModel):
    """What the gateway needs to know of a tool, beyond its schemas."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: using it changes what the context resources say (the gateway drops its cached copy)
    changes_context: bool = False
    #: it places orders: never run without the person's "yes" in the chat
    needs_confirmation: bool = False
    #: the platform calls it itself; the model is not offered it
    hidden: bool = False
    #: its result may carry an attachment for the person (``ToolResult.attachment``):
    #: the harness sends it on the chat, the model reads ``ToolResult.for_model``
    attachment: bool = False

    def as_meta(self) -> dict[str, Any]:
        return {META_KEY: self.model_dump()}

    @classmethod
    def from_meta(cls, meta: dict[str, Any] | None) -> ToolTraits:
        """The traits in a tool's ``_meta`` (none declared: all false)."""
        raw = (meta or {}).get(META_KEY)
        return cls() if raw is None else cls.model_validate(raw)


class Attachment(BaseModel):
    """Something for the person rather than the model: an image resource of the agent."""

    uri: str
    mime: str
    caption: str


class CandleChart(BaseModel):
    """Something for the person rather than the model: candles the page draws as a chart
    (the chat's ``candles`` frame)."""

    ticker: str
    timeframe: str
    candles: list[CandleRow]


class ToolResult(BaseModel):
    """The base of every tool result."""

    def for_model(self) -> str:
        """What the model reads of this result (JSON)."""
        return self.model_dump_json()

    def attachment(self) -> Attachment | CandleChart | None:
        """What goes to the person besides the model's reading (tools with the
        ``attachment`` trait)."""
        return None


# --- workspace ------------------------------------------------------------------------


class FileSummary(BaseModel):
    name: str
    description: str
    #: its literal ``PARAMS`` (defaults; the page's parameter control); ``{}`` when it
    #: declares none, None when they are computed (known only by running it)
    params: dict[str, ParamValue] | None = {}


class StrategyList(ToolResult):
    strategies: list[FileSummary]


class IndicatorList(ToolResult):
    indicators: list[FileSummary]


class SourceFile(ToolResult):
    name: str
    code: str


class Validation(BaseModel):
    """What the sandbox found running the file on sample candles."""

    candles: int
    doc: str
    #: an indicator's number of lines (None for strategies)
    lines: int | None = None


class SavedFile(ToolResult):
    name: str
    commit: str
    validation: Validation


class Revision(BaseModel):
    commit: str
    when: str
    message: str


class History(ToolResult):
    commits: list[Revision]


class RevertedFile(ToolResult):
    path: str
    commit: str


class Watchlist(ToolResult):
    watchlist: list[str]


# --- conversation ---------------------------------------------------------------------


class SavedMessage(ToolResult):
    id: str
    role: Literal["user", "assistant"]
    text: str
    channel: str
    time: int


class ConversationMatch(SavedMessage):
    score: float


class ConversationMatches(ToolResult):
    matches: list[ConversationMatch]


class ConversationDigest(ToolResult):
    """The folded part of the rolling conversation summary, for the gateway's model to
    rewrite: how many messages it covers, its lines, and the messages folded without a
    model since its last digest (``role: text``, each cut)."""

    folded: int
    by: Literal["extractive", "model"]
    lines: list[str]
    unwritten: list[str]


# --- alerts ---------------------------------------------------------------------------


class Alert(ToolResult):
    id: str
    ticker: str
    condition: Literal["above", "below"]
    price: float
    note: str = ""
    created_at: int
    triggered_at: int | None = None
    triggered_price: float | None = None


class MarketAlert(ToolResult):
    """An alert on how the market moves rather than on a price level: a move of
    ``percent`` % within ``window_s`` seconds (``direction`` up, down or either), or a closed
    ``timeframe`` candle whose volume is over ``multiple`` times the mean of the ``lookback``
    candles before it. Only the platform's stream engine watches these."""

    id: str
    ticker: str
    kind: Literal["percent_move", "volume_spike"]
    note: str = ""
    created_at: int
    percent: float | None = None
    window_s: int | None = None
    direction: Literal["up", "down", "either"] | None = None
    timeframe: str | None = None
    multiple: float | None = None
    lookback: int | None = None
    triggered_at: int | None = None
    triggered_price: float | None = None


class AlertList(ToolResult):
    alerts: list[Alert]
    #: moves and volume spikes (where the platform watches the market)
    market_alerts: list[MarketAlert] = []


# --- trading --------------------------------------------------------------------------


#: A paper order's type: ``market`` fills at once; the others rest until their price
#: (``limit_price``): ``limit`` and ``take_profit`` fill at it or better, ``stop_loss`` at
#: the market once it is reached (see :class:`dexorder.contracts.rules.OrderTrigger`).
OrderType = Literal["market", "limit", "stop_loss", "take_profit"]


class TradeOrder(BaseModel):
    """The arguments of ``execute_trade``, one to one with the tool's parameters (a test
    keeps them so): what the gateway holds until the person confirms the order, then
    sends to the agent."""

    ticker: str
    side: Literal["buy", "sell"]
    quantity: float = Field(gt=0)
    order_type: OrderType = "market"
    limit_price: float | None = Field(default=None, gt=0)
    mode: Literal["paper", "live"] = "paper"


class Order(ToolResult):
    """An order of the paper account (the broker's own record: it is kept as this)."""

    id: str
    ticker: str
    side: Literal["buy", "sell"]
    type: OrderType
    quantity: float = Field(gt=0)
    #: the price a resting order waits for (limit, stop or take-profit price)
    limit_price: float | None = None
    status: Literal["open", "filled", "cancelled"] = "open"
    created_at: int
    filled_at: int | None = None
    fill_price: float | None = None
    fee: float = 0.0


class Fill(BaseModel):
    order_id: str
    ticker: str
    side: Literal["buy", "sell"]
    quantity: float
    price: float
    fee: float
    time: int
    realised_pnl: float


class PaperTrade(ToolResult):
    """A paper order placed (and its fill, for a market order)."""

    order: Order
    fill: Fill | None


class RuleApplied(ToolResult):
    """A fired order rule applied to the paper account (``apply_rule_fired``): the order as
    it is now, and the fill it made (None when it was applied before, or the order was no
    longer open: a second delivery changes nothing)."""

    order: Order
    fill: Fill | None


class LiveTradeRequest(ToolResult):
    """A live order parked until the person sends back the code sent to their channel."""

    status: Literal["awaiting_confirmation"]
    confirmation_id: str
    summary: str
    expires_at: int
    next: str


class LiveOrder(BaseModel):
    exchange_order_id: str | None
    ticker: str
    side: str
    quantity: float
    price: float | None
    status: str | None


class LiveTrade(ToolResult):
    status: Literal["placed"]
    order: LiveOrder


class PositionView(BaseModel):
    ticker: str
    quantity: float
    average_price: float
    last_price: float
    unrealised_pnl: float
    realised_pnl: float


class Account(ToolResult):
    """Cash, positions with PnL, equity and open orders of the paper account."""

    mode: Literal["paper"]
    cash: float
    quote: str
    equity: float
    positions: list[PositionView]
    open_orders: list[Order]


# --- backtests and Python -------------------------------------------------------------


class TradeRow(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    side: str
    entry_time: str
    exit_time: str
    entry_price: float
    exit_price: float
    quantity: float
    pnl: float
    ret: float = Field(alias="return")
    reason: str


#: Trades the model is shown of a backtest (the person sees the chart).
TRADES_FOR_MODEL = 20


class BacktestRun(ToolResult):
    id: str
    strategy: str
    ticker: str
    timeframe: str
    candles: int
    params: dict[str, ParamValue]
    mode: str
    figures: dict[str, Figure]
    trades: list[TradeRow]
    equity_curve: list[tuple[str, float]] = []
    #: ``backtest://{id}/chart.png`` when the run drew a chart
    chart: str | None = None
    #: set when ``trades`` was cut for the model (it had more)
    trades_shown: int | None = None
    #: the range asked for (``YYYY-MM-DD HH:MM`` UTC) and when it ran (epoch ms); results
    #: kept before these were recorded have none
    start: str | None = None
    end: str | None = None
    ran_at: int | None = None

    def for_model(self) -> str:
        # the model needs the figures, not every trade and point of the curve
        shown = self
        if len(self.trades) > TRADES_FOR_MODEL:
            cut = self.trades[:TRADES_FOR_MODEL]
            shown = self.model_copy(update={"trades": cut, "trades_shown": TRADES_FOR_MODEL})
        return shown.model_dump_json(by_alias=True, exclude={"equity_curve"})

    def attachment(self) -> Attachment | None:
        if self.chart is None:
            return None
        caption = f"Backtest of {self.strategy} on {self.ticker}"
        return Attachment(uri=self.chart, mime="image/png", caption=caption)


#: The figures of a kept backtest that ``list_backtests`` shows (the rest: ``run_backtest``).
HEADLINE_FIGURES = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "profit_factor",
    "trades",
)


class BacktestSummary(BaseModel):
    """One backtest the agent kept: what ran, over which range, when, and how it did."""

    id: str
    strategy: str
    ticker: str
    timeframe: str
    #: the range (``YYYY-MM-DD HH:MM`` UTC): the one asked for, else the candles' own
    start: str | None
    end: str | None
    #: when it ran (epoch ms)
    ran_at: int
    candles: int
    params: dict[str, ParamValue]
    #: its :data:`HEADLINE_FIGURES`
    figures: dict[str, Figure]
    chart: str | None = None

    def line(self) -> str:
        """The run in one line (a prompt's context, the offline model's answer)."""
        shown = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.figures.items()
        )
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (
            f"{self.strategy} on {self.ticker} {self.timeframe}, {self.start or '?'} to "
            f"{self.end or '?'} ({self.candles} candles{'; ' + params if params else ''}), "
            f"run {self.id} at {iso(self.ran_at)} UTC: {shown or 'no figures'}"
        )


#: The most runs one ``list_backtests`` call answers with.
MAX_BACKTESTS_LISTED = 50


class BacktestList(ToolResult):
    """The person's kept backtests, newest first."""

    runs: list[BacktestSummary]
    #: runs that matched beyond the limit
    more: int = 0
    #: kept results that could not be read (corrupt, partial, a link) and were left out
    skipped: int = 0


class SweepRow(BaseModel):
    """One combination of a sweep: its parameters, and its figures as fields of their own."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Figure] = Field(init=False)

    params: dict[str, ParamValue]

    def figures(self) -> dict[str, Figure]:
        return dict(self.__pydantic_extra__)


class SweepRun(ToolResult):
    id: str
    strategy: str
    ticker: str
    timeframe: str
    candles: int
    sweep: list[SweepRow]
    rank_by: str
    combinations: int


class IndicatorLine(BaseModel):
    """One line of an indicator: a value per time of :attr:`IndicatorSeries.times`
    (None where it has none: its warm-up, a gap)."""

    name: str
    values: list[float | None]


#: The most points of an indicator's series one call answers with (the newest).
MAX_INDICATOR_POINTS = 5000
#: Points of a series the model is shown (the page draws them all).
POINTS_FOR_MODEL = 10


class IndicatorSeries(ToolResult):
    """An indicator of the person's workspace computed over a market's candles (in the
    sandbox): the candles' open times (ms) and a line per output of ``compute``."""

    indicator: str
    ticker: str
    timeframe: str
    params: dict[str, ParamValue]
    times: list[int]
    lines: list[IndicatorLine]

    def for_model(self) -> str:
        # the model needs the latest values, not thousands of points
        n = POINTS_FOR_MODEL
        lines = [line.model_copy(update={"values": line.values[-n:]}) for line in self.lines]
        return self.model_copy(update={"times": self.times[-n:], "lines": lines}).model_dump_json()


class PythonRun(ToolResult):
    result: Any
    output: str
    files: list[str]
    seconds: float


# --- the tools ------------------------------------------------------------------------

R = TypeVar("R")


class ToolResultMismatch(RuntimeError):
    """A tool answered with a result its contract does not describe."""


class OneOf(RootModel[R], Generic[R]):
    """A result that is one of several models: published as that model itself (no wrapper
    object), its schema an ``anyOf`` of objects."""

    model_config = ConfigDict(json_schema_extra={"type": "object"})


@dataclass(frozen=True)
class AgentTool(Generic[R]):
    """One tool of the agent: its name, its result type ``R``, its traits.

    ``published`` is what the SDK is told the tool returns: ``R`` itself, or for a union of
    results the :class:`OneOf` of them (an output schema names one type).
    """

    name: str
    published: type[BaseModel]
    traits: ToolTraits = field(default_factory=ToolTraits)

    @cached_property
    def _adapter(self) -> TypeAdapter[BaseModel]:
        return TypeAdapter(self.published)

    def publish(self, value: R) -> BaseModel:
        """``value`` as the SDK is told the tool returns it."""
        if issubclass(self.published, RootModel):
            return self.published(value)
        assert isinstance(value, BaseModel)
        return value

    def parse(self, structured: dict[str, Any] | None) -> R:
        """The result from a call's ``structuredContent``; raises :class:`ToolResultMismatch`."""
        if structured is None:
            raise ToolResultMismatch(f"{self.name} returned no structured result")
        return self.validate(structured)

    def validate(self, raw: object) -> R:
        """The result from its JSON value; raises :class:`ToolResultMismatch`."""
        try:
            return self._unwrap(self._adapter.validate_python(raw))
        except ValidationError as exc:
            raise ToolResultMismatch(
                f"{self.name} returned a result its contract does not describe: {exc}"
            ) from None

    def parse_json(self, text: str) -> R:
        """The result from what the model read of it (:meth:`ToolResult.for_model`)."""
        try:
            return self._unwrap(self._adapter.validate_json(text))
        except ValidationError as exc:
            raise ToolResultMismatch(f"{self.name}: not a result of its contract: {exc}") from None

    def _unwrap(self, model: BaseModel) -> R:
        value = model.root if isinstance(model, RootModel) else model
        return value  # type: ignore[return-value]  # R is what ``published`` holds


_CHANGES = ToolTraits(changes_context=True)

LIST_STRATEGIES = AgentTool[StrategyList]("list_strategies", StrategyList)
READ_STRATEGY = AgentTool[SourceFile]("read_strategy", SourceFile)
WRITE_STRATEGY = AgentTool[SavedFile]("write_strategy", SavedFile, _CHANGES)
LIST_INDICATORS = AgentTool[IndicatorList]("list_indicators", IndicatorList)
READ_INDICATOR = AgentTool[SourceFile]("read_indicator", SourceFile)
WRITE_INDICATOR = AgentTool[SavedFile]("write_indicator", SavedFile, _CHANGES)
WORKSPACE_HISTORY = AgentTool[History]("workspace_history", History)
REVERT_FILE = AgentTool[RevertedFile]("revert_file", RevertedFile, _CHANGES)
SAVE_MESSAGE = AgentTool[SavedMessage]("save_message", SavedMessage, ToolTraits(hidden=True))
SEARCH_CONVERSATION = AgentTool[ConversationMatches]("search_conversation", ConversationMatches)
CONVERSATION_DIGEST = AgentTool[ConversationDigest](
    "conversation_digest", ConversationDigest, ToolTraits(hidden=True)
)
WRITE_SUMMARY = AgentTool[ConversationDigest](
    "write_summary", ConversationDigest, ToolTraits(hidden=True, changes_context=True)
)
GET_WATCHLIST = AgentTool[Watchlist]("get_watchlist", Watchlist)
SET_WATCHLIST = AgentTool[Watchlist]("set_watchlist", Watchlist, _CHANGES)
SET_ALERT = AgentTool[Alert]("set_alert", Alert, _CHANGES)
SET_MARKET_ALERT = AgentTool[MarketAlert]("set_market_alert", MarketAlert, _CHANGES)
LIST_ALERTS = AgentTool[AlertList]("list_alerts", AlertList)
DELETE_ALERT = AgentTool[Alert | MarketAlert]("delete_alert", OneOf[Alert | MarketAlert], _CHANGES)
EXECUTE_TRADE = AgentTool[PaperTrade | LiveTradeRequest](
    "execute_trade",
    OneOf[PaperTrade | LiveTradeRequest],
    ToolTraits(changes_context=True, needs_confirmation=True),
)
CONFIRM_TRADE = AgentTool[LiveTrade]("confirm_trade", LiveTrade, _CHANGES)
GET_POSITIONS = AgentTool[Account]("get_positions", Account)
CANCEL_ORDER = AgentTool[Order]("cancel_order", Order, _CHANGES)
APPLY_RULE_FIRED = AgentTool[RuleApplied](
    "apply_rule_fired", RuleApplied, ToolTraits(changes_context=True, hidden=True)
)
RUN_BACKTEST = AgentTool[BacktestRun | SweepRun](
    "run_backtest", OneOf[BacktestRun | SweepRun], ToolTraits(attachment=True)
)
LIST_BACKTESTS = AgentTool[BacktestList]("list_backtests", BacktestList)
RUN_PYTHON = AgentTool[PythonRun]("run_python", PythonRun)
COMPUTE_INDICATOR = AgentTool[IndicatorSeries]("compute_indicator", IndicatorSeries)

#: Every tool of the agent, by name.
AGENT_TOOLS: dict[str, AgentTool[Any]] = {
    t.name: t
    for t in (
        LIST_STRATEGIES,
        READ_STRATEGY,
        WRITE_STRATEGY,
        LIST_INDICATORS,
        READ_INDICATOR,
        WRITE_INDICATOR,
        WORKSPACE_HISTORY,
        REVERT_FILE,
        SAVE_MESSAGE,
        SEARCH_CONVERSATION,
        CONVERSATION_DIGEST,
        WRITE_SUMMARY,
        GET_WATCHLIST,
        SET_WATCHLIST,
        SET_ALERT,
        SET_MARKET_ALERT,
        LIST_ALERTS,
        DELETE_ALERT,
        EXECUTE_TRADE,
        CONFIRM_TRADE,
        GET_POSITIONS,
        CANCEL_ORDER,
        APPLY_RULE_FIRED,
        RUN_BACKTEST,
        LIST_BACKTESTS,
        RUN_PYTHON,
        COMPUTE_INDICATOR,
    )
}
