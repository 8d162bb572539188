"""An indicator's parameters: the ones it declares (its literal ``PARAMS``, read without
running it) and a check of the ones a person gives against them, so the page's control,
the gateway and the agent refuse the same things with the same words."""

from __future__ import annotations

import ast
import math

import msgspec

from dexorder.contracts.agent_tools import ParamValue, Scalar

#: The most parameters one request may set, and the longest text value.
MAX_PARAMS = 32
MAX_TEXT = 200


class ParamError(ValueError):
    """Parameters that do not fit the indicator; the message says which and why."""


def declared_params(source: str) -> dict[str, ParamValue] | None:
    """The file's top-level ``PARAMS = {...}`` as values (``{}`` when it has none);
    None when it is not a literal of names to values (computed: unknown until run)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found: ast.expr | None = None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "PARAMS" for t in node.targets)
        ) or (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "PARAMS"
        ):
            found = node.value
    if found is None:
        return {}
    try:
        value = ast.literal_eval(found)
        return msgspec.convert(value, dict[str, ParamValue], strict=True)
    except (
        ValueError,
        TypeError,
        SyntaxError,
        MemoryError,
        RecursionError,
        msgspec.ValidationError,
    ):
        return None


def parse_params(text: str) -> dict[str, Scalar]:
    """``params`` as sent (a JSON object of names to numbers, text, true/false or null),
    at most :data:`MAX_PARAMS` of them."""
    try:
        given = msgspec.json.decode(text.encode(), type=dict[str, Scalar])
    except msgspec.DecodeError as exc:
        raise ParamError(
            f"params must be a JSON object of names to numbers, text or true/false: {exc}"
        ) from None
    if len(given) > MAX_PARAMS:
        raise ParamError(f"at most {MAX_PARAMS} parameters")
    return given


def _kind(default: ParamValue) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "text"
    return "any value"


def check_params(
    name: str, declared: dict[str, ParamValue], given: dict[str, Scalar]
) -> dict[str, Scalar]:
    """``given`` made to fit ``declared`` (a whole float such as ``20.0`` for a whole
    number becomes ``20``); :class:`ParamError` for a name it does not take, a value of
    another kind than its default, a number that is not finite, or too much."""
    if len(given) > MAX_PARAMS:
        raise ParamError(f"at most {MAX_PARAMS} parameters")
    out: dict[str, Scalar] = {}
    for key, value in given.items():
        if key not in declared:
            takes = ", ".join(sorted(declared)) or "none"
            raise ParamError(f"{name} has no parameter {key!r} (it takes: {takes})")
        default = declared[key]
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamError(f"{key!r} must be a finite number")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ParamError(f"{key!r} is longer than {MAX_TEXT} characters")
        ok: Scalar = value
        if default is None or isinstance(default, list):
            pass  # no default to compare with: the indicator itself judges it
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ParamError(f"{key!r} must be {_kind(default)}, not {value!r}")
        elif isinstance(default, int):
            if isinstance(value, float) and value.is_integer():
                ok = int(value)
            elif not isinstance(value, int) or isinstance(value, bool):
                raise ParamError(
                    f"{key!r} must be {_kind(default)} (like {default}), not {value!r}"
                )
        elif isinstance(default, float):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ParamError(
                    f"{key!r} must be {_kind(default)} (like {default}), not {value!r}"
                )
        elif not isinstance(value, str):
            raise ParamError(f"{key!r} must be {_kind(default)}, not {value!r}")
        out[key] = ok
    return out
