"""Skill: review the risk of the person's positions — exposure, concentration, losses."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from dexorder.contracts.agent_tools import Account
from gateway.harness.reports import Report
from gateway.harness.skills.registry import Call, Gathered, Skill, first


class Ask(BaseModel):
    #: a position over this share of equity is called concentrated
    max_share: float = Field(0.25, gt=0, le=1)


class PositionRisk(BaseModel):
    ticker: str
    value: float
    share_of_equity: float
    unrealised_pnl: float


class RiskReview(Report):
    equity: float
    cash: float
    positions: list[PositionRisk]
    warnings: list[str]
    summary: str

    def text(self) -> str:
        lines = [self.summary]
        lines += [
            f"- {p.ticker}: {p.value:,.2f} ({p.share_of_equity:.0%} of equity, "
            f"PnL {p.unrealised_pnl:,.2f})"
            for p in self.positions
        ]
        return "\n".join([*lines, *[f"- Warning: {w}" for w in self.warnings]])


async def gather(ask: Ask, call: Call) -> Gathered:
    return [("get_positions", await call("get_positions", {}))]


def offline(ask: Ask, found: Gathered) -> RiskReview:
    account = first(found, Account)
    if account is None:
        failed = "; ".join(o.as_text() for _, o in found) or "no account"
        return RiskReview(equity=0, cash=0, positions=[], warnings=[failed], summary="No review.")
    equity = account.equity or 1.0
    positions = [
        PositionRisk(
            ticker=p.ticker,
            value=p.quantity * p.last_price,
            share_of_equity=abs(p.quantity * p.last_price) / equity,
            unrealised_pnl=p.unrealised_pnl,
        )
        for p in account.positions
    ]
    warnings = [
        f"{p.ticker} is {p.share_of_equity:.0%} of equity (over {ask.max_share:.0%})"
        for p in positions
        if p.share_of_equity > ask.max_share
    ]
    warnings += [
        f"{p.ticker} is losing {-p.unrealised_pnl:,.2f}" for p in positions if p.unrealised_pnl < 0
    ]
    invested = sum(abs(p.value) for p in positions)
    summary = (
        f"Equity {account.equity:,.2f} {account.quote}: {invested / equity:.0%} invested in "
        f"{len(positions)} position(s), {account.cash:,.2f} in cash."
        if positions
        else f"No open positions: all {account.cash:,.2f} {account.quote} is in cash."
    )
    return RiskReview(
        equity=account.equity,
        cash=account.cash,
        positions=positions,
        warnings=warnings,
        summary=summary,
    )


SKILL = Skill(
    name="review_risk",
    description="Review the risk of the person's paper positions: exposure, concentration, "
    "losing positions, cash.",
    prompt="You review a trader's positions for risk: how much of their equity each holds, "
    "concentration, losing positions, leverage, cash left. Be short and concrete.",
    tools=frozenset({"get_positions", "get_price"}),
    input=Ask,
    output=RiskReview,
    gather=gather,
    offline=offline,
    asks=re.compile(r"\b(risk|exposure|concentrat)", re.I),
)
