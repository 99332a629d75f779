"""Two members sharing through the hub, as providers run it: member A traces simulated
traffic and publishes with `distillguard exchange publish`; member B pulls into its
gateway's watchlist and its signups are matched, all through real processes (hub,
gateway, fake upstream), the console script and the openai SDK."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from distillguard.config import ExchangeSettings
from distillguard.exchange import stix
from distillguard.exchange.hub.corroboration import corroboration_id
from distillguard.exchange.privacy import KeyRing
from distillguard.exchange.watchlist import DAY, Watchlist, decayed
from distillguard.store import AccountStore, EventStore, ScoreStore, open_engine
from tests.gateway_stack import gateway, hub_member, hub_server
from tests.helpers import assert_user_error, run
from tests.test_gateway import MESSAGES

ADMIN = "admin-secret-for-exchange-tests-at-least-32-chars"


@dataclass
class Consortium:
    hub: str  # API root URL
    hub_store: str
    tokens: dict[str, str]
    keyring: Path
    sim: Path  # member A's simulated traffic: events, accounts, labels

    def env(self, member: str, **more: str) -> dict[str, str]:
        return {
            "DISTILLGUARD_EXCHANGE__HUB": self.hub,
            "DISTILLGUARD_EXCHANGE__COLLECTION": "signals",
            "DISTILLGUARD_EXCHANGE__TOKEN": self.tokens[member],
            "DISTILLGUARD_EXCHANGE__KEYRING": str(self.keyring),
            "DISTILLGUARD_EXCHANGE__PUBLISHER": member,
            **more,
        }

    def accounts(self) -> dict[str, dict]:
        lines = (self.sim / "accounts.jsonl").read_text().splitlines()
        return {row["account_id"]: row for row in map(json.loads, lines)}

    def labels(self) -> dict[str, dict]:
        lines = (self.sim / "labels.jsonl").read_text().splitlines()
        return {row["account_id"]: row for row in map(json.loads, lines)}


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def consortium(tmp_path_factory) -> Iterator[Consortium]:
    root = tmp_path_factory.mktemp("consortium")
    hub_store = f"sqlite:///{root / 'hub.db'}"
    ok(run("hub", "collection", "add", "signals", "--store", hub_store))
    rights = ["--read", "signals", "--write", "signals"]
    members = ("acme", "beta", "gamma")
    tokens = {member: hub_member(hub_store, member, *rights) for member in members}
    keyring = root / "consortium.key"
    ok(run("exchange", "keygen", str(keyring), "--key-id", "c1"))
    ok(run("simulate", "--out", str(root / "sim"), "--scale", "0.05", "--seed", "7"))
    with hub_server(hub_store) as hub:
        yield Consortium(hub, hub_store, tokens, keyring, root / "sim")


@pytest.fixture(scope="module")
def published(consortium, tmp_path_factory) -> str:
    """Member A's store after it traced its traffic and published what it flagged."""
    store = f"sqlite:///{tmp_path_factory.mktemp('acme') / 'acme.db'}"
    sim = consortium.sim
    files = ["--events", str(sim / "events.jsonl"), "--accounts", str(sim / "accounts.jsonl")]
    ok(run("trace", "run", *files, "--store", store))
    result = run("exchange", "publish", *files, "--store", store, env=consortium.env("acme"))
    assert result.returncode == 0, result.stderr
    assert "published" in result.stderr and " accounts" in result.stderr, result.stderr
    again = run("exchange", "publish", *files, "--store", store, env=consortium.env("acme"))
    assert again.returncode == 0 and "nothing new" in again.stderr, again.stderr
    return store


def hydra_accounts(consortium: Consortium) -> list[dict]:
    accounts, labels = consortium.accounts(), consortium.labels()
    hydra = [accounts[a] for a, label in labels.items() if label["archetype"] == "hydra"]
    assert len(hydra) >= 3
    return hydra


