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
from dexorder import telemetry
from dexorder.config import ConfigError, Settings, load_config
from dexorder.log import setup_logging
from dexorder.process import AGENT_LOCKED_EXIT_CODE, AlreadyLocked, agent_lock_file, hold_lock
from dexorder.tokens import (
    InvalidToken,
    InvalidUserId,
    check_user_id,
    embedder_token,
    mint_token,
    token_keys,
)

#: Tokens an agent run by hand makes for itself last this long (it runs for a session).
_OWN_TTL_S = 7 * 86_400

app = typer.Typer(add_completion=False)


@app.command()
def agent(
    user: Annotated[str, typer.Option("--user", help="The person whose agent this is")],
    port: Annotated[int | None, typer.Option(help="HTTP port (default agent.port)")] = None,
    stdio: Annotated[bool, typer.Option("--stdio", help="Speak MCP on stdin/stdout")] = False,
    token_ttl_h: Annotated[
        float,
        typer.Option(
            min=0.01, max=24 * 365, help="Hours the printed token is valid (every token expires)"
        ),
    ] = 24,
) -> None:
    """Run one person's agent (MCP over streamable HTTP, or stdio)."""
    try:
        cfg = load_config()
        check_user_id(user)
    except (ConfigError, InvalidUserId) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        # held until this process ends (the kernel lets go however it ends); taken before
        # anything is read, so a new agent sees all the old one wrote before it let go
        hold_lock(agent_lock_file(cfg.agent_dir(user)))
    except AlreadyLocked as exc:
        pids = f" (pid {', '.join(map(str, exc.holders))})" if exc.holders else ""
        print(
            f"error: another agent of {user} is already running{pids}; "
            "stop it first (one agent per person keeps their orders consistent)",
            file=sys.stderr,
        )
        raise typer.Exit(AGENT_LOCKED_EXIT_CODE) from None
    cfg = _with_own_tokens(cfg, user)
    person = PersonAgent(cfg, user)
    setup_logging("agent", cfg.log_level)
    # continues the gateway's traces (their context comes in each MCP request's _meta)
    telemetry.setup(cfg.telemetry, "dexorder-agent", user=person.user)
    if stdio:
        asyncio.run(_stdio(person))
        return
    from agent.app import serve_http

    host, the_port = cfg.agent.host, port if port is not None else cfg.agent.port
    ttl = int(token_ttl_h * 3600)
    try:
        token = mint_token(token_keys(cfg), person.user, "pat", ttl)
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


def _with_own_tokens(cfg: Settings, user: str) -> Settings:
    """Run by hand (``dexorder agent``, not by the gateway), this process is the operator's:
    it makes the agent's tokens here, so the agent itself still holds only the public key."""
    a = cfg.agent
    if a.tokens_file or (a.service_token and a.embedder_token):
        return cfg
    try:
        keys = token_keys(cfg)
        tokens = {
            "service_token": a.service_token or mint_token(keys, user, "service", _OWN_TTL_S),
            "embedder_token": a.embedder_token or embedder_token(keys, user, _OWN_TTL_S),
        }
    except InvalidToken:
        return cfg  # only the public key here: the agent gets its tokens from the gateway
    return cfg.model_copy(update={"agent": a.model_copy(update=tokens)})


async def _stdio(person: PersonAgent) -> None:
    from agent.app import serve_stdio

    await serve_stdio(person)


def main() -> None:
    app()
