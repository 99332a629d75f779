"""The real console script, run as a user runs it: exit codes, stdout JSON, stderr lines."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from distillguard.watermark import Watermark, WatermarkKey

from .helpers import assert_user_error, run


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "key.json"
    result = run("watermark", "keygen", "--out", str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_keygen_writes_a_private_key_and_prints_only_its_id(key_file):
    key = WatermarkKey.load(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key.params["scheme"] == "kgw" and key.params["gamma"] == 0.25
    result = run(
        "watermark",
        "keygen",
        "--out",
        str(key_file),
        "--force",
        "--scheme",
        "gumbel",
        "--context-width",
        "3",
    )
    assert result.returncode == 0
    new_key = WatermarkKey.load(key_file)
    assert result.stdout.strip() == new_key.key_id
    assert new_key.secret.hex() not in result.stdout + result.stderr
    assert new_key.params["scheme"] == "gumbel" and new_key.params["context_width"] == 3


def test_keygen_refuses_to_overwrite(key_file):
    before = key_file.read_bytes()
    assert_user_error(run("watermark", "keygen", "--out", str(key_file)), "already exists")
    assert key_file.read_bytes() == before


def test_keygen_rejects_invalid_parameters(tmp_path):
    out = tmp_path / "k.json"
    assert_user_error(run("watermark", "keygen", "--out", str(out), "--gamma", "1.5"), "gamma")
    assert not out.exists()


def test_detect_token_ids_from_jsonl(tmp_path, key_file):
    watermark = Watermark.from_key(WatermarkKey.load(key_file))
    rng = np.random.default_rng(0)
    k = watermark.config.context_width
    green_only = [0] * k
    for _ in range(120):  # a sequence made only of green tokens: maximally watermarked
        values = watermark.hash.vocabulary_values(np.array([green_only[-k:]]))[0]
        green_only.append(int(rng.choice(np.flatnonzero(watermark.scheme.green(values)))))
    clean = rng.integers(0, 49152, 120).tolist()
    data = tmp_path / "texts.jsonl"
    data.write_text(
        json.dumps({"token_ids": green_only})
        + "\n\n"
        + json.dumps({"token_ids": clean, "prompt_ids": clean[:10]})
        + "\n"
    )
    result = run("watermark", "detect", "--key", str(key_file), str(data))
    assert result.returncode == 0, result.stderr
    marked, plain = (json.loads(line) for line in result.stdout.splitlines())
    assert marked["input"].endswith("texts.jsonl:1") and plain["input"].endswith("texts.jsonl:3")
    assert marked["green_fraction"] == 1.0 and marked["p_value"] < 1e-60
    windows, prompt_windows = 120 - k, 10 - k
    assert plain["p_value"] > 1e-4 and plain["scored"] == windows - prompt_windows
    assert set(marked) >= {"p_value", "z", "scored", "green_fraction"}


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("absent.txt", None, "no such file"),
        ("empty.txt", b"", "empty text"),
        ("bad.jsonl", b"{oops\n", "invalid JSON"),
        ("fields.jsonl", b'{"x": 1}\n', "needs one of"),
        ("ids.jsonl", b'{"token_ids": [1, 2, 99999]}\n', "outside the watermark vocabulary"),
        ("short.jsonl", b'{"token_ids": [5]}\n', "too short"),
        ("binary.txt", b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_detect_bad_input_is_one_line_and_exit_2(tmp_path, key_file, name, content, fragment):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert_user_error(run("watermark", "detect", "--key", str(key_file), str(path)), fragment)


def test_detect_with_missing_or_corrupt_key(tmp_path):
    text = tmp_path / "t.jsonl"
    text.write_text('{"token_ids": [1, 2, 3]}\n')
    assert_user_error(
        run("watermark", "detect", "--key", str(tmp_path / "no.json"), str(text)),
        "key file not found",
    )
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "distillguard-watermark-key/1", "secret": ')
    assert_user_error(
        run("watermark", "detect", "--key", str(corrupt), str(text)), "not valid JSON"
    )


def test_one_bad_input_among_good_ones_prints_nothing(tmp_path, key_file):
    good = tmp_path / "good.jsonl"
    good.write_text('{"token_ids": [1, 2, 3, 4]}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"token_ids": "nope"}\n')
    assert_user_error(
        run("watermark", "detect", "--key", str(key_file), str(good), str(bad)),
        "must be a list of integers",
    )


def test_invalid_configuration_is_reported(tmp_path, key_file):
    config = tmp_path / "distillguard.toml"
    config.write_text("[watermark]\ngamma = 7\n")
    result = run(
        "watermark",
        "keygen",
        "--out",
        str(tmp_path / "k.json"),
        env={"DISTILLGUARD_CONFIG": str(config)},
    )
    assert_user_error(result, "invalid setting watermark.gamma")


def test_generate_needs_exactly_one_prompt_source(tmp_path):
    assert_user_error(run("generate"), "give either a PROMPT or --prompts")
