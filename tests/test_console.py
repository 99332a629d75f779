"""The operators' console at /admin/ on a real gateway: a week of simulated traffic traced
into its store, every page as HTML and as JSON, its sign-in and forms attacked, and an
operator's whole round driven in headless Chromium (screenshots in the artifacts folder)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from distillguard.policy import Limits
from distillguard.store import AccountStore, SuspectStore, open_engine
from tests.gateway_stack import gateway
from tests.helpers import run
from tests.test_gateway import MESSAGES

TOKEN = "console-admin-token-for-tests-32-characters"
CHROMIUM = "/usr/bin/chromium"  # Debian's package, installed by scripts/services.sh
ARTIFACTS = Path(os.environ.get("DISTILLGUARD_TEST_ARTIFACTS", "build/test-artifacts")) / "console"
HOSTILE = '<script>alert("x")</script>/with a slash'


@pytest.fixture(scope="module")
def week(tmp_path_factory) -> dict:
    """A traced week in a store: simulated hydra traffic, a flagged member and a benign
    account holding keys, tiers applied, and a saved suspect verdict."""
    root = tmp_path_factory.mktemp("console")
    store = f"sqlite:///{root / 'store.db'}"
    made = run("simulate", "--out", str(root), "--scenario", "hydra-swarm", "--scale", "0.05")
    assert made.returncode == 0, made.stderr
    labels = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines()]
    attacker = next(row["account_id"] for row in labels if row["label"] == "attacker")
    benign = next(row["account_id"] for row in labels if row["label"] == "benign")
    accounts = AccountStore(open_engine(store))
    keys = {
        who: accounts.issue_key(who, f"org-{who}", Limits()).api_key
        for who in (attacker, benign, HOSTILE)
    }
    keys["limited"] = accounts.issue_key("limited", None, Limits(rpm=1)).api_key
    traced = run(
        "trace", "run", "--events", str(root / "events.jsonl"),
        "--accounts", str(root / "accounts.jsonl"), "--store", store, "--apply-tiers",
    )  # fmt: skip
    assert traced.returncode == 0, traced.stderr
    verdict = {"verdict": "trained on our outputs", "p_value": 3e-12, "named_cohorts": [5],
               "control": {"p_value": 0.41}, "mode": "api", "scored": 1200}  # fmt: skip
    SuspectStore(open_engine(store)).save("http://suspect.example/v1 copycat-1", verdict)
    return {"store": store, "attacker": attacker, "benign": benign, "keys": keys}


@pytest.fixture(scope="module")
def stack(upstream, week):
    env = {"DISTILLGUARD_GATEWAY__ADMIN_TOKEN": TOKEN}
    with gateway(upstream, week["store"], env=env) as running:
        yield running


@pytest.fixture(scope="module")
def base(stack) -> str:
    return stack.url.removesuffix("/v1")


@pytest.fixture(scope="module")
def api(base):
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {TOKEN}"}) as http:
        yield http


@contextmanager
def signed_in(base: str) -> Iterator[httpx.Client]:
    """A browser-like client holding a console session."""
    with httpx.Client(base_url=base, headers={"accept": "text/html"}) as http:
        response = http.post("/admin/login", data={"token": TOKEN, "next": "/admin/accounts"})
        assert response.status_code == 303 and response.headers["location"] == "/admin/accounts"
        yield http


def eventually(read, ready, seconds: float = 10.0):
    """`read()` once `ready` holds of it: the gateway writes events in batches, off the
    request path."""
    deadline = time.monotonic() + seconds
    while not ready(value := read()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def test_every_page_answers_as_json_what_it_shows(stack, week, api):
    chat = openai.OpenAI(base_url=stack.url, api_key=week["keys"]["limited"], max_retries=0)
    chat.chat.completions.create(model="fake-model", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError):  # rpm 1: the second is refused
        chat.chat.completions.create(model="fake-model", messages=MESSAGES)

    overview = api.get("/admin/").json()
    assert overview["trace_run"]["flagged_accounts"] > 0
    assert overview["tiers"]["normal"] >= 2 and set(overview["tiers"]) >= {"watch", "block"}
    assert any(c["actor"] == "trace run" for c in overview["recent_tier_changes"])

    ranked = api.get("/admin/accounts").json()
    assert ranked["total"] == 4
    first = ranked["accounts"][0]
    assert first["account_id"] == week["attacker"] and first["flagged"]
    assert first["tier"] != "normal" and first["evidence"]
    scores = [a["score"] for a in ranked["accounts"] if a["score"] is not None]
    assert scores == sorted(scores, reverse=True)
    assert api.get("/admin/accounts", params={"tier": "normal", "q": "lim"}).json()["total"] == 1

    account = api.get(f"/admin/accounts/{week['attacker']}").json()
    assert account["score"]["flagged"] and account["tier_history"][0]["actor"] == "trace run"

    operations = api.get("/admin/operations").json()["clusters"]
    assert operations[0]["flagged"] and len(operations[0]["accounts"]) >= 10
    one = api.get(f"/admin/operations/{operations[0]['cluster_id']}").json()
    assert one["ties"] and {t["kind"] for t in one["ties"]} <= {
        "payment", "signup_ip", "born", "email_shape", "timing"
    }  # fmt: skip
    assert one["graph"]["members"] and one["graph"]["edges"]

    limits = eventually(lambda: api.get("/admin/limits").json(), lambda v: v["last_hour"])
    assert {"scope": "key", "kind": "requests", "tier": "normal", "mode": "enforced",
            "requests": 1} in limits["last_hour"]  # fmt: skip
    assert limits["recent_refusals"][0]["account_id"] == "limited"
    assert "request" not in limits["recent_refusals"][0]  # decisions, never prompts

    suspects = api.get("/admin/suspects").json()["results"]
    assert suspects[0]["named_cohorts"] == [5] and suspects[0]["verdict"].startswith("trained")
    assert api.get("/admin/hub").json()["pulls"] == []
    names = {m["name"] for m in api.get("/admin/metrics").json()["metrics"]}
    assert {"distillguard_requests", "distillguard_refusals"} <= names


def test_pages_need_a_session_or_the_token(base, api):
    with httpx.Client(base_url=base) as anonymous:
        browser = anonymous.get("/admin/accounts?tier=block", headers={"accept": "text/html"})
        assert browser.status_code == 303
        assert browser.headers["location"] == "/admin/login?next=/admin/accounts%3Ftier%3Dblock"
        script = anonymous.get("/admin/accounts")
        assert script.status_code == 401 and script.json()["error"]["code"] == "invalid_admin_token"
        wrong = anonymous.get("/admin/", headers={"authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
    forged_session = {"distillguard_console": "9999999999.00ff"}
    with httpx.Client(base_url=base, cookies=forged_session) as forger:
        assert forger.get("/admin/").status_code == 401
    with httpx.Client(base_url=base) as anonymous:
        assert anonymous.get("/admin/static/console.css").status_code == 200  # no secret there
    page = api.get("/admin/", headers={"accept": "text/html"})  # a Bearer token gets data
    assert page.headers["content-type"] == "application/json"


def test_sign_in_refuses_guesses_and_never_redirects_elsewhere(upstream, tmp_path):
    with gateway(upstream, f"sqlite:///{tmp_path / 's.db'}",
                 env={"DISTILLGUARD_GATEWAY__ADMIN_TOKEN": TOKEN}) as running:  # fmt: skip
        http = httpx.Client(base_url=running.url.removesuffix("/v1"))
        good = http.post("/admin/login", data={"token": TOKEN, "next": "//evil.example/x"})
        assert good.status_code == 303 and good.headers["location"] == "/admin/"
        cookie = good.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/admin/" in cookie
        for _ in range(5):
            bad = http.post("/admin/login", data={"token": "guess"})
            assert bad.status_code == 401 and "not the admin token" in bad.text
        locked = http.post("/admin/login", data={"token": TOKEN})  # even the right one, now
        assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
        huge = http.post("/admin/login", content=b"token=" + b"a" * 20_000,
                         headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert huge.status_code == 413


def test_the_tier_form_needs_the_session_and_its_csrf_token(base, week):
    target = f"/admin/accounts/{week['benign']}"
    with signed_in(base) as http:
        token = csrf_of(http.get(target).text)
        with httpx.Client(base_url=base) as stranger:  # a cross-site post carries no session
            refused = stranger.post(
                f"{target}/tier", data={"tier": "block", "reason": "x", "csrf": token}
            )
        assert refused.status_code == 403
        forged = http.post(
            f"{target}/tier", data={"tier": "block", "reason": "x", "csrf": "0" * 64}
        )
        assert forged.status_code == 403
        sideways = http.post(
            f"{target}/tier", data={"tier": "sideways", "reason": "x", "csrf": token}
        )
        assert sideways.status_code == 400
        silent = http.post(f"{target}/tier", data={"tier": "watch", "csrf": token})
        assert silent.status_code == 400 and "reason" in silent.json()["error"]["message"]
        assert AccountStore(open_engine(week["store"])).account_tier(week["benign"])[0] == "normal"


def test_hostile_account_ids_are_shown_escaped_and_reachable(base):
    with signed_in(base) as http:
        listing = http.get("/admin/accounts").text
        assert "<script>" not in listing and "&lt;script&gt;" in listing
        link = re.search(r'href="(/admin/accounts/%3Cscript[^"]+)"', listing).group(1)
        page = http.get(link)
        assert page.status_code == 200 and "&lt;script&gt;alert" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        missing = http.get("/admin/accounts/nobody-at-all")
        assert missing.status_code == 404 and "no account" in missing.text


def test_an_operator_blocks_a_flagged_account_in_the_browser(stack, base, week):
    """Sign in, open the riskiest account, read its evidence, block it: the gateway refuses
    its next request. Screenshots of each page land in the artifacts folder."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: run scripts/services.sh"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/admin/accounts")
        assert page.url.startswith(f"{base}/admin/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/admin/accounts")
        page.screenshot(path=ARTIFACTS / "accounts.png", full_page=True)

        page.click("table.accounts tbody tr:first-child a")
        assert week["attacker"] in page.inner_text("h1")
        evidence = page.inner_text("#evidence")
        assert "requests" in evidence, evidence
        page.screenshot(path=ARTIFACTS / "account-flagged.png", full_page=True)

        page.select_option("select[name=tier]", "block")
        page.fill("input[name=reason]", "confirmed harvester: hydra member")
        page.click("form.tier-form button")
        page.wait_for_load_state()
        assert page.inner_text("#tier").startswith("block")
        history = page.inner_text("#history")
        assert "confirmed harvester: hydra member" in history and "console 127.0.0.1" in history
        page.screenshot(path=ARTIFACTS / "account-blocked.png", full_page=True)

        sdk = openai.OpenAI(
            base_url=stack.url, api_key=week["keys"][week["attacker"]], max_retries=0
        )
        with pytest.raises(openai.PermissionDeniedError):
            sdk.chat.completions.create(model="fake-model", messages=MESSAGES)

        page.click("nav a[href='/admin/operations']")
        page.click("table tbody tr:first-child a")
        assert page.locator("svg circle").count() >= 10 and page.locator("svg rect").count() >= 1
        page.screenshot(path=ARTIFACTS / "operation.png")
        page.locator("figure.graph").screenshot(path=ARTIFACTS / "operation-graph.png")
        for name in ("overview", "limits", "suspects", "hub", "metrics"):
            page.goto(f"{base}/admin/{'' if name == 'overview' else name}")
            assert page.locator("h1").count() == 1
            page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
        browser.close()
