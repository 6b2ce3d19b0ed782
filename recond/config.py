"""Every setting of recond in one validated object.

Settings come from a TOML file (``config/recond.toml`` documents each key), overridden by
``RECOND_*`` environment variables. They are read once, here, and nowhere else: the rest of
the code receives a :class:`Settings` instance. A bad value stops start-up with one line
naming the setting, because a daemon that half-starts on a typo is worse than one that refuses.
Each setting is declared in the part it belongs to (intake, model, job, daemon), which says
what a change to it affects; ``part_of`` hands one part to the code that needs it.
"""

from __future__ import annotations

import os
import re
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from recond.names import RESERVED_FOLDERS

ENV_PREFIX = "RECOND_"
HOST_NAME = re.compile(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\]")
CONFIG_ENV_VAR = "RECOND_CONFIG"

# Folder settings: a relative value in the TOML file is taken from the file's own folder.
FOLDER_SETTINGS = ("inbox", "outbox", "state_dir", "rembg_home")
# A folder or a Hugging Face id: taken from the file's folder only when it is a folder (_TomlFile).
MODEL_SETTING = "model"

# Host workers each hold torch, a job's hand-off and its meshes (docs/scaling.md: memory of a host
# worker); the default stops at 8 so a many-core server does not fill its memory unasked.
DEFAULT_HOST_WORKERS_CAP = 8
MAX_HOST_WORKERS = 64

