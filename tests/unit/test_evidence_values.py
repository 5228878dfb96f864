"""Feature values are stored in the evidence as plain JSON values: NaN and infinities become null."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fraud_service.assess import _json_value


@pytest.mark.parametrize(("value", "stored"), [
    (3, 3), ("web", "web"), (None, None), (True, True), (1.5, 1.5), (float("nan"), None), (float("-inf"), None),
    (np.float64(2.5), 2.5), (np.float64("nan"), None), (np.int64(7), 7), (np.bool_(False), False),
])
def test_feature_values_become_plain_json(value, stored):
    got = _json_value(value)
    assert got == stored and type(got) is type(stored)
    json.dumps(got, allow_nan=False)  # the canonical evidence text refuses NaN: none reaches it
