"""The ``dexorder`` command.

* ``dexorder up [--detach]``: start the platform on this machine.
* ``dexorder status``: each part, its address and health; non-zero exit if any is unhealthy.
* ``dexorder down``: stop a platform started with ``up --detach``.
* ``dexorder watch BINANCE:BTC/USDT --tf 1m``: live candles as a refreshing table.
* ``dexorder history BINANCE:BTC/USDT --tf 1h --from 2024-01-01``: backfill, then print or save.
* ``dexorder lake status|compact|expire``: look after the lake.
* ``dexorder agent --user alice``: one person's agent (MCP server) on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dexorder.config import Settings
from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe
from launcher import freshness, sandbox_check
from launcher.console import config_or_exit, console, err
from launcher.lake import app as lake_app
from launcher.parts import plan, probe
from launcher.supervisor import PartFailed, Supervisor, state_file

app = typer.Typer(
    help="DexOrder: an AI trading platform. Runs the platform on this machine.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(lake_app, name="lake")


def _read_state(cfg: Settings) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(state_file(cfg.home).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _child_env(cfg: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["DEXORDER_HOME"] = str(cfg.home)
    if not cfg.kafka.bootstrap_servers:
        env["DEXORDER_KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{cfg.kafka.embedded_port}"
    return env


@app.command()
def up(
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", help="Run in the background; stop with `dexorder down`."),
    ] = False,
) -> None:
    """Start the whole platform on this machine (embedded defaults), in the foreground."""
    cfg = config_or_exit()
    state = _read_state(cfg)
    if state and _alive(int(state["pid"])):  # type: ignore[call-overload]
        err.print(
            f"[red]error:[/red] a platform is already running from {cfg.home} "
            f"(pid {state['pid']}); stop it with `dexorder down`"
        )
        raise typer.Exit(1)
    if detach:
        _up_detached(cfg)
        return
    console.print(f"DexOrder platform, home {cfg.home}")
    sup = Supervisor(cfg, plan(cfg), _child_env(cfg), say=console.print)
    signal.signal(signal.SIGTERM, sup.request_stop)
    signal.signal(signal.SIGINT, sup.request_stop)
    try:
        sup.start()
        console.print(
            f"[green]platform is up[/green] — Ctrl-C stops it; logs in {cfg.home / 'logs'}"
        )
        sup.watch()
    except PartFailed as exc:
        err.print(f"[red]error:[/red] {exc}")
        sup.stop()
        raise typer.Exit(1) from None
    sup.stop()
    console.print("platform stopped")


def _up_detached(cfg: Settings) -> None:
    log_dir = cfg.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "platform.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "launcher", "up"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DEXORDER_HOME": str(cfg.home)},
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err.print(
                f"[red]error:[/red] the platform failed to start; see {log_dir / 'platform.log'}"
            )
            raise typer.Exit(1)
        state = _read_state(cfg)
        if state and state.get("pid") == proc.pid and state.get("ready"):
            _print_status(cfg, state)
            console.print(
                f"platform running in the background (pid {proc.pid}); stop it with `dexorder down`"
            )
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    err.print("[red]error:[/red] the platform did not start within 180s")
    raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop a platform started with `dexorder up --detach`."""
    cfg = config_or_exit()
    state = _read_state(cfg)
    if not state or not _alive(int(state["pid"])):  # type: ignore[call-overload]
        console.print("no platform is running")
        state_file(cfg.home).unlink(missing_ok=True)
        return
    pid = int(state["pid"])  # type: ignore[call-overload]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        err.print(f"[red]error:[/red] the platform (pid {pid}) did not stop within 60s")
        raise typer.Exit(1)
    console.print("platform stopped")


def _probe_part(part: dict[str, object], state: dict[str, object] | None) -> tuple[bool, str]:
    if state is not None and part.get("pid") is None:
        return False, "not started yet"
    return probe(str(part["probe"]))


@dataclass(frozen=True)
class PlatformCheck:
    """A row of ``dexorder status`` that is no part: a property of the platform as a whole."""

    key: str  #: its key in ``--json``
    label: str
    address: str
    ok: bool
    detail: str
    good: str  #: the word for ok in the table
    bad: str


#: The ``--json`` keys of the platform checks (null when there is nothing to check yet).
CHECK_KEYS = ("market_data", "sandbox")


def _platform_checks(cfg: Settings, parts: list[dict[str, object]]) -> list[PlatformCheck]:
    checks = []
    # whether ticks get through the parts (None: nothing to compare yet)
    fresh = freshness.check(parts, cfg.market_data.stale_after_s)
    if fresh is not None:
        checks.append(
            PlatformCheck("market_data", "market data", freshness.ADDRESS, *fresh, "fresh", "stale")
        )
    ok, detail = sandbox_check.check(cfg)
    checks.append(
        PlatformCheck("sandbox", "sandbox", sandbox_check.ADDRESS, ok, detail, "ready", "refusing")
    )
    return checks