Background = Literal["auto", "rembg", "alpha", "none"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
Executor = Literal["local", "ray"]
DEVICE_NAME = r"auto|cpu|cuda(:\d+)?|mps"


# Whether this CPU computes bfloat16 natively, read from the kernel's /proc/cpuinfo flags. The
# TripoSR forward pass in bfloat16 takes about half the float32 time on a CPU with native
# bfloat16 (avx512_bf16 or AMX; issue 16), and is slower than float32 on one without, where
# oneDNN emulates it: ``dtype = "auto"`` decides with this.
CPUINFO = Path("/proc/cpuinfo")
# Linux's names (arch/x86/include/asm/cpufeatures.h) for bfloat16 dot products in AVX-512 and
# for AMX's bfloat16 tile multiply.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16_flags() -> list[str]:
    """The NATIVE_BF16_FLAGS this CPU has; [] where /proc/cpuinfo is missing (not Linux)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            flags.update(value.split())
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]


def looks_like_path(source: str) -> bool:
    """A folder path whether or not it exists: ``/...``, ``./...``, ``../...``, ``~/...``, or two
    or more slashes; a hub id is ``owner/name`` (one slash) or a bare ``name``."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


class SettingsError(ValueError):
    """A setting has a value recond cannot use; the message is one line naming it."""


class _Part(BaseModel):
    """Base of the four parts below; each field is declared in exactly one of them."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class IntakeSettings(_Part):
    """How the inbox is watched: a change restarts the watcher (on SIGHUP), nothing else."""

    inbox: Path = Field(Path("inbox"), description=(
        "Folder people drop photos into (a network share is fine: see polling). Subfolders "
        "are watched too and their names become part of the result name; files that fail land "
        "in <inbox>/failed/."))
    polling: bool = Field(False, description=(
        "Poll the inbox instead of using OS change events: needed on SMB/NFS/CIFS mounts, "
        "where changes made by other machines raise no events on this one."))
    poll_interval: float = Field(2.0, gt=0, description=(
        "Seconds between polls when polling is on (and for folders past the inotify watch "
        "limit)."))
    settle_seconds: float = Field(3.0, ge=0, description=(
        "A file is taken only once its size and modification time have not changed for this "
        "many seconds and it can be opened; raise it for slow uploads over the network."))
    rescan_seconds: float = Field(300.0, gt=0, description=(
        "Seconds between full rescans of the inbox, which catch anything the watcher missed."))
    follow_inbox_links: bool = Field(False, description=(
        "Take symlinks whose target is a regular file inside the inbox (links leading out are "
        "still ignored). Off: every link is ignored with a warning, since a link could "
        "publish a private file from elsewhere."))


class ModelSettings(_Part):
    """What the warm pipeline is built from (weights, device, background session).

    Only a change here reloads the model on SIGHUP, because only these are baked into it.
    """

    model: str = Field("stabilityai/TripoSR", description=(
        "A folder holding TripoSR's config.yaml + model.ckpt, or a Hugging Face id "
        "(downloaded once, on the first start, 1.7 GB into the Hugging Face cache). In a TOML "
        "file a relative value is a folder when it starts with . (./ or ../), has two or more "
        "/, or exists beside the file; anything else is a hub id."))
    device: str = Field("auto", description=(
        "auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N."))
    devices: Annotated[list[str], NoDecode] = Field(default_factory=list, description=(
        "Several devices on this machine, one warm model each, e.g. cuda:0, cuda:1 (a list in "
        "TOML, comma-separated in RECOND_DEVICES); wins over device when set. The local "
        "executor only (Ray places its own actors: ray_device_workers)."))
    dtype: DType = Field("auto", description=(
        "What the image encoder, the transformer and the upsampler compute in (and store "
        "their weights in); the decoder, density grid and colours stay float32. auto: float16 "
        "on CUDA; bfloat16 on a CPU with native bfloat16 (avx512_bf16 or AMX), float32 on "
        "other CPUs, where bfloat16 is slower."))
    background: Background = Field("auto", description=(
        "How the object is cut out of the photo: alpha (the picture's own transparency), "
        "rembg (needs its model file; recond refuses to load without it), none, or auto: the "
        "picture's transparency when it has some, else rembg when its model file is present, "
        "else OpenCV GrabCut (less precise; the job gets a warning)."))
    rembg_model: str = Field("u2net", description=(
        "rembg model name; its file is <rembg_home>/<name>.onnx (u2net.onnx for u2net)."))
    rembg_home: Path | None = Field(None, description=(
        "Folder with rembg's .onnx files (rembg's U2NET_HOME). Unset: rembg's own folder "
        "($U2NET_HOME, else ~/.rembg/models), where recond downloads the model once, on the "
        "first start. Set: recond only reads it and never downloads into it (offline "
        "servers)."))

    @field_validator("device")
    @classmethod
    def _device_is_known(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(DEVICE_NAME, value):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _devices_are_known(cls, value: object) -> object:
        """A list in TOML, a comma-separated text in RECOND_DEVICES; each a torch device
        (not auto: a list says which ones)."""
        if isinstance(value, str):
            value = [device for device in value.split(",") if device.strip()]
        if isinstance(value, list):
            value = [str(device).strip().lower() for device in value]
            wrong = [device for device in value if device == "auto" or not re.fullmatch(DEVICE_NAME, device)]
            if wrong:
                raise ValueError(f"{wrong[0]!r} is not cpu, cuda, cuda:N or mps")
        return value

    def resolved_device(self) -> str:
        """The torch device string to use: the first of ``devices`` when set, else ``device``,
        where 'auto' picks CUDA when torch sees one."""
        if self.devices:
            return self.devices[0]
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved_devices(self) -> list[str]:
        """The devices that each hold a warm model: ``devices`` when set, else the one device."""
        return list(self.devices) or [self.resolved_device()]

    def on_device(self, device: str) -> ModelSettings:
        """These settings for one warm model on ``device`` (what a pipeline is built from)."""
        values = {name: getattr(self, name) for name in ModelSettings.model_fields}
        return ModelSettings.model_construct(**{**values, "device": device, "devices": []})

    def resolved_dtype(self) -> DTypeChoice:
        """The compute dtype and why: 'auto' picks float16 on CUDA, bfloat16 on a CPU that has it
        natively (about twice float32's speed there, issue 16), float32 on other CPUs (where
        bfloat16 is emulated and slower) and on mps."""
        if self.dtype != "auto":
            return DTypeChoice(self.dtype, "set by the dtype setting")
        device = self.resolved_device()
        if device.startswith("cuda"):
            return DTypeChoice("float16", "CUDA GPU")
        if device == "cpu":
            flags = native_bf16_flags()
            if flags:
                return DTypeChoice("bfloat16", "CPU has " + ", ".join(flags))
            return DTypeChoice("float32", f"CPU has no {' or '.join(NATIVE_BF16_FLAGS)}")
        return DTypeChoice("float32", f"{device} device")


class DTypeChoice(NamedTuple):
    """A resolved dtype with the reason it was chosen, as doctor, status and job.json show it."""

    name: str  # a torch dtype's name: float32, float16 or bfloat16
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


class JobSettings(_Part):
    """How each picture is processed: handed to every run, recorded in job.json, no reload."""

    max_image_pixels: int = Field(60_000_000, ge=1, description=(
        "Pictures with more pixels than this are refused (protects memory)."))
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1, description=(
        "Files larger than this many bytes are refused, from their size alone."))
    max_aspect_ratio: float = Field(20.0, ge=1.0, description=(
        "Pictures whose long side is more than this many times their short side are refused "
        "before decoding (a 1x50000 strip would be padded to a 50000x50000 square)."))
    foreground_ratio: float = Field(0.85, gt=0.1, le=1.0, description=(
        "How much of the frame the cut-out object fills before reconstruction."))
    chunk_size: int = Field(8192, ge=1024, description=(
        "Points the decoder evaluates per call. 8192 keeps its work in the CPU cache "
        "(benchmarks/bench_density_grid.py); on a GPU a larger value (65536) should be faster "
        "(not measured yet); lower it if the GPU runs out of memory."))
    mc_resolution: int = Field(256, ge=16, le=1024, description=(
        "Marching-cubes grid size: mesh detail against time and memory (the cost grows with "
        "the cube)."))
    mc_threshold: float = Field(25.0, gt=0, description=(
        "Density level taken as the object's surface."))
    floater_fraction: float = Field(0.02, ge=0, lt=1, description=(
        "Disconnected pieces whose area is below this fraction of the largest piece's are "
        "dropped as floaters; the largest piece is always kept, 0 keeps every piece."))
    target_faces: int = Field(20000, ge=0, description=(
        "Simplify the mesh (quadric decimation that keeps its topology, so a closed surface "
        "stays a printable solid) to about this many faces before texturing and export; "
        "bounds every later stage's time and the result's size. 0 keeps every face. A noisy "
        "surface whose topology cannot be kept is simplified without it, with a warning "
        "(docs/bounded-cost.md)."))
    max_surface_faces: int = Field(1_000_000, ge=10_000, description=(
        "A density grid whose surface would have more faces than this is meshed on a coarser grid "
        "(a noisy field: bounds the mesh stage's time and memory)."))
    bake_texture: bool = Field(True, description=(
        "UV-unwrap the mesh and bake a texture PNG; false: vertex colours only."))
    texture_resolution: int = Field(1024, ge=64, le=8192, description=(
        "Texture size in pixels (square)."))
    render_views: int = Field(30, ge=1, le=720, description=(
        "Turntable frames (render_000.png ...), and so the length of render.mp4."))
    render_size: int = Field(256, ge=32, le=4096, description=(
        "Turntable frame size in pixels (square)."))
    video_fps: int = Field(30, ge=1, le=120, description=(
        "Frame rate of render.mp4."))
    video_seconds: float = Field(4.0, gt=0, le=60, description=(
        "One turn of render.mp4 lasts this long; ffmpeg blends the render_views frames into "
        "the frames between (0.1-0.3 s more than a 1 s video, not more renders)."))
    stage_limit_factor: float = Field(10.0, ge=1.0, description=(
        "A stage's limit is this many times the seconds it usually takes on this machine "
        "(learnt from earlier jobs, <state_dir>/stage_seconds.json) ..."))
    stage_limit_floor_s: float = Field(120.0, gt=0, description=(
        "... and never less than this many seconds. A host process (with its children, such as "
        "ffmpeg) still in a stage past the stage's limit is killed and replaced, and the job "
        "retried (failed with the reason after max_attempts)."))


class DaemonSettings(_Part):
    """The daemon's own knobs: where results and state go, retries, logging."""

    outbox: Path = Field(Path("outbox"), description=(
        "Folder where finished result folders appear, one per photo: "
        "<time>_<subfolders>_<name>/. Must not lie inside the inbox."))
    state_dir: Path = Field(Path("state"), description=(
        "The job database (recond.db) and the JSON log (recond.log). Must not lie inside the "
        "inbox; a change needs a restart."))
    adopt_changed_folders: bool = Field(False, description=(
        "Take an inbox or outbox that is not the folder recond started with (another marker, "
        "or a share's bare mount point) with a warning, instead of pausing until "
        "`reconctl adopt` (docs/share-ownership.md)."))
    max_attempts: int = Field(3, ge=1, description=(
        "A job whose processing crashed recond this many times fails instead of being retried "
        "again."))
    host_workers: int | None = Field(None, ge=0, le=MAX_HOST_WORKERS, description=(
        "Processes that run each job's CPU part (marching cubes, texture, files, turntable, "
        "viewer) while the warm model already works on the next picture; at most host_workers "
        "+ 1 jobs run at once. 0: each job runs whole, one after the other (its CPU part in one "
        "child process, see isolate_host_part). "
        "Unset: one fewer than the CPUs recond may use (at least 1, at most 8)."))
    isolate_host_part: bool = Field(True, description=(
        "With host_workers = 0, run each job's CPU part in one child process, which is killed and "
        "replaced when a stage runs past its limit; false runs it in the daemon's worker thread, "
        "where nothing can stop a stuck stage (for debugging and profiling)."))
    model_retry_seconds: float = Field(180.0, gt=0, description=(
        "While the weights (or the Ray cluster) cannot be reached, jobs wait queued and "
        "recond retries this often (seconds)."))
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description=(
        "debug, info, warning or error (stderr/journald and the JSON log alike)."))
    log_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description=(
        "The JSON log <state_dir>/recond.log is rotated when it reaches this many bytes ..."))
    log_backups: int = Field(5, ge=0, description=(
        "... keeping this many old files (recond.log.1 ...)."))
    executor: Executor = Field("local", description=(
        "Where jobs run: local (this machine) or ray (a Ray cluster; the ray extra)."))
    ray_address: str = Field("auto", min_length=1, description=(
        "The cluster to join when executor is ray: auto (the one `ray start --head` began on "
        "this machine), host:6379, a Ray Client address ray://head:10001, or local (a private "
        "Ray inside the daemon, for trying it on one machine)."))
    ray_device_workers: int = Field(0, ge=0, description=(
        "Warm-model actors (one model each) on the cluster; 0: one per GPU in the cluster, "
        "each taking one GPU, and one CPU actor on a cluster without GPUs."))
    ray_connect_seconds: float = Field(60.0, gt=0, le=3600, description=(
        "How long joining the Ray cluster may take before the daemon gives up and retries "
        "after model_retry_seconds (Ray itself has no limit)."))
    ray_allow_open_cluster: bool = Field(False, description=(
        "Join a Ray cluster without token authentication on a non-loopback address (anyone who "
        "reaches it can run code there); false: refuse it, status and doctor say why."))

    def resolved_host_workers(self) -> int:
        """host_workers, or from the CPUs this process may use: one is left to the device part."""
        if self.host_workers is not None:
            return self.host_workers
        return min(max(1, len(os.sched_getaffinity(0)) - 1), DEFAULT_HOST_WORKERS_CAP)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "recond.db"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "recond.log"

    @property
    def heartbeat_path(self) -> Path:
        """Touched by the running daemon every few seconds (recond/heartbeat.py)."""
        return self.state_dir / "recond.heartbeat"

    @property
    def lock_path(self) -> Path:
        """Names the pid of the running daemon (its lock is on the state dir itself)."""
        return self.state_dir / "recond.lock"


