"""``dexorder watch``: live candles of one ticker as a refreshing table."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dexorder.client import subscribe
from dexorder.config import Settings
from dexorder.schemas import Candle


class CandleTable:
    """The newest closed candles and the open one, as a table."""

    def __init__(self, ticker: str, timeframe: str, keep: int) -> None:
        self.title = f"{ticker} {timeframe}"
        self.keep = keep
        self.closed: dict[int, Candle] = {}
        self.current: Candle | None = None

    def update(self, candle: Candle) -> None:
        if candle.closed:
            self.closed[candle.open_time] = candle
            for old in sorted(self.closed)[: -self.keep]:
                del self.closed[old]
            if self.current is not None and self.current.open_time <= candle.open_time:
                self.current = None
        else:
            self.current = candle

    def render(self) -> Table:
        table = Table(
            "open time (UTC)",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "trades",
            "",
            title=self.title,
        )
        shown = [self.closed[k] for k in sorted(self.closed)]
        if self.current is not None:
            shown.append(self.current)
        for c in shown:
            when = datetime.fromtimestamp(c.open_time / 1000, UTC).strftime("%Y-%m-%d %H:%M")
            table.add_row(
                when,
                f"{c.open:.8g}",
                f"{c.high:.8g}",
                f"{c.low:.8g}",
                f"{c.close:.8g}",
                f"{c.volume:.6g}",
                str(c.trades),
                "closed" if c.closed else "[yellow]live[/yellow]",
            )
        return table


async def watch(
    cfg: Settings, ticker: str, timeframe: str, keep: int, count: int | None, console: Console
) -> None:
    """Show live candles until interrupted, or until ``count`` updates arrived."""
    table = CandleTable(ticker, timeframe, keep)
    seen = 0
    with Live(table.render(), console=console, refresh_per_second=4) as live:
        async for candle in subscribe(ticker, timeframe, config=cfg):
            table.update(candle)
            live.update(table.render())
            seen += 1
            if count is not None and seen >= count:
                return
