"""The rolling conversation summary: what ``context://conversation-summary`` serves.

A turn's prompt carries no history of its own (the gateway keeps none): the summary is
how the model knows what was said. It has two bounded parts: the last
:data:`RECENT` messages nearly as they were (each cut at :data:`RECENT_CHARS`), and
everything older folded into a digest of at most :data:`DIGEST_CHARS` characters. So
the prompt of turn 200 is no larger than that of turn 20.

Folding is extractive (no model needed, deterministic): of each folded message, the
sentences that carry decisions, tickers or numbers (else its first), one line per
message, newest kept when the digest is full; the tickers of every folded message are
kept on a line of their own (the most recent :data:`TICKERS`). A digest written by a
model can take the extractive one's place (:meth:`Digest.written`); later folds add to it.

Pure functions on :class:`SavedMessage` lists; the file it lives in is
:class:`agent.memory.ConversationMemory`'s.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from dexorder.contracts.agent_tools import SavedMessage

#: messages served as they were, newest last
RECENT = 6
#: a recent message is cut at this many characters
RECENT_CHARS = 600
#: the digest of everything older, at most
DIGEST_CHARS = 2_000
#: one folded message's line, at most
LINE_CHARS = 240
#: tickers of folded messages kept
TICKERS = 20

#: the largest the resource can be (digest, tickers line, recent messages, headings)
MAX_CHARS = DIGEST_CHARS + TICKERS * 24 + RECENT * (RECENT_CHARS + 16) + 200

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_TICKER = re.compile(
    r"\b[A-Z][A-Z0-9]{1,11}:[A-Z0-9]{2,10}/[A-Z0-9]{2,10}\b|\b[A-Z]{2,6}/[A-Z]{2,6}\b"
)
_KEY = re.compile(
    r"\b(buy|bought|sell|sold|order|placed|confirm\w*|cancel\w*|decid\w*|will|want|"
    r"prefer|always|never|alert|strategy|indicator|backtest|risk|stop|target|"
    r"watchlist|remember)\b|\d",
    re.I,
)


class Digest(BaseModel):
    """The folded part: how many messages it covers, its lines, the tickers seen."""

    folded: int = 0
    lines: list[str] = Field(default_factory=list)
    tickers: list[str] = Field(default_factory=list)
    #: "extractive", or "model" when a model wrote it (later folds add to it)
    by: Literal["extractive", "model"] = "extractive"
    #: where the messages folded without a model begin (the end of its last digest)
    written_upto: int = 0

    def written(self, text: str, upto: int) -> Digest:
        """A model's digest of the first ``upto`` messages, cut to the cap."""
        lines = [line.strip().removeprefix("- ") for line in text.strip().splitlines()]
        return Digest(
            folded=upto,
            lines=_fit([x for x in lines if x]),
            tickers=self.tickers,
            by="model",
            written_upto=upto,
        )


def key_sentences(text: str) -> str:
    """What one message comes to: its sentences with a decision, ticker or number (else
    its first), on one line of at most :data:`LINE_CHARS`."""
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    if not sentences:
        return ""
    keep = [s for s in sentences if _KEY.search(s) or _TICKER.search(s)] or sentences[:1]
    line = " ".join(keep)
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1].rstrip() + "…"


def fold(digest: Digest, messages: list[SavedMessage]) -> Digest:
    """``digest`` with every message but the last :data:`RECENT` folded in."""
    upto = max(0, len(messages) - RECENT)
    if upto <= digest.folded:
        return digest
    new = messages[digest.folded : upto]
    lines = [f"{m.role}: {line}" for m in new if (line := key_sentences(m.text))]
    tickers = list(digest.tickers)
    for m in new:
        for t in _TICKER.findall(m.text):
            if t in tickers:
                tickers.remove(t)
            tickers.append(t)  # most recent last
    return Digest(
        folded=upto,
        lines=_fit([*digest.lines, *lines]),
        tickers=tickers[-TICKERS:],
        by=digest.by,
        written_upto=digest.written_upto,
    )


def render(digest: Digest, messages: list[SavedMessage]) -> str:
    """The resource's text: the digest, the tickers talked about, the recent messages."""
    parts: list[str] = []
    if digest.lines:
        parts.append("### Earlier (summarised)\n" + "\n".join(f"- {x}" for x in digest.lines))
    if digest.tickers:
        parts.append("Tickers talked about: " + ", ".join(digest.tickers))
    recent = messages[digest.folded :][-RECENT:]
    if recent:
        parts.append(
            "### Recent messages\n"
            + "\n".join(f"- {m.role}: {_cut(m.text, RECENT_CHARS)}" for m in recent)
        )
    return "\n\n".join(parts)


def _fit(lines: list[str]) -> list[str]:
    """The newest lines that fit in :data:`DIGEST_CHARS` (a line and its newline each)."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        line = _cut(line, LINE_CHARS)
        if size + len(line) + 3 > DIGEST_CHARS:
            break
        kept.append(line)
        size += len(line) + 3  # "- " and the newline
    return kept[::-1]


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
