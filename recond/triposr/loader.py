"""Finds a TripoSR checkpoint (local folder or Hugging Face id) and reads it strictly.

TripoSR.from_pretrained (model.py) builds the model from what this module reads; this module
never imports the model, so the two do not import each other.

Upstream's folder layout: ``config.yaml`` + ``model.ckpt`` (a plain state dict), plus our
optional ``vit_config.json``; without it the ViT is DINO ViT-B/16, whose config upstream would
download. Hub ids go through huggingface_hub, so its cache and HF_HUB_OFFLINE apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from recond.errors import ModelLoadError

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.ckpt"
VIT_CONFIG_NAME = "vit_config.json"


@dataclass(frozen=True)
class ModelFiles:
    config: Path
    weights: Path
    vit_config: Path | None


def locate_files(source: str) -> ModelFiles:
    folder = Path(source).expanduser()
    if folder.is_dir():
        vit_config = folder / VIT_CONFIG_NAME
        return ModelFiles(folder / CONFIG_NAME, folder / WEIGHTS_NAME, vit_config if vit_config.is_file() else None)
    if folder.exists():
        raise ModelLoadError(f"The model path {source} is a file; expected a folder holding "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME}.")
    if _looks_like_path(source):
        raise ModelLoadError(f"The model folder {source} does not exist; expected a folder holding "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME}.")
    return download_files(source)


def download_files(repo_id: str) -> ModelFiles:
    """Fetch (or find in the cache) the files of a hub model such as stabilityai/TripoSR."""
    from huggingface_hub import hf_hub_download

    def fetch(filename: str) -> Path:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))

    try:
        config, weights = fetch(CONFIG_NAME), fetch(WEIGHTS_NAME)
    except Exception as exc:  # huggingface_hub raises many kinds (offline, 404, HTTP, bad id)
        raise ModelLoadError(
            f"'{repo_id}' is not a local folder and its {CONFIG_NAME} and {WEIGHTS_NAME} could not be "
            f"fetched from the Hugging Face Hub or its cache ({type(exc).__name__}).") from None
    try:
        vit_config: Path | None = fetch(VIT_CONFIG_NAME)
    except Exception:  # the official repository has none: DINO ViT-B/16 facts are built in
        vit_config = None
    return ModelFiles(config, weights, vit_config)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"The weights file {path} is missing; expected {WEIGHTS_NAME} "
                             "(a torch.save'd state dict) beside config.yaml.")
    try:
        # Read whole, not memory-mapped: a mapped checkpoint is paged in by the first forward
        # pass, which then took 2x a warm one (issue 7); reading it here is part of loading.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports corrupt files as RuntimeError, pickle or zip errors
        raise ModelLoadError(f"The weights file {path} is not a readable PyTorch checkpoint "
                             f"({type(exc).__name__}).") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelLoadError(f"The weights file {path} does not hold a state dict of tensors.")
    return state


def check_fit(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: Path) -> None:
    """One sentence naming what does not match the model's own state dict, instead of torch's
    multi-line report."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        key = reshaped[0]
        problems.append(f"{len(reshaped)} with another shape (e.g. {key}: {list(state[key].shape)} "
                        f"in the file, {list(expected[key].shape)} in the config)")
    raise ModelLoadError(f"The weights file {path} does not fit its config: {', '.join(problems)} tensors.")


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source