# A preset is a folder in the inbox (issue 25): a plain name, so it reads the same on every share.
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_job_values(values: dict[str, Any], what: str) -> dict[str, Any]:
    """``values`` (some of JobSettings' keys) validated as the top-level keys are, and returned
    as JobSettings holds them (``"3"`` becomes 3); ValueError names ``what`` and the key."""
    unknown = sorted(set(values) - set(JobSettings.model_fields))
    if unknown:
        raise ValueError(f"{what}: unknown key '{unknown[0]}' (a job setting such as "
                         "render_views, mc_resolution or target_faces)")
    try:
        checked = JobSettings.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{what}: key '{key}': {first['msg']}") from None
    return {name: getattr(checked, name) for name in values}


class WorkflowSettings(_Part):
    """What happens around each job (issue 25): presets by inbox subfolder, a hook and a
    webhook on every result. A change applies from the next job (presets) or event on."""

    presets: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Named job settings, as [presets.NAME] tables: a picture in inbox/NAME/ (or "
        "reconctl process --preset NAME, or a web upload's preset) is made with them."))
    on_published: list[str] | None = Field(None, min_length=1, description=(
        "Command run after each publish, as a list: the result folder's path is its last "
        "argument, job.json its standard input, RECOND_RESULT_DIR is set."))
    on_failed: list[str] | None = Field(None, min_length=1, description=(
        "Command run after a picture is moved to inbox/failed/: its path is the last argument, "
        "the failure as JSON its standard input."))
    hook_seconds: float = Field(60.0, gt=0, description=(
        "A hook still running after this many seconds is stopped (and logged)."))
    webhook_url: str | None = Field(None, pattern=r"^https?://", description=(
        "URL that gets one JSON POST per event (published, failed), retried until it answers."))
    webhook_secret: str | None = Field(None, min_length=8, description=(
        "Signs each webhook body: header X-Recond-Signature: sha256=<HMAC-SHA256 hex>."))
    webhook_retry_hours: float = Field(24.0, gt=0, description=(
        "How long an undelivered webhook is retried (from 5 s apart, at most 5 min apart)."))

    @field_validator("presets")
    @classmethod
    def _presets_are_job_settings(cls, presets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        checked = {}
        for name, values in presets.items():
            if not PRESET_NAME.fullmatch(name) or name in RESERVED_FOLDERS:
                raise ValueError(f"preset '{name}': a preset's name is a folder name in the inbox: "
                                 "letters, digits, _ and -, and not one of "
                                 + ", ".join(RESERVED_FOLDERS))
            checked[name] = check_job_values(values, f"preset '{name}'")
        return checked


class WebSettings(_Part):
    """The web front end's knobs: read only by `recond-web` (recond/web/); the daemon ignores them."""

    web_host: str = Field("127.0.0.1", description=(
        "Address recond-web listens on. Any address other than loopback (127.0.0.1, ::1, "
        "localhost) requires web_token."))
    web_port: int = Field(8765, ge=1, le=65535, description=(
        "Port recond-web listens on."))
    web_token: str | None = Field(None, min_length=16, description=(
        "When set, every request except /healthz must carry the header 'Authorization: Bearer "
        "<web_token>'; required off loopback. Better set as RECOND_WEB_TOKEN than in the "
        "file."))
    web_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description=(
        "Browser origins allowed to call the API from their own pages (CORS); empty: CORS "
        "off. As a variable: comma-separated."))
    web_max_files: int = Field(20, ge=1, description=(
        "Files accepted in one upload request (each limited by max_file_bytes)."))
    web_max_uploads: int = Field(8, ge=1, description=(
        "Upload requests received at the same time (more get 429, retry shortly)."))
    web_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list, description=(
        "Host names clients may reach recond-web by besides web_host (and localhost, "
        "127.0.0.1 and [::1] on a loopback bind), e.g. the name a reverse proxy passes on; "
        "'*.example.com' matches its subdomains. Any other Host header (a DNS-rebinding page) "
        "gets 400. As a variable: comma-separated."))
    web_header_seconds: float = Field(10.0, gt=0, description=(
        "Seconds a client has to send a request's headers; slower connections are closed."))
    web_upload_seconds: float = Field(60.0, gt=0, description=(
        "Longest an upload request may take to arrive (then 408): how long a trickling client "
        "can hold one of the web_max_uploads slots. Raise it for large files over slow links "
        "(a 200 MB file in 60 s needs 3.3 MB/s)."))
    web_upload_min_rate: int = Field(10_000, ge=0, description=(
        "Bytes per second an upload must average after its first 5 seconds (else 408); 0: no "
        "rate check."))
    web_max_event_streams: int = Field(200, ge=1, description=(
        "Server-sent event streams open at the same time, in all (more get 429)."))
    web_max_event_streams_per_client: int = Field(20, ge=1, description=(
        "Event streams open at the same time from one client address (more get 429)."))

    @field_validator("web_allowed_hosts")
    @classmethod
    def _plain_host_names(cls, hosts: list[str]) -> list[str]:
        """Names as a Host header carries them, without the port: recon.example.com, 10.0.0.5,
        [fd00::5], '*.example.com' (its subdomains) or '*' (any name)."""
        for host in hosts:
            if host != "*" and not HOST_NAME.fullmatch(host):
                raise ValueError(f"{host!r} is not a host name without port (e.g. recon.example.com, "
                                 "10.0.0.5, [fd00::5], *.example.com)")
        return hosts

    @field_validator("web_cors_origins", "web_allowed_hosts", mode="before")
    @classmethod
    def _origins_from_text(cls, value: object) -> object:
        """The variables are comma-separated lists; the TOML file gives a real list."""
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value


