"""The skill registry finds every module of the skills package that defines ``SKILL``:
adding a skill is adding one module (and its test beside this one)."""

from __future__ import annotations

import pkgutil

import gateway.harness.skills as package
from gateway.harness.delegates import names, reports, specs
from gateway.harness.skills.registry import PREFIX, choose, skills


def test_every_module_with_a_skill_is_found() -> None:
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - {"registry"}
    found = skills()
    assert set(found) == {PREFIX + m for m in modules}
    assert {"skill_explain_backtest", "skill_review_risk", "skill_market_summary"} <= set(found)
    for name, skill in found.items():
        assert skill.prompt and skill.tools and skill.description
        assert reports()[name] is skill.output  # its typed output, for the offline model
        assert skill.spec().input_schema["type"] == "object"


def test_the_router_picks_a_skill_by_the_request() -> None:
    pick = choose("review my positions' risk")
    assert pick is not None and pick.name == "review_risk"
    pick = choose("summarise the market for my watchlist")
    assert pick is not None and pick.name == "market_summary"
    pick = choose("explain the backtest of sma_cross")
    assert pick is not None and pick.name == "explain_backtest"
    assert choose("what is the price of BTC") is None


def test_a_delegate_is_offered_only_with_the_tools_it_needs() -> None:
    offered = {s.name for s in specs({"get_positions", "get_price"})}
    assert offered == {"skill_review_risk", "skill_market_summary"}
    assert "agent_strategy_author" not in offered
    everything = {"write_strategy", "write_indicator", "run_backtest", "read_strategy"}
    assert {"agent_strategy_author", "workflow_sweep"} <= {s.name for s in specs(everything)}
    assert {s.name for s in specs(everything)} <= names()
