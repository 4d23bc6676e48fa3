"""Fixtures for the realtime tier's integration tests (helpers live in tests/support/realtime.py)."""

from __future__ import annotations

import pytest

from tests.support.realtime import PUBSUB_LAYER, make_world


@pytest.fixture
def unit_a():
    return make_world("a")


@pytest.fixture
def unit_b():
    return make_world("b")


@pytest.fixture
def channel_layer_at(settings):
    """`channel_layer_at(url, backend=None)`: this process (the publisher) sends through that layer."""

    def point(url: str, backend: str | None = None) -> None:
        default = settings.CHANNEL_LAYERS["default"]
        backend = backend or default["BACKEND"]
        config = {**default["CONFIG"], "hosts": [{**default["CONFIG"]["hosts"][0], "address": url}]}
        if backend == PUBSUB_LAYER:  # the pub/sub layer takes none of the core layer's queue options
            for key in ("capacity", "expiry", "group_expiry"):
                config.pop(key, None)
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend, "CONFIG": config}}  # channels resets its layers

    return point
