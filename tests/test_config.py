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
