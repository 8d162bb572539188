"""In the cluster a function holds public keys and its own platform token, never the
token-signing private key (knative/secrets.yaml): the notification fanout still delivers
with just those, and a token not made by the platform's key gets it nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from cloudevents.http import CloudEvent
from cryptography.hazmat.primitives import serialization
from starlette.exceptions import HTTPException

from dexorder.config import Settings
from dexorder.record_signing import EXTENSION, record_keys, sign
from dexorder.tokens import new_keys
from gateway.functions_host import load_function
from gateway.platform_calls import platform_token
from tests.gateway.served import gateway_settings, serve_gateway

pytestmark = pytest.mark.integration


def function_settings(gateway: Settings, home: Path, service_token: str) -> Settings:
    """What the notification fanout's pod has: the config's public keys and the gateway's
    address, its Secret's platform token; a home of its own (no key files to fall back on)."""
    public_pem = (
        record_keys(gateway)
        .public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )
    return Settings(
        home=home,
        embedder={"enabled": False},
        kafka={"record_verify_key": public_pem},
        agent={"token_public_key": gateway.agent.token_public_key, "service_token": service_token},
        gateway={"host": gateway.gateway.host, "port": gateway.gateway.port},
    )


async def test_the_notification_fanout_works_without_the_private_key(tmp_path: Path) -> None:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        alice = await s.sign_up("alice@example.com")
        user = alice["account"]["id"]
        cfg = s.gw.cfg.model_copy(
            update={
                "agent": s.gw.cfg.agent.model_copy(
                    update={"token_public_key": s.gw.keys.public_pem}
                )
            }
        )
        data = {"event_id": "n-1", "user": user, "kind": "alert", "payload": {"text": "BTC up"}}
        event = CloudEvent(
            {
                "type": "dev.knative.kafka.event",
                "source": "/kafkasources/notification-fanout#notifications",
                EXTENSION: sign(record_keys(s.gw.cfg), "notifications", data),
            },
            data,
        )
        good = function_settings(cfg, tmp_path / "fn", platform_token(s.gw.keys, 3600))
        assert good.agent.token_private_key is None and good.kafka.record_signing_key is None
        module, _ = load_function("notification-fanout", good)
        async with s.socket(alice["access_token"]) as ws:
            await module.notify_people(event)
            assert (await ws.until("event"))["event_id"] == "n-1"

        forged = function_settings(cfg, tmp_path / "fn2", platform_token(new_keys(), 3600))
        module, _ = load_function("notification-fanout", forged)
        with pytest.raises(HTTPException) as refused:
            await module.notify_people(event)
        assert refused.value.status_code == 400 and "403" in str(refused.value.detail)
