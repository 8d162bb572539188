"""Running one person's agent on its own: ``dexorder agent --user alice``.

Prints the MCP URL and a personal access token for that person, for the MCP
Inspector or Claude Desktop. ``--stdio`` speaks MCP on stdin/stdout instead.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from agent.lifecycle import IDLE_EXIT_CODE
from agent.person import PersonAgent
from dexorder.config import ConfigError, load_config
from dexorder.log import setup_logging
from dexorder.tokens import InvalidToken, InvalidUserId, mint_token

app = typer.Typer(add_completion=False)


@app.command()
def agent(
    user: Annotated[str, typer.Option("--user", help="The person whose agent this is")],
    port: Annotated[int | None, typer.Option(help="HTTP port (default agent.port)")] = None,
    stdio: Annotated[bool, typer.Option("--stdio", help="Speak MCP on stdin/stdout")] = False,
    token_ttl_h: Annotated[
        float, typer.Option(help="Hours the printed token is valid (0: never expires)")
    ] = 24,
) -> None:
    """Run one person's agent (MCP over streamable HTTP, or stdio)."""
    try:
        cfg = load_config()
        person = PersonAgent(cfg, user)
    except (ConfigError, InvalidUserId) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    setup_logging("agent", cfg.log_level)
    if stdio:
        asyncio.run(_stdio(person))
        return
    from agent.app import serve_http

    host, the_port = cfg.agent.host, port if port is not None else cfg.agent.port
    ttl = int(token_ttl_h * 3600) or None
    try:
        token = mint_token(person.keys, person.user, "pat", ttl)
    except InvalidToken:
        token = "(this agent holds only the public key: make a token in the gateway)"

    def ready() -> None:  # printed once it listens, so whoever reads it can connect at once
        print(f"agent of {person.user}: http://{host}:{the_port}/mcp", flush=True)
        print(f"token: {token}", flush=True)

    try:
        code = asyncio.run(serve_http(person, host, the_port, ready))
    except KeyboardInterrupt:
        code = 0
    if code == IDLE_EXIT_CODE:
        print(f"agent of {person.user} was idle; exiting with code {code}", flush=True)
    raise typer.Exit(code)


async def _stdio(person: PersonAgent) -> None:
    from agent.app import serve_stdio

    await serve_stdio(person)


def main() -> None:
    app()
