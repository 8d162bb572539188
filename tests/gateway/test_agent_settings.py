"""The configuration the gateway writes for a person's agent is a typed ``Settings`` the
agent loads back as it was written, less the secrets it need not hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dexorder.config import GatewayConfig, Settings, load_config
from dexorder.tokens import new_keys
from gateway.agent_jail import agent_settings, write_settings

SECRETS = {
    "token_private_key": "the gateway's token key",
    "service_token": "the gateway's service token",
    "embedder_token": "the gateway's embedder token",
    "server_secret_key": "the relay's secret key",
    "publisher_secret_key": "a publisher's secret key",
    "rule_seal_key": "the platform's secret sealing fired rules",
    "record_signing_key": "the platform's record signing key",
    "session_secret": "the gateway's session secret",
    "anthropic_api_key": "sk-ant-the-gateways-own",
}


def test_the_agent_loads_what_the_gateway_writes_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = new_keys()
    gateway = Settings(
        home=tmp_path,
        agent={
            "tier": "pro",
            "gateway_events": "tcp://127.0.0.1:5999",
            **{k: SECRETS[k] for k in ("token_private_key", "service_token", "embedder_token")},
        },
        relay={
            "xpub_port": 6558,
            **{
                k: SECRETS[k]
                for k in ("server_secret_key", "publisher_secret_key", "rule_seal_key")
            },
        },
        kafka={"record_signing_key": SECRETS["record_signing_key"]},
        gateway={k: SECRETS[k] for k in ("session_secret", "anthropic_api_key")},
        stream={"group_id": "g-custom"},
        lake={"namespace": "history"},
    )
    tokens = tmp_path / "run" / "tokens.json"
    written = agent_settings(gateway, keys.public_pem, tokens)
    path = tmp_path / "run" / "config.yaml"
    write_settings(path, written)

    for name in [n for n in os.environ if n.startswith("DEXORDER_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("DEXORDER_CONFIG", str(path))
    monkeypatch.setenv("DEXORDER_SECRETS", os.devnull)  # as the provisioner starts it
    loaded = load_config(tmp_path)

    assert loaded == written
    assert (loaded.agent.token_public_key, loaded.agent.tokens_file) == (
        keys.public_pem,
        str(tokens),
    )
    assert (loaded.agent.tier, loaded.agent.gateway_events) == ("pro", "tcp://127.0.0.1:5999")
    assert (loaded.relay.xpub_port, loaded.stream.group_id) == (6558, "g-custom")
    assert loaded.lake.namespace == "history" and loaded.home == tmp_path
    assert loaded.gateway == GatewayConfig()
    text = path.read_text()
    assert not [name for name, secret in SECRETS.items() if secret in text]
    assert path.stat().st_mode & 0o777 == 0o600
