"""Starts the platform's parts as child processes, watches them, stops them all.

Each child runs in its own session (so a terminal's Ctrl-C reaches only the
supervisor, which then stops the children in reverse start order) and gets a
parent-death signal, so even a killed supervisor leaves nothing running.
A part that dies is restarted with backoff; one that keeps dying stops the
platform. ``run/platform.json`` under the home folder tells ``dexorder status``
and ``dexorder down`` what is running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dexorder.config import Settings
from dexorder.process import die_with_parent
from launcher.parts import Part, probe

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0
_MAX_RESTARTS = 5


class PartFailed(RuntimeError):
    """A part did not come up, or kept crashing."""


def _die_with_parent() -> None:
    die_with_parent(signal.SIGTERM)


def state_file(home: Path) -> Path:
    return home / "run" / "platform.json"


@dataclass
class Running:
    part: Part
    proc: subprocess.Popen[bytes]
    restarts: list[float] = field(default_factory=list)


@dataclass
class Supervisor:
    """Runs ``parts`` for ``cfg``; ``say`` prints progress for people."""

    cfg: Settings
    parts: list[Part]
    env: dict[str, str]
    say: Callable[[str], None] = print
    running: list[Running] = field(default_factory=list)
    _stopping: bool = False

    @property
    def log_dir(self) -> Path:
        path = self.cfg.home / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, part: Part) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{part.name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            return subprocess.Popen(
                part.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def _wait_healthy(self, r: Running) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if r.proc.poll() is not None:
                raise PartFailed(
                    f"{r.part.name} exited with code {r.proc.returncode} while "
                    f"starting:\n{self.log_tail(r.part.name)}"
                )
            ok, _ = probe(r.part.probe, timeout_s=0.5)
            if ok:
                return
            time.sleep(0.1)
        raise PartFailed(
            f"{r.part.name} was not healthy within {_START_TIMEOUT_S:.0f}s:\n"
            f"{self.log_tail(r.part.name)}"
        )

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join("    " + ln for ln in text.splitlines()[-lines:])

    def start(self) -> None:
        """Start every part in order, each healthy before the next; roll back on failure."""
        try:
            for part in self.parts:
                self.say(f"  starting {part.name:<20} ...")
                r = Running(part, self._spawn(part))
                self.running.append(r)
                self._wait_healthy(r)
                self.say(f"  {part.name:<20} {part.address}")
                self._write_state()
        except BaseException:
            self.stop()
            raise

    def _write_state(self) -> None:
        path = state_file(self.cfg.home)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pids = {r.part.name: r.proc.pid for r in self.running}
        tmp.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "home": str(self.cfg.home),
                    "ready": len(pids) == len(self.parts),
                    "parts": [{**p.to_json(), "pid": pids.get(p.name)} for p in self.parts],
                },
                indent=2,
            )
        )
        os.replace(tmp, path)

    def watch(self) -> None:
        """Restart parts that die, until :meth:`request_stop`."""
        while not self._stopping:
            for r in self.running:
                if self._stopping or r.proc.poll() is None:
                    continue
                now = time.monotonic()
                r.restarts = [t for t in r.restarts if now - t < 60] + [now]
                if len(r.restarts) > _MAX_RESTARTS:
                    raise PartFailed(
                        f"{r.part.name} crashed {_MAX_RESTARTS} times within a "
                        f"minute; last log:\n{self.log_tail(r.part.name)}"
                    )
                self.say(f"  {r.part.name} exited with code {r.proc.returncode}; restarting")
                time.sleep(min(8.0, 0.5 * 2 ** (len(r.restarts) - 1)))
                r.proc = self._spawn(r.part)
                if r.part.loses_data_on_restart:
                    self._wait_healthy(r)
                    for user in (u for u in self.running if r.part.name in u.part.uses):
                        self.say(f"  restarting {user.part.name} (it uses {r.part.name})")
                        _stop_one(user)
                        user.proc = self._spawn(user.part)
                        self._wait_healthy(user)
                self._write_state()
            time.sleep(0.2)

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def stop(self) -> None:
        """Stop every part, last started first: SIGTERM, then SIGKILL after a grace period."""
        self._stopping = True
        for r in reversed(self.running):
            if r.proc.poll() is None:
                self.say(f"  stopping {r.part.name}")
            if not _stop_one(r):
                self.say(f"  {r.part.name} did not stop in {_STOP_TIMEOUT_S:.0f}s; killed it")
        self.running.clear()
        state_file(self.cfg.home).unlink(missing_ok=True)


def _stop_one(r: Running) -> bool:
    """SIGTERM the part's process group, SIGKILL it after the grace period.

    Returns False when it had to be killed.
    """
    if r.proc.poll() is not None:
        _signal_group(r.proc, signal.SIGKILL)  # anything it left in its group
        return True
    _signal_group(r.proc, signal.SIGTERM)
    try:
        r.proc.wait(timeout=_STOP_TIMEOUT_S)
        return True
    except subprocess.TimeoutExpired:
        _signal_group(r.proc, signal.SIGKILL)
        r.proc.wait()
        return False


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
