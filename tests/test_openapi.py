"""Schemathesis fuzzes a real gateway from its own /openapi.json: no 5xx, only documented answers.

It runs as its `st` command line, as an operator would run it against a deployment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distillguard.policy import MAX_LIMIT, Limits
from distillguard.store import AccountStore, open_engine
from tests.gateway_stack import gateway

ADMIN_TOKEN = "fuzzing-admin-token-at-least-32-characters"
# Fuzzing must meet the gateway's validation, not its rate limits.
HIGH = Limits(**MAX_LIMIT)
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
ST = shutil.which("st", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, upstream):
    store = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'store.db'}"
    accounts = AccountStore(open_engine(store))
    api_key = accounts.issue_key("schemathesis-account", "schemathesis-org", HIGH).api_key
    accounts.set_limits("account", "schemathesis-account", HIGH)
    accounts.set_limits("org", "schemathesis-org", HIGH)
    env = {"DISTILLGUARD_GATEWAY__ADMIN_TOKEN": ADMIN_TOKEN}
    with gateway(upstream, store, env=env) as stack:
        yield stack.url.removesuffix("/v1"), api_key


@pytest.mark.parametrize("area", ["/v1/", "/admin/"])
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(fuzzed, area, tmp_path):
    base, api_key = fuzzed
    secret = ADMIN_TOKEN if area == "/admin/" else api_key
    result = subprocess.run(
        [
            ST,
            "run",
            f"{base}/openapi.json",
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {secret}",
            "--include-path-regex",
            f"^{area}",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # schemathesis keeps a cache in its working directory
        env={"NO_COLOR": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or " passed" in result.stdout, result.stdout
