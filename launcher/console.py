"""What every ``dexorder`` command shares: its consoles and loading the configuration."""

from __future__ import annotations

import typer
from rich.console import Console

from dexorder.config import ConfigError, Settings, load_config

console = Console()
err = Console(stderr=True)


def config_or_exit() -> Settings:
    """The configuration; on a bad key, one line naming it and exit code 2."""
    try:
        return load_config()
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
