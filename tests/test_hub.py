"""The exchange hub as members use it: `distillguard hub serve` on loopback, the OASIS
taxii2-client for discovery, collections, paging and publishing, stix2 to parse what
comes back, and plain HTTP for what a careless or hostile client sends."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import stix2
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from distillguard.exchange import tlp
from distillguard.exchange.hub.schema import metadata
from distillguard.exchange.hub.store import HubStore
from distillguard.exchange.hub.taxii import TAXII
from distillguard.store import open_engine
from tests.gateway_stack import hub_member, hub_server
from tests.helpers import assert_user_error, run


@dataclass
class Hub:
    url: str  # the API root
    store: str
    tokens: dict[str, str]
    collections: dict[str, str]  # name -> id

    def client(self, member: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.tokens[member]}", "Accept": TAXII},
        )


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[Hub]:
    store = f"sqlite:///{tmp_path_factory.mktemp('hub') / 'hub.db'}"
    collections = {}
    for name in ("signals", "private"):
        result = run("hub", "collection", "add", name, "--store", store)
        assert result.returncode == 0, result.stderr
        collections[name] = result.stdout.strip()
    members = {
        "acme": ["--org", "acme", "--read", "signals", "--write", "signals"],
        "acme-eu": ["--org", "acme", "--read", "signals"],  # same organisation as acme
        "globex": ["--read", "signals", "--write", "signals"],
        "writer": ["--write", "signals"],  # may publish, not read
        "ghost": ["--write", "signals", "--read", "signals", "--anonymous"],
    }
    tokens = {name: hub_member(store, name, *flags) for name, flags in members.items()}
    with hub_server(store) as url:
        yield Hub(url, store, tokens, collections)


def _indicator(level: str = "green", name: str = "shared template", **extra) -> dict:
    made = stix2.v21.Indicator(
        name=name,
        pattern="[user-account:user_id = 'k1:00ff']",
        pattern_type="stix",
        valid_from="2026-11-01T00:00:00Z",
        object_marking_refs=[tlp.MARKING_IDS[level]],
        **extra,
    )
    return json.loads(made.serialize())


def _collection(hub: Hub, member: str, name: str = "signals") -> Collection:
    return Collection(
        f"{hub.url}collections/{hub.collections[name]}/",
        user=member,
        password=hub.tokens[member],
    )


def test_taxii2_client_discovers_publishes_and_pages(hub):
    server = Server(hub.url.replace("/api/", "/taxii2/"), user="acme", password=hub.tokens["acme"])
    assert server.title == "distillguard exchange hub"
    (root,) = server.api_roots
    assert isinstance(root, ApiRoot) and root.url == hub.url
    titles = {c.title: c for c in root.collections}
    assert set(titles) == {"signals"}  # acme has no right on "private"
    signals = titles["signals"]
    assert signals.can_read and signals.can_write

    published = [_indicator(name=f"template {i}") for i in range(25)]
    status = signals.add_objects({"objects": published})  # a TAXII envelope
    assert status.status == "complete"
    assert status.success_count == 25 and status.failure_count == 0

    seen = []
    for page in as_pages(signals.get_objects, per_request=10):
        seen += page.get("objects", [])
    assert {o["id"] for o in published} <= {o["id"] for o in seen}
    for obj in seen:  # every object served parses as STIX 2.1
        stix2.parse(obj, allow_custom=True)

    one = signals.get_object(published[3]["id"])
    assert [o["name"] for o in one["objects"]] == ["template 3"]
    manifest = signals.get_manifest()
    assert {o["id"] for o in manifest["objects"]} >= {o["id"] for o in published}
    assert all(o["media_type"] == "application/stix+json;version=2.1" for o in manifest["objects"])


def test_versions_paging_headers_and_filters(hub):
    client = hub.client("acme")
    base = f"collections/{hub.collections['signals']}/"
    first = _indicator(name="v1")
    later = {**first, "name": "v2", "modified": "2030-01-01T00:00:00.000Z"}
    for obj in (first, later):
        response = client.post(
            f"{base}objects/", json={"objects": [obj]}, headers={"Content-Type": TAXII}
        )
        assert response.status_code == 202, response.text
    object_url = f"{base}objects/{first['id']}/"
    latest = client.get(object_url)
    assert latest.headers["content-type"] == TAXII
    assert [o["name"] for o in latest.json()["objects"]] == ["v2"]  # match[version]=last
    every = client.get(object_url, params={"match[version]": "all"}).json()["objects"]
    assert sorted(o["name"] for o in every) == ["v1", "v2"]
    oldest = client.get(object_url, params={"match[version]": "first"}).json()["objects"]
    assert [o["name"] for o in oldest] == ["v1"]
    versions = client.get(f"{object_url}versions/").json()
    assert versions["versions"] == sorted(versions["versions"]) and len(versions["versions"]) == 2

    page = client.get(f"{base}objects/", params={"limit": 2})
    assert page.status_code == 200
    body = page.json()
    assert body["more"] is True and len(body["objects"]) == 2 and body["next"]
    assert page.headers["X-TAXII-Date-Added-First"] <= page.headers["X-TAXII-Date-Added-Last"]
    after = client.get(
        f"{base}objects/",
        params={"added_after": page.headers["X-TAXII-Date-Added-Last"], "match[id]": first["id"]},
    ).json()
    assert all(o["id"] == first["id"] for o in after["objects"])
    only = client.get(f"{base}objects/", params={"match[type]": "campaign"}).json()
    assert only["objects"] == []


def test_tlp_red_stays_with_its_publisher_and_amber_strict_within_its_org(hub):
    acme, acme_eu, globex = hub.client("acme"), hub.client("acme-eu"), hub.client("globex")
    base = f"collections/{hub.collections['signals']}/objects/"
    red, strict, amber = _indicator("red"), _indicator("amber+strict"), _indicator("amber")
    response = acme.post(
        base, json={"objects": [red, strict, amber]}, headers={"Content-Type": TAXII}
    )
    assert response.status_code == 202

    def ids(client: httpx.Client) -> set[str]:
        return {o["id"] for o in client.get(base, params={"limit": 1000}).json()["objects"]}

    assert {red["id"], strict["id"], amber["id"]} <= ids(acme)
    assert strict["id"] in ids(acme_eu) and red["id"] not in ids(acme_eu)
    assert amber["id"] in ids(globex)
    assert not {red["id"], strict["id"]} & ids(globex)
    assert globex.get(f"{base}{red['id']}/").status_code == 404  # not even by id


def test_only_the_publishers_organisation_may_version_an_object(hub):
    """Another member cannot revoke or rewrite an indicator by posting a newer version."""
    acme, acme_eu, globex = hub.client("acme"), hub.client("acme-eu"), hub.client("globex")
    base = f"collections/{hub.collections['signals']}/objects/"
    original = _indicator("amber", name="acme's finding")
    assert acme.post(base, json={"objects": [original]}, headers={"Content-Type": TAXII}).is_success
    forged = {**original, "revoked": True, "modified": "2031-01-01T00:00:00.000Z"}
    posted = globex.post(base, json={"objects": [forged]}, headers={"Content-Type": TAXII})
    assert posted.status_code == 202
    status = posted.json()
    assert status["failure_count"] == 1 and status["success_count"] == 0
    assert "publisher's organisation" in status["failures"][0]["message"]
    (latest,) = acme_eu.get(f"{base}{original['id']}/").json()["objects"]
    assert latest.get("revoked") is not True and latest["modified"] == original["modified"]


def test_rights_and_tokens(hub):
    base = f"collections/{hub.collections['signals']}/"
    anonymous = httpx.Client(base_url=hub.url, headers={"Accept": TAXII})
    assert httpx.get(hub.url.replace("/api/", "/taxii2/")).status_code == 200  # discovery is open
    for path in ("", "collections/", base, f"{base}objects/", f"{base}manifest/"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert response.json()["http_status"] == "401"
        assert response.headers["content-type"] == TAXII
    wrong = anonymous.get("collections/", headers={"Authorization": "Bearer dgx-not-a-token"})
    assert wrong.status_code == 401
    writer = hub.client("writer")
    assert writer.get(f"{base}objects/").status_code == 403
    assert (
        writer.post(
            f"{base}objects/", json={"objects": [_indicator()]}, headers={"Content-Type": TAXII}
        ).status_code
        == 202
    )
    private = f"collections/{hub.collections['private']}/objects/"
    assert hub.client("acme").get(private).status_code == 404  # no right: does not exist
    assert (
        hub.client("acme-eu")
        .post(f"{base}objects/", json={"objects": [_indicator()]}, headers={"Content-Type": TAXII})
        .status_code
        == 403
    )


def test_anonymous_publisher_is_shown_as_the_hub(hub):
    author = f"identity--{uuid.uuid4()}"
    obj = _indicator(created_by_ref=author)
    ghost = hub.client("ghost")
    base = f"collections/{hub.collections['signals']}/objects/"
    assert (
        ghost.post(base, json={"objects": [obj]}, headers={"Content-Type": TAXII}).status_code
        == 202
    )
    served = hub.client("globex").get(f"{base}{obj['id']}/").json()["objects"][0]
    assert served["created_by_ref"] != author and served["created_by_ref"].startswith("identity--")


def test_bad_requests_get_taxii_errors_and_write_nothing(hub):
    client = hub.client("acme")
    base = f"collections/{hub.collections['signals']}/objects/"

    def count() -> int:
        return len(
            client.get(base, params={"limit": 1000, "match[version]": "all"}).json()["objects"]
        )

    before = count()
    taxii = {"Content-Type": TAXII}
    good, bad = _indicator(), {**_indicator(), "id": "indicator--not-a-uuid"}
    cases = [
        (client.post(base, content=b"{not json", headers=taxii), 422),
        (client.post(base, json={"objects": [good, bad]}, headers=taxii), 422),
        (client.post(base, json={"objects": []}, headers=taxii), 422),
        (
            client.post(base, json={"objects": [{**good, "modified": "yesterday"}]}, headers=taxii),
            422,
        ),
        (
            client.post(
                base, json={"objects": [{**good, "created_by_ref": {"x": 1}}]}, headers=taxii
            ),
            422,
        ),
        (
            client.post(
                base, json={"objects": [good]}, headers={"Content-Type": "application/json"}
            ),
            415,
        ),
        (client.get(base, headers={"Accept": "text/html"}), 406),
        (client.get(base, params={"limit": "0"}), 400),
        (client.get(base, params={"added_after": "last week"}), 400),
        (client.get(base, params={"next": "abc"}), 400),
        (client.get(f"collections/{uuid.uuid4()}/objects/"), 404),
        (client.get("status/no-such-status/"), 404),
        (client.delete(base), 405),
        (client.post(base, content=b"x" * (10 * 1024 * 1024 + 1), headers=taxii), 413),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert body["http_status"] == str(status) and body["title"]
    assert "objects[1]" in cases[1][0].json()["description"]  # names the object at fault
    assert count() == before  # the envelope with one bad object wrote nothing


def test_expired_tokens_are_refused_and_every_request_is_audited(hub):
    result = run(
        "hub",
        "member",
        "add",
        "brief",
        "--read",
        "signals",
        "--expires-days",
        "0.00002",
        "--store",
        hub.store,
    )  # a token for ~2 s
    assert result.returncode == 0, result.stderr
    brief = httpx.Client(
        base_url=hub.url, headers={"Authorization": f"Bearer {result.stdout.strip()}"}
    )
    deadline = time.monotonic() + 10
    while brief.get("collections/").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert brief.get("collections/").status_code == 401

    base = f"collections/{hub.collections['signals']}/objects/"
    acme = hub.client("acme")
    assert (
        acme.post(
            base, json={"objects": [_indicator()]}, headers={"Content-Type": TAXII}
        ).status_code
        == 202
    )
    assert acme.get(base).status_code == 200
    assert hub.client("writer").get(base).status_code == 403
    log = HubStore(open_engine(hub.store, schema=metadata)).audit_log()
    actions = {(row["member_id"], row["action"]) for row in log}
    assert {("acme", "publish"), ("acme", "read"), ("writer", "refuse")} <= actions
    published = [row for row in log if row["action"] == "publish"]
    assert all(row["detail"]["objects"] >= 1 and row["detail"]["status_id"] for row in published)


def test_hub_commands_refuse_bad_names(hub):
    assert_user_error(
        run("hub", "member", "add", "x", "--read", "nope", "--store", hub.store),
        "no such collection: nope",
    )
    assert_user_error(
        run("hub", "collection", "add", "signals", "--store", hub.store), "exists already"
    )
    assert_user_error(run("hub", "member", "add", "acme", "--store", hub.store), "exists already")
    assert_user_error(run("hub", "member", "revoke", "nobody", "--store", hub.store), "no member")


def test_a_revoked_member_is_refused_at_once(hub):
    made = run("hub", "member", "add", "leaver", "--read", "signals", "--store", hub.store)
    token = made.stdout.strip()
    headers = {"Authorization": f"Bearer {token}", "Accept": TAXII}
    assert httpx.get(f"{hub.url}collections/", headers=headers).status_code == 200
    revoked = run("hub", "member", "revoke", "leaver", "--store", hub.store)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{hub.url}collections/", headers=headers).status_code == 401
    log = HubStore(open_engine(hub.store, schema=metadata)).audit_log()
    assert any(e["action"] == "revoke" and e["detail"] == {"member": "leaver"} for e in log)
