"""Sentence embeddings from the platform's embedding service (``services/embedder``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TEXTS = 256
MAX_TEXT_CHARS = 8_000


class EmbeddingUnavailable(RuntimeError):
    """The embedding service could not embed the texts; the message says why."""


class EmbeddingClient:
    """Embeds texts through the service at ``url``; ``token()`` gives a platform token."""

    def __init__(self, url: str, token: Callable[[], str], timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/embed"
        self.token = token
        self.timeout_s = timeout_s
        self._http: aiohttp.ClientSession | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    def _session(self) -> aiohttp.ClientSession:
        # one session (and its kept-alive connections) for all requests of this loop
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.closed or self._http_loop is not loop:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            self._http_loop = loop
        return self._http

    async def close(self) -> None:
        if self._http is not None and not self._http.closed:
            await self._http.close()
        self._http = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One L2-normalised vector of :data:`DIMENSIONS` floats per text.

        Waits (up to the timeout) while the service is still loading its model.
        """
        if not texts:
            return []
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:
            status, body = await self._post(texts)
            if status == 200:
                vectors = body["vectors"]
                assert isinstance(vectors, list)
                return vectors
            if status != 503 or asyncio.get_running_loop().time() > deadline:
                raise EmbeddingUnavailable(
                    f"embedding service answered {status}: {body.get('error', body)}"
                )
            await asyncio.sleep(0.25)  # the model is loading

    async def _post(self, texts: list[str]) -> tuple[int, dict[str, object]]:
        try:
            token = self.token()
        except ValueError as exc:  # e.g. a process that holds only the public key
            raise EmbeddingUnavailable(f"no token for the embedding service: {exc}") from None
        try:
            async with self._session().post(
                self.url, json={"texts": texts}, headers={"Authorization": f"Bearer {token}"}
            ) as r:
                body = await r.json(content_type=None)
                return r.status, body if isinstance(body, dict) else {"error": body}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EmbeddingUnavailable(
                f"embedding service at {self.url} unreachable: {exc or type(exc).__name__}"
            ) from None
