"""The workspace's history, and the watchlist."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from agent.person import PersonAgent
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c


def register(box: ToolBox, person: PersonAgent) -> None:
    docs, ws = person.documents, person.workspace

    @box.sync_tool(
        c.WORKSPACE_HISTORY,
        "Commits of the workspace, newest first; only those of one file if given.",
    )
    def workspace_history(
        path: Annotated[str | None, Field(description="e.g. strategies/sma_cross.py")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> c.History:
        return c.History(
            commits=[
                c.Revision(commit=r.commit, when=r.when, message=r.message)
                for r in ws.history(path, limit)
            ]
        )

    @box.sync_tool(c.REVERT_FILE, "Put a workspace file back as it was at a commit (a new commit).")
    def revert_file(
        path: Annotated[str, Field(description="e.g. strategies/sma_cross.py")],
        commit: Annotated[str, Field(description="commit id from workspace_history")],
    ) -> c.RevertedFile:
        return c.RevertedFile(path=path, commit=ws.revert_file(path, commit))

    @box.sync_tool(c.GET_WATCHLIST, "The tickers on the person's watchlist.")
    def get_watchlist() -> c.Watchlist:
        return c.Watchlist(watchlist=docs.watchlist())

    @box.sync_tool(
        c.SET_WATCHLIST, "Replace the watchlist with these tickers (EXCHANGE:BASE/QUOTE)."
    )
    def set_watchlist(
        tickers: Annotated[list[str], Field(max_length=200, description="e.g. BINANCE:BTC/USDT")],
    ) -> c.Watchlist:
        return c.Watchlist(watchlist=docs.set_watchlist(tickers))
