"""The person's conversation: every message kept, and searchable by meaning.

Messages are appended to ``messages.jsonl`` (the record; nothing is lost if
the embedding service is down) and indexed in an embedded Qdrant collection
with all-MiniLM-L6-v2 vectors from the platform's embedding service.
Messages not yet indexed are indexed on the next save or search; after the embedding
service failed, not again for ``RETRY_AFTER_S`` (each try re-sends everything not yet
indexed, and a turn's save and search would each wait for the failure). Where the
platform runs no embedding service (``embedder.enabled: false``) nothing is indexed and a
search says so at once.

Each save also folds what fell out of the recent window into the rolling summary
(``summary.json``, :mod:`agent.summary`), served as ``context://conversation-summary``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from agent.summary import Digest, fold, render
from dexorder.contracts.agent_tools import ConversationDigest, ConversationMatch, SavedMessage
from dexorder.embeddings import DIMENSIONS, MAX_TEXT_CHARS, EmbeddingClient

Role = Literal["user", "assistant"]
COLLECTION = "messages"
#: After the embedding service failed, how long saves and searches do not try it again.
RETRY_AFTER_S = 30.0


class MemoryRequestError(ValueError):
    """A bad request to the conversation memory."""


class ConversationMemory:
    """Messages of one person, in ``folder``."""

    def __init__(self, folder: Path, embedder: EmbeddingClient | None) -> None:
        """``embedder`` None: the platform has no embedding service (search is off)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "messages.jsonl"
        self.indexed_path = folder / "indexed_upto"
        self.qdrant_path = folder / "qdrant"
        self.summary_path = folder / "summary.json"
        #: the log as last read, and its size then: each save and each turn's summary
        #: would otherwise parse the whole conversation again
        self._read: tuple[int, list[SavedMessage]] = (0, [])
        self.embedder = embedder
        self._client: Any = None
        self._lock = asyncio.Lock()  # the log file: appends and reads
        self._index_lock = asyncio.Lock()  # one indexing at a time
        self._indexer: asyncio.Task[bool] | None = None
        #: monotonic time before which the embedding service is not tried again
        self._down_until = 0.0

    def _qdrant(self) -> Any:
        if self._client is None:
            from qdrant_client import QdrantClient, models

            self._client = QdrantClient(path=str(self.qdrant_path))
            if not self._client.collection_exists(COLLECTION):
                self._client.create_collection(
                    COLLECTION,
                    vectors_config=models.VectorParams(
                        size=DIMENSIONS, distance=models.Distance.COSINE
                    ),
                )
        return self._client

    def messages(self) -> list[SavedMessage]:
        """Every message kept, oldest first (the log holds :class:`SavedMessage` lines)."""
        if not self.log_path.is_file():
            return []
        size, messages = self._read
        now = self.log_path.stat().st_size
        if now != size:  # appended to since (or replaced): read what is new, or all again
            with self.log_path.open("rb") as f:
                if now > size > 0:
                    f.seek(size)
                else:
                    messages = []
                data = f.read()
            whole = data[: data.rfind(b"\n") + 1]  # a line still being written waits
            messages = messages + [
                SavedMessage.model_validate_json(line) for line in whole.splitlines() if line
            ]
            self._read = (size + len(whole) if now > size > 0 else len(whole), messages)
        return list(messages)

    async def save(self, role: str, text: str, channel: str = "chat") -> SavedMessage:
        """Keep a message (on disk before this returns); it is indexed in the background,
        with any the embedder missed before, and a search waits for that."""
        if role not in ("user", "assistant"):
            raise MemoryRequestError(f"invalid role {role!r}: expected user or assistant")
        if not text.strip():
            raise MemoryRequestError("an empty message is not saved")
        if len(text) > 100_000:
            raise MemoryRequestError("a message is at most 100,000 characters")
        message = SavedMessage(
            id=str(uuid.uuid4()),
            role="user" if role == "user" else "assistant",  # checked above
            text=text,
            channel=channel[:32],
            time=int(time.time() * 1000),
        )
        async with self._lock:
            with self.log_path.open("a") as f:
                f.write(message.model_dump_json() + "\n")
            digest = self._digest()
            folded = fold(digest, self.messages())
            if folded is not digest:
                self._keep(folded)
        if self._can_index() and (self._indexer is None or self._indexer.done()):
            # a save does not wait for the embedder (~10 ms a message); an indexer already
            # running picks this message up in its next round
            self._indexer = asyncio.create_task(self._index_pending())
        return message

    def _digest(self) -> Digest:
        if not self.summary_path.is_file():
            return Digest()
        return Digest.model_validate_json(self.summary_path.read_text())

    def _keep(self, digest: Digest) -> None:
        tmp = self.summary_path.with_suffix(".tmp")
        tmp.write_text(digest.model_dump_json())
        tmp.replace(self.summary_path)  # never half a file

    def summary(self) -> str:
        """The rolling summary: older messages folded, the recent ones as they were."""
        return render(self._digest(), self.messages())

    def digest(self, cut: int = 1_000) -> ConversationDigest:
        """The folded part, with the messages folded since a model last wrote it."""
        digest = self._digest()
        unwritten = self.messages()[digest.written_upto : digest.folded]
        return ConversationDigest(
            folded=digest.folded,
            by=digest.by,
            lines=digest.lines,
            unwritten=[f"{m.role}: {m.text[:cut]}" for m in unwritten],
        )

    async def write_summary(self, text: str, upto: int) -> Digest:
        """A model's digest of the first ``upto`` messages in place of the folded one."""
        async with self._lock:
            count = len(self.messages())
            if not 0 < upto <= count:
                raise MemoryRequestError(f"upto must be 1 to {count}, the messages kept")
            digest = self._digest().written(text, upto)
            self._keep(fold(digest, self.messages()))
            return digest

    async def flush(self) -> bool:
        """Index what is not indexed yet; False if the embedding service is down."""
        return await self._index_pending()

    def _can_index(self) -> bool:
        return self.embedder is not None and time.monotonic() >= self._down_until

    async def _index_pending(self) -> bool:
        """Index the messages after the last indexed one; False if the embedder is down
        (or off, or failed less than ``RETRY_AFTER_S`` ago)."""
        from qdrant_client import models

        from dexorder.embeddings import EmbeddingUnavailable

        while True:
            async with self._index_lock:
                # checked under the lock: a try that waited for it may follow a failure
                if self.embedder is None or not self._can_index():
                    return False
                done = int(self.indexed_path.read_text()) if self.indexed_path.is_file() else 0
                async with self._lock:  # a save does not wait for an embedding
                    todo = self.messages()[done:]
                if not todo:
                    return True
                try:
                    vectors = await self.embedder.embed([m.text[:MAX_TEXT_CHARS] for m in todo])
                except EmbeddingUnavailable:
                    self._down_until = time.monotonic() + RETRY_AFTER_S
                    return False
                points = [
                    models.PointStruct(id=m.id, vector=v, payload=m.model_dump())
                    for m, v in zip(todo, vectors, strict=True)
                ]
                await asyncio.to_thread(self._qdrant().upsert, COLLECTION, points)
                self.indexed_path.write_text(str(done + len(todo)))

    async def search(
        self, query: str, limit: int = 5, role: str | None = None
    ) -> list[ConversationMatch]:
        """The messages closest in meaning to ``query``, best first."""
        from qdrant_client import models

        if not query.strip():
            raise MemoryRequestError("the query is empty")
        from dexorder.embeddings import EmbeddingUnavailable

        if self.embedder is None:
            raise EmbeddingUnavailable("search by meaning is off: this platform runs no embedder")
        if not await self._index_pending():
            raise EmbeddingUnavailable("the embedding service is unavailable; try again shortly")
        try:
            (vector,) = await self.embedder.embed([query[:MAX_TEXT_CHARS]])
        except EmbeddingUnavailable:
            self._down_until = time.monotonic() + RETRY_AFTER_S
            raise
        flt = (
            models.Filter(
                must=[models.FieldCondition(key="role", match=models.MatchValue(value=role))]
            )
            if role
            else None
        )
        found = await asyncio.to_thread(
            self._qdrant().query_points, COLLECTION, query=vector, limit=limit, query_filter=flt
        )
        return [
            ConversationMatch.model_validate({**p.payload, "score": round(float(p.score), 4)})
            for p in found.points
        ]

    async def aclose(self) -> None:
        """Finish the indexing under way, then close."""
        if self._indexer is not None and not self._indexer.done():
            await asyncio.wait({self._indexer})
        if self.embedder is not None:
            await self.embedder.close()
        self.close()

    def close(self) -> None:
        if self._indexer is not None and not self._indexer.done():
            self._indexer.cancel()
        if self._client is not None:
            self._client.close()
            self._client = None
