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


class StageTimedOut(RuntimeError):
    """A stage's child process ran past the stage's time limit and was killed (issue 18).

    Not the picture's fault as far as anyone knows: the worker retries the job, and fails it
    with this sentence once it is out of attempts.
    """

    def __init__(self, stage: str, what: str, spent_s: float, limit_s: float, expected_s: float) -> None:
        super().__init__(f"the {stage} stage's {what} ran {spent_s:.0f} s, past the stage's limit of "
                         f"{limit_s:.0f} s (it usually takes {expected_s:.1f} s), and was stopped")
        self._facts = (stage, what, spent_s, limit_s, expected_s)

    def __reduce__(self) -> tuple[type[StageTimedOut], tuple[str, str, float, float, float]]:
        # A host process (recond.executors.local) sends it back to the worker pickled, and the
        # worker retries a job on this type alone.
        return (StageTimedOut, self._facts)


class HostStopped(StageTimedOut):
    """A host process ran a stage past the stage's limit and was killed with its process group,
    and a fresh host process took its place (issue 22).

    What it ran may be a C call that never returns (simplification, unwrap) or nothing at all (a
    process frozen by SIGSTOP): only killing the process stops either. Retried as StageTimedOut.
    """

    def __init__(self, stage: str, spent_s: float, limit_s: float, expected_s: float, pid: int,
                 fresh_pid: int | None) -> None:
        fresh = f"a fresh host process (pid {fresh_pid})" if fresh_pid else "a fresh host process"
        RuntimeError.__init__(self, (
            f"the {stage} stage ran {spent_s:.0f} s in host process {pid}, past the stage's limit of "
            f"{limit_s:.0f} s (it usually takes {expected_s:.1f} s): the process was killed and {fresh} "
            "took its place"))
        self.stage, self.spent_s, self.limit_s, self.expected_s = stage, spent_s, limit_s, expected_s
        self.pid, self.fresh_pid = pid, fresh_pid

    def __reduce__(self) -> tuple[type[HostStopped], tuple[str, float, float, float, int, int | None]]:  # type: ignore[override]
        return (HostStopped, (self.stage, self.spent_s, self.limit_s, self.expected_s, self.pid, self.fresh_pid))


class ModelLoadError(RuntimeError):
    """The model folder, its config or its weights are missing or do not fit together.

    It carries a single sentence (which file, what was expected) so the daemon can show it as is.
    """


def reload_command(under_systemd: bool | None, pid: int | None = None) -> str:
    """How to make a running recond re-read its settings and retry the model, said for the way
    it was started: the service, a terminal (``pid`` shown), or both when that is not known."""
    service = "`systemctl reload recond`"
    terminal = f"`kill -HUP {pid or '<pid of recond>'}` (or Ctrl-C and `scripts/run` again)"
    if under_systemd is None:
        return f"{service} for the service, {terminal} in a terminal"
    return f"{service} (SIGHUP)" if under_systemd else terminal


RELOAD_EITHER_WAY = reload_command(None)

MODEL_HELP = (
    "put the TripoSR weights (config.yaml + model.ckpt from stabilityai/TripoSR) in a folder, "
    "set model = \"/that/folder\" in the config file (or RECOND_MODEL), then run {reload}; "
    "recond also retries every model_retry_seconds"
)
SETTINGS_HELP = (
    "fix the setting named above in the config file, then run {reload}; "
    "`reconctl doctor` checks each part"
)

# rembg imports numba, which caches compiled code beside the package or under $HOME; a service
# user with neither writable fails with "cannot cache function ...: no locator available".
NUMBA_HELP = (
    "numba (used by rembg) needs a writable cache folder: set NUMBA_CACHE_DIR to one "
    "(the systemd unit sets /var/lib/recond/numba) or give the service user a writable HOME, "
    "then run {reload}"
)

RAY_MISSING = (
    "executor = \"ray\" needs Ray, which is not installed in recond's Python environment: "
    "pip install -e '.[ray]' in the checkout (or pip install 'recond[ray]'), or set executor = \"local\"")

PROCESS_MODEL_HELP = (
    "put the TripoSR weights (config.yaml + model.ckpt from stabilityai/TripoSR) in a folder and "
    "pass it: reconctl process IMAGE --model /that/folder (or set model in the config file)")
PROCESS_SETTINGS_HELP = "fix the setting named above; `reconctl doctor` checks each part"


def loading_fix(error: BaseException, reload: str = RELOAD_EITHER_WAY) -> str:
    """How to fix a pipeline that would not build: the weights, numba's cache, or a setting.

    ``reload`` says how to make this recond try again (``reload_command``).
    """
    if isinstance(error, ModelLoadError):
        return MODEL_HELP.format(reload=reload)
    if _numba_has_no_cache(error):
        return NUMBA_HELP.format(reload=reload)
    return SETTINGS_HELP.format(reload=reload)


def process_loading_fix(error: BaseException) -> str:
    """The same for `reconctl process`, whose model comes from --model rather than the daemon."""
    if isinstance(error, ModelLoadError):
        return PROCESS_MODEL_HELP
    if _numba_has_no_cache(error):
        return NUMBA_HELP.format(reload="`reconctl process` again")
    return PROCESS_SETTINGS_HELP


def _numba_has_no_cache(error: BaseException) -> bool:
    return "no locator available" in str(error) or "cannot cache function" in str(error)


def describe_failure(error: BaseException) -> tuple[str, bool]:
    """One line for the job record and whether the user caused it (bad input, no traceback)."""
    message = " ".join(str(error).split())
    if isinstance(error, InputError):
        return message, True
    return f"{type(error).__name__}: {message}", False
