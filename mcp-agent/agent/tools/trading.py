"""Orders: paper orders (market, and resting ones the platform watches); live orders wait
for the person's code."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from agent.person import PersonAgent
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c
from dexorder.contracts.rules import BadRule, decode_fired
from dexorder.tokens import TokenClaims


def _service_call(ctx: Context) -> bool:
    """Whether the call came over HTTP with a service token (the agent's auth put the
    verified claims in the request's state)."""
    try:
        request = ctx.request_context.request
    except ValueError:
        return False
    state = getattr(request, "scope", {}).get("state", {})
    claims = state.get("token") if isinstance(state, dict) else None
    return isinstance(claims, TokenClaims) and claims.kind == "service"


def register(box: ToolBox, person: PersonAgent) -> None:
    @box.tool(
        c.EXECUTE_TRADE,
        "Place an order. Paper (default): market fills at once; limit, stop_loss and "
        "take_profit rest until the price reaches limit_price (the platform watches it, "
        "fills show in get_positions). Live needs the person's confirmation code from "
        "their channel (see confirm_trade).",
    )
    async def execute_trade(
        ticker: Annotated[str, Field(description="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
        side: Literal["buy", "sell"],
        quantity: Annotated[float, Field(gt=0, description="in the base currency, e.g. 0.1 BTC")],
        order_type: Literal["market", "limit", "stop_loss", "take_profit"] = "market",
        limit_price: Annotated[
            float | None,
            Field(gt=0, description="the price a limit, stop_loss or take_profit waits for"),
        ] = None,
        mode: Literal["paper", "live"] = "paper",
    ) -> c.PaperTrade | c.LiveTradeRequest:
        if mode == "live":
            if order_type in ("stop_loss", "take_profit"):
                raise ValueError(f"{order_type} orders are paper only")
            return await person.live.request(ticker, side, quantity, order_type, limit_price)
        return await person.broker.execute(ticker, side, quantity, order_type, limit_price)

    @box.tool(
        c.CONFIRM_TRADE, "Place a live order once the person has sent back its confirmation code."
    )
    async def confirm_trade(
        code: Annotated[str, Field(pattern=r"^[0-9]{6}$", description="the code the person sent")],
        confirmation_id: Annotated[
            str | None, Field(max_length=64, description="omit when only one order waits")
        ] = None,
    ) -> c.LiveTrade:
        return await person.live.confirm(confirmation_id, code)

    @box.sync_tool(
        c.GET_POSITIONS, "Cash, positions with PnL, equity and open orders of the paper account."
    )
    def get_positions() -> c.Account:
        return c.Account.model_validate(person.broker.book.summary())

    @box.tool(c.CANCEL_ORDER, "Cancel an open paper order by its id.")
    async def cancel_order(order_id: Annotated[str, Field(max_length=64)]) -> c.Order:
        return await person.broker.cancel(order_id)

    @box.tool(
        c.APPLY_RULE_FIRED,
        "Platform only: apply a fired order rule (RuleFired JSON) to the paper account.",
    )
    async def apply_rule_fired(
        fired: Annotated[str, Field(max_length=16_384, description="the RuleFired, as JSON")],
        ctx: Context,
    ) -> c.RuleApplied:
        # the platform calls it with a service token; a person's own client (a personal
        # access token) could otherwise fill their orders at any price it made up
        if not _service_call(ctx):
            raise ValueError("only the platform applies fired rules")
        try:
            rule_fired = decode_fired(fired)
        except BadRule as exc:
            raise ValueError(str(exc)) from None
        order, fill = await person.broker.apply_fired(rule_fired)
        return c.RuleApplied(order=order, fill=fill)
