"""The gateway under attack: a key-refresh loop that died silently on a non-database error,
an upstream client that followed redirects with the prompt, a one-character admin token.
Each reproduced against a real `distillguard serve` process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest

from distillguard.gateway.auth import KeyRing
from distillguard.gateway.errors import ApiError
from distillguard.store import AccountStore, open_engine
from tests.gateway_stack import gateway
from tests.helpers import EXE, assert_user_error, run
from tests.servers import free_port

# -- the key-refresh loop survives any failure ------------------------------------------


class FlakyAccounts:
    """Fault injection: the real store, whose key reload raises while `failing` is set."""

    def __init__(self, real: AccountStore) -> None:
        self.real = real
        self.failing = False
        self.calls = 0

    def active_keys(self):
        self.calls += 1
        if self.failing:
            raise RuntimeError("injected failure")
        return self.real.active_keys()


def test_key_refresh_survives_a_non_database_error(tmp_path, caplog, monkeypatch):
    from distillguard.gateway import auth

    monkeypatch.setattr(auth, "STALE_FLOOR_SECONDS", 0.0)  # stale after three 0.05 s intervals
    real = AccountStore(open_engine(f"sqlite:///{tmp_path / 'store.db'}"))
    issued = real.issue_key("victim")
    flaky = FlakyAccounts(real)

    async def scenario() -> None:
        ring = KeyRing(flaky, refresh_seconds=0.05)  # type: ignore[arg-type]
        await ring.start()
        try:
            assert ring.healthy and ring.last_refresh is not None
            ring.authenticate(f"Bearer {issued.api_key}")
            flaky.failing = True
            await asyncio.sleep(0.6)  # a dozen failed reloads
            assert not ring.healthy  # stale: a /healthz can say so
            ring.authenticate(f"Bearer {issued.api_key}")  # still served from the last copy
            stale_at = ring.last_refresh
            flaky.failing = False
            real.revoke_key(issued.record.key_id)
            for _ in range(100):
                await asyncio.sleep(0.05)
                if ring.healthy and ring.last_refresh > stale_at:
                    break
            assert ring.healthy and ring.last_refresh > stale_at
            with pytest.raises(ApiError) as refused:
                ring.authenticate(f"Bearer {issued.api_key}")
            assert refused.value.status == 401
        finally:
            await ring.close()

    with caplog.at_level(logging.ERROR, logger="distillguard.gateway.auth"):
        asyncio.run(scenario())
    assert flaky.calls > 12
    failures = [r for r in caplog.records if "key refresh failed" in r.getMessage()]
    assert len(failures) == 1  # a dozen failures, one line (throttled)
    assert failures[0].exc_info is not None  # an unexpected error comes with its traceback


def test_revocation_reaches_a_gateway_after_a_bad_key_row(upstream, tmp_path):
    """A row the key table cannot read (a limit of 0, written by hand) made the refresh raise
    a non-database error, which ended the loop: later revocations never arrived."""
    store = f"sqlite:///{tmp_path / 'store.db'}"
    accounts = AccountStore(open_engine(store))
    victim = accounts.issue_key("victim").api_key
    odd = accounts.issue_key("odd").record.key_id

    def chat() -> int:
        headers = {"authorization": f"Bearer {victim}"}
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        return httpx.post(stack.url + "/chat/completions", json=body, headers=headers).status_code

    def set_rpm(value: int | None) -> None:
        with sqlite3.connect(tmp_path / "store.db") as conn:
            conn.execute("UPDATE api_keys SET rpm = ? WHERE key_id = ?", (value, odd))

    with gateway(upstream, store) as stack:  # reloads every 0.2 s
        time.sleep(0.5)
        assert chat() == 200
        set_rpm(0)
        health = stack.url.removesuffix("/v1") + "/healthz"
        deadline = time.monotonic() + 10  # stale after 5 s without a reload
        while (failing := httpx.get(health)).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        set_rpm(None)
        deadline = time.monotonic() + 5
        while httpx.get(health).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (failing.status_code, failing.json()) == (503, {"status": "key refresh failing"})
        assert httpx.get(health).status_code == 200
        revoked = run("keys", "revoke", victim.split("-")[1], "--store", store)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 5
        while chat() != 401 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert chat() == 401
    stderr = stack.process.stderr.read()
    assert stderr.count("key refresh failed") == 1, stderr[-3000:]
    assert "InvalidLimitError" in stderr


# -- redirects from the upstream are never followed -------------------------------------

REDIRECTS = {
    "/v1/chat/completions": 307,
    "/v1/completions": 308,
    "/v1/embeddings": 301,
    "/v1/models": 302,
}


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def redirecting_upstream() -> Iterator[tuple[str, list]]:
    """An upstream answering every request with a redirect to a second server, which records
    whatever reaches it (and would answer it, so a followed redirect would succeed)."""
    received: list[tuple[str, str, bytes]] = []

    class Sink(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            received.append((self.command, self.path, body))
            answer = json.dumps({"object": "list", "data": []}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _any

        def log_message(self, *args) -> None:
            pass

    with http_server(Sink) as sink:

        class Redirect(BaseHTTPRequestHandler):
            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(REDIRECTS.get(self.path, 307))
                self.send_header("location", sink + self.path)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = _any

            def log_message(self, *args) -> None:
                pass

        with http_server(Redirect) as upstream:
            yield upstream + "/v1", received


def test_an_upstream_redirect_is_a_502_and_the_prompt_goes_nowhere_else(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    key = AccountStore(open_engine(store)).issue_key("redirected").api_key
    chat = {"model": "m", "messages": [{"role": "user", "content": "a secret prompt"}]}
    requests = [
        ("/chat/completions", chat),
        ("/chat/completions", {**chat, "stream": True}),
        ("/completions", {"model": "m", "prompt": "a secret prompt"}),
        ("/embeddings", {"model": "m", "input": "a secret prompt"}),
    ]
    with redirecting_upstream() as (upstream, received), gateway(upstream, store) as stack:
        time.sleep(0.5)
        sdk = openai.OpenAI(base_url=stack.url, api_key=key, max_retries=0)
        with pytest.raises(openai.APIStatusError) as raised:
            sdk.chat.completions.create(**chat)
        assert raised.value.status_code == 502
        headers = {"authorization": f"Bearer {key}"}
        answers = [
            httpx.post(stack.url + path, json=body, headers=headers) for path, body in requests
        ]
        answers.append(httpx.get(stack.url + "/models", headers=headers))
    assert received == []
    for answer in answers:
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "upstream_error"
        assert "redirect" in error["message"] and "not followed" in error["message"]


# -- the admin token must be long enough to resist guessing -----------------------------


def refused_serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`serve` that must refuse to start: a gateway that starts anyway fails the test."""
    store = f"sqlite:///{tmp_path / 's.db'}"
    args = ["serve", "--upstream", "http://127.0.0.1:9/v1", "--port", str(free_port())]
    return subprocess.run(
        [EXE, *args, "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("token", ["x", "short-admin-token-31-characters"])
def test_a_short_admin_token_is_refused_in_one_line(tmp_path, token):
    result = refused_serve(tmp_path, env={"DISTILLGUARD_GATEWAY__ADMIN_TOKEN": token})
    assert_user_error(result, "gateway.admin_token")
    assert "at least 32 characters" in result.stderr
    if len(token) > 1:
        assert token not in result.stderr  # the secret is never echoed


def test_a_short_admin_token_in_the_config_file_is_refused(tmp_path):
    config = tmp_path / "distillguard.toml"
    config.write_text('[gateway]\nadmin_token = "short"\n')
    result = refused_serve(tmp_path, env={"DISTILLGUARD_CONFIG": str(config)})
    assert_user_error(result, "gateway.admin_token")


def test_a_32_character_admin_token_opens_the_admin_api(upstream, tmp_path):
    token = "z" * 32
    store = f"sqlite:///{tmp_path / 'store.db'}"
    with gateway(upstream, store, env={"DISTILLGUARD_GATEWAY__ADMIN_TOKEN": token}) as stack:
        admin = stack.url.removesuffix("/v1") + "/admin/keys"
        allowed = httpx.get(admin, headers={"authorization": f"Bearer {token}"})
        refused = httpx.get(admin, headers={"authorization": f"Bearer {token[:-1]}"})
    assert allowed.status_code == 200, allowed.text
    assert refused.status_code == 401