def _print_status(cfg: Settings, state: dict[str, object] | None) -> bool:
    table = Table("part", "address", "health", title=f"DexOrder at {cfg.home}")
    healthy = True
    parts = state["parts"] if state else [p.to_json() for p in plan(cfg)]
    for part in parts:  # type: ignore[attr-defined]
        ok, detail = _probe_part(part, state)
        healthy &= ok
        table.add_row(
            part["name"],
            part["address"],
            f"[green]healthy[/green] {detail}" if ok else f"[red]down[/red] {detail}",
        )
    for check in _platform_checks(cfg, parts):  # type: ignore[arg-type]
        healthy &= check.ok
        table.add_row(
            check.label,
            check.address,
            f"[green]{check.good}[/green] {check.detail}"
            if check.ok
            else f"[red]{check.bad}[/red] {check.detail}",
        )
    console.print(table)
    return healthy


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each part, its address and whether it is healthy (exit 1 if any is not); also
    whether market data is fresh and whether people's code can run (the sandbox)."""
    cfg = config_or_exit()
    state = _read_state(cfg)
    if as_json:
        parts = state["parts"] if state else [p.to_json() for p in plan(cfg)]
        out = []
        for part in parts:  # type: ignore[attr-defined]
            ok, detail = _probe_part(part, state)
            out.append(
                {"name": part["name"], "address": part["address"], "healthy": ok, "detail": detail}
            )
        checks = _platform_checks(cfg, parts)  # type: ignore[arg-type]
        found = {c.key: {"healthy": c.ok, "detail": c.detail} for c in checks}
        print(
            json.dumps(
                {
                    "running": bool(state),
                    "ready": bool(state and state.get("ready")),
                    "parts": out,
                    **{key: found.get(key) for key in CHECK_KEYS},
                },
                indent=2,
            )
        )
        healthy = (
            bool(state and state.get("ready"))
            and all(p["healthy"] for p in out)
            and all(c.ok for c in checks)
        )
    else:
        if not state:
            console.print("no platform is running (start it with `dexorder up`)")
        elif not state.get("ready"):
            console.print("the platform is still starting")
        healthy = _print_status(cfg, state) and bool(state and state.get("ready"))
    raise typer.Exit(0 if healthy else 1)


