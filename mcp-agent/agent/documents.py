"""The person's own documents in the workspace: profile, instructions, watchlist, chart state.

Each is a small file at the workspace's top level, so every change is a
commit like any other (``workspace_history`` shows them too).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.workspace import Workspace, WorkspaceError
from dexorder.contracts.chat import JsonObject
from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe


class Profile(BaseModel):
    """Trading preferences the agent takes into account."""

    model_config = ConfigDict(extra="forbid")

    style: str = "undecided"
    risk_tolerance: Literal["low", "medium", "high"] = "medium"
    preferred_timeframes: list[str] = ["1h", "4h"]
    base_currency: str = "USDT"
    notes: str = ""


class WorkspaceState(BaseModel):
    """What the person is looking at: chart ticker and timeframe."""

    model_config = ConfigDict(extra="forbid")

    chart_ticker: str = "BINANCE:BTC/USDT"
    chart_timeframe: str = "1h"


FILES = {
    "profile": "profile.json",
    "instructions": "instructions.md",
    "watchlist": "watchlist.json",
    "state": "workspace_state.json",
    "summary": "conversation_summary.md",
}


class Documents:
    """Reads and writes the documents of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace

    def _read(self, key: str) -> str | None:
        path = self.ws.root / FILES[key]
        return path.read_text() if path.is_file() else None

    def profile(self) -> Profile:
        text = self._read("profile")
        return Profile.model_validate_json(text) if text else Profile()

    def set_profile(self, changes: JsonObject) -> Profile:
        try:
            profile = Profile.model_validate({**self.profile().model_dump(), **changes})
        except ValidationError as exc:
            raise WorkspaceError(_problems(exc)) from None
        self.ws.write_file(FILES["profile"], profile.model_dump_json(indent=2), "Update profile")
        return profile

    def instructions(self) -> str:
        return self._read("instructions") or ""

    def set_instructions(self, text: str) -> None:
        self.ws.write_file(FILES["instructions"], text, "Update instructions")

    def watchlist(self) -> list[str]:
        text = self._read("watchlist")
        return list(json.loads(text)) if text else ["BINANCE:BTC/USDT", "BINANCE:ETH/USDT"]

    def set_watchlist(self, tickers: list[str]) -> list[str]:
        clean: list[str] = []
        for t in tickers:
            try:
                ticker = str(Ticker.parse(t))
            except InvalidTicker as exc:
                raise WorkspaceError(str(exc)) from None
            if ticker not in clean:
                clean.append(ticker)
        if len(clean) > 200:
            raise WorkspaceError(f"a watchlist holds at most 200 tickers ({len(clean)} given)")
        before = set(self.watchlist())
        added = sorted(set(clean) - before)
        removed = sorted(before - set(clean))
        message = (
            "Update watchlist"
            + (f": +{', '.join(added)}" if added else "")
            + (f" -{', '.join(removed)}" if removed else "")
        )
        self.ws.write_file(FILES["watchlist"], json.dumps(clean, indent=2), message)
        return clean

    def state(self) -> WorkspaceState:
        text = self._read("state")
        return WorkspaceState.model_validate_json(text) if text else WorkspaceState()

    def set_chart(self, ticker: str, timeframe: str) -> WorkspaceState:
        try:
            state = WorkspaceState(
                chart_ticker=str(Ticker.parse(ticker)),
                chart_timeframe=Timeframe.parse(timeframe).value,
            )
        except (InvalidTicker, InvalidTimeframe) as exc:
            raise WorkspaceError(str(exc)) from None
        self.ws.write_file(
            FILES["state"], state.model_dump_json(indent=2), f"Chart {ticker} {timeframe}"
        )
        return state

    def summary(self) -> str:
        return self._read("summary") or ""

    def set_summary(self, text: str) -> None:
        self.ws.write_file(FILES["summary"], text, "Update conversation summary")


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
