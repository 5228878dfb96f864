"""Chaos tests run the real service on the trained world (the serving home of the API tests)."""

from tests.api.conftest import serving_home

__all__ = ["serving_home"]
