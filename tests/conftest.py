"""Shared fixtures: real servers on free ports, nothing mocked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from graphrun.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test (TCP on a free port, plus a unix socket)."""
    with RedisServer(name="test") as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
