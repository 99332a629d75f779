"""The admin API over HTTP, and the CLI's limit commands, against a real gateway process."""

from __future__ import annotations

import httpx
import openai
import pytest

from distillguard.store import AccountStore, open_engine
from tests.gateway_stack import gateway
from tests.helpers import assert_user_error, run
from tests.test_gateway import MESSAGES, assert_openai_error

TOKEN = "admin-secret-for-tests-at-least-32-characters"
# Changes made through the admin API must apply at once, not at the next reload.
SLOW_RELOAD = {"DISTILLGUARD_GATEWAY__KEY_REFRESH_SECONDS": "600"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('admin') / 'store.db'}"


@pytest.fixture(scope="module")
def stack(upstream, store):
    env = {**SLOW_RELOAD, "DISTILLGUARD_GATEWAY__ADMIN_TOKEN": TOKEN}
    with gateway(upstream, store, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def admin(stack):
    base = stack.url.removesuffix("/v1")
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {TOKEN}"}) as http:
        yield http


def issue(admin: httpx.Client, account: str, **fields) -> dict:
    response = admin.post("/admin/keys", json={"account": account, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def chat(stack, api_key: str, **kwargs):
    sdk = openai.OpenAI(base_url=stack.url, api_key=api_key, max_retries=0)
    return sdk.chat.completions.create(model="fake-model", messages=MESSAGES, **kwargs)


def test_issued_key_works_at_once_and_revoked_key_stops_at_once(stack, admin):
    issued = issue(admin, "acme-research", org="acme", name="batch jobs", rpm=50)
    assert issued["api_key"].startswith(f"dg-{issued['key_id']}-")
    assert issued["limits"] == {"rpm": 50, "tpm": None, "tpd": None, "concurrency": None}
    assert chat(stack, issued["api_key"]).choices[0].message.content

    listing = admin.get("/admin/keys").json()["data"]
    mine = next(k for k in listing if k["key_id"] == issued["key_id"])
    assert mine["account_id"] == "acme-research" and mine["org_id"] == "acme"
    assert mine["revoked_at"] is None
    secret = issued["api_key"].removeprefix(f"dg-{issued['key_id']}-")
    assert secret not in admin.get("/admin/keys").text  # listings never show secrets

    revoked = admin.delete(f"/admin/keys/{issued['key_id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        chat(stack, issued["api_key"])


def test_tier_changes_apply_on_the_next_request(stack, admin):
    api_key = issue(admin, "tier-flipper")["api_key"]
    blocked = admin.put("/admin/accounts/tier-flipper/tier", json={"tier": "block", "reason": "x"})
    assert blocked.status_code == 200 and blocked.json()["tier"] == "block"
    with pytest.raises(openai.PermissionDeniedError, match="blocked"):
        chat(stack, api_key)
    assert admin.put("/admin/accounts/tier-flipper/tier", json={"tier": "normal"}).is_success
    assert chat(stack, api_key).choices


@pytest.mark.parametrize("level", ["accounts", "orgs"])
def test_account_and_org_limits_bind_every_key(stack, admin, level):
    # An account and org of its own per case: a bucket keeps its debt when its limit
    # changes (gcra.py), so the other case's rpm=1 request would still count here.
    account, org = f"lim-{level}-account", f"lim-{level}-org"
    first = issue(admin, account, org=org)["api_key"]
    second = issue(admin, account, org=org)["api_key"]
    scope = "account" if level == "accounts" else "org"
    owner = account if level == "accounts" else org
    response = admin.put(f"/admin/{level}/{owner}/limits", json={"rpm": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {
        f"{scope}_id": owner,
        "limits": {"rpm": 1, "tpm": None, "tpd": None, "concurrency": None},
    }
    chat(stack, first)
    with pytest.raises(openai.RateLimitError, match=f"rate limit reached for {scope}"):
        chat(stack, second)  # another key, the same account and organisation
    assert admin.put(f"/admin/{level}/{owner}/limits", json={}).is_success  # back to defaults


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "param"),
    [
        ("post", "/admin/keys", b"{not json", 400, "invalid_json", None),
        ("post", "/admin/keys", b'{"org": "acme"}', 400, "invalid_request", None),
        ("post", "/admin/keys", b'{"account": "a", "rpm": 0}', 400, "invalid_request", "rpm"),
        ("post", "/admin/keys", b'{"account": "a", "colour": 1}', 400, "invalid_request", None),
        ("post", "/admin/keys", b'{"account": "  "}', 400, "invalid_request", None),
        ("delete", "/admin/keys/0000000000000000", b"", 404, "not_found", None),
        ("put", "/admin/accounts/nobody/tier", b'{"tier": "block"}', 404, "not_found", None),
        ("put", "/admin/accounts/a/tier", b'{"tier": "banned"}', 400, "invalid_request", "tier"),
        ("put", "/admin/orgs/nobody/limits", b'{"rpm": 5}', 404, "not_found", None),
        ("put", "/admin/orgs/x/limits", b'{"tpm": "lots"}', 400, "invalid_request", "tpm"),
    ],
)
def test_bad_admin_requests_are_openai_shaped_4xx(admin, method, path, body, status, code, param):
    response = admin.request(method.upper(), path, content=body)
    error = assert_openai_error(response, status, code)
    assert error["param"] == param


def test_an_account_cannot_change_organisation(admin):
    issue(admin, "loyal", org="first-org")
    response = admin.post("/admin/keys", json={"account": "loyal", "org": "second-org"})
    assert (
        "belongs to organisation 'first-org'"
        in assert_openai_error(response, 400, "invalid_request")["message"]
    )


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
def test_admin_api_needs_the_admin_token(stack, authorization):
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.get(stack.url.removesuffix("/v1") + "/admin/keys", headers=headers)
    assert_openai_error(response, 401, "invalid_admin_token")


def test_admin_api_is_off_without_a_token_and_api_keys_do_not_open_it(upstream, tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    api_key = AccountStore(open_engine(store)).issue_key("someone").api_key
    with gateway(upstream, store) as plain:
        base = plain.url.removesuffix("/v1")
        for authorization in (f"Bearer {api_key}", f"Bearer {TOKEN}"):
            response = httpx.get(base + "/admin/keys", headers={"authorization": authorization})
            assert_openai_error(response, 403, "admin_disabled")


def test_cli_sets_account_and_org_limits(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    accounts = AccountStore(open_engine(store))
    key_id = accounts.issue_key("cli-account", "cli-org").record.key_id
    assert (
        run("accounts", "set-limits", "cli-account", "--rpm", "7", "--store", store).returncode == 0
    )
    assert run("orgs", "set-limits", "cli-org", "--tpm", "900", "--store", store).returncode == 0
    record = accounts.get_key(key_id)
    assert record.account_limits.rpm == 7 and record.account_limits.tpm is None
    assert record.org_limits.tpm == 900 and record.org_limits.rpm is None

    assert_user_error(
        run("accounts", "set-limits", "cli-account", "--rpm", "0", "--store", store),
        "rpm must be an integer from 1 to",
    )
    assert_user_error(
        run("orgs", "set-limits", "ghost", "--rpm", "3", "--store", store), "no organisation"
    )
    assert accounts.get_key(key_id).account_limits.rpm == 7  # the failed call changed nothing


def _last_actor(store: str, account: str) -> str:
    return AccountStore(open_engine(store)).tier_history(account, limit=1)[0]["actor"]


def test_the_audit_trail_names_the_operator_behind_a_trusted_proxy(
    stack, admin, upstream, tmp_path
):
    """An operator's address comes from X-Forwarded-For only when the peer is a proxy of
    ours; otherwise the header is the client's own word and the peer is recorded."""
    forged = {"x-forwarded-for": "203.0.113.7"}
    issue(admin, "audited")
    admin.put("/admin/accounts/audited/tier", json={"tier": "watch"}, headers=forged)
    assert _last_actor(stack.store, "audited") == "admin API 127.0.0.1"

    store = f"sqlite:///{tmp_path / 'proxied.db'}"
    env = {
        "DISTILLGUARD_GATEWAY__ADMIN_TOKEN": TOKEN,
        "DISTILLGUARD_GATEWAY__TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    with gateway(upstream, store, env=env) as proxied:
        base = proxied.url.removesuffix("/v1")
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {TOKEN}"}) as http:
            issue(http, "audited")
            http.put("/admin/accounts/audited/tier", json={"tier": "watch"}, headers=forged)
    assert _last_actor(store, "audited") == "admin API 203.0.113.7"
