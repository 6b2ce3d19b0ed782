"""Finds a TripoSR checkpoint (local folder or Hugging Face id) and loads it strictly.

Upstream's folder layout: ``config.yaml`` + ``model.ckpt`` (a plain state dict), plus our
optional ``vit_config.json``; without it the ViT is DINO ViT-B/16, whose config upstream would
download. Hub ids are found or fetched by ``recond/hub.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from recond.errors import ModelLoadError
from recond.hub import (CONFIG_NAME, VIT_CONFIG_NAME, WEIGHTS_NAME, DownloadProgress, ModelFiles,
                        cached_files, download_files, is_hub_id)
from recond.triposr.config import load_config
from recond.triposr.model import TripoSR


def load_model(source: str, device: torch.device, dtype: torch.dtype) -> TripoSR:
    """Build the model on the meta device, then adopt the checkpoint's tensors (no second copy)."""
    files = locate_files(source)
    config = load_config(files.config, files.vit_config)
    try:
        with torch.device("meta"):
            model = TripoSR(config)
    except ValueError as exc:
        raise ModelLoadError(f"{files.config} describes a model this port cannot build ({exc}).") from None
    state = read_state_dict(files.weights)
    check_fit(model, state, files.weights)
    model.load_state_dict(state, strict=True, assign=True)
    model.to(device=device, dtype=torch.float32)
    model.compute_dtype = dtype
    return model.eval()


def locate_files(source: str, progress: DownloadProgress | None = None) -> ModelFiles:
    """The model's files: a local folder as it is, a hub id from the cache or, once, the hub."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        vit_config = folder / VIT_CONFIG_NAME
        return ModelFiles(folder / CONFIG_NAME, folder / WEIGHTS_NAME, vit_config if vit_config.is_file() else None)
    if folder.exists():
        raise ModelLoadError(f"The model path {source} is a file; expected a folder holding "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME}.")
    if not is_hub_id(source):
        raise ModelLoadError(f"The model folder {source} does not exist; expected a folder holding "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME}.")
    return cached_files(source) or download_files(source, progress)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"The weights file {path} is missing; expected {WEIGHTS_NAME} "
                             "(a torch.save'd state dict) beside config.yaml.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch reports corrupt files as RuntimeError, pickle or zip errors
        raise ModelLoadError(f"The weights file {path} is not a readable PyTorch checkpoint "
                             f"({type(exc).__name__}).") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelLoadError(f"The weights file {path} does not hold a state dict of tensors.")
    return state


def check_fit(model: TripoSR, state: dict[str, torch.Tensor], path: Path) -> None:
    """One sentence naming what does not match, instead of torch's multi-line report."""
    expected = model.state_dict()
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
