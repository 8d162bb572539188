"""Times as people write them (``2024-01-01``, ISO 8601) and as the platform keeps them (ms)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_when(text: str) -> int:
    """``2024-01-01`` or an ISO 8601 time (UTC unless it says otherwise) → epoch ms."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid date {text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def iso(ms: int) -> str:
    """Epoch ms → ``YYYY-MM-DD HH:MM`` (UTC)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
