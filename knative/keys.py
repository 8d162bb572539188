"""Make a deployment's keys: each Secret's ``secrets.yaml`` and the config's public keys.

``python knative/keys.py OUT`` writes, under ``OUT`` (mode 0600 files, a new folder):

* ``<secret>.yaml`` for each ``dexorder-*`` Secret of ``knative/secrets.yaml``, holding
  only the keys that table gives it, generated here: the token-signing key (the gateway's
  only), the session secret, the record signing key (the producers'), the relay's and
  each publisher's CURVE keys, and each function's own platform token (made with the
  token key, expiring after ``--token-days``). What comes from outside (database and
  Redis URLs, Anthropic and Telegram keys, lake credentials) is left for you to add: the
  file says which;
* ``public.yaml``: the public halves (``agent.token_public_key``, ``kafka.record_verify_key``,
  ``relay.server_public_key``, ``relay.allowed_publishers``) to put in
  ``knative/base/config/config.yaml`` and (the token and relay keys) ``agents.yaml``;

and prints the ``kubectl create secret`` commands. Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import Any

import yaml
import zmq

from dexorder.tokens import keys_from_private, new_private_pem
from gateway.platform_calls import platform_token

HERE = Path(__file__).resolve().parent
TABLE = HERE / "secrets.yaml"
NAMESPACE = "dexorder-system"
#: The relay publisher each Secret's ``relay.publisher_secret_key`` is (dexorder/relay_keys.py).
PUBLISHER_OF = {
    "dexorder-stream": "stream",
    "dexorder-lake-writer": "lake-writer",
    "dexorder-ingestor": "ingestor",
}
#: Each Kafka-using Secret's principal (``kafka.sasl_username``) is the Secret's own name,
#: as in the ACL table of knative/README.md; its password comes from your Kafka (a Strimzi
#: KafkaUser's Secret), so it is left for you to add.


def table() -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = yaml.safe_load(TABLE.read_text())["secrets"]
    return rows


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".", 1)
    tree.setdefault(section, {})[key] = value


def make(
    token_days: int = 90,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, list[str]]]:
    """(secret name → its secrets.yaml, the public config, secret name → keys left to add)."""
    token_pem = new_private_pem()
    token_keys = keys_from_private(token_pem)
    record_pem = new_private_pem()
    relay_public, relay_secret = zmq.curve_keypair()
    publishers = {part: zmq.curve_keypair() for part in sorted(set(PUBLISHER_OF.values()))}
    generated: dict[str, Any] = {
        "agent.token_private_key": token_pem,
        "gateway.session_secret": secrets.token_urlsafe(32),
        "kafka.record_signing_key": record_pem,
        "relay.server_secret_key": relay_secret.decode(),
        # the platform secret sealing fired rules on the fanout (dexorder/rule_sealing.py)
        "relay.rule_seal_key": secrets.token_urlsafe(32),
    }
    files: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[str]] = {}
    for name, row in table().items():
        if not name.startswith("dexorder-") or name == "dexorder-kafka-triggers":
            continue
        tree: dict[str, Any] = {}
        for key in row["keys"]:
            if key == "agent.service_token":  # the function's own, with an expiry
                value: Any = platform_token(token_keys, ttl_s=token_days * 86_400)
            elif key == "kafka.sasl_username":
                value = name
            elif key == "relay.publisher_secret_key":
                value = publishers[PUBLISHER_OF[name]][1].decode()
            elif key in generated:
                value = generated[key]
            else:
                missing.setdefault(name, []).append(key)
                continue
            _set(tree, key, value)
        files[name] = tree
    public = {
        "agent": {"token_public_key": token_keys.public_pem},
        "kafka": {"record_verify_key": keys_from_private(record_pem).public_pem},
        "relay": {
            "server_public_key": relay_public.decode(),
            "allowed_publishers": {p: k[0].decode() for p, k in publishers.items()},
        },
    }
    return files, public, missing


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new folder for the files")
    parser.add_argument("--token-days", type=int, default=90, help="life of functions' tokens")
    args = parser.parse_args()
    args.out.mkdir(mode=0o700)
    files, public, missing = make(args.token_days)
    for name, tree in files.items():
        todo = missing.get(name, [])
        head = f"# secrets.yaml of Secret {name}" + (
            f"; add: {', '.join(todo)}\n" if todo else "\n"
        )
        _write(args.out / f"{name}.yaml", head + yaml.safe_dump(tree, sort_keys=False))
        print(
            f"kubectl -n {table()[name].get('namespace', NAMESPACE)} create secret generic {name} "
            f"--from-file=secrets.yaml={args.out / (name + '.yaml')}"
        )
    _write(args.out / "public.yaml", yaml.safe_dump(public, sort_keys=False))
    print(f"# and put {args.out / 'public.yaml'} into knative/base/config/config.yaml")


if __name__ == "__main__":
    main()
