"""Loading TripoSR: the official config, local folders, hub ids (cache, offline) and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from recond.errors import ModelLoadError
from recond.triposr.config import load_config
from recond.triposr.model import TripoSR
from recond.triposr.config import DINO_VITB16, OFFICIAL_CONFIG_PATH, resolve_references


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def assert_one_sentence_naming(error: pytest.ExceptionInfo[ModelLoadError], *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message.endswith(".")
    for fragment in fragments:
        assert fragment in message


def test_official_config_builds_on_meta_with_the_checkpoint_names_and_shapes(shared_dir: Path) -> None:
    reference = json.loads((shared_dir / "reference" / "triposr_state_dict.json").read_text())
    raw = yaml.safe_load(OFFICIAL_CONFIG_PATH.read_text())
    assert raw == reference["config"]
    assert resolve_references(raw) == reference["config_resolved"]
    config = load_config(OFFICIAL_CONFIG_PATH)
    assert config.vit == DINO_VITB16
    with torch.device("meta"):
        model = TripoSR(config)
    state = model.state_dict()
    assert [(key, list(value.shape)) for key, value in state.items()] == [
        (key, entry["shape"]) for key, entry in reference["params"].items()]
    assert sum(value.numel() for value in state.values()) == reference["total_params"]
    assert model.radius == 0.87


def test_vit_config_json_in_the_folder_overrides_the_builtin_dino_facts(tiny_model_dir: Path) -> None:
    model = TripoSR.from_pretrained(tiny_model_dir)
    assert model.config.vit.hidden_size == 32
    assert not model.training
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())


def test_missing_folder_is_one_sentence_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as error:
        TripoSR.from_pretrained(missing)
    assert_one_sentence_naming(error, str(missing), "config.yaml", "model.ckpt")


def test_folder_without_weights_names_the_missing_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    (folder / "model.ckpt").unlink()
    with pytest.raises(ModelLoadError) as error:
        TripoSR.from_pretrained(folder)
    assert_one_sentence_naming(error, str(folder / "model.ckpt"), "missing")


def test_folder_without_config_names_the_missing_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    (folder / "config.yaml").unlink()
    with pytest.raises(ModelLoadError) as error:
        TripoSR.from_pretrained(folder)
    assert_one_sentence_naming(error, str(folder / "config.yaml"), "missing")


def test_corrupt_weights_file_is_reported_not_traced(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    (folder / "model.ckpt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelLoadError) as error:
        TripoSR.from_pretrained(folder)
    assert_one_sentence_naming(error, str(folder / "model.ckpt"), "not a readable PyTorch checkpoint")


def test_weights_of_another_shape_are_refused_strictly(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["decoder"]["n_neurons"] = 8
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ModelLoadError) as error:
        TripoSR.from_pretrained(folder)
    assert_one_sentence_naming(error, str(folder / "model.ckpt"), "decoder.layers.0.weight", "[16, 24]", "[8, 24]")


def test_extra_tensor_in_the_checkpoint_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    state = torch.load(folder / "model.ckpt", weights_only=True)
    state["decoder.extra.weight"] = torch.zeros(2)
    torch.save(state, folder / "model.ckpt")
    with pytest.raises(ModelLoadError) as error:
        TripoSR.from_pretrained(folder)
    assert_one_sentence_naming(error, "1 unexpected", "decoder.extra.weight")


def test_unknown_part_class_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = copy_checkpoint(tiny_model_dir, tmp_path / "model")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["decoder_cls"] = "tsr.models.network_utils.SomethingElse"
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ModelLoadError) as error:
        TripoSR.from_pretrained(folder)
    assert_one_sentence_naming(error, "decoder_cls", "SomethingElse")


def populate_hub_cache(cache: Path, repo_id: str, files: Path) -> None:
    """The on-disk layout huggingface_hub keeps for a downloaded repository."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(files, repo / "snapshots" / revision)


def test_hub_id_loads_from_the_cache_when_offline(tiny_model_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Real huggingface_hub, no network: HF_HUB_OFFLINE and the cache folder are set the way the
    # library reads them (its constants module), and the cache is filled by hand.
    from huggingface_hub import constants

    populate_hub_cache(tmp_path / "hub", "someone/tiny-triposr", tiny_model_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = TripoSR.from_pretrained("someone/tiny-triposr")
    assert model.config.vit.hidden_size == 32


def test_hub_id_offline_and_not_cached_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as error:
        TripoSR.from_pretrained("stabilityai/TripoSR")
    assert_one_sentence_naming(error, "stabilityai/TripoSR", "Hugging Face Hub")
