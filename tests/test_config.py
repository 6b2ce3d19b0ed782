"""Settings: TOML file, RECOND_* overrides, and one-line errors that name the setting."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from recond.config import PARTS, Settings, SettingsError, load_settings

from helpers.paths import REPO
DOCUMENTED = Path("config") / "recond.toml"
# Keys whose value in the example file is a server's folder, not the built-in default.
SITE_SPECIFIC = {"inbox", "outbox", "state_dir"}


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recond.toml"
    path.write_text(text)
    return path


def documented_text() -> str:
    """config/recond.toml as committed. The README has people set `model` in that file, and
    their settings are theirs, not the documentation; without git (an unpacked archive) the
    file as it is."""
    try:
        committed = subprocess.run(["git", "show", f"HEAD:{DOCUMENTED.as_posix()}"], cwd=REPO,
                                   capture_output=True, text=True, timeout=30)
    except OSError:  # no git on this machine
        committed = None
    if committed is not None and committed.returncode == 0:
        return committed.stdout
    return (REPO / DOCUMENTED).read_text(encoding="utf-8")


def documented_values() -> dict[str, object]:
    return tomllib.loads(documented_text())


def test_defaults_match_the_documented_pipeline_settings(monkeypatch):
    monkeypatch.delenv("RECOND_CONFIG", raising=False)
    settings = load_settings()
    documented = documented_values()
    for key in ("mc_resolution", "texture_resolution", "render_views", "model"):
        assert getattr(settings, key) == documented[key], key
    for key, value in documented.items():
        if key not in SITE_SPECIFIC:
            assert getattr(settings, key) == value, f"{key}: default differs from {DOCUMENTED}"


def test_example_file_documents_every_setting_and_nothing_else(tmp_path):
    text = documented_text()
    keys = set(documented_values())
    # A setting whose default cannot be written in TOML (None) is shown commented out.
    commented = set(re.findall(r"^# ?([a-z_]+) = ", text, flags=re.MULTILINE))
    assert keys <= set(Settings.model_fields), "keys recond does not know"
    assert set(Settings.model_fields) - keys <= commented, "settings the file does not show"
    unset_by_default = {name for name, field in Settings.model_fields.items() if field.default is None}
    assert set(Settings.model_fields) - keys == unset_by_default
    assert load_settings(write_toml(tmp_path, text)).mc_resolution == documented_values()["mc_resolution"]


def test_every_setting_belongs_to_exactly_one_part():
    declared = sorted(name for part in PARTS for name in part.model_fields)
    assert declared == sorted(Settings.model_fields)


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


def test_devices_come_from_a_comma_separated_variable_and_win_over_device(monkeypatch):
    monkeypatch.setenv("RECOND_DEVICES", "cuda:0, CUDA:1")
    settings = load_settings(device="cpu")
    assert settings.devices == ["cuda:0", "cuda:1"]
    assert settings.resolved_devices() == ["cuda:0", "cuda:1"] and settings.resolved_device() == "cuda:0"
    one = settings.on_device("cuda:1")
    assert (one.device, one.devices, one.resolved_device()) == ("cuda:1", [], "cuda:1")
    monkeypatch.delenv("RECOND_DEVICES")
    assert load_settings(device="cpu").resolved_devices() == ["cpu"]


@pytest.mark.parametrize("devices, wrong", [(["cuda:0", "auto"], "auto"), (["gpu1"], "gpu1")])
def test_a_device_list_names_real_devices(devices, wrong):
    with pytest.raises(SettingsError, match=f"devices: .*'{wrong}'"):
        load_settings(devices=devices)


def test_several_devices_with_no_host_processes_is_refused_naming_both():
    with pytest.raises(SettingsError, match="devices names 2 devices but host_workers = 0"):
        load_settings(devices=["cpu", "cpu"], host_workers=0)


def test_outbox_inside_inbox_is_refused_naming_both(tmp_path):
    inbox = tmp_path / "in"
    with pytest.raises(SettingsError) as caught:
        load_settings(inbox=inbox, outbox=inbox / "results", state_dir=tmp_path / "state")
    assert str(inbox / "results") in str(caught.value) and str(inbox) in str(caught.value)


def test_missing_config_file_is_one_clear_line(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_relative_model_folder_is_taken_from_the_files_folder_and_a_hub_id_stays(tmp_path, monkeypatch):
    monkeypatch.delenv("RECOND_MODEL", raising=False)
    site = tmp_path / "site"
    site.mkdir()
    (site / "TripoSR").mkdir()  # a bare name counts as a folder only when it is there
    monkeypatch.chdir(tmp_path)  # started from elsewhere: the working directory does not count
    for written, meant in (("../shared/bench_chair", str(tmp_path / "shared" / "bench_chair")),
                           ("./models/tiny", str(site / "models" / "tiny")),
                           ("TripoSR", str(site / "TripoSR")),
                           ("stabilityai/TripoSR", "stabilityai/TripoSR"),
                           ("/srv/models/TripoSR", "/srv/models/TripoSR")):
        config = site / "recond.toml"
        config.write_text(f'model = "{written}"\n')
        assert load_settings(config).model == meant, written
    monkeypatch.setenv("RECOND_MODEL", "../from-the-environment")  # a variable: as written
    assert load_settings(config).model == "../from-the-environment"


def test_a_missing_model_folder_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    from recond.errors import ModelLoadError
    from recond.triposr.loader import locate_files

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        locate_files("../elsewhere/bench_chair")
    assert f"The model folder {tmp_path.parent / 'elsewhere' / 'bench_chair'} does not exist" \
        in str(caught.value)


CPUINFO_FLAGS = "fpu vme sse sse2 avx avx2 avx512f avx512bw avx512vl"


@pytest.mark.parametrize(("flags", "expected"), [
    (CPUINFO_FLAGS + " avx512_bf16 avx512_vnni", "bfloat16 (CPU has avx512_bf16)"),
    (CPUINFO_FLAGS + " amx_bf16 amx_tile avx512_bf16", "bfloat16 (CPU has avx512_bf16, amx_bf16)"),
    (CPUINFO_FLAGS, "float32 (CPU has no avx512_bf16 or amx_bf16)"),
])
def test_auto_dtype_on_a_cpu_follows_its_bfloat16_flags(tmp_path, monkeypatch, flags, expected):
    # A stand-in /proc/cpuinfo (two cores, Linux's layout): this machine is only one of these CPUs.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {core}\nmodel name\t: x\nflags\t\t: {flags}\n\n" for core in (0, 1)))
    monkeypatch.setattr("recond.config.CPUINFO", cpuinfo)
    assert str(load_settings(device="cpu").resolved_dtype()) == expected
    assert load_settings(device="cpu", dtype="float16").resolved_dtype() == ("float16", "set by the dtype setting")
    assert load_settings(device="cuda").resolved_dtype().name == "float16"


def test_auto_dtype_without_cpuinfo_is_float32(tmp_path, monkeypatch):
    monkeypatch.setattr("recond.config.CPUINFO", tmp_path / "missing")
    assert load_settings(device="cpu").resolved_dtype().name == "float32"
