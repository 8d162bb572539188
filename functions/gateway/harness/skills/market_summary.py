"""Skill: summarise the market for the person's watchlist — move, range, alerts near."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from dexorder.contracts.agent_tools import AlertList, Watchlist
from dexorder.contracts.chat import JsonObject
from dexorder.contracts.platform_tools import CandleSummary
from gateway.harness.reports import Report
from gateway.harness.skills.registry import Call, Gathered, Skill, first

#: the most tickers looked at in one summary (each is a candles call)
MOST = 5


class Ask(BaseModel):
    timeframe: str = Field("1h", description="1m 5m 15m 1h 4h 1d")
    days: int = Field(7, ge=1, le=90)
    end: str | None = Field(None, description="YYYY-MM-DD; default now")


class TickerNote(BaseModel):
    ticker: str
    last: float
    change: float
    high: float
    low: float
    alerts: list[str]


class MarketSummary(Report):
    period: str
    tickers: list[TickerNote]
    overview: str

    def text(self) -> str:
        lines = [self.overview] + [
            f"- {t.ticker}: {t.last:,.2f} ({t.change:+.2%}), range {t.low:,.2f} to {t.high:,.2f}"
            + (f"; alerts {', '.join(t.alerts)}" if t.alerts else "")
            for t in self.tickers
        ]
        return "\n".join(lines)


def window(ask: Ask) -> tuple[str, str]:
    end = datetime.fromisoformat(ask.end).replace(tzinfo=UTC) if ask.end else datetime.now(UTC)
    start = end - timedelta(days=ask.days)
    return start.strftime("%Y-%m-%dT%H:%M"), end.strftime("%Y-%m-%dT%H:%M")


async def gather(ask: Ask, call: Call) -> Gathered:
    found: Gathered = [("get_watchlist", await call("get_watchlist", {}))]
    found.append(("list_alerts", await call("list_alerts", {})))
    watchlist = first(found, Watchlist)
    start, end = window(ask)
    for ticker in (watchlist.watchlist if watchlist else [])[:MOST]:
        args: JsonObject = {
            "ticker": ticker,
            "timeframe": ask.timeframe,
            "start": start,
            "end": end,
        }
        found.append(("get_candles", await call("get_candles", args)))
    return found


def offline(ask: Ask, found: Gathered) -> MarketSummary:
    alerts = first(found, AlertList)
    notes = []
    for _, o in found:
        if not isinstance(o.value, CandleSummary) or not o.value.first_close:
            continue
        c = o.value
        near = [
            f"{a.condition} {a.price:,.0f}"
            for a in (alerts.alerts if alerts else [])
            if a.ticker == c.ticker and a.triggered_at is None
        ]
        change = c.last_close / c.first_close - 1
        notes.append(
            TickerNote(
                ticker=c.ticker,
                last=c.last_close,
                change=change,
                high=c.high,
                low=c.low,
                alerts=near,
            )
        )
    start, end = window(ask)
    if notes:
        best = max(notes, key=lambda n: n.change)
        worst = min(notes, key=lambda n: n.change)
        overview = (
            f"Over the last {ask.days} days: {best.ticker} moved most up ({best.change:+.2%}), "
            f"{worst.ticker} least ({worst.change:+.2%})."
        )
    else:
        failed = "; ".join(o.as_text() for _, o in found if o.is_error)
        overview = "Your watchlist is empty." if not failed else f"No candles: {failed}"
    return MarketSummary(period=f"{start} to {end}", tickers=notes, overview=overview)


SKILL = Skill(
    name="market_summary",
    description="Summarise the market for the person's watchlist: each market's move and "
    "range over recent days, and the alerts set on it.",
    prompt="You summarise markets for a trader: for each market of their watchlist its move "
    "and range over the period, what stands out, and how close their alerts are. Short.",
    tools=frozenset({"get_watchlist", "list_alerts", "get_candles", "get_price"}),
    input=Ask,
    output=MarketSummary,
    gather=gather,
    offline=offline,
    asks=re.compile(r"\b(summar[iy]\w*|overview)\b.*\b(market|watchlist)", re.I),
)
