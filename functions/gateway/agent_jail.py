"""What a person's agent process can see on one machine: its own namespaces (bubblewrap).

An agent runs the person's strategies and talks to their sandbox, so it is the next
thing an escaped sandbox would hold. It therefore sees only what it needs:

* its person's folder (read-write) and nobody else's;
* the code (Python, the virtualenv, the ``agent`` and ``dexorder`` packages), the
  system libraries and a few files of ``/etc`` (name resolution, certificates), the
  market lake, and its own run folder (its configuration and tokens), all read-only;
* a fresh ``/tmp``, its own PID and IPC namespaces (it cannot see or signal other
  processes), no capabilities; the network stays (relay, Kafka, gateway on loopback).

Not the platform's ``state/`` (the token private key, the session secret, relay keys),
not ``secrets.yaml``: its configuration is written for it by the gateway without any
secret, with the token *public* key, and the gateway hands it its tokens in a file.

Two command lines, because of a kernel rule: a nested sandbox (the agent's own bwrap for
the person's code) may mount a fresh ``/proc`` only if the agent's ``/proc`` is fully
visible, and bwrap covers parts of its ``/proc`` when the host's root is mapped into the
namespace, i.e. when the gateway runs as root. So as root, ``unshare`` makes the PID
namespace and mounts its ``/proc`` first, and bwrap only binds it; the agent then runs as
uid 1000 of its own user namespace with no capabilities. As any other user, bwrap does all.
User namespaces stay usable inside (no ``--disable-userns``): the nested sandbox needs them.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from dexorder import namespaces
from dexorder.config import GatewayConfig, Settings

#: The agent's uid inside its user namespace when the gateway runs as root.
AGENT_UID_UNDER_ROOT = 1000

#: Files of /etc a Python process and its libraries read; the rest (shadow, ssh keys,
#: whatever else the host keeps there) is not shown.
_ETC = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "passwd",
    "group",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "pki",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "os-release",
    "protocols",
    "services",
    "mime.types",
    "alternatives",
)

#: Variables of the gateway's environment an agent gets (no secret ever travels this way).
_ENV_KEPT = ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE")
_ENV_PREFIXES_KEPT = ("LC_", "COVERAGE_", "COV_CORE_")


class IsolationUnavailable(RuntimeError):
    """Agents cannot be put in their own namespaces on this host; the message says why."""


@dataclass(frozen=True)
class AgentView:
    """The folders an agent sees besides the code: its person's, its run folder, the lake."""

    agent_dir: Path
    run_dir: Path
    read_only: tuple[Path, ...] = ()


def code_roots() -> list[str]:
    """Python and the packages an agent imports, as folders to bind read-only."""
    return namespaces.code_roots(("agent", "dexorder"))