def test_two_members_end_to_end(consortium, published, upstream, tmp_path):
    """A flags a hydra and publishes; B pulls; B's signup with one of the hydra's emails is
    throttled from its first request, and B never holds A's raw identifiers."""
    store = f"sqlite:///{tmp_path / 'beta.db'}"
    hydra = hydra_accounts(consortium)
    benign = next(
        consortium.accounts()[a]
        for a, label in consortium.labels().items()
        if label["label"] == "benign"
    )
    env = {"DISTILLGUARD_GATEWAY__ADMIN_TOKEN": ADMIN, **consortium.env("beta")}
    with gateway(upstream, store, env=env) as stack:
        admin = httpx.Client(
            base_url=stack.url.removesuffix("/v1"), headers={"authorization": f"Bearer {ADMIN}"}
        )

        def signup(account: str, email: str) -> dict:
            issued = admin.post("/admin/keys", json={"account": account})
            assert issued.status_code == 201, issued.text
            identified = admin.put(
                f"/admin/accounts/{account}/identifiers", json={"email": [email]}
            )
            assert identified.status_code == 200, identified.text
            return {"api_key": issued.json()["api_key"], **identified.json()}

        # Signed up before B pulled anything: nothing to match yet; the pull raises it.
        early = signup("beta-early", hydra[0]["email"])
        assert early["tier"] == "normal" and early["matches"] == []
        pulled = run("exchange", "pull", "--store", store, env=env)
        assert pulled.returncode == 0, pulled.stderr
        # One organisation's word earns `watch` at most, however confident.
        assert "beta-early\twatch" in pulled.stdout
        assert AccountStore(open_engine(store)).account_tier("beta-early")[0] == "watch"
        # A second organisation reports the same addresses: the hub counts two, and the
        # next pull throttles.
        _second_report(consortium, "gamma", [hydra[0]["email"], hydra[1]["email"]])
        pulled = run("exchange", "pull", "--store", store, env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert "beta-early\tthrottle" in pulled.stdout
        assert AccountStore(open_engine(store)).account_tier("beta-early")[0] == "throttle"

        # Signed up after the pull, the address written differently: matched at signup.
        local, domain = hydra[1]["email"].split("@")
        late = signup("beta-late", f"{local.upper()}+trial@{domain}")
        assert late["tier"] == "throttle", late
        matches = late["matches"]  # acme's indicator and gamma's
        assert len(matches) == 2 and {m["kind"] for m in matches} == {"email"}
        assert max(m["confidence"] for m in matches) >= 0.6
        assert "shared indicator" in late["tier_reason"]
        clean = signup("beta-clean", benign["email"])
        assert clean["tier"] == "normal" and clean["matches"] == []

        # The first request already meets the throttled limits (tiers.throttle = 0.1 x rpm).
        sdk = openai.OpenAI(base_url=stack.url, api_key=late["api_key"], max_retries=0)
        raw = sdk.chat.completions.with_raw_response.create(model="fake-model", messages=MESSAGES)
        assert raw.headers["x-ratelimit-limit-requests"] == "60"  # 600 rpm per key x 0.1
        ok_sdk = openai.OpenAI(base_url=stack.url, api_key=clean["api_key"], max_retries=0)
        raw = ok_sdk.chat.completions.with_raw_response.create(
            model="fake-model", messages=MESSAGES
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "600"
    tiers = {e["account_id"]: e["tier"] for e in EventStore(open_engine(store)).read()}
    assert tiers == {"beta-late": "throttle", "beta-clean": "normal"}

    # B holds hashes only: none of A's raw identifiers or account ids is anywhere in its
    # database, nor in anything the hub serves it.
    served = httpx.get(
        f"{consortium.hub}collections/",
        headers={"Authorization": f"Bearer {consortium.tokens['beta']}"},
    )
    assert served.status_code == 200
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        held = "\n".join(
            str(row)
            for table in ("account_identifiers", "watchlist", "accounts", "api_keys")
            for row in db.execute(f"SELECT * FROM {table}")
        )
    assert held.count("c1:") >= 3  # the hashes are there
    everything = held + json.dumps(_all_served(consortium, "beta"))
    for account in hydra:
        for secret in (account["email"], account["payment_fingerprint"], account["account_id"]):
            assert secret.lower() not in everything.lower()


def _second_report(consortium: Consortium, member: str, emails: list[str]) -> None:
    """`member` publishes an account indicator of its own holding these addresses."""
    ring = KeyRing.load(consortium.keyring)
    hashes = [ring.hash("email", email) for email in emails]
    indicator = stix.account_indicator(
        hashes, score=0.7, evidence=[], created_by=stix.identity(member)["id"]
    )
    http = httpx.Client(
        base_url=consortium.hub,
        headers={"Authorization": f"Bearer {consortium.tokens[member]}"},
    )
    (collection,) = http.get("collections/").json()["collections"]
    posted = http.post(
        f"collections/{collection['id']}/objects/",
        json={"objects": [indicator]},
        headers={"Content-Type": "application/taxii+json;version=2.1"},
    )
    assert posted.status_code == 202 and posted.json()["success_count"] == 1, posted.text


def _all_served(consortium: Consortium, member: str) -> list[dict]:
    """Every object of the collection as `member` reads it."""
    http = httpx.Client(
        base_url=consortium.hub,
        headers={
            "Authorization": f"Bearer {consortium.tokens[member]}",
            "Accept": "application/taxii+json;version=2.1",
        },
    )
    (collection,) = http.get("collections/").json()["collections"]
    objects, more, cursor = [], True, None
    while more:
        params = {"limit": 1000, **({"next": cursor} if cursor else {})}
        page = http.get(f"collections/{collection['id']}/objects/", params=params).json()
        objects += page.get("objects", [])
        more, cursor = page.get("more", False), page.get("next")
    return objects


def test_published_objects_are_what_a_flagged(consortium, published):
    acme = stix.identity("acme")["id"]  # (other members' reports are in the collection too)
    objects = [o for o in _all_served(consortium, "acme") if o.get("created_by_ref") == acme]
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("x_distillguard_kind", obj["type"]), []).append(obj)
    scores = ScoreStore(open_engine(published))
    flagged, _ = scores.flagged(scores.latest_run() or 0)
    assert flagged and len(by_kind["account"]) == len(flagged)  # all have identifiers here
    assert all(o["pattern"].startswith("[user-account:user_id = 'c1:") for o in by_kind["account"])
    assert by_kind["template"], "a hydra fills templates: some should be shared"
    assert all(o["pattern_type"] == "x-distillguard-minhash" for o in by_kind["template"])
    campaigns = {o["id"] for o in by_kind["cluster"]}  # campaigns say which kind they are
    relationships = by_kind["relationship"]
    assert campaigns and len(relationships) >= len(hydra_accounts(consortium))
    assert {r["target_ref"] for r in relationships} <= campaigns
    assert {r["source_ref"] for r in relationships} <= {o["id"] for o in by_kind["account"]}


def test_watchlist_versions_revocation_and_decay(tmp_path):
    """Newer versions replace older ones, revocation removes a match, corroboration raises
    confidence, and confidence decays as documented until the match lapses."""
    engine = open_engine(f"sqlite:///{tmp_path / 'b.db'}")
    AccountStore(engine).issue_key("b-1")
    ring = KeyRing.generate("k1")
    settings = ExchangeSettings()
    watchlist = Watchlist(engine, ring, settings)
    watchlist.identify("b-1", [("email", "someone@example.org")])
    digest = ring.hash("email", "someone@example.org")
    indicator = {
        "type": "indicator",
        "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "modified": "2026-11-01T00:00:00.000Z",
        "pattern": f"[user-account:user_id = '{digest}']",
        "pattern_type": "stix",
        "confidence": 40,
    }
    now = _unix("2026-11-01T00:00:00.000Z")
    assert watchlist.ingest([indicator]).indicators == 1
    (match,) = watchlist.matches(now=now)
    assert match.confidence == pytest.approx(0.40) and match.members == 1
    assert settings.tier_for(match.confidence) == "watch"

    older = {**indicator, "modified": "2026-10-01T00:00:00.000Z", "confidence": 99}
    assert watchlist.ingest([older]).ignored == 1  # an older version changes nothing
    assert watchlist.matches(now=now)[0].confidence == pytest.approx(0.40)

    sighting = {
        "type": "sighting",
        "id": corroboration_id(indicator["id"]),
        "modified": "2026-11-10T00:00:00.000Z",
        "sighting_of_ref": indicator["id"],
        "count": 3,
        "confidence": 78,
        "last_seen": "2026-11-10T00:00:00.000Z",
    }
    forged = {**sighting, "id": "sighting--0b9c6c1e-4f7e-4d0e-9a53-6d5b1b1f7a10"}
    assert watchlist.ingest([forged]).ignored == 1  # only the hub's own id counts
    assert watchlist.ingest([sighting]).corroborations == 1
    (match,) = watchlist.matches(now=_unix("2026-11-10T00:00:00.000Z"))
    assert match.members == 3 and match.confidence == pytest.approx(0.78)
    assert settings.tier_for(match.confidence) == "throttle"

    withdrawn = {**sighting, "modified": "2026-11-11T00:00:00.000Z", "revoked": True}
    assert watchlist.ingest([withdrawn]).corroborations == 1
    (match,) = watchlist.matches(now=_unix("2026-11-11T00:00:00.000Z"))
    assert match.members == 1 and match.confidence == pytest.approx(0.40, abs=0.01)
    assert watchlist.ingest([sighting]).ignored == 1  # the older word does not come back
    restored = {**sighting, "modified": "2026-11-12T00:00:00.000Z"}
    assert watchlist.ingest([restored]).corroborations == 1

    # Decay from the last report: base x (1 - (age / lifetime) ** (1 / speed)).
    later = _unix("2026-11-10T00:00:00.000Z") + 90 * DAY
    (match,) = watchlist.matches(now=later)
    assert match.confidence == pytest.approx(0.78 * (1 - 0.5**2))
    assert decayed(0.78, 90 * DAY, settings) == pytest.approx(match.confidence)
    assert watchlist.matches(now=later + 90 * DAY) == []  # a lifetime later: lapsed

    revoked = {**indicator, "modified": "2026-11-20T00:00:00.000Z", "revoked": True}
    assert watchlist.ingest([revoked]).revoked == 1
    assert watchlist.matches(now=now) == []


def test_unreadable_objects_are_reported_and_skipped(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'b.db'}")
    watchlist = Watchlist(engine, KeyRing.generate("k1"), ExchangeSettings())
    good = {
        "type": "indicator",
        "id": "indicator--2f0f4a47-5d2c-4c39-9f1c-5a0c0b6b5d11",
        "modified": "2026-11-01T00:00:00.000Z",
        "pattern": f"[user-account:user_id = 'k1:{'ab' * 32}']",
        "pattern_type": "stix",
    }
    bad = {**good, "id": "indicator--0c4b3e2a-8d2c-4c39-9f1c-5a0c0b6b5d12", "modified": 7}
    done = watchlist.ingest([bad, good])
    assert done.indicators == 1 and len(done.problems) == 1
    assert "0c4b3e2a" in done.problems[0] and "timestamp" in done.problems[0]


def test_exchange_cli_errors(consortium, tmp_path):
    store = ["--store", f"sqlite:///{tmp_path / 'x.db'}"]
    assert_user_error(run("exchange", "pull", *store), "exchange.hub")
    wrong = consortium.env("beta", DISTILLGUARD_EXCHANGE__TOKEN="dgx-not-a-member")
    assert_user_error(run("exchange", "pull", *store, env=wrong), "HTTP 401")
    nowhere = consortium.env("beta", DISTILLGUARD_EXCHANGE__COLLECTION="nope")
    assert_user_error(run("exchange", "pull", *store, env=nowhere), "no collection 'nope'")
    assert_user_error(
        run("exchange", "publish", *store, env=consortium.env("acme")), "no trace run"
    )
    ok(run("keys", "issue", "--account", "x-1", *store))
    assert_user_error(
        run("accounts", "identify", "x-1", "--email", "a@b.org", *store),
        "consortium key ring",
    )
    env = consortium.env("beta")
    assert_user_error(
        run("accounts", "identify", "x-1", "--email", "not-an-address", *store, env=env),
        "not an email address",
    )
    assert_user_error(
        run("accounts", "identify", "nobody", "--email", "a@b.org", *store, env=env),
        "no account 'nobody'",
    )
    with sqlite3.connect(tmp_path / "x.db") as db:  # the refused calls wrote nothing
        assert db.execute("SELECT count(*) FROM account_identifiers").fetchone() == (0,)
    assert_user_error(run("exchange", "keygen", str(consortium.keyring)), "--rotate")


def _unix(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_private_set_intersection_tells_the_overlap_size_only(tmp_path):
    """Two members learn how many identifiers they share through three files, and the
    files carry neither the identifiers nor their hashes."""
    keyring = tmp_path / "consortium.key"
    ok(run("exchange", "keygen", str(keyring)))
    env = {"DISTILLGUARD_EXCHANGE__KEYRING": str(keyring)}
    emails = {
        "a": [f"person{i}@example.org" for i in range(6)],
        "b": ["person1@example.org", "PERSON4@example.org", "stranger@example.net"],
    }
    stores = {}
    for member, addresses in emails.items():  # signed up and identified (as the CLI does)
        url = f"sqlite:///{tmp_path / member}.db"
        stores[member] = ["--store", url]
        engine = open_engine(url)
        watchlist = Watchlist(engine, KeyRing.load(keyring), ExchangeSettings())
        for i, email in enumerate(addresses):
            AccountStore(engine).issue_key(f"{member}{i}")
            watchlist.identify(f"{member}{i}", [("email", email)])
    request, response = tmp_path / "request.json", tmp_path / "response.json"
    ok(run("exchange", "psi", "request", "--out", str(request), *stores["b"], env=env))
    ok(
        run(
            "exchange",
            "psi",
            "respond",
            str(request),
            "--out",
            str(response),
            *stores["a"],
            env=env,
        )
    )
    key = tmp_path / "request.json.key"
    assert key.stat().st_mode & 0o777 == 0o600
    size = ok(run("exchange", "psi", "overlap", str(response), "--key", str(key)))
    assert size.strip() == "2"

    ring = KeyRing.load(keyring)
    carried = request.read_text() + response.read_text()
    for email in emails["a"] + emails["b"]:
        assert email.lower() not in carried.lower()
        assert ring.hash("email", email).split(":")[1] not in carried

    forged = tmp_path / "forged.json"
    for change in ({"items": -1}, {"items": "x"}, {"request": "bm90IHBzaQ=="}):
        forged.write_text(json.dumps({**json.loads(request.read_text()), **change}))
        result = run(
            "exchange",
            "psi",
            "respond",
            str(forged),
            "--out",
            str(response),
            *stores["a"],
            env=env,
        )
        assert_user_error(result, "PSI request")
        assert "c1:" not in result.stderr  # our hashes are never printed
    assert_user_error(
        run("exchange", "psi", "overlap", str(response), "--key", str(request)),
        "cannot be read",
    )
    # (The key of another request cannot be told apart: it only finds no overlap.)
    assert_user_error(
        run("exchange", "psi", "overlap", str(request), "--key", str(key)),
        "expected a PSI response",
    )
    assert_user_error(
        run(
            "exchange",
            "psi",
            "respond",
            str(response),
            "--out",
            str(tmp_path / "x.json"),
            *stores["a"],
            env=env,
        ),
        "expected a PSI request",
    )


def test_pulled_templates_raise_template_scores(consortium, published, tmp_path):
    """The templates A published make B's tracing recognise the same operation's prompts
    from their first filling: A's capability sweep, as if a hydra had brought it to B two
    prompts to an account (too few for any account to show a template of its own)."""
    from dataclasses import replace

    from distillguard.exchange.client import HubClient
    from distillguard.tracing.records import read_events
    from distillguard.tracing.run import trace

    ring = KeyRing.load(consortium.keyring)
    watchlist = Watchlist(open_engine(f"sqlite:///{tmp_path / 'b.db'}"), ring, ExchangeSettings())
    watchlist.pull(HubClient(consortium.hub, "signals", consortium.tokens["beta"]))
    shared = watchlist.shared_templates()
    assert len(shared) > 0
    sweeps = {
        a for a, label in consortium.labels().items() if label["archetype"] == "capability_sweep"
    }
    sent = sorted(
        (e for e in read_events(consortium.sim / "events.jsonl") if e.account_id in sweeps),
        key=lambda e: e.ts,
    )
    events = [replace(e, account_id=f"light-{i // 2}") for i, e in enumerate(sent)]
    light = {e.account_id for e in events}
    assert len(light) >= 100
    plain = {a.account_id: a for a in trace(events, {}).accounts}
    helped = {a.account_id: a for a in trace(events, {}, shared=shared).accounts}
    said = [a for a in helped.values() if any("other providers shared" in e for e in a.evidence)]
    assert not any("other providers shared" in e for a in plain.values() for e in a.evidence)
    assert len(said) >= len(light) // 2, f"{len(said)} of {len(light)}"
    assert all(helped[a].score >= plain[a].score for a in light)
    unkeyed = Watchlist(watchlist.engine, KeyRing.generate("c9"), ExchangeSettings())
    assert len(unkeyed.shared_templates()) == 0  # signed under a key it does not hold


def test_a_malformed_shared_object_never_blocks_a_pull(tmp_path):
    """One member's bad object is reported and skipped; the rest of its page is stored, so
    later pulls go on. Confidence is bounded, and a future date does not stop decay."""
    engine = open_engine(f"sqlite:///{tmp_path / 'b.db'}")
    ring = KeyRing.generate("k1")
    AccountStore(engine).issue_key("b-1")
    watchlist = Watchlist(engine, ring, ExchangeSettings())
    watchlist.identify("b-1", [("email", "x@example.org")])
    digest = ring.hash("email", "x@example.org")

    def indicator(n: int, **more) -> dict:
        return {
            "type": "indicator",
            "id": f"indicator--00000000-0000-4000-8000-{n:012d}",
            "modified": "2026-11-01T00:00:00.000Z",
            "pattern": f"[user-account:user_id = '{digest}']",
            "pattern_type": "stix",
            **more,
        }

    bad = [
        indicator(1, created_by_ref={"evil": 1}),
        indicator(2, created_by_ref="identity--" + "x" * 200),
        indicator(3, confidence=100_000),
        indicator(4, pattern=f"[ipv4-addr:value = '{'1' * 600}']"),
        indicator(5, id="indicator--not-a-uuid"),
        "not an object",
    ]
    good = indicator(6, confidence=70, modified="2999-01-01T00:00:00.000Z")
    done = watchlist.ingest([*bad, good])
    assert done.indicators == 1 and len(done.problems) == len(bad)
    assert not any("evil" in p or "1111" in p for p in done.problems)  # nothing echoed
    (match,) = watchlist.matches()
    assert match.confidence == pytest.approx(0.70, abs=0.01)  # dated now, not in 2999
    later = watchlist.matches(now=time.time() + 90 * DAY)
    assert later and later[0].confidence < 0.6

    revoked = {**good, "modified": "2999-01-02T00:00:00.000Z", "revoked": True}
    assert watchlist.ingest([revoked]).revoked == 1
    assert watchlist.ingest([good]).ignored == 1  # the older version cannot come back
    assert watchlist.matches() == []


def test_identify_tolerates_concurrent_calls(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'b.db'}")
    AccountStore(engine).issue_key("b-1")
    watchlist = Watchlist(engine, KeyRing.generate("k1"), ExchangeSettings())
    with ThreadPoolExecutor(4) as pool:
        calls = [
            pool.submit(watchlist.identify, "b-1", [("email", "same@example.org")])
            for _ in range(8)
        ]
        for call in calls:
            call.result()  # no IntegrityError escapes
    assert len(watchlist.hashes("k1")) == 1


def test_publish_says_in_one_line_why_nothing_could_be_shared(consortium, tmp_path):
    """A run traced without signup records has no identifiers to share: one line says so and
    what to do, not a line per flagged account; a store without the run's events says that
    no templates could be shared."""
    store = ["--store", f"sqlite:///{tmp_path / 'bare.db'}"]
    ok(run("trace", "run", "--events", str(consortium.sim / "events.jsonl"), *store))
    out = tmp_path / "bundle.json"
    result = run("exchange", "publish", "--out", str(out), *store, env=consortium.env("acme"))
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())  # the console wraps long lines
    assert said.count("not shared:") == 1, result.stderr
    (why,) = re.findall(r"not shared: (\d+) of (\d+) flagged accounts[^:]*: no identifiers", said)
    assert why[0] == why[1] and int(why[0]) > 10
    assert "--accounts" in said and "distillguard accounts identify" in said
    assert "no events of the run's flagged accounts in the store's event log" in said
    assert "0 accounts" in said and json.loads(out.read_text()).get("objects", []) == []


def test_publish_uses_the_current_key_and_names_nothing_local():
    from distillguard.exchange import publish

    ring = KeyRing.generate("c1")
    old = ring.hash("email", "op@example.org")
    ring = ring.rotated("c2")
    new = ring.hash("email", "op@example.org")
    flagged = publish.Flagged(
        "acct-7", 0.9, ["member of cluster c00012 (40 accounts)", "90% of prompts ..."]
    )
    built = publish.build(
        [flagged], [], {"acct-7": [old, new]}, {}, ring, ExchangeSettings(publisher="acme"), {}
    )
    (indicator,) = [o for o in built.objects if o["type"] == "indicator"]
    assert new in indicator["pattern"] and old not in indicator["pattern"]
    assert "c00012" not in json.dumps(built.objects) and "acct-7" not in json.dumps(built.objects)
    only_old = publish.build(
        [flagged], [], {"acct-7": [old]}, {}, ring, ExchangeSettings(publisher="acme"), {}
    )
    assert only_old.objects == [] and "current key c2" in only_old.skipped[0]


def test_findings_are_published_again_before_they_lapse(tmp_path):
    from sqlalchemy import update

    from distillguard.exchange import publish
    from distillguard.store.schema import exchange_published

    engine = open_engine(f"sqlite:///{tmp_path / 'a.db'}")
    ring, settings = KeyRing.generate("c1"), ExchangeSettings(publisher="acme", valid_days=90)
    flagged = [publish.Flagged("acct-1", 0.9, [])]
    hashes = {"acct-1": [ring.hash("email", "op@example.org")]}
    first = publish.build(flagged, [], hashes, {}, ring, settings, {})
    ids = {o["id"] for o in first.objects}
    assert publish.record(engine, first, ids) == 1
    again = publish.build(
        flagged, [], hashes, {}, ring, settings, publish.already_published(engine, settings)
    )
    assert again.objects == []  # published, still fresh
    with engine.begin() as conn:  # 46 days later: past half its 90 days of validity
        conn.execute(update(exchange_published).values(published_at=time.time() - 46 * DAY))
    renewed = publish.build(
        flagged, [], hashes, {}, ring, settings, publish.already_published(engine, settings)
    )
    assert renewed.counts["accounts"] == 1
    assert publish.record(engine, renewed, {o["id"] for o in renewed.objects}) == 1
