"""`reconctl doctor`'s checks, as data: each thing recond needs, checked for real (the folders,
the GPU, the dtype, the weights loaded, rembg's model, ffmpeg run, the daemon).

Below the front ends: ``reconctl doctor`` prints them, and a script may call
:func:`doctor_checks` itself.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from recond.config import Settings
from recond.errors import MODEL_HELP, reload_command
from recond.pipeline.names import VIDEO_NAME
from recond.shares.folders import SHARE_FOLDERS, waiting_reason
from recond.status import status_report


@dataclass
class Check:
    name: str
    level: str  # ok, warn or fail
    message: str


def doctor_checks(settings: Settings) -> list[Check]:
    """Each thing recond needs, checked for real (the weights are loaded, ffmpeg is run)."""
    return [*_folder_checks(settings), _gpu_check(settings), _dtype_check(settings), _weights_check(settings),
            _rembg_check(settings), _ffmpeg_check(), *_ray_checks(settings), _daemon_check(settings)]


def _ray_checks(settings: Settings) -> list[Check]:
    """executor = "ray": the cluster answers, and is not open to everyone (docs/ray.md)."""
    if settings.executor != "ray" or settings.ray_address == "local":
        return []
    from recond.executors.ray_probe import ProbeFailed, ask, open_to_others

    try:
        facts = ask(settings.ray_address, settings.ray_connect_seconds, threading.Event())
    except ProbeFailed as error:
        return [Check("ray", "fail", f"no Ray cluster answers at {settings.ray_address} ({error}); "
                                     "docs/ray.md says how to start one")]
    warning = open_to_others(facts)
    if warning:
        return [Check("ray", "warn" if settings.ray_allow_open_cluster else "fail", warning
                      + ("" if settings.ray_allow_open_cluster else "; recond refuses to join it"))]
    auth = "token authentication on" if facts.token_auth else "no token authentication, loopback only"
    return [Check("ray", "ok", f"{settings.ray_address}: nodes {', '.join(facts.nodes)}; {auth}")]


def _folder_checks(settings: Settings) -> list[Check]:
    checks = []
    for name in ("inbox", "outbox", "state_dir"):
        folder = getattr(settings, name).expanduser().resolve()
        if not folder.is_dir():
            checks.append(_missing_folder_check(name, folder))
        elif not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            checks.append(Check(name, "fail", f"{folder} is not readable and writable by this user "
                                              f"(uid {os.getuid()}); fix its owner or mode"))
        else:
            checks.append(Check(name, "ok", str(folder)))
    return checks


def _missing_folder_check(name: str, folder: Path) -> Check:
    waiting = waiting_reason(name, folder) if name in SHARE_FOLDERS else None
    if waiting:
        return Check(name, "warn", waiting.replace("waiting for it", "recond waits for it"))
    existing = next(parent for parent in folder.parents if parent.exists())
    if os.access(existing, os.W_OK | os.X_OK):
        return Check(name, "warn", f"{folder} does not exist (recond creates it on start)")
    return Check(name, "fail", f"{folder} does not exist and this user cannot create it in {existing}")


def _gpu_check(settings: Settings) -> Check:
    import torch

    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    absent = [device for device in settings.devices
              if device.startswith("cuda") and int(device.partition(":")[2] or 0) >= seen]
    if absent:
        return Check("gpu", "fail", f"devices names {', '.join(absent)} but torch sees {seen} CUDA GPU(s)")
    if settings.devices and seen:
        return Check("gpu", "ok", f"{seen} CUDA GPU(s); one warm model on each of {', '.join(settings.devices)}")
    if torch.cuda.is_available():
        return Check("gpu", "ok", f"{torch.cuda.get_device_name(0)} (device setting: {settings.device})")
    if settings.device.startswith("cuda"):
        return Check("gpu", "fail", f"device = {settings.device} but torch sees no CUDA GPU "
                                    "(driver, /dev/nvidia* access, or a CPU-only torch build)")
    return Check("gpu", "warn", "no CUDA GPU: recond runs on the CPU (minutes per photo)")


def _dtype_check(settings: Settings) -> Check:
    """The dtype the encoder computes in and why; bfloat16 emulated on a CPU is a slowdown."""
    from recond.config import native_bf16_flags

    choice = settings.resolved_dtype()
    if choice.name == "bfloat16" and settings.resolved_device() == "cpu" and not native_bf16_flags():
        return Check("dtype", "warn", f"{choice}, but this CPU has no native bfloat16: float32 is faster "
                                      "here (dtype = \"auto\" picks it)")
    return Check("dtype", "ok", str(choice))


def _weights_check(settings: Settings) -> Check:
    from recond.triposr.hub import (
        cached_files,
        hub_problem,
        is_hub_id,
        not_cached_message,
    )

    daemon = status_report(settings, recent=0)["daemon"]
    fix = MODEL_HELP.format(reload=reload_command(None, daemon["pid"]))  # started how: not known
    if is_hub_id(settings.model) and cached_files(settings.model) is None:
        problem = hub_problem(settings.model)  # doctor never downloads; it only asks the hub
        if problem:
            return Check("weights", "fail", f"{not_cached_message(settings.model, problem)} "
                                            f"To fix: {fix}")
        return Check("weights", "warn", f"{settings.model} is not downloaded yet; the hub answers, "
                                        "so recond downloads it (once, about 1.7 GB) when it starts")
    import torch

    from recond.triposr.model import TripoSR

    try:
        model = TripoSR.from_pretrained(settings.model, device=settings.resolved_device(),
                                        dtype=getattr(torch, settings.resolved_dtype().name))
    except Exception as error:  # any reason the weights do not load is what doctor reports
        return Check("weights", "fail", f"{settings.model}: {error} -- to fix: {fix}")
    parameters = sum(parameter.numel() for parameter in model.parameters())
    return Check("weights", "ok", f"{settings.model} loads ({parameters / 1e6:.1f} M parameters)")


def _rembg_check(settings: Settings) -> Check:
    from recond.pipeline.background import rembg_model_status

    try:
        status = rembg_model_status(settings)
    except Exception as error:  # e.g. an unknown rembg_model: report it, run the other checks
        return Check("rembg", "fail", str(error))
    if status.available:
        return Check("rembg", "ok", status.message)
    when = (" (recond tries to download it when it starts)" if settings.rembg_home is None
            and settings.background in ("auto", "rembg") else "")
    return Check("rembg", "warn", status.message + when)


def _ffmpeg_check() -> Check:
    try:
        import imageio_ffmpeg

        executable = imageio_ffmpeg.get_ffmpeg_exe()
        version = subprocess.run([executable, "-version"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.splitlines()[0]
    except Exception as error:  # missing binary, not executable, crashes: all mean no video
        return Check("ffmpeg", "fail", f"ffmpeg not usable ({error}); {VIDEO_NAME} cannot be written")
    return Check("ffmpeg", "ok", f"{executable} ({version})")


def _daemon_check(settings: Settings) -> Check:
    daemon = status_report(settings, recent=0)["daemon"]
    if not daemon["running"]:
        return Check("daemon", "warn", "recond is not running (start it: `scripts/run` in a "
                                       "terminal, `systemctl start recond` for the service)")
    if daemon["model"] == "missing":
        return Check("daemon", "fail", f"running, but without a model: {daemon['model_detail']}")
    return Check("daemon", "ok", f"running (pid {daemon['pid']}), model {daemon['model']}")
