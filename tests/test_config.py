"""Settings: TOML file, RECOND_* overrides, and one-line errors that name the setting."""

from pathlib import Path

import pytest

from recond.config import SettingsError, load_settings


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recond.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_pipeline_settings(monkeypatch):
    monkeypatch.delenv("RECOND_CONFIG", raising=False)
    settings = load_settings()
    assert settings.mc_resolution == 256
    assert settings.texture_resolution == 1024
    assert settings.render_views == 30
    assert settings.model == "stabilityai/TripoSR"


def test_environment_overrides_the_toml_file(tmp_path, monkeypatch):
    config = write_toml(tmp_path, "mc_resolution = 64\nrender_views = 8\n")
    monkeypatch.setenv("RECOND_MC_RESOLUTION", "48")
    settings = load_settings(config)
    assert settings.mc_resolution == 48
    assert settings.render_views == 8


def test_recond_config_variable_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECOND_CONFIG", str(write_toml(tmp_path, "render_size = 128\n")))
    assert load_settings().render_size == 128


def test_bad_value_fails_with_one_line_naming_the_setting(monkeypatch):
    monkeypatch.setenv("RECOND_MC_RESOLUTION", "lots")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "mc_resolution" in message and "RECOND_MC_RESOLUTION" in message


def test_unknown_key_in_the_file_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="unknown setting 'render_view'"):
        load_settings(write_toml(tmp_path, "render_view = 8\n"))


def test_bad_device_is_refused(monkeypatch):
    monkeypatch.setenv("RECOND_DEVICE", "gpu0")
    with pytest.raises(SettingsError, match="device"):
        load_settings()


def test_outbox_inside_inbox_is_refused_naming_both(tmp_path):
    inbox = tmp_path / "in"
    with pytest.raises(SettingsError) as caught:
        load_settings(inbox=inbox, outbox=inbox / "results", state_dir=tmp_path / "state")
    assert str(inbox / "results") in str(caught.value) and str(inbox) in str(caught.value)


def test_missing_config_file_is_one_clear_line(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
