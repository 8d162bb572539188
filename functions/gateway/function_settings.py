"""The configuration a CloudEvents function runs with."""

from __future__ import annotations

from dexorder.config import Settings, load_config


class FunctionSettings:
    """Given by a host that runs the function in its own process (the gateway on one
    machine), else loaded from the environment on first use (a function on its own)."""

    def __init__(self) -> None:
        self._cfg: Settings | None = None

    def set(self, cfg: Settings) -> None:
        self._cfg = cfg

    def get(self) -> Settings:
        if self._cfg is None:
            self._cfg = load_config()
        return self._cfg
