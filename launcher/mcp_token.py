"""``dexorder token``: a personal access token for the local person, and how an outside MCP
client (Claude Desktop, say) uses it with the gateway's ``/mcp``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dexorder.config import Settings
from dexorder.tokens import token_keys

#: The local person's address in the accounts database (no password: tokens only).
LOCAL_EMAIL = "local@localhost"


@dataclass(frozen=True)
class MadeToken:
    token: str
    token_id: str
    mcp_url: str
    expires_at: int | None


def make_token(cfg: Settings, name: str, days: int) -> MadeToken:
    """A personal access token of the local person, written to the accounts database the
    gateway reads (it checks it on every use; ``DELETE /api/tokens/{id}`` revokes it)."""
    from gateway.accounts.db import engine_for, migrate
    from gateway.accounts.store import Accounts

    g = cfg.gateway
    engine = engine_for(g.database_url or f"sqlite:///{Path(cfg.home) / 'state' / 'accounts.db'}")
    try:
        migrate(engine)
        accounts = Accounts(engine)
        accounts.ensure_account(g.local_user, LOCAL_EMAIL)
        token, pat = accounts.create_pat(g.local_user, name, token_keys(cfg), days)
    finally:
        engine.dispose()
    return MadeToken(token, pat.id, f"{g.url}/mcp", pat.expires_at)


def claude_desktop_config(made: MadeToken) -> str:
    """An entry for ``claude_desktop_config.json``: its servers are commands, so
    ``mcp-remote`` bridges to ``/mcp`` (the token in the environment, not on a command line)."""
    entry = {
        "mcpServers": {
            "dexorder": {
                "command": "npx",
                "args": ["mcp-remote", made.mcp_url, "--header", "Authorization:${AUTH_HEADER}"],
                "env": {"AUTH_HEADER": f"Bearer {made.token}"},
            }
        }
    }
    return json.dumps(entry, indent=2)
