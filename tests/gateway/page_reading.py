"""Reading a page in the browser tests, typed: an element's text, a screenshot's pixels."""

from __future__ import annotations

import io

from PIL import Image

RGB = tuple[int, int, int]


def text_of(content: str | None) -> str:
    """An element's ``textContent`` as Playwright gives it: ``None`` is only for a document
    or doctype node, never for an element a selector found."""
    assert content is not None, "no text content"
    return content


def pixels(shot: bytes, step: int = 1) -> list[RGB]:
    """A screenshot's pixels as (r, g, b), every ``step``-th column and row."""
    img = Image.open(io.BytesIO(shot)).convert("RGB")
    out: list[RGB] = []
    for x in range(0, img.width, step):
        for y in range(0, img.height, step):
            pixel = img.getpixel((x, y))
            assert isinstance(pixel, tuple), pixel  # an RGB image: a tuple of three bands
            r, g, b = pixel
            out.append((r, g, b))
    return out
