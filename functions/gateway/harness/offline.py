"""The offline model: no LLM, plain requests turned into the same tool calls a model makes.

So the whole platform works without an API key. It understands a handful of phrasings
(price of BTC, list my strategies, backtest sma_cross on 1h since January, set an alert
at 70k, buy 0.1 BTC on paper, show my positions…); anything else gets a short list of
what it understands. Every reply starts with :data:`LABEL` so nobody mistakes it for an
LLM.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from dexorder.contracts.agent_tools import (
    AGENT_TOOLS,
    Account,
    Alert,
    AlertList,
    BacktestList,
    BacktestRun,
    Figure,
    FileSummary,
    IndicatorList,
    LiveTrade,
    LiveTradeRequest,
    PaperTrade,
    SourceFile,
    StrategyList,
    SweepRun,
    ToolResult,
    Watchlist,
)
from dexorder.contracts.chat import JsonObject, JsonValue
from dexorder.contracts.platform_tools import (
    PLATFORM_TOOLS,
    Backfilled,
    CandleSummary,
    Price,
    Remembered,
)
from gateway.harness.model import ChatModel, Message, ModelReply, OnText, ToolCall, ToolSpec
from gateway.harness.reports import Report

LABEL = "[offline model]"
NAME = "offline"

_MONTH_NAMES = (
    "january february march april may june july august september october november december"
)
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES.split())}
_TIMEFRAME = re.compile(r"\b(1m|5m|15m|1h|4h|1d)\b", re.I)
_DATE = r"(\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2})?|[a-z]+(?: \d{4})?)"
_NUMBER = r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)\s*(k|m)?"
_TICKER = re.compile(r"\b(?:([a-z]+):)?([a-z0-9]{2,10})(?:/([a-z0-9]{2,10}))?\b", re.I)
_KNOWN_BASES = {"BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "DOT", "LINK", "LTC"}

HELP = (
    "I understand plain requests such as: “price of BTC”, “list my strategies”, "
    "“backtest sma_cross on 1h since January”, “set an alert at 70k”, "
    "“buy 0.1 BTC on paper”, “show my positions”, “my alerts”, “my backtests of "
    "sma_cross”, “candles of ETH on 4h since 2024-01-01”, “explain the backtest of "
    "sma_cross”, “review my positions' risk”, "
    "“summarise the market for my watchlist”, “analyse my watchlist”, “write a strategy "
    "called rsi_dip that buys when RSI is under 30”, “write an indicator called my_atr "
    "(ATR)”, “sweep sma_cross by sharpe”. Configure an Anthropic API key for free-form "
    "conversation."
)


def labelled(model: ChatModel, text: str) -> str:
    """``text`` said on behalf of ``model``: the offline model's replies carry :data:`LABEL`."""
    return f"{LABEL} {text}" if model.offline else text


def _amount(number: str, suffix: str | None) -> float:
    value = float(number.replace(",", ""))  # 2,500 is two thousand five hundred
    return value * {"k": 1e3, "m": 1e6}.get((suffix or "").lower(), 1)


def _ticker(text: str) -> str:
    """The first market named in ``text`` (BTC → BINANCE:BTC/USDT); BTC when none is."""
    for m in _TICKER.finditer(text):
        exchange, base, quote = m.group(1), m.group(2).upper(), m.group(3)
        if quote or exchange or base in _KNOWN_BASES:
            return f"{(exchange or 'binance').upper()}:{base}/{(quote or 'USDT').upper()}"
    return "BINANCE:BTC/USDT"


def _when(text: str, now: datetime) -> str | None:
    text = text.strip().lower()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([t ]\d{2}:\d{2})?", text):
        return text.replace(" ", "T")
    words = text.split()
    if words and words[0] in _MONTHS:
        month = _MONTHS[words[0]]
        year = int(words[1]) if len(words) > 1 and words[1].isdigit() else now.year
        if len(words) == 1 and (year, month) > (now.year, now.month):
            year -= 1  # "since December" in November means last December
        return f"{year}-{month:02d}-01"
    return None