def _system() -> list[str]:
    args = namespaces.system_binds()
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def jail_argv(command: list[str], view: AgentView, home: Path) -> list[str]:
    """The command line that runs ``command`` as a person's agent in its own namespaces."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise IsolationUnavailable("bubblewrap (bwrap) is not installed")
    common = [
        "--unshare-ipc",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        *_system(),
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]
    code = code_roots()
    for root in code:
        common += ["--ro-bind", root, root]
    home_s = os.path.realpath(home)
    if any(home_s == r or home_s.startswith(r + os.sep) for r in code):
        common += ["--tmpfs", home_s]  # the home folder inside the code: show none of it
    for path in view.read_only:
        common += ["--ro-bind", str(path), str(path)]
    common += ["--bind", str(view.agent_dir), str(view.agent_dir)]
    common += ["--ro-bind", str(view.run_dir), str(view.run_dir)]
    common += ["--chdir", str(view.agent_dir), "--", *command]
    if os.geteuid() != 0:
        return [bwrap, "--unshare-user", "--unshare-pid", "--proc", "/proc", *common]
    unshare = shutil.which("unshare")
    if unshare is None:
        raise IsolationUnavailable("util-linux unshare is not installed (needed as root)")
    uid = str(AGENT_UID_UNDER_ROOT)
    return [
        unshare,
        "--pid",
        "--mount",
        "--mount-proc",
        "--kill-child",  # implies --fork; the PID namespace ends with its first process
        "--",
        bwrap,
        "--unshare-user",
        "--uid",
        uid,
        "--gid",
        uid,
        "--bind",
        "/proc",
        "/proc",
        *common,
    ]


def agent_env(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The environment of an agent: a few harmless variables of ``base``, then ``extra``."""
    env = {
        k: v
        for k, v in base.items()
        if k in _ENV_KEPT or any(k.startswith(p) for p in _ENV_PREFIXES_KEPT)
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return {**env, **extra}


def agent_settings(cfg: Settings, public_pem: str, tokens_file: Path) -> Settings:
    """The configuration an agent runs with: the gateway's, less every secret it need not
    hold; its tokens come from ``tokens_file``, checked with ``public_pem``."""
    agent = cfg.agent.model_copy(
        update={
            "token_private_key": None,
            "service_token": None,
            "embedder_token": None,
            "token_public_key": public_pem,
            "tokens_file": str(tokens_file),
        }
    )
    relay = cfg.relay.model_copy(
        update={"server_secret_key": None, "publisher_secret_key": None, "rule_seal_key": None}
    )
    # agents never produce to Kafka: a platform record signature is not theirs to make
    kafka = cfg.kafka.model_copy(update={"record_signing_key": None})
    # the agent's spans go where the gateway's do (its environment is not passed on)
    telemetry = cfg.telemetry.model_copy(update={"otlp_endpoint": cfg.telemetry.endpoint()})
    # sessions, model keys, Telegram: none of the agent's business (the defaults hold none)
    return cfg.model_copy(
        update={
            "agent": agent,
            "relay": relay,
            "kafka": kafka,
            "gateway": GatewayConfig(),
            "telemetry": telemetry,
        }
    )


def write_settings(path: Path, settings: Settings) -> None:
    """Write ``settings`` as a ``config.yaml`` :func:`~dexorder.config.load_config` reads back
    (only its owner may read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(settings.model_dump(mode="json"), out, sort_keys=False)
    os.replace(tmp, path)


def lake_folders(cfg: Settings) -> list[Path]:
    """Where the market lake lives on this machine (an agent reads it, never writes it)."""
    folders = [Path(cfg.home) / "lake"]
    uri, warehouse = cfg.lake.catalog_uri, cfg.lake.warehouse
    if uri and uri.startswith("sqlite:///"):
        folders.append(Path(uri.removeprefix("sqlite:///")).parent)
    if warehouse and warehouse.startswith("file://"):
        folders.append(Path(warehouse.removeprefix("file://")))
    return folders


#: The probe: writes its PID (small in a fresh PID namespace) into the agent folder.
_PROBE = "import os; open('probe', 'w').write(str(os.getpid()))"


@functools.cache
def _probe(bwrap: str | None, unshare: str | None, euid: int) -> str | None:
    del bwrap, unshare, euid  # the cache key: a host that gains bwrap is probed again
    with tempfile.TemporaryDirectory(prefix="dexorder-jail-probe-") as tmp:
        base = Path(tmp)
        view = AgentView(base / "agent", base / "run")
        for d in (view.agent_dir, view.run_dir):
            d.mkdir()
        env = agent_env(dict(os.environ), {})
        try:
            argv = jail_argv([sys.executable, "-S", "-c", _PROBE], view, base / "home")
            done = subprocess.run(argv, capture_output=True, timeout=30, env=env)
        except IsolationUnavailable as exc:
            return str(exc)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap did not start: {exc}"
        probe = view.agent_dir / "probe"
        wrote = probe.read_text() if probe.exists() else ""
        if done.returncode != 0 or not wrote.isdigit() or int(wrote) > 10:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
            return f"bubblewrap could not set up an agent's namespaces: {said or done.returncode}"
    return None


def isolation_problem() -> str | None:
    """Why agents cannot be isolated on this host, or None when they can (probed once)."""
    return _probe(shutil.which("bwrap"), shutil.which("unshare"), os.geteuid())
