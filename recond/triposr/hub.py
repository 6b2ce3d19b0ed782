"""Where a TripoSR checkpoint's files are: the layout upstream uses, and for a model named by its
Hugging Face id, the local cache (no network) or one download, after one quick check that the
hub answers.

Outside recond/triposr and without torch on purpose: an offline machine gets its one clear line
before the heavy imports, and `reconctl doctor` can ask without loading anything.
huggingface_hub's cache (HF_HOME) and HF_HUB_OFFLINE apply as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recond.errors import ModelLoadError

# Upstream's folder: config.yaml + model.ckpt (a plain state dict), plus our optional ViT config.
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


def is_hub_id(source: str) -> bool:
    """``owner/name`` rather than a folder path (which recond never downloads into)."""
    # Here, not at the top: the model package builds and runs without pydantic (the settings'
    # library) when nothing is loaded by name, as on a bare GPU box (benchmarks/bench_gpu.py).
    from recond.config import looks_like_path

    return not Path(source).expanduser().exists() and not looks_like_path(source)


def cached_files(repo_id: str) -> ModelFiles | None:
    """The hub model's files from the local Hugging Face cache: a lookup on disk, no network."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> Path | None:
        try:
            found = try_to_load_from_cache(repo_id, filename)
        except Exception:  # not a valid repository id at all: nothing of it can be cached
            return None
        return Path(found) if isinstance(found, str) else None  # else unknown or known absent

    config, weights = cached(CONFIG_NAME), cached(WEIGHTS_NAME)
    if config is None or weights is None:
        return None
    # The official repository has no vit_config.json: DINO ViT-B/16 facts are built in.
    return ModelFiles(config, weights, cached(VIT_CONFIG_NAME))


def hub_problem(repo_id: str) -> str | None:
    """Why the hub cannot serve ``repo_id`` right now, asked once with a short timeout.

    huggingface_hub's own download would, with nothing cached, retry an unreachable hub five
    times over about 25 s (file_download.py, "No local file found. Retrying.."), and building
    its usual headers first fetches an agent registry from the hub with a 3 s timeout
    (utils/_detect_agent.py). So this asks with the bare session and only the token header: one
    HEAD request, no retries, answered or given up within HUB_TIMEOUT_SECONDS.
    """
    from huggingface_hub import constants, get_token, hf_hub_url
    from huggingface_hub.utils import get_session, hf_raise_for_status

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    token = get_token()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = get_session().head(hf_hub_url(repo_id, CONFIG_NAME), headers=headers,
                                      timeout=HUB_TIMEOUT_SECONDS, follow_redirects=True)
        hf_raise_for_status(response)
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

    class ReportingBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.received = int(kwargs.get("initial") or 0)
            self.expected = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self.received += int(n or 0)
            if self.expected:
                progress(filename, min(1.0, self.received / float(self.expected)))
            return super().update(n)

    return ReportingBar
