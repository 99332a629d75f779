"""The store under attack: database errors that would log prompts, IPs and key ids, store
URLs that would echo their password, world-readable SQLite files. Each reproduced against
real parts (the CLI, a gateway process, SQLite and PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy.exc import IntegrityError

from distillguard.store import AccountStore, Event, EventStore, open_engine
from tests.gateway_stack import gateway
from tests.helpers import assert_user_error, mode, run, umask

PASSWORD = "s3cret"


# -- database errors carry no parameter values -----------------------------------------

SQLITE_REFUSE = """
CREATE TRIGGER refuse_events BEFORE INSERT ON events
BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END
"""
# PostgreSQL's DETAIL of a NOT NULL violation lists the whole failing row.
POSTGRES_REFUSE = [
    "CREATE OR REPLACE FUNCTION refuse_events() RETURNS trigger AS $$"
    " BEGIN NEW.request_id := NULL; RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER refuse_events BEFORE INSERT ON events"
    " FOR EACH ROW EXECUTE FUNCTION refuse_events()",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def refusing_store(request, tmp_path) -> Iterator[str]:
    """A store whose events table refuses every insert with an IntegrityError."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        open_engine(url).dispose()
        with sqlite3.connect(tmp_path / "store.db") as conn:
            conn.execute(SQLITE_REFUSE)
        yield url
        return
    url = request.getfixturevalue("postgres_server")
    engine = open_engine(url)
    with engine.begin() as conn:
        for statement in POSTGRES_REFUSE:
            conn.exec_driver_sql(statement)
    try:
        yield url
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_events ON events")
        engine.dispose()


def test_a_refused_insert_names_no_prompt_ip_or_key(refusing_store):
    marker = f"PROMPT-{uuid.uuid4().hex}"
    event = Event(
        ts=time.time(),
        request_id="req-1",
        endpoint="/v1/chat/completions",
        status=200,
        latency_ms=1.0,
        decision="admitted",
        key_id="k3y1d0000feedbeef",
        client_ip="203.0.113.77",
        request={"messages": [{"role": "user", "content": marker}]},
    )
    with pytest.raises(IntegrityError) as raised:
        EventStore(open_engine(refusing_store)).write([event])
    message = str(raised.value)
    assert "SQL parameters hidden" in message
    for value in (marker, "203.0.113.77", "k3y1d0000feedbeef"):
        assert value not in message, message


def test_the_gateway_logs_a_refused_event_without_its_prompt_ip_or_key(upstream, refusing_store):
    issued = AccountStore(open_engine(refusing_store)).issue_key("leaky", "org-leaky")
    marker = f"PROMPT-{uuid.uuid4().hex}"
    body = {"model": "fake-model", "messages": [{"role": "user", "content": marker}]}
    env = {"DISTILLGUARD_GATEWAY__TRUSTED_PROXIES": '["127.0.0.1/32"]'}
    with gateway(upstream, refusing_store, env=env) as stack:
        time.sleep(0.5)
        response = httpx.post(
            stack.url + "/chat/completions",
            json=body,
            headers={
                "authorization": f"Bearer {issued.api_key}",
                "x-forwarded-for": "203.0.113.77",
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        time.sleep(1.0)  # the writer's batch linger, then the refused write
    stderr = stack.process.stderr.read()
    assert "the store refused event" in stderr, stderr[-3000:]
    for value in (marker, "203.0.113.77", issued.record.key_id):
        assert value not in stderr, stderr[-3000:]


# -- store URLs are shown with the password masked --------------------------------------

BAD_STORES = [
    f"postgresql+psycopg://user:{PASSWORD}@127.0.0.1:1/db",  # nothing listens there
    f"postgresql://user:{PASSWORD}@127.0.0.1:1/db?no_such_option=1",
    f"mysql://user:{PASSWORD}@127.0.0.1:1/db",  # unsupported
    f"postgresql+nodriver://user:{PASSWORD}@127.0.0.1:1/db",  # no such driver
    f"postgresql+psycopg://user:{PASSWORD}@127.0.0.1:notaport/db",  # does not parse
]


@pytest.mark.parametrize("url", BAD_STORES)
def test_a_store_url_that_fails_never_shows_its_password(url):
    result = run("keys", "list", "--store", url)
    assert_user_error(result, "store")
    assert PASSWORD not in result.stderr + result.stdout
    assert "***" in result.stderr


def test_serve_and_the_hub_mask_the_store_password_too(tmp_path):
    url = BAD_STORES[0]
    for args in (
        ["serve", "--upstream", "http://127.0.0.1:9/v1", "--store", url],
        ["hub", "collection", "add", "signals", "--store", url],
        ["events", "export", "--store", url],
    ):
        result = run(*args)
        assert_user_error(result, "cannot open the store postgresql+psycopg://user:***@")
        assert PASSWORD not in result.stderr + result.stdout


def test_a_sqlite_store_in_an_impossible_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("keys", "list", "--store", f"sqlite:///{blocker}/sub/store.db")
    assert_user_error(result, "cannot create the store")


# -- the SQLite store is private to its owner -------------------------------------------


def test_a_new_sqlite_store_and_its_folders_are_owner_only(tmp_path, upstream):
    db = tmp_path / "data" / "deeper" / "store.db"
    url = f"sqlite:///{db}"
    with umask(0):  # the most permissive caller: nothing may depend on it
        issued = run("keys", "issue", "--account", "private", "--store", url)
        assert issued.returncode == 0, issued.stderr
        assert mode(tmp_path / "data") == 0o700
        assert mode(tmp_path / "data" / "deeper") == 0o700
        assert mode(db) == 0o600
        with gateway(upstream, url) as stack:  # a running gateway holds the -wal and -shm open
            time.sleep(0.5)
            sdk = openai.OpenAI(base_url=stack.url, api_key=issued.stdout.strip())
            sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            time.sleep(0.5)  # the event is written
            sides = [Path(f"{db}-wal"), Path(f"{db}-shm")]
            assert all(side.exists() for side in sides)
            assert [mode(side) for side in sides] == [0o600, 0o600]
            assert mode(db) == 0o600


def test_an_existing_folder_keeps_its_mode(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with umask(0):
        open_engine(f"sqlite:///{shared / 'store.db'}").dispose()
    assert mode(shared) == 0o755  # not ours to change
    assert mode(shared / "store.db") == 0o600