PARTS: tuple[type[_Part], ...] = (IntakeSettings, ModelSettings, JobSettings, DaemonSettings,
                                  WorkflowSettings, WebSettings)
PartT = TypeVar("PartT", bound=_Part)


def part_of(settings: _Part, part: type[PartT]) -> PartT:
    """One part of the settings as its own record, e.g. ``part_of(settings, JobSettings)``.

    Equal parts compare equal, which is how a reload tells what changed.
    """
    values = {name: getattr(settings, name) for name in part.model_fields}
    return cast(PartT, part.model_construct(**values))  # the pydantic plugin types it as _Part


class Settings(IntakeSettings, ModelSettings, JobSettings, DaemonSettings, WorkflowSettings,
               WebSettings, BaseSettings):
    """All knobs of the daemon, the pipeline and the CLI, flat (each maps to one variable).

    Every field is declared in one of the parts above, which says what a change to it affects.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        protected_namespaces=(),
    )

    @model_validator(mode="after")
    def _several_devices_have_host_workers(self) -> Settings:
        """Several warm models hand their parts to host processes: there must be some."""
        if len(self.devices) > 1 and self.host_workers == 0 and self.executor == "local":
            raise ValueError(f"devices names {len(self.devices)} devices but host_workers = 0 runs one "
                             "job at a time; set host_workers >= 1 (or leave it unset)")
        return self

    @model_validator(mode="after")
    def _folders_do_not_feed_back(self) -> Settings:
        """An outbox or state dir inside the inbox would be watched and reprocessed forever."""
        inbox = self.inbox.expanduser().resolve()
        for name in ("outbox", "state_dir"):
            other = getattr(self, name).expanduser().resolve()
            if other == inbox or inbox in other.parents:
                raise ValueError(
                    f"{name} {other} lies inside the inbox {inbox}; "
                    "results would be reprocessed in a loop"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then RECOND_* variables, then the TOML file.
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(_TomlFile(settings_cls, toml_file=toml_file))
        return tuple(sources)


class _TomlFile(TomlConfigSettingsSource):
    """The TOML file, with relative folders resolved against the file's folder rather than the
    working directory: the checkout's config then means the checkout's folders wherever recond
    or reconctl is started from.

    ``model`` is a folder or a Hugging Face id. A relative value is a folder, and taken from the
    file's folder, when it looks like one (a leading ``.``, two or more ``/``: looks_like_path)
    or when that folder exists beside the file; anything else (``stabilityai/TripoSR``) stays a
    hub id.
    """

    def _read_file(self, file_path: Path | Traversable) -> dict[str, object]:
        data = super()._read_file(file_path)
        base = Path(str(file_path)).resolve().parent
        for name in FOLDER_SETTINGS:
            value = data.get(name)
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                data[name] = os.path.normpath(base / value)
        model = data.get(MODEL_SETTING)
        if (isinstance(model, str) and not Path(model).expanduser().is_absolute()
                and (looks_like_path(model) or (base / model).exists())):
            data[MODEL_SETTING] = os.path.normpath(base / model)
        return data


def started_by_systemd() -> bool:
    """Whether systemd runs this process as a service, which decides how a fix says to reload.

    NOTIFY_SOCKET is set by systemd for a Type=notify unit such as ours (systemd.exec(5),
    sd_notify(3)). INVOCATION_ID is not enough: a shell in a terminal app that itself runs as a
    systemd user unit (GNOME Terminal) inherits it.
    """
    return bool(os.environ.get("NOTIFY_SOCKET"))


def config_path_from_env() -> Path | None:
    """The TOML file named by RECOND_CONFIG, if any (the one other variable we honour)."""
    value = os.environ.get(CONFIG_ENV_VAR)
    return Path(value) if value else None


def load_settings(config_path: Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (argument, else RECOND_CONFIG) and RECOND_* variables, validated.

    Raises SettingsError with one line naming the offending setting.
    """
    path = config_path or config_path_from_env()
    if path is not None and not Path(path).is_file():
        raise SettingsError(f"config file {path} does not exist")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=str(path) if path else None)

    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, path)) from None
    except Exception as exc:  # a TOML syntax error surfaces as a decoder exception
        raise SettingsError(f"config file {path}: {exc}") from None
    return Settings.model_construct(**loaded.model_dump())


def _one_line(exc: ValidationError, path: Path | None) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    if not field:  # a check across several settings: its message names them
        return f"settings: {error['msg'].removeprefix('Value error, ')}"
    where = f" (env {ENV_PREFIX}{field.upper()} or key '{field}' in {path or 'the config file'})"
    if field == "presets":  # the message names the preset and its key
        return f"settings: {error['msg'].removeprefix('Value error, ')}{where}"
    if error["type"] == "extra_forbidden":
        return f"unknown setting '{field}'{where}"
    return f"setting {field}: {error['msg']}{where}"
