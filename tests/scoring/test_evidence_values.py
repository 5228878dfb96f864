"""Feature values are stored in the evidence as plain JSON values: NaN and infinities become null."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fraud_service.scoring.evidence import json_value as _json_value


@pytest.mark.parametrize(("value", "stored"), [
    (3, 3), ("web", "web"), (None, None), (True, True), (1.5, 1.5), (float("nan"), None), (float("-inf"), None),
    (np.float64(2.5), 2.5), (np.float64("nan"), None), (np.int64(7), 7), (np.bool_(False), False),
])
def test_feature_values_become_plain_json(value, stored):
    got = _json_value(value)
    assert got == stored and type(got) is type(stored)
    json.dumps(got, allow_nan=False)  # the canonical evidence text refuses NaN: none reaches it


PAYLOADS = [
    {"b": 1e-05, "a": [1.5, 2, None, True, "é\u2028\x01\"\\"], "z": {"y": -0.0, "x": 1e300}, "ä": "ß"},
    {"features": {f"f{i}": i / 7 for i in range(80)}, "contributions": [i * 1e-7 for i in range(81)],
     "response": {"reasons": [{"feature": "cust_inr_90d", "value": 4, "sentence": "4 claims; typical is 0"}]}},
    {"big": 2**70, "nested": {"k": [2**64 + 1]}},  # beyond orjson: the json path
    {},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_writers_fast_text_holds_the_same_json_values_as_the_canonical_text(payload):
    from fraud_service.store import chain

    fast = chain.fast_canonical(payload)
    assert json.loads(fast) == json.loads(chain.canonical(payload)) == payload
    assert fast == chain.fast_canonical(json.loads(fast))  # stable: the text of its own reading
    keys = list(json.loads(fast))
    assert keys == sorted(keys) and " " not in fast.replace("4 claims; typical is 0", "")  # compact


def test_the_fast_text_writes_numpy_values_and_nan_as_json():
    from fraud_service.store import chain

    assert chain.fast_canonical({"x": np.float64(0.25), "n": np.int64(3), "f": float("nan")}) == \
        '{"f":null,"n":3,"x":0.25}'
    with pytest.raises(ValueError, match="not JSON compliant"):
        chain.canonical({"f": float("nan")})  # the general path still refuses it
