"""Price alerts: rules the platform's stream engine watches (so the agent may sleep), or,
for an agent on its own, alerts it checks against the candles it watches."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agent.alerts import (
    Alert,
    AlertError,
    alert_of,
    alert_rule,
    market_alert_of,
    market_rule,
)
from agent.person import PersonAgent
from agent.rules_client import new_rule_id
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c


def _published(alert: Alert) -> c.Alert:
    return c.Alert.model_validate(alert.model_dump())


def register(box: ToolBox, person: PersonAgent) -> None:
    @box.tool(c.SET_ALERT, "Alert the person when a ticker's price goes above or below a level.")
    async def set_alert(
        ticker: Annotated[str, Field(description="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
        condition: Literal["above", "below"],
        price: Annotated[float, Field(gt=0)],
        note: Annotated[str, Field(max_length=500)] = "",
    ) -> c.Alert:
        if person.rules is None:  # on its own: this agent watches
            alert = person.alerts.add(ticker, condition, price, note)
            if person.feed is not None:
                await person.feed.watch(alert.ticker)
            return _published(alert)
        rule = alert_rule(person.user, ticker, condition, price, note, new_rule_id("alert"))
        watched = alert_of(await person.rules.put(rule))
        assert watched is not None  # a price alert's rule
        person.alerts.put(watched)
        return _published(watched)

    @box.tool(
        c.SET_MARKET_ALERT,
        "Alert the person when a ticker moves percent % within window_s seconds "
        "(kind percent_move; direction up, down or either), or when a closed candle's "
        "volume is over multiple times its average of the lookback candles before it "
        "(kind volume_spike).",
    )
    async def set_market_alert(
        ticker: Annotated[str, Field(description="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
        kind: Literal["percent_move", "volume_spike"],
        percent: Annotated[float | None, Field(gt=0, le=1000)] = None,
        window_s: Annotated[int | None, Field(ge=1, le=86_400)] = None,
        direction: Literal["up", "down", "either"] = "either",
        timeframe: Literal["1m", "5m", "15m", "1h", "4h", "1d"] = "1m",
        multiple: Annotated[float | None, Field(gt=0, le=1000)] = None,
        lookback: Annotated[int, Field(ge=1, le=500)] = 20,
        note: Annotated[str, Field(max_length=500)] = "",
    ) -> c.MarketAlert:
        if person.rules is None:
            raise AlertError(
                "moves and volume spikes are watched by the platform's stream engine; "
                "this agent runs on its own (price alerts work: set_alert)"
            )
        rule = market_rule(
            person.user,
            ticker,
            kind,
            new_rule_id("alert"),
            percent=percent,
            window_s=window_s,
            direction=direction,
            timeframe=timeframe,
            multiple=multiple,
            lookback=lookback,
            note=note,
        )
        watched = market_alert_of(await person.rules.put(rule))
        assert watched is not None  # a move's or a volume spike's rule
        return watched

    @box.tool(c.LIST_ALERTS, "The person's alerts, active and triggered.")
    async def list_alerts() -> c.AlertList:
        market: list[c.MarketAlert] = []
        if person.rules is not None:
            records = await person.rules.list()
            person.alerts.mirror([a for a in map(alert_of, records) if a is not None])
            market = [a for a in map(market_alert_of, records) if a is not None]
        alerts = [_published(a) for a in person.alerts.all()]
        return c.AlertList(alerts=alerts, market_alerts=market)

    @box.tool(c.DELETE_ALERT, "Delete one alert by its id.")
    async def delete_alert(
        alert_id: Annotated[str, Field(max_length=64)],
    ) -> c.Alert | c.MarketAlert:
        if person.rules is None:
            return _published(person.alerts.delete(alert_id))
        if not alert_id.startswith("alert-"):
            raise AlertError(f"no alert with id {alert_id!r} (orders: use cancel_order)")
        removed = await person.rules.delete(alert_id)
        person.alerts.discard(alert_id)
        if removed is not None:
            alert = alert_of(removed)
            if alert is not None:
                return _published(alert)
            market = market_alert_of(removed)
            if market is not None:
                return market
        raise AlertError(f"no alert with id {alert_id!r}; list_alerts shows them")
