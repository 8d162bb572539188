"""The CloudEvents functions of ``functions/*/main.py``, hosted inside the gateway process.

In the cluster each runs on its own (functions-framework, a Knative Service that only the
cluster reaches); on one machine the gateway mounts them at ``/functions/<name>/``, where
only callers holding a platform token (the local trigger dispatcher) get through.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dexorder.config import Settings
from dexorder.tokens import TokenKeys
from gateway.platform_calls import is_platform_token

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent

#: name → (folder, function, signature type)
FUNCTIONS: dict[str, tuple[str, str, str]] = {
    "notification-fanout": ("notification_fanout", "notify_people", "cloudevent"),
    "backfill-dispatch": ("backfill_dispatch", "dispatch_backfill", "cloudevent"),
    "tool-proxy": ("tool_proxy", "proxy_tool", "http"),
    "rule-delivery": ("rule_delivery", "deliver_fired_rule", "cloudevent"),
}


#: The gateway's HTTP handlers as functions on their own (not mounted: the gateway is them).
STANDALONE: dict[str, tuple[str, str, str]] = {
    "auth": ("auth", "auth", "http"),
    "chat": ("chat", "chat", "http"),
    "telegram-webhook": ("telegram_webhook", "telegram_webhook", "http"),
}


def function_app(name: str, cfg: Settings) -> Any:
    """The functions-framework ASGI app of one function, configured with ``cfg``."""
    return load_function(name, cfg)[1]


def load_function(name: str, cfg: Settings) -> tuple[ModuleType, Any]:
    """One function's module (configured with ``cfg``) and its functions-framework app."""
    from functions_framework.aio import create_asgi_app_from_module

    folder, target, signature = FUNCTIONS.get(name) or STANDALONE[name]
    source = str(FUNCTIONS_DIR / folder / "main.py")
    spec = importlib.util.spec_from_file_location(f"dexorder_function_{folder}", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.config.set(cfg)
    app = create_asgi_app_from_module(  # type: ignore[no-untyped-call]
        target, source, signature, module, spec
    )
    return module, app


class PlatformOnly:
    """Lets through only requests bearing a platform token."""

    def __init__(self, app: ASGIApp, keys: TokenKeys) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            token = header.removeprefix("Bearer ").strip()
            if not token or not is_platform_token(self.keys, token):
                response = JSONResponse({"error": "a platform token is required"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
