"""The private servers really serve: the fixtures other tests build on."""

from __future__ import annotations

import psycopg
import redis


def test_redis_server_answers_ping(redis_server: str) -> None:
    with redis.Redis.from_url(redis_server) as client:
        assert client.ping() is True
        assert client.config_get("save") == {"save": ""}


def test_postgres_server_answers_select(postgres_server: str) -> None:
    conninfo = postgres_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
