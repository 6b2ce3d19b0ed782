"""Errors a user can cause, and the one-line fix recond shows for each.

Light on purpose (no torch, no numpy): the worker, ``reconctl`` and the model port all import
it, and ``reconctl status`` must answer without loading the heavy stack.
"""

from __future__ import annotations


class InputError(Exception):
    """The picture cannot become a model (not an image, truncated, too large, nothing in it).

    Its message is one sentence a person can act on; the worker records it on the job and in
    the log as it is, without a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ResultExistsError(FileExistsError):
    """The result folder's name is taken; results are never overwritten."""


class ModelLoadError(RuntimeError):
    """The model folder, its config or its weights are missing or do not fit together.

    It carries a single sentence (which file, what was expected) so the daemon can show it as is.
    """


MODEL_HELP = (
    "put the TripoSR weights (config.yaml + model.ckpt from stabilityai/TripoSR) in a folder, "
    "set model = \"/that/folder\" in the config file (or RECOND_MODEL), then run "
    "`systemctl reload recond` (SIGHUP); recond also retries every model_retry_seconds"
)
SETTINGS_HELP = (
    "fix the setting named above in the config file, then run `systemctl reload recond` (SIGHUP); "
    "`reconctl doctor` checks each part"
)

# rembg imports numba, which caches compiled code beside the package or under $HOME; a service
# user with neither writable fails with "cannot cache function ...: no locator available".
NUMBA_HELP = (
    "numba (used by rembg) needs a writable cache folder: set NUMBA_CACHE_DIR to one "
    "(the systemd unit sets /var/lib/recond/numba) or give the service user a writable HOME, "
    "then run `systemctl reload recond` (SIGHUP)"
)

RAY_MISSING = (
    "executor = \"ray\" needs Ray, which is not installed in recond's Python environment: "
    "pip install -e '.[ray]' in the checkout (or pip install 'recond[ray]'), or set executor = \"local\"")

PROCESS_MODEL_HELP = (
    "put the TripoSR weights (config.yaml + model.ckpt from stabilityai/TripoSR) in a folder and "
    "pass it: reconctl process IMAGE --model /that/folder (or set model in the config file)")
PROCESS_SETTINGS_HELP = "fix the setting named above; `reconctl doctor` checks each part"


def loading_fix(error: BaseException) -> str:
    """How to fix a pipeline that would not build: the weights, numba's cache, or a setting."""
    if isinstance(error, ModelLoadError):
        return MODEL_HELP
    if "no locator available" in str(error) or "cannot cache function" in str(error):
        return NUMBA_HELP
    return SETTINGS_HELP


def process_loading_fix(error: BaseException) -> str:
    """The same for `reconctl process`, whose model comes from --model rather than the daemon."""
    if isinstance(error, ModelLoadError):
        return PROCESS_MODEL_HELP
    fix = loading_fix(error)
    return PROCESS_SETTINGS_HELP if fix == SETTINGS_HELP else fix


def describe_failure(error: BaseException) -> tuple[str, bool]:
    """One line for the job record and whether the user caused it (bad input, no traceback)."""
    message = " ".join(str(error).split())
    if isinstance(error, InputError):
        return message, True
    return f"{type(error).__name__}: {message}", False
