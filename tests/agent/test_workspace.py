"""The git-versioned workspace: commits, history, revert, and names that stay inside."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.workspace import Workspace, WorkspaceError


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "workspace")


def test_each_write_is_a_commit_saying_what_changed(ws: Workspace) -> None:
    ws.write("strategies", "breakout", "A = 1\n")
    ws.write("strategies", "breakout", "A = 2\n")
    assert ws.read("strategies", "breakout") == "A = 2\n"
    assert [r.message for r in ws.history("strategies/breakout.py")] == [
        "Update strategy breakout",
        "Add strategy breakout",
    ]
    log = subprocess.run(
        ["git", "-C", str(ws.root), "status", "--porcelain"], capture_output=True, text=True
    )
    assert log.stdout == ""  # nothing left uncommitted
    same = ws.head()
    assert ws.write("strategies", "breakout", "A = 2\n") == same  # unchanged: no commit


def test_revert_brings_back_an_old_version_as_a_new_commit(ws: Workspace) -> None:
    ws.write("indicators", "rsi", "V = 1\n")
    first = ws.head()
    ws.write("indicators", "rsi", "V = 2\n")
    ws.revert_file("indicators/rsi.py", first)
    assert ws.read("indicators", "rsi") == "V = 1\n"
    assert ws.history("indicators/rsi.py")[0].message == f"Revert indicators/rsi.py to {first[:10]}"
    with pytest.raises(WorkspaceError, match="did not exist"):
        ws.revert_file("indicators/other.py", first)
    with pytest.raises(WorkspaceError, match="invalid commit"):
        ws.revert_file("indicators/rsi.py", "HEAD~1; rm -rf /")


def test_a_new_workspace_has_the_examples(ws: Workspace) -> None:
    assert ws.names("strategies") == ["rsi_reversion", "sma_cross"]
    assert ws.names("indicators") == ["rsi"]
    assert ws.history()[0].message == "Create the workspace with the examples"


@pytest.mark.parametrize("name", ["../x", "a/b", "x.y", "", "9lives", ".hidden", "a" * 65])
def test_names_cannot_leave_the_workspace(ws: Workspace, name: str) -> None:
    with pytest.raises(WorkspaceError, match="invalid name"):
        ws.write("strategies", name, "x")


@pytest.mark.parametrize(
    "path", ["../secrets.yaml", "/etc/passwd", ".git/config", "strategies/../../x"]
)
def test_history_and_revert_paths_stay_inside(ws: Workspace, path: str) -> None:
    with pytest.raises(WorkspaceError, match="outside the workspace"):
        ws.history(path)


def test_reading_a_missing_file_lists_what_there_is(ws: Workspace) -> None:
    ws.write("strategies", "a", "")
    with pytest.raises(
        WorkspaceError, match=r"no strategy named 'b' \(have: a, rsi_reversion, sma_cross\)"
    ):
        ws.read("strategies", "b")
    with pytest.raises(WorkspaceError, match="unknown kind"):
        ws.names("secrets")