@app.command()
def watch(
    ticker: Annotated[str, typer.Argument(help="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
    tf: Annotated[str, typer.Option("--tf", help="Timeframe: 1m 5m 15m 1h 4h 1d")] = "1m",
    rows: Annotated[int, typer.Option(min=1, help="Closed candles kept on screen.")] = 15,
    count: Annotated[
        int | None, typer.Option(min=1, help="Exit after this many updates (for scripts).")
    ] = None,
) -> None:
    """Print live candles of TICKER as a refreshing table (Ctrl-C to quit)."""
    from dexorder.client import RelayError
    from launcher.watch import watch as run_watch

    try:
        t, timeframe = Ticker.parse(ticker), Timeframe.parse(tf)
    except (InvalidTicker, InvalidTimeframe) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    cfg = config_or_exit()
    try:
        asyncio.run(run_watch(cfg, str(t), timeframe.value, rows, count, console))
    except KeyboardInterrupt:
        pass
    except RelayError as exc:
        err.print(f"[red]error:[/red] {exc} (is the platform up? `dexorder status`)")
        raise typer.Exit(1) from None


@app.command()
def history(
    ticker: Annotated[str, typer.Argument(help="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
    tf: Annotated[str, typer.Option("--tf", help="Timeframe: 1m 5m 15m 1h 4h 1d")] = "1h",
    start: Annotated[str, typer.Option("--from", help="Start date (UTC), e.g. 2024-01-01")] = "",
    end: Annotated[str, typer.Option("--to", help="End date (UTC), exclusive; default now")] = "",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to a .csv or .parquet file")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Read the lake as it was then (no backfill)")
    ] = None,
    no_backfill: Annotated[
        bool, typer.Option("--no-backfill", help="Only read what the lake has")
    ] = False,
    rows: Annotated[int, typer.Option(min=2, help="Rows shown in the table")] = 40,
) -> None:
    """Backfill what the lake is missing of a range (with progress), then print or save it."""
    from launcher import history as h

    try:
        t, timeframe = Ticker.parse(ticker), Timeframe.parse(tf)
        if not start:
            raise ValueError("--from is required, e.g. --from 2024-01-01")
        start_ms = h.parse_when(start)
        end_ms = h.parse_when(end) if end else int(time.time() * 1000)
        as_of_ms = h.parse_when(as_of) if as_of else None
        if start_ms >= end_ms:
            raise ValueError("--from must be before --to")
        if out is not None and out.suffix not in h.OUTPUT_FORMATS:
            raise ValueError(f"--out must end in {' or '.join(h.OUTPUT_FORMATS)}")
    except (InvalidTicker, InvalidTimeframe, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    cfg = config_or_exit()
    if as_of_ms is None and not no_backfill:
        ready = h.run_backfill(cfg, str(t), timeframe.value, start_ms, end_ms, err)
        if ready.error:
            err.print(f"[red]error:[/red] backfill failed: {ready.error}")
            raise typer.Exit(1)
        for a, b in ready.gaps:
            err.print(f"note: the exchange has no candles from {h.iso(a)} to {h.iso(b)}")
    try:
        data = h.read(cfg, str(t), timeframe.value, start_ms, end_ms, as_of_ms)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if out is not None:
        h.write(data, out)
        console.print(f"wrote {data.num_rows:,} candles to {out}")
    else:
        console.print(h.render(data, f"{t} {timeframe.value}", rows))


@app.command(
    name="agent",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def agent(ctx: typer.Context) -> None:
    """Run one person's agent: --user alice [--port N] [--stdio]; prints its URL and a token."""
    from agent.cli import app as agent_app

    agent_app(ctx.args, prog_name="dexorder agent")


@app.command()
def chat(
    message: Annotated[
        str | None, typer.Argument(help="The message; none: an interactive conversation")
    ] = None,
) -> None:
    """Talk to your agent through the running gateway, as the local person."""
    from launcher.chat import ChatFailed
    from launcher.chat import chat as run_chat

    cfg = config_or_exit()
    try:
        asyncio.run(run_chat(cfg, message))
    except ChatFailed as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def token(
    name: Annotated[str, typer.Option(help="What it is for (shown in GET /api/tokens)")] = "mcp",
    days: Annotated[int, typer.Option(min=1, help="How long it lasts")] = 90,
) -> None:
    """A personal access token of the local person for an outside MCP client (Claude
    Desktop, an IDE): the gateway's /mcp URL, the token, and a Claude Desktop entry."""
    from datetime import UTC, datetime

    from launcher.mcp_token import claude_desktop_config, make_token

    cfg = config_or_exit()
    if days > cfg.gateway.max_token_ttl_days:
        err.print(
            f"[red]error:[/red] --days is at most gateway.max_token_ttl_days "
            f"({cfg.gateway.max_token_ttl_days})"
        )
        raise typer.Exit(2)
    made = make_token(cfg, name, days)
    until = datetime.fromtimestamp(made.expires_at or 0, UTC).strftime("%Y-%m-%d")
    console.print(f"MCP URL: {made.mcp_url}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"token: {made.token}", markup=False, highlight=False, soft_wrap=True)
    err.print(
        f"[dim]shown once; valid until {until}; revoke it with DELETE /api/tokens/{made.token_id}. "
        "Any MCP client: the URL with the header Authorization: Bearer <token>. "
        "Claude Desktop (claude_desktop_config.json):[/dim]"
    )
    err.print(claude_desktop_config(made), markup=False, highlight=False, soft_wrap=True)


@app.command()
def live(
    user: Annotated[str, typer.Option("--user", help="The person whose account this is")],
    enable: Annotated[bool, typer.Option("--enable/--disable", help="Turn live trading on/off")],
    per_order: Annotated[
        float, typer.Option(min=1, help="Most one order may be worth (quote currency)")
    ] = 100.0,
    per_day: Annotated[
        float, typer.Option(min=1, help="Most a day's live orders may be worth together")
    ] = 1_000.0,
) -> None:
    """Turn a person's live trading on or off, with its limits (the agent cannot do this).

    Exchange keys are read from DEXORDER_LIVE_API_KEY and DEXORDER_LIVE_API_SECRET when set.
    """
    from agent.broker.live import configure
    from dexorder.tokens import InvalidUserId, check_user_id

    cfg = config_or_exit()
    try:
        check_user_id(user)
    except InvalidUserId as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if per_day < per_order:
        err.print("[red]error:[/red] --per-day must be at least --per-order")
        raise typer.Exit(2)
    state = cfg.agent_dir(user) / "state"
    settings = configure(
        state,
        enable,
        per_order,
        per_day,
        os.environ.get("DEXORDER_LIVE_API_KEY"),
        os.environ.get("DEXORDER_LIVE_API_SECRET"),
    )
    keys = (state / "exchange_keys.json").is_file()
    console.print(
        f"live trading for {user}: {'on' if settings.enabled else 'off'}; per order "
        f"{settings.per_order_notional:,.2f}, per day {settings.per_day_notional:,.2f}; "
        f"exchange keys {'set' if keys else 'NOT set'}"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
