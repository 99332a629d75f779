import pytest

from distillguard.config import load_settings
from distillguard.errors import DistillguardError


def test_embedded_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISTILLGUARD_CONFIG", raising=False)
    settings = load_settings()
    assert (
        settings.watermark.scheme,
        settings.watermark.gamma,
        settings.watermark.delta,
        settings.watermark.context_width,
    ) == ("kgw", 0.25, 2.0, 2)


def test_file_then_environment_then_arguments(monkeypatch, tmp_path):
    config = tmp_path / "dg.toml"
    config.write_text("[watermark]\ngamma = 0.5\ndelta = 3.0\n[generation]\nmax_new_tokens = 64\n")
    monkeypatch.setenv("DISTILLGUARD_CONFIG", str(config))
    monkeypatch.setenv("DISTILLGUARD_WATERMARK__DELTA", "4.0")
    settings = load_settings(cache_dir=tmp_path)
    assert settings.watermark.gamma == 0.5  # from the file
    assert settings.watermark.delta == 4.0  # environment beats the file
    assert settings.generation.max_new_tokens == 64
    assert settings.cache_dir == tmp_path  # arguments beat everything


def test_local_file_is_found_in_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTILLGUARD_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "distillguard.toml").write_text("[watermark]\ncontext_width = 1\n")
    assert load_settings().watermark.context_width == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[watermark\n", "cannot read configuration"),
        ("[watermark]\nscheme = 'rot13'\n", "invalid setting watermark.scheme"),
        ("unknown_setting = 1\n", "invalid setting unknown_setting"),
    ],
)
def test_bad_configuration_files(monkeypatch, tmp_path, content, message):
    config = tmp_path / "dg.toml"
    config.write_text(content)
    monkeypatch.setenv("DISTILLGUARD_CONFIG", str(config))
    with pytest.raises(DistillguardError, match=message):
        load_settings()


def test_config_variable_naming_a_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILLGUARD_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(DistillguardError, match="not a file"):
        load_settings()


def test_tracing_thresholds_must_be_ordered():
    from distillguard.config import load_settings
    from distillguard.errors import DistillguardError

    with pytest.raises(DistillguardError, match="watch_at <= throttle_at <= block_at"):
        load_settings(tracing={"watch_at": 0.6, "throttle_at": 0.5})


def test_a_partial_table_keeps_the_defaults_it_does_not_name(monkeypatch, tmp_path):
    """One field of a tier's rule or a scope's limits changes that field only: the watch
    tier keeps stripping log-probabilities, the key keeps its other limits."""
    config = tmp_path / "dg.toml"
    config.write_text("[gateway.output.watch]\nmax_n = 2\n[gateway.limits.org]\ntpd = 7\n")
    monkeypatch.setenv("DISTILLGUARD_CONFIG", str(config))
    monkeypatch.setenv("DISTILLGUARD_GATEWAY__LIMITS__KEY__RPM", "5")
    monkeypatch.setenv("DISTILLGUARD_GATEWAY__OUTPUT__THROTTLE__MAX_TOKENS", "256")
    gateway = load_settings().gateway
    watch, throttle = gateway.output.watch, gateway.output.throttle
    assert (watch.logprobs, watch.max_n, watch.max_tokens) == ("strip", 2, 4096)
    assert (throttle.logprobs, throttle.max_n, throttle.max_tokens) == ("refuse", 1, 256)
    key, org = gateway.limits.key, gateway.limits.org
    assert (key.rpm, key.tpm, key.tpd, key.concurrency) == (5, 200_000, None, 32)
    assert (org.rpm, org.tpm, org.tpd, org.concurrency) == (6_000, 2_000_000, 7, 256)


def test_the_configuration_reference_is_the_settings_own(monkeypatch, tmp_path):
    """docs/configuration.md is what `config reference` prints: every setting, described,
    under the variable that sets it."""
    from pathlib import Path

    from .helpers import run

    monkeypatch.chdir(tmp_path)
    printed = run("config", "reference")
    assert printed.returncode == 0, printed.stderr
    page = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert printed.stdout == page.read_text(), "regenerate: distillguard config reference"
    rows = [line.split(" | ") for line in printed.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) > 70 and all(row[3].strip(" |") for row in rows)  # each one described
    variables = {row[2].strip("`") for row in rows}
    assert "DISTILLGUARD_GATEWAY__OUTPUT__WATCH__LOGPROBS" in variables
    monkeypatch.setenv("DISTILLGUARD_GATEWAY__OUTPUT__WATCH__LOGPROBS", "refuse")
    assert load_settings().gateway.output.watch.logprobs == "refuse"
    shown = run("config", "show", env={"DISTILLGUARD_EXCHANGE__TOKEN": "dgx-secret-token"})
    assert shown.returncode == 0 and "dgx-secret-token" not in shown.stdout
