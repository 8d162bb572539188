"""The embedding service's cache of recent vectors (the model stands in as a counter: what
is tested is which texts reach it and what comes back)."""

from __future__ import annotations

import numpy as np

from dexorder.tokens import new_keys
from services.embedder.server import Embedder


class CountingModel:
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def encode(self, texts: list[str], **_: object) -> np.ndarray:
        self.seen.append(list(texts))
        return np.array([[float(len(t)), float(ord(t[0]))] for t in texts])


async def test_cached_texts_are_not_embedded_again_and_a_full_cache_keeps_what_is_asked() -> None:
    e = Embedder(new_keys(), cache_size=2)
    model = CountingModel()
    e.model = model
    assert await e.vectors(["ab", "c", "ab"]) == [[2, 97], [1, 99], [2, 97]]
    assert model.seen == [["ab", "c"]]
    # the cache is full and "c", a hit, is its oldest: making room for "xyz" must not lose it
    assert await e.vectors(["c", "xyz"]) == [[1, 99], [3, 120]]
    assert model.seen[-1] == ["xyz"]
    assert list(e.cache) == ["c", "xyz"]  # "ab", least recently used, went
    assert e.stats["cache_hits"] == 2
