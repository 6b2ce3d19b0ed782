"""Presets: validated like the top-level job settings, chosen by a picture's first folder."""

from __future__ import annotations

import pytest

from recond.config import SettingsError, load_settings
from recond.workflows.presets import PRESET_MARKER, create_preset_folders, job_settings, preset_of


def test_a_preset_is_checked_like_top_level_settings(tmp_path):
    settings = load_settings(presets={"quick": {"render_views": "2", "bake_texture": "false"}})
    assert settings.presets == {"quick": {"render_views": 2, "bake_texture": False}}
    with pytest.raises(SettingsError, match="preset 'quick': key 'render_views'.*greater than"):
        load_settings(presets={"quick": {"render_views": 0}})
    with pytest.raises(SettingsError, match="preset 'quick': unknown key 'device'"):
        load_settings(presets={"quick": {"device": "cpu"}})  # a model setting, not a job's


@pytest.mark.parametrize("name", ["web", "failed", "with space", ".hidden", ""])
def test_a_preset_name_is_a_plain_folder_name_of_its_own(name):
    with pytest.raises(SettingsError, match="preset"):
        load_settings(presets={name: {"render_views": 2}})


def test_presets_come_from_the_toml_tables(tmp_path):
    config = tmp_path / "recond.toml"
    config.write_text("render_views = 30\n[presets.quick]\nrender_views = 2\n")
    assert load_settings(config).presets == {"quick": {"render_views": 2}}


def test_the_first_folder_names_the_preset():
    presets = {"quick": {}}
    assert preset_of("quick/mug.jpg", presets) == "quick"
    assert preset_of("quick/deeper/mug.jpg", presets) == "quick"
    assert preset_of("kitchen/quick/mug.jpg", presets) is None
    assert preset_of("quick", presets) is None  # a file named like a preset, in the inbox itself


def test_job_settings_layer_preset_then_overrides_over_the_defaults():
    settings = load_settings(render_views=30, render_size=256,
                             presets={"quick": {"render_views": 2, "render_size": 64}})
    job, warning = job_settings(settings, "quick", {"render_views": 3})
    assert (job.render_views, job.render_size, warning) == (3, 64, None)
    gone, warning = job_settings(settings, "removed", {})
    assert gone.render_views == 30 and "no longer" in (warning or "")


def test_preset_folders_are_made_with_a_marker_that_keeps_them(tmp_path):
    made = create_preset_folders(tmp_path, {"quick": {}, "print": {}})
    assert sorted(folder.name for folder in made) == ["print", "quick"]
    assert (tmp_path / "quick" / PRESET_MARKER).is_file()
    assert create_preset_folders(tmp_path, {"quick": {}}) == []
