import json
import stat

import pytest

from distillguard.errors import KeyFileError
from distillguard.watermark import WatermarkKey


def test_generated_keys_are_random_256_bit(key):
    other = WatermarkKey.generate()
    assert len(key.secret) == 32
    assert key.secret != other.secret
    assert key.key_id != other.key_id
    assert key.key_id.startswith("wk_")


def test_secret_never_appears_in_repr_or_str(key):
    for rendered in (repr(key), str(key)):
        assert key.secret.hex() not in rendered
        assert "secret" not in rendered


def test_save_load_round_trip_with_mode_0600(tmp_path, key):
    params = {"scheme": "kgw", "gamma": 0.25}
    key = WatermarkKey(secret=key.secret, key_id=key.key_id, params=params)
    path = tmp_path / "key.json"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = WatermarkKey.load(path)
    assert loaded == key
    assert loaded.params == params
    assert [p.name for p in tmp_path.iterdir()] == ["key.json"]  # no temp file left behind


def test_save_refuses_to_overwrite_unless_asked(tmp_path, key):
    path = tmp_path / "key.json"
    key.save(path)
    with pytest.raises(KeyFileError, match="already exists"):
        WatermarkKey.generate().save(path)
    assert WatermarkKey.load(path) == key
    replacement = WatermarkKey.generate()
    replacement.save(path, overwrite=True)
    assert WatermarkKey.load(path) == replacement


def test_derive_is_deterministic_and_separates_labels(key):
    a, b = key.derive("cohort-17"), key.derive("cohort-17")
    assert a.secret == b.secret and a.key_id == b.key_id == f"{key.key_id}/cohort-17"
    assert key.derive("cohort-18").secret != a.secret
    assert a.secret != key.secret
    assert WatermarkKey.generate().derive("cohort-17").secret != a.secret


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "not a distillguard watermark key"),
        ('{"format": "other"}', "not a distillguard watermark key"),
        ('{"format": "distillguard-watermark-key/1", "key_id": "x"}', "missing or malformed"),
        (
            '{"format": "distillguard-watermark-key/1", "key_id": "x", "secret": "zz"}',
            "missing or malformed",
        ),
        (
            '{"format": "distillguard-watermark-key/1", "key_id": "x", "secret": "00ff"}',
            "shorter than 128 bits",
        ),
    ],
)
def test_corrupt_key_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "key.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=message):
        WatermarkKey.load(path)


def test_missing_key_file(tmp_path):
    with pytest.raises(KeyFileError, match="not found"):
        WatermarkKey.load(tmp_path / "absent.json")


def test_key_file_document_shape(tmp_path, key):
    path = tmp_path / "key.json"
    key.save(path)
    document = json.loads(path.read_text())
    assert document["format"] == "distillguard-watermark-key/1"
    assert bytes.fromhex(document["secret"]) == key.secret
