"""Price alerts: rules the platform's stream engine watches (so the agent may sleep), or,
for an agent on its own, alerts it checks against the candles it watches."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agent.alerts import Alert, AlertError, alert_of, alert_rule
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

    @box.tool(c.LIST_ALERTS, "The person's alerts, active and triggered.")
    async def list_alerts() -> c.AlertList:
        if person.rules is not None:
            records = await person.rules.list()
            person.alerts.mirror([a for a in map(alert_of, records) if a is not None])
        return c.AlertList(alerts=[_published(a) for a in person.alerts.all()])

    @box.tool(c.DELETE_ALERT, "Delete one alert by its id.")
    async def delete_alert(alert_id: Annotated[str, Field(max_length=64)]) -> c.Alert:
        if person.rules is None:
            return _published(person.alerts.delete(alert_id))
        if not alert_id.startswith("alert-"):
            raise AlertError(f"no alert with id {alert_id!r} (orders: use cancel_order)")
        removed = await person.rules.delete(alert_id)
        alert = alert_of(removed) if removed is not None else None
        person.alerts.discard(alert_id)
        if alert is None:
            raise AlertError(f"no alert with id {alert_id!r}; list_alerts shows them")
        return _published(alert)
