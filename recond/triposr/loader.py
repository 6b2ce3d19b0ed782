"""Finds a TripoSR checkpoint (local folder or Hugging Face id) and loads it strictly.

Upstream's folder layout: ``config.yaml`` + ``model.ckpt`` (a plain state dict), plus our
optional ``vit_config.json``; without it the ViT is DINO ViT-B/16, whose config upstream would
download. Hub ids go through huggingface_hub, so its cache (HF_HOME) and HF_HUB_OFFLINE apply:
a cached model needs no network; an uncached one is downloaded once, after one quick check
that the hub answers, so an offline machine gets one clear line at once instead of retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from recond.triposr.config import load_config
from recond.errors import ModelLoadError
from recond.triposr.model import TripoSR

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.ckpt"
VIT_CONFIG_NAME = "vit_config.json"
HUB_TIMEOUT_SECONDS = 1.5  # one metadata request: offline, the answer comes within 2 s

DownloadProgress = Callable[[str, float], None]  # (file name, fraction done)


@dataclass(frozen=True)
class ModelFiles:
    config: Path
    weights: Path
    vit_config: Path | None


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


def is_hub_id(source: str) -> bool:
    """``owner/name`` rather than a folder path (which recond never downloads into)."""
    return not Path(source).expanduser().exists() and not _looks_like_path(source)


def cached_files(repo_id: str) -> ModelFiles | None:
    """The hub model's files from the local Hugging Face cache, without touching the network."""
    from huggingface_hub import hf_hub_download

    def cached(filename: str) -> Path:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=True))

    try:
        config, weights = cached(CONFIG_NAME), cached(WEIGHTS_NAME)
    except Exception:  # not cached (LocalEntryNotFoundError), or not a valid id at all
        return None
    try:
        vit_config: Path | None = cached(VIT_CONFIG_NAME)
    except Exception:  # the official repository has none: DINO ViT-B/16 facts are built in
        vit_config = None
    return ModelFiles(config, weights, vit_config)


def hub_problem(repo_id: str) -> str | None:
    """Why the hub cannot serve ``repo_id`` right now, asked once with a short timeout.

    huggingface_hub's own download would, with nothing cached, retry an unreachable hub five
    times over about 25 s (file_download.py, "No local file found. Retrying.."); one metadata
    request without retries answers in well under two seconds.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, CONFIG_NAME), timeout=HUB_TIMEOUT_SECONDS,
                             retry_on_errors=False)
    except Exception as exc:  # offline, DNS, timeout, 401/404 for a wrong id: all mean "not now"
        first_sentence = " ".join(str(exc).split()).split(". ")[0][:200]
        return f"{type(exc).__name__}: {first_sentence}"
    return None


def not_cached_message(repo_id: str, problem: str) -> str:
    """The one line recond shows when a hub model is neither cached nor downloadable."""
    from huggingface_hub import constants

    return (f"The TripoSR weights '{repo_id}' are not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and the Hugging Face Hub cannot be reached ({problem}).")


def download_files(repo_id: str, progress: DownloadProgress | None = None) -> ModelFiles:
    """Fetch a hub model such as stabilityai/TripoSR into the cache (once; later runs find it)."""
    from huggingface_hub import hf_hub_download

    problem = hub_problem(repo_id)
    if problem:
        raise ModelLoadError(not_cached_message(repo_id, problem))

    def fetch(filename: str) -> Path:
        bar = _reporting_bar(filename, progress) if progress else None
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, tqdm_class=bar))

    try:
        config, weights = fetch(CONFIG_NAME), fetch(WEIGHTS_NAME)
    except Exception as exc:  # the hub answered the probe but the download broke off
        raise ModelLoadError(f"Downloading '{repo_id}' from the Hugging Face Hub failed "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}).") from None
    try:
        vit_config: Path | None = fetch(VIT_CONFIG_NAME)
    except Exception:  # the official repository has none: DINO ViT-B/16 facts are built in
        vit_config = None
    return ModelFiles(config, weights, vit_config)


def _reporting_bar(filename: str, progress: DownloadProgress) -> type:
    """A tqdm class for huggingface_hub that also hands each step to ``progress``.

    The count is kept here because a disabled bar (no terminal, e.g. under systemd) counts nothing.
    """
    from tqdm.auto import tqdm

    class ReportingBar(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.received = int(kwargs.get("initial") or 0)  # type: ignore[call-overload]
            self.expected = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self.received += int(n or 0)
            if self.expected:
                progress(filename, min(1.0, self.received / float(self.expected)))  # type: ignore[arg-type]
            return super().update(n)

    return ReportingBar


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


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source
