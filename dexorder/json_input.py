"""Decoding JSON that came from outside (HTTP bodies, WebSocket frames): one place that
says what a platform part accepts, so every door refuses the same things with a 400.

Refused, each with a message saying why:

- not JSON, or not UTF-8; ``NaN``/``Infinity`` (not JSON, and poison to every sum);
- nesting deeper than :data:`MAX_DEPTH` (the standard decoder recurses: a body of 100,000
  ``[`` is a ``RecursionError``, a 500, in whichever handler meets it);
- a string (key or value) holding NUL (PostgreSQL refuses it mid-transaction, C code
  truncates at it), a lone UTF-16 surrogate (``"\\ud800"`` decodes to a ``str`` that
  cannot be encoded again: argon2, the database and the JSON encoder all fail on it), or
  a bidirectional override/isolate control (U+202A-U+202E, U+2066-U+2069: text that
  reads differently from what it is, "Trojan Source", in names, emails and chat).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: The deepest nesting accepted (a real request to the platform uses 3 or 4 levels).
MAX_DEPTH = 32

_FORBIDDEN = re.compile("[\x00\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_NAMES = {"\x00": "NUL"}


class UnsafeInput(ValueError):
    """Input a platform part refuses; the message says why (for a 400 or an error frame)."""


def _no_constant(name: str) -> Any:
    raise UnsafeInput(f"{name} is not a JSON number")


def text_problem(text: str) -> str | None:
    """Why ``text`` is refused, or None if it is acceptable."""
    found = _FORBIDDEN.search(text)
    if found is None:
        return None
    char = found.group()
    if char in _NAMES:
        what = _NAMES[char]
    elif "\ud800" <= char <= "\udfff":
        what = f"a lone surrogate (U+{ord(char):04X})"
    else:
        what = f"a bidirectional control character (U+{ord(char):04X})"
    return f"text may not contain {what}"


def check_value(value: Any, max_depth: int = MAX_DEPTH, check_text: bool = True) -> Any:
    """``value`` (decoded JSON) if no string in it is refused (unless not ``check_text``)
    and it nests at most ``max_depth`` deep; :class:`UnsafeInput` otherwise. Iterative:
    never recurses."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not check_text:
                continue
            problem = text_problem(item)
            if problem:
                raise UnsafeInput(problem)
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise UnsafeInput(f"JSON nested too deeply (at most {max_depth} levels)")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return value


def decode_json(raw: bytes | str, max_depth: int = MAX_DEPTH, check_text: bool = True) -> Any:
    """The JSON value of ``raw``; :class:`UnsafeInput` saying why it is refused.

    ``check_text`` False leaves the strings to the caller: for a document made by someone
    else (a Telegram update: a sender's display name may hold anything), whose fields
    in use are checked with :func:`text_problem` one by one."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except UnsafeInput:
        raise
    except RecursionError:
        raise UnsafeInput(f"JSON nested too deeply (at most {max_depth} levels)") from None
    except UnicodeDecodeError:
        raise UnsafeInput("the body is not UTF-8") from None
    except ValueError as exc:
        raise UnsafeInput(f"not valid JSON: {exc}") from None
    return check_value(value, max_depth, check_text)