def _range(text: str, now: datetime) -> tuple[str, str]:
    end = now.strftime("%Y-%m-%dT%H:%M")
    m = re.search(rf"\bfrom {_DATE} (?:to|until) {_DATE}", text, re.I)
    if m and (a := _when(m.group(1), now)) and (b := _when(m.group(2), now)):
        return a, b
    m = re.search(rf"\bsince {_DATE}", text, re.I)
    if m and (a := _when(m.group(1), now)):
        return a, end
    m = re.search(r"\blast (\d+) days?\b", text, re.I)
    days = int(m.group(1)) if m else 30
    start = datetime.fromtimestamp(now.timestamp() - days * 86400, UTC)
    return start.strftime("%Y-%m-%dT%H:%M"), end


Rule = Callable[[str, datetime], tuple[str, JsonObject] | None]


def _price(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    if re.search(r"\b(price|quote|how much is|trading at)\b", text, re.I):
        return "get_price", {"ticker": _ticker(re.sub(r"\bprice\b", "", text, flags=re.I))}
    return None


def _listing(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    lowered = text.lower()
    for word, tool in (
        ("strateg", "list_strategies"),
        ("indicator", "list_indicators"),
        ("position", "get_positions"),
        ("portfolio", "get_positions"),
        ("balance", "get_positions"),
        ("alert", "list_alerts"),
        ("watchlist", "get_watchlist"),
    ):
        if word in lowered and re.search(r"\b(list|show|what|my|which)\b", lowered):
            return tool, {}
    return None


def _kept_backtests(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    """“my backtests”, “show earlier backtests of sma_cross”: the runs the agent kept."""
    if not re.search(r"\bbacktests\b", text, re.I) or not re.search(
        r"\b(list|show|what|my|which|earlier|past|recent|previous)\b", text, re.I
    ):
        return None
    m = re.search(r"\bbacktests (?:of|for) (?:the )?(?:strategy )?([a-z_][a-z0-9_]*)", text, re.I)
    return "list_backtests", ({"strategy": m.group(1)} if m else {})


def _backtest(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    m = re.search(r"\bbacktest (?:the )?(?:strategy )?([a-z_][a-z0-9_]*)", text, re.I)
    if not m:
        return None
    tf = _TIMEFRAME.search(text)
    start, end = _range(text, now)
    rest = text[m.end() :]
    return "run_backtest", {
        "strategy": m.group(1),
        "ticker": _ticker(rest),
        "timeframe": tf.group(1).lower() if tf else "1h",
        "start": start,
        "end": end,
    }


def _alert(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    if not re.search(r"\balert\b", text, re.I) or not re.search(
        r"\b(set|add|create|alert me)\b", text, re.I
    ):
        return None
    m = re.search(rf"\b(?:at|above|below|over|under|reaches|hits) \$?{_NUMBER}\b", text, re.I)
    if not m:
        return None
    condition = "below" if re.search(r"\b(below|under|drops|falls)\b", text, re.I) else "above"
    price_text = text[: m.start()]
    return "set_alert", {
        "ticker": _ticker(price_text.replace("alert", "")),
        "condition": condition,
        "price": _amount(m.group(1), m.group(2)),
    }


def _trade(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    m = re.search(rf"\b(buy|sell) {_NUMBER}\s*([a-z:/]+)?", text, re.I)
    if not m:
        return None
    args: JsonObject = {
        "ticker": _ticker(m.group(4) or ""),
        "side": m.group(1).lower(),
        "quantity": _amount(m.group(2), m.group(3)),
        "order_type": "market",
        "mode": "live" if re.search(r"\blive\b", text, re.I) else "paper",
    }
    limit = re.search(rf"\b(?:limit|at) \$?{_NUMBER}", text[m.end() :], re.I)
    if limit:
        args["order_type"] = "limit"
        args["limit_price"] = _amount(limit.group(1), limit.group(2))
    return "execute_trade", args


def _candles(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    m = re.search(r"\b(candles|chart|history)\b", text, re.I)
    if not m:
        return None
    tf = _TIMEFRAME.search(text)
    start, end = _range(text, now)
    tool = "request_backfill" if re.search(r"\bbackfill\b", text, re.I) else "get_candles"
    return tool, {
        "ticker": _ticker(text[m.end() :]),
        "timeframe": tf.group(1).lower() if tf else "1h",
        "start": start,
        "end": end,
    }


def _read(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    m = re.search(
        r"\b(?:show|read|open) (?:the )?(strategy|indicator) ([a-z_][a-z0-9_]*)", text, re.I
    )
    if m:
        return f"read_{m.group(1).lower()}", {"name": m.group(2)}
    return None


def _live_code(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    m = re.fullmatch(r"\s*(?:confirm|code)\s*:?\s*(\d{6})\s*", text, re.I)
    return ("confirm_trade", {"code": m.group(1)}) if m else None


def _skill(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    """Requests for a skill (explain a backtest, review risk, summarise the market)."""
    m = re.search(
        r"\bexplain\b.*\bbacktest\b(?: of| for)? (?:the )?(?:strategy )?([a-z_]\w*)", text, re.I
    )
    if m:
        tf = _TIMEFRAME.search(text)
        start, end = _range(text, now)
        return "skill_explain_backtest", {
            "strategy": m.group(1),
            "ticker": _ticker(text[m.end() :]),
            "timeframe": tf.group(1).lower() if tf else "1h",
            "start": start,
            "end": end,
        }
    if re.search(r"\b(risk|exposure|concentration)\b", text, re.I) and re.search(
        r"\b(position|portfolio|my)", text, re.I
    ):
        return "skill_review_risk", {}
    if re.search(r"\b(summar[iy]\w*|overview|brief)\b", text, re.I) and re.search(
        r"\b(market|watchlist)", text, re.I
    ):
        return "skill_market_summary", {}
    return None


_NAMED = re.compile(r"\b(?:called|named)\s+[`'\"]?([a-z_][a-z0-9_]*)", re.I)


def _delegated(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    """Requests for a subagent or workflow: write a strategy or an indicator, analyse the
    watchlist, sweep a strategy's parameters."""
    named = _NAMED.search(text)
    m = re.search(
        r"\b(write|create|make|build|code)\s+(?:me\s+)?(?:a|an|new)\s+(?:new\s+)?"
        r"(?:[\w-]+\s+){0,2}(strategy|indicator)\b",
        text,
        re.I,
    )
    if m:
        kind = m.group(2).lower()
        key = next(
            (
                k
                for k in ("rsi", "ema", "sma", "bollinger", "atr")
                if re.search(rf"\b{k}", text, re.I)
            ),
            kind,
        )
        name = named.group(1).lower() if named else f"my_{key}"
        if kind == "indicator":
            return "workflow_write_indicator", {"name": name, "request": text}
        args: JsonObject = {"name": name, "request": text}
        if re.search(r"\b(since|from)\b", text, re.I):  # the backtest's period
            args["start"], args["end"] = _range(text, now)
        return "agent_strategy_author", args
    if re.search(r"\banaly[sz]\w*\b", text, re.I) and re.search(
        r"\b(market|watchlist)", text, re.I
    ):
        return "agent_market_analyst", {"request": text}
    m = re.search(
        r"\b(?:sweep|optimi[sz]e|tune)\s+(?:my |the )?(?:strategy )?"
        r"(?!(?:my|the|portfolio|positions|strategy|strategies|risk)\b)([a-z_]\w*)",
        text,
        re.I,
    )
    if m:
        tf = _TIMEFRAME.search(text)
        start, end = _range(text, now)
        by = re.search(r"\bby (sharpe|sortino|total_return|cagr|profit_factor)\b", text, re.I)
        return "workflow_sweep", {
            "strategy": m.group(1),
            "ticker": _ticker(text[m.end() :]),
            "timeframe": tf.group(1).lower() if tf else "1h",
            "start": start,
            "end": end,
            "rank_by": by.group(1).lower() if by else "sharpe",
        }
    return None


def _remember(text: str, now: datetime) -> tuple[str, JsonObject] | None:
    m = re.match(r"\s*remember(?: that)?[:,]?\s+(.+)", text, re.I | re.S)
    return ("remember", {"fact": m.group(1).strip()}) if m else None


#: Tried in order; the first that recognises the request wins.
RULES: list[Rule] = [
    _live_code,
    _remember,
    _skill,
    _delegated,
    _kept_backtests,
    _backtest,
    _trade,
    _alert,
    _read,
    _candles,
    _price,
    _listing,
]


def plan(text: str, now: datetime | None = None) -> tuple[str, JsonObject] | None:
    """The tool call a plain request asks for, or None."""
    now = now or datetime.now(UTC)
    for rule in RULES:
        found = rule(text, now)
        if found is not None:
            return found
    return None


def _last_user_text(messages: list[Message]) -> str:
    for msg in reversed(messages):
        if msg["role"] == "user" and isinstance(msg["content"], str):
            return msg["content"]
    return ""


def _tool_results(messages: list[Message]) -> list[tuple[str, JsonValue, bool]]:
    """(tool name, result, is_error) of the latest round of tool results."""
    if not messages:
        return []
    last = messages[-1]
    if last["role"] != "user" or isinstance(last["content"], str):
        return []
    names: dict[str, str] = {}
    for msg in messages:
        if msg["role"] == "assistant":
            names |= {b["id"]: b["name"] for b in msg["content"] if b["type"] == "tool_use"}
    out: list[tuple[str, JsonValue, bool]] = []
    for block in last["content"]:
        content = block.get("content", "")
        if not isinstance(content, str):
            content = "".join(c["text"] for c in content if c["type"] == "text")
        try:
            value: JsonValue = json.loads(content)
        except ValueError:
            value = content
        out.append((names.get(block["tool_use_id"], "?"), value, bool(block.get("is_error"))))
    return out


def _money(x: object) -> str:
    return f"{float(x):,.2f}" if isinstance(x, int | float) else str(x)


def describe(tool: str, result: ToolResult | JsonValue) -> str:
    """One result in a sentence or a short list, read as its contract's type, the agent's
    tools' and the platform's own alike (a result of another shape raises
    ``ToolResultMismatch``)."""
    if isinstance(result, str):
        return result
    if isinstance(result, ToolResult):
        return _describe_result(result)
    report = _report_type(tool)
    if report is not None:
        return report.model_validate(result).text()
    contract = AGENT_TOOLS.get(tool) or PLATFORM_TOOLS.get(tool)
    if contract is not None:
        return _describe_result(contract.validate(result))
    return json.dumps(result)[:2000]


def _report_type(tool: str) -> type[Report] | None:
    """The result type of a skill, subagent or workflow ``tool`` (imported late: they run
    the model, which imports this module)."""
    from gateway.harness.delegates import reports

    return reports().get(tool)


_SHOWN_FIGURES = ("total_return", "sharpe", "max_drawdown", "win_rate", "trades", "final_equity")


def _figures(figures: dict[str, Figure]) -> str:
    return ", ".join(
        f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
        for k, v in figures.items()
        if k in _SHOWN_FIGURES
    )


def _files(kind: str, items: list[FileSummary]) -> str:
    if not items:
        return f"You have no {kind} yet."
    lines = [f"- {i.name}: {i.description}".rstrip(": ") for i in items]
    return f"Your {kind}:\n" + "\n".join(lines)


def _describe_result(result: ToolResult) -> str:
    """A tool's typed result in words (mypy holds this to the contracts' types)."""
    match result:
        case Price(ticker=ticker, last=last):
            return f"{ticker} last traded at {_money(last)}."
        case CandleSummary() | Backfilled():
            summary = result.model_dump(mode="json", exclude={"candles"})
            return ", ".join(f"{k} {v}" for k, v in summary.items()) + "."
        case Remembered(remembered=fact):
            return f"I will remember: {fact}"
        case StrategyList(strategies=items):
            return _files("strategies", items)
        case IndicatorList(indicators=items):
            return _files("indicators", items)
        case SweepRun():
            best = result.sweep[0] if result.sweep else None
            head = (
                f"Swept {result.combinations} combinations of {result.strategy}; "
                f"best by {result.rank_by}: {best.params if best else {}}"
            )
            return f"{head}: {_figures(best.figures() if best else {})}."
        case BacktestRun():
            head = (
                f"Backtest of {result.strategy} on {result.ticker} {result.timeframe} "
                f"over {result.candles} candles"
            )
            return f"{head}: {_figures(result.figures)}."
        case BacktestList(runs=runs, skipped=skipped):
            unread = f"\n({skipped} kept results could not be read)" if skipped else ""
            if not runs:
                return "You have no backtests kept yet." + unread
            lines = [f"- {r.line()}" for r in runs]
            if result.more:
                lines.append(f"…and {result.more} older.")
            return "Your backtests, newest first:\n" + "\n".join(lines) + unread
        case Alert():
            return (
                f"Alert set: {result.ticker} {result.condition} {_money(result.price)} "
                f"(id {result.id})."
            )
        case AlertList(alerts=alerts):
            if not alerts:
                return "You have no alerts."
            return "Your alerts:\n" + "\n".join(
                f"- {a.ticker} {a.condition} {_money(a.price)} "
                f"({'active' if a.triggered_at is None else 'triggered'})"
                for a in alerts
            )
        case LiveTradeRequest():
            return (
                f"Live order {result.summary}: a six-digit code was sent to your channel; "
                "send “confirm CODE” to place it."
            )
        case LiveTrade(order=order):
            return (
                f"Live order placed: {order.side} {order.quantity} {order.ticker} at "
                f"{order.price} ({order.status})."
            )
        case PaperTrade(order=order, fill=fill):
            price = f", filled at {_money(fill.price)}" if fill is not None else ""
            return (
                f"Order placed: {order.side} {order.quantity} {order.ticker} {order.type}, "
                f"{order.status}{price} (id {order.id})."
            )
        case Account():
            head = f"Cash {_money(result.cash)}, equity {_money(result.equity)}."
            return head + "".join(
                f"\n- {p.ticker}: {p.quantity} (PnL {_money(p.unrealised_pnl)})"
                for p in result.positions
            )
        case Watchlist(watchlist=tickers):
            return "Watchlist: " + (", ".join(tickers) or "empty") + "."
        case SourceFile(code=code):
            return f"```python\n{code}\n```"
        case Report():
            return result.text()
    return result.for_model()[:2000]


class OfflineModel:
    """Maps a plain request to one tool call, then describes what came back."""

    name = NAME
    offline = True

    async def reply(
        self,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        on_text: OnText | None = None,
    ) -> ModelReply:
        results = _tool_results(messages)
        if results:
            text = "\n".join(
                ("That did not work: " if failed else "") + describe(tool, value)
                for tool, value, failed in results
            )
            return await self._say(text, on_text)
        found = plan(_last_user_text(messages))
        available = {t.name for t in tools}
        if found is None or found[0] not in available:
            return await self._say(HELP, on_text)
        tool, args = found
        return ModelReply(
            text="", tool_calls=[ToolCall(f"call_{uuid.uuid4().hex[:12]}", tool, args)], model=NAME
        )

    async def _say(self, text: str, on_text: OnText | None) -> ModelReply:
        text = f"{LABEL} {text}"
        if on_text is not None:
            for word in re.findall(r"\S+\s*", text):  # streamed like a model's tokens
                await on_text(word)
        return ModelReply(text=text, model=NAME, output_tokens=len(text) // 4)
