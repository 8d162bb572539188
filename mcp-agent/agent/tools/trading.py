"""Orders: paper fills against live candles; live orders wait for the person's code."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agent.person import PersonAgent
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c


def register(box: ToolBox, person: PersonAgent) -> None:
    @box.tool(
        c.EXECUTE_TRADE,
        "Place an order: paper (default) fills against live candles; live needs the "
        "person's confirmation code from their channel (see confirm_trade).",
    )
    async def execute_trade(
        ticker: Annotated[str, Field(description="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
        side: Literal["buy", "sell"],
        quantity: Annotated[float, Field(gt=0, description="in the base currency, e.g. 0.1 BTC")],
        order_type: Literal["market", "limit"] = "market",
        limit_price: Annotated[float | None, Field(gt=0)] = None,
        mode: Literal["paper", "live"] = "paper",
    ) -> c.PaperTrade | c.LiveTradeRequest:
        if mode == "live":
            parked = await person.live.request(ticker, side, quantity, order_type, limit_price)
            return c.LiveTradeRequest.model_validate(parked)
        placed = await person.broker.execute(ticker, side, quantity, order_type, limit_price)
        return c.PaperTrade.model_validate(placed)

    @box.tool(
        c.CONFIRM_TRADE, "Place a live order once the person has sent back its confirmation code."
    )
    async def confirm_trade(
        code: Annotated[str, Field(pattern=r"^[0-9]{6}$", description="the code the person sent")],
        confirmation_id: Annotated[
            str | None, Field(max_length=64, description="omit when only one order waits")
        ] = None,
    ) -> c.LiveTrade:
        return c.LiveTrade.model_validate(await person.live.confirm(confirmation_id, code))

    @box.sync_tool(
        c.GET_POSITIONS, "Cash, positions with PnL, equity and open orders of the paper account."
    )
    def get_positions() -> c.Account:
        return c.Account.model_validate(person.broker.book.summary())

    @box.sync_tool(c.CANCEL_ORDER, "Cancel an open paper order by its id.")
    def cancel_order(order_id: Annotated[str, Field(max_length=64)]) -> c.Order:
        return c.Order.model_validate(person.broker.cancel(order_id))
