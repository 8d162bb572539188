"""Secrets made on first use: kept 0600, made once, the first maker wins a race."""

from __future__ import annotations

import os
from pathlib import Path

from dexorder.secret_files import secret_file


def test_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    assert secret_file(path, lambda: "first") == "first"
    assert secret_file(path, lambda: "second") == "first"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]  # no temp file left


def test_a_process_that_made_it_meanwhile_wins(tmp_path: Path) -> None:
    path = tmp_path / "secret"

    def make() -> str:
        path.write_text("theirs")  # another process finishes first
        return "mine"

    assert secret_file(path, make) == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]
