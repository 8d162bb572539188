"""RAG over Qdrant: the platform's docs (``user_id`` "0") and each person's own notes.

A search for a person filters ``user_id`` in (person, "0"), so one person's notes never
reach another's prompt. Locally Qdrant is embedded under ``state/gateway/qdrant``; in the
cluster it is the Qdrant server at ``gateway.qdrant_url``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dexorder.embeddings import DIMENSIONS, MAX_TEXT_CHARS, EmbeddingClient

COLLECTION = "knowledge"
GLOBAL = "0"
#: The platform docs shipped with the gateway.
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "knowledge"
_CHUNK_CHARS = 1200


@dataclass(frozen=True)
class Snippet:
    text: str
    source: str
    user_id: str
    score: float


def chunks(markdown: str, limit: int = _CHUNK_CHARS) -> list[str]:
    """Split a document at its headings, then at paragraphs to stay under ``limit``."""
    out: list[str] = []
    for section in re.split(r"\n(?=#{1,3} )", markdown.strip()):
        piece = ""
        for para in section.split("\n\n"):
            if piece and len(piece) + len(para) > limit:
                out.append(piece.strip())
                piece = ""
            piece += para + "\n\n"
        if piece.strip():
            out.append(piece.strip()[:MAX_TEXT_CHARS])
    return out


def _point_id(user: str, source: str, text: str) -> str:
    digest = hashlib.sha256(f"{user}\0{source}\0{text}".encode()).hexdigest()
    return str(uuid.UUID(digest[:32]))


class KnowledgeBase:
    """The ``knowledge`` collection; embeddings from the platform's embedding service."""

    def __init__(self, embedder: EmbeddingClient, path: Path | None = None, url: str | None = None):
        from qdrant_client import QdrantClient, models

        self.embedder = embedder
        self.client = QdrantClient(url=url) if url else QdrantClient(path=str(path))
        if not self.client.collection_exists(COLLECTION):
            self.client.create_collection(
                COLLECTION,
                vectors_config=models.VectorParams(
                    size=DIMENSIONS, distance=models.Distance.COSINE
                ),
            )
        self._lock = asyncio.Lock()  # embedded Qdrant is not safe across threads at once

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def load_folder(self, folder: Path = DEFAULT_FOLDER) -> int:
        """Index the docs of ``folder`` as global knowledge; returns the chunks embedded.

        Unchanged chunks are kept; chunks of changed or removed docs are dropped.
        """
        from qdrant_client import models

        wanted: dict[str, tuple[str, str]] = {}
        for doc in sorted(folder.glob("**/*.md")):
            source = str(doc.relative_to(folder))
            for text in chunks(doc.read_text()):
                wanted[_point_id(GLOBAL, source, text)] = (source, text)
        existing = await self._ids(GLOBAL)
        stale = existing - set(wanted)
        if stale:
            await self._run(self.client.delete, COLLECTION, models.PointIdsList(points=list(stale)))
        new = [pid for pid in wanted if pid not in existing]
        for i in range(0, len(new), 64):
            batch = new[i : i + 64]
            vectors = await self.embedder.embed([wanted[p][1] for p in batch])
            await self._upsert(
                [(p, GLOBAL, *wanted[p], v) for p, v in zip(batch, vectors, strict=True)]
            )
        return len(new)

    async def add(self, user: str, source: str, text: str) -> None:
        """Keep a note of ``user``'s (only their searches find it)."""
        (vector,) = await self.embedder.embed([text[:MAX_TEXT_CHARS]])
        await self._upsert([(_point_id(user, source, text), user, source, text, vector)])

    async def search(self, user: str, query: str, limit: int = 4) -> list[Snippet]:
        from qdrant_client import models

        (vector,) = await self.embedder.embed([query[:MAX_TEXT_CHARS]])
        flt = models.Filter(
            must=[models.FieldCondition(key="user_id", match=models.MatchAny(any=[user, GLOBAL]))]
        )
        found = await self._run(
            self.client.query_points, COLLECTION, query=vector, limit=limit, query_filter=flt
        )
        return [
            Snippet(p.payload["text"], p.payload["source"], p.payload["user_id"], p.score)
            for p in found.points
        ]

    async def forget_person(self, user: str) -> int:
        """Delete every vector of ``user``'s; returns how many there were."""
        from qdrant_client import models

        ids = await self._ids(user)
        if ids:
            await self._run(self.client.delete, COLLECTION, models.PointIdsList(points=list(ids)))
        return len(ids)

    async def _ids(self, user: str) -> set[str]:
        from qdrant_client import models

        flt = models.Filter(
            must=[models.FieldCondition(key="user_id", match=models.MatchValue(value=user))]
        )
        ids: set[str] = set()
        offset = None
        while True:
            points, offset = await self._run(
                self.client.scroll, COLLECTION, scroll_filter=flt, limit=256, offset=offset
            )
            ids |= {str(p.id) for p in points}
            if offset is None:
                return ids

    async def _upsert(self, rows: list[tuple[str, str, str, str, list[float]]]) -> None:
        from qdrant_client import models

        points = [
            models.PointStruct(
                id=pid, vector=vec, payload={"user_id": user, "source": source, "text": text}
            )
            for pid, user, source, text, vec in rows
        ]
        await self._run(self.client.upsert, COLLECTION, points)

    async def close(self) -> None:
        await self.embedder.close()
        self.client.close()
