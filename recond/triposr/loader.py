"""Finds a TripoSR checkpoint (local folder or Hugging Face id) and reads it strictly.

TripoSR.from_pretrained (model.py) builds the model from what this module reads; this module
never imports the model, so the two do not import each other.

Upstream's folder layout: ``config.yaml`` + ``model.ckpt`` (a plain state dict), plus our
optional ``vit_config.json``; without it the ViT is DINO ViT-B/16, whose config upstream would
download. Hub ids are found or fetched by ``recond/hub.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from recond.errors import ModelLoadError
from recond.hub import (CONFIG_NAME, VIT_CONFIG_NAME, WEIGHTS_NAME, DownloadProgress, ModelFiles,
                        cached_files, download_files, is_hub_id)


def locate_files(source: str, progress: DownloadProgress | None = None) -> ModelFiles:
    """The model's files: a local folder as it is, a hub id from the cache or, once, the hub."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        vit_config = folder / VIT_CONFIG_NAME
        return ModelFiles(folder / CONFIG_NAME, folder / WEIGHTS_NAME, vit_config if vit_config.is_file() else None)
    where = os.path.abspath(folder)  # the folder looked at, wherever recond was started from
    if folder.exists():
        raise ModelLoadError(f"The model path {where} is a file; expected a folder holding "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME}.")
    if not is_hub_id(source):
        raise ModelLoadError(f"The model folder {where} does not exist; expected a folder holding "
                             f"{CONFIG_NAME} and {WEIGHTS_NAME}.")
    return cached_files(source) or download_files(source, progress)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"The weights file {path} is missing; expected {WEIGHTS_NAME} "
                             "(a torch.save'd state dict) beside config.yaml.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        page_in(state)
    except Exception as exc:  # torch reports corrupt files as RuntimeError, pickle or zip errors
        raise ModelLoadError(f"The weights file {path} is not a readable PyTorch checkpoint "
                             f"({type(exc).__name__}).") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelLoadError(f"The weights file {path} does not hold a state dict of tensors.")
    return state


def page_in(state: dict[str, torch.Tensor]) -> None:
    """Fault every page of the memory-mapped weights in now, in file order, as part of loading.

    Left lazy, the first forward pass paged the checkpoint in piecemeal and took 2x a warm one
    (issue 7). Mapped rather than read into fresh memory: reading held temporary copies and
    peaked ~0.6 GB higher while loading; mapped pages are the file's, shared with the page cache.
    """
    page_floats = 4096 // 4
    with torch.inference_mode():
        for tensor in sorted(state.values(), key=lambda t: t.data_ptr()):
            flat = tensor.reshape(-1)
            if flat.numel():
                flat[::page_floats].sum()


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
