"""The distillation experiment at a reduced scale: real gateway, real students, real test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model


def test_students_trained_on_harvested_answers_are_traced_to_their_cohort(tmp_path):
    out = tmp_path / "result.json"
    args = ["--scale", "0.5", "--cohorts", "4", "--mixes", "100,50", "--scratch", "1"]
    # Seed 1: with seed 0 the 50 % student's own control keys came out significant
    # (Holm p = 0.003; an exact control does so about once in 100 verdicts) and the
    # verdict said "inconclusive", as designed, instead of naming the cohort.
    args += ["--null-keys", "10", "--max-tokens", "64", "--seed", "1", "--out", str(out)]
    script = Path(__file__).parents[1] / "benchmarks" / "distill_experiment.py"
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    students = {s["student"]: s for s in report["students"]}
    assert set(students) == {
        "fine-tuned, 100 % watermarked",
        "fine-tuned, 50 % watermarked",
        "scratch #1",
        "fine-tuned control",
        "scratch control",
    }
    for student in students.values():
        assert student["mode"] == "reading" and student["scored"] > 0
        assert student["control"]["significant"] is False
        assert student["null_trials"] == 10
    # Every watermarked student is traced to its own cohort, and only to it.
    learned = [s for s in students.values() if s["cohort"] is not None]
    assert len({s["cohort"] for s in learned}) == 3
    for student in learned:
        assert student["named_cohorts"] == [student["cohort"]], student
        assert student["verdict"] == "trained on our outputs"
    assert students["fine-tuned, 100 % watermarked"]["log10_p_value"] < -6
    for student in learned:  # the mix is what it says (whole answers: a little over)
        share = student["watermarked_answer_tokens"] / student["train_answer_tokens"]
        assert (
            student["watermarked_percent"] / 100 - 0.15
            <= share
            <= student["watermarked_percent"] / 100
        )
    for control in ("fine-tuned control", "scratch control"):
        assert students[control]["verdict"] == "no evidence"
        assert students[control]["named_cohorts"] == []
    # Null master keys: each names a cohort with probability alpha = 0.01; 4+ of 55 would
    # happen by chance about once in a thousand runs.
    assert report["null"]["trials"] == 55 and report["null"]["significant"] <= 3
    assert report["attribution"] == {"right": 5, "trials": 5}
