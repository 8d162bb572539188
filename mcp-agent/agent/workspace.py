"""The person's workspace: indicators, strategies and settings in a git repository.

Every write is a commit whose message says what changed, so the person (and
their agent) can see the history of a file and revert it. Paths are confined
to the workspace: a name never reaches outside it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Folders the agent writes code into, and the suffix their files take.
KINDS = {"indicators": ".py", "strategies": ".py"}
#: What one file of each kind is called, for messages.
SINGULAR = {"indicators": "indicator", "strategies": "strategy"}
#: Strategies and indicators every new workspace starts with.
EXAMPLES = Path(__file__).parent / "examples"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_AUTHOR = ["-c", "user.name=DexOrder agent", "-c", "user.email=agent@dexorder.invalid"]


class WorkspaceError(ValueError):
    """A request the workspace refuses: bad name, missing file, unknown revision."""


@dataclass(frozen=True)
class Revision:
    """One commit touching a file."""

    commit: str
    when: str
    message: str


class Workspace:
    """A git-versioned folder; one per person."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        if not (root / ".git").is_dir():
            self._git("init", "-q", "-b", "main")
            for kind in KINDS:
                (root / kind).mkdir(exist_ok=True)
                (root / kind / ".keep").touch()
                for example in sorted((EXAMPLES / kind).glob("*.py")):
                    shutil.copyfile(example, root / kind / example.name)
            self._git("add", "-A")
            self._git(*_AUTHOR, "commit", "-q", "-m", "Create the workspace with the examples")

    def _git(self, *args: str) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
        done = subprocess.run(
            ["git", "-C", str(self.root), *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise WorkspaceError(f"git {args[0]} failed: {done.stderr.strip()[:300]}")
        return done.stdout

    def path(self, kind: str, name: str) -> Path:
        """The file of ``name`` (e.g. ``sma_cross``) in ``kind`` (``strategies``)."""
        if kind not in KINDS:
            raise WorkspaceError(f"unknown kind {kind!r}: expected one of {sorted(KINDS)}")
        stem = name.removesuffix(KINDS[kind])
        if not _NAME.match(stem):
            raise WorkspaceError(
                f"invalid name {name!r}: use letters, digits and underscores, "
                "starting with a letter (at most 64)"
            )
        return self.root / kind / f"{stem}{KINDS[kind]}"

    def names(self, kind: str) -> list[str]:
        """The names of the files of ``kind``, sorted."""
        self.path(kind, "x")  # validates kind
        return sorted(p.stem for p in (self.root / kind).glob(f"*{KINDS[kind]}"))

    def read(self, kind: str, name: str) -> str:
        path = self.path(kind, name)
        if not path.is_file():
            have = ", ".join(self.names(kind)) or "none yet"
            raise WorkspaceError(f"no {SINGULAR[kind]} named {path.stem!r} (have: {have})")
        return path.read_text()

    def write(self, kind: str, name: str, text: str, message: str | None = None) -> str:
        """Write and commit; returns the commit id. Unchanged content makes no commit."""
        path = self.path(kind, name)
        existed = path.is_file()
        path.write_text(text)
        return self.commit(
            [path], message or f"{'Update' if existed else 'Add'} {SINGULAR[kind]} {path.stem}"
        )

    def write_file(self, relative: str, text: str, message: str) -> str:
        """Write a settings file (e.g. ``watchlist.json``) at the workspace's top level."""
        path = self.root / relative
        if path.parent != self.root or relative.startswith("."):
            raise WorkspaceError(f"invalid settings file {relative!r}")
        path.write_text(text)
        return self.commit([path], message)

    def commit(self, paths: list[Path], message: str) -> str:
        self._git("add", "--", *(str(p.relative_to(self.root)) for p in paths))
        if not self._git("status", "--porcelain", "--", *(str(p) for p in paths)).strip():
            return self.head()
        self._git(*_AUTHOR, "commit", "-q", "-m", message)
        return self.head()

    def head(self) -> str:
        return self._git("rev-parse", "HEAD").strip()

    def history(self, relative: str | None = None, limit: int = 20) -> list[Revision]:
        """Commits, newest first; only those touching ``relative`` when given."""
        args = ["log", f"-n{limit}", "--format=%H%x1f%cI%x1f%s"]
        if relative:
            args += ["--", self._relative(relative)]
        out = []
        for line in self._git(*args).splitlines():
            commit, when, message = line.split("\x1f", 2)
            out.append(Revision(commit, when, message))
        return out

    def revert_file(self, relative: str, commit: str) -> str:
        """Put ``relative`` back as it was at ``commit``, as a new commit."""
        rel = self._relative(relative)
        if not re.fullmatch(r"[0-9a-f]{4,40}", commit):
            raise WorkspaceError(f"invalid commit {commit!r}: expected a commit id from history")
        try:
            text = self._git("show", f"{commit}:{rel}")
        except WorkspaceError:
            raise WorkspaceError(f"{rel} did not exist at commit {commit[:10]}") from None
        path = self.root / rel
        path.write_text(text)
        return self.commit([path], f"Revert {rel} to {commit[:10]}")

    def _relative(self, relative: str) -> str:
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents or ".git" in path.parts:
            raise WorkspaceError(f"{relative!r} is outside the workspace")
        return str(path.relative_to(self.root.resolve()))
