"""An indicator's declared parameters read from its source without running it, and the
check the page's control, the gateway and the agent share."""

from __future__ import annotations

import pytest

from dexorder.indicator_params import (
    MAX_PARAMS,
    ParamError,
    check_params,
    declared_params,
    parse_params,
)

RSI = '''"""RSI."""
import talib

PARAMS = {"period": 14, "scale": 1.0, "smooth": False, "source": "close", "cap": None}


def compute(candles, period=14, **_):
    return talib.RSI(candles["close"], timeperiod=period)
'''


def test_declared_params_are_its_literal_params() -> None:
    assert declared_params(RSI) == {
        "period": 14,
        "scale": 1.0,
        "smooth": False,
        "source": "close",
        "cap": None,
    }
    assert declared_params("def compute(c):\n    return c['close']\n") == {}
    # computed ones are known only by running the file: None, not a guess
    assert declared_params("PARAMS = dict(period=14)\n") is None
    assert declared_params("PARAMS = {1: 2}\n") is None
    assert declared_params("PARAMS = {\n") is None


def test_given_params_are_checked_against_the_defaults() -> None:
    declared = declared_params(RSI)
    assert declared is not None
    given = parse_params('{"period": 20.0, "scale": 2, "smooth": true, "source": "hl2"}')
    assert check_params("rsi", declared, given) == {
        "period": 20,
        "scale": 2,
        "smooth": True,
        "source": "hl2",
    }
    assert check_params("rsi", declared, {"cap": 3.5}) == {"cap": 3.5}
    for text, why in [
        ('{"length": 9}', "rsi has no parameter 'length' (it takes: cap, period, scale,"),
        ('{"period": 2.5}', "'period' must be a whole number (like 14), not 2.5"),
        ('{"period": "9"}', "'period' must be a whole number (like 14), not '9'"),
        ('{"period": true}', "'period' must be a whole number"),
        ('{"scale": "x"}', "'scale' must be a number (like 1.0)"),
        ('{"smooth": 1}', "'smooth' must be true or false"),
        ('{"source": 5}', "'source' must be text"),
    ]:
        with pytest.raises(ParamError) as err:
            check_params("rsi", declared, parse_params(text))
        assert why in str(err.value), (text, err.value)
    with pytest.raises(ParamError, match="'scale' must be a finite number"):
        check_params("rsi", declared, {"scale": float("nan")})
    for text in ["[1]", '{"scale": 1e999}', '{"period": [9]}', "period=9", '{"period": {"a": 1}}']:
        with pytest.raises(ParamError, match="params must be a JSON object"):
            parse_params(text)


def test_params_as_sent_are_a_json_object_of_at_most_max_params() -> None:
    assert parse_params('{"period": 9, "source": "close"}') == {"period": 9, "source": "close"}
    with pytest.raises(ParamError, match="JSON object"):
        parse_params("[9]")
    many = ", ".join(f'"p{i}": {i}' for i in range(MAX_PARAMS + 1))
    with pytest.raises(ParamError, match=f"at most {MAX_PARAMS} parameters"):
        parse_params("{" + many + "}")
