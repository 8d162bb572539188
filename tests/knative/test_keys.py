"""knative/keys.py makes a deployment's keys: each Secret gets only the keys of the table,
and what it makes fits together (public halves, the relay's allowlist, the functions'
platform tokens)."""

from __future__ import annotations

import importlib.util
import stat
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
import zmq

from dexorder.config import Settings
from dexorder.record_signing import record_keys
from dexorder.relay_keys import PUBLISHERS
from dexorder.tokens import token_keys, verify_token
from gateway.platform_calls import is_platform_token
from tests.knative.manifests import KNATIVE


def _keys_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("knative_keys", KNATIVE / "keys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


keys = _keys_module()


def _merge(*trees: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tree in trees:
        for section, values in tree.items():
            if isinstance(values, dict):
                out.setdefault(section, {}).update(values)
            else:
                out[section] = values
    return out


def test_each_secret_gets_only_its_keys_and_they_fit_together() -> None:
    files, public, missing = keys.make(token_days=30)
    table = keys.table()
    config = yaml.safe_load((KNATIVE / "base/config/config.yaml").read_text())
    settings = {}
    for name, tree in files.items():
        given = {f"{s}.{k}" for s, values in tree.items() for k in values}
        assert given | set(missing.get(name, [])) == set(table[name]["keys"]), name
        settings[name] = Settings(**_merge(config, public, tree))
    gateway = settings["dexorder-gateway"]
    assert token_keys(gateway).private_pem is not None
    assert "gateway.database_url" in missing["dexorder-gateway"]  # yours to add
    assert record_keys(gateway).private is not None
    # only the gateway has the token key; the functions a platform token that it checks
    for name, cfg in settings.items():
        if name != "dexorder-gateway":
            assert cfg.agent.token_private_key is None, name
        if cfg.agent.service_token:
            public_only = token_keys(cfg)
            assert public_only.private_pem is None
            assert is_platform_token(public_only, cfg.agent.service_token)
            claims = verify_token(public_only, cfg.agent.service_token)
            assert 29 * 86_400 < claims.expires_at - time.time() <= 30 * 86_400
    # each publisher's secret key is on the relay's allowlist under its part's name
    allowed = public["relay"]["allowed_publishers"]
    assert set(allowed) == set(PUBLISHERS)
    for name, part in keys.PUBLISHER_OF.items():
        secret = settings[name].relay.publisher_secret_key
        assert secret is not None
        assert zmq.curve_public(secret.encode()).decode() == allowed[part]
    relay_secret = settings["dexorder-relay"].relay.server_secret_key
    assert relay_secret is not None
    assert zmq.curve_public(relay_secret.encode()).decode() == public["relay"]["server_public_key"]


def test_the_files_are_written_for_their_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    monkeypatch.setattr(sys, "argv", ["keys.py", str(out)])
    keys.main()
    written = sorted(p.name for p in out.iterdir())
    assert "public.yaml" in written and "dexorder-gateway.yaml" in written
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "create secret generic dexorder-gateway" in capsys.readouterr().out
    with pytest.raises(FileExistsError):  # never over an existing folder
        keys.main()
