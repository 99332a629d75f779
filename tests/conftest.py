"""Shared fixtures. Tests never reach a model hub: the bundled model is a local GGUF."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillguard.watermark import WatermarkKey

from . import servers

TESTS = Path(__file__).parent
PROMPT_SAMPLE = TESTS / "data" / "prompts_sample.jsonl"


@pytest.fixture
def key() -> WatermarkKey:
    """A fixed key: a test must not pass or fail by the luck of a random key (a clean text
    scores p < 1e-3 against one key in a thousand)."""
    return WatermarkKey(secret=bytes(range(100, 132)), key_id="wk_fixedtestkey01")


@pytest.fixture(scope="session")
def sample_prompts() -> list[str]:
    lines = PROMPT_SAMPLE.read_text(encoding="utf-8").split("\n")
    return [json.loads(line)["turns"][0] for line in lines if line.strip()]


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The user's model cache, so the one-off GGUF conversion is shared across runs."""
    from distillguard.config import load_settings

    return load_settings().cache_dir


@pytest.fixture(scope="session")
def engine(cache_dir):
    from distillguard.engine.transformers_engine import TransformersEngine

    return TransformersEngine.bundled(cache_dir)


@pytest.fixture(scope="session")
def prompts(sample_prompts) -> list[str]:
    return sample_prompts[:8]


@pytest.fixture(scope="session")
def unwatermarked_answers(engine, prompts):
    return engine.generate(prompts, max_new_tokens=64, seed=1)


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    """Base URL of the fake OpenAI-compatible upstream (tests/fake_upstream.py); stateless."""
    from tests.gateway_stack import fake_upstream

    with fake_upstream() as url:
        yield url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a private redis-server for the whole session (see tests/servers.py)."""
    yield from _serve(servers.redis_server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """SQLAlchemy URL of a private PostgreSQL database for the whole session."""
    yield from _serve(servers.postgres_server)


def _serve(start) -> Iterator[str]:
    # A missing binary is a broken setup, not an optional feature: fail loudly, never skip.
    try:
        with start() as url:
            yield url
    except servers.MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
