"""`distillguard demo --quick` as CI runs it: every outcome checked from what it recorded,
and its report readable offline."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.helpers import EXE

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        [EXE, "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    return out, done


def test_demo_outcomes(demo):
    out, done = demo
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and all(o["met"] for o in summary["outcomes"])
    rows = summary["accounts"]
    by_role = {role: [r for r in rows if r["role"] == role] for role in {r["role"] for r in rows}}
    # Harvesters: raised by the online tracer while they ran, and refused from then on.
    for row in by_role["harvester"]:
        assert row["tier"] in ("throttle", "block"), row
        assert "online tracing score" in row["reason"], row
        assert row["refused"] > row["requests"] / 4, row
    # Heavy legitimate users and casual ones: every request served.
    for row in by_role["heavy legitimate"] + by_role["casual"]:
        assert row["tier"] in ("normal", "watch") and row["served"] == row["requests"], row
    # Provider B: the hydra's accounts flagged at sign-up from A's indicators, honest ones not.
    signups = summary["signups_at_b"]
    assert {s["tier"] for s in signups if s["role"] == "hydra member"} <= {"watch", "throttle"}
    assert all(s["matches"] > 0 for s in signups if s["role"] == "hydra member")
    assert {s["tier"] for s in signups if s["role"] == "casual"} == {"normal"}
    assert summary["published"]["accounts"] > 0
    # The student is named with the harvester's cohort; the control is not named.
    student, control = summary["students"]
    assert student["named_cohorts"] == [summary["student_cohort"]]
    assert student["accounts"] == {str(summary["student_cohort"]): [summary["student_account"]]}
    assert student["p_value"] < 1e-6
    assert control["named_cohorts"] == [] and control["verdict"] == "no evidence"
    assert "report:" in done.stdout and "NO" not in done.stdout


def test_demo_report_reads_offline(demo):
    out, _ = demo
    page = (out / "report.html").read_text()
    assert "simulated traffic" in page
    # Nothing fetched from elsewhere: no external stylesheet, script, image or font.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page
    assert page.count("<svg") == 2  # the risk chart and the hydra's graph
    assert "polyline" in page and 'class="member' in page
    # The console's stores are left for the operator: provider A's opens there.
    assert (out / "provider-a.db").exists() and (out / "logs" / "gateway-a.log").exists()
