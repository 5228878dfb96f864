"""The online reader's direct decoding of stored values agrees with protobuf's."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("value", [
    {"double_val": 1.5}, {"double_val": -0.0}, {"double_val": float("inf")}, {"double_val": 1e-300},
    {"int64_val": 0}, {"int64_val": 127}, {"int64_val": 128}, {"int64_val": -3}, {"int64_val": 2**62},
    {"string_val": "web"}, {"bool_val": True}, {}, {"null_val": 0}, {"float_val": 2.5}, {"int32_val": 7},
])
def test_stored_values_decode_as_protobuf_reads_them(value):
    from feast.protos.feast.types.Value_pb2 import Value

    from fraud_service.featurestore.online import _decode

    proto = Value(**value)
    kind = proto.WhichOneof("val")
    expected = None if kind in (None, "null_val") else getattr(proto, kind)
    got = _decode(proto.SerializeToString(), Value)
    assert got == expected and type(got) is type(expected)
