"""Price alerts (the platform's stream engine watches them; the agent keeps them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agent.person import PersonAgent
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c


def register(box: ToolBox, person: PersonAgent) -> None:
    @box.tool(c.SET_ALERT, "Alert the person when a ticker's price goes above or below a level.")
    async def set_alert(
        ticker: Annotated[str, Field(description="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
        condition: Literal["above", "below"],
        price: Annotated[float, Field(gt=0)],
        note: Annotated[str, Field(max_length=500)] = "",
    ) -> c.Alert:
        alert = person.alerts.add(ticker, condition, price, note)
        if person.feed is not None:
            await person.feed.watch(alert.ticker)
        return c.Alert.model_validate(alert.model_dump())

    @box.sync_tool(c.LIST_ALERTS, "The person's alerts, active and triggered.")
    def list_alerts() -> c.AlertList:
        return c.AlertList.model_validate({"alerts": [a.model_dump() for a in person.alerts.all()]})

    @box.sync_tool(c.DELETE_ALERT, "Delete one alert by its id.")
    def delete_alert(alert_id: Annotated[str, Field(max_length=64)]) -> c.Alert:
        return c.Alert.model_validate(person.alerts.delete(alert_id).model_dump())
